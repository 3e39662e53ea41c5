"""awctl keys, pauses, tokens and rules against a real gateway (MariaDB and SQLite): a key
created by awctl works on the public API until `awctl keys revoke`; pausing, listing and
resuming (everything only with --all-scopes); token updates shown before and after; approval
rules changed only when a second admin confirms; a missing role named."""

from __future__ import annotations

import secrets
import time

import grpc
import pytest

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from tests.awctl.test_awctl import as_op, ok_json
from tests.support.gateway import OperatorAccount, Partner, RunningGateway
from withdrawal_shared.approvals.rules import Action, load_rules
from withdrawal_shared.db.operators import Role


def _id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def oper(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(_id("oper"), Role.OPERATOR)


@pytest.fixture(scope="module")
def admin1(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(_id("admin1"), Role.ADMIN)


@pytest.fixture(scope="module")
def admin2(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(_id("admin2"), Role.ADMIN)


@pytest.fixture(scope="module")
def viewer(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(_id("viewer"), Role.VIEWER)


def works_on_public_api(gateway: RunningGateway, token: str) -> bool:
    try:
        gateway.stub.ListWithdrawals(
            withdrawal_pb2.ListWithdrawalsRequest(),
            metadata=(("authorization", f"Bearer {token}"),),
        )
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        return False
    return True


def refused_within(gateway: RunningGateway, token: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while works_on_public_api(gateway, token):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ---------------------------------------------------------------- keys


def test_a_key_created_by_awctl_works_until_revoked(
    gateway: RunningGateway, partner_a: Partner, oper: OperatorAccount, viewer: OperatorAccount
) -> None:
    created = as_op(
        gateway,
        oper,
        "keys",
        "create",
        partner_a.id,
        "--scope",
        "withdrawals:read",
        "--rate-limit",
        "50",
        "--burst",
        "10",
    )
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("awk_") and len(token) > 40
    assert "only time the token is shown" in " ".join(created.stderr.split())
    (line,) = [line for line in created.stdout.splitlines() if line.startswith("Created ")]
    name = line.split()[1].rstrip(".")
    assert name == f"partners/{partner_a.id}/apiKeys/{token[:12]}"
    assert works_on_public_api(gateway, token)

    listed = ok_json(as_op(gateway, viewer, "keys", "list", partner_a.id, "--json"))
    (mine,) = [k for k in listed["apiKeys"] if k["name"] == name]
    assert mine["scopes"] == ["withdrawals:read"] and mine["rateLimitPerSecond"] == 50
    assert "token" not in mine
    table = as_op(gateway, viewer, "keys", "list", f"partners/{partner_a.id}")
    assert table.exit_code == 0 and token[:12] in table.stdout and token not in table.stdout

    revoked = ok_json(as_op(gateway, oper, "keys", "revoke", name, "--json"))
    assert revoked["name"] == name and revoked["revokeTime"]
    assert refused_within(gateway, token, 5)


def test_keys_usage_errors_and_a_viewer_gets_role_required(
    gateway: RunningGateway, partner_a: Partner, oper: OperatorAccount, viewer: OperatorAccount
) -> None:
    burst_alone = as_op(
        gateway, oper, "keys", "create", partner_a.id, "--scope", "withdrawals:read", "--burst", "5"
    )
    assert burst_alone.exit_code == 2 and "--rate-limit" in burst_alone.stderr
    assert as_op(gateway, oper, "keys", "create", partner_a.id).exit_code == 2  # no --scope
    bad_name = as_op(gateway, oper, "keys", "revoke", "awk_12345678")
    assert bad_name.exit_code == 2 and "partners/<partner>/apiKeys/<key>" in bad_name.stderr
    unknown = as_op(gateway, oper, "keys", "create", partner_a.id, "--scope", "everything")
    assert unknown.exit_code == 1 and "INVALID_ARGUMENT" in unknown.stderr
    assert "api_key.scopes" in unknown.stderr

    denied = as_op(gateway, viewer, "keys", "create", partner_a.id, "--scope", "withdrawals:read")
    assert denied.exit_code == 1 and denied.stdout == ""
    assert "PERMISSION_DENIED" in denied.stderr and "ROLE_REQUIRED" in denied.stderr
    assert "`operator` role" in " ".join(denied.stderr.split())


# ---------------------------------------------------------------- pauses


def test_pause_list_and_resume(
    gateway: RunningGateway, oper: OperatorAccount, viewer: OperatorAccount
) -> None:
    paused = ok_json(
        as_op(
            gateway,
            oper,
            "pauses",
            "pause",
            "--chain",
            "polygon",
            "--token",
            "USDC",
            "--reason",
            "contract upgrade",
            "--json",
        )
    )
    assert paused["scopeKey"] == "polygon/USDC" and paused["paused"] is True
    assert paused["actor"] == oper.id and paused["reason"] == "contract upgrade"
    table = as_op(gateway, viewer, "pauses", "list")
    assert table.exit_code == 0, table.output
    row = next(line for line in table.stdout.splitlines() if "polygon/USDC" in line)
    assert "yes" in row and "contract upgrade" in row and oper.id in row

    everything = as_op(gateway, oper, "pauses", "pause", "--reason", "incident 7")
    assert everything.exit_code == 0 and "payout pause *" in everything.stdout

    # Resuming everything needs --all-scopes; nothing was resumed by the attempt.
    bare = as_op(gateway, oper, "pauses", "resume")
    assert bare.exit_code == 2 and "--all-scopes" in bare.stderr
    both = as_op(gateway, oper, "pauses", "resume", "--all-scopes", "--chain", "polygon")
    assert both.exit_code == 2
    assert as_op(gateway, oper, "pauses", "resume", "--token", "USDC").exit_code == 2
    in_force = ok_json(as_op(gateway, viewer, "pauses", "list", "--json"))["payoutPauses"]
    assert {p["scopeKey"] for p in in_force} >= {"*", "polygon/USDC"}

    token_resumed = as_op(
        gateway, oper, "pauses", "resume", "--chain", "polygon", "--token", "USDC"
    )
    assert token_resumed.exit_code == 0, token_resumed.output
    assert "still paused: *" in " ".join(token_resumed.stderr.split())
    all_resumed = ok_json(as_op(gateway, oper, "pauses", "resume", "--all-scopes", "--json"))
    assert all_resumed["scopeKey"] == "*" and "paused" not in all_resumed  # false
    assert ok_json(as_op(gateway, viewer, "pauses", "list", "--json")) == {"payoutPauses": []}
    history = ok_json(as_op(gateway, viewer, "pauses", "list", "--all", "--json"))
    assert {p["scopeKey"] for p in history["payoutPauses"]} >= {"*", "polygon/USDC"}

    denied = as_op(gateway, viewer, "pauses", "pause", "--reason", "x")
    assert denied.exit_code == 1 and "ROLE_REQUIRED" in denied.stderr


# ---------------------------------------------------------------- tokens


def test_tokens_list_and_update_show_before_and_after(
    gateway: RunningGateway, admin1: OperatorAccount, viewer: OperatorAccount
) -> None:
    listed = ok_json(as_op(gateway, viewer, "tokens", "list", "--json"))
    usdc = next(t for t in listed["tokens"] if t["name"] == "chains/polygon/tokens/USDC")
    table = as_op(gateway, viewer, "tokens", "list", "--chain", "polygon")
    assert table.exit_code == 0 and "polygon/USDC" in table.stdout

    updated = as_op(
        gateway, admin1, "tokens", "update", "polygon", "USDC", "--max-amount", "12345.5"
    )
    assert updated.exit_code == 0, updated.output
    row = next(line for line in updated.stdout.splitlines() if "max amount" in line)
    assert f"{usdc['maxAmount']} USDC" in row and "12345.5 USDC" in row

    disabled = ok_json(
        as_op(gateway, admin1, "tokens", "update", "polygon", "USDC", "--disable", "--json")
    )
    assert disabled["before"]["enabled"] is True and disabled["after"]["enabled"] is False
    assert disabled["after"]["maxAmount"] == "12345.5"
    restored = ok_json(
        as_op(
            gateway,
            admin1,
            "tokens",
            "update",
            "polygon",
            "USDC",
            "--enable",
            "--max-amount",
            usdc["maxAmount"],
            "--json",
        )
    )
    assert restored["after"] == usdc

    assert as_op(gateway, admin1, "tokens", "update", "polygon", "USDC").exit_code == 2
    bad = as_op(gateway, admin1, "tokens", "update", "polygon", "USDC", "--max-amount", "1.1234567")
    assert bad.exit_code == 1 and "token.max_amount" in bad.stderr
    denied = as_op(gateway, viewer, "tokens", "update", "polygon", "USDC", "--disable")
    assert denied.exit_code == 1 and "ROLE_REQUIRED" in denied.stderr
    assert "`admin` role" in " ".join(denied.stderr.split())


# ---------------------------------------------------------------- rules


def _loaded(gateway: RunningGateway) -> dict[str, tuple[int, Action, int]]:
    with gateway.server.store.sessions() as session:
        rules = load_rules(session).rules
    return {r.name: (r.position, r.action, r.approvals_required) for r in rules}


def test_a_rule_takes_effect_only_when_a_second_admin_confirms(
    gateway: RunningGateway,
    admin1: OperatorAccount,
    admin2: OperatorAccount,
    viewer: OperatorAccount,
) -> None:
    name = _id("big-partner")
    before = _loaded(gateway)
    proposed = ok_json(
        as_op(
            gateway,
            admin1,
            "rules",
            "propose-upsert",
            name,
            "--position",
            "5",
            "--action",
            "REQUIRE_APPROVALS",
            "--approvals",
            "2",
            "--token-symbol",
            "USDC",
            "--min-amount",
            "1000000000",
            "--first-payment",
            "--json",
        )
    )
    change = proposed["change"]
    assert change["kind"] == "rule.upsert" and change["target"] == f"approvalRules/{name}"
    assert proposed["before"] is None
    assert proposed["after"]["conditions"] == {
        "token_symbol": "USDC",
        "min_amount": "1000000000",
        "first_payment": True,
    }
    assert _loaded(gateway) == before  # proposed only: the processor's rules are unchanged
    listed = ok_json(as_op(gateway, viewer, "rules", "list", "--json"))["approvalRules"]
    assert f"approvalRules/{name}" not in [r["name"] for r in listed]

    self_confirmed = as_op(gateway, admin1, "changes", "confirm", change["name"])
    assert self_confirmed.exit_code == 1 and "SELF_CONFIRMATION" in self_confirmed.stderr
    assert _loaded(gateway) == before

    confirmed = as_op(gateway, admin2, "changes", "confirm", change["name"])
    assert confirmed.exit_code == 0 and "APPLIED" in confirmed.stdout
    assert _loaded(gateway) == {**before, name: (5, Action.REQUIRE_APPROVALS, 2)}
    table = as_op(gateway, viewer, "rules", "list")
    row = next(line for line in table.stdout.splitlines() if name in line)
    assert "REQUIRE_APPROVALS" in row and "min_amount=1000000000" in row and "yes" in row

    # Replacing it shows now / once confirmed; disabling takes it out of what is loaded.
    replaced = as_op(
        gateway, admin2, "rules", "propose-upsert", name, "--position", "5", "--action",
        "REJECT", "--disabled",
    )  # fmt: skip
    assert replaced.exit_code == 0, replaced.output
    assert "once confirmed" in replaced.stdout and "REQUIRE_APPROVALS" in replaced.stdout
    replace_id = next(
        line.split()[1] for line in replaced.stdout.splitlines() if line.startswith("Proposed ")
    )
    assert as_op(gateway, admin1, "changes", "confirm", replace_id).exit_code == 0
    assert name not in _loaded(gateway)

    deleted = ok_json(as_op(gateway, admin1, "rules", "propose-delete", name, "--json"))
    assert deleted["before"]["action"] == "REJECT" and deleted["after"] is None
    assert ok_json(as_op(gateway, viewer, "rules", "list", "--json"))["approvalRules"]
    assert as_op(gateway, admin2, "changes", "confirm", deleted["change"]["name"]).exit_code == 0
    listed = ok_json(as_op(gateway, viewer, "rules", "list", "--json"))["approvalRules"]
    assert f"approvalRules/{name}" not in [r["name"] for r in listed]
    assert _loaded(gateway) == before


def test_rule_proposals_are_checked(
    gateway: RunningGateway, admin1: OperatorAccount, viewer: OperatorAccount
) -> None:
    usage = as_op(
        gateway, admin1, "rules", "propose-upsert", "x", "--position", "1", "--action",
        "REQUIRE_APPROVALS",
    )  # fmt: skip
    assert usage.exit_code == 2 and "--approvals" in usage.stderr
    bad = as_op(
        gateway, admin1, "rules", "propose-upsert", "x", "--position", "1", "--action",
        "REJECT", "--max-amount", "10.5",
    )  # fmt: skip
    assert bad.exit_code == 1 and "change.payload.conditions.max_amount" in bad.stderr
    denied = as_op(gateway, viewer, "rules", "propose-delete", "default")
    assert denied.exit_code == 1 and "ROLE_REQUIRED" in denied.stderr
