"""CSV batches on a real gateway (MariaDB, Redis): upload over gRPC and REST, policies,
idempotency, DUPLICATE_FILE, reports, cancel, and CLIENT_REFERENCE_REUSED on single creates."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import func, select

from assetwithdrawal.withdrawal.v1 import batch_pb2, batch_pb2_grpc
from svc_gateway.settings import GatewaySettings
from tests.support.databases import database
from tests.support.gateway import Partner, RunningGateway
from tests.support.requests import create_request, fresh_address
from withdrawal_shared.db.api_keys import create_api_key
from withdrawal_shared.db.models import Withdrawal
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
