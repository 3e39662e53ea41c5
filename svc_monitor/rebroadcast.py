"""Sending a payout's stored signed bytes again, and retrying the sends the node refused.

A payout reorganised out of the chain is sent again as the same signed transaction (same
nonce: it cannot pay twice). A send no provider accepted is remembered and retried every poll
while the row waits in BROADCAST without a receipt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from web3 import Web3
from web3.exceptions import Web3RPCError

from svc_monitor.rows import PayoutRow
from withdrawal_shared.chain.rpc_pool import RpcPool

log = logging.getLogger(__name__)

# Answers to eth_sendRawTransaction meaning the node already has (or had) these bytes.
_ALREADY_SENT = ("already known", "known transaction", "already imported", "nonce too low")


class Rebroadcaster:
    """Sends stored signed bytes again: to every healthy provider of `pool`, or through `w3`
    alone when there is no pool; keeps the refused ones for `retry`."""

    def __init__(
        self, w3: Web3, pool: RpcPool | None, may_act: Callable[[], bool] = lambda: True
    ) -> None:
        self._w3 = w3
        self._pool = pool
        # False once this replica's monitor lease ran out (svc_monitor.leadership): a paused
        # former leader sends nothing.
        self._may_act = may_act
        # Payout row id -> signed bytes whose re-broadcast no provider accepted yet.
        self._refused: dict[str, bytes] = {}

    def send(self, row: PayoutRow, raw: bytes) -> bool:
        """Send the stored signed bytes again; True when the node has them (now or before).
        Nothing is sent (False) once this replica may no longer act."""
        if not self._may_act():
            log.warning(
                "re-broadcast skipped: the monitor lease ran out", extra={"payout_tx_id": row.id}
            )
            return False
        if self._pool is not None:
            outcome = self._pool.send_raw_transaction(raw)
            if outcome.status in ("accepted", "already_known", "nonce_too_low"):
                return True
            log.warning(
                "re-broadcast not accepted by any RPC provider; retrying every poll",
                extra={
                    "payout_tx_id": row.id,
                    "tx_hash": row.tx_hash,
                    "send_status": outcome.status,
                    "error": "; ".join(f"{r.url}: {r.error}" for r in outcome.results if r.error),
                },
            )
            return False
        try:
            self._w3.eth.send_raw_transaction(raw)
        except (Web3RPCError, ValueError) as exc:
            text = str(exc).lower()
            if any(marker in text for marker in _ALREADY_SENT):
                return True
            log.warning(
                "re-broadcast refused by the node; retrying every poll",
                extra={"payout_tx_id": row.id, "tx_hash": row.tx_hash, "error": str(exc)},
            )
            return False
        return True

    def remember(self, row_id: str, raw: bytes) -> None:
        """A re-broadcast of `row_id` was refused: `retry` sends it again."""
        self._refused[row_id] = raw

    def retry(self, row: PayoutRow) -> None:
        """Send `row` again if its re-broadcast was refused (it has no receipt yet)."""
        raw = self._refused.get(row.id)
        if raw is not None and self.send(row, raw):
            self._refused.pop(row.id, None)

    def forget(self, row_id: str) -> None:
        """`row_id` has a receipt, or can never mine: nothing to retry."""
        self._refused.pop(row_id, None)
