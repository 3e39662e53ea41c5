"""CreateWithdrawal under open-loop load, over gRPC and over REST, with the processor running.

    python -m bench.api_load            # 100 … 1000/s, 10 s each, both transports (make bench-api)
    python -m bench.api_load --smoke    # 2 rates x 1 s, low rates (run by the test suite)
    python -m bench.api_load --rates 400,600 --seconds 20 --transports grpc
    python -m bench.api_load --gateway-env GATEWAY_WORKERS=2   # a gateway setting
    python -m bench.api_load --gateway-only   # the gateway alone, nothing behind it

By default the system under test is the whole pipeline (`PipelineSystem`: a HarnessStack with
a MariaDB database and a redis-server of its own, anvil with 2-second blocks and a 60M block
gas limit, the payout vault, and the signer, gateway, processor, monitor and webhook sender as
processes), so the processor validates, batches, signs and broadcasts what the gateway accepts
while it is measured, on the same cores. As in `make up`, the services off the request path
(processor, monitor, signer, webhook sender: `devstack.config.BACKGROUND_SERVICES`) run at
nice 10 (STACK_BATCH_NICE; `--batch-nice 0` puts them at the gateway's priority). `--gateway-only`
runs `python -m svc_gateway` alone on a MariaDB database of its own and the machine's Redis
(a key prefix of its own, deleted afterwards): the gateway's own cost, with nothing competing.

Open loop: request i of a step is due at `t0 + i / rate`, whatever happened to the requests
before it, and its latency is measured from that due time to its response, so a slow server
cannot hide latency by slowing the generator down (coordinated omission). The generators are
several processes (`--generators`), each sending every G-th request; each prints its own lag
(how late it sent a request after its due time), so a generator that cannot keep up shows.

Every request is a real one: a valid API key (Authorization header, checked by the gateway),
a unique request_id (REST: the Idempotency-Key header) and a fresh recipient, validated,
stored with its audit row and enqueued on Redis, as in production.

Prints its configuration, then a table per transport and rate (p50/p95/p99 latency from the
due time, errors, achieved rate, generator lag, CPU seconds per 1,000 requests of the gateway,
the processor, signer, monitor and anvil when they run, mariadbd, redis-server, the
generators, and this process, the harness, whose supervisor threads copy the services' output
to their logs with the pipeline), under a row whose step had slow 100-ms windows how the slow
requests lie over it (`windows`: a stall or queueing), and writes JSON to bench/results/
(`--keep DIR` keeps the services' logs, to line them up with those windows). CPU is read from
/proc/<pid>/stat (utime + stime) before and after each step; mariadbd is shared with whatever
else runs on the machine (and so is redis-server with `--gateway-only`), so their figures
include that.

Targets (issue: benchmarks that tell the truth), on a quiet 2-core machine shared by MariaDB,
Redis, the services and the generators: p95 <= 25 ms at >= 600 CreateWithdrawal/s over gRPC
and >= 500/s over REST.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.connection
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, TypeAlias

from bench.lean_grpc import CallError, UnaryClient, frame_message
from bench.machine_speed import python_loop_ms, thread_handoff_us
from bench.processes import mariadb_pid, pids_by_name
from devstack.config import free_port

RESULTS = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent
FULL_RATES = (100, 200, 400, 600, 800, 1000)
PIPELINE_CONFIRMATIONS = 5
PIPELINE_AMOUNT = "1"  # USDC: the harness's vault holds 1,000,000
SMOKE_RATES = (20, 40)
TRANSPORTS = ("grpc", "rest")
P95_LIMIT_MS = 25.0
TARGETS = {"grpc": 600, "rest": 500}
ACHIEVED_MIN = 0.95  # a rate counts as sustained only if this share of it was achieved
DEFAULT_MARIADB = "mysql+pymysql://root:@127.0.0.1:3306"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
CLK_TCK = os.sysconf("SC_CLK_TCK")
DAILY_LIMIT = "1000000000"
"""USDC per 24 hours for the benchmark's partner: on, and never reached."""
LIMITS_CACHE_SECONDS = 5.0  # GATEWAY_LIMITS_CACHE_SECONDS' default: a new limit is seen after it


# ---------------------------------------------------------------- CPU of other processes


def _stat_fields(pid: int | None, thread: int | None = None) -> list[str] | None:
    """The fields of /proc/<pid>/stat (or of one thread's) from field 3 (the state) on, or None
    when it cannot be read."""
    if pid is None:
        return None
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its closing paren are fixed.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int | None, thread: int | None = None) -> float | None:
    """utime + stime of a process (or of one of its threads) in seconds, or None when it
    cannot be read."""
    fields = _stat_fields(pid, thread)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / CLK_TCK


def nice_of(pid: int | None) -> int | None:
    """A process's nice value (its CPU priority: 0 by default, higher yields), or None."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[16])


# ---------------------------------------------------------------- the load generators


@dataclass(frozen=True)
class Target:
    grpc_target: str
    rest_url: str
    api_key: str
    timeout: float
    grpc_connections: int = 1
    amount: str = "12.5"  # USDC per request
    grpc_client: str = "lean"  # "lean" (bench.lean_grpc) or "grpcio" (grpc.aio)


@dataclass
class GeneratorResult:
    """What one generator process saw in one step."""

    scheduled: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # successful requests only
    due_at: list[float] = field(default_factory=list)  # their due times (monotonic), in order
    errors: dict[str, int] = field(default_factory=dict)
    lags_ms: list[float] = field(default_factory=list)  # send time - due time, every request
    last_done: float = 0.0  # monotonic time of the last response
    completed: int = 0  # responses, successful or not (timeouts excluded)
    cpu_seconds: float = 0.0  # this generator's own CPU while sending the step


def _recipient() -> str:
    return "0x" + secrets.token_hex(20)


def _count(errors: dict[str, int], key: str) -> None:
    errors[key] = errors.get(key, 0) + 1


def _create_request(pb2: Any, request_id: str, amount: str) -> Any:
    """The benchmark's CreateWithdrawalRequest: USDC to a fresh recipient, for either gRPC
    client."""
    return pb2.CreateWithdrawalRequest(
        request_id=request_id,
        withdrawal=pb2.Withdrawal(token="USDC", recipient_address=_recipient(), amount=amount),
    )


class _GrpcClient:
    def __init__(self, target: Target) -> None:
        import grpc

        from assetwithdrawal.withdrawal.v1 import withdrawal_pb2, withdrawal_pb2_grpc

        self._grpc = grpc
        self._pb2 = withdrawal_pb2
        # Several HTTP/2 connections, as a client fleet would have (a local subchannel pool
        # each, or gRPC would share one connection between them).
        self._channels = [
            grpc.aio.insecure_channel(
                target.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)]
            )
            for _ in range(target.grpc_connections)
        ]
        self._stubs = [withdrawal_pb2_grpc.WithdrawalServiceStub(c) for c in self._channels]
        self._next = 0
        self._metadata = (("authorization", f"Bearer {target.api_key}"),)
        self._timeout = target.timeout
        self._amount = target.amount

    def build(self, request_id: str) -> Any:
        return _create_request(self._pb2, request_id, self._amount)

    async def send(self, request: Any) -> str | None:
        """None on success, else the error's name."""
        try:
            self._next = (self._next + 1) % len(self._stubs)
            response = await self._stubs[self._next].CreateWithdrawal(
                request, metadata=self._metadata, timeout=self._timeout
            )
        except self._grpc.aio.AioRpcError as exc:
            return f"grpc {exc.code().name}"
        if response.state != self._pb2.STATE_RECEIVED:
            return f"state {response.state}"
        return None

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


