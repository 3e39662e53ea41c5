"""A CSV batch on the real pipeline (MariaDB, Redis, anvil, the keystore signer, the
PayoutVault), judged from the chain: a file of `ROWS` rows with about 1 % bad rows of every
kind under REJECT_ALL stores nothing and reports every bad row; the same file under
ACCEPT_VALID (uploaded twice with one request_id: one batch) pays every good row exactly once
and reports exactly the bad rows, at their lines, with their reasons.

`ROWS` is 1,000 in `make test`; `BATCH_E2E_ROWS=10000` (or `make e2e-batches`) runs the same
test on a larger file."""

from __future__ import annotations

import csv
import io
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest
import redis
from sqlalchemy import func, select
from web3 import Web3

from assetwithdrawal.events.v1 import events_pb2
from assetwithdrawal.withdrawal.v1 import batch_pb2, batch_pb2_grpc, withdrawal_pb2
from devstack.exactly_once import Submitted, check_exactly_once
from devstack.vault import set_outflow_cap
from svc_gateway.batches.storage import TASK_ROWS
from tests.support.databases import mariadb_database
from tests.support.gateway import Partner
from tests.support.pipeline import Pipeline, running_pipeline, wait_until
from tests.support.requests import create_request, fresh_address, rich_error
from tests.support.signers import keystore_signer
from withdrawal_shared import queue
from withdrawal_shared.amounts import format_amount
from withdrawal_shared.chain.payout import is_paid
from withdrawal_shared.chain.types import BaseUnits
from withdrawal_shared.db.api_keys import issue_api_key
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import PayoutItem, VaultFunds, Withdrawal
from withdrawal_shared.scopes import Scope
from withdrawal_shared.states import Priority

