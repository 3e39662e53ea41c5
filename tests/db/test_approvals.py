"""Approvals and screening on MariaDB and SQLite: the processor's screening (blocklist, rules
and their batched facts) writing PENDING_APPROVAL with its request, and the core functions
(list, approve, reject, expire, blocklist, allowlist) with their audit trail."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from svc_processor.pipeline import QUEUE_PATH, _refusal
from svc_processor.screening import Screening
from tests.support.withdrawals import add_withdrawal
from withdrawal_shared.approvals import blocklist, core
from withdrawal_shared.approvals.errors import NOT_PENDING_APPROVAL, SELF_APPROVAL
from withdrawal_shared.db.api_keys import ensure_partner
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import (
    ApprovalRequest,
    ApprovalRule,
    Token,
    Withdrawal,
    WithdrawalAudit,
)
from withdrawal_shared.db.reference import ReferenceData
from withdrawal_shared.db.transitions import Step, move, move_many, utcnow, verify_audit_chain
from withdrawal_shared.errors import ApiError
from withdrawal_shared.states import State

USDC = 10**6
PARTNER = "approvals-test"


@pytest.fixture(scope="module")
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine: Engine = make_engine(db_url, pool_size=4)
    makers = make_sessionmaker(engine)
    with makers.begin() as session:
        ensure_partner(session, PARTNER)
    yield makers
    engine.dispose()


def _address(n: int) -> str:
    return "0x" + f"{n:040x}"


_counter = iter(range(1, 10**6))


def _fresh() -> str:
    return _address(0xA000_0000 + next(_counter))


def _new(
    sessions: sessionmaker[Session],
    amount: int,
    recipient: str | None = None,
    *,
    created_by: str | None = None,
) -> str:
    with sessions.begin() as session:
        token = session.scalars(select(Token).where(Token.symbol == "USDC")).one()
        withdrawal_id = add_withdrawal(
            session,
            partner_id=PARTNER,
            token_id=token.id,
            recipient=recipient or _fresh(),
            amount=amount,
        )
        if created_by is not None:
            session.execute(
                update(Withdrawal)
                .where(Withdrawal.id == withdrawal_id)
                .values(created_by=created_by)
            )
    return withdrawal_id


def _screen(
    sessions: sessionmaker[Session], ids: list[str], *, manual: bool = False
) -> dict[str, State]:
    """What the consumer does to RECEIVED rows: the reference checks, then screening."""
    screening = Screening(manual=manual)
    with sessions.begin() as session:
        reference = ReferenceData.load(session)
        rows = list(session.scalars(select(Withdrawal).where(Withdrawal.id.in_(ids))))
        plan = screening.sort(session, rows, reference, _refusal)
        screening.hold(session, plan.pending, plan.verdicts)
        move_many(session, plan.valid, QUEUE_PATH, actor="test")
        for (reason, message), group in plan.rejected.items():
            move_many(session, group, Step(State.REJECTED, reason, message), actor="test")
    with sessions() as session:
        return {
            w.id: State(w.state)
            for w in session.scalars(select(Withdrawal).where(Withdrawal.id.in_(ids)))
        }


def _state(sessions: sessionmaker[Session], withdrawal_id: str) -> Withdrawal:
    with sessions() as session:
        row = session.get(Withdrawal, withdrawal_id)
        assert row is not None
        return row


def test_shipped_rules_decide_a_batch(sessions: sessionmaker[Session]) -> None:
    small, one, two = (_new(sessions, a) for a in (5 * USDC, 20_000 * USDC, 200_000 * USDC))
    states = _screen(sessions, [small, one, two])
    assert states == {
        small: State.QUEUED,
        one: State.PENDING_APPROVAL,
        two: State.PENDING_APPROVAL,
    }
    with sessions() as session:
        requests = {
            r.withdrawal_id: (r.rule_name, r.approvals_required, r.outcome)
            for r in session.scalars(
                select(ApprovalRequest).where(ApprovalRequest.withdrawal_id.in_([one, two]))
            )
        }
        assert verify_audit_chain(session, two)
    assert requests == {
        one: ("usdc-one-approver-below-100k", 1, ""),
        two: ("default", 2, ""),
    }
    held = _state(sessions, two)
    assert held.state_reason == "APPROVAL_REQUIRED"
    assert "2 operator approval(s)" in held.state_message


def test_manual_mode_holds_small_amounts(sessions: sessionmaker[Session]) -> None:
    small = _new(sessions, 1 * USDC)
    assert _screen(sessions, [small], manual=True) == {small: State.PENDING_APPROVAL}
    pending = {p.withdrawal_id: p for p in core.list_pending(sessions, limit=1000)}
    assert pending[small].rule_name == "usdc-auto-below-10k (manual mode)"
    assert pending[small].approvals_required == 1


def test_four_eyes_approve_counts_each_operator_once(sessions: sessionmaker[Session]) -> None:
    withdrawal_id = _new(sessions, 500_000 * USDC)
    _screen(sessions, [withdrawal_id])
    first = core.approve(sessions, withdrawal_id, "alice", "checked the invoice")
    assert (first.state, first.approvals, first.approvals_required) == (
        State.PENDING_APPROVAL,
        1,
        2,
    )
    again = core.approve(sessions, withdrawal_id, "alice", "again")
    assert (again.counted, again.approvals, again.state) == (False, 1, State.PENDING_APPROVAL)
    listed = {p.withdrawal_id: p for p in core.list_pending(sessions, limit=1000)}
    assert listed[withdrawal_id].approved_by == ("alice",)
    assert listed[withdrawal_id].rule_name == "default"
    second = core.approve(sessions, withdrawal_id, "bob")
    assert (second.state, second.approvals) == (State.QUEUED, 2)
    assert withdrawal_id not in {p.withdrawal_id for p in core.list_pending(sessions)}
    with sessions() as session:
        trail = session.execute(
            select(WithdrawalAudit.to_state, WithdrawalAudit.actor, WithdrawalAudit.reason)
            .where(WithdrawalAudit.withdrawal_id == withdrawal_id)
            .order_by(WithdrawalAudit.version)
        ).all()
        assert verify_audit_chain(session, withdrawal_id)
    assert [tuple(t) for t in trail[-3:]] == [
        ("PENDING_APPROVAL", "processor", "APPROVAL_REQUIRED"),
        ("PENDING_APPROVAL", "alice", "APPROVAL_RECORDED"),
        ("QUEUED", "bob", "APPROVED"),
    ]
    # Released: a late approval by the same operator is still counted once, no error.
    assert core.approve(sessions, withdrawal_id, "bob").counted is False
    with pytest.raises(ApiError) as late:
        core.approve(sessions, withdrawal_id, "carol")
    assert late.value.reason == NOT_PENDING_APPROVAL.reason
    assert late.value.metadata["state"] == "QUEUED"


def test_the_creator_cannot_approve(sessions: sessionmaker[Session]) -> None:
    withdrawal_id = _new(sessions, 50_000 * USDC, created_by="mallory")
    _screen(sessions, [withdrawal_id])
    with pytest.raises(ApiError) as refused:
        core.approve(sessions, withdrawal_id, "mallory")
    assert refused.value.reason == SELF_APPROVAL.reason
    assert _state(sessions, withdrawal_id).state == State.PENDING_APPROVAL
    assert core.approve(sessions, withdrawal_id, "alice").state == State.QUEUED


def test_reject_and_not_pending(sessions: sessionmaker[Session]) -> None:
    withdrawal_id = _new(sessions, 50_000 * USDC)
    _screen(sessions, [withdrawal_id])
    outcome = core.reject(sessions, withdrawal_id, "carol", "unknown beneficiary")
    assert outcome.state == State.REJECTED
    row = _state(sessions, withdrawal_id)
    assert (row.state, row.state_reason) == ("REJECTED", "APPROVAL_REJECTED")
    assert "carol" in row.state_message and "unknown beneficiary" in row.state_message
    for call in (core.approve, core.reject):
        with pytest.raises(ApiError) as err:
            call(sessions, withdrawal_id, "dave", "")
        assert err.value.reason == NOT_PENDING_APPROVAL.reason
    with pytest.raises(ApiError) as missing:
        core.approve(sessions, "01" + "Z" * 24, "dave")
    assert missing.value.reason == "NOT_FOUND"
    with pytest.raises(ApiError) as bad:
        core.approve(sessions, withdrawal_id, "")
    assert bad.value.reason == "INVALID_ARGUMENT"


def test_expiry_rejects_undecided_once(sessions: sessionmaker[Session]) -> None:
    withdrawal_id = _new(sessions, 50_000 * USDC)
    cancelled = _new(sessions, 50_000 * USDC)
    _screen(sessions, [withdrawal_id, cancelled])
    with sessions.begin() as session:
        row = session.get(Withdrawal, cancelled)
        assert row is not None
        move(session, row, State.CANCELLED, actor="partner", reason="CANCELLED")
        session.execute(
            update(ApprovalRequest)
            .where(ApprovalRequest.withdrawal_id.in_([withdrawal_id, cancelled]))
            .values(create_time=utcnow() - dt.timedelta(hours=2))
        )
    moved = core.expire_pending(sessions, 3600, actor="processor")
    assert [(m.withdrawal_id, m.to_state, m.reason) for m in moved if m.withdrawal_id in
            (withdrawal_id, cancelled)] == [
        (withdrawal_id, State.REJECTED, "APPROVAL_EXPIRED")
    ]  # fmt: skip
    assert core.expire_pending(sessions, 3600, actor="processor") == []
    with sessions() as session:
        outcomes = {
            i: outcome
            for i, outcome in session.execute(
                select(ApprovalRequest.withdrawal_id, ApprovalRequest.outcome).where(
                    ApprovalRequest.withdrawal_id.in_([withdrawal_id, cancelled])
                )
            )
        }
    assert outcomes == {withdrawal_id: "EXPIRED", cancelled: "CANCELLED"}


def test_blocklist_rejects_at_validation(sessions: sessionmaker[Session]) -> None:
    address = _fresh()
    entry = blocklist.block_address(sessions, Web3.to_checksum_address(address), "ops", "OFAC")
    assert entry.address == address
    assert blocklist.block_address(sessions, address, "other", "again").added_by == "ops"
    assert address in {b.address for b in blocklist.list_blocked(sessions, limit=1000)}
    withdrawal_id = _new(sessions, 1 * USDC, address)
    assert _screen(sessions, [withdrawal_id]) == {withdrawal_id: State.REJECTED}
    row = _state(sessions, withdrawal_id)
    assert row.state_reason == "ADDRESS_BLOCKED" and "blocklist" in row.state_message
    assert blocklist.unblock_address(sessions, address, "ops") is True
    assert blocklist.unblock_address(sessions, address, "ops") is False
    with pytest.raises(ApiError):
        blocklist.block_address(sessions, "0xnothex", "ops", "")


def test_reject_blocked_at_planning(sessions: sessionmaker[Session]) -> None:
    address = _fresh()
    withdrawal_id = _new(sessions, 1 * USDC, address)
    assert _screen(sessions, [withdrawal_id]) == {withdrawal_id: State.QUEUED}
    blocklist.block_address(sessions, address, "ops", "listed after validation")
    try:
        with sessions() as session:
            row = session.get(Withdrawal, withdrawal_id)
            assert row is not None
        payable, moved = Screening.reject_blocked(sessions, [row])
        assert payable == []
        assert [(m.to_state, m.reason) for m in moved] == [(State.REJECTED, "ADDRESS_BLOCKED")]
    finally:
        blocklist.unblock_address(sessions, address, "ops")


def test_facts_first_payment_allowlist_and_velocity(sessions: sessionmaker[Session]) -> None:
    """Rules using every fact, evaluated on the database's answers (tuple IN queries)."""
    known, vouched, busy, fresh = _fresh(), _fresh(), _fresh(), _fresh()
    paid = _new(sessions, 1 * USDC, known)
    with sessions.begin() as session:
        row = session.get(Withdrawal, paid)
        assert row is not None
        for state in (State.VALIDATED, State.QUEUED, State.SIGNED, State.BROADCAST):
            move(session, row, state, actor="test", reason=state.value)
        move(session, row, State.COMPLETED, actor="test", reason="COMPLETED")
    blocklist.allowlist_address(sessions, PARTNER, vouched, "ops", "treasury")
    for _ in range(2):
        _new(sessions, 1 * USDC, busy)
    with sessions.begin() as session:
        saved = list(session.scalars(select(ApprovalRule)))
        for rule in saved:
            session.expunge(rule)
        session.execute(delete(ApprovalRule))
        session.add_all(
            [
                ApprovalRule(position=1, name="velocity", action="REJECT", approvals_required=0,
                             enabled=True, velocity_hours=1, velocity_min_count=3),
                ApprovalRule(position=2, name="allowlisted", action="AUTO_APPROVE",
                             approvals_required=0, enabled=True, allowlisted=True),
                ApprovalRule(position=3, name="known", action="AUTO_APPROVE",
                             approvals_required=0, enabled=True, first_payment=False),
                ApprovalRule(position=4, name="first", action="REQUIRE_APPROVALS",
                             approvals_required=1, enabled=True, first_payment=True),
            ]
        )  # fmt: skip
    try:
        ids = {
            "known": _new(sessions, 1 * USDC, known),
            "vouched": _new(sessions, 1 * USDC, vouched),
            "busy": _new(sessions, 1 * USDC, busy),
            "fresh": _new(sessions, 1 * USDC, fresh),
        }
        states = _screen(sessions, list(ids.values()))
        assert {name: states[i] for name, i in ids.items()} == {
            "known": State.QUEUED,
            "vouched": State.QUEUED,
            "busy": State.REJECTED,
            "fresh": State.PENDING_APPROVAL,
        }
        assert _state(sessions, ids["busy"]).state_reason == "APPROVAL_RULE_REJECTED"
    finally:
        with sessions.begin() as session:
            session.execute(delete(ApprovalRule))
            for rule in saved:
                session.merge(rule)
        blocklist.unallowlist_address(sessions, PARTNER, vouched, "ops")


def test_approval_gaps_for_the_signer(sessions: sessionmaker[Session]) -> None:
    auto = _new(sessions, 1 * USDC)
    held = _new(sessions, 500_000 * USDC)
    _screen(sessions, [auto, held])
    core.approve(sessions, held, "alice")
    with sessions() as session:
        gaps = core.approval_gaps(session, [auto, held])
    assert list(gaps) == [held]
    assert (gaps[held].required, gaps[held].approved) == (2, 1)
    core.approve(sessions, held, "bob")
    with sessions() as session:
        assert core.approval_gaps(session, [auto, held]) == {}