class _LeanGrpcClient:
    """CreateWithdrawal over `bench.lean_grpc`: the same calls as `_GrpcClient` for a fraction
    of its CPU, on `grpc_connections` HTTP/2 connections."""

    METHOD = "/assetwithdrawal.withdrawal.v1.WithdrawalService/CreateWithdrawal"

    def __init__(self, target: Target) -> None:
        from assetwithdrawal.withdrawal.v1 import withdrawal_pb2

        host, _, port = target.grpc_target.rpartition(":")
        self._pb2 = withdrawal_pb2
        self._client = UnaryClient(
            host, int(port), self.METHOD, [("authorization", f"Bearer {target.api_key}")]
        )
        self._connections = target.grpc_connections
        self._timeout = target.timeout
        self._amount = target.amount

    async def connect(self) -> None:
        await self._client.connect(self._connections)

    def build(self, request_id: str) -> bytes:
        request = _create_request(self._pb2, request_id, self._amount)
        return frame_message(request.SerializeToString())

    async def send(self, request: bytes) -> str | None:
        """None on success, else the error's name."""
        try:
            reply = await self._client.call(request, self._timeout)
        except CallError as exc:
            return f"grpc {exc.code}"
        response = self._pb2.Withdrawal.FromString(reply)
        if response.state != self._pb2.STATE_RECEIVED:
            return f"state {response.state}"
        return None

    async def close(self) -> None:
        await self._client.close()


class _RestClient:
    """A minimal HTTP/1.1 keep-alive client for one endpoint, for the generator only.

    aiohttp's client spent about as much CPU per request as the gateway's whole REST layer,
    on a machine where the generator shares two cores with what it measures. This one
    writes a prebuilt request and reads a Content-Length response on a pooled connection
    (the gateway answers unary calls that way); anything else is reported as an error.
    """

    MAX_CONNECTIONS = 256

    def __init__(self, target: Target) -> None:
        from urllib.parse import urlsplit

        address = urlsplit(target.rest_url)
        self._host = address.hostname or "127.0.0.1"
        self._port = address.port or 80
        self._timeout = target.timeout
        self._amount = target.amount
        self._head = (
            f"POST /v1/withdrawals HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
            f"Authorization: Bearer {target.api_key}\r\nContent-Type: application/json\r\n"
        )
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._open = 0
        self._freed = asyncio.Condition()

    def build(self, request_id: str) -> bytes:
        body = json.dumps(
            {"token": "USDC", "recipientAddress": _recipient(), "amount": self._amount}
        ).encode()
        head = f"{self._head}Idempotency-Key: {request_id}\r\nContent-Length: {len(body)}\r\n\r\n"
        return head.encode() + body

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with self._freed:
            while not self._idle and self._open >= self.MAX_CONNECTIONS:
                await self._freed.wait()
            if self._idle:
                return self._idle.pop()
            self._open += 1
        try:
            return await asyncio.open_connection(self._host, self._port)
        except BaseException:
            await self._release(None)
            raise

    async def _release(
        self, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None
    ) -> None:
        async with self._freed:
            if connection is None:
                self._open -= 1
            else:
                self._idle.append(connection)
            self._freed.notify()

    async def send(self, request: bytes) -> str | None:
        connection = None
        try:
            async with asyncio.timeout(self._timeout):
                connection = await self._connection()
                reader, writer = connection
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status, length, close = _response_head(head)
                payload = await reader.readexactly(length)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            if connection is not None:
                connection[1].close()
                await self._release(None)
            return type(exc).__name__
        if close:
            writer.close()
            await self._release(None)
        else:
            await self._release(connection)
        if status != 200:
            return f"HTTP {status}"
        if b'"STATE_RECEIVED"' not in payload:
            return "unexpected body"
        return None

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


def _response_head(head: bytes) -> tuple[int, int, bool]:
    """(status, Content-Length, connection closes) of an HTTP/1.1 response head."""
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length: int | None = None
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            close = True
        elif name == "transfer-encoding":
            raise ValueError("chunked responses are not expected from a unary call")
    if length is None:
        raise ValueError("a response without Content-Length")
    return status, length, close


