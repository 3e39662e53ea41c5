"""The gRPC adapter: each method hands its request to the dispatcher and renders errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, TypeAlias

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2, withdrawal_pb2_grpc
from svc_gateway.grpc_adapter import StreamAdapter

if TYPE_CHECKING:
    import grpc

    Context: TypeAlias = grpc.aio.ServicerContext[object, object]


class WithdrawalServicer(StreamAdapter, withdrawal_pb2_grpc.WithdrawalServiceServicer):
    async def CreateWithdrawal(
        self, request: withdrawal_pb2.CreateWithdrawalRequest, context: Context
    ) -> withdrawal_pb2.Withdrawal:
        return await self._unary("CreateWithdrawal", request, context)  # type: ignore[no-any-return]

    async def GetWithdrawal(
        self, request: withdrawal_pb2.GetWithdrawalRequest, context: Context
    ) -> withdrawal_pb2.Withdrawal:
        return await self._unary("GetWithdrawal", request, context)  # type: ignore[no-any-return]

    async def ListWithdrawals(
        self, request: withdrawal_pb2.ListWithdrawalsRequest, context: Context
    ) -> withdrawal_pb2.ListWithdrawalsResponse:
        return await self._unary("ListWithdrawals", request, context)  # type: ignore[no-any-return]

    async def ListStateChanges(
        self, request: withdrawal_pb2.ListStateChangesRequest, context: Context
    ) -> withdrawal_pb2.ListStateChangesResponse:
        return await self._unary("ListStateChanges", request, context)  # type: ignore[no-any-return]

    async def CancelWithdrawal(
        self, request: withdrawal_pb2.CancelWithdrawalRequest, context: Context
    ) -> withdrawal_pb2.Withdrawal:
        return await self._unary("CancelWithdrawal", request, context)  # type: ignore[no-any-return]

    async def WatchWithdrawal(
        self, request: withdrawal_pb2.WatchWithdrawalRequest, context: Context
    ) -> AsyncIterator[withdrawal_pb2.WatchWithdrawalResponse]:
        async for message in self._stream("WatchWithdrawal", request, context):
            yield message
