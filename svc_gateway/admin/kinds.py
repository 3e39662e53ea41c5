"""The configuration change kinds the admin API accepts: one line per kind.

To add one, write its transport-neutral `validate(payload) -> target` and
`apply(session, payload) -> ChangeEffect` (see `withdrawal_shared.db.changes`) and register
it below; CreateChange then accepts it and ConfirmChange applies it under four eyes.
"""

from __future__ import annotations

from withdrawal_shared.approvals import rule_admin
from withdrawal_shared.db import operators, rotation_changes, tier_changes, treasury_changes
from withdrawal_shared.db.changes import ChangeRegistry


def change_kinds() -> ChangeRegistry:
    """Every change kind, by name."""
    registry = ChangeRegistry()
    registry.register("operator.create", operators.validate_create, operators.apply_create)
    registry.register("operator.set_roles", operators.validate_set_roles, operators.apply_set_roles)
    registry.register("operator.disable", operators.validate_disable, operators.apply_disable)
    # ---- tiers and limits
    tiers = tier_changes
    registry.register("tier.set_limits", tiers.validate_set_limits, tiers.apply_set_limits)
    registry.register("user.assign_tier", tiers.validate_assign_tier, tiers.apply_assign_tier)
    registry.register(
        "partner.set_default_tier", tiers.validate_default_tier, tiers.apply_default_tier
    )
    registry.register(
        "partner.set_daily_limit", tiers.validate_daily_limit, tiers.apply_daily_limit
    )
    # ---- approval rules
    registry.register("rule.upsert", rule_admin.validate_upsert, rule_admin.apply_upsert)
    registry.register("rule.delete", rule_admin.validate_delete, rule_admin.apply_delete)
    # ---- treasury operations, executed by the treasury Safe (withdrawal_shared.treasury_ops)
    treasury_changes.register(registry)
    # ---- a hot wallet's key rotation, run by the processor (svc_processor.rotation)
    rotation_changes.register(registry)
    return registry
