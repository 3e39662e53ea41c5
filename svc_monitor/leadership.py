"""One active monitor per chain among its replicas: the lease `monitor:<chain>`
(`withdrawal_shared.db.leases`).

Before each poll the monitor takes or renews the lease (`hold`); a replica that does not get
it stands by (healthy, polling nothing) and tries again at the next poll, so a leader that
dies is replaced within the lease time plus one poll. Renewal happens when a third of the
lease time has passed since the last one, so an idle leader writes about three times per
lease.

What the leader does is fenced three ways:
- every transaction of the follower checks the lease just before it commits (`fence`,
  installed as the sessions' `before_commit` hook), so a transaction that outlived the lease
  rolls back (`LeaseLost`) instead of committing beside the new leader's;
- sends that are not transactions (re-broadcasts of signed bytes, the events published after a
  poll) happen only while the lease still runs by this process's own monotonic clock
  (`may_act`), which a paused process cannot fool: after SIGCONT its clock says the lease ran
  out, whatever the database says;
- a graceful stop lets the lease expire at once (`release`), so a standby takes over without
  waiting out the lease.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from withdrawal_shared.db import leases
from withdrawal_shared.db.leases import LeaseLost, replica_name
from withdrawal_shared.db.transitions import utcnow
from withdrawal_shared.metrics import MONITOR_LEADER, MONITOR_LEASE_LOST

log = logging.getLogger(__name__)

__all__ = ["Leadership", "LeaseLost"]


class Leadership:
    """This replica's hold on `monitor:<chain>`; `seconds` is the lease time."""

    def __init__(
        self, sessions: sessionmaker[Session], chain: str, seconds: float, holder: str = ""
    ) -> None:
        if seconds <= 0:
            raise ValueError(f"lease seconds must be positive, not {seconds}")
        self.name = f"monitor:{chain}"
        self.holder = holder or replica_name()
        self.seconds = seconds
        self._sessions = sessions
        self.token: int | None = None
        self._valid_until = 0.0  # monotonic
        self._renewed_at = float("-inf")  # monotonic
        self.lost = 0
        """Times the lease was found taken while this replica acted (for tests)."""
        self.last_commit: dt.datetime | None = None
        """When the last fenced transaction committed (UTC), logged after each poll."""

    def hold(self) -> bool:
        """Take or renew the lease when due; True while this replica is the leader."""
        started = time.monotonic()
        if self.token is not None and started - self._renewed_at < self.seconds / 3:
            return self.may_act()
        with self._sessions.begin() as session:
            token = leases.take(session, self.name, self.holder, self.seconds, utcnow())
        if token is None:
            if self.token is not None:
                self._lose("taken by another replica")
            return False
        if self.token != token:
            log.info(
                "monitor lease taken: this replica is the leader",
                extra={"lease": self.name, "holder": self.holder, "token": token},
            )
        self.token = token
        self._renewed_at = started
        # Counted from before the renewal's transaction began: never later than the
        # database's own expiry, whatever the clocks say.
        self._valid_until = started + self.seconds
        MONITOR_LEADER.set(1)
        return True

    def may_act(self) -> bool:
        """Whether the lease still runs by this process's monotonic clock."""
        return self.token is not None and time.monotonic() < self._valid_until

    def fence(self, session: Session) -> None:
        """The `before_commit` check: raise LeaseLost unless the lease is still ours."""
        if self.token is None:
            raise LeaseLost(f"this replica does not hold {self.name!r}: it stands by")
        try:
            leases.verify(session, self.name, self.holder, self.token)
        except LeaseLost:
            self._lose("found taken at commit")
            raise

    def install(self, sessions: sessionmaker[Session]) -> None:
        """Fence every transaction of `sessions` (the follower's)."""

        def before_commit(session: Session, *_args: Any) -> None:
            self.fence(session)

        def after_commit(_session: Session, *_args: Any) -> None:
            self.last_commit = utcnow()

        event.listen(sessions, "before_commit", before_commit)
        event.listen(sessions, "after_commit", after_commit)

    def release(self) -> None:
        """At a graceful stop: let the lease expire now if it is still ours."""
        if self.token is None:
            return
        with self._sessions.begin() as session:
            leases.release(session, self.name, self.holder, self.token, utcnow())
        self.token = None
        MONITOR_LEADER.set(0)

    def _lose(self, why: str) -> None:
        log.warning(
            "monitor lease lost: standing by",
            extra={"lease": self.name, "holder": self.holder, "token": self.token, "why": why},
        )
        self.token = None
        self._valid_until = 0.0
        self.lost += 1
        MONITOR_LEASE_LOST.add(1)
        MONITOR_LEADER.set(0)
