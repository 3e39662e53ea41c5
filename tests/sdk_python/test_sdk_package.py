"""The SDK as a package, without a stack: its generated code is what proto/ generates now
(drift fails here), it never imports the server's top-level `assetwithdrawal` package, it is
typed (py.typed, stubs for the generated modules), its REST mapping is read from the
`google.api.http` rules, and the webhook verifier checks Standard Webhooks signatures the way
the gateway's sender makes them."""

from __future__ import annotations

import datetime as dt
import filecmp
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from assetwithdrawal_sdk import (
    IdempotencyKeyReused,
    InvalidArgument,
    RateLimited,
    RetryPolicy,
    Unauthenticated,
    Unavailable,
    WebhookVerificationError,
    WebhookVerifier,
    WithdrawalNotCancellable,
)
from assetwithdrawal_sdk._methods import METHODS, http_request
from assetwithdrawal_sdk.errors import error_from_grpc, error_from_http
from assetwithdrawal_sdk.models import Withdrawal
from withdrawal_shared.webhooks.secrets import new_secret

REPO = Path(__file__).resolve().parents[2]
SDK = REPO / "sdk" / "python"
GEN = SDK / "src" / "assetwithdrawal_sdk" / "_gen"


def _differences(a: Path, b: Path) -> list[str]:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    found = [f"only in committed: {n}" for n in cmp.left_only]
    found += [f"only in generated: {n}" for n in cmp.right_only]
    found += [f"differs: {n}" for n in cmp.diff_files]
    for name, sub in cmp.subdirs.items():
        found += [f"{name}/{d}" for d in _differences(Path(sub.left), Path(sub.right))]
    return found


def test_generated_code_matches_proto(tmp_path: Path) -> None:
    out = tmp_path / "_gen"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_sdk_python.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    drift = _differences(GEN, out)
    assert not drift, f"sdk/python _gen/ drifted from proto/: run `make sdk-python-gen`: {drift}"


