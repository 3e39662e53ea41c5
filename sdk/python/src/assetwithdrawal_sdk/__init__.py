"""The Python SDK of the Asset Withdrawal API.

from assetwithdrawal_sdk import Client

with Client("awk_...", target="api.example.com:443") as client:
    w = client.create_withdrawal(token="USDC", recipient_address="0x...", amount="12.5")
    for event in client.watch(w.name):
        print(State.Name(event.withdrawal.state))
"""

from __future__ import annotations

from assetwithdrawal_sdk._common import VERSION as __version__
from assetwithdrawal_sdk._retry import RetryPolicy
from assetwithdrawal_sdk.aio import AsyncClient
from assetwithdrawal_sdk.client import Client
from assetwithdrawal_sdk.errors import (
    Aborted,
    AlreadyExists,
    AssetWithdrawalError,
    BatchRowsInvalid,
    Cancelled,
    ClientReferenceReused,
    ConcurrentModification,
    DeadlineExceeded,
    DuplicateFile,
    FailedPrecondition,
    FieldViolation,
    IdempotencyKeyReused,
    InternalError,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    UnknownError,
    WebhookVerificationError,
    WithdrawalNotCancellable,
)
from assetwithdrawal_sdk.models import (
    TERMINAL_STATES,
    Batch,
    BatchPolicy,
    BatchReport,
    BatchReportRow,
    BatchState,
    EventType,
    Priority,
    State,
    StateChange,
    WatchEvent,
    WebhookEndpoint,
    Withdrawal,
    is_terminal,
)
from assetwithdrawal_sdk.webhooks import WebhookEvent, WebhookVerifier

__all__ = [
    "TERMINAL_STATES",
    "Aborted",
    "AlreadyExists",
    "AssetWithdrawalError",
    "AsyncClient",
    "Batch",
    "BatchPolicy",
    "BatchReport",
    "BatchReportRow",
    "BatchRowsInvalid",
    "BatchState",
    "Cancelled",
    "Client",
    "ClientReferenceReused",
    "ConcurrentModification",
    "DeadlineExceeded",
    "DuplicateFile",
    "EventType",
    "FailedPrecondition",
    "FieldViolation",
    "IdempotencyKeyReused",
    "InternalError",
    "InvalidArgument",
    "LimitExceeded",
    "NotFound",
    "PermissionDenied",
    "Priority",
    "RateLimited",
    "RetryPolicy",
    "State",
    "StateChange",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "UnknownError",
    "WatchEvent",
    "WebhookEndpoint",
    "WebhookEvent",
    "WebhookVerificationError",
    "WebhookVerifier",
    "Withdrawal",
    "WithdrawalNotCancellable",
    "__version__",
    "is_terminal",
]
