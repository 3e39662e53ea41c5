"""The gRPC adapter of BatchService: each method hands its request (for CreateBatch, the
client stream) to the dispatcher and renders errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, TypeAlias

from assetwithdrawal.withdrawal.v1 import batch_pb2, batch_pb2_grpc
from svc_gateway.grpc_adapter import StreamAdapter

if TYPE_CHECKING:
    import grpc

    Context: TypeAlias = grpc.aio.ServicerContext[object, object]


class BatchServicer(StreamAdapter, batch_pb2_grpc.BatchServiceServicer):
    async def CreateBatch(
        self, request_iterator: AsyncIterator[batch_pb2.CreateBatchRequest], context: Context
    ) -> batch_pb2.Batch:
        return await self._unary("CreateBatch", request_iterator, context)  # type: ignore[no-any-return]

    async def GetBatch(
        self, request: batch_pb2.GetBatchRequest, context: Context
    ) -> batch_pb2.Batch:
        return await self._unary("GetBatch", request, context)  # type: ignore[no-any-return]

    async def ListBatches(
        self, request: batch_pb2.ListBatchesRequest, context: Context
    ) -> batch_pb2.ListBatchesResponse:
        return await self._unary("ListBatches", request, context)  # type: ignore[no-any-return]

    async def CancelBatch(
        self, request: batch_pb2.CancelBatchRequest, context: Context
    ) -> batch_pb2.Batch:
        return await self._unary("CancelBatch", request, context)  # type: ignore[no-any-return]

    async def GetBatchReport(
        self, request: batch_pb2.GetBatchReportRequest, context: Context
    ) -> batch_pb2.BatchReport:
        return await self._unary("GetBatchReport", request, context)  # type: ignore[no-any-return]

    async def WatchBatch(
        self, request: batch_pb2.WatchBatchRequest, context: Context
    ) -> AsyncIterator[batch_pb2.Batch]:
        async for message in self._stream("WatchBatch", request, context):
            yield message
