"""Managing the approval rules (`approval_rules`): list them, add or replace one, delete one.

Transport-neutral: each function works in the caller's session (the caller commits and
audits) and returns the rule before and after, JSON-ready (amounts as strings of base units,
never numbers). The admin API applies them only under four eyes, through the change kinds
`rule.upsert` and `rule.delete` (registered in `svc_gateway.admin.kinds`): validated when
proposed, applied when a second admin confirms. The processor reads the rules once per
consumer batch (`rules.load_rules`), so an applied change takes effect within one batch.

A rule is known by its name (`approvalRules/{name}` in the admin API). `rule.upsert` carries
the whole rule, so what the second admin confirms is exactly what will be in force:

    {"name": "usdc-auto-below-10k", "position": 10, "action": "AUTO_APPROVE",
     "approvals_required": 0, "enabled": true,
     "conditions": {"token_symbol": "USDC", "max_amount": "10000000000"}}

`approvals_required` (>= 1) is for REQUIRE_APPROVALS only (0 or absent otherwise);
`enabled` defaults to true; a condition left out is not checked (NULL). Conditions are read
as `rules.Rule` reads them: `token_symbol` (up to 16 characters), `min_amount` (inclusive) and
`max_amount` (exclusive) as decimal strings of the token's base units, `partner_id`, `tier`,
`first_payment` and `allowlisted` (true or false), `velocity_hours` with
`velocity_min_count` (both or neither, each at least 1). `rule.delete` is `{"name": …}`.
Two rules cannot share a position: an upsert onto another rule's position cannot be applied
until that rule moves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from withdrawal_shared.approvals.rules import Action, Rule
from withdrawal_shared.db.changes import ChangeEffect, ChangeNotApplicable
from withdrawal_shared.db.models import ApprovalRule
from withdrawal_shared.errors import FieldViolation, invalid_argument, quoted

RULE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
RULE_PREFIX = "approvalRules/"
MAX_POSITION = 2**31 - 1
MAX_APPROVALS = 100
MAX_AMOUNT_DIGITS = 65  # the columns' DECIMAL(65, 0)
MAX_COUNT = 1_000_000
STRING_CONDITIONS = {"token_symbol": 16, "partner_id": 64, "tier": 32}
AMOUNT_CONDITIONS = ("min_amount", "max_amount")
BOOL_CONDITIONS = ("first_payment", "allowlisted")
COUNT_CONDITIONS = ("velocity_hours", "velocity_min_count")
CONDITIONS = (*STRING_CONDITIONS, *AMOUNT_CONDITIONS, *BOOL_CONDITIONS, *COUNT_CONDITIONS)
UPSERT_FIELDS = {"name", "position", "action", "approvals_required", "enabled", "conditions"}
_PAYLOAD = "change.payload"


def rule_name(name: str) -> str:
    """The resource name of a rule: `approvalRules/{name}`."""
    return RULE_PREFIX + name


@dataclass(frozen=True)
class RuleChange:
    """A rule before and after a change (None: absent), as `rule_as_dict` renders it."""

    name: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def rule_as_dict(rule: Rule) -> dict[str, Any]:
    """The rule as the audit trail records it (and a `rule.upsert` payload carries it):
    amounts as strings, conditions not checked left out."""
    conditions: dict[str, Any] = {}
    for key in CONDITIONS:
        value = getattr(rule, key)
        if value is not None:
            conditions[key] = str(value) if key in AMOUNT_CONDITIONS else value
    return {
        "name": rule.name,
        "position": rule.position,
        "action": rule.action.value,
        "approvals_required": rule.approvals_required,
        "enabled": rule.enabled,
        "conditions": conditions,
    }


def list_rules(session: Session) -> list[Rule]:
    """Every rule, disabled ones too, by position."""
    rows = session.scalars(select(ApprovalRule).order_by(ApprovalRule.position))
    return [Rule.from_row(row) for row in rows]


def _row(session: Session, name: str, *, lock: bool = False) -> ApprovalRule | None:
    query = select(ApprovalRule).where(ApprovalRule.name == name)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def upsert_rule(session: Session, rule: Rule) -> RuleChange:
    """Add the rule, or replace the one of the same name (every field, conditions included).
    ChangeNotApplicable when another rule holds its position."""
    row = _row(session, rule.name, lock=True)
    holder = session.scalars(
        select(ApprovalRule).where(ApprovalRule.position == rule.position).with_for_update()
    ).one_or_none()
    if holder is not None and holder.name != rule.name:
        raise ChangeNotApplicable(
            f"position {rule.position} is held by the rule {holder.name!r}; move or delete it "
            "first, or choose another position"
        )
    before = None if row is None else rule_as_dict(Rule.from_row(row))
    if row is None:
        row = ApprovalRule(name=rule.name)
        session.add(row)
    row.position = rule.position
    row.action = rule.action.value
    row.approvals_required = rule.approvals_required
    row.enabled = rule.enabled
    for key in CONDITIONS:
        setattr(row, key, getattr(rule, key))
    session.flush()
    return RuleChange(rule.name, before, rule_as_dict(Rule.from_row(row)))


def delete_rule(session: Session, name: str) -> RuleChange:
    """Delete the rule of this name; ChangeNotApplicable when there is none. (With no rule
    left, every withdrawal needs one approval: the rules fail closed.)"""
    row = _row(session, name, lock=True)
    if row is None:
        raise ChangeNotApplicable(f"there is no approval rule named {quoted(name)}")
    before = rule_as_dict(Rule.from_row(row))
    session.delete(row)
    session.flush()
    return RuleChange(name, before, None)


# ---------------------------------------------------------------- reading a payload


def _integer(value: Any, field: str, low: int, high: int, out: list[FieldViolation]) -> int:
    """A whole number (JSON numbers arrive as floats through google.protobuf.Struct)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        out.append(FieldViolation(field, f"must be a whole number from {low} to {high}"))
        return low
    if isinstance(value, float) and not value.is_integer():
        out.append(FieldViolation(field, f"must be a whole number, not {quoted(str(value))}"))
        return low
    number = int(value)
    if not low <= number <= high:
        out.append(FieldViolation(field, f"must be from {low} to {high}, not {number}"))
    return number


