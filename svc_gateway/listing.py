"""ListWithdrawals: the AIP-160 filter subset we accept, and opaque page tokens."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass

from withdrawal_shared.errors import FieldViolation, invalid_argument, quoted
from withdrawal_shared.ids import is_ulid
from withdrawal_shared.states import State

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

_TERM = re.compile(
    r"""\s*(?P<field>state|client_reference)\s*=\s*(?:"(?P<quoted>[^"]*)"|(?P<bare>[A-Za-z0-9_.:\-]+))\s*"""
)


@dataclass(frozen=True)
class ListQuery:
    states: frozenset[State]
    client_reference: str | None
    after_id: str | None
    page_size: int
    filter_digest: str


def _bad_filter(description: str) -> Exception:
    return invalid_argument([FieldViolation("filter", description)])


def parse_filter(text: str) -> tuple[frozenset[State], str | None]:
    """`state = QUEUED OR state = SIGNED AND client_reference = "x"` -> states, reference.

    Terms on `state` are ORed; one `client_reference` term may be ANDed with them.
    """
    states: set[State] = set()
    reference: str | None = None
    if not text.strip():
        return frozenset(), None
    for conjunct in re.split(r"\s+AND\s+", text.strip()):
        terms = re.split(r"\s+OR\s+", conjunct)
        for term in terms:
            match = _TERM.fullmatch(term)
            if match is None:
                raise _bad_filter(
                    f"cannot parse {quoted(term.strip())}; use e.g. state = COMPLETED, "
                    'state = QUEUED OR state = SIGNED, client_reference = "abc"'
                )
            value = match.group("quoted") if match.group("quoted") is not None else match["bare"]
            if match.group("field") == "state":
                name = value.removeprefix("STATE_")
                try:
                    states.add(State(name))
                except ValueError:
                    raise _bad_filter(
                        f"unknown state {quoted(value)}; one of {', '.join(s.value for s in State)}"
                    ) from None
            else:
                if len(terms) > 1 or reference is not None:
                    raise _bad_filter("client_reference may appear once, ANDed with states")
                reference = value
    return frozenset(states), reference


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode_page_token(after_id: str, filter_text: str) -> str:
    raw = json.dumps({"a": after_id, "f": _digest(filter_text)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def parse_list_request(page_size: int, page_token: str, filter_text: str) -> ListQuery:
    if page_size < 0:
        raise invalid_argument([FieldViolation("page_size", "must not be negative")])
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    states, reference = parse_filter(filter_text)
    after_id: str | None = None
    if page_token:
        try:
            padded = page_token + "=" * (-len(page_token) % 4)
            decoded = json.loads(base64.urlsafe_b64decode(padded.encode()))
            after_id = str(decoded["a"])
            digest = str(decoded["f"])
        except (ValueError, KeyError, TypeError):
            raise invalid_argument(
                [FieldViolation("page_token", "is not a token this API returned")]
            ) from None
        if not is_ulid(after_id):
            raise invalid_argument(
                [FieldViolation("page_token", "is not a token this API returned")]
            )
        if digest != _digest(filter_text):
            raise invalid_argument(
                [FieldViolation("page_token", "was issued for another filter; keep it the same")]
            )
    return ListQuery(states, reference, after_id, size, _digest(filter_text))
