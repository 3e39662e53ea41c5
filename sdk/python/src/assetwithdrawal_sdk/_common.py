"""What the sync and the asyncio clients share: building requests, naming resources,
following a watch across reconnects."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO

from assetwithdrawal_sdk._gen.assetwithdrawal.withdrawal.v1 import batch_pb2, withdrawal_pb2
from assetwithdrawal_sdk._retry import RetryPolicy, note_retry
from assetwithdrawal_sdk.errors import AssetWithdrawalError
from assetwithdrawal_sdk.models import TERMINAL_STATES, EventType, WatchEvent

API_KEY_ENV = "ASSETWITHDRAWAL_API_KEY"
VERSION = "0.1.0"
USER_AGENT = f"assetwithdrawal-sdk-python/{VERSION}"
CHUNK_BYTES = 64 * 1024
DEFAULT_TIMEOUT = 30.0
POLICIES = {
    "REJECT_ALL": batch_pb2.BATCH_POLICY_REJECT_ALL,
    "ACCEPT_VALID": batch_pb2.BATCH_POLICY_ACCEPT_VALID,
}


def api_key_or_env(api_key: str | None) -> str:
    key = api_key or os.environ.get(API_KEY_ENV, "")
    if not key:
        raise ValueError(f"no API key: pass api_key=... or set {API_KEY_ENV}")
    return key


def resource_name(collection: str, name_or_id: str) -> str:
    """`withdrawals/{id}` from a name or a bare id."""
    return name_or_id if name_or_id.startswith(f"{collection}/") else f"{collection}/{name_or_id}"


def amount_text(amount: str | Decimal | int) -> str:
    """An amount as the API takes it: a decimal string. Floats are refused: binary
    floating point cannot hold most decimal amounts exactly."""
    if isinstance(amount, bool | float):
        raise TypeError("amount must be a str, Decimal or int (never a float), e.g. '12.5'")
    if isinstance(amount, Decimal):
        return format(amount, "f")
    return str(amount)


def create_withdrawal_request(
    *,
    token: str,
    recipient_address: str,
    amount: str | Decimal | int,
    chain: str,
    client_reference: str,
    user_ref: str,
    priority: int,
    request_id: str | None,
) -> withdrawal_pb2.CreateWithdrawalRequest:
    """The create, with its idempotency key fixed once for every attempt (uuid4 unless given)."""
    return withdrawal_pb2.CreateWithdrawalRequest(
        withdrawal=withdrawal_pb2.Withdrawal(
            token=token,
            recipient_address=recipient_address,
            amount=amount_text(amount),
            chain=chain,
            client_reference=client_reference,
            user_ref=user_ref,
            priority=priority,  # type: ignore[arg-type]
        ),
        request_id=request_id or str(uuid.uuid4()),
    )


def policy_value(policy: str | int) -> int:
    if isinstance(policy, int):
        return policy
    key = policy.upper().replace("-", "_").removeprefix("BATCH_POLICY_")
    if key not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    return POLICIES[key]


def batch_request_id(path: Path, policy: int) -> str:
    """The default key of an upload: the file's content and the policy, so running the same
    upload again (a retry, a script run twice) answers the batch it created, never a second."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    name = batch_pb2.BatchPolicy.Name(policy).removeprefix("BATCH_POLICY_").lower()  # type: ignore[arg-type]
    return f"sdk-{digest.hexdigest()[:40]}-{name}"


def file_size(path: Path) -> int:
    return path.stat().st_size


def open_binary(path: Path) -> BinaryIO:
    return path.open("rb")


def file_chunks(path: Path, chunk_bytes: int) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from iter(lambda: handle.read(chunk_bytes), b"")


class WatchCursor:
    """Where a watch is: the last version seen, so a reconnect resumes after it and a replayed
    event already yielded is skipped."""

    def __init__(self, name: str, resume_after_version: int | None) -> None:
        self.name = name
        self.version = resume_after_version
        self.done = False

    def request(self) -> withdrawal_pb2.WatchWithdrawalRequest:
        request = withdrawal_pb2.WatchWithdrawalRequest(name=self.name)
        if self.version is not None:
            request.resume_after_version = self.version
        return request

    def accept(self, event: WatchEvent) -> bool:
        """Whether to yield `event` (False: seen before); marks the watch done at a terminal
        state."""
        version = event.withdrawal.version
        if (
            self.version is not None
            and version <= self.version
            and event.event_type != EventType.EVENT_TYPE_SNAPSHOT
        ):
            return False
        self.version = version
        if event.withdrawal.state in TERMINAL_STATES:
            self.done = True
        return True


def new_request_id() -> str:
    return str(uuid.uuid4())


def reconnect_wait(
    retry: RetryPolicy, error: AssetWithdrawalError | None, failures: int, method: str
) -> float:
    """How long to wait before reopening a watch. `error` None: the stream ended (or sat idle)
    before a terminal state, which is not a failure; else `failures` counts the consecutive
    failed opens, and the error is raised when the policy gives up on it."""
    if error is None:
        return retry.initial_backoff
    wait = retry.delay(error, failures, safe=True)
    if wait is None:
        error.attempts = failures
        raise error
    note_retry(method, error, failures, wait)
    return wait