async def _run_step(
    client: _Client,
    requests: Sequence[Any],
    due: Sequence[float],
) -> GeneratorResult:
    """Send each request at its due time (open loop) and measure from that time."""
    result = GeneratorResult(scheduled=len(requests))
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def one(request: Any, due_at: float) -> None:
        try:
            error = await client.send(request)
        except Exception as exc:  # a generator bug must show as an error, not a hang
            error = f"generator {type(exc).__name__}"
        done = time.monotonic()
        result.last_done = max(result.last_done, done)
        if error is None or not error.endswith(("DEADLINE_EXCEEDED", "TimeoutError")):
            result.completed += 1
        if error is None:
            result.latencies_ms.append((done - due_at) * 1000)
            result.due_at.append(due_at)
        else:
            _count(result.errors, error)

    i = 0
    n = len(requests)
    while i < n:
        now = time.monotonic()
        if due[i] > now:
            await asyncio.sleep(due[i] - now)
            now = time.monotonic()
        # Everything already due goes now, so a late wake-up does not spread the backlog out.
        while i < n and due[i] <= now:
            result.lags_ms.append((now - due[i]) * 1000)
            task = loop.create_task(one(requests[i], due[i]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
    if tasks:
        await asyncio.wait(set(tasks))
    return result


def _generator_main(conn: multiprocessing.connection.Connection, target: Target) -> None:
    """A generator process: prepares a step's requests, sends them when told, reports back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    client: _Client | None = None
    try:
        while True:
            command = conn.recv()
            if command[0] == "stop":
                return
            _, transport, request_ids, offsets = command
            if client is None or isinstance(client, _RestClient) != (transport == "rest"):
                if client is not None:
                    loop.run_until_complete(client.close())
                client = loop.run_until_complete(_make_client(transport, target))
            requests = [client.build(request_id) for request_id in request_ids]
            conn.send(("ready",))
            _, t0 = conn.recv()
            due = [t0 + offset for offset in offsets]
            started = time.process_time()
            result = loop.run_until_complete(_run_step(client, requests, due))
            result.cpu_seconds = time.process_time() - started
            conn.send(("done", asdict(result)))
    finally:
        if client is not None:
            loop.run_until_complete(client.close())
        loop.close()


_Client: TypeAlias = "_GrpcClient | _LeanGrpcClient | _RestClient"


async def _make_client(transport: str, target: Target) -> _Client:
    if transport != "grpc":
        return _RestClient(target)
    if target.grpc_client == "grpcio":
        return _GrpcClient(target)
    client = _LeanGrpcClient(target)
    await client.connect()
    return client


class Generators:
    """G generator processes; a step's requests are dealt out round-robin."""

    def __init__(self, count: int, target: Target) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process holding gRPC
        self.processes: list[Any] = []
        self.conns: list[multiprocessing.connection.Connection] = []
        for _ in range(count):
            parent, child = context.Pipe()
            process = context.Process(target=_generator_main, args=(child, target), daemon=True)
            process.start()
            self.processes.append(process)
            self.conns.append(parent)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def run(
        self, transport: str, rate: float, seconds: float, tag: str
    ) -> tuple[float, list[GeneratorResult]]:
        """(t0, per-generator results) of `rate` requests/s for `seconds`."""
        count = len(self.conns)
        total = max(1, round(rate * seconds))
        for g, conn in enumerate(self.conns):
            indices = range(g, total, count)
            conn.send(
                ("step", transport, [f"{tag}-{i}" for i in indices], [i / rate for i in indices])
            )
        for conn in self.conns:
            if conn.recv()[0] != "ready":
                raise RuntimeError("a generator failed to prepare its requests")
        t0 = time.monotonic() + 0.2
        for conn in self.conns:
            conn.send(("go", t0))
        results = []
        for conn in self.conns:
            _, data = conn.recv()
            results.append(GeneratorResult(**data))
        return t0, results

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(("stop",))
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()


# ---------------------------------------------------------------- the system under test


@contextlib.contextmanager
def bench_database(server_url: str) -> Iterator[str]:
    """A MariaDB database of the benchmark's own, migrated, dropped afterwards."""
    import pymysql
    from sqlalchemy.engine import make_url

    from withdrawal_shared.db.migrate import upgrade

    parsed = make_url(server_url)
    name = f"aws_bench_{secrets.token_hex(4)}"
    admin = pymysql.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 3306,
        user=parsed.username or "root",
        password=parsed.password or "",
    )
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        url = parsed.set(database=name, query={"charset": "utf8mb4"}).render_as_string(
            hide_password=False
        )
        upgrade(url)
        yield url
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def issue_key(database_url: str, partner_id: str) -> str:
    """A partner and an API key, made the way the tests and the stack's bootstrap make them."""
    from withdrawal_shared.db.api_keys import ensure_partner, issue_api_key
    from withdrawal_shared.db.engine import make_engine, make_sessionmaker

    engine = make_engine(database_url, pool_size=1)
    try:
        with make_sessionmaker(engine).begin() as session:
            ensure_partner(session, partner_id)
            session.flush()
            return issue_api_key(session, partner_id)
    finally:
        engine.dispose()


def set_daily_limit(database_url: str, api_key: str, symbol: str, amount: str) -> str:
    """A partner-wide 24-hour limit for the key's partner on `symbol` (token units), so that
    every create reads and updates its limit counter as it would in production; returns the
    partner id. Written as the admin API's confirmed change writes it."""
    from decimal import Decimal

    from sqlalchemy import select

    from withdrawal_shared.db.api_keys import partner_for_token
    from withdrawal_shared.db.engine import make_engine, make_sessionmaker
    from withdrawal_shared.db.models import PartnerLimit, Token

    engine = make_engine(database_url, pool_size=1)
    try:
        with make_sessionmaker(engine).begin() as session:
            partner_id = partner_for_token(session, api_key)
            if partner_id is None:
                raise RuntimeError("the benchmark's API key has no partner")
            token = session.scalars(select(Token).where(Token.symbol == symbol)).one()
            units = int(Decimal(amount).scaleb(token.decimals))
            limit = PartnerLimit(partner_id=partner_id, token_id=token.id, daily_amount=units)
            session.merge(limit)
            return partner_id
    finally:
        engine.dispose()


class _GatewayLog:
    """Reading the gateway's JSON-lines log at `log_path`."""

    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_levels(self) -> dict[str, int]:
        """How many lines of each level the gateway logged (JSON lines; others as "text")."""
        counts: dict[str, int] = {}
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return counts
        for line in lines:
            try:
                level = str(json.loads(line).get("level", "?"))
            except (ValueError, AttributeError):
                level = "text"
            counts[level] = counts.get(level, 0) + 1
        return counts

    def warnings(self, limit: int = 3) -> list[str]:
        """The first few warning or error messages of the gateway's log."""
        found: list[str] = []
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return found
        for line in lines:
            with contextlib.suppress(ValueError, AttributeError):
                entry = json.loads(line)
                if entry.get("level") in ("warning", "error", "critical"):
                    found.append(f"{entry.get('msg')} {entry.get('error', '')}".strip())
                    if len(found) >= limit:
                        break
        return found


class GatewayProcess(_GatewayLog):
    """`python -m svc_gateway` alone, with the environment the stack gives it (devstack.runner),
    on a database of the benchmark's own and the machine's Redis (`--gateway-only`)."""

    processor_running = False
    exit_code: int | None = None  # the gateway's, once stopped

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        api_key: str,
        redis_url: str,
        profile: Path | None = None,
    ) -> None:
        self.api_key = api_key
        self.database_url = env["DATABASE_URL"]
        self.redis_url = redis_url
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "GATEWAY_GRPC_PORT": str(self.grpc_port),
            "GATEWAY_HTTP_PORT": str(self.http_port),
            **env,
        }
        self.log_path = log_path
        self._log = log_path.open("wb")
        command = [sys.executable, "-m", "svc_gateway"]
        if profile is not None:
            command = [sys.executable, "-m", "bench.profiled_gateway", str(profile)]
        self.process = subprocess.Popen(
            command,
            env=self.env,
            cwd=REPO_ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def wait_serving(self, timeout: float = 60) -> None:
        from devstack.probes import NotServingError, wait_serving

        try:
            wait_serving(
                self.grpc_target,
                timeout=timeout,
                alive=lambda: self.process.poll() is None,
                what="gateway",
            )
        except NotServingError as exc:
            raise RuntimeError(f"{exc}; its log:\n{self.log_tail()}") from None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def other_pids(self) -> dict[str, int | None]:
        """The other processes whose CPU each step reports."""
        return {
            "mariadbd": mariadb_pid(self.database_url),
            "redis-server": next(iter(pids_by_name("redis-server")), None),
        }

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        self.exit_code = self.process.returncode
        return self.exit_code


class PipelineSystem(_GatewayLog):
    """The whole pipeline, so that the processor runs while the gateway is measured: a
    `HarnessStack` (a MariaDB database and a redis-server of its own, anvil with 2-second
    blocks and a 60M block gas limit, the payout vault, and the signer, gateway, processor and
    monitor as processes under the supervisor). The processor validates, batches, signs and
    broadcasts what the gateway accepts, competing with it for the same two cores."""

    processor_running = True
    prefix = "aws:"
    exit_code: int | None = None  # 0 unless the gateway died and was restarted, once stopped

    def __init__(self, gateway_env: dict[str, str], var_dir: Path, batch_nice: int) -> None:
        from devstack.config import background_nice_env
        from devstack.harness import HarnessConfig, HarnessStack

        nice = background_nice_env(batch_nice)
        self.stack = HarnessStack(
            HarnessConfig(
                var_dir=var_dir,
                confirmations=PIPELINE_CONFIRMATIONS,
                env=nice,
                service_env={"gateway": gateway_env},
            )
        )
        self.stack.__enter__()
        self.log_path = self.stack.logs_dir / "gateway.log"
        self.env = {**gateway_env, "DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url}

    @property
    def grpc_target(self) -> str:
        return self.stack.grpc_target

    @property
    def rest_url(self) -> str:
        return self.stack.rest_base_url

    @property
    def api_key(self) -> str:
        return self.stack.api_key

    @property
    def database_url(self) -> str:
        return self.stack.database_url

    @property
    def redis_url(self) -> str:
        assert self.stack.redis is not None
        return self.stack.redis.url

    @property
    def pid(self) -> int:
        pid = self.stack.pid("gateway")
        assert pid is not None, "the gateway is not running"
        return pid

    def alive(self) -> bool:
        return self.stack.running("gateway") and self.stack.restarts("gateway") == 0

    def other_pids(self) -> dict[str, int | None]:
        redis = self.stack.redis.process if self.stack.redis is not None else None
        return {
            "mariadbd": mariadb_pid(self.database_url),
            "redis-server": redis.pid if redis is not None else None,
            **{
                name: self.stack.pid(name)
                for name in ("processor", "signer", "monitor", "webhooks")
            },
            "anvil": self.stack.anvil.pid,
        }

    def states(self) -> dict[str, int]:
        """Withdrawals per state now (how far the processor got with what was accepted)."""
        from sqlalchemy import func, select

        from withdrawal_shared.db.models import Withdrawal

        with self.stack.sessions()() as session:
            rows = session.execute(
                select(Withdrawal.state, func.count()).group_by(Withdrawal.state)
            ).all()
        return {str(state): int(n) for state, n in rows}

    def session_nice(self) -> dict[str, list[int]]:
        """Service -> the nice values of the MariaDB server threads of its sessions now
        (DATABASE_SESSION_NICE); empty when the server is not on this host or not MariaDB."""
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError

        from withdrawal_shared.db.session_nice import is_local_server_thread

        found: dict[str, set[int]] = {}
        try:
            with self.stack.sessions()() as session:
                rows = session.execute(
                    text(
                        "SELECT USER, TID FROM information_schema.PROCESSLIST "
                        "WHERE DB = DATABASE() AND ID <> CONNECTION_ID()"
                    )
                ).all()
        except DBAPIError:  # SQLite, or MySQL: no session thread ids
            return {}
        for user, thread_id in rows:
            if not is_local_server_thread(int(thread_id)):
                continue
            try:
                nice = os.getpriority(os.PRIO_PROCESS, int(thread_id))
            except OSError:  # the session ended meanwhile
                continue
            found.setdefault(str(user).rpartition("_")[2], set()).add(nice)
        return {service: sorted(values) for service, values in sorted(found.items())}

    def stop(self) -> int | None:
        child = self.stack.child("gateway")
        restarts = child.restarts
        self.stack.stop()
        self.exit_code = child.last_exit_code if restarts else 0
        return self.exit_code


# ---------------------------------------------------------------- figures


@dataclass(frozen=True)
class Row:
    transport: str
    rate: int
    seconds: float
    scheduled: int
    ok: int
    errors: int
    error_kinds: dict[str, int]
    achieved_rate: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    generator_lag_p99_ms: float
    generator_lag_max_ms: float
    cpu_per_1k: dict[str, float | None]  # process -> CPU seconds per 1,000 requests
    mariadb_per_1k: dict[str, float] = field(default_factory=dict)
    """MariaDB server counters per 1,000 requests (the whole server: shared with whatever
    else runs on it): commits (statements and storage-engine commits, autocommit ones
    included), fsyncs, redo-log writes, log waits, row lock waits and their ms."""
    windows: Windows | None = None


@dataclass
class Windows:
    """How the slow requests are spread over the step: the step cut into `WINDOW_SECONDS`
    windows by due time, and the windows whose median latency is over the p95 limit. A tail
    held by a few such windows is a stall (everything in flight waited together); a tail
    spread over every window is queueing."""

    count: int
    slow: int  # windows whose median is over P95_LIMIT_MS
    over_limit_in_slow_pct: float | None  # of the requests over P95_LIMIT_MS, in slow windows
    slowest: list[tuple[float, float]]  # (start, s from the step's start; median ms), worst first


WINDOW_SECONDS = 0.1


def windows(t0: float, results: Sequence[GeneratorResult]) -> Windows | None:
    """`Windows` of the successful requests of a step that started at `t0`."""
    by_window: dict[int, list[float]] = {}
    for result in results:
        for due_at, latency in zip(result.due_at, result.latencies_ms, strict=True):
            by_window.setdefault(int((due_at - t0) / WINDOW_SECONDS), []).append(latency)
    if not by_window:
        return None
    medians = {w: sorted(values)[len(values) // 2] for w, values in by_window.items()}
    slow = {w for w, median in medians.items() if median > P95_LIMIT_MS}
    over = [(w, x) for w, values in by_window.items() for x in values if x > P95_LIMIT_MS]
    worst = sorted(medians.items(), key=lambda item: -item[1])[:5]
    return Windows(
        count=len(by_window),
        slow=len(slow),
        over_limit_in_slow_pct=round(100 * sum(w in slow for w, _ in over) / len(over), 1)
        if over
        else None,
        slowest=[(round(w * WINDOW_SECONDS, 1), round(median, 1)) for w, median in worst],
    )


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def summarise(
    transport: str,
    rate: int,
    seconds: float,
    t0: float,
    results: Sequence[GeneratorResult],
    cpu: dict[str, float | None],
) -> Row:
    latencies = sorted(x for r in results for x in r.latencies_ms)
    lags = sorted(x for r in results for x in r.lags_ms)
    kinds: dict[str, int] = {}
    for r in results:
        for key, n in r.errors.items():
            kinds[key] = kinds.get(key, 0) + n
    scheduled = sum(r.scheduled for r in results)
    completed = sum(r.completed for r in results)
    ok = len(latencies)
    cpu = {**cpu, "generators": sum(r.cpu_seconds for r in results)}
    elapsed = max([seconds, *(r.last_done - t0 for r in results)])
    # Per response: a request that timed out cost the gateway less than a completed one.
    per_1k = {
        name: (None if used is None or completed == 0 else round(used / completed * 1000, 3))
        for name, used in cpu.items()
    }
    return Row(
        transport=transport,
        rate=rate,
        seconds=seconds,
        scheduled=scheduled,
        ok=ok,
        errors=scheduled - ok,
        error_kinds=kinds,
        achieved_rate=round(ok / elapsed, 1),
        p50_ms=_round(percentile(latencies, 50)),
        p95_ms=_round(percentile(latencies, 95)),
        p99_ms=_round(percentile(latencies, 99)),
        max_ms=_round(latencies[-1] if latencies else None),
        generator_lag_p99_ms=_round(percentile(lags, 99)) or 0.0,
        generator_lag_max_ms=_round(lags[-1] if lags else None) or 0.0,
        cpu_per_1k=per_1k,
        windows=windows(t0, results),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def sustained(row: Row) -> bool:
    """The rate was held: p95 within the limit, no errors, and (nearly) all of it achieved."""
    return (
        row.errors == 0
        and row.p95_ms is not None
        and row.p95_ms <= P95_LIMIT_MS
        and row.achieved_rate >= ACHIEVED_MIN * row.rate
    )


def _fmt(value: float | None, spec: str = "7.1f") -> str:
    if value is not None:
        return format(value, spec)
    return "-".rjust(int(spec.partition(".")[0]))


# CPU columns, in this order, for the processes a run measured.
CPU_COLUMNS = {
    "gateway": "gateway",
    "gateway-loop": "its loop",
    "processor": "processor",
    "signer": "signer",
    "monitor": "monitor",
    "webhooks": "webhooks",
    "anvil": "anvil",
    "mariadbd": "mariadbd",
    "redis-server": "redis",
    "generators": "generators",
    "harness": "harness",
}


def cpu_columns(processes: Iterable[str]) -> list[str]:
    present = set(processes) | {"generators"}
    return [name for name in CPU_COLUMNS if name in present]


def print_header(columns: Sequence[str]) -> None:
    cpu = " | ".join(f"{CPU_COLUMNS[c]:>10}" for c in columns)
    print(
        f"{'transport':>9} | {'rate/s':>6} | {'achieved':>8} | {'p50 ms':>7} | {'p95 ms':>7} | "
        f"{'p99 ms':>7} | {'max ms':>7} | {'errors':>6} | {'lag p99':>7} | CPU s/1k: {cpu}"
    )


def print_row(row: Row, columns: Sequence[str]) -> None:
    cpu = " | ".join(_fmt(row.cpu_per_1k.get(c), "10.3f") for c in columns)
    print(
        f"{row.transport:>9} | {row.rate:6d} | {row.achieved_rate:8.1f} | {_fmt(row.p50_ms)} | "
        f"{_fmt(row.p95_ms)} | {_fmt(row.p99_ms)} | {_fmt(row.max_ms)} | {row.errors:6d} | "
        f"{row.generator_lag_p99_ms:7.2f} | CPU s/1k: {cpu}",
        flush=True,
    )
    if row.error_kinds:
        print(f"{'':>9}   errors: {row.error_kinds}", flush=True)
    if row.mariadb_per_1k:
        counters = ", ".join(f"{name} {value:g}" for name, value in row.mariadb_per_1k.items())
        print(f"{'':>9}   MariaDB per 1k requests: {counters}", flush=True)
    if row.windows is not None and row.windows.slow:
        w = row.windows
        slowest = ", ".join(f"{start:g} s {median:g} ms" for start, median in w.slowest)
        held = _fmt(w.over_limit_in_slow_pct, ".1f")
        print(
            f"{'':>9}   {WINDOW_SECONDS * 1000:g}-ms windows with a median over "
            f"{P95_LIMIT_MS:g} ms: {w.slow} of {w.count}, holding {held} % of the requests "
            f"over {P95_LIMIT_MS:g} ms; slowest (start, median): {slowest}",
            flush=True,
        )


# ---------------------------------------------------------------- the run


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("grpcio", "aiohttp", "protobuf", "sqlalchemy", "pymysql", "redis"):
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _server_versions(database_url: str, redis_url: str) -> dict[str, str]:
    import redis
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            mariadb = str(conn.execute(text("SELECT VERSION()")).scalar())
            flush = conn.execute(
                text("SELECT @@innodb_flush_log_at_trx_commit, @@innodb_buffer_pool_size")
            ).one()
    finally:
        engine.dispose()
    client = redis.Redis.from_url(redis_url)
    try:
        redis_version = str(client.info("server").get("redis_version", "?"))
    finally:
        client.close()
    return {
        "mariadb": mariadb,
        "mariadb_innodb_flush_log_at_trx_commit": str(flush[0]),
        "mariadb_innodb_buffer_pool_size": str(flush[1]),
        "redis_server": redis_version,
    }


def _check_store(database_url: str, redis_url: str, prefix: str) -> dict[str, int]:
    """What the run left: withdrawals, their audit rows and the queued tasks."""
    import redis
    from sqlalchemy import create_engine, func, select

    from withdrawal_shared.db.models import Withdrawal, WithdrawalAudit

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            withdrawals = int(conn.scalar(select(func.count()).select_from(Withdrawal)) or 0)
            audits = int(conn.scalar(select(func.count()).select_from(WithdrawalAudit)) or 0)
    finally:
        engine.dispose()
    client = redis.Redis.from_url(redis_url)
    try:
        tasks = int(client.xlen(f"{prefix}tasks:standard"))
    finally:
        client.close()
    return {"withdrawals": withdrawals, "audit_rows": audits, "queued_tasks": tasks}


def _delete_prefix(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="rates 20 and 40/s, 1 s each")
    parser.add_argument("--rates", help="comma-separated requests/s (default 100,…,1000)")
    parser.add_argument("--seconds", type=float, help="duration of each rate (default 10)")
    parser.add_argument("--warmup-seconds", type=float, help="unmeasured warm-up per transport")
    parser.add_argument("--transports", default="grpc,rest", help="grpc, rest or both")
    parser.add_argument("--generators", type=int, default=2, help="generator processes")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, s")
    parser.add_argument(
        "--grpc-connections",
        type=int,
        default=4,
        help="gRPC connections per generator process (requests go round-robin)",
    )
    parser.add_argument(
        "--grpc-client",
        choices=("lean", "grpcio"),
        default="lean",
        help="the generators' gRPC client: lean (bench.lean_grpc, the default) or grpcio "
        "(grpc.aio, about 0.2 ms more CPU per call on the same cores)",
    )
    parser.add_argument("--mariadb", default=os.environ.get("BENCH_MARIADB_URL", DEFAULT_MARIADB))
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS))
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra environment variable for the gateway (repeatable)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="run the gateway under cProfile (bench.profiled_gateway); slows it down",
    )
    parser.add_argument(
        "--gateway-only",
        action="store_true",
        help="measure the gateway alone, without the processor (and chain) behind it",
    )
    parser.add_argument(
        "--batch-nice",
        type=int,
        default=None,
        metavar="N",
        help="run the processor, monitor, signer and webhook sender at nice N (<NAME>_NICE; "
        "default: the stack's STACK_BATCH_NICE default, 10; 0 for the gateway's priority)",
    )
    parser.add_argument(
        "--amount", default=None, help="USDC per request (default 1 with the pipeline, else 12.5)"
    )
    parser.add_argument(
        "--daily-limit",
        default=DAILY_LIMIT,
        help="the benchmark partner's 24-hour USDC limit, far above what it sends, so that "
        f"every create counts against it (default {DAILY_LIMIT}; 'none' for no limit)",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the services' logs and files in DIR (a new or empty directory) instead of "
        "a temporary one, e.g. to line their log times up with the slow windows",
    )
    args = parser.parse_args(argv)
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep}: not empty; give a new or empty directory per run")
    if args.amount is None:
        args.amount = "12.5" if args.gateway_only else PIPELINE_AMOUNT
    if args.batch_nice is None:
        from devstack.config import StackConfig

        args.batch_nice = StackConfig.batch_nice
    if args.profile is not None and not args.gateway_only:
        parser.error("--profile needs --gateway-only")
    return args


@dataclass(frozen=True)
class Plan:
    rates: tuple[int, ...]
    seconds: float
    warmup: float
    transports: tuple[str, ...]
    gateway_env: dict[str, str]
    run_id: str
    out: Path

    @property
    def prefix(self) -> str:
        return f"awsbench:{self.run_id}:"


def make_plan(args: argparse.Namespace) -> Plan:
    rates = (
        tuple(int(r) for r in args.rates.split(","))
        if args.rates
        else (SMOKE_RATES if args.smoke else FULL_RATES)
    )
    transports = tuple(t.strip() for t in args.transports.split(",") if t.strip())
    if not transports or not set(transports) <= set(TRANSPORTS):
        raise SystemExit(f"--transports: choose from {', '.join(TRANSPORTS)}")
    return Plan(
        rates=rates,
        seconds=args.seconds if args.seconds is not None else (1.0 if args.smoke else 10.0),
        warmup=args.warmup_seconds
        if args.warmup_seconds is not None
        else (0.5 if args.smoke else 3.0),
        transports=transports,
        gateway_env=dict(item.split("=", 1) for item in args.gateway_env),
        run_id=secrets.token_hex(4),
        out=args.out
        or RESULTS
        / f"api_load{'-gateway-only' if args.gateway_only else ''}{'-smoke' if args.smoke else ''}"
        f".json",
    )


System = GatewayProcess | PipelineSystem


def configuration(args: argparse.Namespace, plan: Plan, system: System) -> dict[str, Any]:
    """Everything a reader needs to judge the figures, printed before them."""
    return {
        "benchmark": "api_load",
        "method": "CreateWithdrawal",
        "transports": list(plan.transports),
        "rates_per_second": list(plan.rates),
        "seconds_per_rate": plan.seconds,
        "warmup_seconds_per_transport": plan.warmup,
        "loop": "open: request i due at t0 + i/rate; latency from its due time",
        "generator_processes": args.generators,
        "grpc_connections_per_generator": args.grpc_connections,
        "grpc_client": args.grpc_client,
        "rest_connections_per_generator": f"up to {_RestClient.MAX_CONNECTIONS} (keep-alive)",
        "request_timeout_seconds": args.timeout,
        "profiled": str(args.profile) if args.profile else False,
        "processor_running": system.processor_running,
        "processes": {
            "gateway": (
                f"python -m svc_gateway, pid {system.pid}, "
                f"GATEWAY_WORKERS={gateway_workers(args)} (CPU summed over its workers)"
            ),
            "pipeline": (
                "running: the whole pipeline (HarnessStack: signer, processor, monitor, anvil "
                f"with 2 s blocks and a 60M gas limit, payout vault, {PIPELINE_CONFIRMATIONS} "
                "confirmations) pays what the gateway accepts, on the same cores"
                if system.processor_running
                else "not running (--gateway-only): the gateway alone"
            ),
            **{
                name: f"pid {pid}" + (" (shared with the machine)" if name == "mariadbd" else "")
                for name, pid in system.other_pids().items()
            },
        },
        # Read from /proc: the background services yield to the gateway (STACK_BATCH_NICE).
        "nice": {
            name: nice_of(pid)
            for name, pid in {"gateway": system.pid, **system.other_pids()}.items()
        },
        "checks_on": [
            "auth (API key, Authorization: Bearer, cached per key)",
            "validation (token, amount, address incl. EIP-55, system addresses)",
            "rate limit per key (GCRA in Redis, default 1,000/s, one script call per batch)",
            (
                f"the partner's 24-hour limit ({args.daily_limit} USDC): its counter read and "
                "updated in the creating transaction"
                if args.daily_limit != "none"
                else "no limit configured (--daily-limit none)"
            ),
            "idempotency (unique request_id / Idempotency-Key per request)",
            "stored RECEIVED with its hash-chained audit row, committed before the response",
            "Redis task enqueue and state-change event before the response",
            "one JSON log line per created withdrawal",
            "pipeline: the processor's blocklist screening and the shipped approval rules "
            "(the requests' small amounts pass automatically)",
        ],
        "requests": f"USDC {args.amount} to a fresh random recipient each",
        "database": "MariaDB, a database of its own (created, migrated, dropped)",
        "redis": (
            "a redis-server of its own"
            if system.processor_running
            else f"the machine's, key prefix {plan.prefix}"
        ),
        "gateway_env": {
            k: v
            for k, v in system.env.items()
            if k.startswith(("GATEWAY_", "LOG_LEVEL", "REDIS_", "DATABASE_URL"))
        },
        "sustained_means": (
            f"p95 <= {P95_LIMIT_MS:g} ms from the due time, no errors, "
            f">= {ACHIEVED_MIN:.0%} of the rate achieved"
        ),
        "targets_per_second": TARGETS,
        "versions": {**_versions(), **_server_versions(system.database_url, system.redis_url)},
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_at_start": list(os.getloadavg()),
            "python_loop_ms_at_start": args.python_loop_ms,
            "thread_handoff_us_at_start": args.thread_handoff_us,
        },
    }


