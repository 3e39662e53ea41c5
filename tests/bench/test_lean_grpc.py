"""bench.lean_grpc, the API benchmark's gRPC generator client, against a real grpc.aio server:
many calls in flight on one connection each get their own reply, a status is reported by
name, a timeout leaves the connection usable, the server's stream limit and windows are
kept, and a server that goes away fails the calls instead of hanging them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
import pytest

from bench.lean_grpc import MAX_REQUEST, CallError, UnaryClient, frame_message

METHOD = "/test.Echo/Call"


async def _behaviour(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    """Echo, or what the request asks for: `sleep:<s>`, `deny`, `big:<n>`."""
    metadata = dict(context.invocation_metadata() or ())
    if metadata.get("authorization") != "Bearer k":
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no key")
    if request.startswith(b"sleep:"):
        await asyncio.sleep(float(request[6:]))
    elif request == b"deny":
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "denied")
    elif request.startswith(b"big:"):
        return b"x" * int(request[4:])
    return request


async def _with_server(
    work: Callable[[int, grpc.aio.Server], Awaitable[None]], *options: tuple[str, int]
) -> None:
    server = grpc.aio.server(options=list(options))
    handler = grpc.unary_unary_rpc_method_handler(_behaviour)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Echo", {"Call": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await work(port, server)
    finally:
        await server.stop(0)


def _client(port: int, key: str = "k") -> UnaryClient:
    return UnaryClient("127.0.0.1", port, METHOD, [("authorization", f"Bearer {key}")])


def test_concurrent_calls_get_their_own_replies_and_statuses_by_name() -> None:
    async def work(port: int, _: grpc.aio.Server) -> None:
        client = _client(port)
        await client.connect(2)
        payloads = [f"request-{i}".encode() * (1 + i % 7) for i in range(300)]
        replies = await asyncio.gather(*(client.call(frame_message(p), 5) for p in payloads))
        assert replies == payloads
        with pytest.raises(CallError) as denied:
            await client.call(frame_message(b"deny"), 5)
        assert denied.value.code == "PERMISSION_DENIED"
        # A reply far over one frame and the default 64 KiB window comes back whole.
        assert await client.call(frame_message(b"big:300000"), 5) == b"x" * 300_000
        await client.close()
        stranger = _client(port, key="other")
        await stranger.connect(1)
        with pytest.raises(CallError) as unauthenticated:
            await stranger.call(frame_message(b"hello"), 5)
        assert unauthenticated.value.code == "UNAUTHENTICATED"
        await stranger.close()

    asyncio.run(_with_server(work))


def test_a_timeout_resets_its_stream_and_the_connection_goes_on() -> None:
    async def work(port: int, _: grpc.aio.Server) -> None:
        client = _client(port)
        await client.connect(1)
        with pytest.raises(CallError) as late:
            await client.call(frame_message(b"sleep:2"), 0.2)
        assert late.value.code == "DEADLINE_EXCEEDED"
        assert await client.call(frame_message(b"after"), 5) == b"after"
        await client.close()

    asyncio.run(_with_server(work))


def test_the_servers_stream_limit_queues_calls_instead_of_refusing_them() -> None:
    async def work(port: int, _: grpc.aio.Server) -> None:
        client = _client(port)
        await client.connect(1)
        started = asyncio.get_running_loop().time()
        replies = await asyncio.gather(
            *(client.call(frame_message(b"sleep:0.1"), 10) for _ in range(8))
        )
        elapsed = asyncio.get_running_loop().time() - started
        assert replies == [b"sleep:0.1"] * 8
        # Two at a time: four rounds of 0.1 s, not one.
        assert elapsed >= 0.35
        await client.close()

    asyncio.run(_with_server(work, ("grpc.max_concurrent_streams", 2)))


def test_a_server_going_away_fails_the_calls_in_flight() -> None:
    async def work(port: int, server: grpc.aio.Server) -> None:
        client = _client(port)
        await client.connect(1)
        in_flight = asyncio.ensure_future(client.call(frame_message(b"sleep:5"), 30))
        await asyncio.sleep(0.3)
        await server.stop(0)
        with pytest.raises(CallError) as gone:
            await asyncio.wait_for(in_flight, 10)
        assert gone.value.code in {"UNAVAILABLE", "CANCELLED"}
        with pytest.raises(CallError):
            await asyncio.wait_for(client.call(frame_message(b"again"), 5), 10)
        await client.close()

    asyncio.run(_with_server(work))


def test_a_request_over_one_frame_is_refused_before_it_is_sent() -> None:
    async def work(port: int, _: grpc.aio.Server) -> None:
        client = _client(port)
        await client.connect(1)
        with pytest.raises(ValueError, match="16 KiB"):
            await client.call(frame_message(b"x" * MAX_REQUEST), 5)
        assert await client.call(frame_message(b"small"), 5) == b"small"
        await client.close()

    asyncio.run(_with_server(work))
