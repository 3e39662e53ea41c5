"""The gRPC adapter: each method hands its request to the dispatcher and renders errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, TypeAlias

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2, withdrawal_pb2_grpc
from svc_gateway.dispatch import Dispatcher
from svc_gateway.errors import abort
from svc_gateway.unary_servicer import metadata_of

if TYPE_CHECKING:
    import grpc

    Context: TypeAlias = grpc.aio.ServicerContext[object, object]


class WithdrawalServicer(withdrawal_pb2_grpc.WithdrawalServiceServicer):
    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatch = dispatcher

    async def _unary(self, name: str, request: object, context: Context) -> object:
        try:
            return await self._dispatch.unary(name, request, metadata_of(context))  # type: ignore[arg-type]
        except Exception as exc:
            await abort(context, exc)
            raise  # unreachable: abort raises

    async def CreateWithdrawal(
        self, request: withdrawal_pb2.CreateWithdrawalRequest, context: Context
    ) -> withdrawal_pb2.Withdrawal:
        return await self._unary("CreateWithdrawal", request, context)  # type: ignore[return-value]

    async def GetWithdrawal(
        self, request: withdrawal_pb2.GetWithdrawalRequest, context: Context
    ) -> withdrawal_pb2.Withdrawal:
        return await self._unary("GetWithdrawal", request, context)  # type: ignore[return-value]

    async def ListWithdrawals(
        self, request: withdrawal_pb2.ListWithdrawalsRequest, context: Context
    ) -> withdrawal_pb2.ListWithdrawalsResponse:
        return await self._unary("ListWithdrawals", request, context)  # type: ignore[return-value]

    async def CancelWithdrawal(
        self, request: withdrawal_pb2.CancelWithdrawalRequest, context: Context
    ) -> withdrawal_pb2.Withdrawal:
        return await self._unary("CancelWithdrawal", request, context)  # type: ignore[return-value]

    async def WatchWithdrawal(
        self, request: withdrawal_pb2.WatchWithdrawalRequest, context: Context
    ) -> AsyncIterator[withdrawal_pb2.WatchWithdrawalResponse]:
        try:
            async for message in self._dispatch.stream(
                "WatchWithdrawal", request, metadata_of(context)
            ):
                yield message  # type: ignore[misc]
        except Exception as exc:
            await abort(context, exc)