def gateway_workers(args: argparse.Namespace) -> str:
    for item in args.gateway_env or ():
        name, _, value = item.partition("=")
        if name == "GATEWAY_WORKERS":
            return value
    return os.environ.get("GATEWAY_WORKERS", "1")


MARIADB_COUNTERS = (
    "Com_commit",
    "Handler_commit",
    "Innodb_data_fsyncs",
    "Innodb_log_writes",
    "Innodb_log_waits",
    "Innodb_row_lock_waits",
    "Innodb_row_lock_time",
    "Com_select",
    "Com_insert",
    "Com_update",
    "Innodb_rows_read",
    "Handler_read_rnd_next",
    "Com_compound_sql",  # counted group commits that tried the one round trip (the guard)
    "Com_signal",  # ... and found a limit near (decided on a second round trip)
)


class MariaDbMeter:
    """Deltas of MariaDB's global status counters between `start` and `stop`: how many
    commits and redo-log fsyncs the requests cost, and how often anything waited for the log
    or a row lock (empty when the server cannot be read)."""

    def __init__(self, server_url: str) -> None:
        self._url = server_url
        self._before: dict[str, int] = {}

    def _read(self) -> dict[str, int]:
        import pymysql
        from sqlalchemy.engine import make_url

        parsed = make_url(self._url)
        try:
            connection = pymysql.connect(
                host=parsed.host or "127.0.0.1",
                port=parsed.port or 3306,
                user=parsed.username or "root",
                password=parsed.password or "",
            )
        except pymysql.MySQLError:
            return {}
        try:
            with connection.cursor() as cur:
                names = ", ".join(f"'{name}'" for name in MARIADB_COUNTERS)
                cur.execute(f"SHOW GLOBAL STATUS WHERE Variable_name IN ({names})")
                return {str(name): int(value) for name, value in cur.fetchall()}
        finally:
            connection.close()

    def start(self) -> None:
        self._before = self._read()

    def stop(self, completed: int) -> dict[str, float]:
        after = self._read()
        if not completed:
            return {}
        return {
            name: round((after[name] - self._before[name]) / completed * 1000, 1)
            for name in MARIADB_COUNTERS
            if name in after and name in self._before
        }


