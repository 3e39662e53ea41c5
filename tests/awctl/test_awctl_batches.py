"""`awctl batches` against a real gateway (MariaDB, Redis): an upload over the CreateBatch
client stream with a request_id derived from the file (a retry is the same batch), followed
with WatchBatch until terminal, its report saved; a file with problems as a table; get, list,
report; the partner API key it needs, and what it says without one."""

from __future__ import annotations

import csv
import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, select
from typer.testing import CliRunner, Result

from assetwithdrawal.withdrawal.v1 import batch_pb2, batch_pb2_grpc
from awctl.batches import Policy, file_request_id
from awctl.cli import app
from svc_gateway.settings import GatewaySettings
from tests.support.databases import database
from tests.support.gateway import Partner, RunningGateway
from tests.support.requests import fresh_address
from withdrawal_shared.db.models import Token, VaultFunds
from withdrawal_shared.db.operators import Role
from withdrawal_shared.scopes import Scope

runner = CliRunner()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[RunningGateway]:
    with database("mariadb", tmp_path_factory.mktemp("db")) as url:
        running = RunningGateway(
            GatewaySettings(
                database_url=url,
                redis_url=redis_url,
                redis_prefix=f"test-awctl-batches-{uuid.uuid4().hex[:8]}:",
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


def awctl(gateway: RunningGateway, *args: str, api_key: str | None = None) -> Result:
    env = {
        "AWCTL_STACK_JSON": "/nonexistent/stack.json",
        "COLUMNS": "250",
        "AWCTL_TARGET": gateway.grpc_target,
        "AWCTL_CREDENTIAL": "",
        "AWCTL_API_KEY": api_key or "",
    }
    result = runner.invoke(app, list(args), env=env)
    assert "Traceback" not in result.output, result.output
    return result


def write_csv(path: Path, good: int, bad: list[tuple[str, str, str]] = ()) -> Path:  # type: ignore[assignment]
    rows = [(fresh_address(), f"{i + 1}.5", "USDC") for i in range(good)] + list(bad)
    path.write_text(
        "recipient_address,amount,token\r\n" + "".join(f"{a},{b},{c}\r\n" for a, b, c in rows),
        encoding="utf-8",
    )
    return path


def cancel_when_stored(
    gateway: RunningGateway, partner: Partner, request_id: str
) -> threading.Thread:
    """Cancel the batch with `request_id` once it is stored (no processor runs here, so this
    is what makes every row terminal)."""
    stub = batch_pb2_grpc.BatchServiceStub(gateway.channel)

    def run() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listed = stub.ListBatches(batch_pb2.ListBatchesRequest(), metadata=partner.metadata)
            for b in listed.batches:
                if b.request_id == request_id:
                    time.sleep(0.5)  # let awctl open its watch first
                    stub.CancelBatch(
                        batch_pb2.CancelBatchRequest(name=b.name), metadata=partner.metadata
                    )
                    return
            time.sleep(0.1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_upload_follows_the_batch_until_terminal_and_saves_the_report(
    gateway: RunningGateway, partner: Partner, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path / "payouts.csv", 3, [("0x123", "1", "USDC"), (fresh_address(), "0", "USDC")]
    )
    out = tmp_path / "report.csv"
    request_id = file_request_id(path, Policy.ACCEPT_VALID)
    assert request_id.startswith("awctl-") and request_id.endswith("-accept-valid")
    canceller = cancel_when_stored(gateway, partner, request_id)
    result = awctl(
        gateway,
        "batches",
        "upload",
        str(path),
        "--policy",
        "accept-valid",
        "--report",
        str(out),
        api_key=partner.api_key,
    )
    canceller.join(30)
    assert result.exit_code == 0, result.output
    assert "DONE; CANCELLED 3" in result.stdout
    assert "INVALID_ADDRESS" in result.stdout and "INVALID_AMOUNT" in result.stdout
    with out.open(newline="", encoding="utf-8") as file:
        report = list(csv.DictReader(file))
    assert [(r["line"], r["state"], r["reason"]) for r in report] == [
        ("2", "CANCELLED", "CANCELLED_BY_PARTNER"),
        ("3", "CANCELLED", "CANCELLED_BY_PARTNER"),
        ("4", "CANCELLED", "CANCELLED_BY_PARTNER"),
        ("5", "", "INVALID_ADDRESS"),
        ("6", "", "INVALID_AMOUNT"),
    ]
    assert all(r["withdrawal"].startswith("withdrawals/") for r in report[:3])
    # Uploaded again (a retry): the same request_id, so the same batch, not a DUPLICATE_FILE.
    again = awctl(
        gateway,
        "batches",
        "upload",
        str(path),
        "--policy",
        "accept-valid",
        "--json",
        api_key=partner.api_key,
    )
    assert again.exit_code == 0, again.output
    batch = json.loads(again.stdout)
    assert (batch["requestId"], batch["state"]) == (request_id, "BATCH_STATE_DONE")
    listed = json.loads(awctl(gateway, "batches", "list", "--json", api_key=partner.api_key).stdout)
    assert [b["name"] for b in listed["batches"]] == [batch["name"]]
    got = awctl(gateway, "batches", "get", batch["name"].split("/")[1], api_key=partner.api_key)
    assert got.exit_code == 0 and "CANCELLED 3" in got.stdout
    shown = awctl(gateway, "batches", "report", batch["name"], api_key=partner.api_key)
    assert shown.exit_code == 0, shown.output
    assert "INVALID_ADDRESS" in shown.stdout and "CANCELLED" in shown.stdout
    rows = json.loads(
        awctl(gateway, "batches", "report", batch["name"], "--json", api_key=partner.api_key).stdout
    )["rows"]
    assert [r["line"] for r in rows] == [2, 3, 4, 5, 6]


def test_reject_all_prints_every_problem_and_saves_them(
    gateway: RunningGateway, partner: Partner, tmp_path: Path
) -> None:
    bad = [("0x12", "1", "USDC")] * 25  # more than the error's own 20
    path = write_csv(tmp_path / "bad.csv", 2, bad)
    out = tmp_path / "problems.csv"
    result = awctl(
        gateway, "batches", "upload", str(path), "--report", str(out), api_key=partner.api_key
    )
    assert result.exit_code == 1, result.output
    assert "BATCH_ROWS_INVALID" in result.stderr
    assert "nothing was stored" in result.stdout
    assert all(f" {line} " in result.stdout for line in range(4, 29))
    with out.open(newline="", encoding="utf-8") as file:
        report = list(csv.DictReader(file))
    assert [r["line"] for r in report] == [str(n) for n in range(4, 29)]
    assert {r["reason"] for r in report} == {"INVALID_ADDRESS"}
    # The same again answers the same refusal (the request_id is the file's).
    assert awctl(gateway, "batches", "upload", str(path), api_key=partner.api_key).exit_code == 1


def test_a_file_that_cannot_be_read_is_one_error(
    gateway: RunningGateway, partner: Partner, tmp_path: Path
) -> None:
    path = tmp_path / "wrong.csv"
    path.write_text("address,amount\r\n0x1,1\r\n", encoding="utf-8")
    result = awctl(gateway, "batches", "upload", str(path), api_key=partner.api_key)
    assert result.exit_code == 1
    assert "BATCH_FILE_INVALID" in result.stderr and "unknown columns" in result.stderr


def test_a_partner_api_key_is_needed(
    gateway: RunningGateway, partner: Partner, tmp_path: Path
) -> None:
    missing = awctl(gateway, "batches", "list")
    assert missing.exit_code == 2
    assert "--api-key" in missing.stderr and "AWCTL_API_KEY" in missing.stderr
    operator = gateway.add_operator(f"op-{uuid.uuid4().hex[:6]}", Role.ADMIN)
    refused = awctl(gateway, "batches", "list", api_key=operator.credential)
    assert refused.exit_code == 1
    assert "UNAUTHENTICATED" in refused.stderr and "partner API key" in refused.stderr
    reader = gateway.add_partner(f"r-{uuid.uuid4().hex[:6]}", {Scope.WITHDRAWALS_READ})
    path = write_csv(tmp_path / "one.csv", 1)
    denied = awctl(gateway, "batches", "upload", str(path), api_key=reader.api_key)
    assert denied.exit_code == 1
    assert "SCOPE_MISSING" in denied.stderr and "batches:create" in denied.stderr
    flag = runner.invoke(
        app,
        ["batches", "list", "--api-key", partner.api_key, "--json"],
        env={"AWCTL_TARGET": gateway.grpc_target, "AWCTL_STACK_JSON": "/nonexistent"},
    )
    assert flag.exit_code == 0, flag.output


def test_an_upload_the_vault_cannot_cover_says_so(
    gateway: RunningGateway, partner: Partner, tmp_path: Path
) -> None:
    sessions = gateway.server.store.sessions
    with sessions.begin() as session:
        usdc = session.scalars(select(Token.id).where(Token.symbol == "USDC")).one()
        session.merge(
            VaultFunds(
                chain="polygon",
                token_id=usdc,
                available=0,
                allowance=None,
                observe_time=dt.datetime(2026, 12, 6, 22, 0),
            )
        )
    try:
        path = write_csv(tmp_path / "short.csv", 2)
        result = awctl(
            gateway, "batches", "upload", str(path), "--no-wait", api_key=partner.api_key
        )
        assert result.exit_code == 0, result.output
        assert "short" in result.stdout and "INSUFFICIENT_VAULT_FUNDS" in result.stdout
    finally:
        with sessions.begin() as session:
            session.execute(delete(VaultFunds))
