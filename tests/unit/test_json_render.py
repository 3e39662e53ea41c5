"""The REST responses' fast proto3 JSON is exactly json_format's, for every response message
of the API with any field values, and falls back to json_format for types it does not plan."""

from __future__ import annotations

import datetime as dt

from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from svc_gateway.rest.json_render import message_to_dict

TEXT = st.text(max_size=12)
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TIMES = st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(9999, 12, 31))
ENUMS = st.integers(min_value=-2, max_value=12)  # unknown numbers render as numbers


def reference(message: Message) -> dict[str, object]:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


@st.composite
def withdrawals(draw: st.DrawFn) -> withdrawal_pb2.Withdrawal:
    w = withdrawal_pb2.Withdrawal()
    for name in (
        "name",
        "client_reference",
        "chain",
        "token",
        "recipient_address",
        "amount",
        "state_reason",
        "state_message",
        "transaction_hash",
        "fee",
        "fee_currency",
    ):
        if draw(st.booleans()):
            setattr(w, name, draw(TEXT))
    w.priority = draw(ENUMS)  # type: ignore[assignment]
    w.state = draw(ENUMS)  # type: ignore[assignment]
    w.confirmations = draw(INT32)
    w.version = draw(INT64)
    for name in ("create_time", "update_time", "end_time"):
        if draw(st.booleans()):
            getattr(w, name).FromDatetime(draw(TIMES))
    return w


@settings(max_examples=150, deadline=None)
@given(withdrawals())
def test_a_withdrawal_renders_as_json_format_does(w: withdrawal_pb2.Withdrawal) -> None:
    assert message_to_dict(w) == reference(w)


@settings(max_examples=50, deadline=None)
@given(st.lists(withdrawals(), max_size=3), TEXT)
def test_a_list_renders_as_json_format_does(
    items: list[withdrawal_pb2.Withdrawal], token: str
) -> None:
    response = withdrawal_pb2.ListWithdrawalsResponse(withdrawals=items, next_page_token=token)
    assert message_to_dict(response) == reference(response)


@settings(max_examples=50, deadline=None)
@given(st.one_of(st.none(), withdrawals()), ENUMS, ENUMS)
def test_a_watch_event_renders_as_json_format_does(
    w: withdrawal_pb2.Withdrawal | None, event_type: int, previous: int
) -> None:
    event = withdrawal_pb2.WatchWithdrawalResponse(
        event_type=event_type,  # type: ignore[arg-type]
        previous_state=previous,  # type: ignore[arg-type]
    )
    if w is not None:
        event.withdrawal.CopyFrom(w)
    assert message_to_dict(event) == reference(event)


def test_types_without_a_plan_are_json_formats() -> None:
    info = error_details_pb2.ErrorInfo(reason="R", domain="d", metadata={"a": "b"})  # a map
    assert message_to_dict(info) == reference(info)
