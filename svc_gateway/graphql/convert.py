"""Proto messages to the schema's types, and the GraphQL inputs to requests.

Only shapes change here: no value is checked (the API checks them, with its own errors).
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from assetwithdrawal.webhooks.v1 import webhooks_pb2
from assetwithdrawal.withdrawal.v1 import batch_pb2, withdrawal_pb2
from svc_gateway.graphql import types as t

E = TypeVar("E", bound=enum.Enum)


def _text(value: str) -> str | None:
    return value or None


def _time(message: object, name: str) -> dt.datetime | None:
    if not message.HasField(name):  # type: ignore[attr-defined]
        return None
    stamp: Timestamp = getattr(message, name)
    return stamp.ToDatetime(tzinfo=dt.UTC)


def _enum(kind: type[E], name: str) -> E:
    return kind[name]


def state(value: int) -> t.State:
    return _enum(t.State, withdrawal_pb2.State.Name(value))  # type: ignore[arg-type]


def withdrawal(w: withdrawal_pb2.Withdrawal) -> t.Withdrawal:
    return t.Withdrawal(
        name=w.name,
        client_reference=_text(w.client_reference),
        chain=w.chain,
        token=w.token,
        recipient_address=w.recipient_address,
        amount=w.amount,
        priority=_enum(t.Priority, withdrawal_pb2.Priority.Name(w.priority)),
        state=state(w.state),
        state_reason=_text(w.state_reason),
        state_message=_text(w.state_message),
        transaction_hash=_text(w.transaction_hash),
        block_number=w.block_number or None,
        fee=_text(w.fee),
        fee_currency=_text(w.fee_currency),
        confirmations=w.confirmations,
        create_time=_time(w, "create_time"),
        update_time=_time(w, "update_time"),
        end_time=_time(w, "end_time"),
        version=w.version,
        user_ref=_text(w.user_ref),
        batch=_text(w.batch),
    )


def state_change(c: withdrawal_pb2.StateChange) -> t.StateChange:
    return t.StateChange(
        name=c.name,
        version=c.version,
        from_state=state(c.from_state),
        to_state=state(c.to_state),
        reason=_text(c.reason),
        message=_text(c.message),
        reorged=c.reorged,
        occur_time=_time(c, "occur_time"),
        transaction_hash=_text(c.transaction_hash),
        confirmations=c.confirmations,
    )


def event(e: withdrawal_pb2.WatchWithdrawalResponse) -> t.WithdrawalEvent:
    return t.WithdrawalEvent(
        event_type=_enum(t.EventType, withdrawal_pb2.EventType.Name(e.event_type)),
        withdrawal=withdrawal(e.withdrawal),
        previous_state=state(e.previous_state),
    )


def batch(b: batch_pb2.Batch) -> t.Batch:
    return t.Batch(
        name=b.name,
        state=_enum(t.BatchState, batch_pb2.BatchState.Name(b.state)),
        policy=_enum(t.BatchPolicy, batch_pb2.BatchPolicy.Name(b.policy)),
        row_count=b.row_count,
        accepted_count=b.accepted_count,
        problem_row_count=b.problem_row_count,
        state_counts=[t.StateCount(state=state(c.state), count=c.count) for c in b.state_counts],
        token_totals=[
            t.TokenTotal(token=x.token, amount=x.amount, count=x.count) for x in b.token_totals
        ],
        content_sha256=b.content_sha256,
        request_id=b.request_id,
        create_time=_time(b, "create_time"),
    )


def report_row(r: batch_pb2.BatchReportRow) -> t.BatchReportRow:
    return t.BatchReportRow(
        line=r.line,
        client_reference=_text(r.client_reference),
        withdrawal=_text(r.withdrawal),
        state=state(r.state),
        transaction_hash=_text(r.transaction_hash),
        fee=_text(r.fee),
        reason=_text(r.reason),
        problems=[
            t.BatchRowProblem(column=_text(p.column), reason=p.reason, message=p.message)
            for p in r.problems
        ],
    )


def webhook_endpoint(e: webhooks_pb2.WebhookEndpoint) -> t.WebhookEndpoint:
    return t.WebhookEndpoint(
        name=e.name,
        url=e.url,
        event_types=list(e.event_types),
        description=_text(e.description),
        state=_enum(t.EndpointState, webhooks_pb2.EndpointState.Name(e.state)),
        state_reason=_text(e.state_reason),
        previous_secret_expire_time=_time(e, "previous_secret_expire_time"),
        create_time=_time(e, "create_time"),
        update_time=_time(e, "update_time"),
        last_success_time=_time(e, "last_success_time"),
    )


# ---------------------------------------------------------------- inputs


def create_request(
    given: t.CreateWithdrawalInput, request_id: str
) -> withdrawal_pb2.CreateWithdrawalRequest:
    w = withdrawal_pb2.Withdrawal(
        token=given.token,
        recipient_address=given.recipient_address,
        amount=given.amount,
        chain=given.chain or "",
        client_reference=given.client_reference or "",
        user_ref=given.user_ref or "",
    )
    if given.priority is not None:
        w.priority = withdrawal_pb2.Priority.Value(given.priority.value)
    return withdrawal_pb2.CreateWithdrawalRequest(withdrawal=w, request_id=request_id)


def _quoted(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _rfc3339(value: dt.datetime) -> str:
    """As given; a time without a zone stays without one (the API refuses it, naming why)."""
    return value.isoformat()


def list_filter(given: t.WithdrawalFilter | None) -> str:
    """The AIP-160 `filter` of ListWithdrawals that selects what `given` describes."""
    if given is None:
        return ""
    terms: list[str] = []
    if given.states:
        terms.append(" OR ".join(f"state = {s.value}" for s in given.states))
    for name, value in (
        ("client_reference", given.client_reference),
        ("user_ref", given.user_ref),
        ("recipient_address", given.recipient_address),
        ("token", given.token),
        ("batch", given.batch),
    ):
        if value is not None:
            terms.append(f"{name} = {_quoted(value)}")
    if given.created_from is not None:
        terms.append(f"create_time >= {_quoted(_rfc3339(given.created_from))}")
    if given.created_before is not None:
        terms.append(f"create_time < {_quoted(_rfc3339(given.created_before))}")
    if given.amount_min is not None:
        terms.append(f"amount >= {_quoted(given.amount_min)}")
    if given.amount_max is not None:
        terms.append(f"amount <= {_quoted(given.amount_max)}")
    return " AND ".join(terms)
