"""Output: rich tables for people, `--json` for programs, errors on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from assetwithdrawal.admin.v1 import admin_pb2
from awctl.client import ApiError


def stdout() -> Console:
    # Made per use so that whatever sys.stdout is at the time (a pipe, a test runner) is used.
    return Console(file=sys.stdout, highlight=False, soft_wrap=False)


def stderr() -> Console:
    return Console(file=sys.stderr, highlight=False)


def as_dict(message: Message) -> dict[str, Any]:
    """The message as the REST API shows it (camelCase field names, enums by name)."""
    return json_format.MessageToDict(message)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")


def when(stamp: Timestamp) -> str:
    if not stamp.seconds and not stamp.nanos:
        return ""
    return stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%SZ")


def short(name: str) -> str:
    """`operators/alice` -> `alice`; `changes/01j…` -> `01j…`."""
    return name.rpartition("/")[2]


def role_name(role: int) -> str:
    return admin_pb2.Role.Name(role).removeprefix("ROLE_").lower()  # type: ignore[arg-type]


def enum_name(enum: Any, value: int) -> str:
    return str(enum.Name(value)).removeprefix("STATE_").removeprefix("OUTCOME_")


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> Table:
    result = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        result.add_column(column, overflow="fold")
    for row in rows:
        result.add_row(*(escape(cell) for cell in row))
    return result


def fields(title: str, pairs: Iterable[tuple[str, str]]) -> Table:
    """One resource as a two-column table."""
    result = Table(title=title, title_justify="left", show_header=False)
    result.add_column("field", style="bold")
    result.add_column("value", overflow="fold")
    for key, value in pairs:
        result.add_row(key, escape(value))
    return result


# ---------------------------------------------------------------- resources


def operator_row(op: admin_pb2.Operator) -> list[str]:
    return [
        short(op.name),
        op.display_name,
        ", ".join(role_name(r) for r in op.roles),
        enum_name(admin_pb2.Operator.State, op.state),
        when(op.update_time),
    ]


OPERATOR_COLUMNS = ("operator", "display name", "roles", "state", "updated")


def operator_fields(op: admin_pb2.Operator) -> Table:
    return fields(
        op.name,
        [
            ("display name", op.display_name),
            ("roles", ", ".join(role_name(r) for r in op.roles)),
            ("state", enum_name(admin_pb2.Operator.State, op.state)),
            ("created", when(op.create_time)),
            ("updated", when(op.update_time)),
        ],
    )


CHANGE_COLUMNS = ("change", "kind", "target", "state", "proposer", "decider", "created")


def change_row(change: admin_pb2.Change) -> list[str]:
    return [
        short(change.name),
        change.kind,
        change.target,
        enum_name(admin_pb2.Change.State, change.state),
        short(change.proposer),
        short(change.decider),
        when(change.create_time),
    ]


def change_fields(change: admin_pb2.Change) -> Table:
    payload = json.dumps(json_format.MessageToDict(change.payload), sort_keys=True)
    pairs = [
        ("kind", change.kind),
        ("target", change.target),
        ("payload", payload),
        ("state", enum_name(admin_pb2.Change.State, change.state)),
        ("proposer", change.proposer),
        ("decider", change.decider),
        ("reject reason", change.reject_reason),
        ("created", when(change.create_time)),
        ("expires", when(change.expire_time)),
        ("decided", when(change.decide_time)),
    ]
    if change.HasField("hot_wallet_rotation"):
        pairs += rotation_pairs(change.hot_wallet_rotation)
    return fields(change.name, [(k, v) for k, v in pairs if v])


def rotation_pairs(rotation: admin_pb2.HotWalletRotation) -> list[tuple[str, str]]:
    """A key rotation's progress: its state, next step, wallets, each Safe step and the sweep."""
    step_names = admin_pb2.HotWalletRotation.Step
    pairs = [
        ("rotation", rotation.name),
        ("rotation state", enum_name(admin_pb2.HotWalletRotation.State, rotation.state)),
        ("next step", enum_name(step_names, rotation.step).removeprefix("STEP_")),
        ("old wallet", rotation.old_wallet_address),
        ("new wallet", rotation.new_wallet_address),
    ]
    for each in rotation.operations:
        op = each.operation
        state = enum_name(admin_pb2.TreasuryOperation.State, op.state)
        pairs.append(
            (
                enum_name(step_names, each.step).removeprefix("STEP_"),
                f"{state} {op.transaction_hash}".strip(),
            )
        )
    if rotation.sweep_transaction_hash:
        pairs.append(
            ("sweep", f"{rotation.sweep_transaction_hash} ({rotation.sweep_value_wei} wei)")
        )
    pairs.append(("rotation failure", rotation.failure_reason))
    return pairs