def _amount(value: Any, field: str, out: list[FieldViolation]) -> int | None:
    """Base units as a string of digits (a number would lose precision on the way)."""
    if not isinstance(value, str) or not value.isascii() or not value.isdigit():
        out.append(
            FieldViolation(
                field,
                f"{quoted(str(value))} is not an amount: a string of digits, in the token's "
                'base units (1 USDC is "1000000")',
            )
        )
        return None
    if len(value.lstrip("0")) > MAX_AMOUNT_DIGITS:
        out.append(FieldViolation(field, f"must have at most {MAX_AMOUNT_DIGITS} digits"))
        return None
    return int(value)


def _condition(key: str, item: Any, where: str, out: list[FieldViolation]) -> Any:
    """One condition's value as `Rule` holds it (None when it is wrong: `out` says why)."""
    if key in STRING_CONDITIONS:
        limit = STRING_CONDITIONS[key]
        if isinstance(item, str) and 0 < len(item) <= limit and item.isprintable():
            return item
        out.append(FieldViolation(where, f"must be a string of 1 to {limit} characters"))
        return None
    if key in AMOUNT_CONDITIONS:
        return _amount(item, where, out)
    if key in BOOL_CONDITIONS:
        if isinstance(item, bool):
            return item
        out.append(FieldViolation(where, "must be true or false"))
        return None
    return _integer(item, where, 1, MAX_COUNT, out)


def _conditions(value: Any, out: list[FieldViolation]) -> dict[str, Any]:
    field = f"{_PAYLOAD}.conditions"
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        out.append(FieldViolation(field, "must be an object of conditions"))
        return {}
    found: dict[str, Any] = {}
    for key in sorted(value):
        if key not in CONDITIONS:
            out.append(
                FieldViolation(
                    f"{field}.{key}", "is not a condition; known: " + ", ".join(CONDITIONS)
                )
            )
        elif value[key] is not None:  # null: not checked, as when left out
            found[key] = _condition(key, value[key], f"{field}.{key}", out)
    low, high = found.get("min_amount"), found.get("max_amount")
    if low is not None and high is not None and low >= high:
        out.append(
            FieldViolation(
                f"{field}.max_amount", "must be above min_amount (min inclusive, max exclusive)"
            )
        )
    if ("velocity_hours" in found) != ("velocity_min_count" in found):
        out.append(
            FieldViolation(
                f"{field}.velocity_min_count", "velocity_hours and velocity_min_count go together"
            )
        )
    return found


