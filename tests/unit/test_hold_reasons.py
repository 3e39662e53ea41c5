"""The hold reason registry (`withdrawal_shared.holds`): every reason has a message and an
action, the state message keeps both whatever the details, and the services set no hold
reason that is not in the registry (they name reasons only through `HoldReason`)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from withdrawal_shared.holds import HOLDS, RESUMABLE, STATE_MESSAGE_MAX, HoldReason

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("svc_gateway", "svc_processor", "svc_signer", "svc_monitor", "withdrawal_shared")
REGISTRY = REPO / "withdrawal_shared" / "holds.py"
CODE = re.compile(r"^[A-Z][A-Z0-9_]{3,}$")  # what a reason code looks like
ROOM_FOR_DETAILS = 250  # a transaction hash and a revert reason fit next to the registry text


def _sources() -> Iterator[tuple[Path, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if path != REGISTRY:
                yield path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def _is_on_hold(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "ON_HOLD"


def _code_literal(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and CODE.match(node.value):
        return node.value
    return None


def _callee(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


@pytest.mark.parametrize("reason", list(HoldReason))
def test_every_reason_has_a_message_and_an_action(reason: HoldReason) -> None:
    assert reason in HOLDS
    assert reason.value == reason.name
    assert reason.meaning.strip() and reason.meaning.endswith(".")
    assert reason.action.strip() and reason.action.endswith(".")
    # Whether it resumes is said in the action, as the docs table shows only the action.
    assert reason.resumes == ("by itself" in reason.action), reason.action
    assert len(reason.meaning) + len(reason.action) <= STATE_MESSAGE_MAX - ROOM_FOR_DETAILS


def test_resumable_holds_are_the_ones_marked_so() -> None:
    assert {r for r in HoldReason if HOLDS[r].resumes} == RESUMABLE
    assert HoldReason.PAYOUT_REVERTED in RESUMABLE
    assert HoldReason.DEAD_LETTERED not in RESUMABLE
    assert "PAYOUT_REVERTED" in RESUMABLE  # the stored string finds its member


def test_the_state_message_keeps_the_meaning_and_the_action_whatever_the_details() -> None:
    reason = HoldReason.PAYOUT_REVERTED
    assert reason.state_message() == f"{reason.meaning} {reason.action}"
    detail = "Transaction 0xabc reverted in block 7 (12 confirmations): EnforcedPause()."
    assert reason.state_message(detail) == f"{reason.meaning} {detail} {reason.action}"
    long = reason.state_message("x" * 2_000)
    assert len(long) <= STATE_MESSAGE_MAX
    assert long.startswith(reason.meaning)
    assert long.endswith("... " + reason.action)


def test_the_services_name_hold_reasons_only_through_the_registry() -> None:
    """No hold reason is written as a string literal outside the registry: not the value of
    a registered reason, nor a reason code passed with a move to ON_HOLD, to a hold helper,
    or compared with a withdrawal's `state_reason`. So every reason the code sets is a
    `HoldReason` member (mypy checks the member names)."""
    values = {r.value for r in HoldReason}
    problems: list[str] = []
    for path, tree in _sources():
        where = path.relative_to(REPO)
        for node in ast.walk(tree):
            literal = _code_literal(node) if isinstance(node, ast.Constant) else None
            if literal in values:
                problems.append(f"{where}:{node.lineno}: {literal!r} (use HoldReason)")
            if isinstance(node, ast.Call) and (
                any(_is_on_hold(arg) for arg in node.args)
                or any(_is_on_hold(kw.value) for kw in node.keywords)
                or "hold" in _callee(node).lower()
            ):
                arguments = [*node.args, *(kw.value for kw in node.keywords)]
                problems += [
                    f"{where}:{node.lineno}: hold reason {code!r} not from the registry"
                    for code in map(_code_literal, arguments)
                    if code is not None
                ]
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(isinstance(s, ast.Attribute) and s.attr == "state_reason" for s in sides):
                    problems += [
                        f"{where}:{node.lineno}: state_reason compared with {code!r}"
                        for code in map(_code_literal, sides)
                        if code is not None
                    ]
    assert problems == [], "\n".join(problems)


def test_every_registered_reason_is_set_by_a_service() -> None:
    """The registry holds no reason that no service sets."""
    used: set[str] = set()
    for path, tree in _sources():
        if path.parts[len(REPO.parts)].startswith("svc_"):
            used |= {
                node.attr
                for node in ast.walk(tree)
                if isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "HoldReason"
            }
    assert {r.name for r in HoldReason} - used == set()