def credential_fields(credential: admin_pb2.OperatorCredential) -> Table:
    pairs = [
        ("prefix", credential.prefix),
        ("description", credential.description),
        ("created", when(credential.create_time)),
        ("revoked", when(credential.revoke_time)),
    ]
    return fields(credential.name, [(k, v) for k, v in pairs if v])


AUDIT_COLUMNS = ("entry", "time", "operator", "action", "target", "outcome", "reason")


def audit_row(entry: admin_pb2.AdminAuditEntry) -> list[str]:
    return [
        short(entry.name),
        when(entry.create_time),
        short(entry.operator),
        entry.action,
        entry.target,
        enum_name(admin_pb2.AdminAuditEntry.Outcome, entry.outcome),
        entry.reason,
    ]


# ---------------------------------------------------------------- approvals, blocklist, tiers


PENDING_COLUMNS = (
    "withdrawal",
    "partner",
    "amount",
    "recipient",
    "rule",
    "approvals",
    "approvers",
    "waiting since",
)


def pending_row(item: admin_pb2.PendingApproval) -> list[str]:
    return [
        short(item.withdrawal),
        item.partner,
        f"{item.amount} {item.token}",
        item.recipient_address,
        item.rule,
        f"{len(item.approvers)}/{item.approvals_required}",
        ", ".join(short(a) for a in item.approvers),
        when(item.request_time),
    ]


def decision_fields(decision: admin_pb2.ApprovalDecision) -> Table:
    return fields(
        decision.withdrawal,
        [
            ("state", decision.state),
            ("approvals", f"{decision.approvals} of {decision.approvals_required}"),
            ("counted", "yes" if decision.counted else "no (already recorded)"),
        ],
    )


def batch_decision_fields(decision: admin_pb2.BatchApprovalDecision) -> Table:
    refused = ", ".join(f"{n} {reason}" for reason, n in sorted(decision.refused.items()))
    return fields(
        decision.batch,
        [
            ("waiting rows decided", str(decision.pending)),
            ("approved (queued)", str(decision.approved)),
            ("approval recorded, more needed", str(decision.recorded)),
            ("rejected", str(decision.rejected)),
            ("already approved by you", str(decision.unchanged)),
            ("left undecided", refused or "none"),
        ],
    )


BLOCKED_COLUMNS = ("address", "reason", "blocked by", "since")


def blocked_row(item: admin_pb2.BlockedAddress) -> list[str]:
    return [item.address, item.reason, short(item.creator), when(item.create_time)]


def blocked_fields(item: admin_pb2.BlockedAddress) -> Table:
    return fields(
        item.name,
        [
            ("reason", item.reason),
            ("blocked by", item.creator),
            ("since", when(item.create_time)),
        ],
    )


TIER_COLUMNS = (
    "tier",
    "priority",
    "token",
    "per withdrawal",
    "per user 24h",
    "count 24h",
)


def tier_rows(tier: admin_pb2.Tier) -> list[list[str]]:
    def shown(
        limits: admin_pb2.TierLimits,
        field: Literal["per_withdrawal_max", "daily_amount", "daily_count"],
    ) -> str:
        return str(getattr(limits, field)) if limits.HasField(field) else "-"

    if not tier.limits:
        return [[short(tier.name), tier.default_priority, "(no limits)", "", "", ""]]
    return [
        [
            short(tier.name),
            tier.default_priority,
            f"{limits.token} ({limits.chain})",
            shown(limits, "per_withdrawal_max"),
            shown(limits, "daily_amount"),
            shown(limits, "daily_count"),
        ]
        for limits in tier.limits
    ]


# ---------------------------------------------------------------- errors


def error(exc: ApiError) -> None:
    """The failed call on stderr: status, message, ErrorInfo, field violations, what to do."""
    console = stderr()
    console.print(f"[bold red]error:[/] {exc.code.name}: {escape(exc.message)}")
    if exc.reason:
        console.print(f"  reason: [bold]{escape(exc.reason)}[/]")
    for key, value in sorted(exc.metadata.items()):
        console.print(f"  {escape(key)}: {escape(value)}")
    for name, description in exc.violations:
        console.print(f"  field [bold]{escape(name)}[/]: {escape(description)}")
    if exc.hint:
        console.print(f"[yellow]hint:[/] {escape(exc.hint)}")


def usage(message: str) -> None:
    stderr().print(f"[bold red]usage error:[/] {escape(message)}")
