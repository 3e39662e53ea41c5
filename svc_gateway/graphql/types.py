"""The schema's types. Enum values are the proto enum names, as REST/JSON prints them; a
string the API leaves empty (no transaction yet, no batch) is null here, and so is a block
number of 0. Nested lists that call the API (`Withdrawal.stateChanges`, `Batch.rows`) resolve
through `svc_gateway.graphql.resolvers`."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Generic, TypeVar

import strawberry

from svc_gateway.graphql.calls import Info

T = TypeVar("T")


@strawberry.enum(description="Lifecycle of a withdrawal (withdrawal.proto `State`).")
class State(enum.Enum):
    STATE_UNSPECIFIED = "STATE_UNSPECIFIED"
    STATE_RECEIVED = "STATE_RECEIVED"
    STATE_VALIDATED = "STATE_VALIDATED"
    STATE_PENDING_APPROVAL = "STATE_PENDING_APPROVAL"
    STATE_QUEUED = "STATE_QUEUED"
    STATE_SIGNED = "STATE_SIGNED"
    STATE_BROADCAST = "STATE_BROADCAST"
    STATE_CONFIRMING = "STATE_CONFIRMING"
    STATE_COMPLETED = "STATE_COMPLETED"
    STATE_ON_HOLD = "STATE_ON_HOLD"
    STATE_REJECTED = "STATE_REJECTED"
    STATE_CANCELLED = "STATE_CANCELLED"
    STATE_FAILED = "STATE_FAILED"


@strawberry.enum(description="How urgently a withdrawal is paid (withdrawal.proto `Priority`).")
class Priority(enum.Enum):
    PRIORITY_UNSPECIFIED = "PRIORITY_UNSPECIFIED"
    PRIORITY_STANDARD = "PRIORITY_STANDARD"
    PRIORITY_PRIORITY = "PRIORITY_PRIORITY"
    PRIORITY_EMERGENCY = "PRIORITY_EMERGENCY"


@strawberry.enum(description="Kind of a withdrawalStatus event (withdrawal.proto `EventType`).")
class EventType(enum.Enum):
    EVENT_TYPE_UNSPECIFIED = "EVENT_TYPE_UNSPECIFIED"
    EVENT_TYPE_SNAPSHOT = "EVENT_TYPE_SNAPSHOT"
    EVENT_TYPE_STATE_CHANGED = "EVENT_TYPE_STATE_CHANGED"
    EVENT_TYPE_REORGED = "EVENT_TYPE_REORGED"


@strawberry.enum(description="Where a batch is (batch.proto `BatchState`).")
class BatchState(enum.Enum):
    BATCH_STATE_UNSPECIFIED = "BATCH_STATE_UNSPECIFIED"
    BATCH_STATE_PROCESSING = "BATCH_STATE_PROCESSING"
    BATCH_STATE_DONE = "BATCH_STATE_DONE"
    BATCH_STATE_REJECTED = "BATCH_STATE_REJECTED"


@strawberry.enum(description="What happened to a file's bad rows (batch.proto `BatchPolicy`).")
class BatchPolicy(enum.Enum):
    BATCH_POLICY_UNSPECIFIED = "BATCH_POLICY_UNSPECIFIED"
    BATCH_POLICY_REJECT_ALL = "BATCH_POLICY_REJECT_ALL"
    BATCH_POLICY_ACCEPT_VALID = "BATCH_POLICY_ACCEPT_VALID"


@strawberry.enum(description="Whether an endpoint receives events (webhooks.proto).")
class EndpointState(enum.Enum):
    ENDPOINT_STATE_UNSPECIFIED = "ENDPOINT_STATE_UNSPECIFIED"
    ENDPOINT_STATE_ENABLED = "ENDPOINT_STATE_ENABLED"
    ENDPOINT_STATE_DISABLED = "ENDPOINT_STATE_DISABLED"


# ---------------------------------------------------------------- connections


@strawberry.type(description="Where a page ends.")
class PageInfo:
    end_cursor: str | None = strawberry.field(
        description="The API's page token for the next page (give it as `after`); null on "
        "the last page."
    )
    has_next_page: bool


@strawberry.type(description="One node of a page.")
class Edge(Generic[T]):
    node: T
    cursor: str | None = strawberry.field(
        description="The API pages by page token, not by node: the last edge of a page "
        "carries the next page's token (= pageInfo.endCursor); the others carry null."
    )


@strawberry.type(description="One page of a list, Relay style.")
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo


def connection(nodes: list[T], next_page_token: str) -> Connection[T]:
    """A page of `nodes`; `next_page_token` as the API answered it ("" on the last page)."""
    token = next_page_token or None
    edges = [
        Edge(node=node, cursor=token if index == len(nodes) - 1 else None)
        for index, node in enumerate(nodes)
    ]
    return Connection(
        edges=edges, page_info=PageInfo(end_cursor=token, has_next_page=token is not None)
    )


# ---------------------------------------------------------------- withdrawals


@strawberry.type(description="One state change of a withdrawal: an entry of its audit trail.")
class StateChange:
    name: str
    version: int
    from_state: State
    to_state: State
    reason: str | None
    message: str | None
    reorged: bool
    occur_time: dt.datetime | None
    transaction_hash: str | None
    confirmations: int


@strawberry.type(description="One payment of a token amount to one recipient.")
class Withdrawal:
    name: str = strawberry.field(description="`withdrawals/{withdrawal}`.")
    client_reference: str | None
    chain: str
    token: str
    recipient_address: str
    amount: str = strawberry.field(description="Decimal string in token units.")
    priority: Priority
    state: State
    state_reason: str | None
    state_message: str | None
    transaction_hash: str | None = strawberry.field(
        description="The paying transaction, once broadcast."
    )
    block_number: int | None = strawberry.field(
        description="The block holding the paying transaction, once mined."
    )
    fee: str | None = strawberry.field(
        description="This withdrawal's share of the network fee, in `feeCurrency`."
    )
    fee_currency: str | None
    confirmations: int
    create_time: dt.datetime | None
    update_time: dt.datetime | None
    end_time: dt.datetime | None
    version: int
    user_ref: str | None
    batch: str | None = strawberry.field(
        description="The batch that created it, `batches/{batch}`; null when created alone."
    )

    @strawberry.field(description="The audit trail, oldest first (ListStateChanges).")
    async def state_changes(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[StateChange] | None:
        from svc_gateway.graphql.resolvers import state_changes

        return await state_changes(info, self.name, first, after)


@strawberry.type(description="One message of the withdrawalStatus subscription.")
class WithdrawalEvent:
    event_type: EventType
    withdrawal: Withdrawal
    previous_state: State


# ---------------------------------------------------------------- batches


@strawberry.type(description="How many of a batch's withdrawals are in one state.")
class StateCount:
    state: State
    count: int


@strawberry.type(description="The sum of a batch's accepted amounts in one token.")
class TokenTotal:
    token: str
    amount: str
    count: int


@strawberry.type(description="One problem of one row.")
class BatchRowProblem:
    column: str | None
    reason: str
    message: str


@strawberry.type(description="One row of a batch's file and what became of it.")
class BatchReportRow:
    line: int
    client_reference: str | None
    withdrawal: str | None = strawberry.field(
        description="`withdrawals/{withdrawal}` for an accepted row; null for a bad one."
    )
    state: State
    transaction_hash: str | None
    fee: str | None
    reason: str | None
    problems: list[BatchRowProblem]


@strawberry.type(description="A partner's CSV upload of many withdrawals.")
class Batch:
    name: str = strawberry.field(description="`batches/{batch}`.")
    state: BatchState
    policy: BatchPolicy
    row_count: int
    accepted_count: int
    problem_row_count: int
    state_counts: list[StateCount]
    token_totals: list[TokenTotal]
    content_sha256: str
    request_id: str
    create_time: dt.datetime | None

    @strawberry.field(description="The report: one entry per row, in line order (GetBatchReport).")
    async def rows(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[BatchReportRow] | None:
        from svc_gateway.graphql.resolvers import batch_rows

        return await batch_rows(info, self.name, first, after)


# ---------------------------------------------------------------- webhooks


@strawberry.type(description="A URL to which the partner's events are POSTed (never its secret).")
class WebhookEndpoint:
    name: str
    url: str
    event_types: list[str]
    description: str | None
    state: EndpointState
    state_reason: str | None
    previous_secret_expire_time: dt.datetime | None
    create_time: dt.datetime | None
    update_time: dt.datetime | None
    last_success_time: dt.datetime | None


# ---------------------------------------------------------------- inputs


@strawberry.input(description="The withdrawal to create (CreateWithdrawalRequest.withdrawal).")
class CreateWithdrawalInput:
    token: str
    recipient_address: str
    amount: str = strawberry.field(description='Decimal string in token units, e.g. "12.5".')
    chain: str | None = None
    client_reference: str | None = None
    priority: Priority | None = None
    user_ref: str | None = None


@strawberry.input(
    description="Which withdrawals to list; every field given must match (ListWithdrawals' "
    "`filter`, written for you)."
)
class WithdrawalFilter:
    states: list[State] | None = strawberry.field(default=None, description="Any of these.")
    client_reference: str | None = None
    user_ref: str | None = None
    recipient_address: str | None = None
    token: str | None = None
    batch: str | None = strawberry.field(default=None, description="`batches/{batch}`.")
    created_from: dt.datetime | None = strawberry.field(
        default=None, description="create_time >= this (with a zone)."
    )
    created_before: dt.datetime | None = strawberry.field(
        default=None, description="create_time < this (with a zone)."
    )
    amount_min: str | None = strawberry.field(
        default=None, description="amount >= this, in token units."
    )
    amount_max: str | None = strawberry.field(
        default=None, description="amount <= this, in token units."
    )
