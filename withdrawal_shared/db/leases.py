"""Leases: one replica of a role at a time, fenced.

A lease row (`models.Lease`) names the role (e.g. `monitor:polygon`), the replica holding it
(`holder`, unique per process), when it expires, and a fencing token that grows by one at
every change of holder. A replica takes a free or expired lease, or renews its own, in one
transaction that locks the row (`take`).

Fencing: every transaction through which the holder acts checks, just before it commits, that
the row still names it with its token (`verify`, which locks the row shared on MySQL/MariaDB;
SQLite runs one write transaction at a time anyway). A takeover needs the row's exclusive
lock, so it is ordered against each of those transactions: one that commits first was the
holder's, and one that checks after it sees another holder or token and rolls back. A former
holder that was paused (SIGSTOP, a long GC, a partitioned host) and resumes after its lease
was taken therefore commits nothing. Clocks only decide when a lease counts as expired; the
token, not the clock, is what keeps two holders from both writing.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from withdrawal_shared.db.models import Lease
from withdrawal_shared.errors import WithdrawalSystemError


def replica_name() -> str:
    """A holder name unique per process: host, pid and a random suffix (a pid can be reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class LeaseLost(WithdrawalSystemError):
    """This replica no longer holds the lease: what it was about to commit is rolled back."""


def take(
    session: Session,
    name: str,
    holder: str,
    seconds: float,
    now: dt.datetime,
    *,
    grace_seconds: float = 0.0,
) -> int | None:
    """Take `name` for `seconds` from `now` if it is free, expired (for `grace_seconds` at
    least, when another held it) or already ours; the fencing token we hold it with, or None
    while another holder's lease runs. Commit the session afterwards (on a race to create the
    row, the loser gets None and tries again later)."""
    expire = now + dt.timedelta(seconds=seconds)
    row = session.execute(
        select(Lease.holder, Lease.token, Lease.expire_time)
        .where(Lease.name == name)
        .with_for_update()
    ).one_or_none()
    if row is None:
        # With a grace the caller is not the lease's natural holder: it creates the row free
        # (expired now) and may take it only after the grace, if nobody else did.
        first = (
            Lease(name=name, holder="", token=0, expire_time=now, update_time=now)
            if grace_seconds > 0
            else Lease(name=name, holder=holder, token=1, expire_time=expire, update_time=now)
        )
        try:
            with session.begin_nested():
                session.add(first)
        except IntegrityError:
            return None
        return None if grace_seconds > 0 else 1
    ours = row.holder == holder
    if not ours and _naive(row.expire_time) + dt.timedelta(seconds=grace_seconds) > _naive(now):
        return None
    token = int(row.token) if ours and _naive(row.expire_time) > _naive(now) else row.token + 1
    session.execute(
        update(Lease)
        .where(Lease.name == name)
        .values(holder=holder, token=token, expire_time=expire, update_time=now)
    )
    return int(token)


def verify(session: Session, name: str, holder: str, token: int) -> None:
    """Raise `LeaseLost` unless `holder` still holds `name` with `token` (locks the row shared
    until the transaction ends, so no takeover commits in between)."""
    row = session.execute(
        select(Lease.holder, Lease.token).where(Lease.name == name).with_for_update(read=True)
    ).one_or_none()
    if row is None or row.holder != holder or int(row.token) != token:
        held_by = "nobody" if row is None else f"{row.holder} (token {row.token})"
        raise LeaseLost(
            f"lease {name!r} is held by {held_by}, not by {holder} (token {token}): "
            "this replica stands by"
        )


def release(session: Session, name: str, holder: str, token: int, now: dt.datetime) -> bool:
    """Let the lease expire now if we still hold it (a graceful stop), so that a standby
    replica takes over at once instead of after the lease time; True if it was ours."""
    result = session.execute(
        update(Lease)
        .where(Lease.name == name, Lease.holder == holder, Lease.token == token)
        .values(expire_time=now, update_time=now)
    )
    return bool(getattr(result, "rowcount", 0))


def holder_of(session: Session, name: str) -> tuple[str, int, dt.datetime] | None:
    """Who holds `name`, with which token, until when (for diagnostics and tests)."""
    row = session.execute(
        select(Lease.holder, Lease.token, Lease.expire_time).where(Lease.name == name)
    ).one_or_none()
    return None if row is None else (row.holder, int(row.token), row.expire_time)


def _naive(value: dt.datetime) -> dt.datetime:
    """Stored times come back naive (UTC) from MariaDB and SQLite."""
    return value.replace(tzinfo=None) if value.tzinfo is not None else value