def _name(payload: Mapping[str, Any], out: list[FieldViolation]) -> str:
    value = payload.get("name")
    if not isinstance(value, str) or not RULE_NAME.match(value):
        shown = quoted(value) if isinstance(value, str) else "it"
        out.append(
            FieldViolation(
                f"{_PAYLOAD}.name",
                f"{shown} is not a rule name: 1-64 lowercase letters, digits and . _ -, "
                "starting with a letter or digit",
            )
        )
        return ""
    return value


def _only(payload: Mapping[str, Any], keys: set[str], out: list[FieldViolation]) -> None:
    for key in sorted(set(payload) - keys):
        out.append(FieldViolation(f"{_PAYLOAD}.{key}", "is not a field of this kind"))


def _approvals(payload: Mapping[str, Any], action: Action | None, out: list[FieldViolation]) -> int:
    """`approvals_required`: at least 1 for REQUIRE_APPROVALS, 0 (or absent) otherwise."""
    field = f"{_PAYLOAD}.approvals_required"
    if action is None:
        return 0
    if "approvals_required" not in payload and action is not Action.REQUIRE_APPROVALS:
        return 0
    if "approvals_required" not in payload:
        out.append(FieldViolation(field, "is required: REQUIRE_APPROVALS needs at least 1"))
        return 0
    required = _integer(payload["approvals_required"], field, 0, MAX_APPROVALS, out)
    if action is Action.REQUIRE_APPROVALS and required < 1:
        out.append(FieldViolation(field, "REQUIRE_APPROVALS needs at least 1 approval"))
    elif action is not Action.REQUIRE_APPROVALS and required != 0:
        out.append(FieldViolation(field, f"is for REQUIRE_APPROVALS only; {action.value} takes 0"))
    return required


def parse_rule(payload: Mapping[str, Any]) -> Rule:
    """The rule a `rule.upsert` payload describes; INVALID_ARGUMENT naming each
    `change.payload.<field>` that is wrong."""
    out: list[FieldViolation] = []
    name = _name(payload, out)
    position = _integer(payload.get("position"), f"{_PAYLOAD}.position", 0, MAX_POSITION, out)
    action_text = payload.get("action")
    action = Action(action_text) if action_text in {a.value for a in Action} else None
    if action is None:
        out.append(
            FieldViolation(
                f"{_PAYLOAD}.action",
                f"{quoted(str(action_text))} is not an action; use "
                + ", ".join(a.value for a in Action),
            )
        )
    required = _approvals(payload, action, out)
    enabled = payload.get("enabled", True)
    if not isinstance(enabled, bool):
        out.append(FieldViolation(f"{_PAYLOAD}.enabled", "must be true or false"))
    conditions = _conditions(payload.get("conditions"), out)
    _only(payload, UPSERT_FIELDS, out)
    if out:
        raise invalid_argument(out)
    rule = Rule(
        position=position,
        name=name,
        action=action or Action.REQUIRE_APPROVALS,
        approvals_required=required,
        enabled=bool(enabled),
    )
    try:  # Rule's own checks, as the processor will construct it from the row
        return replace(rule, **conditions)
    except ValueError as exc:
        raise invalid_argument([FieldViolation(_PAYLOAD, str(exc))]) from None


# ---------------------------------------------------------------- the change kinds


def validate_upsert(payload: Mapping[str, Any]) -> str:
    """`rule.upsert`: the whole rule (see the module docstring)."""
    return rule_name(parse_rule(payload).name)


def apply_upsert(session: Session, payload: Mapping[str, Any]) -> ChangeEffect:
    change = upsert_rule(session, parse_rule(payload))
    return ChangeEffect(rule_name(change.name), change.before, change.after)


def validate_delete(payload: Mapping[str, Any]) -> str:
    """`rule.delete`: `{"name": rule name}`."""
    out: list[FieldViolation] = []
    name = _name(payload, out)
    _only(payload, {"name"}, out)
    if out:
        raise invalid_argument(out)
    return rule_name(name)


def apply_delete(session: Session, payload: Mapping[str, Any]) -> ChangeEffect:
    change = delete_rule(session, str(payload["name"]))
    return ChangeEffect(rule_name(change.name), change.before, change.after)
