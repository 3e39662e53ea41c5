"""Database rows to API messages: a withdrawal as it is now (`to_proto`), or as it was at one
of its versions (`as_of`, from that version's audit row: what watchers are sent)."""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING

from google.protobuf import timestamp_pb2

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from withdrawal_shared.amounts import format_amount
from withdrawal_shared.db.audit import Snapshot
from withdrawal_shared.db.models import Withdrawal, WithdrawalAudit
from withdrawal_shared.db.reference import ReferenceData
from withdrawal_shared.states import TERMINAL, State

if TYPE_CHECKING:
    from svc_gateway.store import CreatedWithdrawal

RESOURCE_PREFIX = "withdrawals/"

CONFIRMATIONS_PHRASE = re.compile(r"\b(\d+) of (\d+) confirmations\b")
"""How a CONFIRMING message counts (the monitor's "...; 2 of 5 confirmations.")."""
PAID_PHRASE = re.compile(r"\bhas (\d+) confirmations\b")
"""How a COMPLETED message counts (the monitor's "Paid: ... has 5 confirmations.")."""


def resource_name(withdrawal_id: str) -> str:
    return RESOURCE_PREFIX + withdrawal_id


_EPOCH = dt.datetime(1970, 1, 1)


def _timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    """A stored datetime (its fields UTC's) as a Timestamp: what `Timestamp.FromDatetime`
    gives, from the difference to the epoch (a fifth of its cost; a response has two or
    three)."""
    since = value.replace(tzinfo=None) - _EPOCH  # its fields are UTC's, as stored
    return timestamp_pb2.Timestamp(
        seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1_000
    )


def _unchanging(
    row: Withdrawal | CreatedWithdrawal, reference: ReferenceData
) -> withdrawal_pb2.Withdrawal:
    """The fields a withdrawal has from its creation on and never changes."""
    token = reference.tokens_by_id[row.token_id]
    batch_id = row.batch_id if isinstance(row, Withdrawal) else None
    return withdrawal_pb2.Withdrawal(
        name=resource_name(row.id),
        batch=f"batches/{batch_id}" if batch_id else "",
        client_reference=row.client_reference,
        chain=row.chain,
        token=token.symbol,
        recipient_address=row.recipient,
        amount=format_amount(row.amount, token.decimals),
        priority=withdrawal_pb2.Priority.Value(f"PRIORITY_{row.priority}"),
        create_time=_timestamp(row.create_time),
        user_ref=row.user_ref,
    )


def _set_changing(
    message: withdrawal_pb2.Withdrawal,
    reference: ReferenceData,
    chain: str,
    *,
    state: str,
    reason: str,
    text: str,
    snapshot: Snapshot,
    version: int,
    update_time: dt.datetime,
    end_time: dt.datetime | None,
) -> withdrawal_pb2.Withdrawal:
    message.state = withdrawal_pb2.State.Value(f"STATE_{state}")
    message.state_reason = reason
    message.state_message = text
    message.transaction_hash = snapshot.tx_hash or ""
    message.confirmations = snapshot.confirmations
    message.version = version
    message.update_time.CopyFrom(_timestamp(update_time))
    if snapshot.fee_wei is not None:
        native = reference.chains[chain]
        message.fee = format_amount(snapshot.fee_wei, native.native_decimals)
        message.fee_currency = native.native_symbol
    if end_time is not None:
        message.end_time.CopyFrom(_timestamp(end_time))
    return message


def to_proto(
    row: Withdrawal | CreatedWithdrawal, reference: ReferenceData, block_number: int = 0
) -> withdrawal_pb2.Withdrawal:
    """The withdrawal as it is now; `block_number`: the block of its mined payout, if any."""
    message = _set_changing(
        _unchanging(row, reference),
        reference,
        row.chain,
        state=row.state,
        reason=row.state_reason,
        text=row.state_message,
        snapshot=Snapshot(row.tx_hash, row.fee_wei, row.confirmations),
        version=row.version,
        update_time=row.update_time,
        end_time=row.end_time,
    )
    message.block_number = block_number
    return message


def state_change(withdrawal_id: str, audit: WithdrawalAudit) -> withdrawal_pb2.StateChange:
    """One audit row as a StateChange (`withdrawals/{id}/stateChanges/{version}`)."""
    snapshot = Snapshot.decode(audit.snapshot)
    if snapshot is None:
        snapshot = Snapshot(confirmations=_stated_confirmations(audit.to_state, audit.message))
    return withdrawal_pb2.StateChange(
        name=f"{resource_name(withdrawal_id)}/stateChanges/{audit.version}",
        version=audit.version,
        from_state=withdrawal_pb2.State.Value(f"STATE_{audit.from_state}")
        if audit.from_state
        else withdrawal_pb2.STATE_UNSPECIFIED,
        to_state=withdrawal_pb2.State.Value(f"STATE_{audit.to_state}"),
        reason=audit.reason,
        message=audit.message,
        reorged=audit.reorged,
        occur_time=_timestamp(audit.occur_time),
        transaction_hash=snapshot.tx_hash or "",
        confirmations=snapshot.confirmations,
    )


def as_of(
    row: Withdrawal, audit: WithdrawalAudit, reference: ReferenceData
) -> withdrawal_pb2.Withdrawal:
    """The withdrawal as it was right after the change `audit` records (its version): the
    state, reason, message, transaction hash, fee, confirmations and times from the audit
    row, only the fields that never change from `row`. The same message whenever it is built,
    live or in a replay. An audit row written before snapshots were recorded shows no
    transaction hash or fee, and only the confirmations its message states."""
    snapshot = Snapshot.decode(audit.snapshot)
    if snapshot is None:
        snapshot = Snapshot(confirmations=_stated_confirmations(audit.to_state, audit.message))
    return _set_changing(
        _unchanging(row, reference),
        reference,
        row.chain,
        state=audit.to_state,
        reason=audit.reason,
        text=audit.message,
        snapshot=snapshot,
        version=audit.version,
        update_time=audit.occur_time,
        end_time=audit.occur_time if State(audit.to_state) in TERMINAL else None,
    )


def _stated_confirmations(state: str, message: str) -> int:
    """The confirmations a CONFIRMING or COMPLETED message states; 0 for any other."""
    phrase = {State.CONFIRMING: CONFIRMATIONS_PHRASE, State.COMPLETED: PAID_PHRASE}.get(
        State(state)
    )
    found = phrase.search(message) if phrase is not None else None
    return int(found.group(1)) if found is not None else 0
