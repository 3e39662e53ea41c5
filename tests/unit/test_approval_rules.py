"""Approval rules: ordering, each condition, manual mode, the fail-closed default, and the
shipped defaults of migration 0012."""

from __future__ import annotations

import dataclasses

import pytest

from withdrawal_shared.approvals.rules import (
    NO_RULE,
    Action,
    Rule,
    RuleSet,
    WithdrawalContext,
    evaluate,
)

USDC = 10**6
CTX = WithdrawalContext(
    partner_id="acme", token_symbol="USDC", amount=50 * USDC, recipient="0x" + "ab" * 20
)
# The rules migration 0012 ships.
SHIPPED = [
    Rule(10, "usdc-auto-below-10k", Action.AUTO_APPROVE, token_symbol="USDC",
         max_amount=10_000 * USDC),
    Rule(20, "usdc-one-approver-below-100k", Action.REQUIRE_APPROVALS, 1, token_symbol="USDC",
         max_amount=100_000 * USDC),
    Rule(1000, "default", Action.REQUIRE_APPROVALS, 2),
]  # fmt: skip


def ctx(**changes: object) -> WithdrawalContext:
    return dataclasses.replace(CTX, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("amount", "action", "required", "rule"),
    [
        (1, Action.AUTO_APPROVE, 0, "usdc-auto-below-10k"),
        (10_000 * USDC - 1, Action.AUTO_APPROVE, 0, "usdc-auto-below-10k"),
        (10_000 * USDC, Action.REQUIRE_APPROVALS, 1, "usdc-one-approver-below-100k"),
        (100_000 * USDC - 1, Action.REQUIRE_APPROVALS, 1, "usdc-one-approver-below-100k"),
        (100_000 * USDC, Action.REQUIRE_APPROVALS, 2, "default"),
        (10**40, Action.REQUIRE_APPROVALS, 2, "default"),
    ],
)
def test_shipped_thresholds_compare_integers(
    amount: int, action: Action, required: int, rule: str
) -> None:
    decision = evaluate(SHIPPED, ctx(amount=amount))
    assert (decision.action, decision.approvals_required, decision.rule_name) == (
        action,
        required,
        rule,
    )


def test_another_token_falls_to_the_default() -> None:
    assert evaluate(SHIPPED, ctx(token_symbol="USDT", amount=1)).rule_name == "default"


def test_first_matching_rule_wins_by_position_not_by_list_order() -> None:
    rules = [
        Rule(2, "later", Action.REQUIRE_APPROVALS, 3),
        Rule(1, "earlier", Action.REJECT),
    ]
    assert evaluate(rules, CTX).rule_name == "earlier"
    assert evaluate(rules, CTX).action is Action.REJECT


def test_disabled_rules_are_skipped_and_no_rule_fails_closed() -> None:
    rules = [Rule(1, "off", Action.AUTO_APPROVE, enabled=False)]
    assert evaluate(rules, CTX) == NO_RULE
    assert evaluate([], CTX) == NO_RULE
    assert NO_RULE.action is Action.REQUIRE_APPROVALS and NO_RULE.approvals_required == 1
    assert RuleSet.of(rules).rules == ()


@pytest.mark.parametrize(
    ("rule", "matching", "not_matching"),
    [
        (dict(min_amount=100), ctx(amount=100), ctx(amount=99)),
        (dict(max_amount=100), ctx(amount=99), ctx(amount=100)),
        (dict(token_symbol="USDC"), CTX, ctx(token_symbol="USDT")),
        (dict(partner_id="acme"), CTX, ctx(partner_id="other")),
        (dict(tier="gold"), ctx(tier="gold"), ctx(tier=None)),
        (dict(tier="gold"), ctx(tier="gold"), ctx(tier="silver")),
        (dict(first_payment=True), ctx(first_payment=True), ctx(first_payment=False)),
        (dict(first_payment=False), ctx(first_payment=False), ctx(first_payment=True)),
        (dict(allowlisted=True), ctx(allowlisted=True), ctx(allowlisted=False)),
        (dict(allowlisted=False), ctx(allowlisted=False), ctx(allowlisted=True)),
        (
            dict(velocity_hours=24, velocity_min_count=3),
            ctx(recent={24: 3}),
            ctx(recent={24: 2}),
        ),
        (
            dict(velocity_hours=24, velocity_min_count=2),
            ctx(recent={24: 2, 1: 1}),
            ctx(recent={1: 5}),  # another window's count does not count
        ),
    ],
)
def test_each_condition(
    rule: dict[str, object], matching: WithdrawalContext, not_matching: WithdrawalContext
) -> None:
    held = Rule(1, "cond", Action.REQUIRE_APPROVALS, 2, **rule)  # type: ignore[arg-type]
    rules = [held, Rule(2, "rest", Action.AUTO_APPROVE)]
    assert evaluate(rules, matching).rule_name == "cond"
    assert evaluate(rules, not_matching).rule_name == "rest"


def test_all_conditions_of_a_rule_must_hold() -> None:
    rule = Rule(1, "both", Action.REJECT, partner_id="acme", min_amount=10)
    assert rule.matches(ctx(amount=10))
    assert not rule.matches(ctx(amount=9))
    assert not rule.matches(ctx(partner_id="x", amount=10))


def test_manual_mode_requires_one_approval_but_keeps_stricter_rules() -> None:
    auto = evaluate(SHIPPED, ctx(amount=1), manual=True)
    assert (auto.action, auto.approvals_required) == (Action.REQUIRE_APPROVALS, 1)
    assert auto.rule_name == "usdc-auto-below-10k (manual mode)"
    two = evaluate(SHIPPED, ctx(amount=10**12), manual=True)
    assert (two.action, two.approvals_required) == (Action.REQUIRE_APPROVALS, 2)
    rejected = evaluate([Rule(1, "no", Action.REJECT)], CTX, manual=True)
    assert rejected.action is Action.REJECT


def test_rule_set_says_which_facts_it_needs() -> None:
    plain = RuleSet.of(SHIPPED)
    assert not plain.needs_first_payment and not plain.needs_allowlist
    assert plain.velocity_windows == frozenset()
    rich = RuleSet.of(
        [
            Rule(1, "a", Action.AUTO_APPROVE, first_payment=False, allowlisted=True),
            Rule(2, "v", Action.REJECT, velocity_hours=6, velocity_min_count=10),
        ]
    )
    assert rich.needs_first_payment and rich.needs_allowlist
    assert rich.velocity_windows == frozenset({6})


@pytest.mark.parametrize(
    "bad",
    [
        dict(action=Action.REQUIRE_APPROVALS, approvals_required=0),
        dict(action=Action.AUTO_APPROVE, velocity_hours=1),
        dict(action=Action.AUTO_APPROVE, velocity_hours=0, velocity_min_count=1),
    ],
)
def test_malformed_rules_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Rule(position=1, name="bad", **bad)  # type: ignore[arg-type]
