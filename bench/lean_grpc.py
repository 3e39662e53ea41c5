"""A lean gRPC unary client over HTTP/2 without TLS, for the load generators only.

A benchmark's generators share the cores with the system they measure. grpc.aio's client
costs 0.5-0.6 ms of CPU per call there, and the `h2` library's protocol state machine more
(0.7-0.8 ms; `docs/benchmarks.md`, "Tried and not adopted"). This client does only what a
unary call needs on one HTTP/2 connection (RFC 9113), with prior knowledge as the gateway
serves gRPC on loopback:

- requests: one HEADERS frame (a header block encoded once, with no dynamic-table entries,
  so it is valid on every stream) and one DATA frame with the length-prefixed message (so
  at most 16 KiB: a benchmark's requests are a few hundred bytes);
- responses: HEADERS/CONTINUATION decoded by `hpack` (the server's dynamic table is kept in
  order), DATA gathered per stream, `grpc-status` from the trailers (or a trailers-only reply);
- the connection: the server's SETTINGS awaited on connecting, acknowledged, and its
  MAX_CONCURRENT_STREAMS respected (a refused stream, which the server did not process, is
  sent again), PING answered, the send window kept (a request waits for a WINDOW_UPDATE
  when it would pass it), the connection's receive window reopened (each stream's is 1 MiB,
  never reopened: a unary reply is smaller), GOAWAY and RST_STREAM failing the calls they
  end.

Anything else it cannot make sense of fails the calls in flight with a `CallError`, for the
generator to count; it never guesses a result. Services use grpcio.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    0x0,
    0x1,
    0x3,
    0x4,
    0x6,
    0x7,
    0x8,
    0x9,
)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_INITIAL_WINDOW_SIZE = 2, 3, 4
REFUSED_STREAM = 0x7
DEFAULT_WINDOW = 65_535
MAX_REQUEST = 16_384  # one DATA frame of the smallest maximum frame size a peer may set
RECEIVE_WINDOW = 2**30  # what this client lets the server send before it reopens the window

GRPC_STATUS_NAMES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)


class CallError(Exception):
    """A call that did not end with grpc-status 0; `code` is the status's name."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame."""
    return (
        len(payload).to_bytes(3, "big")
        + bytes((kind, flags))
        + stream_id.to_bytes(4, "big")
        + payload
    )


def frame_message(message: bytes) -> bytes:
    """A gRPC length-prefixed message: not compressed, 4-byte big-endian length."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def unframe_message(body: bytes) -> bytes:
    """The one message of a unary response's body; ValueError when it is not exactly one."""
    if len(body) < 5 or body[0] != 0 or int.from_bytes(body[1:5], "big") != len(body) - 5:
        raise ValueError("a response body that is not one uncompressed message")
    return body[5:]


def header_block(headers: Sequence[tuple[str, str]]) -> bytes:
    """`headers` as an HPACK block that adds nothing to the server's dynamic table (static
    table matches and never-indexed literals), so the same bytes are valid on every stream."""
    return bytes(hpack.Encoder().encode([hpack.NeverIndexedHeaderTuple(k, v) for k, v in headers]))


@dataclass
class _Call:
    done: asyncio.Future[bytes]
    request: bytes
    body: bytearray = field(default_factory=bytearray)
    status: int | None = None
    http_status: str = ""