class CpuMeter:
    """CPU seconds of the gateway (all threads, and its event-loop thread alone) and of the
    other processes (mariadbd, redis-server, and with the pipeline the processor, signer,
    monitor and anvil) between `start` and `stop`."""

    def __init__(self, gateway_pid: int, others: dict[str, int | None]) -> None:
        self._gateway = gateway_pid
        self._others = others
        self._before: dict[str, float | None] = {}

    def _gateway_pids(self) -> list[int]:
        """The gateway and its extra workers (GATEWAY_WORKERS > 1 starts them as children)."""
        try:
            with open(f"/proc/{self._gateway}/task/{self._gateway}/children") as f:
                children = [int(pid) for pid in f.read().split()]
        except OSError:
            children = []
        return [self._gateway, *children]

    def _read(self) -> dict[str, float | None]:
        readings = [cpu_seconds(pid) for pid in self._gateway_pids()]
        reading = {
            "gateway": None if readings[0] is None else sum(r or 0.0 for r in readings),
            # The main thread runs the event loop: it alone cannot use more than one core.
            "gateway-loop": cpu_seconds(self._gateway, self._gateway),
        }
        reading.update({name: cpu_seconds(pid) for name, pid in self._others.items()})
        return reading

    def start(self) -> None:
        self._before = self._read()

    def stop(self) -> dict[str, float | None]:
        after = self._read()
        used: dict[str, float | None] = {}
        for name, value in after.items():
            before = self._before.get(name)
            used[name] = None if value is None or before is None else value - before
        return used