def test_the_sdk_never_imports_the_servers_generated_package() -> None:
    for path in SDK.rglob("*.py*"):
        text = path.read_text()
        assert "from assetwithdrawal." not in text and "import assetwithdrawal." not in text, path
    probe = (
        "import sys, assetwithdrawal_sdk\n"
        "from assetwithdrawal_sdk import Client, AsyncClient\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] == 'assetwithdrawal')\n"
        "assert not leaked, leaked\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=SDK)


def test_the_package_is_typed() -> None:
    root = SDK / "src" / "assetwithdrawal_sdk"
    assert (root / "py.typed").exists()
    for module in GEN.rglob("*_pb2*.py"):
        assert module.with_suffix(".pyi").exists(), module


def test_rest_requests_follow_the_http_rules() -> None:
    from assetwithdrawal_sdk._gen.assetwithdrawal.withdrawal.v1 import withdrawal_pb2

    create = http_request(
        METHODS["CreateWithdrawal"],
        withdrawal_pb2.CreateWithdrawalRequest(
            withdrawal=Withdrawal(token="USDC", amount="1", recipient_address="0xab"),
            request_id="k-1",
        ),
    )
    assert (create.verb, create.path, create.query) == ("POST", "/v1/withdrawals", [])
    assert create.body == {"token": "USDC", "amount": "1", "recipientAddress": "0xab"}
    assert create.headers == {"Idempotency-Key": "k-1"}
    watch = http_request(
        METHODS["WatchWithdrawal"],
        withdrawal_pb2.WatchWithdrawalRequest(name="withdrawals/01x", resume_after_version=0),
    )
    assert (watch.verb, watch.path, watch.query) == (
        "GET",
        "/v1/withdrawals/01x:watch",
        [("resumeAfterVersion", "0")],
    )
    assert not METHODS["RotateWebhookSecret"].safe_to_retry  # not idempotent in the proto
    assert METHODS["CreateWithdrawal"].safe_to_retry  # idempotent on its request_id


def _signed(secret: str, body: bytes, when: dt.datetime) -> dict[str, str]:
    """Headers as svc_webhooks.sender makes them."""
    return {
        "webhook-id": "evt_01j9zq8m5k3v7t2r4w6y8a0c1e_1",
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign("evt_01j9zq8m5k3v7t2r4w6y8a0c1e_1", when, body),
    }


def test_webhook_verifier() -> None:
    secret = new_secret()
    now = dt.datetime.now(dt.UTC)
    body = (
        b'{"data":{"withdrawal":"withdrawals/01j9zq8m5k3v7t2r4w6y8a0c1e","state":"RECEIVED",'
        b'"sequence":1},"id":"evt_01j9zq8m5k3v7t2r4w6y8a0c1e_1","timestamp":"x",'
        b'"type":"withdrawal.received"}'
    )
    headers = _signed(secret, body, now)
    event = WebhookVerifier(secret).verify(body, headers)
    assert (event.type, event.state, event.sequence) == ("withdrawal.received", "RECEIVED", 1)
    # Header names in any case, and a str body, verify alike.
    upper = {k.upper(): v for k, v in headers.items()}
    assert WebhookVerifier(secret).verify(body.decode(), upper).id == event.id

    for bad_body, bad_headers in [
        (body.replace(b"RECEIVED", b"COMPLETED"), headers),
        (body, {**headers, "webhook-id": "evt_other"}),
        (body, {**headers, "webhook-signature": "v1,AAAA"}),
        (body, {k: v for k, v in headers.items() if k != "webhook-signature"}),
        (body, _signed(new_secret(), body, now)),
    ]:
        with pytest.raises(WebhookVerificationError):
            WebhookVerifier(secret).verify(bad_body, bad_headers)
    old = _signed(secret, body, now - dt.timedelta(minutes=6))
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        WebhookVerifier(secret).verify(body, old)
    assert WebhookVerifier(secret, tolerance=dt.timedelta(minutes=10)).verify(body, old).id
    # Two signatures during a rotation: the header holds both, either secret verifies.
    other = new_secret()
    both = {
        **headers,
        "webhook-signature": f"{_signed(other, body, now)['webhook-signature']} "
        f"{headers['webhook-signature']}",
    }
    assert WebhookVerifier(secret).verify(body, both).id
    assert WebhookVerifier(other).verify(body, both).id
    with pytest.raises(ValueError):
        WebhookVerifier("")


EXAMPLE = re.compile(r"<!-- example: ([a-z-]+) -->\n```json\n(.*?)```", re.S)
EXPECTED = {
    "unknown-api-key": (Unauthenticated, "UNAUTHENTICATED"),
    "idempotency-key-reused": (IdempotencyKeyReused, "IDEMPOTENCY_KEY_REUSED"),
    "missing-idempotency-key": (InvalidArgument, "INVALID_ARGUMENT"),
    "invalid-fields": (InvalidArgument, "INVALID_ARGUMENT"),
    "json-types": (InvalidArgument, "INVALID_ARGUMENT"),
    "malformed-json": (InvalidArgument, "INVALID_ARGUMENT"),
    "body-too-large": (InvalidArgument, "BODY_TOO_LARGE"),
    "not-cancellable": (WithdrawalNotCancellable, "WITHDRAWAL_NOT_CANCELLABLE"),
}


def test_every_error_example_of_the_api_docs_becomes_its_typed_exception() -> None:
    examples = dict(EXAMPLE.findall((REPO / "docs" / "api.md").read_text()))
    assert set(examples) == set(EXPECTED)
    for name, body in examples.items():
        status = json.loads(body)["error"]["code"]
        error = error_from_http(status, body.encode())
        cls, reason = EXPECTED[name]
        assert type(error) is cls, (name, error)
        assert error.reason == reason and error.http_status == status
        assert error.domain == "withdrawals.assetwithdrawal.dev"
        details = json.loads(body)["error"]["details"]
        violations = [v for d in details for v in d.get("fieldViolations", [])]
        assert [(v.field, v.description) for v in error.field_violations] == [
            (v["field"], v["description"]) for v in violations
        ]
    reused = error_from_http(409, examples["idempotency-key-reused"].encode())
    assert reused.metadata["withdrawal"].startswith("withdrawals/")


def test_errors_without_a_status_body_still_map_to_their_code() -> None:
    assert isinstance(error_from_http(502, b"<html>bad gateway</html>"), Unavailable)
    limited = error_from_http(429, b"", retry_after="3")
    assert isinstance(limited, RateLimited) and limited.retry_after == 3
    assert isinstance(error_from_grpc("UNAVAILABLE", "gone", None), Unavailable)


def test_retry_policy() -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.1, max_backoff=1)
    gone = Unavailable("gone")
    assert 0 <= (policy.delay(gone, 1, safe=True) or 0) <= 0.1
    assert 0 <= (policy.delay(gone, 2, safe=True) or 0) <= 0.2
    assert policy.delay(gone, 3, safe=True) is None  # the last attempt
    assert policy.delay(gone, 1, safe=False) is None  # an unknown outcome, not idempotent
    busy = error_from_http(503, b"{}", retry_after="1")  # the database did not answer in time
    assert isinstance(busy, Unavailable) and policy.delay(busy, 1, safe=True) == 1.0
    assert RetryPolicy(max_retry_after=0.5).delay(busy, 1, safe=True) is None
    limited = RateLimited("slow down", retry_after=2)
    wait = policy.delay(limited, 1, safe=False)  # nothing was done: always retried
    assert wait is not None and 2 <= wait <= 2.1
    assert RetryPolicy(max_retry_after=1).delay(limited, 1, safe=True) is None
    assert policy.delay(InvalidArgument("no"), 1, safe=True) is None
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
