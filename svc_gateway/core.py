"""The transport-neutral core of the gateway: what each WithdrawalService method does.

The gRPC servicer and the REST transcoder are thin adapters over `WithdrawalCore`; both call
it with an authenticated `Caller` and an API request message, and render its `ApiError`s.
Database work runs on a bounded thread pool so the event loop never blocks on it.

CreateWithdrawal is the hot path: concurrent creates share one transaction and one Redis
pipeline (`GroupCommit` over `WithdrawalStore.create_many`), and the reference data is read
from its cache on the event loop while it is fresh, so a create costs no thread hop of its own.
A batch's creates are charged to their keys' rate limits first, with one Redis round trip for
the whole batch (`RateLimiter.admit`); a refused create gets RATE_LIMITED and stores nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import redis.asyncio as aioredis

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from svc_gateway.access import priority_scope_missing
from svc_gateway.auth import Caller
from svc_gateway.batching import GroupCommit
from svc_gateway.convert import RESOURCE_PREFIX, as_of, state_change, to_proto
from svc_gateway.events import EventHub
from svc_gateway.listing import (
    encode_page_token,
    encode_version_token,
    parse_list_request,
    parse_page_size,
    parse_version_token,
)
from svc_gateway.rate_limit import RateLimiter
from svc_gateway.store import ACTOR_PARTNER, Created, WithdrawalStore
from svc_gateway.validation import NewWithdrawal, validate_create
from withdrawal_shared import queue, tracing
from withdrawal_shared.crash_points import crash_point
from withdrawal_shared.db.models import Withdrawal, WithdrawalAudit
from withdrawal_shared.db.reference import ReferenceData
from withdrawal_shared.errors import FieldViolation, invalid_argument, not_found, quoted
from withdrawal_shared.ids import is_ulid
from withdrawal_shared.states import TERMINAL, Priority, State

log = logging.getLogger(__name__)
T = TypeVar("T")
_MINED = frozenset({State.CONFIRMING.value, State.COMPLETED.value})
"""States in which a withdrawal's payout transaction is in a block."""


def parse_name(name: str, field: str = "name") -> str:
    """`withdrawals/{id}` -> id, or INVALID_ARGUMENT naming `field`."""
    if not name:
        raise invalid_argument([FieldViolation(field, "is required: withdrawals/{id}")])
    withdrawal_id = name.removeprefix(RESOURCE_PREFIX)
    if withdrawal_id == name or not is_ulid(withdrawal_id):
        raise invalid_argument(
            [FieldViolation(field, f"{quoted(name)} is not a withdrawal name (withdrawals/{{id}})")]
        )
    return withdrawal_id