def measure(plan: Plan, system: System, generators: Generators, mariadb_url: str) -> list[Row]:
    """Every transport at every rate, after an unmeasured warm-up per transport."""
    rows: list[Row] = []
    # This process too: with the pipeline its supervisor threads copy every service's output
    # to the logs (the gateway writes a line per request): 0.04-0.05 ms per request at 600/s.
    others = {**system.other_pids(), "harness": os.getpid()}
    meter = CpuMeter(system.pid, others)
    server = MariaDbMeter(mariadb_url)
    columns = cpu_columns(["gateway", "gateway-loop", *others])
    print_header(columns)
    for transport in plan.transports:
        if plan.warmup > 0:
            generators.run(transport, plan.rates[0], plan.warmup, f"{plan.run_id}-{transport}-w")
        for step, rate in enumerate(plan.rates):
            meter.start()
            server.start()
            # The step number keeps request ids unique when a rate is repeated.
            t0, results = generators.run(
                transport, rate, plan.seconds, f"{plan.run_id}-{transport}-{step}-{rate}"
            )
            row = summarise(transport, rate, plan.seconds, t0, results, meter.stop())
            row = replace(row, mariadb_per_1k=server.stop(row.ok))
            rows.append(row)
            print_row(row, columns)
            if not system.alive():
                raise RuntimeError(f"the gateway exited; its log:\n{system.log_tail()}")
    return rows


