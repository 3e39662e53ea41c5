"""The rotation driver: rotates a hot wallet's key as an applied `hot_wallet.rotate` change
ordered (`hot_wallet_rotations`, `withdrawal_shared.db.rotation_changes`), one step at a time.

Each step is recorded in `hot_wallet_rotations.step` once it is done, by a compare-and-set on
the step, and is safe to run again after a crash (each step's own check of what it already did
comes first):

1. CREATE_KEY: CreateWallet on the hot signer with the rotation's id as `request_id` (the same
   id again returns the same key), the new wallet stored.
2. REGISTER: one transaction inserts the new wallet's `hot_wallets` row (PENDING, enabled, the
   old wallet's role, its nonce from the chain) and `system_addresses` row, and the
   treasury operations of ENABLE_OPERATOR and FUND_GAS (`safe_transactions`, purpose
   TREASURY, no change of their own: `rotation_id` and `rotation_step`, unique together).
3. ENABLE_OPERATOR, FUND_GAS: wait until the treasury executor (`svc_processor.treasury`)
   EXECUTED them (FAILED: the rotation is FAILED). The owners' signers sign them only as the
   calls the rotation's change orders (`svc_signer.safe_rules.rotation_calls`).
4. SWITCH: one transaction makes the new wallet ACTIVE and the old one DRAINING. From then on
   reservation picks the new wallet only; the old one finishes what it has in flight.
5. DRAIN: waits until no payout row of the old wallet is RESERVED, SIGNED, BROADCAST or MINED.
6. REMOVE_OPERATOR: records `setOperator(old, false)` and waits until it is EXECUTED.
7. SWEEP: takes the old wallet's next nonce (kept in the rotation), reads its balance and the
   fees, asks the signer for a PURPOSE_GAS_SWEEP of balance - gas * max fee to the treasury
   Safe, stores the signed bytes and hash before sending them, then waits for the receipt
   (resent while it has none). Nothing to sweep (balance below the fee): skipped.
8. RETIRE: RetireWallet on the signer, then the old wallet RETIRED and disabled; the
   rotation DONE.

A refusal by the signer or a failed treasury operation makes the rotation FAILED with the
reason; a transient failure (signer or node away) is retried at the next pass.
"""

from __future__ import annotations

import logging

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3
from web3.exceptions import TransactionNotFound, Web3Exception
from web3.types import Wei

from assetwithdrawal.signer.v1 import signer_pb2
from svc_processor.errors import SignerRefused, TransientError
from svc_processor.signer_client import SignerClient, create_wallet, retire_wallet
from withdrawal_shared import treasury_ops
from withdrawal_shared.db.admin_audit import canonical_json
from withdrawal_shared.db.models import (
    Chain,
    HotWallet,
    HotWalletRotation,
    PayoutTransaction,
    SafeTransaction,
    SafeTreasury,
    SystemAddress,
)
from withdrawal_shared.db.rotation_changes import RotationState, Step
from withdrawal_shared.db.transitions import utcnow
from withdrawal_shared.db.treasury_changes import SafePurpose, SafeTxState
from withdrawal_shared.ids import new_ulid
from withdrawal_shared.states import PayoutState, WalletState

log = logging.getLogger(__name__)

UNSETTLED = (PayoutState.RESERVED, PayoutState.SIGNED, PayoutState.BROADCAST, PayoutState.MINED)
"""Payout rows of the old wallet that keep a rotation at DRAIN."""
SWEEP_GAS_MARGIN_PCT = 20


def rotation_operations(
    chain: str, old: str, new: str, gas_wei: str
) -> dict[Step, tuple[str, dict[str, object]]]:
    """The treasury operation (kind, payload) of each Safe step of a rotation."""
    return {
        Step.ENABLE_OPERATOR: (
            treasury_ops.SET_VAULT_OPERATOR,
            {"chain": chain, "operator": new, "allowed": True},
        ),
        Step.FUND_GAS: (
            treasury_ops.FUND_GAS,
            {"chain": chain, "wallet": new, "amount_wei": gas_wei},
        ),
        Step.REMOVE_OPERATOR: (
            treasury_ops.SET_VAULT_OPERATOR,
            {"chain": chain, "operator": old, "allowed": False},
        ),
    }


class RotationFailed(Exception):
    """A step cannot go on; the rotation becomes FAILED with this reason."""


