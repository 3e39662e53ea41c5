"""The API's messages and enums, as generated from proto/ (with typing stubs): every
response the client returns is one of these. Field names are the proto's (`recipient_address`,
`state_reason`, ...); enums are ints with named constants (`State.STATE_COMPLETED`,
`State.Name(w.state)`); timestamps are `google.protobuf.Timestamp` (`.ToDatetime()`)."""

from __future__ import annotations

from assetwithdrawal_sdk._gen.assetwithdrawal.webhooks.v1.webhooks_pb2 import (
    EndpointState,
    ListWebhookEndpointsResponse,
    WebhookEndpoint,
)
from assetwithdrawal_sdk._gen.assetwithdrawal.withdrawal.v1.batch_pb2 import (
    Batch,
    BatchPolicy,
    BatchReport,
    BatchReportRow,
    BatchRowProblem,
    BatchState,
    ListBatchesResponse,
    StateCount,
    TokenFunding,
    TokenTotal,
)
from assetwithdrawal_sdk._gen.assetwithdrawal.withdrawal.v1.withdrawal_pb2 import (
    EventType,
    ListStateChangesResponse,
    ListWithdrawalsResponse,
    Priority,
    State,
    StateChange,
    Withdrawal,
)
from assetwithdrawal_sdk._gen.assetwithdrawal.withdrawal.v1.withdrawal_pb2 import (
    WatchWithdrawalResponse as WatchEvent,
)

__all__ = [
    "TERMINAL_BATCH_STATES",
    "TERMINAL_STATES",
    "Batch",
    "BatchPolicy",
    "BatchReport",
    "BatchReportRow",
    "BatchRowProblem",
    "BatchState",
    "EndpointState",
    "EventType",
    "ListBatchesResponse",
    "ListStateChangesResponse",
    "ListWebhookEndpointsResponse",
    "ListWithdrawalsResponse",
    "Priority",
    "State",
    "StateChange",
    "StateCount",
    "TokenFunding",
    "TokenTotal",
    "WatchEvent",
    "WebhookEndpoint",
    "Withdrawal",
    "is_terminal",
]

TERMINAL_STATES: frozenset[int] = frozenset(
    {State.STATE_COMPLETED, State.STATE_REJECTED, State.STATE_CANCELLED, State.STATE_FAILED}
)
"""A withdrawal in one of these states never changes again."""

TERMINAL_BATCH_STATES: frozenset[int] = frozenset(
    {BatchState.BATCH_STATE_DONE, BatchState.BATCH_STATE_REJECTED}
)


def is_terminal(state: int) -> bool:
    """Whether a withdrawal in `state` is final (COMPLETED, REJECTED, CANCELLED, FAILED)."""
    return state in TERMINAL_STATES
