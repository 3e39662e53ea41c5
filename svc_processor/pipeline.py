"""The processor's core: moves withdrawals as far as they can go now, safely.

Per withdrawal (`process`): RECEIVED -> VALIDATED -> QUEUED, or REJECTED with a reason, or
-> PENDING_APPROVAL when an approval rule wants operators' approvals (`screening.py`: the
blocklist and the approval rules, decided in the same transaction).
Then paying (see `payouts.py` for the reserve -> sign -> store -> broadcast steps):

- through the chain's PayoutVault when one is configured (`run_batches`): ready withdrawals
  are grouped per token into one payout transaction, closed at `batch_max_items`, at the gas
  budget, or once the oldest has waited `batch_max_wait_seconds` since it was requested; a
  PRIORITY or EMERGENCY withdrawal closes its batch at once. Several payouts may be in flight
  per hot wallet (consecutive nonces, at most `max_in_flight_per_wallet`), and each hot wallet
  has its own nonce sequence;
- otherwise one ERC-20 transfer per withdrawal (`process` pays it directly).

While the money or the gas is missing the withdrawals wait ON_HOLD with the reason, and resume
by themselves when it is there (the reasons, and which resume: `withdrawal_shared.holds`).
While the kill switch covers their token they wait ON_HOLD `PAUSED` (`pauses.py`), and go
back to QUEUED once it is lifted.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from svc_processor.chain_reads import ChainReads, WouldRevert
from svc_processor.partitions import Partitions
from svc_processor.pauses import PayoutsPaused, is_paused_hold, paused_now
from svc_processor.pauses import detail as pause_detail
from svc_processor.payouts import ACTOR, Draft, Kind, Payouts
from svc_processor.replacer import Replacer
from svc_processor.safe_payouts import SafeRouter, not_safe_routed, routed_amount
from svc_processor.screening import Screening
from svc_processor.signer_client import SignerClient
from svc_processor.vault_funds import VaultFundsRecorder
from withdrawal_shared.chain.erc20 import encode_transfer
from withdrawal_shared.chain.fees import FeeCapExceeded, FeePolicy, Fees
from withdrawal_shared.chain.payout import Payment, encode_payout
from withdrawal_shared.db.models import (
    Chain,
    HotWallet,
    PayoutTransaction,
    PayoutVault,
    Withdrawal,
)
from withdrawal_shared.db.reference import ReferenceCache, ReferenceData, TokenInfo
from withdrawal_shared.db.transitions import (
    Moved,
    Step,
    TransitionConflict,
    move,
    move_many,
    utcnow,
)
from withdrawal_shared.holds import RESUMABLE, HoldReason
from withdrawal_shared.states import (
    PRIORITIES,
    URGENCY,
    PayoutState,
    Priority,
    State,
    WalletRole,
    WalletState,
)

log = logging.getLogger(__name__)

# Gas floor of a vault payout: eth_estimateGas sees today's state, but the block may differ
# (a first write to the outflow-usage slot or to a new bitmap slot costs ~22k more).
VAULT_BASE_GAS = 90_000
VAULT_ITEM_GAS = 36_000
# What the consumer does to a valid withdrawal: two audited moves, written together.
QUEUE_PATH = (Step(State.VALIDATED, "VALIDATED"), Step(State.QUEUED, "QUEUED"))
IN_FLIGHT = (PayoutState.RESERVED, PayoutState.SIGNED, PayoutState.BROADCAST)
PENDING = (PayoutState.SIGNED, PayoutState.BROADCAST)  # signed, maybe sent, not mined


class Lane(enum.StrEnum):
    """Which hot wallets pay a batch: STANDARD ones, or the EMERGENCY-role ones (EMERGENCY
    withdrawals only, and only while such a wallet is enabled)."""

    STANDARD = "STANDARD"
    EMERGENCY = "EMERGENCY"


@dataclass(frozen=True)
class BatchSettings:
    max_items: int = 300
    max_wait_seconds: float = 1.0
    gas_budget: int = 15_000_000
    max_in_flight_per_wallet: int = 16
    gas_margin_pct: int = 25
    hold_recheck_seconds: float = 2.0  # how often a group that is all ON_HOLD is re-planned
    stuck_after_blocks: int = 5  # blocks without a receipt before a payout is replaced
    replacement_bump_pct: int = 15  # tip and max fee raise of a replacement (10 at least)
    emergency_stuck_after_blocks: int = 1  # the same for an EMERGENCY payout
    urgent_streak_max: int = 4  # urgent-led payouts in a row while STANDARD rows wait, at most


class Pipeline:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        w3: Web3,
        signer: SignerClient,
        chain: str,
        batch: BatchSettings,
        *,
        manual_approval: bool = False,
        partitions: Partitions | None = None,
    ) -> None:
        self.sessions = sessions
        # Which withdrawals this processor batches, among several replicas (None: all).
        self.partitions = partitions
        self._held: frozenset[int] = frozenset()
        self.screening = Screening(manual=manual_approval)
        self.chain = chain
        self.batch = batch
        self.reads = ChainReads(w3)
        self.payouts = Payouts(sessions, w3, signer, chain)
        self.replacer = Replacer(sessions, w3, signer, self.payouts, chain)
        self.reference = ReferenceCache(sessions)
        self.vault_funds = VaultFundsRecorder(sessions, chain)
        # Withdrawals above their token's Safe threshold go to the treasury Safe.
        self.safe_router = SafeRouter(sessions, chain)
        # Monotonic time before which ON_HOLD rows are not looked at again by the batcher
        # (waiting on funds, a cap or fees: a little later, not every poll).
        self._recheck_holds_after = 0.0
        # Per token: STANDARD-lane payouts in a row that led with PRIORITY/EMERGENCY rows
        # while STANDARD rows were left waiting (`_ready_groups` bounds it).
        self._urgent_streak: dict[int, int] = defaultdict(int)
        self._streak_outcome: dict[int, bool] = {}  # per token: the chosen batch extends it
        # Set by the server: a signed payout's broadcast handed to a thread of its own, so
        # that the next payout is planned, reserved and signed while this one is sent (None:
        # `_pay_batch` broadcasts it itself). The one who sends keeps the ids handed over and
        # not yet sent in `broadcasts_queued`, which `resume_payouts` leaves alone.
        self.broadcast_later: Callable[[str], None] | None = None
        self.broadcasts_queued: set[str] = set()

    # ------------------------------------------------------------------ entry points

    def process(self, withdrawal_id: str) -> list[Moved]:
        """Advance one withdrawal through every step possible now; the moves made."""
        moved: list[Moved] = []
        for _ in range(8):
            step = self._step(withdrawal_id)
            if not step:
                break
            moved.extend(step)
        return moved

    def process_many(self, withdrawal_ids: Sequence[str]) -> list[Moved]:
        """`process` for a batch of tasks, validating them all in ONE transaction.

        RECEIVED rows go to QUEUED (two audit rows each: VALIDATED, then QUEUED), to
        PENDING_APPROVAL (likewise, with their approval requests) or to REJECTED, VALIDATED
        rows to QUEUED or PENDING_APPROVAL, as the blocklist and the approval rules decide
        (`Screening.decide`: the rules read once, the facts in a few batched queries),
        through `move_many` (compare-and-set on every
        row; nothing moved unless all of them were still as read). A conflict (a cancel or
        another processor got there first) rolls the batch back, and every task then goes
        through `process` alone, which tells the rows apart. Whatever is left to do after
        queueing (a direct transfer on a chain without a vault, a resumable hold) also goes
        through `process`, one withdrawal at a time.
        """
        ids = list(dict.fromkeys(withdrawal_ids))
        reference = self.reference.get()
        moved: list[Moved] = []
        try:
            # Read and moved in one transaction (the compare-and-set of `move_many` checks
            # each row against what is stored when it writes, as after a separate read).
            with self.sessions.begin() as session:
                rows = session.scalars(select(Withdrawal).where(Withdrawal.id.in_(ids))).all()
                vault = self._vault_in(session)
                plan = self.screening.sort(session, rows, reference, _refusal)
                moved += self.screening.hold(session, plan.pending, plan.verdicts)
                moved += move_many(session, plan.valid, QUEUE_PATH, actor=ACTOR)
                moved += move_many(session, plan.validated, QUEUE_PATH[1:], actor=ACTOR)
                for (reason, message), group in plan.rejected.items():
                    moved += move_many(
                        session, group, Step(State.REJECTED, reason, message), actor=ACTOR
                    )
        except TransitionConflict:
            log.info("a batch member moved concurrently; processing one by one")
            return [m for withdrawal_id in ids for m in self.process(withdrawal_id)]
        found = {row.id: row for row in rows}
        for missing in (i for i in ids if i not in found):
            log.warning("task for an unknown withdrawal", extra={"withdrawal_id": missing})
        settled = {row.id for group in plan.rejected.values() for row in group}
        settled.update(row.id for row in plan.pending)
        if vault is not None:
            settled.update(row.id for row in plan.valid + plan.validated)
        for withdrawal_id in ids:
            if withdrawal_id in found and withdrawal_id not in settled:
                moved.extend(self.process(withdrawal_id))
        return moved

    def run_batches(self) -> list[Moved]:
        """Close and pay every batch that is ready (vault chains only)."""
        vault = self._vault()
        if vault is None:
            return []
        moved: list[Moved] = []
        if self.partitions is not None:
            self._held = self.partitions.hold()  # none: all are others' for now
        with self.sessions() as session:
            split = self._has_emergency_wallet(session)
        groups = self._ready_groups(split)
        # The emergency lane first: nothing formed in this round waits ahead of it.
        for (token_id, lane), ready in sorted(
            groups.items(), key=lambda g: g[0][1] != Lane.EMERGENCY
        ):
            # A recipient blocked since validation is REJECTED here, never paid.
            rows, refused = self.screening.reject_blocked(self.sessions, ready)
            moved.extend(refused)
            if not rows:
                continue
            paid = self._pay_batch(vault, token_id, rows, lane)
            moved.extend(paid)
            extends = self._streak_outcome.pop(token_id, None)
            made = any(m.to_state == State.SIGNED for m in paid)  # a payout was signed
            if lane == Lane.STANDARD and extends is not None and made:
                self._urgent_streak[token_id] = self._urgent_streak[token_id] + 1 if extends else 0
        moved.extend(self.replace_stuck(only_emergency=True))
        return moved

    def resume_payouts(self) -> list[Moved]:
        """Finish what a crash interrupted: sign RESERVED payouts, send SIGNED ones; then
        replace the stuck ones (`replace_stuck`)."""
        with self.sessions() as session:
            rows = session.execute(
                select(PayoutTransaction.id, PayoutTransaction.state)
                .where(
                    PayoutTransaction.chain == self.chain,
                    PayoutTransaction.state.in_([PayoutState.RESERVED, PayoutState.SIGNED]),
                )
                .order_by(PayoutTransaction.wallet, PayoutTransaction.nonce)
            ).all()
        moved: list[Moved] = []
        for row in rows:
            if row.state == PayoutState.RESERVED:
                moved.extend(self.payouts.sign_reserved(row.id))
            elif row.id not in self.broadcasts_queued:
                moved.extend(self.payouts.broadcast(row.id))
        moved.extend(self.replace_stuck())
        return moved

    def replace_stuck(self, *, only_emergency: bool = False) -> list[Moved]:
        """Replace payouts not mined `stuck_after_blocks` (EMERGENCY ones:
        `emergency_stuck_after_blocks`) after their broadcast, at the same nonce with fees
        raised by `replacement_bump_pct` (see `replacer.py`). The batcher calls it with
        `only_emergency` at every poll, so an EMERGENCY payout is replaced within a poll of
        its block passing; the sweeper looks at all of them."""
        return self.replacer.replace_stuck(
            self.batch.stuck_after_blocks,
            self.batch.replacement_bump_pct,
            emergency_after_blocks=self.batch.emergency_stuck_after_blocks,
            only_emergency=only_emergency,
        )

    def stalled(self, older_than_seconds: float, limit: int = 2_000) -> list[str]:
        """Withdrawals to look at again before any payout holds them (the queue may have
        lost their task, or they wait ON_HOLD for a condition that may be gone), oldest
        first, at most `limit` per sweep.

        On a chain with a payout vault, QUEUED and ON_HOLD rows are the batcher's: it reads
        them itself (`_ready_groups`), and `process` has nothing to do for them, so the
        sweeper leaves them out instead of re-driving a whole backlog every sweep."""
        cutoff = utcnow() - dt.timedelta(seconds=older_than_seconds)
        states = [State.RECEIVED, State.VALIDATED]
        if self._vault() is None:
            states += [State.QUEUED, State.ON_HOLD]
        with self.sessions() as session:
            rows = session.execute(
                select(Withdrawal.id, Withdrawal.state, Withdrawal.state_reason)
                .where(
                    Withdrawal.chain == self.chain,
                    Withdrawal.payout_tx_id.is_(None),
                    Withdrawal.state.in_(states),
                    # Every priority, named: a range of the index (state, priority,
                    # update_time) per pair, only the rows older than the cutoff.
                    Withdrawal.priority.in_(PRIORITIES),
                    Withdrawal.update_time < cutoff,
                )
                .order_by(Withdrawal.update_time)
                .limit(limit)
            ).all()
        return [r.id for r in rows if r.state != State.ON_HOLD or r.state_reason in RESUMABLE]

    # ------------------------------------------------------------------ per withdrawal

    def _step(self, withdrawal_id: str) -> list[Moved]:
        with self.sessions() as session:
            row = session.get(Withdrawal, withdrawal_id)
        if row is None:
            log.warning("task for an unknown withdrawal", extra={"withdrawal_id": withdrawal_id})
            return []
        state = State(row.state)
        try:
            if state == State.RECEIVED:
                return self._validate(row)
            if state == State.VALIDATED:
                return self._settle(row)
            payable = state == State.QUEUED or (
                state == State.ON_HOLD and row.state_reason in RESUMABLE
            )
            if payable and row.payout_tx_id is None and self._vault() is None:
                return self._pay_directly(row)
        except TransitionConflict:
            log.info("withdrawal moved concurrently", extra={"withdrawal_id": withdrawal_id})
        return []

    def _move(self, row: Withdrawal, to_state: State, **kwargs: Any) -> list[Moved]:
        with self.sessions.begin() as session:
            current = session.get(Withdrawal, row.id)
            if current is None or current.version != row.version:
                raise TransitionConflict(row.id)
            return [move(session, current, to_state, actor=ACTOR, **kwargs)]

    def _settle(self, row: Withdrawal) -> list[Moved]:
        """VALIDATED -> QUEUED, PENDING_APPROVAL or REJECTED, as `Screening` decides."""
        reference = self.reference.get()
        with self.sessions.begin() as session:
            current = session.get(Withdrawal, row.id)
            if current is None or current.version != row.version:
                raise TransitionConflict(row.id)
            return [self.screening.settle_one(session, current, reference)]

    def _validate(self, row: Withdrawal) -> list[Moved]:
        refusal = _refusal(row, self.reference.get())
        if refusal is not None:
            reason, message = refusal
            return self._move(row, State.REJECTED, reason=reason, message=message)
        return self._move(row, State.VALIDATED, reason="VALIDATED")

    def _hold(
        self, rows: Sequence[Withdrawal], reason: HoldReason, detail: str = ""
    ) -> list[Moved]:
        moved: list[Moved] = []
        for row in rows:
            if row.state == State.ON_HOLD and row.state_reason == reason:
                continue  # still waiting for the same thing; no audit noise
            try:
                moved.extend(
                    self._move(
                        row,
                        State.ON_HOLD,
                        reason=reason,
                        message=reason.state_message(detail),
                    )
                )
            except TransitionConflict:
                continue
        return moved

    # ------------------------------------------------------------------ shared planning

    def _vault(self) -> PayoutVault | None:
        with self.sessions() as session:
            return self._vault_in(session)

    def _vault_in(self, session: Session) -> PayoutVault | None:
        vault = session.get(PayoutVault, self.chain)
        return vault if vault is not None and vault.enabled else None

    def _policy(self, session: Session) -> FeePolicy:
        chain = session.get(Chain, self.chain)
        if chain is None:
            raise RuntimeError(f"chain {self.chain!r} is not configured in the chains table")
        return FeePolicy(
            chain.min_priority_fee_wei, chain.max_fee_cap_wei, chain.base_fee_headroom_pct
        )

    def _has_emergency_wallet(self, session: Session) -> bool:
        """Whether an enabled EMERGENCY-role hot wallet exists (then EMERGENCY withdrawals
        are paid by it alone; otherwise by the standard wallets, like the others)."""
        return (
            session.scalar(
                select(HotWallet.address)
                .where(
                    HotWallet.chain == self.chain,
                    HotWallet.enabled.is_(True),
                    HotWallet.state == WalletState.ACTIVE.value,
                    HotWallet.role == WalletRole.EMERGENCY.value,
                )
                .limit(1)
            )
            is not None
        )

    def _wallet(self, session: Session, lane: Lane = Lane.STANDARD) -> HotWallet | None:
        """The enabled ACTIVE hot wallet of the lane's role with the fewest payouts in flight, below
        the bound. An EMERGENCY wallet never pays standard work; the EMERGENCY lane falls
        back to the standard wallets while no EMERGENCY wallet is enabled."""
        wallets = session.scalars(
            select(HotWallet)
            .where(
                HotWallet.chain == self.chain,
                HotWallet.enabled.is_(True),
                HotWallet.state == WalletState.ACTIVE.value,  # not PENDING, DRAINING, RETIRED
            )
            .order_by(HotWallet.address)
        ).all()
        emergency = [w for w in wallets if w.role == WalletRole.EMERGENCY]
        if lane == Lane.EMERGENCY and emergency:
            wallets = emergency
        else:
            wallets = [w for w in wallets if w.role != WalletRole.EMERGENCY]
        if not wallets:
            return None
        counts = dict(
            session.execute(
                select(PayoutTransaction.wallet, func.count())
                .where(
                    PayoutTransaction.chain == self.chain,
                    PayoutTransaction.state.in_(list(IN_FLIGHT)),
                )
                .group_by(PayoutTransaction.wallet)
            ).all()
        )
        best = min(wallets, key=lambda w: counts.get(w.address, 0))
        if counts.get(best.address, 0) >= self.batch.max_in_flight_per_wallet:
            return None
        return best

    def call_payer(self) -> tuple[str, Fees] | None:
        """(hot wallet, fees) for a payout transaction that pays no withdrawal (a treasury Safe
        execution): the standard wallet with the fewest payouts in flight and STANDARD fees
        now; None while every wallet is at its in-flight bound. Raises FeeCapExceeded."""
        with self.sessions() as session:
            wallet = self._wallet(session)
            policy = self._policy(session)
        if wallet is None:
            return None
        return wallet.address, self._priced(Priority.STANDARD, policy)

    def _priced(self, priority: Priority, policy: FeePolicy) -> Fees:
        """The fees for a payout of this priority (raises FeeCapExceeded). An EMERGENCY tip is
        at least the highest tip among this chain's own pending payouts (signed or broadcast,
        not mined) raised by `replacement_bump_pct`, so no transaction of ours outbids it;
        the max fee rises with it, within the chain's cap."""
        fees = self.reads.fees(priority, policy)
        if priority != Priority.EMERGENCY:
            return fees
        with self.sessions() as session:
            highest = session.scalar(
                select(func.max(PayoutTransaction.max_priority_fee_per_gas)).where(
                    PayoutTransaction.chain == self.chain,
                    PayoutTransaction.state.in_(list(PENDING)),
                )
            )
        return emergency_fees(
            fees, int(highest or 0), self.batch.replacement_bump_pct, policy.max_fee_cap_wei
        )

    def _committed(self, session: Session, token_id: int) -> int:
        """Amounts already promised by payouts not yet mined (they still sit in the payer),
        and to withdrawals routed to the treasury Safe and not yet in a payout.

        Reached from the payout rows not yet mined (few: those in flight), never by scanning
        withdrawals by state: a backlog of QUEUED rows would make every payout pay for
        reading all of them. A MINED payout's tokens have left the vault (its withdrawals are
        CONFIRMING, which the sum leaves out anyway; a reorganised one is BROADCAST again), so
        the payouts waiting for their confirmations are not read at all."""
        # Two reads, the open payouts' ids first: as one `IN (subquery)` MariaDB chose to
        # scan `withdrawals`, which took most of a second per payout once the table held a
        # few hundred thousand rows; with the ids written out it reads `ix_payout_tx_id`.
        open_payouts = list(
            session.scalars(
                select(PayoutTransaction.id).where(
                    PayoutTransaction.chain == self.chain,
                    PayoutTransaction.state.in_(
                        [
                            PayoutState.RESERVED,
                            PayoutState.SIGNED,
                            PayoutState.BROADCAST,
                            PayoutState.REPLACED,
                        ]
                    ),
                )
            )
        )
        total: int | None = 0
        if open_payouts:
            total = session.scalar(
                select(func.coalesce(func.sum(Withdrawal.amount), 0)).where(
                    Withdrawal.payout_tx_id.in_(open_payouts),
                    Withdrawal.token_id == token_id,
                    Withdrawal.state.in_(
                        [State.QUEUED, State.ON_HOLD, State.SIGNED, State.BROADCAST]
                    ),
                )
            )
        return int(total or 0) + routed_amount(session, self.chain, token_id)

    # ------------------------------------------------------------------ direct transfers

    def _pay_directly(self, row: Withdrawal) -> list[Moved]:
        if row.payout_number is not None or self.safe_router.rules().bound(
            row.token_id, row.amount
        ):
            # Given a payout number (a vault payout, by a hot wallet or the Safe, may still pay
            # it), or above its token's Safe threshold: never a plain ERC-20 transfer. It
            # waits until the chain's payout vault is enabled again.
            log.warning(
                "withdrawal not paid by a direct transfer: it has a payout number or is above "
                "its token's Safe threshold; it waits for the payout vault",
                extra={"withdrawal_id": row.id, "payout_number": row.payout_number},
            )
            return []
        payable, refused = self.screening.reject_blocked(self.sessions, [row])
        if not payable:
            return refused  # its recipient was blocked since validation: REJECTED
        token = self.reference.get().tokens_by_id[row.token_id]
        assert token.contract_address is not None
        held, rows = self._pause_gate([row])
        if not rows:
            return held  # paused, or queued again and paid at the next step
        lane = Lane.EMERGENCY if row.priority == Priority.EMERGENCY else Lane.STANDARD
        with self.sessions() as session:
            wallet = self._wallet(session, lane)
            policy = self._policy(session)
            committed = self._committed(session, row.token_id)
        if wallet is None:
            return []  # every wallet is at its in-flight bound: the sweeper comes back
        data = encode_transfer(row.recipient, row.amount)
        try:
            fees = self._priced(Priority(row.priority), policy)
        except FeeCapExceeded:
            return self._hold([row], HoldReason.FEES_ABOVE_CAP)
        if self.reads.token_balance(token.contract_address, wallet.address) - committed < (
            row.amount
        ):
            return self._hold([row], HoldReason.INSUFFICIENT_HOT_WALLET_FUNDS)
        try:
            estimate = self.reads.estimate_gas(wallet.address, token.contract_address, data)
        except WouldRevert:
            return self._hold([row], HoldReason.TRANSFER_WOULD_REVERT)
        gas_limit = estimate * (100 + self.batch.gas_margin_pct) // 100
        if self.reads.native_balance(wallet.address) < gas_limit * fees.max_fee_per_gas:
            return self._hold([row], HoldReason.INSUFFICIENT_HOT_WALLET_FUNDS)
        return self._reserve_and_sign(
            Draft(
                kind=Kind.TRANSFER,
                wallet=wallet.address,
                to_address=token.contract_address,
                token_address=token.contract_address,
                gas_limit=gas_limit,
                fees=fees,
                members=[row],
                build_calldata=lambda payments: encode_transfer(
                    payments[0].recipient, payments[0].amount
                ),
            )
        )

    def _reserve_and_sign(self, draft: Draft) -> list[Moved]:
        """Reserve the payout and sign it; its members ON_HOLD `PAUSED` when the kill switch
        refused the reservation."""
        try:
            payout_id = self.payouts.reserve(draft)
        except PayoutsPaused as paused:
            return self._hold(draft.members, HoldReason.PAUSED, pause_detail(paused.pause))
        return self.payouts.sign_reserved(payout_id) if payout_id else []

    def _pause_gate(self, rows: Sequence[Withdrawal]) -> tuple[list[Moved], list[Withdrawal]]:
        """(moves made, rows left to plan). While a pause covers the token (read without a
        lock, only to spare chain reads; the reservation decides under the lock), every row
        goes ON_HOLD `PAUSED`. Otherwise rows held `PAUSED` go back to QUEUED first (they
        are planned again from there) and the others are left to plan."""
        if not rows:
            return [], []
        with self.sessions() as session:
            pause = paused_now(session, self.chain, rows[0].token_id)
        if pause is not None:
            return self._hold(rows, HoldReason.PAUSED, pause_detail(pause)), []
        moved: list[Moved] = []
        for row in (r for r in rows if is_paused_hold(r)):
            try:
                moved += self._move(
                    row, State.QUEUED, reason="QUEUED", message="The pause was lifted."
                )
            except TransitionConflict:
                continue
        return moved, [r for r in rows if not is_paused_hold(r)]

    # ------------------------------------------------------------------ vault batches

    def _ready_groups(self, split: bool = False) -> dict[tuple[int, Lane], list[Withdrawal]]:
        """Per (token, lane), the withdrawals of the next payout, for the groups whose batch
        is ready. With `split` (an EMERGENCY wallet is enabled) EMERGENCY withdrawals form
        their own EMERGENCY-lane group, which is always ready; otherwise every priority shares
        the STANDARD lane, urgent ones first.

        Polled several times a second, so it reads little: QUEUED rows not yet in a payout,
        per priority the oldest, at most one payout's worth of each
        (`ix_withdrawals_state_priority_updated` keeps each read short however long the
        backlog), and ON_HOLD rows waiting on something that may have cleared only once per
        `hold_recheck_seconds`. Only a few columns are read to decide; the full rows of a
        ready batch are loaded after.

        STANDARD rows are never starved by a steady urgent load: after `urgent_streak_max`
        STANDARD-lane payouts of a token in a row that led with PRIORITY or EMERGENCY rows and
        left STANDARD rows out, the next one takes the STANDARD rows first (oldest first)."""
        candidates: list[Any] = []
        for priority in PRIORITIES:
            candidates += self._candidates(State.QUEUED, priority=priority)
        if time.monotonic() >= self._recheck_holds_after:
            self._recheck_holds_after = time.monotonic() + self.batch.hold_recheck_seconds
            held = [
                c
                for priority in PRIORITIES
                for c in self._candidates(State.ON_HOLD, priority=priority)
            ]
            held.sort(key=lambda c: c.update_time)  # the oldest, whatever their priority
            candidates += [c for c in held[: self.batch.max_items] if c.state_reason in RESUMABLE]
        groups: dict[tuple[int, Lane], list[Any]] = defaultdict(list)
        for candidate in candidates:
            emergency = split and candidate.priority == Priority.EMERGENCY
            groups[(candidate.token_id, Lane.EMERGENCY if emergency else Lane.STANDARD)].append(
                candidate
            )
        now = utcnow()
        chosen: dict[tuple[int, Lane], list[str]] = {}
        for key, members in groups.items():
            token_id, lane = key
            members.sort(key=lambda r: (URGENCY.get(r.priority, 2), r.id))
            urgent = URGENCY.get(members[0].priority, 2) < 2
            standard_first = (
                lane == Lane.STANDARD
                and self._urgent_streak[token_id] >= self.batch.urgent_streak_max
            )
            if standard_first:
                members.sort(key=lambda r: (URGENCY.get(r.priority, 2) < 2, r.id))
            # Waited since requested, not since QUEUED: after a restart (or any stall) the
            # backlog validated at once has waited long already, and closes at once instead
            # of `max_wait_seconds` later; in steady state the two differ by the validation.
            waited = (now - min(r.create_time for r in members)).total_seconds()
            full = len(members) >= self.batch.max_items
            if urgent or full or waited >= self.batch.max_wait_seconds:
                taken = members[: self.batch.max_items]
                chosen[key] = [r.id for r in taken]
                if lane == Lane.STANDARD:
                    self._streak_outcome[token_id] = _extends_streak(members, taken)
        if not chosen:
            return {}
        with self.sessions() as session:
            rows = {
                row.id: row
                for row in session.scalars(
                    select(Withdrawal).where(
                        Withdrawal.id.in_([i for ids in chosen.values() for i in ids])
                    )
                )
            }
        ready: dict[tuple[int, Lane], list[Withdrawal]] = {}
        for key, ids in chosen.items():
            members = [
                rows[i]
                for i in ids
                if i in rows
                and rows[i].payout_tx_id is None
                and rows[i].state in (State.QUEUED, State.ON_HOLD)
            ]
            if members:
                ready[key] = members
        return ready

    def _candidates(self, state: State, *, priority: Priority) -> list[Any]:
        """(id, token_id, priority, update_time, create_time, state, state_reason) of up to
        `max_items` rows in `state` and `priority` not yet in a payout, oldest first: a range
        of the index (state, priority, update_time) in its order."""
        w = Withdrawal
        query = select(
            w.id, w.token_id, w.priority, w.update_time, w.create_time, w.state, w.state_reason
        ).where(
            w.state == state.value,
            w.priority == priority.value,
            w.chain == self.chain,
            w.payout_tx_id.is_(None),
            not_safe_routed(),  # the treasury executor's until its Safe payout settles
        )
        if self.partitions is not None:
            mine = self.partitions.condition(w.id, self._held)
            if mine is not None:
                query = query.where(mine)
        with self.sessions() as session:
            return list(
                session.execute(query.order_by(w.update_time).limit(self.batch.max_items)).all()
            )

    def _route_to_safe(self, rows: list[Withdrawal]) -> tuple[list[Moved], list[Withdrawal]]:
        """(moves made, rows left for a hot wallet's payout): the Safe-bound rows among `rows`
        get a Safe payout (`SafeRouter.route`), or go ON_HOLD `SAFE_APPROVALS_MISSING` when
        fewer operators approved them than the Safe's threshold."""
        if not rows:
            return [], rows
        rules = self.safe_router.rules()
        bound = [r for r in rows if rules.bound(r.token_id, r.amount)]
        if not bound:
            return [], rows
        assert rules.threshold is not None
        short = self.safe_router.short_of_approvals(bound, rules.threshold)
        moved = self._hold(
            short,
            HoldReason.SAFE_APPROVALS_MISSING,
            f"The treasury Safe's threshold is {rules.threshold} approvals.",
        )
        for row in bound:
            if row not in short:
                self.safe_router.route(row)
        return moved, [r for r in rows if r not in bound]

    def _pay_batch(
        self,
        vault: PayoutVault,
        token_id: int,
        rows: list[Withdrawal],
        lane: Lane = Lane.STANDARD,
    ) -> list[Moved]:
        token = self.reference.get().tokens_by_id[token_id]
        assert token.contract_address is not None
        with self.sessions() as session:
            wallet = self._wallet(session, lane)
            policy = self._policy(session)
            committed = self._committed(session, token_id)
        if wallet is None:
            return []  # all wallets at their in-flight bound; next round
        moved, rows = self._pause_gate(rows)
        if not rows:
            return moved
        # Plan within the vault's balance and its outflow cap: an item over either would fail.
        available = self.reads.token_balance(token.contract_address, vault.address) - committed
        allowance = self.reads.remaining_outflow(vault.address, token.contract_address)
        self.vault_funds.record(token_id, available, allowance)
        fits, short, capped = _within(rows[: self.batch.max_items], available, allowance)
        moved += self._hold(short, HoldReason.INSUFFICIENT_VAULT_FUNDS)
        moved += self._hold(capped, HoldReason.OUTFLOW_CAP_REACHED)
        # Above the token's Safe threshold: the treasury Safe pays it, never this payout.
        routed, fits = self._route_to_safe(fits)
        moved += routed
        # A payout pays consecutive numbers. New withdrawals get them now; one retried under
        # the number it already has goes alone (the next poll takes the others).
        retried = [r for r in fits if r.payout_number is not None]
        if retried:
            fits = retried[:1]
        if not fits:
            return moved
        priority = Priority(min(fits, key=lambda r: URGENCY.get(r.priority, 2)).priority)
        try:
            fees = self._priced(priority, policy)
        except FeeCapExceeded:
            return moved + self._hold(fits, HoldReason.FEES_ABOVE_CAP)

        def calldata(payments: Sequence[Payment]) -> bytes:
            return encode_payout(token.contract_address or "", payments)

        gas_limit = 0
        for _ in range(3):
            # Numbers not given yet are estimated with placeholders: the bitmap is unset
            # for both, so the gas is the same.
            provisional = [
                Payment(r.payout_number or vault.next_number + i, r.recipient, r.amount)
                for i, r in enumerate(fits)
            ]
            try:
                estimate = self.reads.estimate_gas(
                    wallet.address, vault.address, calldata(provisional)
                )
            except WouldRevert:
                return moved + self._hold(fits, HoldReason.PAYOUT_WOULD_REVERT)
            gas_limit = max(
                estimate * (100 + self.batch.gas_margin_pct) // 100,
                VAULT_BASE_GAS + VAULT_ITEM_GAS * len(fits),
            )
            if gas_limit <= self.batch.gas_budget or len(fits) == 1:
                break
            fits = fits[: max(1, len(fits) * self.batch.gas_budget // gas_limit)]
        if self.reads.native_balance(wallet.address) < gas_limit * fees.max_fee_per_gas:
            return moved + self._hold(fits, HoldReason.INSUFFICIENT_HOT_WALLET_FUNDS)
        try:
            payout_id = self.payouts.reserve(
                Draft(
                    kind=Kind.VAULT,
                    wallet=wallet.address,
                    to_address=vault.address,
                    token_address=token.contract_address,
                    gas_limit=gas_limit,
                    fees=fees,
                    members=fits,
                    build_calldata=calldata,
                )
            )
        except PayoutsPaused as paused:
            return moved + self._hold(fits, HoldReason.PAUSED, pause_detail(paused.pause))
        if payout_id is None:
            return moved
        log.info(
            "payout batch closed",
            extra={"payout_tx_id": payout_id, "items": len(fits), "token": token.symbol},
        )
        if self.broadcast_later is None:
            return moved + self.payouts.sign_reserved(payout_id)
        signed = self.payouts.sign_reserved(payout_id, broadcast=False)
        # Handed over whatever happened: `Payouts.broadcast` sends only a SIGNED payout.
        self.broadcast_later(payout_id)
        return moved + signed


def _refusal(row: Withdrawal, reference: ReferenceData) -> tuple[str, str] | None:
    """(reason, message) when the withdrawal must be REJECTED; None when it is valid."""
    token = reference.tokens_by_id.get(row.token_id)
    if token is None or not token.enabled or token.contract_address is None:
        return "TOKEN_DISABLED", "The token is not enabled for payouts; nothing was paid."
    if row.amount <= 0 or row.amount > token.max_amount_base_units:
        return (
            "AMOUNT_OUT_OF_LIMITS",
            "The amount is outside the token's configured limits; nothing was paid.",
        )
    if row.recipient in reference.system_addresses:
        return (
            "SYSTEM_ADDRESS",
            "The recipient is one of this system's own addresses; nothing was paid.",
        )
    return None


def _extends_streak(members: Sequence[Any], taken: Sequence[Any]) -> bool:
    """Whether a STANDARD-lane batch led with urgent rows and left STANDARD rows out (it
    extends the urgent streak; any other batch ends it)."""
    waiting = sum(1 for r in members if r.priority == Priority.STANDARD)
    served = sum(1 for r in taken if r.priority == Priority.STANDARD)
    return URGENCY.get(taken[0].priority, 2) < 2 and served < waiting


def emergency_fees(fees: Fees, highest_pending_tip: int, bump_pct: int, cap_wei: int) -> Fees:
    """`fees` with the tip raised to at least `highest_pending_tip` plus `bump_pct` percent
    (rounded up) and the max fee by as much, the max fee at most `cap_wei` and the tip at most
    the max fee. Unchanged when the market tip is already higher."""
    floor = -(-highest_pending_tip * (100 + bump_pct) // 100) if highest_pending_tip else 0
    if floor <= fees.max_priority_fee_per_gas:
        return fees
    max_fee = min(fees.max_fee_per_gas + floor - fees.max_priority_fee_per_gas, cap_wei)
    max_fee = max(max_fee, fees.max_fee_per_gas)
    return Fees(max_fee_per_gas=max_fee, max_priority_fee_per_gas=min(floor, max_fee))


def _within(
    rows: Sequence[Withdrawal], available: int, allowance: int
) -> tuple[list[Withdrawal], list[Withdrawal], list[Withdrawal]]:
    """(payable now, short of funds, over the outflow cap), in order."""
    fits: list[Withdrawal] = []
    short: list[Withdrawal] = []
    capped: list[Withdrawal] = []
    for row in rows:
        if row.amount > available:
            short.append(row)
        elif row.amount > allowance:
            capped.append(row)
        else:
            fits.append(row)
            available -= row.amount
            allowance -= row.amount
    return fits, short, capped


__all__ = ["BatchSettings", "Pipeline", "TokenInfo"]
