"""The processor's core: moves one withdrawal as far as it can go now, safely.

RECEIVED -> VALIDATED -> QUEUED -> SIGNED -> BROADCAST, or REJECTED / ON_HOLD with a reason.
Paying a withdrawal takes three short database transactions around the signer call, so no
lock is held across a remote call and a crash at any point resumes without a nonce gap:

1. reserve: lock the hot wallet row, take its next nonce, insert a payout transaction row
   (RESERVED) and link the withdrawal to it (compare-and-set on its version);
2. sign: ask svc_signer for that nonce (the signer records it in its own ledger);
3. store: write the signed bytes and hash (SIGNED) and move the withdrawal to SIGNED
   — durably, before any broadcast;
4. broadcast: send the stored bytes; a restart re-sends the same bytes.

A RESERVED row found after a crash is signed again at the same nonce (the signer returns the
bytes it stored, or signs the same payload at that nonce: never a second nonce). If the signer
refuses, the nonce is released with a zero-value self-transfer so the wallet never jams.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_typing import HexStr
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3Exception

from assetwithdrawal.signer.v1 import signer_pb2
from svc_processor.errors import SignerRefused, TransientError, rpc_error_kind
from svc_processor.signer_client import SignerClient
from withdrawal_shared.chain.erc20 import encode_balance_of, encode_transfer
from withdrawal_shared.chain.fees import FeeCapExceeded, FeePolicy, Fees, percentiles, price
from withdrawal_shared.db.models import (
    Chain,
    HotWallet,
    PayoutTransaction,
    Withdrawal,
)
from withdrawal_shared.db.reference import ReferenceCache, TokenInfo
from withdrawal_shared.db.transitions import Moved, TransitionConflict, move, utcnow
from withdrawal_shared.ids import new_ulid
from withdrawal_shared.states import PayoutState, Priority, State

log = logging.getLogger(__name__)

ACTOR = "processor"
NATIVE_TRANSFER_GAS = 21_000
# ON_HOLD reasons the processor itself clears when the condition is gone.
RESUMABLE_HOLDS = frozenset({"INSUFFICIENT_HOT_WALLET_FUNDS", "TRANSFER_WOULD_REVERT"})


@dataclass(frozen=True)
class Plan:
    """What one payout will be: target, calldata, gas and fees."""

    wallet: str
    token: TokenInfo
    to_address: str
    data: bytes
    gas_limit: int
    fees: Fees


class Pipeline:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        w3: Web3,
        signer: SignerClient,
        chain: str,
        gas_margin_pct: int,
    ) -> None:
        self.sessions = sessions
        self.w3 = w3
        self.signer = signer
        self.chain = chain
        self.gas_margin_pct = gas_margin_pct
        self.reference = ReferenceCache(sessions)

    # ------------------------------------------------------------------ entry points

    def process(self, withdrawal_id: str) -> list[Moved]:
        """Advance the withdrawal through every step possible now; the moves made."""
        moved: list[Moved] = []
        for _ in range(8):
            step = self._step(withdrawal_id)
            if not step:
                break
            moved.extend(step)
        return moved

    def broadcast_pending(self) -> list[Moved]:
        """Send every stored, signed transaction not yet known to be broadcast."""
        with self.sessions() as session:
            ids = session.scalars(
                select(PayoutTransaction.id)
                .where(
                    PayoutTransaction.chain == self.chain,
                    PayoutTransaction.state == PayoutState.SIGNED,
                )
                .order_by(PayoutTransaction.nonce)
            ).all()
        moved: list[Moved] = []
        for payout_id in ids:
            moved.extend(self._broadcast(payout_id))
        return moved

    def stalled(self, older_than_seconds: float) -> list[str]:
        """Withdrawals the processor should look at again (the queue may have lost them)."""
        import datetime as dt

        cutoff = utcnow() - dt.timedelta(seconds=older_than_seconds)
        with self.sessions() as session:
            rows = session.execute(
                select(Withdrawal.id, Withdrawal.state, Withdrawal.state_reason).where(
                    Withdrawal.chain == self.chain,
                    Withdrawal.state.in_(
                        [
                            State.RECEIVED,
                            State.VALIDATED,
                            State.QUEUED,
                            State.ON_HOLD,
                            State.SIGNED,
                        ]
                    ),
                    Withdrawal.update_time < cutoff,
                )
            ).all()
        return [r.id for r in rows if r.state != State.ON_HOLD or r.state_reason in RESUMABLE_HOLDS]

    # ------------------------------------------------------------------ steps

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
                return self._queue(row)
            if state == State.QUEUED or (
                state == State.ON_HOLD and row.state_reason in RESUMABLE_HOLDS
            ):
                return self._pay(row)
            if state in (State.SIGNED,) and row.payout_tx_id is not None:
                return self._broadcast(row.payout_tx_id)
        except TransitionConflict:
            log.info("withdrawal moved concurrently", extra={"withdrawal_id": withdrawal_id})
        return []

    def _move(self, row: Withdrawal, to_state: State, **kwargs: Any) -> list[Moved]:
        with self.sessions.begin() as session:
            current = session.get(Withdrawal, row.id)
            if current is None or current.version != row.version:
                raise TransitionConflict(row.id)
            return [move(session, current, to_state, actor=ACTOR, **kwargs)]

    def _validate(self, row: Withdrawal) -> list[Moved]:
        reference = self.reference.get()
        token = reference.tokens_by_id.get(row.token_id)
        if token is None or not token.enabled or token.contract_address is None:
            return self._move(
                row,
                State.REJECTED,
                reason="TOKEN_DISABLED",
                message="The token is not enabled for payouts; nothing was paid.",
            )
        if row.amount <= 0 or row.amount > token.max_amount_base_units:
            return self._move(
                row,
                State.REJECTED,
                reason="AMOUNT_OUT_OF_LIMITS",
                message="The amount is outside the token's configured limits.",
            )
        if row.recipient in reference.system_addresses:
            return self._move(
                row,
                State.REJECTED,
                reason="SYSTEM_ADDRESS",
                message="The recipient is one of this system's own addresses.",
            )
        return self._move(row, State.VALIDATED, reason="VALIDATED")

    def _queue(self, row: Withdrawal) -> list[Moved]:
        return self._move(row, State.QUEUED, reason="QUEUED")

    # ------------------------------------------------------------------ paying

    def _hot_wallet(self, session: Session) -> HotWallet | None:
        return session.scalars(
            select(HotWallet)
            .where(HotWallet.chain == self.chain, HotWallet.enabled.is_(True))
            .order_by(HotWallet.address)
            .limit(1)
        ).first()

    def _fee_policy(self, session: Session) -> FeePolicy:
        chain = session.get(Chain, self.chain)
        if chain is None:
            raise RuntimeError(f"chain {self.chain!r} is not configured in the chains table")
        return FeePolicy(
            chain.min_priority_fee_wei, chain.max_fee_cap_wei, chain.base_fee_headroom_pct
        )

    def _plan(self, row: Withdrawal) -> Plan | str:
        """The payout plan, or the ON_HOLD reason that prevents it now."""
        token = self.reference.get().tokens_by_id[row.token_id]
        assert token.contract_address is not None
        with self.sessions() as session:
            wallet_row = self._hot_wallet(session)
            policy = self._fee_policy(session)
            # Signed but not yet mined payouts still draw on the same balance.
            pending = sum(
                session.scalars(
                    select(Withdrawal.amount).where(
                        Withdrawal.token_id == row.token_id,
                        Withdrawal.state.in_([State.SIGNED, State.BROADCAST]),
                    )
                )
            )
        if wallet_row is None:
            return "NO_HOT_WALLET"
        wallet = Web3.to_checksum_address(wallet_row.address)
        token_address = Web3.to_checksum_address(token.contract_address)
        data = encode_transfer(row.recipient, row.amount)
        try:
            token_balance = int.from_bytes(
                self.w3.eth.call({"to": token_address, "data": HexStr(encode_balance_of(wallet))}),
                "big",
            )
            native_balance = self.w3.eth.get_balance(wallet)
            history = self.w3.eth.fee_history(10, "pending", percentiles())
            fees = price(history, Priority(row.priority), policy)
        except FeeCapExceeded:
            return "FEES_ABOVE_CAP"
        except (Web3Exception, OSError) as exc:
            raise TransientError(f"chain unavailable: {exc}") from exc
        if token_balance - pending < row.amount:
            return "INSUFFICIENT_HOT_WALLET_FUNDS"
        try:
            estimate = self.w3.eth.estimate_gas({"from": wallet, "to": token_address, "data": data})
        except ContractLogicError:
            return "TRANSFER_WOULD_REVERT"
        except (Web3Exception, OSError) as exc:
            raise TransientError(f"chain unavailable: {exc}") from exc
        gas_limit = estimate * (100 + self.gas_margin_pct) // 100
        if native_balance < gas_limit * fees.max_fee_per_gas:
            return "INSUFFICIENT_HOT_WALLET_FUNDS"
        return Plan(wallet_row.address, token, token.contract_address, data, gas_limit, fees)

    def _hold(self, row: Withdrawal, reason: str) -> list[Moved]:
        if row.state == State.ON_HOLD and row.state_reason == reason:
            return []  # still waiting for the same thing; no audit noise
        messages = {
            "INSUFFICIENT_HOT_WALLET_FUNDS": "The hot wallet lacks token or gas; it resumes "
            "by itself once the wallet is funded.",
            "TRANSFER_WOULD_REVERT": "The token refuses the transfer now (paused or the "
            "recipient is blocked); it resumes by itself when the transfer would succeed.",
            "NO_HOT_WALLET": "No enabled hot wallet is configured for this chain.",
            "FEES_ABOVE_CAP": "Network fees are above the configured cap; an operator may "
            "raise the cap.",
        }
        return self._move(
            row,
            State.ON_HOLD,
            reason=reason,
            message=messages.get(reason, reason),
        )

    def _pay(self, row: Withdrawal) -> list[Moved]:
        payout_id = row.payout_tx_id
        if payout_id is None:
            plan = self._plan(row)
            if isinstance(plan, str):
                return self._hold(row, plan)
            payout_id = self._reserve(row, plan)
            if payout_id is None:
                return []
        return self._sign_reserved(row.id, payout_id)

    def _reserve(self, row: Withdrawal, plan: Plan) -> str | None:
        """Step 1: take the wallet's next nonce and link the withdrawal to it."""
        now = utcnow()
        payout_id = new_ulid()
        with self.sessions.begin() as session:
            wallet = session.scalars(
                select(HotWallet).where(HotWallet.address == plan.wallet).with_for_update()
            ).one()
            linked = session.execute(
                update(Withdrawal)
                .where(
                    Withdrawal.id == row.id,
                    Withdrawal.version == row.version,
                    Withdrawal.payout_tx_id.is_(None),
                )
                .values(payout_tx_id=payout_id)
                .execution_options(synchronize_session=False)
            )
            if linked.rowcount != 1:  # type: ignore[attr-defined]
                return None  # cancelled or taken meanwhile: nothing reserved
            session.add(
                PayoutTransaction(
                    id=payout_id,
                    chain=self.chain,
                    wallet=plan.wallet,
                    nonce=wallet.next_nonce,
                    to_address=plan.to_address,
                    raw_tx=plan.data,  # the calldata until signed; then the signed bytes
                    tx_hash=f"reserved:{payout_id}",
                    gas_limit=plan.gas_limit,
                    max_fee_per_gas=plan.fees.max_fee_per_gas,
                    max_priority_fee_per_gas=plan.fees.max_priority_fee_per_gas,
                    state=PayoutState.RESERVED,
                    broadcast_count=0,
                    block_number=None,
                    block_hash=None,
                    gas_used=None,
                    effective_gas_price=None,
                    fee_wei=None,
                    revert_reason="",
                    create_time=now,
                    update_time=now,
                )
            )
            wallet.next_nonce += 1
        log.info(
            "nonce reserved",
            extra={"withdrawal_id": row.id, "payout_tx_id": payout_id, "wallet": plan.wallet},
        )
        return payout_id

    def _sign_reserved(self, withdrawal_id: str, payout_id: str) -> list[Moved]:
        """Steps 2 and 3: sign the reserved nonce and store the bytes before any broadcast."""
        with self.sessions() as session:
            payout = session.get(PayoutTransaction, payout_id)
            row = session.get(Withdrawal, withdrawal_id)
            chain = session.get(Chain, self.chain)
        if payout is None or row is None or chain is None:
            return []
        if payout.state != PayoutState.RESERVED:
            return self._broadcast(payout_id) if payout.state == PayoutState.SIGNED else []
        token = self.reference.get().tokens_by_id[row.token_id]
        request = signer_pb2.SignTransactionRequest(
            wallet_address=payout.wallet,
            chain_id=chain.chain_id,
            nonce=payout.nonce,
            to_address=payout.to_address,
            data=payout.raw_tx,
            value_wei="0",
            gas_limit=payout.gas_limit,
            max_fee_per_gas_wei=str(payout.max_fee_per_gas),
            max_priority_fee_per_gas_wei=str(payout.max_priority_fee_per_gas),
            purpose=signer_pb2.PURPOSE_PAYOUT,
            items=[
                signer_pb2.PayoutItem(
                    withdrawal_id=row.id,
                    recipient_address=row.recipient,
                    amount_base_units=str(row.amount),
                    token_address=token.contract_address or "",
                )
            ],
        )
        try:
            signed = self.signer.sign(request)
        except SignerRefused as refused:
            log.error(
                "signer refused; releasing the nonce",
                extra={"withdrawal_id": row.id, "reason": refused.reason},
            )
            return self._release_nonce(row, payout, chain.chain_id, refused)
        with self.sessions.begin() as session:
            current = session.get(Withdrawal, withdrawal_id)
            if current is None or current.payout_tx_id != payout_id:
                raise TransitionConflict(withdrawal_id)
            session.execute(
                update(PayoutTransaction)
                .where(
                    PayoutTransaction.id == payout_id,
                    PayoutTransaction.state == PayoutState.RESERVED,
                )
                .values(
                    raw_tx=signed.raw,
                    tx_hash=signed.tx_hash.lower(),
                    state=PayoutState.SIGNED,
                    update_time=utcnow(),
                )
            )
            moved = move(
                session,
                current,
                State.SIGNED,
                actor=ACTOR,
                reason="SIGNED",
                message="Signed and stored; broadcasting.",
                tx_hash=signed.tx_hash.lower(),
            )
        return [moved, *self._broadcast(payout_id)]

    def _release_nonce(
        self, row: Withdrawal, payout: PayoutTransaction, chain_id: int, refused: SignerRefused
    ) -> list[Moved]:
        """Fill a refused payout's nonce with a zero-value self-transfer (nothing is paid)."""
        fees = Fees(payout.max_fee_per_gas, payout.max_priority_fee_per_gas)
        signed = self.signer.sign(
            signer_pb2.SignTransactionRequest(
                wallet_address=payout.wallet,
                chain_id=chain_id,
                nonce=payout.nonce,
                to_address=payout.wallet,
                value_wei="0",
                gas_limit=NATIVE_TRANSFER_GAS,
                max_fee_per_gas_wei=str(fees.max_fee_per_gas),
                max_priority_fee_per_gas_wei=str(fees.max_priority_fee_per_gas),
                purpose=signer_pb2.PURPOSE_NONCE_RELEASE,
            )
        )
        with self.sessions.begin() as session:
            session.execute(
                update(PayoutTransaction)
                .where(
                    PayoutTransaction.id == payout.id,
                    PayoutTransaction.state == PayoutState.RESERVED,
                )
                .values(
                    raw_tx=signed.raw,
                    tx_hash=signed.tx_hash.lower(),
                    to_address=payout.wallet,
                    gas_limit=NATIVE_TRANSFER_GAS,
                    state=PayoutState.SIGNED,
                    update_time=utcnow(),
                )
            )
            current = session.get(Withdrawal, row.id)
            moved: list[Moved] = []
            if current is not None:
                moved.append(
                    move(
                        session,
                        current,
                        State.ON_HOLD,
                        actor=ACTOR,
                        reason="SIGNER_REFUSED",
                        message=f"The signer refused ({refused.reason}): {refused.message} "
                        "Nothing was paid; an operator must review it.",
                        payout_tx_id=None,
                    )
                )
        self._broadcast(payout.id)
        return moved

    # ------------------------------------------------------------------ broadcasting

    def _broadcast(self, payout_id: str) -> list[Moved]:
        with self.sessions() as session:
            payout = session.get(PayoutTransaction, payout_id)
        if payout is None or payout.state != PayoutState.SIGNED:
            return []
        try:
            self.w3.eth.send_raw_transaction(payout.raw_tx)
        except (Web3Exception, ValueError) as exc:
            kind = rpc_error_kind(str(exc))
            if kind == "nonce_too_low" and not self._mined(payout.tx_hash):
                log.error(
                    "nonce already used by another transaction",
                    extra={"payout_tx_id": payout_id, "nonce": payout.nonce},
                )
                return []
            if kind == "other":
                log.warning(
                    "broadcast failed; will retry",
                    extra={"payout_tx_id": payout_id, "error": str(exc)},
                )
                return []
        except OSError as exc:
            log.warning(
                "broadcast failed; will retry", extra={"payout_tx_id": payout_id, "error": str(exc)}
            )
            return []
        return self._record_broadcast(payout_id)

    def _mined(self, tx_hash: str) -> bool:
        try:
            self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except (Web3Exception, ValueError):
            return False
        return True

    def _record_broadcast(self, payout_id: str) -> list[Moved]:
        moved: list[Moved] = []
        with self.sessions.begin() as session:
            session.execute(
                update(PayoutTransaction)
                .where(
                    PayoutTransaction.id == payout_id,
                    PayoutTransaction.state == PayoutState.SIGNED,
                )
                .values(
                    state=PayoutState.BROADCAST,
                    broadcast_count=PayoutTransaction.broadcast_count + 1,
                    update_time=utcnow(),
                )
            )
            rows: Sequence[Withdrawal] = session.scalars(
                select(Withdrawal).where(
                    Withdrawal.payout_tx_id == payout_id, Withdrawal.state == State.SIGNED
                )
            ).all()
            for row in rows:
                moved.append(
                    move(
                        session,
                        row,
                        State.BROADCAST,
                        actor=ACTOR,
                        reason="BROADCAST",
                        message="Sent to the network; waiting to be mined.",
                    )
                )
        return moved
