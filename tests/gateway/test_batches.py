"""CSV batches on a real gateway (MariaDB, Redis): upload over gRPC and REST, policies,
idempotency, DUPLICATE_FILE, reports, cancel, and CLIENT_REFERENCE_REUSED on single creates."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import delete, func, select

from assetwithdrawal.withdrawal.v1 import batch_pb2, batch_pb2_grpc
from svc_gateway.batches.storage import INSERT_ROWS
from svc_gateway.settings import GatewaySettings
from tests.support.databases import database
from tests.support.gateway import Partner, RunningGateway
from tests.support.requests import create_request, fresh_address
from withdrawal_shared import tracing
from withdrawal_shared.db import tier_admin
from withdrawal_shared.db.api_keys import create_api_key
from withdrawal_shared.db.models import Token, VaultFunds, Withdrawal
from withdrawal_shared.scopes import Scope


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[RunningGateway]:
    with database("mariadb", tmp_path_factory.mktemp("db")) as url:
        settings = GatewaySettings(
            database_url=url,
            redis_url=redis_url,
            redis_prefix=f"test-batches-{uuid.uuid4().hex[:8]}:",
            grpc_port=0,
            http_port=0,
            watch_poll_seconds=0.2,
            shutdown_grace_seconds=1.0,
        )
        running = RunningGateway(settings)
        yield running
        running.close()


@pytest.fixture
def partner(gateway: RunningGateway) -> Partner:
    partner_id = f"p-{uuid.uuid4().hex[:8]}"
    gateway.add_partner(partner_id)
    with gateway.server.store.sessions.begin() as session:
        created = create_api_key(session, partner_id, set(Scope))
    return Partner(partner_id, created.token)


def csv_file(rows: list[tuple[str, str, str, str]], header: str = "") -> bytes:
    head = header or "recipient_address,amount,token,client_reference"
    return ("\r\n".join([head, *(",".join(r) for r in rows)]) + "\r\n").encode()


def upload(
    gateway: RunningGateway,
    partner: Partner,
    content: bytes,
    request_id: str,
    policy: int = batch_pb2.BATCH_POLICY_ACCEPT_VALID,
    allow: bool = False,
) -> batch_pb2.Batch:
    stub = batch_pb2_grpc.BatchServiceStub(gateway.channel)
    messages = [
        batch_pb2.CreateBatchRequest(
            header=batch_pb2.CreateBatchHeader(
                request_id=request_id, policy=policy, allow_duplicate_content=allow
            )
        ),
        *(
            batch_pb2.CreateBatchRequest(chunk=content[i : i + 100])
            for i in range(0, len(content), 100)
        ),
    ]
    return stub.CreateBatch(iter(messages), metadata=partner.metadata)  # type: ignore[no-any-return]


def reason_of(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    return exc.code(), info.reason, dict(info.metadata)  # type: ignore[attr-defined]


def test_accept_valid_stores_good_rows_and_reports_bad_ones(
    gateway: RunningGateway, partner: Partner
) -> None:
    good = [(fresh_address(), "1.5", "USDC", f"r-{i}") for i in range(5)]
    content = (
        "\ufeff".encode()
        + csv_file(
            [
                *good[:2],
                ("0x123", "1", "USDC", "bad-address"),
                (fresh_address(), "1.1234567", "USDC", "bad-amount"),
                (fresh_address(), "1", "XYZ", "bad-token"),
                (fresh_address(), "0", "USDC", "zero"),
                (fresh_address(), "1", "USDC", "r-0"),  # repeats line 2's reference
                *good[2:],
            ]
        )
    )
    batch = upload(gateway, partner, content, "b-1")
    assert batch.policy == batch_pb2.BATCH_POLICY_ACCEPT_VALID
    assert (batch.row_count, batch.accepted_count, batch.problem_row_count) == (10, 5, 5)
    assert [(t.token, t.amount, t.count) for t in batch.token_totals] == [("USDC", "7.5", 5)]
    stub = batch_pb2_grpc.BatchServiceStub(gateway.channel)
    report = stub.GetBatchReport(
        batch_pb2.GetBatchReportRequest(name=batch.name + "/report", page_size=4),
        metadata=partner.metadata,
    )
    assert [r.line for r in report.rows] == [2, 3, 4, 5]
    rows = list(report.rows)
    while report.next_page_token:
        report = stub.GetBatchReport(
            batch_pb2.GetBatchReportRequest(
                name=batch.name + "/report", page_size=4, page_token=report.next_page_token
            ),
            metadata=partner.metadata,
        )
        rows += report.rows
    problems = {r.line: [(p.column, p.reason) for p in r.problems] for r in rows if r.problems}
    assert problems == {
        4: [("recipient_address", "INVALID_ADDRESS")],
        5: [("amount", "INVALID_AMOUNT")],
        6: [("token", "UNKNOWN_TOKEN")],
        7: [("amount", "INVALID_AMOUNT")],
        8: [("client_reference", "CLIENT_REFERENCE_REUSED")],
    }
    assert sum(1 for r in rows if r.withdrawal) == 5
    # The same file under the same key: the same batch; another file: IDEMPOTENCY_KEY_REUSED.
    assert upload(gateway, partner, content, "b-1").name == batch.name
    with pytest.raises(grpc.RpcError) as caught:
        upload(gateway, partner, csv_file(good[:1]), "b-1")
    assert reason_of(caught.value)[:2] == (
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    # The same content under a new key: DUPLICATE_FILE naming it, unless allowed.
    with pytest.raises(grpc.RpcError) as caught:
        upload(gateway, partner, content, "b-2")
    code, reason, metadata = reason_of(caught.value)
    assert (code, reason, metadata["batch"]) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "DUPLICATE_FILE",
        batch.name,
    )
    again = upload(gateway, partner, content, "b-3", allow=True)
    assert again.accepted_count == 0  # every reference is taken by the first batch now
    # Single creates see the references too.
    with pytest.raises(grpc.RpcError) as caught:
        gateway.stub.CreateWithdrawal(
            create_request(client_reference="r-1"), metadata=partner.metadata
        )
    assert reason_of(caught.value)[:2] == (
        grpc.StatusCode.ALREADY_EXISTS,
        "CLIENT_REFERENCE_REUSED",
    )


def test_reject_all_stores_no_withdrawal_and_lists_every_problem(
    gateway: RunningGateway, partner: Partner
) -> None:
    content = csv_file(
        [
            (fresh_address(), "2", "USDC", "a"),
            ("nope", "2", "USDC", "b"),
            (fresh_address(), "2.0000001", "USDC", "c"),
        ]
    )
    with pytest.raises(grpc.RpcError) as caught:
        upload(gateway, partner, content, "rj-1", policy=batch_pb2.BATCH_POLICY_REJECT_ALL)
    code, reason, metadata = reason_of(caught.value)
    assert (code, reason, metadata["problem_count"]) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "BATCH_ROWS_INVALID",
        "2",
    )
    with gateway.server.store.sessions() as session:
        count = session.scalar(
            select(func.count()).select_from(Withdrawal).where(Withdrawal.partner_id == partner.id)
        )
    assert count == 0
    # Repeated: the same refusal.
    with pytest.raises(grpc.RpcError) as caught:
        upload(gateway, partner, content, "rj-1", policy=batch_pb2.BATCH_POLICY_REJECT_ALL)
    assert reason_of(caught.value)[1] == "BATCH_ROWS_INVALID"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "BATCH_FILE_INVALID"),
        (b"amount,token\r\n1,USDC\r\n", "BATCH_FILE_INVALID"),
        (b"recipient_address,amount,token,colour\r\n", "BATCH_FILE_INVALID"),
        (b"recipient_address,amount,token\r\n", "BATCH_FILE_INVALID"),
        (b"recipient_address,amount,token\r\n\xff\xfe,1,USDC\r\n", "BATCH_FILE_INVALID"),
    ],
)
def test_file_problems_are_one_error_over_rest(
    gateway: RunningGateway, partner: Partner, content: bytes, reason: str
) -> None:
    response = httpx.post(
        f"{gateway.base_url}/v1/batches",
        content=content,
        headers={
            **partner.headers,
            "Idempotency-Key": str(uuid.uuid4()),
            "Content-Type": "text/csv",
        },
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"][0]["reason"] == reason


def test_rest_upload_report_csv_list_and_cancel(gateway: RunningGateway, partner: Partner) -> None:
    content = csv_file(
        [(fresh_address(), "3", "USDC", f"rest-{i}") for i in range(3)]
        + [("0x0", "3", "USDC", "rest-bad")]
    )
    headers = {**partner.headers, "Idempotency-Key": "rest-1"}
    response = httpx.post(
        f"{gateway.base_url}/v1/batches?policy=ACCEPT_VALID",
        files={"file": ("payouts.csv", content, "text/csv")},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    batch = response.json()
    assert (batch["acceptedCount"], batch["problemRowCount"]) == (3, 1)
    again = httpx.post(
        f"{gateway.base_url}/v1/batches?policy=ACCEPT_VALID",
        content=content,
        headers={**headers, "Content-Type": "text/csv"},
    )
    assert again.json()["name"] == batch["name"]
    csv_report = httpx.get(
        f"{gateway.base_url}/v1/{batch['name']}/report",
        headers={**partner.headers, "Accept": "text/csv"},
    )
    assert csv_report.status_code == 200
    lines = csv_report.text.strip().splitlines()
    assert lines[0].startswith("line,client_reference,withdrawal")
    assert len(lines) == 5 and "INVALID_ADDRESS" in lines[4]
    listed = httpx.get(f"{gateway.base_url}/v1/batches", headers=partner.headers).json()
    assert [b["name"] for b in listed["batches"]] == [batch["name"]]
    cancelled = httpx.post(
        f"{gateway.base_url}/v1/{batch['name']}:cancel", json={}, headers=partner.headers
    ).json()
    assert cancelled["state"] == "BATCH_STATE_DONE"
    assert [(c["state"], c["count"]) for c in cancelled["stateCounts"]] == [("STATE_CANCELLED", 3)]
    other = httpx.get(
        f"{gateway.base_url}/v1/{batch['name']}", headers={"Authorization": "Bearer x"}
    )
    assert other.status_code == 401


def all_report_rows(
    gateway: RunningGateway, partner: Partner, name: str
) -> list[batch_pb2.BatchReportRow]:
    stub = batch_pb2_grpc.BatchServiceStub(gateway.channel)
    rows: list[batch_pb2.BatchReportRow] = []
    token = ""
    while True:
        report = stub.GetBatchReport(
            batch_pb2.GetBatchReportRequest(
                name=name + "/report", page_size=10_000, page_token=token
            ),
            metadata=partner.metadata,
        )
        rows += report.rows
        token = report.next_page_token
        if not token:
            return rows


def spanning_file(prefix: str, taken: str) -> tuple[bytes, dict[int, str]]:
    """More rows than one chunk (INSERT_ROWS): a reference repeated within a chunk, one
    repeated a chunk later, one a single create took before; (file, expected problems)."""
    rows = [(fresh_address(), "1", "USDC", f"{prefix}-{i}") for i in range(INSERT_ROWS + 50)]
    rows[10] = (fresh_address(), "1", "USDC", f"{prefix}-3")  # line 12 repeats line 5
    rows[INSERT_ROWS + 20] = (fresh_address(), "1", "USDC", f"{prefix}-4")  # a chunk later
    rows[INSERT_ROWS + 30] = (fresh_address(), "1", "USDC", taken)
    rows[INSERT_ROWS + 40] = ("0x12", "1", "USDC", f"{prefix}-x")
    expected = {
        12: "repeats the client reference of line 5",
        INSERT_ROWS + 22: "repeats the client reference of line 6",
        INSERT_ROWS + 32: "is already used by withdrawals/",
        INSERT_ROWS + 42: "INVALID_ADDRESS",
    }
    return csv_file(rows), expected


def test_references_are_unique_across_chunks_and_against_stored_withdrawals(
    gateway: RunningGateway, partner: Partner
) -> None:
    single = gateway.stub.CreateWithdrawal(
        create_request(client_reference="taken-1"), metadata=partner.metadata
    )
    content, expected = spanning_file("span", "taken-1")
    batch = upload(gateway, partner, content, "span-1")
    assert (batch.row_count, batch.accepted_count, batch.problem_row_count) == (
        INSERT_ROWS + 50,
        INSERT_ROWS + 46,
        4,
    )
    rows = all_report_rows(gateway, partner, batch.name)
    assert len(rows) == INSERT_ROWS + 50
    found = {r.line: f"{r.problems[0].reason} {r.problems[0].message}" for r in rows if r.problems}
    assert sorted(found) == sorted(expected)
    for line, says in expected.items():
        assert says in found[line], (line, found[line])
    assert single.name.split("/")[1] in found[INSERT_ROWS + 32]
    # Every stored row's withdrawal is of its own line, and queued in tasks of TASK_ROWS.
    with gateway.server.store.sessions() as session:
        lines = session.scalars(
            select(Withdrawal.batch_line).where(Withdrawal.batch_id == batch.name.split("/")[1])
        ).all()
    assert sorted(lines) == sorted({r.line for r in rows} - set(expected))


def test_reject_all_over_several_chunks_stores_nothing_and_counts_every_problem(
    gateway: RunningGateway, partner: Partner
) -> None:
    gateway.stub.CreateWithdrawal(
        create_request(client_reference="taken-2"), metadata=partner.metadata
    )
    content, expected = spanning_file("rj-span", "taken-2")
    with pytest.raises(grpc.RpcError) as caught:
        upload(gateway, partner, content, "rj-span-1", policy=batch_pb2.BATCH_POLICY_REJECT_ALL)
    code, reason, metadata = reason_of(caught.value)
    assert (code, reason, metadata["problem_count"]) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "BATCH_ROWS_INVALID",
        "4",
    )
    with gateway.server.store.sessions() as session:
        count = session.scalar(
            select(func.count())
            .select_from(Withdrawal)
            .where(Withdrawal.partner_id == partner.id, Withdrawal.batch_id.is_not(None))
        )
    assert count == 0
    rows = all_report_rows(gateway, partner, metadata["batch"])
    assert sorted(r.line for r in rows if r.problems) == sorted(expected)


def test_on_sqlite_a_batch_is_checked_and_stored_the_same_way(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> None:
    with database("sqlite", tmp_path_factory.mktemp("lite")) as url:
        running = RunningGateway(
            GatewaySettings(
                database_url=url,
                redis_url=redis_url,
                redis_prefix=f"test-batches-{uuid.uuid4().hex[:8]}:",
                grpc_port=0,
                http_port=0,
                shutdown_grace_seconds=1.0,
            )
        )
        try:
            partner = running.add_partner("p-lite", set(Scope))
            running.stub.CreateWithdrawal(
                create_request(client_reference="taken-3"), metadata=partner.metadata
            )
            content, expected = spanning_file("lite", "taken-3")
            batch = upload(running, partner, content, "lite-1")
            assert (batch.accepted_count, batch.problem_row_count) == (INSERT_ROWS + 46, 4)
            rows = all_report_rows(running, partner, batch.name)
            found = {r.line: r.problems[0].message for r in rows if r.problems}
            assert sorted(found) == sorted(expected)
            assert "line 6" in found[INSERT_ROWS + 22]
        finally:
            running.close()


def test_limits_refuse_rows_past_the_partner_s_daily_amount_after_reused_references(
    gateway: RunningGateway, partner: Partner
) -> None:
    gateway.stub.CreateWithdrawal(
        create_request(client_reference="taken-4"), metadata=partner.metadata
    )
    with gateway.server.store.sessions.begin() as session:
        tier_admin.set_partner_daily_limit(session, partner.id, "USDC", "1500")
    gateway.server.store.limits.invalidate()
    try:
        content, expected = spanning_file("lim", "taken-4")
        batch = upload(gateway, partner, content, "lim-1")
    finally:
        with gateway.server.store.sessions.begin() as session:
            tier_admin.set_partner_daily_limit(session, partner.id, "USDC", None)
        gateway.server.store.limits.invalidate()
    assert (batch.accepted_count, batch.problem_row_count) == (1500, INSERT_ROWS + 50 - 1500)
    rows = all_report_rows(gateway, partner, batch.name)
    reasons = {r.line: r.problems[0].reason for r in rows if r.problems}
    assert {line: reasons[line] for line in expected} == {
        12: "CLIENT_REFERENCE_REUSED",
        INSERT_ROWS + 22: "CLIENT_REFERENCE_REUSED",
        INSERT_ROWS + 32: "CLIENT_REFERENCE_REUSED",
        INSERT_ROWS + 42: "INVALID_ADDRESS",
    }
    refused = sorted(line for line, reason in reasons.items() if reason == "LIMIT_EXCEEDED")
    assert len(refused) == INSERT_ROWS + 50 - 1500 - 4
    assert refused[0] == 2 + 1500 + 1  # the first 1,500 good rows fit (line 12 is not one)


def test_the_answer_says_whether_the_vault_covers_the_batch(
    gateway: RunningGateway, partner: Partner
) -> None:
    """From the processor's last reading of the vault (here written by hand): the vault's
    available funds and its outflow allowance, less the open withdrawals ahead."""

    def content() -> bytes:
        return csv_file([(fresh_address(), "4", "USDC", "") for _ in range(3)])

    unread = upload(gateway, partner, content(), "fund-0")
    assert list(unread.funding) == []  # the vault was never read: nothing is claimed
    sessions = gateway.server.store.sessions
    with sessions() as session:
        usdc = session.scalars(select(Token.id).where(Token.symbol == "USDC")).one()
        ahead = sum(
            int(a)
            for a in session.scalars(
                select(Withdrawal.amount).where(
                    Withdrawal.token_id == usdc,
                    Withdrawal.payout_tx_id.is_(None),
                    Withdrawal.state.in_(["RECEIVED", "VALIDATED", "QUEUED", "ON_HOLD"]),
                )
            )
        )
    reading = VaultFunds(
        chain="polygon",
        token_id=usdc,
        available=ahead + 10 * 10**6,
        allowance=None,
        observe_time=dt.datetime(2026, 12, 6, 22, 0, 0),
    )
    try:
        with sessions.begin() as session:
            session.merge(reading)
        short = upload(gateway, partner, content(), "fund-1")
        (funding,) = short.funding
        assert (funding.token, funding.amount, funding.payable, funding.shortfall) == (
            "USDC",
            "12",
            "10",
            "2",
        )
        assert funding.reason == "INSUFFICIENT_VAULT_FUNDS"
        assert funding.observe_time.ToDatetime() == reading.observe_time
        assert short.accepted_count == 3  # accepted all the same: the rows wait for funds
        # The cap's allowance, less the same rows ahead (and fund-1's twelve now).
        with sessions.begin() as session:
            session.merge(
                VaultFunds(
                    chain="polygon",
                    token_id=usdc,
                    available=ahead + 10**12,
                    allowance=ahead + 12 * 10**6 + 5 * 10**6,
                    observe_time=reading.observe_time,
                )
            )
        capped = upload(gateway, partner, content(), "fund-2")
        assert [(f.payable, f.shortfall, f.reason) for f in capped.funding] == [
            ("5", "7", "OUTFLOW_CAP_REACHED")
        ]
        with sessions.begin() as session:
            session.merge(
                VaultFunds(
                    chain="polygon",
                    token_id=usdc,
                    available=10**15,
                    allowance=None,
                    observe_time=reading.observe_time,
                )
            )
        covered = upload(gateway, partner, content(), "fund-3")
        assert [(f.payable, f.shortfall, f.reason) for f in covered.funding] == [("12", "0", "")]
        assert list(gateway_get(gateway, partner, covered.name).funding) == []  # answer only
    finally:
        with sessions.begin() as session:
            session.execute(delete(VaultFunds))


def gateway_get(gateway: RunningGateway, partner: Partner, name: str) -> batch_pb2.Batch:
    stub = batch_pb2_grpc.BatchServiceStub(gateway.channel)
    return stub.GetBatch(batch_pb2.GetBatchRequest(name=name), metadata=partner.metadata)  # type: ignore[no-any-return]


def _trace_contexts(gateway: RunningGateway, batch: batch_pb2.Batch) -> set[str | None]:
    batch_id = batch.name.rsplit("/", 1)[1]
    with gateway.server.store.sessions() as session:
        return set(
            session.scalars(
                select(Withdrawal.trace_context).where(Withdrawal.batch_id == batch_id)
            ).all()
        )


def test_rows_store_the_ingest_span_s_context_only_when_tracing_is_on(
    gateway: RunningGateway, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each row of an upload stores the traceparent of the upload's `batch ingest` span (so
    its state changes join that trace); with tracing off, NULL."""
    rows = [(fresh_address(), "1", "USDC", f"t-off-{i}") for i in range(3)]
    off = upload(gateway, partner, csv_file(rows), "trace-off")
    assert off.accepted_count == 3
    assert _trace_contexts(gateway, off) == {None}

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing._state, "tracer", provider.get_tracer("test"))
    rows = [(fresh_address(), "1", "USDC", f"t-on-{i}") for i in range(3)]
    on = upload(gateway, partner, csv_file(rows), "trace-on")
    monkeypatch.setattr(tracing._state, "tracer", None)
    provider.shutdown()
    assert on.accepted_count == 3
    (ingest,) = [
        s
        for s in exporter.get_finished_spans()
        if s.name == "batch ingest"
        and (s.attributes or {}).get("batch.id") == on.name.removeprefix("batches/")
    ]
    context = ingest.get_span_context()
    assert context is not None
    expected = f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
    assert _trace_contexts(gateway, on) == {expected}
