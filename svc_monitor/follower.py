"""Following the chain: settle broadcast payout transactions into confirmed (or failed) ones.

`ChainFollower.poll_once()` is synchronous and transport-neutral (the server runs it on a
dedicated thread). Each poll (step 3 runs first for the rows mined before the poll, and
again after steps 2 and 4 for the rows they mined):

1. reads the head block (`BlockHashes` caches canonical hashes for as long as the head is
   unchanged: a block hash commits to all of its ancestors);
2. for each payout transaction in BROADCAST, fetches its receipt: none -> nothing (a missing
   receipt is not a failure); status 1 -> MINED, its withdrawals CONFIRMING; status 0 ->
   MINED with `receipt_status` 0 and the decoded revert reason (after checking that the
   receipt holds no ERC-20 Transfer, i.e. that nothing was paid), its withdrawals left where
   they are: a reorganisation may still take the block away and mine the same bytes again,
   successfully this time. For a vault payout that succeeded, the vault's events say per
   item whether it was paid, failed (ON_HOLD at confirmation) or skipped as already paid
   (matched to the payout that paid it);
3. for each payout transaction in MINED: when the canonical hash at its block differs from
   the stored one (a reorganisation), back to BROADCAST, its withdrawals CONFIRMING ->
   BROADCAST (reorged) and the SAME signed bytes re-broadcast; otherwise the withdrawals'
   `confirmations` are updated and, at the chain's confirmation depth, the transaction is
   CONFIRMED and its withdrawals COMPLETED with their share of the fee (`fees.split_fee`)
   -- or, for a reverted one, REVERTED and its withdrawals ON_HOLD `PAYOUT_REVERTED` with
   their share of the fee, unlinked from it: nothing was paid and the processor pays them
   again (a vault payout under the same payout numbers, which the vault never pays twice; a
   single transfer at a new nonce, which the signer allows because the old nonce is now
   consumed by a transaction that paid nothing). The older rows it replaced at its
   (wallet, nonce) become DROPPED;
4. for each payout transaction in REPLACED (the processor replaced it at the same nonce with
   higher fees), fetches its receipt too: the old hash may still mine instead of the new one.
   If it does, ONE transaction makes it the row that counts — its siblings at the same
   (wallet, nonce) become DROPPED, the withdrawals it pays (its `payout_items`) point at it
   again — and settles it as in step 2 (MINED or REVERTED). No receipt for any sibling, or a
   "nonce too low", is never a failure: only one transaction per nonce can mine, and whichever
   does completes its withdrawals once.

Every withdrawal move goes through `transitions.move` in the same database transaction as the
payout row's compare-and-set on its state; a conflict (someone else moved something first)
rolls the whole transaction back and the row is looked at again in the next poll. So
re-processing a receipt never moves anything twice. The poll returns the committed `Moved`s
for the caller to publish.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3
from web3.exceptions import BlockNotFound, TransactionNotFound, Web3RPCError
from web3.types import RPCEndpoint

from svc_monitor.fees import split_fee
from svc_monitor.receipts import (
    decode_revert_data,
    erc20_transfers,
    revert_reason_from_rpc_error,
)
from withdrawal_shared.chain.payout import (
    OUTFLOW_CAP_REASON,
    TRANSFER_RETURNED_FALSE_REASON,
    decode_payout_events,
)
from withdrawal_shared.chain.rpc_pool import PoolProvider, RpcPool
from withdrawal_shared.chain.types import HexStr
from withdrawal_shared.crash_points import crash_point
from withdrawal_shared.db.models import Chain, PayoutItem, PayoutTransaction, Withdrawal
from withdrawal_shared.db.transitions import (
    WITHDRAWALS,
    Moved,
    RowAsRead,
    Step,
    TransitionConflict,
    move,
    move_many,
    utcnow,
)
from withdrawal_shared.errors import WithdrawalSystemError
from withdrawal_shared.metrics import CHAIN_REORGS
from withdrawal_shared.states import TERMINAL, PayoutState, State

log = logging.getLogger(__name__)

ACTOR = "monitor"


# Answers to eth_sendRawTransaction meaning the node already has (or had) these bytes.
_ALREADY_SENT = ("already known", "known transaction", "already imported", "nonce too low")


class Outcome:
    """`payout_items.outcome` once the payout is mined."""

    PAID = "PAID"
    FAILED = "FAILED"  # its bit stays unset: nothing was paid for it
    SKIPPED = "SKIPPED"  # the vault says it was already paid


def _failure_reason(reason: bytes) -> str:
    if reason in (OUTFLOW_CAP_REASON, TRANSFER_RETURNED_FALSE_REASON):
        return reason.decode()
    return decode_revert_data(reason) or "the token reverted without a reason"


class MonitorError(WithdrawalSystemError):
    """The monitor cannot follow the configured chain; the message says what to fix."""


class _RowMoved(Exception):
    """The payout row was not in the expected state: someone else moved it first."""


@dataclass
class PollReport:
    """What one poll saw and did. `moved` holds committed withdrawal moves, in order."""

    head: int = 0
    moved: list[Moved] = field(default_factory=list)
    pending: int = 0  # BROADCAST, no receipt yet
    mined: int = 0
    reverted: int = 0  # reverted receipts seen (the payout waits for its depth)
    reverted_final: int = 0  # reverted payouts at the depth: their withdrawals are retried
    reorged: int = 0
    confirmed: int = 0
    conflicts: int = 0
    anomalies: int = 0  # left alone for an operator (logged as errors)


@dataclass(frozen=True)
class _Row:
    id: str
    tx_hash: str
    block_number: int | None
    block_hash: str | None
    fee_wei: int | None
    kind: str = "transfer"
    to_address: str = ""
    wallet: str = ""
    nonce: int = -1
    receipt_status: int | None = None
    revert_reason: str = ""


class BlockHashes:
    """The head, and canonical block hashes by number, cached while the head is unchanged."""

    def __init__(self, w3: Web3, max_entries: int = 1024) -> None:
        self._w3 = w3
        self._max_entries = max_entries
        self._head: tuple[int, str] | None = None
        self._hashes: dict[int, str | None] = {}

    @property
    def head(self) -> int:
        if self._head is None:
            raise RuntimeError("read_head() first")
        return self._head[0]

    def read_head(self) -> int:
        block = self._block("latest")
        if block is None:
            raise BlockNotFound("the node has no latest block")
        number, block_hash = block
        if self._head != (number, block_hash):
            self._hashes.clear()  # a new head may sit on a different history
            self._head = (number, block_hash)
            self._hashes[number] = block_hash
        return number

    def _block(self, tag: str) -> tuple[int, str] | None:
        """(number, hash) of block `tag` (a number in hex, or "latest"); None when the node
        has no such block. Plain JSON-RPC: web3 would format the whole block (every field
        and transaction hash) only for these two."""
        response = self._w3.provider.make_request(RPCEndpoint("eth_getBlockByNumber"), [tag, False])
        error = response.get("error")
        if error:
            raise Web3RPCError(f"eth_getBlockByNumber failed: {error}")
        block = response.get("result")
        if block is None:
            return None
        return _int(block["number"]), _hex(block["hash"])

    def canonical_hash(self, number: int) -> str | None:
        """The hash of the canonical block `number`, or None when the node has no such block."""
        if number in self._hashes:
            return self._hashes[number]
        block = self._block(hex(number))
        block_hash = None if block is None else block[1]
        if len(self._hashes) >= self._max_entries:
            self._hashes.clear()
        if block_hash is not None:  # a missing block may appear at any moment: never cache it
            self._hashes[number] = block_hash
        return block_hash


def _hex(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    return str(value).lower()


def _int(value: Any) -> int:
    """A JSON-RPC quantity (0x-hex string) or an int."""
    return int(value, 16) if isinstance(value, str) else int(value)


@dataclass(frozen=True)
class _Receipt:
    """What the monitor reads of a receipt (`logs` as the node sent them: hex strings)."""

    block_number: int
    block_hash: str
    gas_used: int
    effective_gas_price: int
    status: int
    logs: Sequence[Mapping[str, Any]]


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
    ) -> None:
        self._sessions = sessions
        self._w3 = w3
        if pool is None and isinstance(w3.provider, PoolProvider):
            pool = w3.provider.pool
        # Re-broadcasts go to every healthy provider of this pool (None: through `w3` alone).
        self._pool = pool
        self.chain = chain
        self._batch_size = batch_size
        self._actor = actor
        self.blocks = BlockHashes(w3)
        self._node_chain_id: int | None = None
        # Items the vault skipped as already paid: never expected in normal operation.
        self.skipped_as_paid = 0
        # Reorged transactions whose re-broadcast the node refused: retried every poll while
        # the row waits in BROADCAST without a receipt.
        self._resend: dict[str, bytes] = {}

    # -- the poll ---------------------------------------------------------------------------

    def poll_once(self) -> PollReport:
        required = self._required_confirmations()
        report = PollReport(head=self.blocks.read_head())
        # What was mined before this poll goes first (step 3), so that payouts already at
        # the depth complete without waiting behind the receipts of newer ones: after a
        # restart that is a whole backlog of receipts, each with its withdrawals to move.
        earlier = self._rows(PayoutState.MINED)
        for row in earlier:
            self._check_mined(row, report, required)
        # A row this poll sent back to BROADCAST (reorganised) is looked at in the next
        # poll, as before: its receipt is read against a head read after the reorg.
        seen = {row.id for row in earlier}
        for row in self._rows(PayoutState.BROADCAST):
            if row.id not in seen:
                self._check_broadcast(row, report, required)
        for row in self._rows(PayoutState.REPLACED):
            self._check_broadcast(row, report, required, replaced=True)
        if report.mined or report.reverted:
            # Mined in this poll (steps 2 and 4): count their confirmations now, as when
            # step 3 came after step 2 (with a depth of 1 they complete in this poll).
            for row in self._rows(PayoutState.MINED):
                if row.id not in seen:
                    self._check_mined(row, report, required)
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

    def _rows(self, state: str) -> list[_Row]:
        pt = PayoutTransaction
        with self._sessions() as session:
            result = session.execute(
                select(
                    pt.id,
                    pt.tx_hash,
                    pt.block_number,
                    pt.block_hash,
                    pt.fee_wei,
                    pt.kind,
                    pt.to_address,
                    pt.wallet,
                    pt.nonce,
                    pt.receipt_status,
                    pt.revert_reason,
                )
                .where(pt.chain == self.chain, pt.state == state)
                .order_by(pt.update_time, pt.id)
                .limit(self._batch_size)
            ).all()
        return [
            _Row(
                r.id,
                r.tx_hash,
                r.block_number,
                r.block_hash,
                r.fee_wei,
                r.kind,
                r.to_address,
                r.wallet,
                int(r.nonce),
                r.receipt_status,
                r.revert_reason or "",
            )
            for r in result
        ]

    # -- step 2: BROADCAST -> MINED (receipt status 1 or 0) ---------------------------------

    def _check_broadcast(
        self, row: _Row, report: PollReport, required: int, *, replaced: bool = False
    ) -> None:
        """Settle a BROADCAST row by its receipt; with `replaced`, a REPLACED row whose hash
        mined after all is first made the row that counts (`_adopt`), in the same
        transaction."""
        receipt = self._receipt(row.tx_hash)
        if receipt is None and replaced:
            return  # the usual case: its replacement is the one to mine
        if receipt is None:
            report.pending += 1
            raw = self._resend.get(row.id)
            if raw is not None and self._rebroadcast(row, raw):
                self._resend.pop(row.id, None)
            return
        self._resend.pop(row.id, None)
        crash_point("monitor.after_receipt_before_update")
        block_number = receipt.block_number
        gas_used = receipt.gas_used
        price = receipt.effective_gas_price
        block = {
            "block_number": block_number,
            "block_hash": receipt.block_hash,
            "gas_used": gas_used,
            "effective_gas_price": price,
            "fee_wei": gas_used * price,
        }
        if receipt.status == 1:
            depth = max(1, report.head - block_number + 1)
            outcomes = self._item_outcomes(row, receipt)
            moved = self._in_transaction(
                row,
                report,
                lambda s: [
                    *(self._adopt(s, row) if replaced else []),
                    *self._record_mined(s, row, block, depth, required, outcomes),
                ],
            )
            if moved is not None:
                report.mined += 1
            return
        transfers = erc20_transfers(receipt.logs)
        if transfers:
            # Impossible for a reverted transaction; never call something FAILED that may
            # have paid. An operator has to look.
            report.anomalies += 1
            log.error(
                "reverted receipt holds ERC-20 transfers; leaving the payout for an operator",
                extra={"payout_tx_id": row.id, "tx_hash": row.tx_hash, "transfers": transfers},
            )
            return
        reason = self._revert_reason(row.tx_hash, receipt)
        moved = self._in_transaction(
            row,
            report,
            lambda s: [
                *(self._adopt(s, row) if replaced else []),
                *self._record_mined_reverted(s, row, block, reason),
            ],
        )
        if moved is not None:
            report.reverted += 1

    def _adopt(self, session: Session, row: _Row) -> list[Moved]:
        """A REPLACED row's own hash mined: make it the row that counts. Its siblings at the
        same (wallet, nonce) can never mine now and become DROPPED; the withdrawals it pays
        point at it again (their state is unchanged, so there is nothing to audit). Then it
        is BROADCAST, for `_record_mined` / `_record_mined_reverted` in the same transaction."""
        pt = PayoutTransaction
        siblings = session.execute(
            select(pt.id, pt.state).where(
                pt.chain == self.chain,
                pt.wallet == row.wallet,
                pt.nonce == row.nonce,
                pt.id != row.id,
            )
        ).all()
        settled = [s.id for s in siblings if s.state in (PayoutState.MINED, PayoutState.CONFIRMED)]
        if settled:
            # Another transaction at this nonce is recorded as mined: wait until the monitor
            # has seen its reorganisation before believing this receipt.
            raise _RowMoved(f"payout transaction {settled[0]} at the same nonce is mined")
        _cas_payout(session, row.id, PayoutState.REPLACED, PayoutState.BROADCAST)
        dropped = [s.id for s in siblings if s.state != PayoutState.DROPPED]
        if dropped:
            session.execute(
                update(pt)
                .where(pt.id.in_(dropped))
                .values(state=PayoutState.DROPPED, update_time=utcnow())
                .execution_options(synchronize_session=False)
            )
        paid = select(PayoutItem.withdrawal_id).where(PayoutItem.payout_tx_id == row.id)
        session.execute(
            update(Withdrawal)
            .where(
                Withdrawal.id.in_(paid),
                Withdrawal.payout_tx_id.in_([s.id for s in siblings]),
            )
            .values(payout_tx_id=row.id, tx_hash=row.tx_hash)
            .execution_options(synchronize_session=False)
        )
        for sibling in dropped:
            self._resend.pop(sibling, None)
        log.warning(
            "a replaced payout transaction mined instead of its replacement",
            extra={"payout_tx_id": row.id, "tx_hash": row.tx_hash, "dropped": dropped},
        )
        return []

    def _item_outcomes(self, row: _Row, receipt: _Receipt) -> dict[int, tuple[str, str]]:
        """Payout number -> (FAILED | SKIPPED, reason) from the vault's events; the numbers
        not named were paid."""
        if row.kind != "vault":
            return {}
        events = decode_payout_events(receipt.logs, row.to_address)
        outcomes: dict[int, tuple[str, str]] = {
            number: (Outcome.SKIPPED, "already paid") for number in events.skipped
        }
        for failed in events.failed:
            outcomes[failed.number] = (Outcome.FAILED, _failure_reason(failed.reason))
        return outcomes

    def _record_mined(
        self,
        session: Session,
        row: _Row,
        block: Mapping[str, Any],
        depth: int,
        required: int,
        outcomes: Mapping[int, tuple[str, str]],
    ) -> list[Moved]:
        _cas_payout(
            session, row.id, PayoutState.BROADCAST, PayoutState.MINED, receipt_status=1, **block
        )
        session.execute(
            update(PayoutItem)
            .where(PayoutItem.payout_tx_id == row.id)
            .values(outcome=Outcome.PAID, outcome_reason="")
            .execution_options(synchronize_session=False)
        )
        for number, (outcome, reason) in outcomes.items():
            session.execute(
                update(PayoutItem)
                .where(PayoutItem.payout_tx_id == row.id, PayoutItem.payout_number == number)
                .values(outcome=outcome, outcome_reason=reason[:256])
                .execution_options(synchronize_session=False)
            )
        message = (
            f"Mined in block {block['block_number']} (transaction {row.tx_hash}); "
            f"{depth} of {required} confirmations."
        )
        mined: list[RowAsRead] = []
        for withdrawal, _ in self._linked_as_read(session, row.id):
            if withdrawal.state in (State.SIGNED, State.BROADCAST):
                mined.append(withdrawal)
            else:
                self._left_alone(withdrawal, row, "mined")
        # All of them in one statement (compare-and-set on each; a conflict rolls back).
        return move_many(
            session,
            mined,
            Step(State.CONFIRMING, "MINED", message),
            actor=self._actor,
            fields={"confirmations": depth},
        )

    def _record_mined_reverted(
        self, session: Session, row: _Row, block: Mapping[str, Any], reason: str
    ) -> list[Moved]:
        """A reverted receipt: the nonce is used and nothing was paid -- in this block. Until
        the confirmation depth a reorganisation may still take the block away (and the same
        bytes may then mine successfully), so the withdrawals stay where they are and only
        the payout row records it; `_record_reverted` settles them at the depth."""
        _cas_payout(
            session,
            row.id,
            PayoutState.BROADCAST,
            PayoutState.MINED,
            receipt_status=0,
            revert_reason=reason[:256],
            **block,
        )
        log.warning(
            "payout transaction reverted; its withdrawals are retried once it has the "
            "confirmation depth",
            extra={
                "payout_tx_id": row.id,
                "tx_hash": row.tx_hash,
                "block_number": block["block_number"],
                "revert_reason": reason,
            },
        )
        return []

    def _record_reverted(self, session: Session, row: _Row, depth: int) -> list[Moved]:
        """A reverted transaction reached the confirmation depth: REVERTED, and every
        withdrawal it was to pay goes ON_HOLD `PAYOUT_REVERTED` with its share of the fee,
        unlinked from it, for the processor to pay again (nothing was paid)."""
        _cas_payout(
            session,
            row.id,
            PayoutState.MINED,
            PayoutState.REVERTED,
            expected_block_hash=row.block_hash,
        )
        self._drop_replaced(session, row)
        message = (
            f"Transaction {row.tx_hash} reverted in block {row.block_number} "
            f"({depth} confirmations): {row.revert_reason or 'reverted'}. Nothing was paid (a "
            "reverted transaction transfers no tokens; only its gas fee was spent). "
        ) + (
            "It is retried by itself under the same payout number, which the payout vault "
            "never pays twice."
            if row.kind == "vault"
            else "It is retried by itself in a new transaction once the transfer would succeed."
        )
        linked = self._linked(session, row.id)
        shares = split_fee(row.fee_wei or 0, [w.id for w in linked])
        moved: list[Moved] = []
        for withdrawal in linked:
            if withdrawal.state not in (State.SIGNED, State.BROADCAST, State.CONFIRMING):
                self._left_alone(withdrawal, row, "reverted")
                continue
            moved.append(
                move(
                    session,
                    withdrawal,
                    State.ON_HOLD,
                    actor=self._actor,
                    reason="PAYOUT_REVERTED",
                    message=message,
                    fee_wei=(withdrawal.fee_wei or 0) + shares[withdrawal.id],
                    confirmations=0,
                    payout_tx_id=None,
                )
            )
        return moved

    # -- step 3: MINED -> CONFIRMED | back to BROADCAST ---------------------------------------

    def _check_mined(self, row: _Row, report: PollReport, required: int) -> None:
        if row.block_number is None or row.block_hash is None:  # not written by us: skip
            report.anomalies += 1
            log.error("MINED payout without block fields", extra={"payout_tx_id": row.id})
            return
        if row.block_number > report.head:
            return  # mined after this poll read the head: look again next poll
        canonical = self.blocks.canonical_hash(row.block_number)
        if canonical != row.block_hash.lower():
            self._reorged(row, report, canonical)
            return
        depth = report.head - row.block_number + 1
        if depth >= required and row.receipt_status == 0:
            moved = self._in_transaction(
                row, report, lambda s: self._record_reverted(s, row, depth)
            )
            if moved is not None:
                report.reverted_final += 1
            return
        if depth >= required:
            moved = self._in_transaction(
                row, report, lambda s: self._record_confirmed(s, row, depth)
            )
            if moved is not None:
                report.confirmed += 1
            return
        with self._sessions.begin() as session:
            session.execute(
                update(Withdrawal)
                .where(
                    Withdrawal.payout_tx_id == row.id,
                    Withdrawal.state == State.CONFIRMING.value,
                    Withdrawal.confirmations != depth,
                )
                .values(confirmations=depth)
                .execution_options(synchronize_session=False)
            )

    def _record_confirmed(self, session: Session, row: _Row, depth: int) -> list[Moved]:
        _cas_payout(
            session,
            row.id,
            PayoutState.MINED,
            PayoutState.CONFIRMED,
            expected_block_hash=row.block_hash,
        )
        self._drop_replaced(session, row)
        crash_point("monitor.mid_state_update")  # the payout row is updated, uncommitted
        linked = self._linked_as_read(session, row.id)
        # Every item shares the gas, paid or not (see fees.split_fee for the rounding rule).
        shares = split_fee(row.fee_wei or 0, [w.id for w, _ in linked])
        # Only the items that were not paid: any other one (PAID, or no item) is paid.
        outcomes = {
            item.withdrawal_id: item
            for item in session.scalars(
                select(PayoutItem).where(
                    PayoutItem.payout_tx_id == row.id,
                    PayoutItem.outcome.in_([Outcome.FAILED, Outcome.SKIPPED]),
                )
            )
        }
        moved: list[Moved] = []
        paid: list[RowAsRead] = []
        fees: dict[str, dict[str, Any]] = {}
        for withdrawal, fee_wei in linked:
            if withdrawal.state not in (State.CONFIRMING, State.BROADCAST):
                self._left_alone(withdrawal, row, "confirmed")
                continue
            fee = (fee_wei or 0) + shares[withdrawal.id]
            item = outcomes.get(withdrawal.id)
            outcome = item.outcome if item is not None else Outcome.PAID
            if outcome in (Outcome.FAILED, Outcome.SKIPPED):
                # Rare: moved one by one, on the ORM row (read in this same transaction).
                loaded = session.get(Withdrawal, withdrawal.id)
                if loaded is None or loaded.version != withdrawal.version:
                    raise _RowMoved(f"withdrawal {withdrawal.id} moved since it was read")
                if outcome == Outcome.FAILED:
                    assert item is not None
                    moved.append(self._item_failed(session, loaded, row, item, fee, depth))
                else:
                    moved.append(self._item_skipped(session, loaded, row, fee, depth))
            else:
                paid.append(withdrawal)
                fees[withdrawal.id] = {"fee_wei": fee}
        # The paid ones all at once (one statement per source state), each with its own
        # fee share; a conflict rolls the whole payout back, as one `move` failing did.
        message = (
            f"Paid: transaction {row.tx_hash} in block {row.block_number} has {depth} "
            "confirmations."
        )
        moved += move_many(
            session,
            paid,
            Step(State.COMPLETED, "CONFIRMED", message),
            actor=self._actor,
            fields={"confirmations": depth},
            row_fields=fees,
        )
        return moved

    def _drop_replaced(self, session: Session, row: _Row) -> None:
        """The transactions `row` replaced at its nonce can never mine now: DROPPED."""
        if row.nonce < 0:
            return
        session.execute(
            update(PayoutTransaction)
            .where(
                PayoutTransaction.chain == self.chain,
                PayoutTransaction.wallet == row.wallet,
                PayoutTransaction.nonce == row.nonce,
                PayoutTransaction.id != row.id,
                PayoutTransaction.state == PayoutState.REPLACED,
            )
            .values(state=PayoutState.DROPPED, update_time=utcnow())
            .execution_options(synchronize_session=False)
        )

    def _item_failed(
        self,
        session: Session,
        withdrawal: Withdrawal,
        row: _Row,
        item: PayoutItem,
        fee: int,
        depth: int,
    ) -> Moved:
        """The vault could not pay this item (its bit stays unset): nothing was paid. An
        outflow cap clears by itself; anything else needs an operator."""
        capped = item.outcome_reason == "OUTFLOW_CAP"
        return move(
            session,
            withdrawal,
            State.ON_HOLD,
            actor=self._actor,
            reason="OUTFLOW_CAP_REACHED" if capped else "PAYOUT_ITEM_FAILED",
            message=(
                f"Not paid: in transaction {row.tx_hash} ({depth} confirmations) the payout "
                f"of this withdrawal failed ({item.outcome_reason}) while the others were "
                "paid. "
                + (
                    "It is retried by itself when the vault's outflow window allows."
                    if capped
                    else "An operator must review the recipient or the token."
                )
            ),
            fee_wei=fee,
            confirmations=0,
            payout_tx_id=None,
        )

    def _item_skipped(
        self, session: Session, withdrawal: Withdrawal, row: _Row, fee: int, depth: int
    ) -> Moved:
        """The vault skipped the item as already paid: find the payout that paid it."""
        paid_by = session.scalar(
            select(PayoutTransaction.tx_hash)
            .join(PayoutItem, PayoutItem.payout_tx_id == PayoutTransaction.id)
            .where(
                PayoutItem.withdrawal_id == withdrawal.id,
                PayoutItem.outcome == Outcome.PAID,
                PayoutTransaction.state.in_([PayoutState.MINED, PayoutState.CONFIRMED]),
                PayoutTransaction.id != row.id,
            )
        )
        self.skipped_as_paid += 1
        log.error(
            "vault skipped a withdrawal as already paid",
            extra={"withdrawal_id": withdrawal.id, "payout_tx_id": row.id, "paid_by": paid_by},
        )
        if paid_by is not None:
            return move(
                session,
                withdrawal,
                State.COMPLETED,
                actor=self._actor,
                reason="CONFIRMED",
                message=f"Paid by transaction {paid_by}; transaction {row.tx_hash} skipped it "
                "as already paid (the vault never pays a number twice).",
                fee_wei=fee,
                confirmations=depth,
                tx_hash=paid_by,
            )
        return move(
            session,
            withdrawal,
            State.ON_HOLD,
            actor=self._actor,
            reason="ALREADY_PAID_ELSEWHERE",
            message=f"The payout vault reports this withdrawal's number as already paid, but "
            f"no payout known here paid it (transaction {row.tx_hash} skipped it). Nothing "
            "more will be paid; an operator must reconcile it.",
            fee_wei=fee,
            confirmations=0,
        )

    def _reorged(self, row: _Row, report: PollReport, canonical: str | None) -> None:
        with self._sessions() as session:
            raw = session.scalar(
                select(PayoutTransaction.raw_tx).where(PayoutTransaction.id == row.id)
            )
        # Re-broadcast first: if this process dies before the commit, the next poll sees the
        # same mismatch and does it all again (re-sending the same bytes is harmless).
        resent = raw is not None and self._rebroadcast(row, raw)
        log.warning(
            "payout transaction reorganised out of the chain",
            extra={
                "payout_tx_id": row.id,
                "tx_hash": row.tx_hash,
                "block_number": row.block_number,
                "stored_hash": row.block_hash,
                "canonical_hash": canonical,
                "rebroadcast": resent,
            },
        )
        moved = self._in_transaction(
            row, report, lambda s: self._record_reorged(s, row, resent=resent)
        )
        if moved is None:
            return
        report.reorged += 1
        CHAIN_REORGS.add(1)
        if not resent and raw is not None:
            self._resend[row.id] = raw

    def _record_reorged(self, session: Session, row: _Row, *, resent: bool) -> list[Moved]:
        extra: dict[str, Any] = {}
        if resent:
            extra["broadcast_count"] = PayoutTransaction.broadcast_count + 1
        _cas_payout(
            session,
            row.id,
            PayoutState.MINED,
            PayoutState.BROADCAST,
            expected_block_hash=row.block_hash,
            block_number=None,
            block_hash=None,
            gas_used=None,
            effective_gas_price=None,
            fee_wei=None,
            receipt_status=None,
            revert_reason="",
            **extra,
        )
        session.execute(
            update(PayoutItem)
            .where(PayoutItem.payout_tx_id == row.id)
            .values(outcome="", outcome_reason="")
            .execution_options(synchronize_session=False)
        )
        message = (
            f"Block {row.block_number} holding transaction {row.tx_hash} was replaced by a "
            "chain reorganisation; the same signed transaction was broadcast again and is "
            "waiting to be mined. It cannot pay twice (same nonce)."
        )
        moved: list[Moved] = []
        for withdrawal in self._linked(session, row.id):
            if withdrawal.state == State.CONFIRMING:
                moved.append(
                    move(
                        session,
                        withdrawal,
                        State.BROADCAST,
                        actor=self._actor,
                        reason="REORGED",
                        message=message,
                        reorged=True,
                        confirmations=0,
                    )
                )
            else:
                self._left_alone(withdrawal, row, "reorged")
        return moved

    # -- helpers ------------------------------------------------------------------------------

    def _in_transaction(
        self, row: _Row, report: PollReport, work: Callable[[Session], list[Moved]]
    ) -> list[Moved] | None:
        """Run `work(session)` in one transaction; None (rolled back) on a conflict."""
        try:
            with self._sessions.begin() as session:
                moved = work(session)
        except (TransitionConflict, _RowMoved) as exc:
            report.conflicts += 1
            log.info(
                "payout or withdrawal moved concurrently; will look again next poll",
                extra={"payout_tx_id": row.id, "error": str(exc)},
            )
            return None
        report.moved.extend(moved)
        return moved

    def _linked(self, session: Session, payout_tx_id: str) -> Sequence[Withdrawal]:
        return session.scalars(
            select(Withdrawal)
            .where(Withdrawal.payout_tx_id == payout_tx_id)
            .order_by(Withdrawal.id)
        ).all()

    def _linked_as_read(
        self, session: Session, payout_tx_id: str
    ) -> list[tuple[RowAsRead, int | None]]:
        """`_linked` for `move_many` (no ORM objects), each with its `fee_wei`."""
        c = WITHDRAWALS.c
        result = session.execute(
            select(c.id, c.partner_id, c.state, c.version, c.audit_head, c.fee_wei)
            .where(c.payout_tx_id == payout_tx_id)
            .order_by(c.id)
        )
        return [(RowAsRead(*r[:5]), r[5]) for r in result]

    def _left_alone(self, withdrawal: Withdrawal | RowAsRead, row: _Row, event: str) -> None:
        if State(withdrawal.state) in TERMINAL:
            return
        log.warning(
            "withdrawal not in a state this payout event moves; left as is",
            extra={
                "withdrawal_id": withdrawal.id,
                "state": withdrawal.state,
                "payout_tx_id": row.id,
                "event": event,
            },
        )

    def _receipt(self, tx_hash: str) -> _Receipt | None:
        """The transaction's receipt, or None while the node has none.

        Read as plain JSON-RPC: web3's result formatters would turn every log of a payout
        (hundreds) into attribute dicts with checksummed addresses (a keccak each), which cost
        the monitor more than the rest of settling the payout; the log decoders take the
        node's hex strings as they are."""
        response = self._w3.provider.make_request(
            RPCEndpoint("eth_getTransactionReceipt"), [tx_hash]
        )
        error = response.get("error")
        if error:
            raise Web3RPCError(f"eth_getTransactionReceipt failed: {error}")
        result = response.get("result")
        if result is None:
            return None
        return _Receipt(
            block_number=_int(result["blockNumber"]),
            block_hash=_hex(result["blockHash"]),
            gas_used=_int(result["gasUsed"]),
            effective_gas_price=_int(result["effectiveGasPrice"]),
            status=_int(result["status"]),
            logs=result.get("logs") or [],
        )

    def _rebroadcast(self, row: _Row, raw: bytes) -> bool:
        """Send the stored signed bytes again; True when the node has them (now or before)."""
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

    def _revert_reason(self, tx_hash: str, receipt: _Receipt) -> str:
        """Replay the transaction with eth_call at its block and decode why it reverted."""
        try:
            tx = self._w3.eth.get_transaction(HexStr(tx_hash))
        except TransactionNotFound:
            return "reverted"
        call: dict[str, Any] = {
            "from": tx["from"],
            "to": tx["to"],
            "data": Web3.to_hex(tx["input"]),
            "value": hex(int(tx["value"])),
            "gas": hex(int(tx["gas"])),
        }
        response = self._w3.provider.make_request(
            RPCEndpoint("eth_call"), [call, hex(receipt.block_number)]
        )
        error = response.get("error")
        if isinstance(error, Mapping):
            reason = revert_reason_from_rpc_error(error)
            if reason:
                return reason
        if receipt.gas_used >= int(tx["gas"]):
            return f"out of gas (used all {int(tx['gas'])} gas)"
        return "reverted"


def _cas_payout(
    session: Session,
    payout_tx_id: str,
    from_state: str,
    to_state: str,
    *,
    expected_block_hash: str | None = None,
    **values: Any,
) -> None:
    """Compare-and-set a payout row's state (and block hash); `_RowMoved` when it moved."""
    conditions = [PayoutTransaction.id == payout_tx_id, PayoutTransaction.state == from_state]
    if expected_block_hash is not None:
        conditions.append(PayoutTransaction.block_hash == expected_block_hash)
    result = session.execute(
        update(PayoutTransaction)
        .where(*conditions)
        .values(state=to_state, update_time=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise _RowMoved(f"payout transaction {payout_tx_id} is no longer {from_state}")