ROWS = int(os.environ.get("BATCH_E2E_ROWS", "1000"))
"""Rows of the file (1,000 in `make test`)."""
BAD_KINDS = (
    "bad_checksum",
    "too_many_decimals",
    "zero",
    "unknown_token",
    "duplicate_in_file",
    "duplicate_of_single",
)
EXPECTED = {
    "bad_checksum": ("recipient_address", "INVALID_ADDRESS"),
    "too_many_decimals": ("amount", "INVALID_AMOUNT"),
    "zero": ("amount", "INVALID_AMOUNT"),
    "unknown_token": ("token", "UNKNOWN_TOKEN"),
    "duplicate_in_file": ("client_reference", "CLIENT_REFERENCE_REUSED"),
    "duplicate_of_single": ("client_reference", "CLIENT_REFERENCE_REUSED"),
}
BAD_EVERY = min(100, ROWS // len(BAD_KINDS))
"""One row in BAD_EVERY is bad (about 1 %; more in a file under 600 rows)."""
HEADER = ("client_reference", "amount", "recipient_address", "token")  # not the usual order
SETTLE_SECONDS = 120 + ROWS * 0.06
"""How long the accepted rows may take to be COMPLETED (scaled with the file)."""

SWEEP_AGE_SECONDS = 3600.0

pytestmark = pytest.mark.chain


@pytest.fixture(scope="module")
def pipeline(
    redis_url: str, module_redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    """The pipeline paying through the PayoutVault, in payouts of at most 300 that close
    after 1 s (the processor's defaults). The sweeper re-drives nothing younger than an
    hour: the rows move only because the processor expanded the batch's chunk tasks."""
    with (
        mariadb_database() as url,
        keystore_signer(url, tmp_path_factory.mktemp("keystore")) as target,
        running_pipeline(
            url,
            redis_url,
            module_redis_prefix,
            target,
            payout_vault=True,
            batch_max_items=300,
            batch_max_wait_seconds=1.0,
            sweep_age_seconds=SWEEP_AGE_SECONDS,
        ) as running,
    ):
        yield running


@pytest.fixture(scope="module")
def partner(pipeline: Pipeline) -> Partner:
    """The pipeline's partner with a key that may create batches."""
    partner_id = pipeline.partner.id
    with pipeline.gateway.server.store.sessions.begin() as session:
        key = issue_api_key(
            session,
            partner_id,
            {Scope.WITHDRAWALS_READ, Scope.WITHDRAWALS_CREATE, Scope.BATCHES_CREATE},
        )
    return Partner(partner_id, key)


def _bad_checksum(address: str) -> str:
    """`address` in EIP-55 form with the case of one letter flipped."""
    checksummed = Web3.to_checksum_address(address)
    for i in range(2, len(checksummed)):
        if checksummed[i].isalpha():
            return checksummed[:i] + checksummed[i].swapcase() + checksummed[i + 1 :]
    raise AssertionError(f"{address} has no letter")  # pragma: no cover


def _letter_address() -> str:
    while True:
        address = fresh_address()
        if any(c.isalpha() for c in address[2:]):
            return address


@dataclass
class Plan:
    content: bytes
    good: dict[int, Submitted] = field(default_factory=dict)  # line -> row (id filled later)
    bad: dict[int, tuple[str, str]] = field(default_factory=dict)  # line -> (column, reason)
    bad_recipients: list[str] = field(default_factory=list)
    singles: list[Submitted] = field(default_factory=list)
    rejected: grpc.RpcError | None = None


def pipeline_redis_url(pipeline: Pipeline) -> str:
    return pipeline.gateway.server.settings.redis_url


def _upload(
    pipeline: Pipeline,
    partner: Partner,
    content: bytes,
    request_id: str,
    policy: batch_pb2.BatchPolicy.ValueType,
) -> batch_pb2.Batch:
    stub = batch_pb2_grpc.BatchServiceStub(pipeline.gateway.channel)
    chunk = 64 * 1024
    messages = [
        batch_pb2.CreateBatchRequest(
            header=batch_pb2.CreateBatchHeader(request_id=request_id, policy=policy)
        ),
        *(
            batch_pb2.CreateBatchRequest(chunk=content[i : i + chunk])
            for i in range(0, len(content), chunk)
        ),
    ]
    return stub.CreateBatch(iter(messages), metadata=partner.metadata, timeout=120)


def _report(pipeline: Pipeline, partner: Partner, name: str) -> list[batch_pb2.BatchReportRow]:
    stub = batch_pb2_grpc.BatchServiceStub(pipeline.gateway.channel)
    rows: list[batch_pb2.BatchReportRow] = []
    token = ""
    while True:
        page = stub.GetBatchReport(
            batch_pb2.GetBatchReportRequest(
                name=name + "/report", page_size=1000, page_token=token
            ),
            metadata=partner.metadata,
        )
        rows += page.rows
        token = page.next_page_token
        if not token:
            return rows


def _problems(rows: list[batch_pb2.BatchReportRow]) -> dict[int, list[tuple[str, str]]]:
    return {r.line: [(p.column, p.reason) for p in r.problems] for r in rows if r.problems}


@pytest.fixture(scope="module")
def plan(pipeline: Pipeline, partner: Partner) -> Plan:
    """Single withdrawals whose client references some rows repeat, the file, and its
    REJECT_ALL upload (first, while no row's reference is taken yet)."""
    bad_rows = [i for i in range(ROWS) if i % BAD_EVERY == BAD_EVERY // 2]
    kinds = {i: BAD_KINDS[n % len(BAD_KINDS)] for n, i in enumerate(bad_rows)}
    assert set(kinds.values()) == set(BAD_KINDS), "too few rows for every kind of problem"
    tag = uuid.uuid4().hex[:6]
    singles: list[Submitted] = []
    for n in range(list(kinds.values()).count("duplicate_of_single")):
        recipient = fresh_address()
        created = pipeline.gateway.stub.CreateWithdrawal(
            create_request(
                amount="2.25", recipient=recipient, client_reference=f"single-{tag}-{n}"
            ),
            metadata=partner.metadata,
        )
        singles.append(Submitted(created.name.split("/")[1], recipient, 2_250_000))
    result = Plan(b"", singles=singles)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(HEADER)
    references: dict[int, str] = {}
    single_numbers = iter(range(len(singles)))
    for i in range(ROWS):
        line = i + 2  # the header is line 1; no field spans lines
        recipient = fresh_address()
        units = 1_000_000 + i * 1_001  # 1.000000, 1.001001, 1.002002, ...
        amount = format_amount(units, 6)
        # Every 7th reference holds a comma, so csv quotes it (RFC 4180).
        reference = f"inv-{tag}-{i}" if i % 7 else f"inv,{tag},{i}"
        token = "USDC"
        kind = kinds.get(i)
        if kind is None:
            result.good[line] = Submitted("", recipient.lower(), units)
        else:
            if kind == "bad_checksum":
                recipient = _bad_checksum(_letter_address())
            elif kind == "too_many_decimals":
                amount = "1.1234567"
            elif kind == "zero":
                amount = "0"
            elif kind == "unknown_token":
                token = "XYZ"
            elif kind == "duplicate_in_file":
                reference = references[line - 1]  # the good row just before
            else:
                reference = f"single-{tag}-{next(single_numbers)}"
            result.bad[line] = EXPECTED[kind]
            result.bad_recipients.append(recipient)
        references[line] = reference
        writer.writerow((reference, amount, recipient, token))
    result.content = out.getvalue().encode()
    try:
        _upload(
            pipeline, partner, result.content, f"reject-{tag}", batch_pb2.BATCH_POLICY_REJECT_ALL
        )
    except grpc.RpcError as exc:
        result.rejected = exc
    return result


def test_reject_all_stores_no_withdrawal_and_reports_every_bad_row(
    pipeline: Pipeline, partner: Partner, plan: Plan
) -> None:
    assert plan.rejected is not None, "REJECT_ALL accepted a file with bad rows"
    code, info, fields = rich_error(plan.rejected)
    assert (code, info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "BATCH_ROWS_INVALID")
    assert info.metadata["problem_count"] == str(len(plan.bad))
    first = sorted(plan.bad)[:20]
    assert fields == [f"lines[{line}].{plan.bad[line][0]}" for line in first]
    name = info.metadata["batch"]
    stub = batch_pb2_grpc.BatchServiceStub(pipeline.gateway.channel)
    batch = stub.GetBatch(batch_pb2.GetBatchRequest(name=name), metadata=partner.metadata)
    assert batch.state == batch_pb2.BATCH_STATE_REJECTED
    assert (batch.row_count, batch.accepted_count, batch.problem_row_count) == (
        ROWS,
        0,
        len(plan.bad),
    )
    assert list(batch.state_counts) == []
    rows = _report(pipeline, partner, name)
    assert _problems(rows) == {line: [problem] for line, problem in plan.bad.items()}
    assert not any(r.withdrawal for r in rows)
    engine = make_engine(pipeline.database_url, pool_size=1)
    try:
        with make_sessionmaker(engine)() as session:
            stored = session.scalar(
                select(func.count())
                .select_from(Withdrawal)
                .where(Withdrawal.batch_id == name.split("/")[1])
            )
    finally:
        engine.dispose()
    assert stored == 0


def test_accept_valid_pays_every_good_row_exactly_once(
    pipeline: Pipeline, partner: Partner, plan: Plan
) -> None:
    started = time.monotonic()
    request_id = f"accept-{uuid.uuid4().hex[:8]}"
    policy = batch_pb2.BATCH_POLICY_ACCEPT_VALID
    batch = _upload(pipeline, partner, plan.content, request_id, policy)
    uploaded = time.monotonic() - started
    assert (batch.row_count, batch.accepted_count, batch.problem_row_count) == (
        ROWS,
        len(plan.good),
        len(plan.bad),
    )
    total = sum(s.amount for s in plan.good.values())
    assert [(t.token, t.amount, t.count) for t in batch.token_totals] == [
        ("USDC", format_amount(total, 6), len(plan.good))
    ]
    # The same file under the same request_id is the same batch, not a second one.
    assert _upload(pipeline, partner, plan.content, request_id, policy).name == batch.name
    stub = batch_pb2_grpc.BatchServiceStub(pipeline.gateway.channel)
    listed = stub.ListBatches(batch_pb2.ListBatchesRequest(), metadata=partner.metadata)
    assert [b.name for b in listed.batches if b.policy == policy] == [batch.name]

    # WatchBatch reports the counts as they change until every row is terminal.
    seen: list[batch_pb2.Batch] = []
    for update in stub.WatchBatch(
        batch_pb2.WatchBatchRequest(name=batch.name),
        metadata=partner.metadata,
        timeout=SETTLE_SECONDS,
    ):
        assert sum(c.count for c in update.state_counts) == len(plan.good)
        seen.append(update)
    settled = time.monotonic() - started
    assert seen[-1].state == batch_pb2.BATCH_STATE_DONE
    assert [(c.state, c.count) for c in seen[-1].state_counts] == [
        (withdrawal_pb2.STATE_COMPLETED, len(plan.good))
    ]
    assert all(u.state == batch_pb2.BATCH_STATE_PROCESSING for u in seen[:-1])

    # One task per 500 stored lines, each acknowledged (the sweeper re-drove nothing).
    client = redis.Redis.from_url(pipeline_redis_url(pipeline))
    try:
        stream = queue.QueueNames(pipeline.redis_prefix).tasks(Priority.STANDARD)
        chunks = []
        for _, fields in client.xrange(stream):
            task = events_pb2.WithdrawalTask.FromString(fields[b"task"])
            if task.batch_chunk.batch_id == batch.name.split("/")[1]:
                chunks.append((task.batch_chunk.first_line, task.batch_chunk.last_line))
        pending = sum(int(g["pending"]) for g in client.xinfo_groups(stream))
    finally:
        client.close()
    good_lines = sorted(plan.good)
    assert len(chunks) == -(-len(good_lines) // TASK_ROWS)
    assert [line for line in good_lines if not any(a <= line <= b for a, b in chunks)] == []
    assert pending == 0

    # The report: exactly the bad rows, at their lines; every other line COMPLETED.
    rows = _report(pipeline, partner, batch.name)
    assert _problems(rows) == {line: [problem] for line, problem in plan.bad.items()}
    paid_rows = {r.line: r for r in rows if r.withdrawal}
    assert set(paid_rows) == set(plan.good)
    assert {r.state for r in paid_rows.values()} == {withdrawal_pb2.STATE_COMPLETED}
    assert all(r.transaction_hash and r.fee for r in paid_rows.values())

    # The chain: every good row and the single withdrawals paid once, the full amount;
    # nothing to a bad row's recipient; every payout number marked paid in the vault.
    engine = make_engine(pipeline.database_url, pool_size=2)
    try:
        sessions = make_sessionmaker(engine)
        with sessions() as session:
            stored = session.execute(
                select(
                    Withdrawal.id,
                    Withdrawal.batch_line,
                    Withdrawal.recipient,
                    Withdrawal.amount,
                    Withdrawal.payout_number,
                ).where(Withdrawal.batch_id == batch.name.split("/")[1])
            ).all()
            items = session.execute(
                select(PayoutItem.withdrawal_id, PayoutItem.outcome).where(
                    PayoutItem.withdrawal_id.in_([w.id for w in stored])
                )
            ).all()
        assert {w.batch_line for w in stored} == set(plan.good)
        for w in stored:
            expected = plan.good[w.batch_line]
            assert (w.recipient.lower(), int(w.amount)) == (expected.recipient, expected.amount)
        submitted = [Submitted(w.id, w.recipient, int(w.amount)) for w in stored] + plan.singles
        verdict = check_exactly_once(
            pipeline.w3,
            sessions,
            pipeline.boot.token_address,
            pipeline.boot.payout_vault,
            submitted,
            check_balances=True,
        )
    finally:
        engine.dispose()
    assert verdict.ok, verdict.summary()
    assert verdict.paid_once == len(plan.good) + len(plan.singles), verdict.summary()
    assert verdict.contract_skips == verdict.contract_item_failures == 0
    paid_items = [i for i in items if i.outcome == "PAID"]
    assert len(paid_items) == len({i.withdrawal_id for i in paid_items}) == len(stored)
    vault = pipeline.boot.payout_vault
    assert vault is not None
    numbers = [w.payout_number for w in stored]
    assert None not in numbers and len(set(numbers)) == len(numbers)
    assert all(is_paid(pipeline.w3, vault, n) for n in numbers if n is not None)
    for recipient in plan.bad_recipients:
        assert pipeline.token_balance(recipient.lower()) == 0
    print(f"\n{ROWS} rows: uploaded in {uploaded:.1f} s, all COMPLETED after {settled:.1f} s")


def test_rows_the_vault_cannot_pay_yet_wait_on_hold_and_are_paid_once_it_can(
    pipeline: Pipeline, partner: Partner
) -> None:
    """A batch is accepted whatever the vault holds or its outflow cap allows: rows over the
    cap wait ON_HOLD (OUTFLOW_CAP_REACHED), the batch stays PROCESSING, a batch uploaded
    meanwhile is told the vault cannot cover it (`funding`), and once the cap is lifted the
    held rows are paid, once each."""
    vault = pipeline.boot.payout_vault
    assert vault is not None
    owner = pipeline.anvil.accounts[0]
    token = pipeline.boot.token_address
    recipients = [fresh_address() for _ in range(3)]
    content = "recipient_address,amount,token\r\n" + "".join(f"{r},4,USDC\r\n" for r in recipients)
    set_outflow_cap(pipeline.w3, vault, owner.private_key, token, BaseUnits(10_000_000), 3600)
    try:
        batch = _upload(
            pipeline,
            partner,
            content.encode(),
            f"capped-{uuid.uuid4().hex[:8]}",
            batch_pb2.BATCH_POLICY_ACCEPT_VALID,
        )
        assert batch.accepted_count == 3
        stub = batch_pb2_grpc.BatchServiceStub(pipeline.gateway.channel)

        def held() -> batch_pb2.Batch | None:
            current = stub.GetBatch(
                batch_pb2.GetBatchRequest(name=batch.name), metadata=partner.metadata
            )
            counts = {c.state: c.count for c in current.state_counts}
            wanted = {withdrawal_pb2.STATE_COMPLETED: 2, withdrawal_pb2.STATE_ON_HOLD: 1}
            return current if counts == wanted else None

        current = wait_until(held, 60, lambda: f"never 2 paid and 1 held: {batch.name}")
        assert current.state == batch_pb2.BATCH_STATE_PROCESSING
        report = _report(pipeline, partner, batch.name)
        assert sorted(r.reason for r in report if r.state == withdrawal_pb2.STATE_ON_HOLD) == [
            "OUTFLOW_CAP_REACHED"
        ]
        # A batch uploaded now is told so: the processor's reading of the cap (re-taken as it
        # re-plans the held row) leaves nothing for it after the held row ahead.
        sessions = pipeline.gateway.server.store.sessions

        def capped_reading() -> VaultFunds | None:
            with sessions() as session:
                reading = session.scalars(select(VaultFunds)).first()
            if reading is None or reading.allowance is None or reading.allowance > 2 * 10**6:
                return None
            return reading

        wait_until(capped_reading, 30, lambda: "the processor never recorded the cap")
        extra = _upload(
            pipeline,
            partner,
            f"recipient_address,amount,token\r\n{fresh_address()},4,USDC\r\n".encode(),
            f"capped-extra-{uuid.uuid4().hex[:8]}",
            batch_pb2.BATCH_POLICY_ACCEPT_VALID,
        )
        assert [(f.token, f.amount, f.payable, f.reason) for f in extra.funding] == [
            ("USDC", "4", "0", "OUTFLOW_CAP_REACHED")
        ]
        stub.CancelBatch(batch_pb2.CancelBatchRequest(name=extra.name), metadata=partner.metadata)
    finally:
        set_outflow_cap(pipeline.w3, vault, owner.private_key, token, BaseUnits(0), 3600)
    updates = list(
        stub.WatchBatch(
            batch_pb2.WatchBatchRequest(name=batch.name), metadata=partner.metadata, timeout=90
        )
    )
    assert updates[-1].state == batch_pb2.BATCH_STATE_DONE
    assert [(c.state, c.count) for c in updates[-1].state_counts] == [
        (withdrawal_pb2.STATE_COMPLETED, 3)
    ]
    assert [pipeline.token_balance(r) for r in recipients] == [4_000_000] * 3
