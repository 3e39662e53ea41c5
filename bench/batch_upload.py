"""What the batch benchmarks share (`bench.batch`, `bench.emergency`): the CSV files they
upload, the upload itself over REST or gRPC, a key that may create batches, where a batch's
rows ended up (database and queue), and the gateway's resident memory read from /proc.

A file's rows are valid, one fresh (never funded) recipient each, `AMOUNT` USDC, and a client
reference of their own unless told otherwise; row i of a file sits on line i + 2 (the header
is line 1, there are no blank lines), so the recipient of every stored row is known without
asking the gateway.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from eth_utils.address import to_checksum_address

from bench.load import AMOUNT

UPLOAD_PATH = "/v1/batches"
UPLOAD_TIMEOUT_S = 1800.0
CHUNK_BYTES = 64 * 1024
HEADER = "recipient_address,amount,token,client_reference\n"
HEADER_NO_REFERENCES = "recipient_address,amount,token\n"
FIRST_LINE = 2
"""The line of a file's first data row."""


def recipient_of(run_id: str, tag: str, index: int) -> str:
    """Row `index` of file `tag`: a fresh recipient of its own (lowercase)."""
    return "0x" + hashlib.sha256(f"bench-batch/{run_id}/{tag}/{index}".encode()).hexdigest()[:40]


def csv_lines(
    run_id: str, tag: str, rows: int, *, references: bool = True, checksummed: bool = False
) -> Iterator[str]:
    """The file's lines; `checksummed` writes each recipient in its EIP-55 mixed case (the
    gateway then checks every row's checksum)."""
    yield HEADER if references else HEADER_NO_REFERENCES
    for index in range(rows):
        recipient = recipient_of(run_id, tag, index)
        if checksummed:
            recipient = to_checksum_address(recipient)
        if references:
            yield f"{recipient},{AMOUNT},USDC,{run_id}-{tag}-{index}\n"
        else:
            yield f"{recipient},{AMOUNT},USDC\n"


def csv_bytes(run_id: str, tag: str, rows: int, *, references: bool = True) -> bytes:
    return "".join(csv_lines(run_id, tag, rows, references=references)).encode()


def write_csv(
    path: Path,
    run_id: str,
    tag: str,
    rows: int,
    *,
    references: bool = True,
    checksummed: bool = False,
) -> int:
    """Write the file; its size in bytes."""
    with path.open("w", encoding="utf-8", newline="") as out:
        buffer: list[str] = []
        for line in csv_lines(run_id, tag, rows, references=references, checksummed=checksummed):
            buffer.append(line)
            if len(buffer) >= 10_000:
                out.write("".join(buffer))
                buffer.clear()
        out.write("".join(buffer))
    return path.stat().st_size


# ----------------------------------------------------------------------------- uploading


@dataclass
class Upload:
    """One upload as the client saw it."""

    request_id: str
    started: float  # epoch seconds: the first byte is about to be sent
    answered: float
    status: str  # "200" / a gRPC code name / an exception's name
    batch_id: str  # "" unless accepted
    row_count: int
    accepted_count: int
    error: str = ""

    @property
    def seconds(self) -> float:
        return self.answered - self.started


