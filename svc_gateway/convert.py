"""Database rows to API messages."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from google.protobuf import timestamp_pb2

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from withdrawal_shared.amounts import format_amount
from withdrawal_shared.db.models import Withdrawal
from withdrawal_shared.db.reference import ReferenceData

if TYPE_CHECKING:
    from svc_gateway.store import CreatedWithdrawal

RESOURCE_PREFIX = "withdrawals/"


def resource_name(withdrawal_id: str) -> str:
    return RESOURCE_PREFIX + withdrawal_id


def _timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.replace(tzinfo=dt.UTC))
    return ts


def to_proto(
    row: Withdrawal | CreatedWithdrawal, reference: ReferenceData
) -> withdrawal_pb2.Withdrawal:
    token = reference.tokens_by_id[row.token_id]
    chain = reference.chains[row.chain]
    message = withdrawal_pb2.Withdrawal(
        name=resource_name(row.id),
        client_reference=row.client_reference,
        chain=row.chain,
        token=token.symbol,
        recipient_address=row.recipient,
        amount=format_amount(row.amount, token.decimals),
        priority=withdrawal_pb2.Priority.Value(f"PRIORITY_{row.priority}"),
        state=withdrawal_pb2.State.Value(f"STATE_{row.state}"),
        state_reason=row.state_reason,
        state_message=row.state_message,
        transaction_hash=row.tx_hash or "",
        confirmations=row.confirmations,
        create_time=_timestamp(row.create_time),
        update_time=_timestamp(row.update_time),
        version=row.version,
    )
    if row.fee_wei is not None:
        message.fee = format_amount(row.fee_wei, chain.native_decimals)
        message.fee_currency = chain.native_symbol
    if row.end_time is not None:
        message.end_time.CopyFrom(_timestamp(row.end_time))
    return message