class WithdrawalCore:
    def __init__(
        self,
        store: WithdrawalStore,
        redis: aioredis.Redis,
        names: queue.QueueNames,
        hub: EventHub,
        executor: ThreadPoolExecutor,
        watch_poll_seconds: float,
        *,
        create_batch_max: int = 64,
        create_batch_in_flight: int = 2,
        create_batch_wait_seconds: float = 0.0,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.store = store
        self.redis = redis
        self.names = names
        self.hub = hub
        self.executor = executor
        self.watch_poll_seconds = watch_poll_seconds
        self.limiter = limiter
        self._refreshes: set[asyncio.Future[ReferenceData]] = set()  # in flight, kept alive
        self.creates: GroupCommit[tuple[Caller, NewWithdrawal], Created] = GroupCommit(
            self._flush_creates,
            max_batch=create_batch_max,
            max_in_flight=create_batch_in_flight,
            wait_seconds=create_batch_wait_seconds,
        )

    async def _db(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _reference(self) -> ReferenceData:
        """The cached reference data. When it is due, one refresh reads it on a thread while
        the requests go on with the snapshot they have (`ReferenceCache.current`); only a
        snapshot too old to serve, or none, makes a request wait for the read."""
        cache = self.store.reference
        reference = cache.current()
        if reference is None:
            return await self._db(cache.get)
        if cache.claim_refresh():
            refresh = asyncio.ensure_future(self._db(cache.reload))
            self._refreshes.add(refresh)
            refresh.add_done_callback(self._refreshed)
        return reference

    def _refreshed(self, refresh: asyncio.Future[ReferenceData]) -> None:
        self._refreshes.discard(refresh)
        if not refresh.cancelled() and refresh.exception() is not None:
            log.warning(
                "reference data could not be read again; the snapshot is served until it "
                "is too old",
                extra={"error": repr(refresh.exception())},
            )

    async def create_withdrawal(
        self, caller: Caller, request: withdrawal_pb2.CreateWithdrawalRequest
    ) -> withdrawal_pb2.Withdrawal:
        reference = await self._reference()
        new = validate_create(request, reference)
        denied = priority_scope_missing(caller, "CreateWithdrawal", new.priority)
        if denied is not None:
            raise denied
        if new.priority is Priority.EMERGENCY:
            new = dataclasses.replace(new, key_prefix=caller.key_prefix)  # for its audit row
        if tracing.enabled():  # the withdrawal keeps this request's span as its context
            new = dataclasses.replace(new, trace_context=tracing.traceparent())
        row, moved = await self.creates.submit((caller, new))
        if moved is not None:
            tracing.record_moves([moved], ACTOR_PARTNER + caller.partner_id)
            log.info(
                "withdrawal created",
                extra={"withdrawal_id": row.id, "partner_id": caller.partner_id},
            )
            crash_point("gateway.after_enqueue_before_reply")
        return to_proto(row, reference)

    async def _flush_creates(
        self, items: Sequence[tuple[Caller, NewWithdrawal]]
    ) -> list[Created | Exception]:
        """The batch's rate-limit charge (one Redis round trip; refused items are answered
        RATE_LIMITED and not stored), one transaction for the admitted items, then one Redis
        pipeline for the tasks and events of the withdrawals it created (if Redis is down they
        are still accepted: the processor's sweeper enqueues what the queue never received)."""
        refusals: Sequence[Exception | None] = [None] * len(items)
        if self.limiter is not None:
            refusals = await self.limiter.admit([caller.rate_limit for caller, _ in items])
        admitted = [
            (caller.partner_id, new)
            for (caller, new), refusal in zip(items, refusals, strict=True)
            if refusal is None
        ]
        with tracing.batch_span(
            "gateway group commit",
            [new.trace_context for _, new in admitted] if tracing.enabled() else (),
            {"withdrawals": len(admitted)},
        ):
            with tracing.span("db insert withdrawals"):
                stored = iter(await self._db(self.store.create_many, admitted) if admitted else ())
            outcomes = [next(stored) if refusal is None else refusal for refusal in refusals]
            created = [
                (outcome[1], Priority(outcome[0].priority))  # as stored: the tier may have set it
                for outcome in outcomes
                if not isinstance(outcome, Exception) and outcome[1] is not None
            ]
            if created:
                crash_point("gateway.after_insert_before_enqueue")
                with tracing.span("redis enqueue tasks"):
                    await queue.enqueue_created(self.redis, self.names, created)
        return outcomes

    async def stop(self) -> None:
        """Finish the creates in flight (after the servers stopped taking requests)."""
        await self.creates.stop()

    async def get_withdrawal(
        self, caller: Caller, request: withdrawal_pb2.GetWithdrawalRequest
    ) -> withdrawal_pb2.Withdrawal:
        withdrawal_id = parse_name(request.name)

        def fetch() -> tuple[Withdrawal | None, dict[str, int]]:
            row = self.store.get(caller.partner_id, withdrawal_id)
            return row, self._blocks([row] if row is not None else [])

        row, blocks = await self._db(fetch)
        if row is None:
            raise not_found(request.name)
        return to_proto(row, await self._reference(), blocks.get(row.payout_tx_id or "", 0))

    def _events_after(
        self, partner_id: str, withdrawal_id: str, version: int
    ) -> tuple[Withdrawal | None, Sequence[WithdrawalAudit], int]:
        """`store.events_after`, and the block of the payout when an event is its COMPLETED."""
        current, audits = self.store.events_after(partner_id, withdrawal_id, version)
        completed = any(audit.to_state == State.COMPLETED.value for audit in audits)
        if current is None or not completed:
            return current, audits, 0
        return current, audits, self._blocks([current]).get(current.payout_tx_id or "", 0)

    def _blocks(self, rows: Sequence[Withdrawal]) -> dict[str, int]:
        """The mined block of each row's payout transaction, for rows that have been mined."""
        return self.store.block_numbers(
            row.payout_tx_id
            for row in rows
            if row.payout_tx_id and row.tx_hash and row.state in _MINED
        )

    async def list_withdrawals(
        self, caller: Caller, request: withdrawal_pb2.ListWithdrawalsRequest
    ) -> withdrawal_pb2.ListWithdrawalsResponse:
        query = parse_list_request(request.page_size, request.page_token, request.filter)

        def fetch() -> list[withdrawal_pb2.Withdrawal]:
            reference = self.store.reference.get()
            rows = self.store.list(
                caller.partner_id,
                selection=query.filter,
                reference=reference,
                after_id=query.after_id,
                limit=query.page_size + 1,
            )
            blocks = self._blocks(rows)
            return [to_proto(row, reference, blocks.get(row.payout_tx_id or "", 0)) for row in rows]

        items = await self._db(fetch)
        response = withdrawal_pb2.ListWithdrawalsResponse(withdrawals=items[: query.page_size])
        if len(items) > query.page_size:
            last = items[query.page_size - 1].name.removeprefix(RESOURCE_PREFIX)
            response.next_page_token = encode_page_token(last, request.filter)
        return response

    async def list_state_changes(
        self, caller: Caller, request: withdrawal_pb2.ListStateChangesRequest
    ) -> withdrawal_pb2.ListStateChangesResponse:
        withdrawal_id = parse_name(request.parent, "parent")
        size = parse_page_size(request.page_size)
        after = 0
        if request.page_token:
            after = parse_version_token(request.page_token, withdrawal_id)
        audits = await self._db(
            self.store.state_changes, caller.partner_id, withdrawal_id, after, size + 1
        )
        if audits is None:
            raise not_found(request.parent)
        response = withdrawal_pb2.ListStateChangesResponse(
            state_changes=[state_change(withdrawal_id, audit) for audit in audits[:size]]
        )
        if len(audits) > size:
            response.next_page_token = encode_version_token(audits[size - 1].version, withdrawal_id)
        return response

    async def cancel_withdrawal(
        self, caller: Caller, request: withdrawal_pb2.CancelWithdrawalRequest
    ) -> withdrawal_pb2.Withdrawal:
        withdrawal_id = parse_name(request.name)
        if len(request.reason) > 256:
            raise invalid_argument([FieldViolation("reason", "must be at most 256 characters")])
        row, moved = await self._db(
            self.store.cancel, caller.partner_id, withdrawal_id, request.reason
        )
        if row is None:
            raise not_found(request.name)
        if moved is not None:
            await queue.publish(self.redis, self.names, moved)
        return to_proto(row, await self._reference())

    async def watch_withdrawal(
        self, caller: Caller, request: withdrawal_pb2.WatchWithdrawalRequest
    ) -> AsyncIterator[withdrawal_pb2.WatchWithdrawalResponse]:
        withdrawal_id = parse_name(request.name)
        if request.HasField("resume_after_version") and request.resume_after_version < 0:
            raise invalid_argument([FieldViolation("resume_after_version", "must not be negative")])
        async with self.hub.subscribe(withdrawal_id) as subscription:
            row = await self._db(self.store.get, caller.partner_id, withdrawal_id)
            if row is None:
                raise not_found(request.name)
            if request.HasField("resume_after_version"):
                last_version = request.resume_after_version
            else:
                reference = await self._reference()
                blocks = await self._db(self._blocks, [row])
                yield withdrawal_pb2.WatchWithdrawalResponse(
                    event_type=withdrawal_pb2.EVENT_TYPE_SNAPSHOT,
                    withdrawal=to_proto(row, reference, blocks.get(row.payout_tx_id or "", 0)),
                )
                last_version = row.version
            while True:
                current, audits, block = await self._db(
                    self._events_after, caller.partner_id, withdrawal_id, last_version
                )
                if current is None:
                    return
                reference = await self._reference()
                for audit in audits:
                    event = as_of(current, audit, reference)
                    if audit.to_state == State.COMPLETED.value:
                        event.block_number = block  # final at the confirmation depth
                    yield withdrawal_pb2.WatchWithdrawalResponse(
                        event_type=withdrawal_pb2.EVENT_TYPE_REORGED
                        if audit.reorged
                        else withdrawal_pb2.EVENT_TYPE_STATE_CHANGED,
                        withdrawal=event,
                        previous_state=withdrawal_pb2.State.Value(f"STATE_{audit.from_state}")
                        if audit.from_state
                        else withdrawal_pb2.STATE_UNSPECIFIED,
                    )
                    last_version = audit.version
                if State(current.state) in TERMINAL and last_version >= current.version:
                    return
                await subscription.wait(self.watch_poll_seconds)