class RotationDriver:
    """Runs the chain's RUNNING rotations; see the module docstring."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        w3: Web3,
        signer: SignerClient,
        chain: str,
    ) -> None:
        self.sessions = sessions
        self.w3 = w3
        self.signer = signer
        self.chain = chain

    def run_once(self) -> None:
        """Move the chain's running rotation as far as it goes now."""
        with self.sessions() as session:
            rotation = session.scalars(
                select(HotWalletRotation)
                .where(
                    HotWalletRotation.chain == self.chain,
                    HotWalletRotation.state == RotationState.RUNNING.value,
                )
                .order_by(HotWalletRotation.id)
                .limit(1)
            ).first()
        if rotation is None:
            return
        try:
            for _ in range(len(Step)):
                before = rotation.step
                self._step(rotation)
                rotation = self._reload(rotation.id)
                if rotation.step == before or rotation.state != RotationState.RUNNING:
                    return
        except RotationFailed as exc:
            self._fail(rotation, str(exc))
        except SignerRefused as exc:
            self._fail(
                rotation, f"the signer refused at {rotation.step}: {exc.reason} {exc.message}"
            )

    def _reload(self, rotation_id: str) -> HotWalletRotation:
        with self.sessions() as session:
            row = session.get(HotWalletRotation, rotation_id)
        assert row is not None
        return row

    def _advance(self, rotation: HotWalletRotation, done: Step, **values: object) -> bool:
        """Record step `done` as done (the next one due), with `values`; compare-and-set."""
        following = Step.DONE if done is Step.RETIRE else list(Step)[list(Step).index(done) + 1]
        extra: dict[str, object] = {}
        if following is Step.DONE:
            extra["state"] = RotationState.DONE.value
        with self.sessions.begin() as session:
            result = session.execute(
                update(HotWalletRotation)
                .where(
                    HotWalletRotation.id == rotation.id,
                    HotWalletRotation.step == done.value,
                    HotWalletRotation.state == RotationState.RUNNING.value,
                )
                .values(step=following.value, update_time=utcnow(), **values, **extra)
                .execution_options(synchronize_session=False)
            )
        moved: bool = result.rowcount == 1  # type: ignore[attr-defined]
        if moved:
            log.info(
                "rotation step done",
                extra={"rotation_id": rotation.id, "step": done.value, "next": following.value},
            )
        return moved

    def _fail(self, rotation: HotWalletRotation, reason: str) -> None:
        with self.sessions.begin() as session:
            session.execute(
                update(HotWalletRotation)
                .where(
                    HotWalletRotation.id == rotation.id,
                    HotWalletRotation.state == RotationState.RUNNING.value,
                )
                .values(
                    state=RotationState.FAILED.value,
                    failure_reason=reason[:512],
                    update_time=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
        log.error("rotation failed", extra={"rotation_id": rotation.id, "reason": reason})

    def _step(self, rotation: HotWalletRotation) -> None:
        step = Step(rotation.step)
        if step is Step.CREATE_KEY:
            address = create_wallet(self.signer, rotation.id).lower()
            self._advance(rotation, step, new_wallet=address)
        elif step is Step.REGISTER:
            self._register(rotation)
        elif step in (Step.ENABLE_OPERATOR, Step.FUND_GAS, Step.REMOVE_OPERATOR):
            self._safe_step(rotation, step)
        elif step is Step.SWITCH:
            self._switch(rotation)
        elif step is Step.DRAIN:
            self._drain(rotation)
        elif step is Step.SWEEP:
            self._sweep(rotation)
        elif step is Step.RETIRE:
            self._retire(rotation)

    # ------------------------------------------------------------------ steps

    def _register(self, rotation: HotWalletRotation) -> None:
        new = rotation.new_wallet
        assert new is not None
        try:
            nonce = int(self.w3.eth.get_transaction_count(Web3.to_checksum_address(new), "pending"))
        except (Web3Exception, ValueError, OSError) as exc:
            raise TransientError(f"reading the new wallet's nonce failed: {exc}") from exc
        operations = rotation_operations(self.chain, rotation.old_wallet, new, rotation.gas_wei)
        now = utcnow()
        with self.sessions.begin() as session:
            old = session.get(HotWallet, rotation.old_wallet)
            if old is None:
                raise RotationFailed(f"the old wallet {rotation.old_wallet} has no hot_wallets row")
            if session.get(HotWallet, new) is None:
                session.add(
                    HotWallet(
                        address=new,
                        chain=self.chain,
                        next_nonce=nonce,
                        enabled=True,
                        role=old.role,
                        state=WalletState.PENDING.value,
                    )
                )
            if session.get(SystemAddress, new) is None:
                session.add(
                    SystemAddress(
                        address=new,
                        chain=self.chain,
                        kind="hot_wallet",
                        label=f"hot wallet (rotation {rotation.id})",
                    )
                )
            for step in (Step.ENABLE_OPERATOR, Step.FUND_GAS):
                self._record_operation(session, rotation, step, operations[step], now)
            session.execute(
                update(HotWalletRotation)
                .where(
                    HotWalletRotation.id == rotation.id,
                    HotWalletRotation.step == Step.REGISTER.value,
                )
                .values(step=Step.ENABLE_OPERATOR.value, update_time=now)
                .execution_options(synchronize_session=False)
            )
        log.info(
            "rotation's new wallet registered", extra={"rotation_id": rotation.id, "wallet": new}
        )

    def _record_operation(
        self,
        session: Session,
        rotation: HotWalletRotation,
        step: Step,
        operation: tuple[str, dict[str, object]],
        now: object,
    ) -> None:
        exists = session.scalar(
            select(SafeTransaction.id).where(
                SafeTransaction.rotation_id == rotation.id,
                SafeTransaction.rotation_step == step.value,
            )
        )
        if exists is not None:
            return
        kind, payload = operation
        session.add(
            SafeTransaction(
                id=new_ulid(),
                chain=self.chain,
                purpose=SafePurpose.TREASURY.value,
                change_id=None,
                kind=kind,
                payload=canonical_json(payload) or "{}",
                safe_nonce=None,
                state=SafeTxState.PENDING.value,
                failure_reason="",
                create_time=now,
                update_time=now,
                rotation_id=rotation.id,
                rotation_step=step.value,
            )
        )
        session.flush()

    def _safe_step(self, rotation: HotWalletRotation, step: Step) -> None:
        if step is Step.REMOVE_OPERATOR:
            assert rotation.new_wallet is not None
            operation = rotation_operations(
                self.chain, rotation.old_wallet, rotation.new_wallet, rotation.gas_wei
            )[step]
            try:
                with self.sessions.begin() as session:
                    self._record_operation(session, rotation, step, operation, utcnow())
            except IntegrityError:
                pass  # recorded by another pass meanwhile
        with self.sessions() as session:
            op = session.scalars(
                select(SafeTransaction).where(
                    SafeTransaction.rotation_id == rotation.id,
                    SafeTransaction.rotation_step == step.value,
                )
            ).first()
        if op is None:
            raise RotationFailed(f"the treasury operation of {step.value} is missing")
        if op.state == SafeTxState.FAILED:
            raise RotationFailed(
                f"the treasury operation of {step.value} failed: {op.failure_reason}"
            )
        if op.state == SafeTxState.EXECUTED:
            self._advance(rotation, step)

    def _switch(self, rotation: HotWalletRotation) -> None:
        with self.sessions.begin() as session:
            new = session.scalars(
                select(HotWallet).where(HotWallet.address == rotation.new_wallet).with_for_update()
            ).one()
            old = session.scalars(
                select(HotWallet).where(HotWallet.address == rotation.old_wallet).with_for_update()
            ).one()
            new.state = WalletState.ACTIVE.value
            if old.state == WalletState.ACTIVE:
                old.state = WalletState.DRAINING.value
            session.execute(
                update(HotWalletRotation)
                .where(
                    HotWalletRotation.id == rotation.id,
                    HotWalletRotation.step == Step.SWITCH.value,
                )
                .values(step=Step.DRAIN.value, update_time=utcnow())
                .execution_options(synchronize_session=False)
            )
        log.info(
            "rotation switched wallets",
            extra={"rotation_id": rotation.id, "active": rotation.new_wallet},
        )

    def _drain(self, rotation: HotWalletRotation) -> None:
        with self.sessions() as session:
            unsettled = session.scalar(
                select(PayoutTransaction.id)
                .where(
                    PayoutTransaction.chain == self.chain,
                    PayoutTransaction.wallet == rotation.old_wallet,
                    PayoutTransaction.state.in_([s.value for s in UNSETTLED]),
                )
                .limit(1)
            )
        if unsettled is None:
            self._advance(rotation, Step.DRAIN)

    # ------------------------------------------------------------------ the sweep

    def _sweep(self, rotation: HotWalletRotation) -> None:
        if rotation.sweep_tx_hash is not None:
            self._settle_sweep(rotation)
            return
        old = Web3.to_checksum_address(rotation.old_wallet)
        with self.sessions() as session:
            treasury = session.get(SafeTreasury, self.chain)
            chain = session.get(Chain, self.chain)
            assert treasury is not None and chain is not None
            safe = Web3.to_checksum_address(treasury.address)
            chain_id, min_tip = chain.chain_id, int(chain.min_priority_fee_wei)
        if rotation.sweep_nonce is None:
            rotation = self._take_sweep_nonce(rotation)
        assert rotation.sweep_nonce is not None
        try:
            balance = int(self.w3.eth.get_balance(old, "latest"))
            block = self.w3.eth.get_block("latest")
            base_fee = int(block.get("baseFeePerGas", 0) or 0)
            estimate = int(self.w3.eth.estimate_gas({"from": old, "to": safe, "value": Wei(1)}))
        except (Web3Exception, ValueError, OSError) as exc:
            raise TransientError(f"reading the old wallet's balance failed: {exc}") from exc
        gas = min(estimate * (100 + SWEEP_GAS_MARGIN_PCT) // 100, 100_000)
        tip = min_tip
        max_fee = base_fee * 5 // 4 + tip
        value = balance - gas * max_fee
        if value <= 0:
            log.info(
                "nothing to sweep: the old wallet's balance does not cover the fee",
                extra={"rotation_id": rotation.id, "balance_wei": balance},
            )
            self._advance(rotation, Step.SWEEP, sweep_value_wei="0")
            return
        signed = self.signer.sign(
            signer_pb2.SignTransactionRequest(
                wallet_address=old,
                chain_id=chain_id,
                nonce=rotation.sweep_nonce,
                to_address=safe,
                value_wei=str(value),
                gas_limit=gas,
                max_fee_per_gas_wei=str(max_fee),
                max_priority_fee_per_gas_wei=str(tip),
                purpose=signer_pb2.PURPOSE_GAS_SWEEP,
            )
        )
        with self.sessions.begin() as session:
            session.execute(
                update(HotWalletRotation)
                .where(
                    HotWalletRotation.id == rotation.id,
                    HotWalletRotation.sweep_tx_hash.is_(None),
                )
                .values(
                    sweep_raw_tx=signed.raw,
                    sweep_tx_hash=signed.tx_hash,
                    sweep_value_wei=str(value),
                    update_time=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
        self._settle_sweep(self._reload(rotation.id))

    def _take_sweep_nonce(self, rotation: HotWalletRotation) -> HotWalletRotation:
        with self.sessions.begin() as session:
            current = session.scalars(
                select(HotWalletRotation)
                .where(HotWalletRotation.id == rotation.id)
                .with_for_update()
            ).one()
            if current.sweep_nonce is None:
                wallet = session.scalars(
                    select(HotWallet)
                    .where(HotWallet.address == rotation.old_wallet)
                    .with_for_update()
                ).one()
                current.sweep_nonce = wallet.next_nonce
                wallet.next_nonce += 1
                current.update_time = utcnow()
        return self._reload(rotation.id)

    def _settle_sweep(self, rotation: HotWalletRotation) -> None:
        assert rotation.sweep_tx_hash is not None and rotation.sweep_raw_tx is not None
        try:
            receipt = self.w3.eth.get_transaction_receipt(rotation.sweep_tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            receipt = None
        except (Web3Exception, ValueError, OSError) as exc:
            raise TransientError(f"reading the sweep's receipt failed: {exc}") from exc
        if receipt is None:
            try:
                self.w3.eth.send_raw_transaction(rotation.sweep_raw_tx)
            except (Web3Exception, ValueError, OSError) as exc:
                log.warning(
                    "sending the gas sweep failed; sent again at the next pass",
                    extra={"rotation_id": rotation.id, "error": str(exc)},
                )
            return
        if int(receipt["status"]) != 1:
            raise RotationFailed(f"the gas sweep {rotation.sweep_tx_hash} reverted")
        self._advance(rotation, Step.SWEEP)

    # ------------------------------------------------------------------ retire

    def _retire(self, rotation: HotWalletRotation) -> None:
        state = retire_wallet(self.signer, Web3.to_checksum_address(rotation.old_wallet))
        if state != signer_pb2.Wallet.STATE_RETIRED:
            raise RotationFailed("the signer did not retire the old key")
        with self.sessions.begin() as session:
            session.execute(
                update(HotWallet)
                .where(HotWallet.address == rotation.old_wallet)
                .values(state=WalletState.RETIRED.value, enabled=False)
                .execution_options(synchronize_session=False)
            )
            session.execute(
                update(HotWalletRotation)
                .where(
                    HotWalletRotation.id == rotation.id,
                    HotWalletRotation.step == Step.RETIRE.value,
                )
                .values(step=Step.DONE.value, state=RotationState.DONE.value, update_time=utcnow())
                .execution_options(synchronize_session=False)
            )
        log.info(
            "rotation done", extra={"rotation_id": rotation.id, "retired": rotation.old_wallet}
        )
