"""Watches EMERGENCY payouts every poll (every block or more often): one still unmined
`alert_after_blocks` after its broadcast raises `aws_emergency_payouts_late` and logs the event
`emergency payout late` (ERROR, with the payout, wallet, nonce, hash and blocks waited), once
per payout and process. A replacement (a new row at the same nonce) keeps the clock of the
first broadcast of its withdrawals, so it does not reset the alert."""

from __future__ import annotations

import logging

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from withdrawal_shared.db.models import PayoutItem, PayoutTransaction
from withdrawal_shared.metrics import EMERGENCY_PAYOUTS_LATE
from withdrawal_shared.states import PayoutState, Priority

log = logging.getLogger(__name__)

WATCHED = (PayoutState.SIGNED, PayoutState.BROADCAST)
MAX_REMEMBERED = 10_000


class EmergencyWatch:
    def __init__(
        self, sessions: sessionmaker[Session], chain: str, alert_after_blocks: int
    ) -> None:
        self._sessions = sessions
        self.chain = chain
        self.alert_after_blocks = alert_after_blocks
        self._alerted: set[tuple[str, int]] = set()  # (wallet, nonce) already reported
        self.late = 0
        """EMERGENCY payouts reported late by this process."""

    def check(self, head: int) -> list[str]:
        """The ids of the EMERGENCY payouts found late for the first time at `head`."""
        with self._sessions() as session:
            rows = session.execute(
                select(
                    PayoutTransaction.id,
                    PayoutTransaction.wallet,
                    PayoutTransaction.nonce,
                    PayoutTransaction.tx_hash,
                ).where(
                    PayoutTransaction.chain == self.chain,
                    PayoutTransaction.priority == Priority.EMERGENCY.value,
                    PayoutTransaction.state.in_([s.value for s in WATCHED]),
                    PayoutTransaction.broadcast_block.is_not(None),
                )
            ).all()
            if not rows:
                return []
            # The first broadcast at the same (wallet, nonce): a replacement keeps its clock.
            first = {
                (wallet, int(nonce)): since
                for wallet, nonce, since in session.execute(
                    select(
                        PayoutTransaction.wallet,
                        PayoutTransaction.nonce,
                        func.min(PayoutTransaction.broadcast_block),
                    )
                    .where(
                        PayoutTransaction.chain == self.chain,
                        PayoutTransaction.priority == Priority.EMERGENCY.value,
                        PayoutTransaction.wallet.in_({r.wallet for r in rows}),
                        PayoutTransaction.nonce.in_({r.nonce for r in rows}),
                    )
                    .group_by(PayoutTransaction.wallet, PayoutTransaction.nonce)
                ).all()
            }
            items = dict(
                session.execute(
                    select(PayoutItem.payout_tx_id, func.count())
                    .where(PayoutItem.payout_tx_id.in_([r.id for r in rows]))
                    .group_by(PayoutItem.payout_tx_id)
                ).all()
            )
        found: list[str] = []
        for row in rows:
            key = (row.wallet, row.nonce)
            since = first.get(key)
            if key in self._alerted or since is None:
                continue
            waited = head - int(since)
            if waited < self.alert_after_blocks:
                continue
            if len(self._alerted) >= MAX_REMEMBERED:
                self._alerted.clear()
            self._alerted.add(key)
            self.late += 1
            EMERGENCY_PAYOUTS_LATE.add(1, {"chain": self.chain})
            log.error(
                "emergency payout late",
                extra={
                    "event": "emergency_payout_late",
                    "payout_tx_id": row.id,
                    "wallet": row.wallet,
                    "nonce": row.nonce,
                    "tx_hash": row.tx_hash,
                    "blocks_waited": waited,
                    "alert_after_blocks": self.alert_after_blocks,
                    "items": int(items.get(row.id, 0)),
                },
            )
            found.append(row.id)
        return found