def verdicts(plan: Plan, rows: Sequence[Row]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for transport in plan.transports:
        held = [r.rate for r in rows if r.transport == transport and sustained(r)]
        best = max(held, default=None)
        found[transport] = {
            "highest_sustained_rate": best,
            "target": TARGETS[transport],
            "met": best is not None and best >= TARGETS[transport],
        }
        print(
            f"{transport}: highest rate sustained (p95 <= {P95_LIMIT_MS:g} ms, no errors, "
            f">= {ACHIEVED_MIN:.0%} achieved): {best}/s; target {TARGETS[transport]}/s"
        )
    return found


@contextlib.contextmanager
def system_under_test(args: argparse.Namespace, plan: Plan, tmp: Path) -> Iterator[System]:
    """The pipeline (default) or the gateway alone (`--gateway-only`), stopped afterwards."""
    if not args.gateway_only:
        pipeline = PipelineSystem(plan.gateway_env, tmp, args.batch_nice)
        try:
            yield pipeline
        finally:
            pipeline.stop()
        return
    with bench_database(args.mariadb) as database_url:
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": args.redis,
            "REDIS_PREFIX": plan.prefix,
            **plan.gateway_env,
        }
        gateway = GatewayProcess(
            env,
            tmp / "gateway.log",
            issue_key(database_url, f"bench-{plan.run_id}"),
            args.redis,
            args.profile,
        )
        try:
            gateway.wait_serving()
            yield gateway
        finally:
            gateway.stop()
            _delete_prefix(args.redis, plan.prefix)


