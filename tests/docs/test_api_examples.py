"""docs/api.md shows the real REST error bodies and lists exactly the declared reasons.

Rules:
- Every JSON block of docs/api.md preceded by `<!-- example: NAME -->` is, once volatile values
  are normalised in both (withdrawal ids, trace ids), the body a real gateway answers to the
  request `EXAMPLES[NAME]` sends; every example of `EXAMPLES` is tagged on the page once.
- The reason table of `## Errors` has one row per ErrorInfo reason declared in
  `svc_gateway.errors` and `withdrawal_shared.errors`, with its canonical code and the HTTP
  status REST answers with: `` | `REASON` | CODE (HTTP) | when | ``.

To refresh an example after a deliberate change, run this module and paste the body the
failure shows (ids may stay as they are: they are normalised).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import svc_gateway.errors as gateway_errors
import withdrawal_shared.errors as shared_errors
from tests.docs import scan
from tests.support.databases import database
from tests.support.gateway import Partner, RunningGateway
from withdrawal_shared.db.models import Withdrawal
from withdrawal_shared.errors import ErrorReason
from withdrawal_shared.ids import new_ulid

API_DOC = scan.REPO / "docs" / "api.md"
TABLE_HEADER = "| reason | code (HTTP) | when |"

RECIPIENT = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # a valid EIP-55 checksum
BAD_CHECKSUM = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"  # the last letter's case flipped
REUSED_KEY = "inv-77-payout"
UNKNOWN_KEY = "awk_0badc0de_" + "0" * 64

_TAG = re.compile(r"^<!-- example: ([a-z0-9-]+) -->$")
_ULID = re.compile(r"\b[0-9a-hjkmnp-tv-z]{26}\b", re.IGNORECASE)  # ids are lowercase
_TRACE_ID = re.compile(r"\b[0-9a-f]{32}\b")
_ROW = re.compile(r"^\|\s*`([A-Z_]+)`\s*\|\s*([A-Z_]+) \((\d{3})\b[^|]*\|")


# ---------------------------------------------------------------- the requests


def _post(
    gateway: RunningGateway,
    headers: dict[str, str],
    payload: Any = None,
    *,
    path: str = "/v1/withdrawals",
    content: bytes | None = None,
) -> httpx.Response:
    if content is None:
        content = json.dumps(payload).encode()
    headers = {**headers, "Content-Type": "application/json"}
    return httpx.post(f"{gateway.base_url}{path}", content=content, headers=headers)


def _keyed(partner: Partner, key: str | None = None) -> dict[str, str]:
    return {**partner.headers, "Idempotency-Key": key or str(uuid.uuid4())}


def _body(**overrides: Any) -> dict[str, Any]:
    return {"token": "USDC", "recipientAddress": RECIPIENT, "amount": "12.5", **overrides}


def invalid_fields(gateway: RunningGateway, partner: Partner) -> httpx.Response:
    payload = _body(recipientAddress=BAD_CHECKSUM, amount="12.3456789")
    return _post(gateway, _keyed(partner), payload)


def json_types(gateway: RunningGateway, partner: Partner) -> httpx.Response:
    return _post(gateway, _keyed(partner), _body(amount=12.5, priority="FAST"))


def malformed_json(gateway: RunningGateway, partner: Partner) -> httpx.Response:
    return _post(gateway, _keyed(partner), content=b'{"token": "USDC", "amount": 12.5,}')


def missing_idempotency_key(gateway: RunningGateway, partner: Partner) -> httpx.Response:
    return _post(gateway, partner.headers, _body())


def idempotency_key_reused(gateway: RunningGateway, partner: Partner) -> httpx.Response:
    first = _post(gateway, _keyed(partner, REUSED_KEY), _body())
    assert first.status_code == 200, first.text
    return _post(gateway, _keyed(partner, REUSED_KEY), _body(amount="99"))


def body_too_large(gateway: RunningGateway, partner: Partner) -> httpx.Response:
    return _post(gateway, _keyed(partner), _body(clientReference="x" * 70_000))


def not_cancellable(gateway: RunningGateway, partner: Partner) -> httpx.Response:
    created = _post(gateway, _keyed(partner), _body())
    assert created.status_code == 200, created.text
    name = created.json()["name"]
    with gateway.server.store.sessions.begin() as session:  # as the processor leaves it
        session.execute(
            Withdrawal.__table__.update()
            .where(Withdrawal.id == name.removeprefix("withdrawals/"))
            .values(state="BROADCAST", tx_hash="0x" + "ab" * 32, payout_tx_id=new_ulid())
        )
    return _post(
        gateway, partner.headers, {"reason": "duplicate invoice"}, path=f"/v1/{name}:cancel"
    )


def unknown_api_key(gateway: RunningGateway, partner: Partner) -> httpx.Response:
    headers = {"Authorization": f"Bearer {UNKNOWN_KEY}", "Idempotency-Key": str(uuid.uuid4())}
    return _post(gateway, headers, _body())


EXAMPLES: dict[str, Callable[[RunningGateway, Partner], httpx.Response]] = {
    "invalid-fields": invalid_fields,
    "json-types": json_types,
    "malformed-json": malformed_json,
    "missing-idempotency-key": missing_idempotency_key,
    "idempotency-key-reused": idempotency_key_reused,
    "body-too-large": body_too_large,
    "not-cancellable": not_cancellable,
    "unknown-api-key": unknown_api_key,
}
"""The request behind each tagged example of docs/api.md."""


# ---------------------------------------------------------------- reading the page


def tagged_examples(markdown: str) -> dict[str, Any]:
    """NAME -> the decoded JSON block right after each `<!-- example: NAME -->`."""
    lines = markdown.splitlines()
    found: dict[str, Any] = {}
    for number, line in enumerate(lines):
        tag = _TAG.match(line.strip())
        if tag is None:
            continue
        name = tag.group(1)
        assert name not in found, f"example {name!r} is tagged twice"
        start = number + 1
        while start < len(lines) and not lines[start].strip():
            start += 1
        assert start < len(lines) and lines[start].strip() == "```json", (
            f"the tag of {name!r} (line {number + 1}) must be followed by a ```json block"
        )
        end = lines.index("```", start + 1)
        found[name] = json.loads("\n".join(lines[start + 1 : end]))
    return found


def normalise(value: Any) -> Any:
    """`value` with every withdrawal id and trace id replaced by a placeholder."""
    if isinstance(value, dict):
        return {key: normalise(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalise(item) for item in value]
    if isinstance(value, str):
        return _TRACE_ID.sub("<trace-id>", _ULID.sub("<id>", value))
    return value


def documented_reasons(markdown: str) -> dict[str, tuple[str, int]]:
    """REASON -> (code, HTTP status), from the reason table of `## Errors`."""
    section = scan.section(markdown, "Errors")
    table = [line.strip() for line in section.splitlines() if line.strip().startswith("|")]
    assert table and table[0] == TABLE_HEADER, f"the reason table must start with {TABLE_HEADER!r}"
    rows: dict[str, tuple[str, int]] = {}
    for line in table[2:]:
        match = _ROW.match(line)
        assert match is not None, f"not `` | `REASON` | CODE (HTTP) | when | ``: {line}"
        reason, code, status = match.groups()
        assert reason not in rows, f"{reason} is listed twice"
        rows[reason] = (code, int(status))
    return rows


def declared_reasons() -> dict[str, tuple[str, int]]:
    """REASON -> (code, HTTP status) of every reason the gateway can answer with."""
    return {
        value.reason: (value.code.name, value.status)
        for module in (gateway_errors, shared_errors)
        for value in vars(module).values()
        if isinstance(value, ErrorReason)
    }


def reason_differences(
    documented: dict[str, tuple[str, int]], declared: dict[str, tuple[str, int]]
) -> list[str]:
    problems = [f"not documented: {r} {declared[r]}" for r in sorted(declared.keys() - documented)]
    problems += [f"not declared: {r}" for r in sorted(documented.keys() - declared)]
    problems += [
        f"{r}: documented as {documented[r]}, declared as {declared[r]}"
        for r in sorted(documented.keys() & declared.keys())
        if documented[r] != declared[r]
    ]
    return problems


# ---------------------------------------------------------------- the real gateway


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLite only: the bodies do not depend on the database (test_rest_api runs both)."""
    with database("sqlite", tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture(scope="module")
def real_bodies(gateway: RunningGateway) -> dict[str, tuple[int, Any]]:
    """NAME -> (HTTP status, body) of each example, sent once to the real gateway."""
    partner = gateway.add_partner(f"docs-{uuid.uuid4().hex[:6]}")
    answers: dict[str, tuple[int, Any]] = {}
    for name, send in EXAMPLES.items():
        response = send(gateway, partner)
        assert response.headers["content-type"].startswith("application/json"), response.text
        answers[name] = (response.status_code, response.json())
    return answers


# ---------------------------------------------------------------- the checks


def test_every_example_is_tagged_once_on_the_page() -> None:
    tagged = tagged_examples(API_DOC.read_text(encoding="utf-8"))
    assert set(tagged) == set(EXAMPLES), (
        f"tagged but unknown: {sorted(set(tagged) - set(EXAMPLES))}; "
        f"not on the page: {sorted(set(EXAMPLES) - set(tagged))}"
    )


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_the_example_is_the_real_body(name: str, real_bodies: dict[str, tuple[int, Any]]) -> None:
    documented = tagged_examples(API_DOC.read_text(encoding="utf-8")).get(name)
    status, real = real_bodies[name]
    assert real["error"]["code"] == status
    assert documented is not None, f"docs/api.md has no example tagged {name!r}"
    assert normalise(documented) == normalise(real), (
        f"docs/api.md example {name!r} differs from the real body (HTTP {status}):\n"
        + json.dumps(real, indent=1, ensure_ascii=False)
    )


def test_the_reason_table_lists_exactly_the_declared_reasons() -> None:
    documented = documented_reasons(API_DOC.read_text(encoding="utf-8"))
    assert reason_differences(documented, declared_reasons()) == []


# ---------------------------------------------------------------- the checks can fail


def test_the_readers_see_what_they_must(tmp_path: Path) -> None:
    page = (
        "# API\n\n## Errors\n\n<!-- example: one -->\n\n```json\n"
        '{"error": {"message": "withdrawals/01jd3x5q8r7m2n4p6t9v0w1y2z, trace '
        '0af7651916cd43dd8448eb211c80319c"}}\n```\n\n'
        f"{TABLE_HEADER}\n| --- | --- | --- |\n"
        "| `NOT_FOUND` | NOT_FOUND (404) | gone |\n"
        "| `METHOD_NOT_ALLOWED` | UNIMPLEMENTED (405, with `Allow`) | wrong method |\n"
        "| `INTERNAL` | INTERNAL (503) | oops |\n\n## Listing\n"
    )
    examples = tagged_examples(page)
    other_ids = {"error": {"message": "withdrawals/01k0000000000000000000000z, trace " + "f" * 32}}
    assert normalise(examples["one"]) == normalise(other_ids)
    assert normalise(examples["one"]) != normalise({"error": {"message": "withdrawals/x"}})
    documented = documented_reasons(page)
    assert documented == {
        "NOT_FOUND": ("NOT_FOUND", 404),
        "METHOD_NOT_ALLOWED": ("UNIMPLEMENTED", 405),
        "INTERNAL": ("INTERNAL", 503),
    }
    problems = reason_differences(
        documented,
        {
            "NOT_FOUND": ("NOT_FOUND", 404),
            "METHOD_NOT_ALLOWED": ("UNIMPLEMENTED", 405),
            "INTERNAL": ("INTERNAL", 500),
            "BODY_TOO_LARGE": ("INVALID_ARGUMENT", 413),
        },
    )
    assert problems == [
        "not documented: BODY_TOO_LARGE ('INVALID_ARGUMENT', 413)",
        "INTERNAL: documented as ('INTERNAL', 503), declared as ('INTERNAL', 500)",
    ]
    with pytest.raises(AssertionError, match="twice"):
        documented_reasons(page.replace("`INTERNAL` | INTERNAL (503)", "`NOT_FOUND` | X (404)"))
    with pytest.raises(AssertionError, match="followed by a ```json block"):
        tagged_examples(page.replace("```json", "```"))
