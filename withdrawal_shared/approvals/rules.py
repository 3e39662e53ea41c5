"""Approval rules: which withdrawals pass automatically, which wait for operators, which are
refused. Pure functions over plain values; the rows live in `approval_rules`.

The rules are ordered by `position`; the first enabled rule whose every condition holds
decides (`evaluate`). A condition left unset (NULL) holds for every withdrawal:

- `token_symbol`: the withdrawal's token symbol equals it;
- `min_amount` (inclusive) / `max_amount` (exclusive): the amount in base units of the
  withdrawal's token, compared as integers (pair them with `token_symbol`: 10**6 base units
  are 1 USDC but 10**-12 of a token with 18 decimals);
- `partner_id`: the withdrawal's partner;
- `tier`: the partner's tier; a withdrawal without a tier (none has one today) never matches
  a rule that names one;
- `first_payment`: True holds when no COMPLETED withdrawal of this partner to this address
  exists yet, False when one does;
- `allowlisted`: True holds when the address is on the partner's allowlist
  (`allowlisted_addresses`), False when it is not;
- `velocity_hours` with `velocity_min_count`: holds when the partner's withdrawals to this
  address created in the last `velocity_hours` hours, this one included, number at least
  `velocity_min_count` (any state).

When no rule holds (an empty or fully disabled table), the withdrawal needs one approval
(`NO_RULE`): the rules fail closed. In manual mode (`PROCESSOR_MANUAL_APPROVAL`) every
withdrawal needs at least one approval: AUTO_APPROVE becomes REQUIRE_APPROVALS(1), while
REQUIRE_APPROVALS(n) and REJECT stay as they are.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from withdrawal_shared.db.models import ApprovalRule


class Action(enum.StrEnum):
    AUTO_APPROVE = "AUTO_APPROVE"
    REQUIRE_APPROVALS = "REQUIRE_APPROVALS"
    REJECT = "REJECT"


@dataclass(frozen=True)
class WithdrawalContext:
    """What the rules look at for one withdrawal (addresses lowercase, amount in base units).

    `recent` maps a velocity window in hours to the count of the partner's withdrawals to
    this address created within it, this one included; a window absent counts 1."""

    partner_id: str
    token_symbol: str
    amount: int
    recipient: str
    tier: str | None = None
    first_payment: bool = True
    allowlisted: bool = False
    recent: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    """One row of `approval_rules` (conditions None: not checked)."""

    position: int
    name: str
    action: Action
    approvals_required: int = 0
    id: int | None = None
    enabled: bool = True
    token_symbol: str | None = None
    min_amount: int | None = None
    max_amount: int | None = None
    partner_id: str | None = None
    tier: str | None = None
    first_payment: bool | None = None
    allowlisted: bool | None = None
    velocity_hours: int | None = None
    velocity_min_count: int | None = None

    def __post_init__(self) -> None:
        if self.action is Action.REQUIRE_APPROVALS and self.approvals_required < 1:
            raise ValueError(f"rule {self.name!r}: REQUIRE_APPROVALS needs at least 1 approval")
        if (self.velocity_hours is None) != (self.velocity_min_count is None):
            raise ValueError(
                f"rule {self.name!r}: velocity_hours and velocity_min_count go together"
            )
        if self.velocity_hours is not None and self.velocity_hours < 1:
            raise ValueError(f"rule {self.name!r}: velocity_hours must be at least 1")

    def matches(self, ctx: WithdrawalContext) -> bool:
        """Whether every condition of this rule holds for `ctx`."""
        if self.token_symbol is not None and ctx.token_symbol != self.token_symbol:
            return False
        if self.min_amount is not None and ctx.amount < self.min_amount:
            return False
        if self.max_amount is not None and ctx.amount >= self.max_amount:
            return False
        if self.partner_id is not None and ctx.partner_id != self.partner_id:
            return False
        if self.tier is not None and ctx.tier != self.tier:
            return False
        if self.first_payment is not None and ctx.first_payment != self.first_payment:
            return False
        if self.allowlisted is not None and ctx.allowlisted != self.allowlisted:
            return False
        if self.velocity_hours is not None and self.velocity_min_count is not None:
            return ctx.recent.get(self.velocity_hours, 1) >= self.velocity_min_count
        return True

    @classmethod
    def from_row(cls, row: ApprovalRule) -> Rule:
        return cls(
            id=row.id,
            position=row.position,
            name=row.name,
            action=Action(row.action),
            approvals_required=row.approvals_required,
            enabled=row.enabled,
            token_symbol=row.token_symbol,
            min_amount=row.min_amount,
            max_amount=row.max_amount,
            partner_id=row.partner_id,
            tier=row.tier,
            first_payment=row.first_payment,
            allowlisted=row.allowlisted,
            velocity_hours=row.velocity_hours,
            velocity_min_count=row.velocity_min_count,
        )


@dataclass(frozen=True)
class Decision:
    """What the rules decided for one withdrawal, and which rule decided it."""

    action: Action
    approvals_required: int
    rule_id: int | None
    rule_name: str


NO_RULE = Decision(Action.REQUIRE_APPROVALS, 1, None, "no-rule-matched")


@dataclass(frozen=True)
class RuleSet:
    """The enabled rules in order, and which facts they need (so nothing else is queried)."""

    rules: tuple[Rule, ...]

    @classmethod
    def of(cls, rules: Sequence[Rule]) -> RuleSet:
        return cls(tuple(sorted((r for r in rules if r.enabled), key=lambda r: r.position)))

    @property
    def needs_first_payment(self) -> bool:
        return any(r.first_payment is not None for r in self.rules)

    @property
    def needs_allowlist(self) -> bool:
        return any(r.allowlisted is not None for r in self.rules)

    @property
    def velocity_windows(self) -> frozenset[int]:
        return frozenset(r.velocity_hours for r in self.rules if r.velocity_hours is not None)

    def evaluate(self, ctx: WithdrawalContext, *, manual: bool = False) -> Decision:
        return evaluate(self.rules, ctx, manual=manual)


def evaluate(rules: Sequence[Rule], ctx: WithdrawalContext, *, manual: bool = False) -> Decision:
    """The decision of the first enabled rule (by position) matching `ctx`; `NO_RULE` when
    none does. `manual` raises AUTO_APPROVE to REQUIRE_APPROVALS(1)."""
    decision = NO_RULE
    for rule in sorted(rules, key=lambda r: r.position):
        if rule.enabled and rule.matches(ctx):
            required = rule.approvals_required if rule.action is Action.REQUIRE_APPROVALS else 0
            decision = Decision(rule.action, required, rule.id, rule.name)
            break
    if manual and decision.action is Action.AUTO_APPROVE:
        return Decision(
            Action.REQUIRE_APPROVALS, 1, decision.rule_id, f"{decision.rule_name} (manual mode)"
        )
    return decision


def load_rules(session: Session) -> RuleSet:
    """The enabled rules, in order (one small query)."""
    rows = session.scalars(
        select(ApprovalRule).where(ApprovalRule.enabled.is_(True)).order_by(ApprovalRule.position)
    )
    return RuleSet.of([Rule.from_row(row) for row in rows])
