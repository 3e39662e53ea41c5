"""Conversions from the admin API's rows to its `admin_pb2` messages."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

from google.protobuf import struct_pb2, timestamp_pb2

from assetwithdrawal.admin.v1 import admin_pb2
from svc_gateway.admin import changes
from svc_gateway.admin.names import BLOCKED_PREFIX
from withdrawal_shared.amounts import format_amount
from withdrawal_shared.approvals import blocklist, rule_admin
from withdrawal_shared.approvals import core as approvals
from withdrawal_shared.approvals.rules import Rule
from withdrawal_shared.db import tier_admin
from withdrawal_shared.db.admin_audit import DENIED, FAILED, SUCCEEDED
from withdrawal_shared.db.models import (
    AdminAudit,
    AdminChange,
    HotWalletRotation,
    Operator,
    OperatorCredential,
    SafeTransaction,
    Token,
)
from withdrawal_shared.db.operators import decode_roles, operator_name
from withdrawal_shared.db.rotation_changes import STEPS, Step, rotation_name
from withdrawal_shared.db.treasury_changes import operation_name

ROLE_VALUES = {
    "viewer": admin_pb2.ROLE_VIEWER,
    "operator": admin_pb2.ROLE_OPERATOR,
    "approver": admin_pb2.ROLE_APPROVER,
    "admin": admin_pb2.ROLE_ADMIN,
}


OUTCOMES = {
    SUCCEEDED: admin_pb2.AdminAuditEntry.OUTCOME_SUCCEEDED,
    DENIED: admin_pb2.AdminAuditEntry.OUTCOME_DENIED,
    FAILED: admin_pb2.AdminAuditEntry.OUTCOME_FAILED,
}


def timestamp_or_none(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.replace(tzinfo=dt.UTC))
    return ts


def struct_or_none(text: str | None) -> struct_pb2.Struct | None:
    if text is None:
        return None
    value = struct_pb2.Struct()
    value.update(json.loads(text))
    return value


def operator_to_proto(row: Operator) -> admin_pb2.Operator:
    return admin_pb2.Operator(
        name=operator_name(row.id),
        display_name=row.display_name,
        roles=[ROLE_VALUES[r.value] for r in sorted(decode_roles(row.roles), key=role_order)],
        state=admin_pb2.Operator.STATE_ACTIVE if row.enabled else admin_pb2.Operator.STATE_DISABLED,
        create_time=timestamp_or_none(row.create_time),
        update_time=timestamp_or_none(row.update_time),
    )


def role_order(role: object) -> int:
    return list(ROLE_VALUES).index(str(role))


def credential_to_proto(row: OperatorCredential, secret: str = "") -> admin_pb2.OperatorCredential:
    return admin_pb2.OperatorCredential(
        name=f"{operator_name(row.operator_id)}/credentials/{row.prefix.split('_', 1)[1]}",
        prefix=row.prefix,
        secret=secret,
        description=row.description,
        create_time=timestamp_or_none(row.create_time),
        revoke_time=timestamp_or_none(row.revoke_time),
    )


def treasury_operation_to_proto(row: SafeTransaction) -> admin_pb2.TreasuryOperation:
    return admin_pb2.TreasuryOperation(
        name=operation_name(row.id),
        state=admin_pb2.TreasuryOperation.State.Value(f"STATE_{row.state}"),
        safe_nonce=row.safe_nonce,
        safe_transaction_hash=row.safe_tx_hash or "",
        transaction_hash=row.tx_hash or "",
        failure_reason=row.failure_reason,
        update_time=timestamp_or_none(row.update_time),
    )


def rotation_to_proto(
    row: HotWalletRotation, operations: Sequence[SafeTransaction] = ()
) -> admin_pb2.HotWalletRotation:
    """A rotation with its Safe steps (`operations`, the rows linked to it)."""
    ordered = sorted(operations, key=lambda op: STEPS.index(Step(op.rotation_step or Step.DONE)))
    return admin_pb2.HotWalletRotation(
        name=rotation_name(row.id),
        state=admin_pb2.HotWalletRotation.State.Value(f"STATE_{row.state}"),
        step=admin_pb2.HotWalletRotation.Step.Value(f"STEP_{row.step}"),
        old_wallet_address=row.old_wallet,
        new_wallet_address=row.new_wallet or "",
        operations=[
            admin_pb2.HotWalletRotation.Operation(
                step=admin_pb2.HotWalletRotation.Step.Value(f"STEP_{op.rotation_step}"),
                operation=treasury_operation_to_proto(op),
            )
            for op in ordered
        ],
        sweep_transaction_hash=row.sweep_tx_hash or "",
        sweep_value_wei=row.sweep_value_wei or "",
        failure_reason=row.failure_reason,
        update_time=timestamp_or_none(row.update_time),
    )


def change_to_proto(
    row: AdminChange,
    operation: SafeTransaction | None = None,
    rotation: admin_pb2.HotWalletRotation | None = None,
) -> admin_pb2.Change:
    """The change; with `operation`, the treasury operation it ordered; with `rotation`, the
    key rotation it started."""
    return admin_pb2.Change(
        treasury_operation=None if operation is None else treasury_operation_to_proto(operation),
        hot_wallet_rotation=rotation,
        name=changes.change_name(row.id),
        kind=row.kind,
        payload=struct_or_none(row.payload),
        state=admin_pb2.Change.State.Value(f"STATE_{row.state}"),
        proposer=operator_name(row.proposed_by),
        decider=operator_name(row.decided_by) if row.decided_by else "",
        target=row.target,
        reject_reason=row.reject_reason,
        create_time=timestamp_or_none(row.create_time),
        expire_time=timestamp_or_none(row.expire_time),
        decide_time=timestamp_or_none(row.decide_time),
    )


def audit_to_proto(row: AdminAudit) -> admin_pb2.AdminAuditEntry:
    return admin_pb2.AdminAuditEntry(
        name=f"auditEntries/{row.seq}",
        operator=operator_name(row.operator_id),
        action=row.action,
        target=row.target,
        before=struct_or_none(row.before_value),
        after=struct_or_none(row.after_value),
        outcome=OUTCOMES[row.outcome],
        reason=row.reason,
        create_time=timestamp_or_none(row.occur_time),
        hash=row.hash,
    )


def pending_to_proto(row: approvals.PendingApproval, token: Token) -> admin_pb2.PendingApproval:
    return admin_pb2.PendingApproval(
        withdrawal=f"withdrawals/{row.withdrawal_id}",
        partner=row.partner_id,
        chain=row.chain,
        token=token.symbol,
        recipient_address=row.recipient,
        amount=format_amount(row.amount, token.decimals),
        creator=row.created_by or "",
        rule=row.rule_name,
        approvals_required=row.approvals_required,
        approvers=[operator_name(o) for o in row.approved_by],
        create_time=timestamp_or_none(row.create_time),
        request_time=timestamp_or_none(row.requested_time),
    )


def blocked_to_proto(row: blocklist.Blocked) -> admin_pb2.BlockedAddress:
    return admin_pb2.BlockedAddress(
        name=BLOCKED_PREFIX + row.address,
        address=row.address,
        reason=row.reason,
        creator=operator_name(row.added_by),
        create_time=timestamp_or_none(row.create_time),
    )


def tier_to_proto(tier: tier_admin.TierInfo) -> admin_pb2.Tier:
    result = admin_pb2.Tier(
        name=f"tiers/{tier.name}",
        description=tier.description,
        default_priority=tier.default_priority,
    )
    for limits in tier.limits:
        item = result.limits.add(chain=limits.chain, token=limits.token)
        if limits.per_withdrawal_max is not None:
            item.per_withdrawal_max = limits.per_withdrawal_max
        if limits.daily_amount is not None:
            item.daily_amount = limits.daily_amount
        if limits.daily_count is not None:
            item.daily_count = limits.daily_count
    return result


def rule_to_proto(rule: Rule) -> admin_pb2.ApprovalRule:
    result = admin_pb2.ApprovalRule(
        name=rule_admin.rule_name(rule.name),
        position=rule.position,
        action=admin_pb2.ApprovalRule.Action.Value(f"ACTION_{rule.action.value}"),
        approvals_required=rule.approvals_required,
        enabled=rule.enabled,
        conditions=admin_pb2.ApprovalRuleConditions(),
    )
    for key, value in rule_admin.rule_as_dict(rule)["conditions"].items():
        setattr(result.conditions, key, value)
    return result
