"""Processors sharing the batching work instead of colliding on it.

With `PROCESSOR_PARTITIONS=P` (one per processor replica), the withdrawals are split into P
partitions by the last character of their id: a ULID ends in random Crockford base32, so the
32 characters, dealt round robin to the partitions (`characters`), split the withdrawals
evenly. Each partition is a lease in the database (`processor:<chain>:partition:<p>`,
`withdrawal_shared.db.leases`), and a processor batches only the withdrawals of the partitions
it holds:

- its own, `PROCESSOR_REPLICA % P`, which it takes when free and renews;
- any other whose lease ran out (its processor died or stopped): taken for one lease time and
  not renewed, so a processor that comes back takes its own partition again within a lease
  time, while an absent one's withdrawals are never left unpaid.

Two processors therefore never build payouts from the same candidates, and do not undo each
other's gas estimates and reservations. Partitions decide only who tries; exactly once still
rests on the compare-and-set that links a withdrawal to one payout (`svc_processor.payouts`).
Validation, the task stream, sweeping and the replacement of stuck payouts are not
partitioned (each is idempotent and light). With P=1 (the default) nothing is filtered.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import ColumnElement, func
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from withdrawal_shared.db import leases
from withdrawal_shared.db.transitions import utcnow

log = logging.getLogger(__name__)

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
"""Lowercase Crockford base32, the characters our ids are written in (`withdrawal_shared.ids`;
a test checks they agree)."""
ID_LENGTH = 26


def characters(partition: int, count: int) -> str:
    """The last id characters of partition `partition` of `count`."""
    return "".join(c for index, c in enumerate(ALPHABET) if index % count == partition)


class Partitions:
    """This processor's hold on the batching partitions of `chain`."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        chain: str,
        count: int,
        replica: int,
        seconds: float,
        holder: str,
    ) -> None:
        if count < 1 or count > len(ALPHABET):
            raise ValueError(f"partitions must be 1 to {len(ALPHABET)}, not {count}")
        self.count = count
        self.own = replica % count
        self.seconds = seconds
        self.holder = holder
        self._sessions = sessions
        self._chain = chain
        self._held: dict[int, float] = {}  # partition -> monotonic time its lease runs out
        self._renewed_at = float("-inf")

    def name(self, partition: int) -> str:
        return f"processor:{self._chain}:partition:{partition}"

    def hold(self) -> frozenset[int]:
        """Take or renew what is due; the partitions held now (every one with P=1)."""
        if self.count == 1:
            return frozenset({0})
        started = time.monotonic()
        if started - self._renewed_at >= self.seconds / 3:
            self._renewed_at = started
            for offset in range(self.count):
                partition = (self.own + offset) % self.count
                own = partition == self.own
                if not own and partition in self._held:
                    continue  # a foreign one runs its one lease out, unrenewed
                try:
                    token = self._take(partition, own)
                except SQLAlchemyError as exc:  # keep what is held; try again next round
                    log.warning(
                        "batching partition lease not renewed",
                        extra={"partition": partition, "error": str(exc)},
                    )
                    continue
                if token is None:
                    if own:  # taken meanwhile by another (we were stopped): stop batching it
                        self._held.pop(partition, None)
                    continue
                if partition not in self._held:
                    log.info(
                        "batching partition taken",
                        extra={"partition": partition, "own": own, "token": token},
                    )
                self._held[partition] = started + self.seconds
        self._held = {p: until for p, until in self._held.items() if until > started}
        return frozenset(self._held)

    def _take(self, partition: int, own: bool) -> int | None:
        """One lease, in a transaction of its own (locking one row: never a deadlock between
        processors taking several)."""
        with self._sessions.begin() as session:
            # Another's partition only once its lease ran out a while ago, so that its
            # processor, if back, takes it first.
            return leases.take(
                session,
                self.name(partition),
                self.holder,
                self.seconds,
                utcnow(),
                grace_seconds=0.0 if own else self.seconds / 2,
            )

    def condition(
        self, column: InstrumentedAttribute[str], held: frozenset[int]
    ) -> ColumnElement[bool] | None:
        """The SQL condition on an id column for the partitions `held` (None: no filter)."""
        if self.count == 1:
            return None
        chars = sorted(c for partition in held for c in characters(partition, self.count))
        return func.substr(column, ID_LENGTH, 1).in_(chars)
