"""The transport-neutral BatchService: what each RPC does, called by the gRPC servicer and
the REST adapters (the transcoder, and the explicit upload route) with an authenticated
`Caller`. Database work runs on the core's thread pool."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import redis.asyncio as aioredis

from assetwithdrawal.withdrawal.v1 import batch_pb2
from svc_gateway.auth import Caller
from svc_gateway.batches.funding import batch_funding
from svc_gateway.batches.problem_log import FIRST_KEPT
from svc_gateway.batches.report import BATCH_PREFIX, batch_to_proto, report_rows
from svc_gateway.batches.rows import Problem
from svc_gateway.batches.spool import Spool
from svc_gateway.batches.storage import REJECTED, BatchStorage, batch_fingerprint
from svc_gateway.errors import BATCH_ROWS_INVALID, DUPLICATE_FILE, IDEMPOTENCY_KEY_REUSED
from svc_gateway.listing import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from svc_gateway.store import WithdrawalStore
from svc_gateway.validation import REQUEST_ID
from withdrawal_shared import queue, tracing
from withdrawal_shared.db.models import Batch
from withdrawal_shared.errors import (
    ApiError,
    FieldViolation,
    invalid_argument,
    not_found,
    quoted,
)
from withdrawal_shared.ids import is_ulid

log = logging.getLogger(__name__)
T = TypeVar("T")

REPORT_PAGE_SIZE = 1000
REPORT_MAX_PAGE_SIZE = 10_000
PROBLEMS_IN_ERROR = FIRST_KEPT
"""Problems a REJECT_ALL refusal lists in its BadRequest; the report has every one."""
POLICIES = {
    batch_pb2.BATCH_POLICY_UNSPECIFIED: "REJECT_ALL",
    batch_pb2.BATCH_POLICY_REJECT_ALL: "REJECT_ALL",
    batch_pb2.BATCH_POLICY_ACCEPT_VALID: "ACCEPT_VALID",
}


def parse_batch_name(name: str, field: str = "name", suffix: str = "") -> str:
    batch_id = name.removeprefix(BATCH_PREFIX).removesuffix(suffix)
    if not name or batch_id == name or not is_ulid(batch_id) or not name.endswith(suffix):
        raise invalid_argument(
            [FieldViolation(field, f"{quoted(name)} is not a batch name (batches/{{id}}{suffix})")]
        )
    return batch_id


def _token(after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"a": after}).encode()).decode().rstrip("=")


def _after(token: str) -> str | None:
    if not token:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode((token + "=" * (-len(token) % 4)).encode()))
        return str(value["a"])
    except (ValueError, KeyError, TypeError):
        raise invalid_argument(
            [FieldViolation("page_token", "is not a token this API returned")]
        ) from None


def rows_invalid(batch: Batch, problems: list[Problem], count: int) -> ApiError:
    name = BATCH_PREFIX + batch.id
    return BATCH_ROWS_INVALID.error(
        f"{batch.problem_row_count} rows of the file have problems, so no withdrawal was "
        "stored (policy REJECT_ALL); fix them and upload again, or use ACCEPT_VALID. The "
        f"report of {name} lists every problem.",
        [
            FieldViolation(f"lines[{p.line}].{p.column or 'row'}", f"{p.reason}: {p.message}")
            for p in problems[:PROBLEMS_IN_ERROR]
        ],
        metadata={"batch": name, "problem_count": str(count)},
    )


class BatchCore:
    def __init__(
        self,
        withdrawals: WithdrawalStore,
        redis: aioredis.Redis,
        names: queue.QueueNames,
        executor: ThreadPoolExecutor,
        *,
        max_rows: int,
        max_bytes: int,
        watch_poll_seconds: float,
    ) -> None:
        self.withdrawals = withdrawals
        self.storage = BatchStorage(withdrawals, max_rows)
        self.redis = redis
        self.names = names
        self.executor = executor
        self.max_bytes = max_bytes
        self.watch_poll_seconds = watch_poll_seconds

    async def _db(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _proto(self, batch: Batch, *, funding: bool = False) -> batch_pb2.Batch:
        """The batch; with `funding` (CreateBatch's answer), whether the vault covers it."""
        states, totals = await self._db(self.storage.summary, batch.id)
        reference = await self._db(self.withdrawals.reference.get)
        funded = []
        if funding:
            funded = await self._db(batch_funding, self.withdrawals.engine, batch.id, totals)
        return batch_to_proto(batch, states, totals, reference, funded)

    # ------------------------------------------------------------------ CreateBatch

    async def create_batch(
        self, caller: Caller, requests: AsyncIterator[batch_pb2.CreateBatchRequest]
    ) -> batch_pb2.Batch:
        first = await anext(aiter(requests), None)
        if first is None or first.WhichOneof("content") != "header":
            raise invalid_argument(
                [FieldViolation("header", "the first message must carry the header")]
            )
        header = first.header
        violations = []
        if not REQUEST_ID.match(header.request_id):
            violations.append(
                FieldViolation(
                    "header.request_id",
                    "is required: 1-128 characters of letters, digits and . _ : -",
                )
            )
        policy = POLICIES.get(header.policy)
        if policy is None:
            violations.append(FieldViolation("header.policy", "is not a known policy"))
        if violations or policy is None:
            raise invalid_argument(violations)
        with Spool(self.max_bytes) as spool:
            async for message in requests:
                if message.WhichOneof("content") != "chunk":
                    raise invalid_argument(
                        [FieldViolation("header", "only the first message may carry it")]
                    )
                spool.write(message.chunk)
            return await self.create_from_spool(
                caller, header.request_id, policy, header.allow_duplicate_content, spool
            )

    async def create_from_spool(
        self, caller: Caller, request_id: str, policy: str, allow_duplicate: bool, spool: Spool
    ) -> batch_pb2.Batch:
        """Both transports' upload, once the file is spooled."""
        existing = await self._db(self.storage.by_request, caller.partner_id, request_id)
        if existing is not None:
            return await self._repeat(existing, request_id, spool.sha256, policy)
        if not allow_duplicate:
            same = await self._db(self.storage.by_content, caller.partner_id, spool.sha256)
            if same is not None:
                raise DUPLICATE_FILE.error(
                    f"This file's content was already uploaded as {BATCH_PREFIX}{same.id}; "
                    "send allow_duplicate_content to upload it again on purpose.",
                    metadata={"batch": BATCH_PREFIX + same.id},
                )
        reference = await self._db(self.withdrawals.reference.get)
        # Every row stores the ingest span's context: its state changes join the upload's
        # trace (NULL with tracing off).
        with tracing.work_span("batch ingest", {"batch.policy": policy}) as span:
            trace_context = tracing.traceparent()
            outcome = await self._db(
                lambda: self.storage.create(
                    caller.partner_id,
                    request_id=request_id,
                    policy=policy,
                    content_sha256=spool.sha256,
                    size=spool.size,
                    created_by=caller.key_prefix,
                    spool=spool.reopen(),
                    reference=reference,
                    trace_context=trace_context,
                )
            )
            if span is not None:
                span.set_attribute("batch.id", outcome.batch.id)
                span.set_attribute("batch.accepted_rows", outcome.batch.accepted_count)
        batch = outcome.batch
        if not outcome.created:
            return await self._repeat(batch, request_id, spool.sha256, policy)
        log.info(
            "batch stored",
            extra={
                "batch_id": batch.id,
                "partner_id": caller.partner_id,
                "state": batch.state,
                "rows": batch.row_count,
                "accepted": batch.accepted_count,
                "problem_rows": batch.problem_row_count,
            },
        )
        if batch.state == REJECTED:
            raise rows_invalid(batch, outcome.problems, outcome.problem_count)
        await queue.enqueue_batch_chunks(self.redis, self.names, batch.id, outcome.ranges)
        return await self._proto(batch, funding=True)

    async def _repeat(
        self, batch: Batch, request_id: str, sha256: str, policy: str
    ) -> batch_pb2.Batch:
        if batch.request_fingerprint != batch_fingerprint(sha256, policy):
            raise IDEMPOTENCY_KEY_REUSED.error(
                f"The idempotency key {request_id!r} was already used for a different batch "
                f"({BATCH_PREFIX}{batch.id}); use a new key for a new file.",
                metadata={"batch": BATCH_PREFIX + batch.id},
            )
        if batch.state == REJECTED:
            problems = await self._db(self.storage.problems_of, batch.id, PROBLEMS_IN_ERROR)
            shown = [
                Problem(p.line, p.column_name, p.reason, p.message, p.client_reference)
                for p in problems
            ]
            raise rows_invalid(batch, shown, batch.problem_row_count)
        return await self._proto(batch, funding=True)

    # ------------------------------------------------------------------ reads

    async def _owned(self, caller: Caller, name: str, suffix: str = "") -> Batch:
        batch_id = parse_batch_name(name, suffix=suffix)
        batch = await self._db(self.storage.get, caller.partner_id, batch_id)
        if batch is None:
            raise not_found(name)
        return batch

    async def get_batch(
        self, caller: Caller, request: batch_pb2.GetBatchRequest
    ) -> batch_pb2.Batch:
        return await self._proto(await self._owned(caller, request.name))

    async def list_batches(
        self, caller: Caller, request: batch_pb2.ListBatchesRequest
    ) -> batch_pb2.ListBatchesResponse:
        if request.page_size < 0:
            raise invalid_argument([FieldViolation("page_size", "must not be negative")])
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _after(request.page_token)
        if after is not None and not is_ulid(after):
            raise invalid_argument(
                [FieldViolation("page_token", "is not a token this API returned")]
            )
        rows = await self._db(self.storage.page, caller.partner_id, after, size + 1)
        response = batch_pb2.ListBatchesResponse(
            batches=[await self._proto(b) for b in rows[:size]]
        )
        if len(rows) > size:
            response.next_page_token = _token(rows[size - 1].id)
        return response

    async def get_batch_report(
        self, caller: Caller, request: batch_pb2.GetBatchReportRequest
    ) -> batch_pb2.BatchReport:
        batch = await self._owned(caller, request.name, "/report")
        if request.page_size < 0:
            raise invalid_argument([FieldViolation("page_size", "must not be negative")])
        size = min(request.page_size or REPORT_PAGE_SIZE, REPORT_MAX_PAGE_SIZE)
        after = _after(request.page_token)
        try:
            after_line = int(after) if after is not None else 0
        except ValueError:
            raise invalid_argument(
                [FieldViolation("page_token", "is not a token this API returned")]
            ) from None
        withdrawals, problems = await self._db(
            self.storage.report_rows, batch.id, after_line, size + 1
        )
        reference = await self._db(self.withdrawals.reference.get)
        rows = report_rows(withdrawals, problems, reference, size + 1)
        report = batch_pb2.BatchReport(name=f"{BATCH_PREFIX}{batch.id}/report", rows=rows[:size])
        if len(rows) > size:
            report.next_page_token = _token(str(rows[size - 1].line))
        return report

    async def cancel_batch(
        self, caller: Caller, request: batch_pb2.CancelBatchRequest
    ) -> batch_pb2.Batch:
        batch = await self._owned(caller, request.name)
        if len(request.reason) > 256:
            raise invalid_argument([FieldViolation("reason", "must be at most 256 characters")])
        ids = await self._db(self.storage.cancellable_ids, batch.id)
        cancelled = 0
        for withdrawal_id in ids:
            try:  # CancelWithdrawal's rules, row by row
                _, moved = await self._db(
                    self.withdrawals.cancel, caller.partner_id, withdrawal_id, request.reason
                )
            except ApiError:
                continue  # placed in a payout meanwhile: it goes on
            if moved is not None:
                cancelled += 1
                await queue.publish(self.redis, self.names, moved)
        log.info("batch cancelled", extra={"batch_id": batch.id, "cancelled": cancelled})
        return await self._proto(batch)

    async def watch_batch(
        self, caller: Caller, request: batch_pb2.WatchBatchRequest
    ) -> AsyncIterator[batch_pb2.Batch]:
        batch = await self._owned(caller, request.name)
        last: batch_pb2.Batch | None = None
        while True:
            current = await self._proto(batch)
            if last is None or list(current.state_counts) != list(last.state_counts):
                yield current
            last = current
            if current.state != batch_pb2.BATCH_STATE_PROCESSING:
                return
            await asyncio.sleep(self.watch_poll_seconds)
