"""awctl, the operator command-line tool, against a real gateway (MariaDB and SQLite): tables
and --json, four eyes through two admins' credentials, credentials shown once, and errors
(refusals, a bad credential, an unreachable target) as messages with exit status 1, never a
traceback; usage errors exit 2."""

from __future__ import annotations

import io
import json
import secrets
import socket
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from assetwithdrawal.admin.v1 import admin_pb2
from awctl import render
from awctl.cli import app
from awctl.config import ConfigError, credential_prefix, resolve
from tests.support.gateway import OperatorAccount, RunningGateway
from withdrawal_shared.db.operators import Role

runner = CliRunner()


def _id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def awctl(
    *args: str,
    target: str | None = None,
    credential: str | None = None,
    stack_json: str = "/nonexistent/stack.json",
) -> Result:
    env = {
        "AWCTL_STACK_JSON": stack_json,
        "COLUMNS": "200",
        "AWCTL_TARGET": "",
        "AWCTL_CREDENTIAL": "",
    }
    if target is not None:
        env["AWCTL_TARGET"] = target
    if credential is not None:
        env["AWCTL_CREDENTIAL"] = credential
    result = runner.invoke(app, list(args), env=env)
    assert "Traceback" not in result.output, result.output
    return result


def as_op(gateway: RunningGateway, who: OperatorAccount, *args: str) -> Result:
    return awctl(*args, target=gateway.grpc_target, credential=who.credential)


