"""Building withdrawal requests and reading rich errors in tests."""

from __future__ import annotations

import secrets
import uuid

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2


def fresh_address() -> str:
    return "0x" + secrets.token_hex(20)


def create_request(
    *,
    amount: str = "12.5",
    recipient: str | None = None,
    token: str = "USDC",
    request_id: str | None = None,
    client_reference: str = "",
    priority: int = withdrawal_pb2.PRIORITY_STANDARD,
) -> withdrawal_pb2.CreateWithdrawalRequest:
    return withdrawal_pb2.CreateWithdrawalRequest(
        request_id=request_id or str(uuid.uuid4()),
        withdrawal=withdrawal_pb2.Withdrawal(
            token=token,
            recipient_address=recipient or fresh_address(),
            amount=amount,
            client_reference=client_reference,
            priority=priority,  # type: ignore[arg-type]
        ),
    )


def rich_error(
    exc: grpc.RpcError,
) -> tuple[grpc.StatusCode, error_details_pb2.ErrorInfo, list[str]]:
    """(code, ErrorInfo, bad field names) from a failed call's google.rpc.Status."""
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None, f"no rich status on {exc}"
    info = error_details_pb2.ErrorInfo()
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(v.field for v in bad.field_violations)
    return exc.code(), info, fields  # type: ignore[attr-defined]