def upload_rest(base_url: str, api_key: str, request_id: str, body: bytes | Path) -> Upload:
    """POST /v1/batches with the file as a `text/csv` body (streamed from disk for a Path)."""
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(
        address.hostname or "127.0.0.1",
        address.port or 80,
        timeout=UPLOAD_TIMEOUT_S,
        blocksize=CHUNK_BYTES,
    )
    size = body.stat().st_size if isinstance(body, Path) else len(body)
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "text/csv",
        "Idempotency-Key": request_id,
        "Content-Length": str(size),
    }
    started = time.time()
    try:
        with contextlib.ExitStack() as files:
            payload: bytes | IO[bytes] = (
                files.enter_context(body.open("rb")) if isinstance(body, Path) else body
            )
            connection.request("POST", UPLOAD_PATH, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return Upload(request_id, started, time.time(), type(exc).__name__, "", 0, 0, str(exc))
    finally:
        connection.close()
    answered = time.time()
    try:
        document: dict[str, Any] = json.loads(raw)
    except ValueError:
        document = {}
    if response.status != 200:
        message = str(document.get("error", {}).get("message", raw[:300]))
        return Upload(request_id, started, answered, str(response.status), "", 0, 0, message)
    return Upload(
        request_id,
        started,
        answered,
        "200",
        str(document.get("name", "")).removeprefix("batches/"),
        int(document.get("rowCount", 0)),
        int(document.get("acceptedCount", 0)),
    )


def upload_grpc(target: str, api_key: str, request_id: str, body: bytes | Path) -> Upload:
    """BatchService.CreateBatch: the header, then the file in 64 KiB chunks (client stream)."""
    import grpc

    from assetwithdrawal.withdrawal.v1 import batch_pb2, batch_pb2_grpc

    def messages() -> Iterator[batch_pb2.CreateBatchRequest]:
        yield batch_pb2.CreateBatchRequest(
            header=batch_pb2.CreateBatchHeader(request_id=request_id)
        )
        if isinstance(body, bytes):
            for start in range(0, len(body), CHUNK_BYTES):
                yield batch_pb2.CreateBatchRequest(chunk=body[start : start + CHUNK_BYTES])
            return
        with body.open("rb") as source:
            while chunk := source.read(CHUNK_BYTES):
                yield batch_pb2.CreateBatchRequest(chunk=chunk)

    started = time.time()
    with grpc.insecure_channel(target) as channel:
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        try:
            batch = stub.CreateBatch(
                messages(),
                metadata=(("authorization", f"Bearer {api_key}"),),
                timeout=UPLOAD_TIMEOUT_S,
            )
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "RpcError"
            details = exc.details() if hasattr(exc, "details") else ""
            return Upload(request_id, started, time.time(), code, "", 0, 0, str(details))
    return Upload(
        request_id,
        started,
        time.time(),
        "OK",
        batch.name.removeprefix("batches/"),
        batch.row_count,
        batch.accepted_count,
    )


def upload(transport: str, stack: Any, api_key: str, request_id: str, body: bytes | Path) -> Upload:
    if transport == "grpc":
        return upload_grpc(stack.grpc_target, api_key, request_id, body)
    return upload_rest(stack.rest_base_url, api_key, request_id, body)


# ----------------------------------------------------------------------------- the stack


def batch_key(stack: Any) -> str:
    """A key of the stack's development partner that may also create batches (the one the
    bootstrap issues may create EMERGENCY withdrawals, not batches)."""
    from devstack.bootstrap import DEV_PARTNER
    from withdrawal_shared.db.api_keys import issue_api_key
    from withdrawal_shared.scopes import DEFAULT_SCOPES, Scope

    with stack.sessions().begin() as session:
        return issue_api_key(session, DEV_PARTNER, DEFAULT_SCOPES | {Scope.BATCHES_CREATE})


def stored_rows(stack: Any, batch_id: str) -> int:
    """Withdrawals the database holds for the batch."""
    from sqlalchemy import func, select

    from withdrawal_shared.db.models import Withdrawal

    with stack.sessions()() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(Withdrawal).where(Withdrawal.batch_id == batch_id)
            )
            or 0
        )


def queued_rows(stack: Any, batch_ids: set[str]) -> dict[str, tuple[int, int]]:
    """(chunk tasks, lines they cover) per batch, read from the standard task stream (the
    processor acknowledges tasks but never deletes them)."""
    import redis

    from assetwithdrawal.events.v1 import events_pb2
    from withdrawal_shared.queue import QueueNames
    from withdrawal_shared.states import Priority

    assert stack.redis is not None
    client = redis.Redis.from_url(stack.redis.url)
    stream = QueueNames("aws:").tasks(Priority.STANDARD)
    found = {batch_id: (0, 0) for batch_id in batch_ids}
    start = "-"
    try:
        while True:
            entries = client.xrange(stream, min=start, max="+", count=1000)
            if start != "-":
                entries = entries[1:]
            if not entries:
                break
            for _, fields in entries:
                task = events_pb2.WithdrawalTask.FromString(fields[b"task"])
                if not task.HasField("batch_chunk"):
                    continue
                chunk = task.batch_chunk
                if chunk.batch_id in found:
                    tasks, lines = found[chunk.batch_id]
                    found[chunk.batch_id] = (
                        tasks + 1,
                        lines + chunk.last_line - chunk.first_line + 1,
                    )
            start = entries[-1][0].decode()
    finally:
        client.close()
    return found


@contextlib.contextmanager
def paused(stack: Any, names: Sequence[str]) -> Iterator[None]:
    """SIGSTOP the named services for the block (SIGCONT afterwards, whatever happens)."""
    pids = [pid for pid in (stack.pid(name) for name in names) if pid is not None]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


# ----------------------------------------------------------------------------- memory


def status_kib(pid: int, field: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM), or None when it cannot be read."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return None


class RssSampler:
    """VmRSS of one process every `interval` seconds on a thread of its own; `stop()` returns
    the highest sample (KiB). VmHWM (the kernel's own peak over the process's life) is read
    by the caller beside it."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = status_kib(self.pid, "VmRSS")
            if value is not None:
                self.peak_kib = max(self.peak_kib, value)
                self.samples += 1
            self._stop.wait(self.interval)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak_kib


def mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)