def ok_json(result: Result) -> dict:  # type: ignore[type-arg]
    assert result.exit_code == 0, result.output
    parsed: dict = json.loads(result.stdout)  # type: ignore[type-arg]
    return parsed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def alice(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(_id("alice"), Role.ADMIN)


@pytest.fixture(scope="module")
def bob(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(_id("bob"), Role.ADMIN)


@pytest.fixture(scope="module")
def viewer(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(_id("viewer"), Role.VIEWER)


# ---------------------------------------------------------------- reading


def test_operators_list_renders_a_table(
    gateway: RunningGateway, alice: OperatorAccount, bob: OperatorAccount, viewer: OperatorAccount
) -> None:
    result = as_op(gateway, viewer, "operators", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("operators (")
    assert any("operator" in line and "roles" in line and "state" in line for line in lines)
    row = next(line for line in lines if alice.id in line)
    assert "admin" in row and "ACTIVE" in row
    assert "┃" in result.stdout or "│" in result.stdout  # a rich table, not bare text
    assert any(viewer.id in line and "viewer" in line for line in lines)


def test_operators_get_and_json_output_parse(
    gateway: RunningGateway, alice: OperatorAccount, viewer: OperatorAccount
) -> None:
    listed = ok_json(as_op(gateway, viewer, "operators", "list", "--json"))
    names = [op["name"] for op in listed["operators"]]
    assert f"operators/{alice.id}" in names and names == sorted(names)
    got = ok_json(as_op(gateway, viewer, "operators", "get", alice.id, "--json"))
    assert got["name"] == f"operators/{alice.id}" and got["roles"] == ["ROLE_ADMIN"]
    got_by_name = ok_json(
        as_op(gateway, viewer, "operators", "get", f"operators/{alice.id}", "--json")
    )
    assert got_by_name == got
    shown = as_op(gateway, viewer, "operators", "get", alice.id)
    assert shown.exit_code == 0 and f"operators/{alice.id}" in shown.stdout


# ---------------------------------------------------------------- four eyes


def test_propose_then_self_confirm_is_refused_then_another_admin_applies(
    gateway: RunningGateway, alice: OperatorAccount, bob: OperatorAccount, viewer: OperatorAccount
) -> None:
    carol = _id("carol")
    proposed = ok_json(
        as_op(
            gateway,
            alice,
            "changes",
            "propose-operator",
            carol,
            "viewer",
            "--json",
            "--display-name",
            "Carol",
        )
    )
    assert proposed["kind"] == "operator.create" and proposed["state"] == "STATE_PROPOSED"
    assert proposed["payload"] == {"operator": carol, "roles": ["viewer"], "display_name": "Carol"}
    change_id = proposed["name"].removeprefix("changes/")

    pending = ok_json(as_op(gateway, viewer, "changes", "list", "--state", "proposed", "--json"))
    assert proposed["name"] in [c["name"] for c in pending["changes"]]
    listed = as_op(gateway, viewer, "changes", "list", "--state", "proposed")
    assert listed.exit_code == 0 and change_id in listed.stdout

    refused = as_op(gateway, alice, "changes", "confirm", change_id)
    assert refused.exit_code == 1
    assert refused.stdout == ""
    assert "PERMISSION_DENIED" in refused.stderr and "SELF_CONFIRMATION" in refused.stderr
    assert "another admin" in refused.stderr

    applied = as_op(gateway, bob, "changes", "confirm", change_id)
    assert applied.exit_code == 0, applied.output
    assert "APPLIED" in applied.stdout and f"operators/{bob.id}" in applied.stdout
    created = ok_json(as_op(gateway, viewer, "operators", "get", carol, "--json"))
    assert created["roles"] == ["ROLE_VIEWER"] and created["displayName"] == "Carol"

    # The same command on an existing operator proposes new roles.
    again = ok_json(
        as_op(gateway, bob, "changes", "propose-operator", carol, "viewer", "approver", "--json")
    )
    assert again["kind"] == "operator.set_roles"
    assert again["payload"]["roles"] == ["viewer", "approver"]
    rejected = ok_json(
        as_op(gateway, alice, "changes", "reject", again["name"], "--reason", "not now", "--json")
    )
    assert rejected["state"] == "STATE_REJECTED" and rejected["rejectReason"] == "not now"
    shown = as_op(gateway, viewer, "changes", "get", again["name"])
    assert shown.exit_code == 0 and "not now" in shown.stdout and "REJECTED" in shown.stdout

    # Confirming a rejected change: FAILED_PRECONDITION with its reason and metadata.
    late = as_op(gateway, bob, "changes", "confirm", again["name"])
    assert late.exit_code == 1
    assert "FAILED_PRECONDITION" in late.stderr and "CHANGE_NOT_PENDING" in late.stderr
    assert "state: REJECTED" in late.stderr


def test_a_missing_role_is_named(gateway: RunningGateway, viewer: OperatorAccount) -> None:
    result = as_op(gateway, viewer, "changes", "propose-operator", _id("dave"), "viewer")
    assert result.exit_code == 1
    assert "ROLE_REQUIRED" in result.stderr and "`admin` role" in result.stderr


def test_a_bad_request_shows_its_field_violations(
    gateway: RunningGateway, alice: OperatorAccount
) -> None:
    result = as_op(gateway, alice, "changes", "propose-operator", "X", "viewer")
    assert result.exit_code == 1
    assert "INVALID_ARGUMENT" in result.stderr
    assert "field" in result.stderr


def test_audit_list_shows_the_refusals_newest_first(
    gateway: RunningGateway, alice: OperatorAccount, viewer: OperatorAccount
) -> None:
    assert as_op(gateway, alice, "changes", "confirm", "01" + "0" * 24).exit_code == 1
    audit = ok_json(as_op(gateway, viewer, "audit", "list", "--limit", "3", "--json"))
    entries = audit["adminAuditEntries"]
    assert 0 < len(entries) <= 3
    assert entries[0]["action"] == "ConfirmChange"
    assert entries[0]["operator"] == f"operators/{alice.id}"
    table = as_op(gateway, viewer, "audit", "list", "--limit", "3")
    assert table.exit_code == 0 and "admin audit trail" in table.stdout
    assert "ConfirmChange" in table.stdout and alice.id in table.stdout


# ---------------------------------------------------------------- credentials


def test_a_credential_is_shown_once_works_and_stops_when_revoked(
    gateway: RunningGateway, alice: OperatorAccount, viewer: OperatorAccount
) -> None:
    created = as_op(gateway, alice, "credentials", "create", viewer.id, "--description", "ci")
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("awo_") and len(secret) > 40
    assert "only time the secret is shown" in " ".join(created.stderr.split())
    (line,) = [line for line in created.stdout.splitlines() if line.startswith("Created ")]
    name = line.split()[1]
    assert name.startswith(f"operators/{viewer.id}/credentials/")
    assert line.endswith(f"({secret[:12]}).")

    works = awctl("operators", "list", target=gateway.grpc_target, credential=secret)
    assert works.exit_code == 0, works.output

    revoked = ok_json(as_op(gateway, alice, "credentials", "revoke", name, "--json"))
    assert revoked["name"] == name and revoked["revokeTime"]
    assert "secret" not in revoked

    refused = awctl("operators", "list", target=gateway.grpc_target, credential=secret)
    assert refused.exit_code == 1 and "UNAUTHENTICATED" in refused.stderr


def test_a_bad_credential_is_a_clear_unauthenticated_error(gateway: RunningGateway) -> None:
    forged = "awo_0badc0de_" + "5" * 64
    result = awctl("operators", "list", target=gateway.grpc_target, credential=forged)
    assert result.exit_code == 1
    assert "UNAUTHENTICATED" in result.stderr
    assert "awo_0badc0de…" in result.stderr and "AWCTL_CREDENTIAL" in result.stderr
    assert "5555" not in result.output  # only the prefix is ever shown


def test_usage_errors_exit_2(gateway: RunningGateway, alice: OperatorAccount) -> None:
    assert awctl("operators", "list").exit_code == 2  # nothing configured
    nothing = awctl("operators", "list")
    assert "AWCTL_TARGET" in nothing.stderr and "make up" in nothing.stderr
    assert as_op(gateway, alice, "changes", "list", "--state", "bogus").exit_code == 2
    assert as_op(gateway, alice, "changes", "propose-operator", "eve", "root").exit_code == 2
    bad_name = as_op(gateway, alice, "credentials", "revoke", "awo_12345678")
    assert bad_name.exit_code == 2 and "operators/<operator>/credentials/<id>" in bad_name.stderr


# ---------------------------------------------------------------- no gateway


def test_an_unreachable_target_is_a_clear_message() -> None:
    target = f"127.0.0.1:{free_port()}"
    result = awctl(
        "--timeout", "3", "operators", "list", target=target, credential="awo_12345678_" + "a" * 64
    )
    assert result.exit_code == 1
    assert "UNAVAILABLE" in result.stderr
    message = " ".join(result.stderr.split())
    assert f"could not reach the gateway at {target} (from AWCTL_TARGET)" in message
    assert "make up" in message


def test_the_stack_file_supplies_target_and_credential(tmp_path: Path) -> None:
    stack = tmp_path / "stack.json"
    credential = "awo_feedf00d_" + "b" * 64
    stack.write_text(json.dumps({"grpc_target": "127.0.0.1:50051", "admin_credential": credential}))
    result = awctl("config", stack_json=str(stack))
    assert result.exit_code == 0, result.output
    assert "127.0.0.1:50051" in result.stdout and "awo_feedf00d…" in result.stdout
    assert "bbbb" not in result.stdout
    flags = awctl("--target", "127.0.0.2:1", "config", stack_json=str(stack))
    assert "127.0.0.2:1" in flags.stdout and "--target" in flags.stdout


def test_resolve_order_and_prefixes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = tmp_path / "stack.json"
    stack.write_text(json.dumps({"grpc_target": "127.0.0.1:1", "admin_credential": "awo_1_x"}))
    monkeypatch.setenv("AWCTL_STACK_JSON", str(stack))
    monkeypatch.setenv("AWCTL_TARGET", "127.0.0.1:2")
    monkeypatch.delenv("AWCTL_CREDENTIAL", raising=False)
    config = resolve(None, None)
    assert (config.target, config.target_source) == ("127.0.0.1:2", "AWCTL_TARGET")
    assert config.credential == "awo_1_x" and "admin_credential" in config.credential_source
    assert resolve("127.0.0.1:3", "awo_2_y").target_source == "--target"
    stack.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        resolve(None, None)
    with pytest.raises(ConfigError, match="header"):
        resolve("127.0.0.1:3", "awo_1_x\n")
    assert credential_prefix("awo_0badc0de_secret") == "awo_0badc0de…"
    assert "secret" not in credential_prefix("secretsecretsecret")


def test_propose_rotation_and_its_progress_shown(
    gateway: RunningGateway, alice: OperatorAccount
) -> None:
    wallet = "0x" + "ab" * 20
    proposed = ok_json(
        as_op(gateway, alice, "changes", "propose-rotation", "polygon", wallet, "1000", "--json")
    )
    assert proposed["kind"] == "hot_wallet.rotate" and proposed["state"] == "STATE_PROPOSED"
    assert proposed["payload"] == {"chain": "polygon", "wallet": wallet, "gas_wei": "1000"}
    bad = as_op(gateway, alice, "changes", "propose-rotation", "polygon", wallet, "0")
    assert bad.exit_code == 1 and "gas_wei" in bad.stderr
    # A running rotation as GetChange returns it: each step, its state and hashes.
    rotation = admin_pb2.HotWalletRotation(
        name="rotations/01ROTATION",
        state=admin_pb2.HotWalletRotation.STATE_RUNNING,
        step=admin_pb2.HotWalletRotation.STEP_SWEEP,
        old_wallet_address=wallet,
        new_wallet_address="0x" + "cd" * 20,
        operations=[
            admin_pb2.HotWalletRotation.Operation(
                step=admin_pb2.HotWalletRotation.STEP_ENABLE_OPERATOR,
                operation=admin_pb2.TreasuryOperation(
                    state=admin_pb2.TreasuryOperation.STATE_EXECUTED, transaction_hash="0xe1"
                ),
            )
        ],
        sweep_transaction_hash="0x5e",
        sweep_value_wei="42",
    )
    change = admin_pb2.Change(
        name="changes/01CHANGE", kind="hot_wallet.rotate", hot_wallet_rotation=rotation
    )
    out = Console(file=io.StringIO(), width=200)
    out.print(render.change_fields(change))
    text = out.file.getvalue()  # type: ignore[attr-defined]
    for shown in ("rotations/01ROTATION", "RUNNING", "SWEEP", "ENABLE_OPERATOR", "EXECUTED 0xe1"):
        assert shown in text, text
    assert "0x5e (42 wei)" in text
