"""WatchBatch on a real gateway (MariaDB, Redis): the stream reports the batch's counts
whenever they change and ends once the batch is terminal, over gRPC and as REST's
newline-delimited JSON. (On the whole pipeline, tests/e2e/test_batches_e2e.py watches a
batch until every row is COMPLETED.)"""

from __future__ import annotations

import json
import queue
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from assetwithdrawal.withdrawal.v1 import batch_pb2, batch_pb2_grpc, withdrawal_pb2
from svc_gateway.settings import GatewaySettings
from tests.support.databases import database
from tests.support.gateway import Partner, RunningGateway
from tests.support.requests import fresh_address, rich_error
from withdrawal_shared.scopes import Scope

S = withdrawal_pb2


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[RunningGateway]:
    with database("mariadb", tmp_path_factory.mktemp("db")) as url:
        running = RunningGateway(
            GatewaySettings(
                database_url=url,
                redis_url=redis_url,
                redis_prefix=f"test-batch-watch-{uuid.uuid4().hex[:8]}:",
                grpc_port=0,
                http_port=0,
                watch_poll_seconds=0.1,
                shutdown_grace_seconds=1.0,
            )
        )
        yield running
        running.close()


@pytest.fixture
def partner(gateway: RunningGateway) -> Partner:
    return gateway.add_partner(f"p-{uuid.uuid4().hex[:8]}", set(Scope))


def upload(
    gateway: RunningGateway,
    partner: Partner,
    rows: int,
    bad: int = 0,
    policy: batch_pb2.BatchPolicy.ValueType = batch_pb2.BATCH_POLICY_ACCEPT_VALID,
) -> batch_pb2.Batch:
    lines = ["recipient_address,amount,token"]
    lines += [f"{fresh_address()},1.25,USDC" for _ in range(rows)]
    lines += ["0x0,1,USDC"] * bad
    content = ("\r\n".join(lines) + "\r\n").encode()
    stub = batch_pb2_grpc.BatchServiceStub(gateway.channel)
    return stub.CreateBatch(  # type: ignore[no-any-return]
        iter(
            [
                batch_pb2.CreateBatchRequest(
                    header=batch_pb2.CreateBatchHeader(request_id=uuid.uuid4().hex, policy=policy)
                ),
                batch_pb2.CreateBatchRequest(chunk=content),
            ]
        ),
        metadata=partner.metadata,
    )


def withdrawals_of(gateway: RunningGateway, partner: Partner, name: str) -> list[str]:
    stub = batch_pb2_grpc.BatchServiceStub(gateway.channel)
    report = stub.GetBatchReport(
        batch_pb2.GetBatchReportRequest(name=name + "/report"), metadata=partner.metadata
    )
    return [r.withdrawal for r in report.rows if r.withdrawal]


def cancel_one(gateway: RunningGateway, partner: Partner, withdrawal: str) -> None:
    gateway.stub.CancelWithdrawal(
        S.CancelWithdrawalRequest(name=withdrawal), metadata=partner.metadata
    )


def counts(batch: batch_pb2.Batch) -> dict[int, int]:
    return {c.state: c.count for c in batch.state_counts}


def test_grpc_watch_reports_each_change_of_the_counts_and_ends_when_terminal(
    gateway: RunningGateway, partner: Partner
) -> None:
    batch = upload(gateway, partner, rows=3, bad=1)
    first, second, _ = withdrawals_of(gateway, partner, batch.name)
    stub = batch_pb2_grpc.BatchServiceStub(gateway.channel)
    stream = stub.WatchBatch(
        batch_pb2.WatchBatchRequest(name=batch.name), metadata=partner.metadata, timeout=30
    )
    updates: queue.Queue[batch_pb2.Batch | None] = queue.Queue()

    def read() -> None:
        for update in stream:
            updates.put(update)
        updates.put(None)  # the server ended the stream

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    opened = updates.get(timeout=10)
    assert opened is not None
    assert opened.state == batch_pb2.BATCH_STATE_PROCESSING
    assert counts(opened) == {S.STATE_RECEIVED: 3}
    assert (opened.row_count, opened.accepted_count, opened.problem_row_count) == (4, 3, 1)
    cancel_one(gateway, partner, first)
    changed = updates.get(timeout=10)
    assert changed is not None
    assert changed.state == batch_pb2.BATCH_STATE_PROCESSING
    assert counts(changed) == {S.STATE_RECEIVED: 2, S.STATE_CANCELLED: 1}
    cancel_one(gateway, partner, second)
    changed = updates.get(timeout=10)
    assert changed is not None
    assert counts(changed) == {S.STATE_RECEIVED: 1, S.STATE_CANCELLED: 2}
    stub.CancelBatch(batch_pb2.CancelBatchRequest(name=batch.name), metadata=partner.metadata)
    done = updates.get(timeout=10)
    assert done is not None
    assert done.state == batch_pb2.BATCH_STATE_DONE
    assert counts(done) == {S.STATE_CANCELLED: 3}
    assert updates.get(timeout=10) is None  # terminal: the stream ended by itself
    reader.join(5)


def test_grpc_watch_of_a_rejected_batch_is_one_message(
    gateway: RunningGateway, partner: Partner
) -> None:
    with pytest.raises(grpc.RpcError) as caught:  # BATCH_ROWS_INVALID names the batch
        upload(gateway, partner, rows=1, bad=1, policy=batch_pb2.BATCH_POLICY_REJECT_ALL)
    name = rich_error(caught.value)[1].metadata["batch"]
    stub = batch_pb2_grpc.BatchServiceStub(gateway.channel)
    updates = list(
        stub.WatchBatch(
            batch_pb2.WatchBatchRequest(name=name), metadata=partner.metadata, timeout=10
        )
    )
    assert [(u.state, counts(u)) for u in updates] == [(batch_pb2.BATCH_STATE_REJECTED, {})]


def test_rest_watch_streams_ndjson_until_terminal(
    gateway: RunningGateway, partner: Partner
) -> None:
    batch = upload(gateway, partner, rows=2)
    first, _ = withdrawals_of(gateway, partner, batch.name)
    events: list[dict[str, Any]] = []
    with httpx.stream(
        "GET", f"{gateway.base_url}/v1/{batch.name}:watch", headers=partner.headers, timeout=20
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("application/x-ndjson")
        lines = stream.iter_lines()
        events.append(json.loads(next(lines)))
        cancel_one(gateway, partner, first)
        events.append(json.loads(next(lines)))
        cancelled = httpx.post(
            f"{gateway.base_url}/v1/{batch.name}:cancel", json={}, headers=partner.headers
        )
        assert cancelled.status_code == 200, cancelled.text
        events.extend(json.loads(line) for line in lines if line)  # ends by itself
    assert [e["name"] for e in events] == [batch.name] * 3
    assert [(e["state"], {c["state"]: c["count"] for c in e["stateCounts"]}) for e in events] == [
        ("BATCH_STATE_PROCESSING", {"STATE_RECEIVED": 2}),
        ("BATCH_STATE_PROCESSING", {"STATE_RECEIVED": 1, "STATE_CANCELLED": 1}),
        ("BATCH_STATE_DONE", {"STATE_CANCELLED": 2}),
    ]
