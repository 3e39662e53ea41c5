"""Builds and runs the monitor: the chain follower as an asyncio task (its blocking database
and JSON-RPC work on one dedicated thread), events published to Redis after each commit, and a
grpc.aio server with only gRPC health and reflection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from web3 import Web3

from svc_monitor.follower import ChainFollower
from svc_monitor.gauges import MonitorGauges
from svc_monitor.leadership import Leadership, LeaseLost
from svc_monitor.report import PollReport
from svc_monitor.settings import MonitorSettings
from withdrawal_shared.chain.rpc_pool import PoolProvider, RpcPool
from withdrawal_shared.crash_points import crash_point
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.metrics import metrics_served
from withdrawal_shared.queue import QueueNames, publish_many
from withdrawal_shared.runtime import freeze_start_up_objects
from withdrawal_shared.states import State
from withdrawal_shared.store_tls import redis_client

log = logging.getLogger(__name__)

SERVICE_NAMES = (health.SERVICE_NAME, reflection.SERVICE_NAME)
FOLLOWER_HEALTH_NAME = "svc_monitor.ChainFollower"
"""Health service name reflecting the follower alone ("" covers the whole process)."""


class MonitorServer:
    """The running monitor; `grpc_port` is known after `start()`."""

    def __init__(self, settings: MonitorSettings) -> None:
        self.settings = settings
        self.grpc_port = 0
        self._engine = make_engine(
            settings.database_url,
            pool_size=2,
            tls=settings.database_tls,
            session_nice=settings.database_session_nice,
        )
        # One thread: polls never overlap, and the follower's caches need no locking.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="monitor-follow")
        self._redis = redis_client(
            settings.redis_url,
            tls_ca=settings.redis_tls_ca,
            socket_connect_timeout=1.0,
            socket_timeout=2.0,
        )
        self._names = QueueNames(settings.redis_prefix)
        # Every CHAIN_RPC_URL provider, with failover; re-broadcasts go to all healthy ones.
        self.rpc_pool = RpcPool(
            settings.chain_rpc_urls, request_timeout=settings.rpc_timeout_seconds
        )
        w3 = Web3(PoolProvider(self.rpc_pool))
        self._w3 = w3
        self._gauges: asyncio.Task[None] | None = None
        # Of several replicas one acts: the lease, and a fence on every follower transaction.
        self.leadership = Leadership(
            make_sessionmaker(self._engine), settings.chain, settings.lease_seconds
        )
        follower_sessions = make_sessionmaker(self._engine)
        self.leadership.install(follower_sessions)
        self.follower = ChainFollower(
            follower_sessions,
            w3,
            settings.chain,
            batch_size=settings.batch_size,
            pool=self.rpc_pool,
            emergency_alert_blocks=settings.emergency_alert_blocks,
            may_act=self.leadership.may_act,
        )
        self._health = health.aio.HealthServicer()
        self._grpc: grpc.aio.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.polls = 0
        """Completed polls (successful or not), for tests and diagnostics."""
        self.last_report: PollReport | None = None
        self._failures = 0

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
        for name in ("", FOLLOWER_HEALTH_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._stopping.clear()
        self._task = asyncio.create_task(self._follow(), name="monitor-follower")
        if metrics_served():  # the payout and head gauges (svc_monitor.gauges)
            gauges = MonitorGauges(make_sessionmaker(self._engine), self._w3, self.settings.chain)
            self._gauges = asyncio.create_task(gauges.run(), name="metrics-gauges")
        log.info(
            "monitor serving",
            extra={
                "grpc_port": self.grpc_port,
                "chain": self.settings.chain,
                "poll_seconds": self.settings.poll_seconds,
            },
        )

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            self.rpc_pool.log_health_if_degraded()
            try:
                leader = await loop.run_in_executor(self._executor, self.leadership.hold)
                report = (
                    await loop.run_in_executor(self._executor, self.follower.poll_once)
                    if leader
                    else None
                )
            except LeaseLost:
                report = None  # rolled back; the next poll tries to take the lease again
            except Exception as exc:
                self._failures += 1
                log.exception(
                    "poll failed; retrying",
                    extra={"consecutive_failures": self._failures, "error": str(exc)},
                )
                if self._failures == self.settings.unhealthy_after_failures:
                    await self._set_follower_health(health_pb2.HealthCheckResponse.NOT_SERVING)
            else:
                if self._failures >= self.settings.unhealthy_after_failures:
                    await self._set_follower_health(health_pb2.HealthCheckResponse.SERVING)
                self._failures = 0
                if report is not None:
                    await self._after_poll(report)
            self.polls += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.poll_seconds)

    async def _after_poll(self, report: PollReport) -> None:
        """Publish what the poll committed (only while the lease still runs) and log it."""
        self.last_report = report
        if report.moved and self.leadership.may_act():  # all committed by now
            if any(moved.to_state is State.COMPLETED for moved in report.moved):
                crash_point("monitor.after_complete_before_publish")
            await publish_many(self._redis, self._names, report.moved)
        if report.moved or report.reorged or report.anomalies:
            log.info(
                "poll settled payouts",
                extra={
                    "head": report.head,
                    "mined": report.mined,
                    "reverted": report.reverted,
                    "reorged": report.reorged,
                    "confirmed": report.confirmed,
                    "anomalies": report.anomalies,
                    "moves": len(report.moved),
                    "last_commit": str(self.leadership.last_commit),
                },
            )

    async def _set_follower_health(
        self, status: health_pb2.HealthCheckResponse.ServingStatus
    ) -> None:
        for name in ("", FOLLOWER_HEALTH_NAME):
            await self._health.set(name, status)

    async def stop(self) -> None:
        """Graceful stop: NOT_SERVING, finish the poll in progress, close everything."""
        await self._health.enter_graceful_shutdown()
        self._stopping.set()
        if self._gauges is not None:
            self._gauges.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gauges
            self._gauges = None
        if self._task is not None:
            await self._task
            self._task = None
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self._executor, self.leadership.release
                )
            except Exception as exc:  # the lease then runs out by itself
                log.warning("could not release the monitor lease", extra={"error": repr(exc)})
        if self._grpc is not None:
            await self._grpc.stop(self.settings.shutdown_grace_seconds)
            self._grpc = None
        await self._redis.aclose()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._engine.dispose()


async def serve(settings: MonitorSettings, stop: asyncio.Event) -> None:
    server = MonitorServer(settings)
    await server.start()
    freeze_start_up_objects()
    await stop.wait()
    await server.stop()
