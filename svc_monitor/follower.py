"""Following the chain: settle broadcast payout transactions into confirmed (or failed) ones.

The place to start reading the monitor. `ChainFollower.poll_once()` is synchronous and
transport-neutral (the server runs it on a dedicated thread). Each poll (step 3 runs first
for the rows mined before the poll, and again after steps 2 and 4 for the rows they mined):

1. reads the head block (`head.BlockHashes`);
2. for each payout transaction in BROADCAST, matches its receipt (`mining.Mining`): MINED,
   its withdrawals CONFIRMING (or, for a reverted receipt, left where they are until the
   depth); a vault payout's per-item outcomes are stored (`vault_items`);
3. for each payout transaction in MINED (`confirmations.Confirmations`): a reorganisation
   sends it back to BROADCAST and re-sends the same signed bytes (`reorgs.Reorgs`,
   `rebroadcast.Rebroadcaster`); otherwise its confirmations are counted and, at the chain's
   confirmation depth, it is CONFIRMED and its withdrawals COMPLETED with their share of the
   fee (`fees.split_fee`), or REVERTED and its withdrawals ON_HOLD `PAYOUT_REVERTED`;
4. for each payout transaction in REPLACED, fetches its receipt too: the old hash may still
   mine instead of its replacement, and is then adopted as the row that counts (`mining`).

Every withdrawal move goes through `transitions.move` in the same database transaction as the
payout row's compare-and-set on its state (`rows.PayoutRows.in_transaction`); a conflict
(someone else moved something first) rolls the whole transaction back and the row is looked at
again in the next poll. So re-processing a receipt never moves anything twice. The poll
returns the committed `Moved`s for the caller to publish.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from svc_monitor.confirmations import Confirmations
from svc_monitor.emergency import EmergencyWatch
from svc_monitor.head import BlockHashes
from svc_monitor.mining import Mining
from svc_monitor.rebroadcast import Rebroadcaster
from svc_monitor.reorgs import Reorgs
from svc_monitor.report import PollReport
from svc_monitor.rows import PayoutRows
from svc_monitor.vault_items import VaultItems
from withdrawal_shared.chain.rpc_pool import PoolProvider, RpcPool
from withdrawal_shared.db.models import Chain
from withdrawal_shared.errors import WithdrawalSystemError
from withdrawal_shared.states import PayoutState

ACTOR = "monitor"


class MonitorError(WithdrawalSystemError):
    """The monitor cannot follow the configured chain; the message says what to fix."""


class ChainFollower:
    """Settles the payout transactions of one chain; see the module docstring."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        w3: Web3,
        chain: str,
        *,
        batch_size: int = 500,
        actor: str = ACTOR,
        pool: RpcPool | None = None,
        emergency_alert_blocks: int = 3,
        may_act: Callable[[], bool] = lambda: True,
    ) -> None:
        self._sessions = sessions
        self._w3 = w3
        if pool is None and isinstance(w3.provider, PoolProvider):
            pool = w3.provider.pool
        self.chain = chain
        self.blocks = BlockHashes(w3)
        self._node_chain_id: int | None = None
        self._rows = PayoutRows(sessions, chain, actor=actor, batch_size=batch_size)
        # Re-broadcasts go to every healthy provider of this pool (None: through `w3` alone).
        rebroadcaster = Rebroadcaster(w3, pool, may_act)
        self._items = VaultItems(actor)
        self._mining = Mining(self._rows, w3, rebroadcaster)
        self._confirmations = Confirmations(
            self._rows, self.blocks, Reorgs(self._rows, rebroadcaster), self._items
        )
        self.emergency = EmergencyWatch(sessions, chain, emergency_alert_blocks)

    @property
    def skipped_as_paid(self) -> int:
        """Items the vault skipped as already paid: never expected in normal operation."""
        return self._items.skipped_as_paid

    def poll_once(self) -> PollReport:
        required = self._required_confirmations()
        report = PollReport(head=self.blocks.read_head())
        # What was mined before this poll goes first (step 3), so that payouts already at
        # the depth complete without waiting behind the receipts of newer ones: after a
        # restart that is a whole backlog of receipts, each with its withdrawals to move.
        earlier = self._rows.in_state(PayoutState.MINED)
        for row in earlier:
            self._confirmations.check(row, report, required)
        # A row this poll sent back to BROADCAST (reorganised) is looked at in the next
        # poll, as before: its receipt is read against a head read after the reorg.
        seen = {row.id for row in earlier}
        for row in self._rows.in_state(PayoutState.BROADCAST):
            if row.id not in seen:
                self._mining.check(row, report, required)
        for row in self._rows.in_state(PayoutState.REPLACED):
            self._mining.check(row, report, required, replaced=True)
        if report.mined or report.reverted:
            # Mined in this poll (steps 2 and 4): count their confirmations now, as when
            # step 3 came after step 2 (with a depth of 1 they complete in this poll).
            for row in self._rows.in_state(PayoutState.MINED):
                if row.id not in seen:
                    self._confirmations.check(row, report, required)
        report.emergency_late = len(self.emergency.check(report.head))
        return report

    def _required_confirmations(self) -> int:
        with self._sessions() as session:
            chain = session.get(Chain, self.chain)
        if chain is None:
            raise MonitorError(
                f"chain {self.chain!r} is not in the chains table: set CHAIN to a configured "
                "chain name (e.g. polygon) or run the migrations"
            )
        if self._node_chain_id is None:
            self._node_chain_id = int(self._w3.eth.chain_id)
        if self._node_chain_id != chain.chain_id:
            raise MonitorError(
                f"the node at CHAIN_RPC_URL reports chain id {self._node_chain_id}, but chain "
                f"{self.chain!r} has chain id {chain.chain_id}: point CHAIN_RPC_URL at a "
                f"{self.chain} node"
            )
        return max(1, chain.confirmations)