@contextlib.contextmanager
def _kept(directory: Path) -> Iterator[str]:
    directory.mkdir(parents=True, exist_ok=True)
    yield str(directory)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    # Before the stack starts: how fast the machine runs Python now (`bench.machine_speed`).
    args.python_loop_ms = python_loop_ms()
    args.thread_handoff_us = thread_handoff_us()
    print(
        f"machine speed: a fixed pure-Python loop took {args.python_loop_ms} ms of CPU; "
        f"a hand-off to another thread and back {args.thread_handoff_us} µs"
    )
    store: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory() if args.keep is None else _kept(args.keep) as tmp,
        system_under_test(args, plan, Path(tmp)) as system,
    ):
        generators: Generators | None = None
        try:
            if args.daily_limit != "none":
                set_daily_limit(system.database_url, system.api_key, "USDC", args.daily_limit)
                time.sleep(LIMITS_CACHE_SECONDS + 1)  # the gateway's cached policy expires
            config = configuration(args, plan, system)
            print("configuration:", json.dumps(config, indent=2), flush=True)
            target = Target(
                grpc_target=system.grpc_target,
                rest_url=system.rest_url,
                api_key=system.api_key,
                timeout=args.timeout,
                grpc_connections=args.grpc_connections,
                amount=args.amount,
                grpc_client=args.grpc_client,
            )
            generators = Generators(args.generators, target)
            rows = measure(plan, system, generators, args.mariadb)
            found = verdicts(plan, rows)
            if isinstance(system, PipelineSystem):
                store = {
                    "withdrawals_by_state": system.states(),
                    "database_session_nice": system.session_nice(),
                }
            else:
                store = _check_store(system.database_url, system.redis_url, plan.prefix)
            print(f"left in the store: {store}")
        finally:
            if generators is not None:
                generators.close()
        alive = system.alive()
        gateway_log = {"levels": system.log_levels(), "first_warnings": system.warnings()}
        tail = system.log_tail()
    code = system.exit_code  # stopped by `system_under_test`
    print(f"gateway log: {gateway_log}")
    if code not in (0, None) or not alive:
        print(f"the gateway exited with {code}; its log:\n{tail}")
    document = {
        "config": config,
        "rows": [asdict(r) for r in rows],
        "targets": found,
        "store": store,
        "gateway_log": gateway_log,
        "gateway_exit_code": code,
        "loadavg_at_end": list(os.getloadavg()),
        "python_loop_ms_at_end": python_loop_ms(),
        "time": time.time(),
    }
    plan.out.parent.mkdir(parents=True, exist_ok=True)
    plan.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {plan.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