class _Connection:
    """One HTTP/2 connection carrying many concurrent unary calls."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: bytes
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._headers = headers
        self._decoder = hpack.Decoder()
        self._calls: dict[int, _Call] = {}
        self._next_stream = 1
        self._send_window = DEFAULT_WINDOW  # the connection's, as the server granted it
        self._stream_window = DEFAULT_WINDOW  # each new stream's, from the server's SETTINGS
        self._max_streams = 2**31 - 1
        self._waiting: deque[_Call] = deque()
        self._received = 0  # bytes of DATA since the receive window was last reopened
        self._failed: CallError | None = None
        self._block: bytes | None = None  # a header block still to be continued
        self._block_flags = 0
        self._block_stream = 0
        self.settled = asyncio.Event()  # the server's first SETTINGS have been applied
        settings = (SETTINGS_ENABLE_PUSH).to_bytes(2, "big") + (0).to_bytes(4, "big")
        settings += SETTINGS_INITIAL_WINDOW_SIZE.to_bytes(2, "big") + (2**20).to_bytes(4, "big")
        self._writer.write(
            PREFACE
            + frame(SETTINGS, 0, 0, settings)
            + frame(WINDOW_UPDATE, 0, 0, (RECEIVE_WINDOW - DEFAULT_WINDOW).to_bytes(4, "big"))
        )
        self._reading = asyncio.get_running_loop().create_task(self._read())

    def call(self, body: bytes) -> asyncio.Future[bytes]:
        if len(body) > MAX_REQUEST:
            raise ValueError(f"a request of {len(body)} bytes; this client sends up to 16 KiB")
        call = _Call(asyncio.get_running_loop().create_future(), body)
        if self._failed is not None:
            call.done.set_exception(self._failed)
        elif self._waiting or not self._can_send(len(body)):
            self._waiting.append(call)
        else:
            self._send(call)
        return call.done

    def _can_send(self, size: int) -> bool:
        return (
            len(self._calls) < self._max_streams
            and size <= self._send_window
            and size <= self._stream_window
        )

    def _send(self, call: _Call) -> None:
        stream_id = self._next_stream
        self._next_stream += 2
        self._calls[stream_id] = call
        self._send_window -= len(call.request)
        self._writer.write(
            frame(HEADERS, END_HEADERS, stream_id, self._headers)
            + frame(DATA, END_STREAM, stream_id, call.request)
        )

    def _send_waiting(self) -> None:
        while self._waiting and self._can_send(len(self._waiting[0].request)):
            call = self._waiting.popleft()
            if not call.done.done():  # not given up on while it waited
                self._send(call)

    def forget(self, future: asyncio.Future[bytes]) -> None:
        """Reset the stream of a call its caller gave up on (a timeout)."""
        for stream_id, call in self._calls.items():
            if call.done is future:
                del self._calls[stream_id]
                self._writer.write(frame(RST_STREAM, 0, stream_id, (8).to_bytes(4, "big")))
                self._send_waiting()
                return

    async def _read(self) -> None:
        buffer = b""
        try:
            while True:
                data = await self._reader.read(262_144)
                if not data:
                    raise CallError("UNAVAILABLE", "the server closed the connection")
                buffer += data
                offset = 0
                while len(buffer) - offset >= 9:
                    length = int.from_bytes(buffer[offset : offset + 3], "big")
                    end = offset + 9 + length
                    if end > len(buffer):
                        break
                    kind, flags = buffer[offset + 3], buffer[offset + 4]
                    stream_id = int.from_bytes(buffer[offset + 5 : offset + 9], "big") & 0x7FFFFFFF
                    payload = buffer[offset + 9 : end]
                    offset = end
                    if kind == HEADERS or (kind == CONTINUATION and self._block is not None):
                        self._on_headers(kind, flags, stream_id, payload)
                    elif self._block is not None:
                        raise CallError("INTERNAL", "a header block interrupted by another frame")
                    else:
                        self._on_frame(kind, flags, stream_id, payload)
                buffer = buffer[offset:]
                if self._received >= RECEIVE_WINDOW // 2:
                    self._writer.write(
                        frame(WINDOW_UPDATE, 0, 0, self._received.to_bytes(4, "big"))
                    )
                    self._received = 0
                self._send_waiting()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every call in flight, and any later, fails with it
            self._fail(exc if isinstance(exc, CallError) else CallError("UNAVAILABLE", repr(exc)))

    def _on_headers(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        """Gather a header block (HEADERS, then any CONTINUATION); decode it once whole."""
        if kind == HEADERS:
            start, end = 0, len(payload)
            if flags & PADDED:
                start, end = 1, len(payload) - payload[0]
            if flags & PRIORITY:
                start += 5
            self._block_flags = flags
            self._block_stream = stream_id
            block = payload[start:end]
        else:
            block = (self._block or b"") + payload
        if not flags & END_HEADERS:
            self._block = block
            return
        self._block = None
        headers = self._decoder.decode(block, raw=True)
        call = self._calls.get(self._block_stream)
        if call is not None:
            for name, value in headers:
                if name == b"grpc-status":
                    call.status = int(value)
                elif name == b":status":
                    call.http_status = value.decode()
            if self._block_flags & END_STREAM:
                self._finish(self._block_stream)

    def _on_frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if kind == DATA:
            self._on_data(flags, stream_id, payload)
        elif kind == SETTINGS and not flags & ACK:
            self._on_settings(payload)
        elif kind == PING and not flags & ACK:
            self._writer.write(frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE and stream_id == 0:
            self._send_window += int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
        elif kind == RST_STREAM:
            self._on_reset(stream_id, int.from_bytes(payload[:4], "big"))
        elif kind == GOAWAY:
            raise CallError("UNAVAILABLE", "GOAWAY")

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        self._received += len(payload)
        call = self._calls.get(stream_id)
        if call is not None:
            call.body += payload[1 : len(payload) - payload[0]] if flags & PADDED else payload
            if flags & END_STREAM:
                self._finish(stream_id)

    def _on_settings(self, payload: bytes) -> None:
        for i in range(0, len(payload) - 5, 6):
            key = int.from_bytes(payload[i : i + 2], "big")
            value = int.from_bytes(payload[i + 2 : i + 6], "big")
            if key == SETTINGS_MAX_CONCURRENT_STREAMS:
                self._max_streams = value
            elif key == SETTINGS_INITIAL_WINDOW_SIZE:
                self._stream_window = value
        self._writer.write(frame(SETTINGS, ACK, 0))
        self.settled.set()

    def _on_reset(self, stream_id: int, code: int) -> None:
        call = self._calls.pop(stream_id, None)
        if call is None or call.done.done():
            return
        if code == REFUSED_STREAM:  # not processed (RFC 9113, 8.7): send it again
            self._waiting.appendleft(call)
        else:
            call.done.set_exception(CallError("CANCELLED", f"RST_STREAM {code}"))

    def _finish(self, stream_id: int) -> None:
        call = self._calls.pop(stream_id, None)
        if call is None or call.done.done():
            return
        if call.http_status != "200":
            call.done.set_exception(CallError("UNKNOWN", f"HTTP status {call.http_status}"))
        elif call.status == 0:
            try:
                call.done.set_result(unframe_message(bytes(call.body)))
            except ValueError as exc:
                call.done.set_exception(CallError("INTERNAL", str(exc)))
        elif call.status is None:
            call.done.set_exception(CallError("UNKNOWN", "no grpc-status"))
        else:
            names = GRPC_STATUS_NAMES
            call.done.set_exception(
                CallError(names[call.status] if call.status < len(names) else "UNKNOWN")
            )

    def _fail(self, error: CallError) -> None:
        self._failed = error
        for call in [*self._calls.values(), *self._waiting]:
            if not call.done.done():
                call.done.set_exception(error)
        self._calls.clear()
        self._waiting.clear()

    async def close(self) -> None:
        self._reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reading
        self._writer.write(frame(GOAWAY, 0, 0, bytes(8)))
        self._writer.close()


class UnaryClient:
    """Unary calls to one method on several HTTP/2 connections, round-robin."""

    def __init__(
        self, host: str, port: int, method: str, metadata: Sequence[tuple[str, str]]
    ) -> None:
        self._host = host
        self._port = port
        self._headers = header_block(
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", method),
                (":authority", f"{host}:{port}"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                *metadata,
            ]
        )
        self._connections: list[_Connection] = []
        self._next = 0

    async def connect(self, connections: int) -> None:
        for _ in range(connections):
            reader, writer = await asyncio.open_connection(self._host, self._port)
            connection = _Connection(reader, writer, self._headers)
            self._connections.append(connection)
            # Its stream limit and windows known before the first call.
            await asyncio.wait_for(connection.settled.wait(), 10)

    async def call(self, body: bytes, timeout: float) -> bytes:
        """The response message of one call with the framed request `body`; CallError."""
        self._next = (self._next + 1) % len(self._connections)
        connection = self._connections[self._next]
        future = connection.call(body)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            connection.forget(future)
            raise CallError("DEADLINE_EXCEEDED") from None

    async def close(self) -> None:
        for connection in self._connections:
            await connection.close()
        self._connections.clear()
