"""Builds and runs the processor: the task consumer, the batcher (closes and pays payout
batches), the treasury executor (runs applied treasury operations through the treasury Safe,
`svc_processor.treasury`; only with PROCESSOR_SAFE_OWNER_SIGNERS set, and after it the
hot-wallet key rotations, `svc_processor.rotation`), the sweeper (re-drives
stalled work, finishes reserved and signed payouts, rejects withdrawals left undecided for
approval past PROCESSOR_APPROVAL_EXPIRY_SECONDS), and a gRPC health endpoint, in one event
loop.

The pipeline's work runs on two worker threads: one for the tasks (a batch of new tasks is
validated together in one transaction, `Pipeline.process_many`; dead letters; the sweeper's
re-drives) and one for the payouts (the batcher, the sweeper finishing reserved and signed
payouts, and the treasury executor), so that validating new withdrawals never waits behind a
payout's calls to the signer and the chain. The two meet only in the database, which
arbitrates exactly as it does between several processor processes running side by side
(compare-and-set on every move). Events are published after each commit in one pipelined
round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from svc_processor.batch_chunks import received_in_chunk
from svc_processor.consumer import DeadLetter, TaskConsumer
from svc_processor.errors import TransientError
from svc_processor.gauges import ProcessorGauges
from svc_processor.partitions import Partitions
from svc_processor.payouts import ACTOR
from svc_processor.pipeline import BatchSettings, Pipeline
from svc_processor.rotation import RotationDriver
from svc_processor.settings import ProcessorSettings
from svc_processor.signer_client import SignerClient
from svc_processor.treasury import TreasuryExecutor
from withdrawal_shared import queue, tracing
from withdrawal_shared.approvals import core as approvals
from withdrawal_shared.chain.rpc_pool import PoolProvider, RpcPool
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.leases import replica_name
from withdrawal_shared.db.models import Withdrawal
from withdrawal_shared.db.transitions import Moved, TransitionConflict, move
from withdrawal_shared.holds import HoldReason
from withdrawal_shared.metrics import metrics_served
from withdrawal_shared.runtime import freeze_start_up_objects
from withdrawal_shared.states import PRIORITIES, TERMINAL, State
from withdrawal_shared.store_tls import redis_client

log = logging.getLogger(__name__)

SERVICE_NAME = "assetwithdrawal.processor"
SWEEP_BATCH = 500  # stalled withdrawals re-driven together (one validating transaction)
# Signed or later: the sweeper and the monitor own these; a dead letter never touches them.
PAST_SIGNING = frozenset({State.SIGNED, State.BROADCAST, State.CONFIRMING})


def hold_dead_lettered(sessions: sessionmaker[Session], letter: DeadLetter) -> list[Moved]:
    """Put a dead-lettered task's withdrawal ON_HOLD (reason DEAD_LETTERED) for an operator.

    Idempotent: a withdrawal already held for this reason is left alone. Only withdrawals not
    yet in a payout are held; terminal, signed or later ones, ones a reserved payout already
    holds, and ones ON_HOLD for another reason are only logged (the sweeper, the monitor or
    that hold own them). Retries a concurrent move (compare-and-set) a few times.
    """
    message = HoldReason.DEAD_LETTERED.state_message(
        f"Task message {letter.message_id} of {letter.stream}, {letter.deliveries} "
        f"deliveries; last error: {letter.error}"
    )
    for _ in range(3):
        try:
            return _hold_once(sessions, letter.withdrawal_id, message)
        except TransitionConflict:
            continue
    raise TransientError(f"withdrawal {letter.withdrawal_id} kept moving; hold not written")


def _hold_once(sessions: sessionmaker[Session], withdrawal_id: str, message: str) -> list[Moved]:
    with sessions.begin() as session:
        row = session.get(Withdrawal, withdrawal_id)
        if row is None:
            log.warning(
                "dead letter for an unknown withdrawal", extra={"withdrawal_id": withdrawal_id}
            )
            return []
        state = State(row.state)
        if state == State.ON_HOLD and row.state_reason == HoldReason.DEAD_LETTERED:
            return []  # held already (a dead letter written twice after a crash)
        if (
            state in TERMINAL
            or state in PAST_SIGNING
            or state == State.ON_HOLD
            or row.payout_tx_id is not None
        ):
            log.error(
                "dead-lettered task's withdrawal left in its state (it is owned elsewhere)",
                extra={
                    "withdrawal_id": row.id,
                    "state": state.value,
                    "state_reason": row.state_reason,
                    "payout_tx_id": row.payout_tx_id,
                },
            )
            return []
        return [
            move(
                session,
                row,
                State.ON_HOLD,
                actor=ACTOR,
                reason=HoldReason.DEAD_LETTERED,
                message=message,
            )
        ]


class ProcessorServer:
    def __init__(self, settings: ProcessorSettings) -> None:
        self.settings = settings
        self.grpc_port = 0
        self._engine = make_engine(
            settings.database_url,
            pool_size=4,
            tls=settings.database_tls,
            session_nice=settings.database_session_nice,
        )
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="pipeline")
        self._payer = ThreadPoolExecutor(1, thread_name_prefix="payouts")
        # Signed payouts are sent from here, in the order they were signed (one thread: a
        # wallet's nonces go out in order), while the payer plans and signs the next one.
        self._broadcaster = ThreadPoolExecutor(1, thread_name_prefix="broadcasts")
        self._broadcasts: set[asyncio.Task[list[Moved]]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._redis = redis_client(
            settings.redis_url,
            tls_ca=settings.redis_tls_ca,
            socket_connect_timeout=1.0,
            socket_timeout=5.0,
        )
        self._names = queue.QueueNames(settings.redis_prefix)
        self._signer = SignerClient(
            settings.signer_target, settings.signer_timeout_seconds, settings.signer_tls
        )
        # Every CHAIN_RPC_URL provider, with failover; broadcasts go to all healthy ones.
        self.rpc_pool = RpcPool(settings.chain_rpc_urls, request_timeout=10.0)
        w3 = Web3(PoolProvider(self.rpc_pool))
        self.pipeline = Pipeline(
            make_sessionmaker(self._engine),
            w3,
            self._signer,
            settings.chain,
            BatchSettings(
                max_items=settings.batch_max_items,
                max_wait_seconds=settings.batch_max_wait_seconds,
                gas_budget=settings.batch_gas_budget,
                max_in_flight_per_wallet=settings.max_in_flight_per_wallet,
                gas_margin_pct=settings.gas_margin_pct,
                stuck_after_blocks=settings.stuck_after_blocks,
                replacement_bump_pct=settings.replacement_bump_pct,
                emergency_stuck_after_blocks=settings.emergency_stuck_after_blocks,
                urgent_streak_max=settings.urgent_streak_max,
            ),
            manual_approval=settings.manual_approval,
            partitions=Partitions(
                make_sessionmaker(self._engine),
                settings.chain,
                settings.partitions,
                settings.replica,
                settings.partition_lease_seconds,
                holder=replica_name(),
            )
            if settings.partitions > 1
            else None,
        )
        self._owner_signers = [
            SignerClient(target, settings.signer_timeout_seconds, settings.signer_tls)
            for target in settings.safe_owner_signers
        ]
        self.treasury = TreasuryExecutor(
            self.pipeline.sessions,
            w3,
            self.pipeline,
            self._owner_signers,
            settings.chain,
            settings.gas_margin_pct,
        )
        # hot-wallet key rotations (svc_processor.rotation), run after the treasury executor
        self.rotations = RotationDriver(self.pipeline.sessions, w3, self._signer, settings.chain)
        self._health = health.aio.HealthServicer()
        self._grpc: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.consumer: TaskConsumer | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.pipeline.broadcast_later = self._broadcast_later
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection((health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        self.grpc_port = server.add_insecure_port(
            f"{self.settings.grpc_host}:{self.settings.grpc_port}"
        )
        await server.start()
        self._grpc = server
        consumer = TaskConsumer(
            self._redis,
            self._names,
            self.settings.consumer_group,
            self.settings.consumer_name,
            self.handle,
            self.settings.claim_idle_seconds,
            claim_interval_seconds=self.settings.claim_interval_seconds,
            max_deliveries=self.settings.max_deliveries,
            on_dead_letter=self.dead_lettered,
            handle_batch=self.handle_batch,
            read_linger_seconds=self.settings.read_linger_seconds,
            handle_chunk=self.handle_chunk,
        )
        self.consumer = consumer
        self._tasks = [
            asyncio.create_task(consumer.run(), name="consumer"),
            asyncio.create_task(self._sweep_forever(), name="sweeper"),
            asyncio.create_task(self._batch_forever(), name="batcher"),
        ]
        if self._owner_signers:
            self._tasks.append(asyncio.create_task(self._treasury_forever(), name="treasury"))
        if metrics_served():  # the queue, withdrawal and wallet gauges (svc_processor.gauges)
            gauges = ProcessorGauges(
                self.pipeline.sessions,
                self._redis,
                [self._names.tasks(p) for p in PRIORITIES],
                self._names.dead_letters,
                self.settings.consumer_group,
                self.pipeline.reads,
                self.settings.chain,
            )
            self._tasks.append(asyncio.create_task(gauges.run(), name="metrics-gauges"))
        for name in (SERVICE_NAME, ""):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("processor running", extra={"grpc_port": self.grpc_port})

    async def _run(
        self, fn: object, *args: object, executor: ThreadPoolExecutor | None = None
    ) -> list[Moved]:
        loop = asyncio.get_running_loop()
        moved: list[Moved] = await loop.run_in_executor(
            executor or self._executor,
            tracing.run_in_context(fn, *args),  # type: ignore[arg-type]
        )
        if moved:
            await queue.publish_many(self._redis, self._names, moved)
        return moved

    def _broadcast_later(self, payout_id: str) -> None:
        """Called on the payer's thread once a payout is signed and stored: its broadcast
        goes to the broadcaster's queue (a crash before it is sent leaves it SIGNED, and
        `resume_payouts` sends it at the next start or sweep, leaving alone the payouts in
        `broadcasts_queued` until their broadcast ends)."""
        assert self._loop is not None
        self.pipeline.broadcasts_queued.add(payout_id)
        self._loop.call_soon_threadsafe(self._spawn_broadcast, payout_id)

    def _spawn_broadcast(self, payout_id: str) -> None:
        task = asyncio.create_task(self._broadcast(payout_id), name="broadcast")
        self._broadcasts.add(task)
        task.add_done_callback(self._broadcasts.discard)

    async def _broadcast(self, payout_id: str) -> list[Moved]:
        try:
            return await self._run(
                self.pipeline.payouts.broadcast, payout_id, executor=self._broadcaster
            )
        except asyncio.CancelledError:
            raise
        except Exception:  # left SIGNED: the sweeper's `resume_payouts` sends it again
            log.exception(
                "broadcast failed; the sweeper sends it again", extra={"payout_tx_id": payout_id}
            )
            return []
        finally:
            self.pipeline.broadcasts_queued.discard(payout_id)

    async def handle(self, withdrawal_id: str) -> None:
        """Process one task (raises TransientError to leave it unacknowledged)."""
        await self._run(self.pipeline.process, withdrawal_id)

    async def handle_batch(self, withdrawal_ids: list[str]) -> None:
        """Process a batch of tasks together (one validating transaction for all)."""
        await self._run(self.pipeline.process_many, withdrawal_ids)

    async def handle_chunk(self, batch_id: str, first_line: int, last_line: int) -> None:
        """A batch chunk's task: its withdrawals still RECEIVED, `handle_batch`'s way, a
        `SWEEP_BATCH` at a time (rows already past RECEIVED are left alone: redelivery is
        harmless)."""
        loop = asyncio.get_running_loop()
        ids = await loop.run_in_executor(
            self._executor,
            received_in_chunk,
            self.pipeline.sessions,
            batch_id,
            first_line,
            last_line,
        )
        for start in range(0, len(ids), SWEEP_BATCH):
            await self.handle_batch(ids[start : start + SWEEP_BATCH])

    async def dead_lettered(self, letter: DeadLetter) -> None:
        """The consumer gave up on a task: hold its withdrawal for an operator (on the
        pipeline's thread, so it never races this process's own processing of it)."""
        await self._run(hold_dead_lettered, self.pipeline.sessions, letter)

    async def _batch_forever(self) -> None:
        while True:
            signed = False
            try:
                moved = await self._run(self.pipeline.run_batches, executor=self._payer)
                signed = any(m.to_state == State.SIGNED for m in moved)
            except asyncio.CancelledError:
                raise
            except TransientError as exc:
                log.warning("batching paused by a transient failure", extra={"error": str(exc)})
            except Exception:
                log.exception("batching failed; retrying")
            # A round that signed a payout looks again at once: behind a backlog the next
            # batch is already full, and the poll's pause would cap payouts per second.
            await asyncio.sleep(0 if signed else self.settings.batch_poll_seconds)

    async def _treasury_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(
                    self._payer, tracing.run_in_context(self.treasury.run_once)
                )
                await loop.run_in_executor(
                    self._payer, tracing.run_in_context(self.rotations.run_once)
                )
            except asyncio.CancelledError:
                raise
            except TransientError as exc:
                log.warning(
                    "treasury executor paused by a transient failure", extra={"error": str(exc)}
                )
            except Exception:
                log.exception("treasury executor failed; retrying")
            await asyncio.sleep(self.settings.treasury_poll_seconds)

    async def sweep_once(self) -> None:
        await self._run(self.pipeline.resume_payouts, executor=self._payer)
        await self._run(
            functools.partial(approvals.expire_pending, actor=ACTOR),
            self.pipeline.sessions,
            self.settings.approval_expiry_seconds,
        )
        loop = asyncio.get_running_loop()
        stalled = await loop.run_in_executor(
            self._executor, self.pipeline.stalled, self.settings.sweep_age_seconds
        )
        for start in range(0, len(stalled), SWEEP_BATCH):
            with contextlib.suppress(TransientError):
                await self.handle_batch(stalled[start : start + SWEEP_BATCH])

    async def _sweep_forever(self) -> None:
        while True:
            self.rpc_pool.log_health_if_degraded()
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except TransientError as exc:  # the signer or the chain is away (e.g. restarting)
                log.warning("sweep paused by a transient failure", extra={"error": str(exc)})
            except Exception:
                log.exception("sweep failed; retrying at the next interval")
            await asyncio.sleep(self.settings.sweep_interval_seconds)

    async def stop(self) -> None:
        await self._health.enter_graceful_shutdown()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for broadcast in list(self._broadcasts):
            broadcast.cancel()
        if self._grpc is not None:
            await self._grpc.stop(5)
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._payer.shutdown(wait=True, cancel_futures=True)
        self._broadcaster.shutdown(wait=True, cancel_futures=True)
        self._signer.close()
        for owner_signer in self._owner_signers:
            owner_signer.close()
        await self._redis.aclose()
        self._engine.dispose()


async def serve(settings: ProcessorSettings, stop: asyncio.Event) -> None:
    server = ProcessorServer(settings)
    await server.start()
    freeze_start_up_objects()
    await stop.wait()
    await server.stop()
