"""Builds and runs the webhook sender: the outbox poll and the sender as asyncio tasks (their
database work on a small thread pool), and a grpc.aio server with only gRPC health and
reflection. It is the only component that calls out to partners' servers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from svc_webhooks.outbox import OutboxReport, poll_outbox
from svc_webhooks.sender import Sender
from svc_webhooks.settings import WebhooksSettings
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.runtime import freeze_start_up_objects
from withdrawal_shared.webhooks.secrets import SecretBox

log = logging.getLogger(__name__)

SERVICE_NAMES = (health.SERVICE_NAME, reflection.SERVICE_NAME)
MEASURE_EVERY_SECONDS = 5.0


class WebhooksServer:
    """The running sender; `grpc_port` is known after `start()`."""

    def __init__(self, settings: WebhooksSettings) -> None:
        self.settings = settings
        self.grpc_port = 0
        threads = 4
        self._engine = make_engine(
            settings.database_url,
            pool_size=threads,
            tls=settings.database_tls,
            session_nice=settings.database_session_nice,
        )
        self._sessions = make_sessionmaker(self._engine)
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="webhooks-db")
        self.box = SecretBox()  # reads the key now: a bad key stops the service at start
        self.sender = Sender(self._sessions, self._executor, settings, self.box)
        self._health = health.aio.HealthServicer()
        self._grpc: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(SERVICE_NAMES, server)
        address = f"{self.settings.grpc_host}:{self.settings.grpc_port}"
        self.grpc_port = server.add_insecure_port(address)
        if self.grpc_port == 0:
            raise OSError(f"cannot listen for gRPC on {address}")
        await server.start()
        self._grpc = server
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        self._tasks = [
            asyncio.create_task(self._outbox_loop(), name="webhooks-outbox"),
            asyncio.create_task(self._send_loop(), name="webhooks-sender"),
        ]
        log.info(
            "webhook sender serving",
            extra={
                "grpc_port": self.grpc_port,
                "retry_schedule_seconds": self.settings.schedule_seconds,
                "allow_http_loopback": self.settings.allow_http_loopback,
            },
        )

    def _poll(self) -> OutboxReport:
        with self._sessions.begin() as session:
            return poll_outbox(
                session,
                batch=self.settings.outbox_batch,
                gap_grace_seconds=self.settings.gap_grace_seconds,
            )

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.settings.poll_seconds)

    async def _outbox_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_measure = 0.0
        while not self._stopping.is_set():
            full = False
            try:
                report = await loop.run_in_executor(self._executor, self._poll)
                full = report.rows >= self.settings.outbox_batch
                if report.deliveries:
                    self.sender.wake()
                if report.deliveries or report.skipped:
                    log.info(
                        "outbox read",
                        extra={
                            "rows": report.rows,
                            "deliveries": report.deliveries,
                            "frontier": report.frontier,
                            "gaps": report.gaps,
                        },
                    )
                if loop.time() - last_measure >= MEASURE_EVERY_SECONDS:
                    last_measure = loop.time()
                    await loop.run_in_executor(self._executor, self.sender.measure)
            except Exception as exc:
                log.exception("outbox poll failed; retrying", extra={"error": str(exc)})
            if full:
                continue  # more waiting: read on at once
            await self._pause()

    async def _send_loop(self) -> None:
        """A round whenever there is room and work: when a round filled all the room it had,
        the next starts at once; otherwise it waits for the sender's wake-up (attempts
        recorded, deliveries fanned out) or `poll_seconds` (retries come due)."""
        while not self._stopping.is_set():
            started, room = 0, 1
            try:
                started, room = await self.sender.round()
            except Exception as exc:
                log.exception("sending round failed; retrying", extra={"error": str(exc)})
            if started and started >= room:
                await asyncio.sleep(0)
                continue
            await self.sender.wait_for_work(self.settings.poll_seconds)

    async def stop(self) -> None:
        """Graceful stop: NOT_SERVING, finish the attempts in flight (up to the grace)."""
        await self._health.enter_graceful_shutdown()
        self._stopping.set()
        self.sender.wake()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.sender.stop(self.settings.shutdown_grace_seconds)
        if self._grpc is not None:
            await self._grpc.stop(1.0)
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._engine.dispose()


async def serve(settings: WebhooksSettings, stop: asyncio.Event) -> None:
    server = WebhooksServer(settings)
    await server.start()
    freeze_start_up_objects()
    await stop.wait()
    await server.stop()
