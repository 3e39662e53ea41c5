"""The facts the approval rules need, read for a whole batch of withdrawals at once: one
query per kind of fact the enabled rules use (first payment, allowlist, each velocity
window), none when no rule uses it, each over the batch's (partner, address) pairs
(`ix_withdrawals_partner_recipient` keeps them short)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import Session

from withdrawal_shared.approvals.rules import RuleSet, WithdrawalContext
from withdrawal_shared.db.models import AllowlistedAddress, Withdrawal
from withdrawal_shared.db.transitions import utcnow
from withdrawal_shared.states import State


class Subject(Protocol):
    """The columns of a withdrawal the rules read."""

    @property
    def id(self) -> str: ...
    @property
    def partner_id(self) -> str: ...
    @property
    def recipient(self) -> str: ...
    @property
    def amount(self) -> int: ...
    @property
    def token_id(self) -> int: ...


def contexts(
    session: Session,
    rows: Sequence[Subject],
    rules: RuleSet,
    token_symbols: dict[int, str],
    *,
    tiers: dict[str, str] | None = None,
) -> dict[str, WithdrawalContext]:
    """Each row's `WithdrawalContext` by withdrawal id. `token_symbols` maps token ids to
    symbols; `tiers` partner ids to their tier (none today)."""
    pairs = sorted({(r.partner_id, r.recipient) for r in rows})
    paid: set[tuple[str, str]] = set()
    allowed: set[tuple[str, str]] = set()
    recent: dict[int, dict[tuple[str, str], int]] = {}
    if pairs and rules.needs_first_payment:
        paid = {
            (p, a)
            for p, a in session.execute(
                select(Withdrawal.partner_id, Withdrawal.recipient)
                .where(
                    tuple_(Withdrawal.partner_id, Withdrawal.recipient).in_(pairs),
                    Withdrawal.state == State.COMPLETED.value,
                )
                .distinct()
            )
        }
    if pairs and rules.needs_allowlist:
        allowed = {
            (p, a)
            for p, a in session.execute(
                select(AllowlistedAddress.partner_id, AllowlistedAddress.address).where(
                    tuple_(AllowlistedAddress.partner_id, AllowlistedAddress.address).in_(pairs)
                )
            )
        }
    now = utcnow()
    for hours in sorted(rules.velocity_windows) if pairs else ():
        recent[hours] = {
            (p, a): int(n)
            for p, a, n in session.execute(
                select(Withdrawal.partner_id, Withdrawal.recipient, func.count())
                .where(
                    tuple_(Withdrawal.partner_id, Withdrawal.recipient).in_(pairs),
                    Withdrawal.create_time >= now - dt.timedelta(hours=hours),
                )
                .group_by(Withdrawal.partner_id, Withdrawal.recipient)
            )
        }
    found: dict[str, WithdrawalContext] = {}
    for row in rows:
        pair = (row.partner_id, row.recipient)
        found[row.id] = WithdrawalContext(
            partner_id=row.partner_id,
            token_symbol=token_symbols.get(row.token_id, ""),
            amount=row.amount,
            recipient=row.recipient,
            tier=(tiers or {}).get(row.partner_id),
            first_payment=pair not in paid,
            allowlisted=pair in allowed,
            recent={hours: max(1, counts.get(pair, 0)) for hours, counts in recent.items()},
        )
    return found
