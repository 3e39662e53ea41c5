"""The two ways the clients reach the gateway: gRPC (grpcio) and REST/JSON (httpx), sync and
asyncio. Each turns a failure into the SDK's typed exception, the same for both."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import grpc
import grpc.aio
import httpx
from google.protobuf import json_format
from google.protobuf.message import Message

from assetwithdrawal_sdk._common import USER_AGENT
from assetwithdrawal_sdk._gen.assetwithdrawal.withdrawal.v1 import batch_pb2
from assetwithdrawal_sdk._methods import IDEMPOTENCY_HEADER, Method, QueryItems, http_request
from assetwithdrawal_sdk.errors import (
    AssetWithdrawalError,
    DeadlineExceeded,
    Unavailable,
    error_from_grpc,
    error_from_http,
    error_from_json_line,
)

M = TypeVar("M", bound=Message)
Progress = Callable[[int, int], None]
"""Called with (bytes sent so far, total bytes) as an upload goes."""

NDJSON = "application/x-ndjson"
STREAM_READ_SECONDS = 300.0
"""A REST watch with no byte for this long is ended and reopened (resumed) by the client: a
connection that went silently dead is not waited on forever."""


def grpc_error(exc: grpc.RpcError) -> AssetWithdrawalError:
    """The typed error of a failed sync call (an RpcError that is also a grpc.Call; one
    raised otherwise, e.g. by an interceptor, is UNKNOWN with its text)."""
    call: Any = exc
    if not all(hasattr(call, name) for name in ("code", "details", "trailing_metadata")):
        return error_from_grpc("UNKNOWN", str(exc), None)
    code = call.code()
    return error_from_grpc(
        code.name if code is not None else "UNKNOWN", call.details(), call.trailing_metadata()
    )


def _http_error(exc: httpx.TransportError) -> AssetWithdrawalError:
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return DeadlineExceeded(f"the request timed out ({type(exc).__name__})")
    return Unavailable(f"the gateway could not be reached: {type(exc).__name__}: {exc}")


def _parse(response_type: type[M], body: bytes | str) -> M:
    return json_format.Parse(body, response_type(), ignore_unknown_fields=True)


def _upload_params(header: batch_pb2.CreateBatchHeader) -> QueryItems:
    policy = batch_pb2.BatchPolicy.Name(header.policy).removeprefix("BATCH_POLICY_")
    params: QueryItems = [("policy", "REJECT_ALL" if policy == "UNSPECIFIED" else policy)]
    if header.allow_duplicate_content:
        params.append(("allowDuplicateContent", "true"))
    return params


def _stream_line(response_type: type[M], line: str) -> M | None:
    if not line.strip():
        return None
    data = json.loads(line)
    if isinstance(data, dict) and set(data) == {"error"}:
        raise error_from_json_line(data)
    return _parse(response_type, line)


# -------------------------------------------------------------------------- sync


class Transport(Protocol):
    def unary(
        self, method: Method, request: Message, response_type: type[M], timeout: float | None
    ) -> M: ...

    def stream(self, method: Method, request: Message, response_type: type[M]) -> Iterator[M]: ...

    def upload(
        self,
        method: Method,
        header: batch_pb2.CreateBatchHeader,
        chunks: Iterator[bytes],
        timeout: float | None,
    ) -> batch_pb2.Batch: ...

    def close(self) -> None: ...


def grpc_channel(
    target: str,
    *,
    tls: bool,
    root_certificates: bytes | None,
    options: Sequence[tuple[str, Any]],
) -> grpc.Channel:
    opts = [("grpc.primary_user_agent", USER_AGENT), *options]
    if tls:
        creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        return grpc.secure_channel(target, creds, options=opts)
    return grpc.insecure_channel(target, options=opts)


class GrpcTransport:
    def __init__(
        self,
        channel: grpc.Channel,
        api_key: str,
        interceptors: Sequence[Any] = (),
    ) -> None:
        self._own = channel
        self._channel = grpc.intercept_channel(channel, *interceptors) if interceptors else channel
        self._metadata = (("authorization", f"Bearer {api_key}"),)

    def unary(
        self, method: Method, request: Message, response_type: type[M], timeout: float | None
    ) -> M:
        call = self._channel.unary_unary(
            method.grpc_path,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )
        try:
            result: M = call(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise grpc_error(exc) from None
        return result

    def stream(self, method: Method, request: Message, response_type: type[M]) -> Iterator[M]:
        call: Any = self._channel.unary_stream(
            method.grpc_path,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )(request, metadata=self._metadata)
        try:
            yield from call
        except grpc.RpcError as exc:
            raise grpc_error(exc) from None
        finally:
            call.cancel()

    def upload(
        self,
        method: Method,
        header: batch_pb2.CreateBatchHeader,
        chunks: Iterator[bytes],
        timeout: float | None,
    ) -> batch_pb2.Batch:
        def messages() -> Iterator[batch_pb2.CreateBatchRequest]:
            yield batch_pb2.CreateBatchRequest(header=header)
            for chunk in chunks:
                yield batch_pb2.CreateBatchRequest(chunk=chunk)

        call = self._channel.stream_unary(
            method.grpc_path,
            request_serializer=batch_pb2.CreateBatchRequest.SerializeToString,
            response_deserializer=batch_pb2.Batch.FromString,
        )
        try:
            result: batch_pb2.Batch = call(messages(), timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise grpc_error(exc) from None
        return result

    def close(self) -> None:
        self._own.close()


class RestTransport:
    def __init__(self, base_url: str, api_key: str, client: httpx.Client | None = None) -> None:
        self._client = client or httpx.Client()
        self._owned = client is None
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT}

    def _fail(self, response: httpx.Response) -> AssetWithdrawalError:
        return error_from_http(
            response.status_code, response.read(), response.headers.get("retry-after")
        )

    def unary(
        self, method: Method, request: Message, response_type: type[M], timeout: float | None
    ) -> M:
        http = http_request(method, request)
        try:
            response = self._client.request(
                http.verb,
                self._base + http.path,
                params=http.query,
                json=http.body,
                headers={**self._headers, **http.headers},
                timeout=timeout,
            )
        except httpx.TransportError as exc:
            raise _http_error(exc) from None
        if response.status_code != 200:
            raise self._fail(response)
        return _parse(response_type, response.content)

    def stream(self, method: Method, request: Message, response_type: type[M]) -> Iterator[M]:
        http = http_request(method, request)
        timeout = httpx.Timeout(30.0, read=STREAM_READ_SECONDS)
        try:
            with self._client.stream(
                http.verb,
                self._base + http.path,
                params=http.query,
                headers={**self._headers, **http.headers, "Accept": NDJSON},
                timeout=timeout,
            ) as response:
                if response.status_code != 200:
                    raise self._fail(response)
                try:
                    for line in response.iter_lines():
                        item = _stream_line(response_type, line)
                        if item is not None:
                            yield item
                except httpx.ReadTimeout:
                    return  # idle for STREAM_READ_SECONDS: the caller reopens it
        except httpx.TransportError as exc:
            raise _http_error(exc) from None

    def upload(
        self,
        method: Method,
        header: batch_pb2.CreateBatchHeader,
        chunks: Iterator[bytes],
        timeout: float | None,
    ) -> batch_pb2.Batch:
        headers = {
            **self._headers,
            IDEMPOTENCY_HEADER: header.request_id,
            "Content-Type": "text/csv",
        }
        try:
            response = self._client.post(
                self._base + method.http_path,
                params=_upload_params(header),
                content=chunks,
                headers=headers,
                timeout=timeout,
            )
        except httpx.TransportError as exc:
            raise _http_error(exc) from None
        if response.status_code != 200:
            raise self._fail(response)
        return _parse(batch_pb2.Batch, response.content)

    def close(self) -> None:
        if self._owned:
            self._client.close()


# -------------------------------------------------------------------------- asyncio


class AsyncTransport(Protocol):
    async def unary(
        self, method: Method, request: Message, response_type: type[M], timeout: float | None
    ) -> M: ...

    def stream(
        self, method: Method, request: Message, response_type: type[M]
    ) -> AsyncIterator[M]: ...

    async def upload(
        self,
        method: Method,
        header: batch_pb2.CreateBatchHeader,
        chunks: AsyncIterator[bytes],
        timeout: float | None,
    ) -> batch_pb2.Batch: ...

    async def close(self) -> None: ...


def aio_grpc_channel(
    target: str,
    *,
    tls: bool,
    root_certificates: bytes | None,
    options: Sequence[tuple[str, Any]],
    interceptors: Sequence[Any] = (),
) -> grpc.aio.Channel:
    opts = [("grpc.primary_user_agent", USER_AGENT), *options]
    if tls:
        creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        return grpc.aio.secure_channel(target, creds, options=opts, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options=opts, interceptors=interceptors)


class AsyncGrpcTransport:
    def __init__(self, channel: grpc.aio.Channel, api_key: str) -> None:
        self._channel = channel
        self._metadata = (("authorization", f"Bearer {api_key}"),)

    async def unary(
        self, method: Method, request: Message, response_type: type[M], timeout: float | None
    ) -> M:
        call = self._channel.unary_unary(
            method.grpc_path,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )
        try:
            result: M = await call(request, timeout=timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise error_from_grpc(
                exc.code().name, exc.details(), list(exc.trailing_metadata() or ())
            ) from None
        return result

    async def stream(
        self, method: Method, request: Message, response_type: type[M]
    ) -> AsyncIterator[M]:
        call: Any = self._channel.unary_stream(
            method.grpc_path,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )(request, metadata=self._metadata)
        try:
            async for item in call:
                yield item
        except grpc.aio.AioRpcError as exc:
            raise error_from_grpc(
                exc.code().name, exc.details(), list(exc.trailing_metadata() or ())
            ) from None
        finally:
            call.cancel()

    async def upload(
        self,
        method: Method,
        header: batch_pb2.CreateBatchHeader,
        chunks: AsyncIterator[bytes],
        timeout: float | None,
    ) -> batch_pb2.Batch:
        async def messages() -> AsyncIterator[batch_pb2.CreateBatchRequest]:
            yield batch_pb2.CreateBatchRequest(header=header)
            async for chunk in chunks:
                yield batch_pb2.CreateBatchRequest(chunk=chunk)

        call = self._channel.stream_unary(
            method.grpc_path,
            request_serializer=batch_pb2.CreateBatchRequest.SerializeToString,
            response_deserializer=batch_pb2.Batch.FromString,
        )
        try:
            result: batch_pb2.Batch = await call(
                messages(), timeout=timeout, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_grpc(
                exc.code().name, exc.details(), list(exc.trailing_metadata() or ())
            ) from None
        return result

    async def close(self) -> None:
        await self._channel.close()


class AsyncRestTransport:
    def __init__(
        self, base_url: str, api_key: str, client: httpx.AsyncClient | None = None
    ) -> None:
        self._client = client or httpx.AsyncClient()
        self._owned = client is None
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT}

    async def _fail(self, response: httpx.Response) -> AssetWithdrawalError:
        return error_from_http(
            response.status_code, await response.aread(), response.headers.get("retry-after")
        )

    async def unary(
        self, method: Method, request: Message, response_type: type[M], timeout: float | None
    ) -> M:
        http = http_request(method, request)
        try:
            response = await self._client.request(
                http.verb,
                self._base + http.path,
                params=http.query,
                json=http.body,
                headers={**self._headers, **http.headers},
                timeout=timeout,
            )
        except httpx.TransportError as exc:
            raise _http_error(exc) from None
        if response.status_code != 200:
            raise await self._fail(response)
        return _parse(response_type, response.content)

    async def stream(
        self, method: Method, request: Message, response_type: type[M]
    ) -> AsyncIterator[M]:
        http = http_request(method, request)
        timeout = httpx.Timeout(30.0, read=STREAM_READ_SECONDS)
        try:
            async with self._client.stream(
                http.verb,
                self._base + http.path,
                params=http.query,
                headers={**self._headers, **http.headers, "Accept": NDJSON},
                timeout=timeout,
            ) as response:
                if response.status_code != 200:
                    raise await self._fail(response)
                try:
                    async for line in response.aiter_lines():
                        item = _stream_line(response_type, line)
                        if item is not None:
                            yield item
                except httpx.ReadTimeout:
                    return  # idle for STREAM_READ_SECONDS: the caller reopens it
        except httpx.TransportError as exc:
            raise _http_error(exc) from None

    async def upload(
        self,
        method: Method,
        header: batch_pb2.CreateBatchHeader,
        chunks: AsyncIterator[bytes],
        timeout: float | None,
    ) -> batch_pb2.Batch:
        headers = {
            **self._headers,
            IDEMPOTENCY_HEADER: header.request_id,
            "Content-Type": "text/csv",
        }
        try:
            response = await self._client.post(
                self._base + method.http_path,
                params=_upload_params(header),
                content=chunks,
                headers=headers,
                timeout=timeout,
            )
        except httpx.TransportError as exc:
            raise _http_error(exc) from None
        if response.status_code != 200:
            raise await self._fail(response)
        return _parse(batch_pb2.Batch, response.content)

    async def close(self) -> None:
        if self._owned:
            await self._client.aclose()
