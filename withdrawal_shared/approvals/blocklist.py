"""The blocklist: recipients never to pay (sanctions screening), on every chain.

Checked three times: at validation (the withdrawal becomes REJECTED, reason
ADDRESS_BLOCKED), again when the processor plans a payout (a withdrawal whose address was
blocked after validation is REJECTED the same way before any nonce is reserved for it), and
by the signer, which refuses to sign a payout paying a blocked recipient. Removing an address
affects only withdrawals validated afterwards; rejected ones stay rejected.

Also the partners' allowlists of destinations, which only the approval rules read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from withdrawal_shared.addresses import AddressError, parse_address
from withdrawal_shared.db.models import AllowlistedAddress, BlockedAddress
from withdrawal_shared.db.transitions import utcnow
from withdrawal_shared.errors import FieldViolation, invalid_argument

MAX_REASON = 256


@dataclass(frozen=True)
class Blocked:
    address: str  # lowercase
    reason: str
    added_by: str
    create_time: dt.datetime


def normalise_address(text: str, field: str = "address") -> str:
    """The lowercase address; INVALID_ARGUMENT naming `field` when it is not one."""
    try:
        return parse_address(text)
    except AddressError as exc:
        raise invalid_argument([FieldViolation(field, str(exc))]) from None


def check_operator(operator_id: str) -> str:
    if not operator_id or len(operator_id) > 64 or not operator_id.isprintable():
        raise invalid_argument(
            [FieldViolation("operator_id", "must be 1 to 64 printable characters")]
        )
    return operator_id


def check_reason(reason: str) -> str:
    if len(reason) > MAX_REASON:
        raise invalid_argument(
            [FieldViolation("reason", f"must be at most {MAX_REASON} characters")]
        )
    return reason


def block_address(
    sessions: sessionmaker[Session], address: str, operator_id: str, reason: str
) -> Blocked:
    """Put `address` on the blocklist (idempotent: an address already there keeps its first
    entry, which is returned)."""
    with sessions.begin() as session:
        return block_in(session, address, operator_id, reason)[0]


def block_in(session: Session, address: str, operator_id: str, reason: str) -> tuple[Blocked, bool]:
    """`block_address` in the caller's transaction: (the entry, whether this call added it)."""
    normalised = normalise_address(address)
    check_operator(operator_id)
    check_reason(reason)
    row = session.get(BlockedAddress, normalised)
    added = row is None
    if row is None:
        row = BlockedAddress(
            address=normalised, reason=reason, added_by=operator_id, create_time=utcnow()
        )
        session.add(row)
        session.flush()
    return Blocked(row.address, row.reason, row.added_by, row.create_time), added


def unblock_address(sessions: sessionmaker[Session], address: str, operator_id: str) -> bool:
    """Take `address` off the blocklist; whether it was on it."""
    with sessions.begin() as session:
        return unblock_in(session, address, operator_id) is not None


def unblock_in(session: Session, address: str, operator_id: str) -> Blocked | None:
    """`unblock_address` in the caller's transaction: the entry removed, None when the
    address was not on the blocklist."""
    normalised = normalise_address(address)
    check_operator(operator_id)
    row = session.get(BlockedAddress, normalised, with_for_update=True)
    if row is None:
        return None
    removed = Blocked(row.address, row.reason, row.added_by, row.create_time)
    session.execute(delete(BlockedAddress).where(BlockedAddress.address == normalised))
    return removed


def list_blocked(
    sessions: sessionmaker[Session], *, limit: int = 100, after: str = ""
) -> list[Blocked]:
    """Blocked addresses in address order, `limit` at a time after `after`."""
    with sessions() as session:
        rows = session.scalars(
            select(BlockedAddress)
            .where(BlockedAddress.address > after.lower())
            .order_by(BlockedAddress.address)
            .limit(max(1, min(limit, 1000)))
        )
        return [Blocked(r.address, r.reason, r.added_by, r.create_time) for r in rows]


def blocked_among(session: Session, addresses: Collection[str]) -> frozenset[str]:
    """Which of `addresses` (lowercase) are blocked (one primary-key lookup per address)."""
    if not addresses:
        return frozenset()
    return frozenset(
        session.scalars(
            select(BlockedAddress.address).where(BlockedAddress.address.in_(sorted(addresses)))
        )
    )


def allowlist_address(
    sessions: sessionmaker[Session], partner_id: str, address: str, operator_id: str, label: str
) -> None:
    """Add `address` to `partner_id`'s allowlist (idempotent)."""
    normalised = normalise_address(address)
    check_operator(operator_id)
    with sessions.begin() as session:
        if session.get(AllowlistedAddress, (partner_id, normalised)) is None:
            session.add(
                AllowlistedAddress(
                    partner_id=partner_id,
                    address=normalised,
                    label=label[:128],
                    added_by=operator_id,
                    create_time=utcnow(),
                )
            )


def unallowlist_address(
    sessions: sessionmaker[Session], partner_id: str, address: str, operator_id: str
) -> bool:
    """Take `address` off `partner_id`'s allowlist; whether it was on it."""
    normalised = normalise_address(address)
    check_operator(operator_id)
    with sessions.begin() as session:
        result = session.execute(
            delete(AllowlistedAddress).where(
                AllowlistedAddress.partner_id == partner_id,
                AllowlistedAddress.address == normalised,
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]
