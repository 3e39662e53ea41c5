"""The treasury executor: runs the treasury operations that applied four-eyes changes recorded
(`safe_transactions`, purpose TREASURY), one at a time per chain, through the treasury Safe.

For the oldest PENDING operation, once no other one holds a Safe nonce:

1. `_assign`: builds its call (`treasury_ops.build`; an operation this chain cannot build is
   FAILED with the reason and takes no nonce), then one transaction locks the chain's
   `safe_treasuries` row and gives it the Safe nonce: the Safe's own `nonce()` (read first,
   nothing locked), which has to be at least `next_nonce` (a lagging node: wait; ahead of it:
   the Safe executed something this system did not send, and the Safe's nonce is taken), and
   stores the Safe transaction's fields and EIP-712 hash; `next_nonce` becomes the one after.
   The nonce is kept from then on: the operation is never signed at another one.
2. `_collect`: asks the owners' signers (PROCESSOR_SAFE_OWNER_SIGNERS, one per owner) for
   SignSafeTransaction (SAFE_PURPOSE_TREASURY, its change) until the Safe's threshold of
   distinct owners signed; a refusing or unreachable signer is skipped. Each signature is
   checked (the hash the signer computed is ours, it recovers to the owner) and stored as it
   comes. With fewer than the threshold the operation waits, and the next pass asks again.
   With enough, one transaction stores the `execTransaction` calldata and makes it SIGNED:
   before anything is sent.
3. `_execute`: a hot wallet sends that calldata to the Safe through the payout machinery
   (`Payouts.reserve_call` links the operation to a new `safe_exec` payout row in the same
   transaction that takes the wallet's nonce: EXECUTING; then signed with
   PURPOSE_SAFE_EXECUTION, stored, broadcast; replaced when stuck and resumed after a crash
   like any payout).
4. `_settle`: the monitor settles the payout row as it settles every payout (mined, reorgs,
   the confirmation depth). Once a row at the payout's (wallet, nonce) is CONFIRMED, its
   receipt's ExecutionSuccess for the stored hash makes the operation EXECUTED. An
   ExecutionFailure for it (the Safe used the nonce, the call failed) would make it FAILED,
   but the Safe transactions built here never get one: with `safeTxGas` and `gasPrice` both 0,
   Safe v1.4.1 reverts the whole `execTransaction` when the inner call fails (GS013), so the
   nonce is not used (below).

When the Safe did not use the nonce (eth_estimateGas says `execTransaction` reverts, so it is
not sent; it reverted on chain, at the confirmation depth; or the hot wallet's signer refused
and the row became a nonce release), the operation is not FAILED: its owners' signatures stay
valid at its nonce, and an owner's signer never signs another transaction at a nonce it
signed (`SAFE_NONCE_ALREADY_SIGNED`), so the treasury can only move past that nonce by
executing it. It goes back to SIGNED with `failure_reason` = `last attempt: ...` and is sent
again after RETRY_SECONDS (the same calldata, from a new hot-wallet nonce); the operations
after it wait. The withdrawal of a Safe payout whose execution reverted on chain is ON_HOLD
`PAYOUT_REVERTED` meanwhile (the monitor, at the confirmation depth), never a hot wallet's
candidate while its Safe payout is not settled, and is linked to the next attempt's row. A
stuck execution is replaced at its (wallet, nonce) and a reorganised one sent again as the
same bytes, as for any payout; the Safe transaction keeps its nonce and hash.
`tests/stack/test_safe_exec_faults.py` runs these faults on the real stack.

Every step is a compare-and-set on the operation's state and resumes from the database after a
crash; the Safe nonce makes a second execution impossible on chain.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence

from eth_account import Account
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3
from web3.exceptions import TransactionNotFound, Web3Exception

from assetwithdrawal.signer.v1 import signer_pb2
from svc_processor.chain_reads import WouldRevert
from svc_processor.errors import SignerRefused, TransientError
from svc_processor.pauses import paused_now
from svc_processor.payouts import CallDraft, Kind
from svc_processor.pipeline import Pipeline
from svc_processor.safe_payouts import (
    SafeRouter,
    SafeRules,
    link_withdrawal,
    payable_for_safe,
    safe_payout_call,
)
from svc_processor.signer_client import SignerClient
from withdrawal_shared import treasury_ops
from withdrawal_shared.chain import safe as safe_reads
from withdrawal_shared.chain.fees import FeeCapExceeded
from withdrawal_shared.chain.safe_tx import (
    OwnerSignature,
    SafeTx,
    encode_exec_transaction,
    pack_signatures,
    safe_tx_hash,
)
from withdrawal_shared.chain.types import ChecksumAddress
from withdrawal_shared.db import rotation_changes
from withdrawal_shared.db.models import (
    Chain,
    HotWallet,
    PayoutTransaction,
    PayoutVault,
    SafeOwner,
    SafeSignature,
    SafeTransaction,
    SafeTreasury,
    Token,
    Withdrawal,
)
from withdrawal_shared.db.transitions import TransitionConflict, utcnow
from withdrawal_shared.db.treasury_changes import LAST_ATTEMPT_PREFIX, SafePurpose, SafeTxState
from withdrawal_shared.states import PayoutState

log = logging.getLogger(__name__)

RETRY_SECONDS = 30.0
"""How long an operation whose last attempt did not execute waits before the next one."""
LIVE = (SafeTxState.SIGNED, SafeTxState.EXECUTING)
"""States holding a Safe nonce that is not settled (a PENDING one holds it once assigned)."""


class TreasuryExecutor:
    """Executes the chain's treasury operations; see the module docstring."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        w3: Web3,
        pipeline: Pipeline,
        owner_signers: Sequence[SignerClient],
        chain: str,
        gas_margin_pct: int = 25,
    ) -> None:
        self.sessions = sessions
        self.w3 = w3
        self.pipeline = pipeline
        self.payouts = pipeline.payouts
        self.owner_signers = list(owner_signers)
        self.chain = chain
        self.gas_margin_pct = gas_margin_pct
        self._owners_of: dict[int, list[str]] = {}  # signer index -> owners it holds (lower)

    # ------------------------------------------------------------------ one pass

    def run_once(self) -> None:
        """Move the chain's treasury operations as far as they go now."""
        with self.sessions() as session:
            treasury = session.get(SafeTreasury, self.chain)
            if treasury is None:
                return
            live = session.scalars(
                select(SafeTransaction)
                .where(
                    SafeTransaction.chain == self.chain,
                    SafeTransaction.safe_nonce.is_not(None),
                    SafeTransaction.state.in_(
                        [SafeTxState.PENDING.value, *(s.value for s in LIVE)]
                    ),
                )
                .order_by(SafeTransaction.safe_nonce)
            ).all()
        if live:
            self._advance(live[0])
            return
        with self.sessions() as session:
            waiting = session.scalars(
                select(SafeTransaction)
                .where(
                    SafeTransaction.chain == self.chain,
                    SafeTransaction.state == SafeTxState.PENDING.value,
                    SafeTransaction.safe_nonce.is_(None),
                )
                .order_by(SafeTransaction.id)
                .limit(1)
            ).first()
        if waiting is not None and self._assign(waiting):
            with self.sessions() as session:
                assigned = session.get(SafeTransaction, waiting.id)
            if assigned is not None:
                self._advance(assigned)

    def _advance(self, op: SafeTransaction) -> None:
        if op.state == SafeTxState.PENDING:
            if not self._collect(op):
                return
            op = self._reload(op.id)
        if op.state == SafeTxState.SIGNED and not self._waits_to_retry(op):
            self._execute(op)
            op = self._reload(op.id)
        if op.state == SafeTxState.EXECUTING:
            self._settle(op)

    @staticmethod
    def _waits_to_retry(op: SafeTransaction) -> bool:
        """Whether a SIGNED operation whose last attempt did not execute it still waits."""
        if not op.failure_reason:
            return False
        return (utcnow() - op.update_time).total_seconds() < RETRY_SECONDS

    def _reload(self, op_id: str) -> SafeTransaction:
        with self.sessions() as session:
            op = session.get(SafeTransaction, op_id)
        assert op is not None
        return op

    # ------------------------------------------------------------------ 1. assign a nonce

    def _refs(self, session: Session, treasury: SafeTreasury) -> treasury_ops.TreasuryRefs:
        """What `treasury_ops.build` refers to, as the owners' signers read it: the enabled
        vault, the enabled tokens, the enabled hot wallets (TreasuryOperationError without an
        enabled vault)."""
        vault = session.get(PayoutVault, self.chain)
        if vault is None or not vault.enabled:
            raise treasury_ops.TreasuryOperationError(
                f"{self.chain} has no enabled payout vault (payout_vaults)"
            )
        tokens = session.execute(
            select(Token.symbol, Token.contract_address).where(
                Token.chain == self.chain, Token.enabled.is_(True)
            )
        ).all()
        wallets = session.scalars(
            select(HotWallet.address).where(
                HotWallet.chain == self.chain, HotWallet.enabled.is_(True)
            )
        )
        return treasury_ops.TreasuryRefs(
            chain=self.chain,
            safe=ChecksumAddress(Web3.to_checksum_address(treasury.address)),
            vault=ChecksumAddress(Web3.to_checksum_address(vault.address)),
            tokens={
                str(symbol).upper(): ChecksumAddress(Web3.to_checksum_address(address))
                for symbol, address in tokens
                if address
            },
            hot_wallets=frozenset(w.lower() for w in wallets),
        )

    def _assign(self, op: SafeTransaction) -> bool:
        """Give the operation the Safe's next nonce and its hash; whether it has one now."""
        try:
            with self.sessions() as session:
                treasury = session.get(SafeTreasury, self.chain)
                chain = session.get(Chain, self.chain)
                assert treasury is not None and chain is not None
                safe = treasury.address
                chain_id = chain.chain_id
                refs = self._refs(session, treasury)
            if op.purpose == SafePurpose.PAYOUT:
                # Outside the read session: it reads and may write in sessions of its own
                # (SQLite allows one transaction at a time).
                payout = self._payout_call(op, refs)
                if payout is None:
                    return False
                call = payout
            else:
                call = treasury_ops.build(op.kind, json.loads(op.payload), refs)
        except (treasury_ops.TreasuryOperationError, ValueError) as exc:
            self._fail(op.id, SafeTxState.PENDING, f"cannot be built on {self.chain}: {exc}")
            return False
        try:
            on_chain = safe_reads.safe_nonce(self.w3, safe)
        except (Web3Exception, ValueError, OSError) as exc:
            raise TransientError(f"reading the Safe's nonce failed: {exc}") from exc
        with self.sessions.begin() as session:
            treasury = session.scalars(
                select(SafeTreasury).where(SafeTreasury.chain == self.chain).with_for_update()
            ).one()
            holder = session.scalar(
                select(SafeTransaction.id)
                .where(
                    SafeTransaction.chain == self.chain,
                    SafeTransaction.safe_nonce.is_not(None),
                    SafeTransaction.state.in_(
                        [SafeTxState.PENDING.value, *(s.value for s in LIVE)]
                    ),
                )
                .limit(1)
            )
            if holder is not None:
                return False  # another one holds a nonce (another processor got there first)
            if on_chain < treasury.next_nonce:
                log.warning(
                    "the Safe's nonce on chain is behind the next one to assign; waiting",
                    extra={"safe_nonce": on_chain, "next_nonce": treasury.next_nonce},
                )
                return False
            if on_chain > treasury.next_nonce:
                log.warning(
                    "the Safe's nonce on chain is ahead of the next one to assign (the Safe "
                    "executed transactions this system did not send); taking the Safe's",
                    extra={"safe_nonce": on_chain, "next_nonce": treasury.next_nonce},
                )
            tx = dataclasses.replace(SafeTx.call(call.to, call.data, on_chain), value=call.value)
            digest = "0x" + safe_tx_hash(chain_id, safe, tx).hex()
            result = session.execute(
                update(SafeTransaction)
                .where(
                    SafeTransaction.id == op.id,
                    SafeTransaction.state == SafeTxState.PENDING.value,
                    SafeTransaction.safe_nonce.is_(None),
                )
                .values(
                    safe_nonce=on_chain,
                    to_address=call.to.lower(),
                    value_wei=str(call.value),
                    data=call.data,
                    safe_tx_hash=digest,
                    update_time=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return False
            treasury.next_nonce = on_chain + 1
        log.info(
            "treasury operation given its Safe nonce",
            extra={"safe_tx_id": op.id, "kind": op.kind, "safe_nonce": on_chain},
        )
        return True

    def _payout_call(
        self, op: SafeTransaction, refs: treasury_ops.TreasuryRefs
    ) -> treasury_ops.TreasuryCall | None:
        """The vault call of a Safe payout, checked just before it takes a Safe nonce (so a
        withdrawal that cannot be paid this way never holds one): still payable as routed,
        still above its token's Safe threshold, approved by the Safe's threshold. Otherwise
        the Safe payout is FAILED without a nonce (None) and the batcher looks at the
        withdrawal again (a hot wallet's payout under the same payout number, or ON_HOLD
        `SAFE_APPROVALS_MISSING`). ValueError when it cannot be built."""
        with self.sessions() as session:
            row, call = safe_payout_call(session, op)
            rules = SafeRules.load(session, self.chain)
        problem = ""
        if not payable_for_safe(row):
            problem = f"withdrawal {row.id} is no longer payable ({row.state} {row.state_reason})"
        elif not rules.bound(row.token_id, row.amount):
            problem = f"withdrawal {row.id} is no longer above its token's Safe threshold"
        elif rules.threshold is not None and SafeRouter(
            self.sessions, self.chain
        ).short_of_approvals([row], rules.threshold):
            problem = f"withdrawal {row.id} has fewer approvals than the Safe's threshold"
        if problem:
            self._fail(op.id, SafeTxState.PENDING, f"not sent to the owners: {problem}")
            return None
        return treasury_ops.TreasuryCall(to=refs.vault, value=0, data=call.calldata)

    # ------------------------------------------------------------------ 2. owners sign

    def _safe_tx(self, op: SafeTransaction) -> SafeTx:
        assert op.to_address is not None and op.safe_nonce is not None
        tx = SafeTx.call(op.to_address, op.data or b"", op.safe_nonce)
        return dataclasses.replace(tx, value=int(op.value_wei or "0"))

    def _owners_held(self, index: int, signer: SignerClient) -> list[str]:
        if index not in self._owners_of:
            self._owners_of[index] = [o.lower() for o in signer.owners()]
        return self._owners_of[index]

    def _collect(self, op: SafeTransaction) -> bool:
        """Collect owners' signatures up to the threshold; whether the operation is SIGNED."""
        with self.sessions() as session:
            treasury = session.get(SafeTreasury, self.chain)
            chain = session.get(Chain, self.chain)
            assert treasury is not None and chain is not None
            owners = set(
                session.scalars(
                    select(SafeOwner.owner_address).where(SafeOwner.chain == self.chain)
                )
            )
            signed = {
                s.owner_address: s.signature
                for s in session.scalars(
                    select(SafeSignature).where(
                        SafeSignature.safe_tx_id == op.id,
                        SafeSignature.safe_tx_hash == op.safe_tx_hash,
                    )
                )
            }
            safe = treasury.address
            chain_id = chain.chain_id
            threshold = treasury.threshold
        try:
            threshold = max(threshold, safe_reads.safe_threshold(self.w3, safe))
        except (Web3Exception, ValueError, OSError) as exc:
            raise TransientError(f"reading the Safe's threshold failed: {exc}") from exc
        tx = self._safe_tx(op)
        digest = safe_tx_hash(chain_id, safe, tx)
        if op.safe_tx_hash != "0x" + digest.hex():
            log.error(
                "a treasury operation's stored hash is not the hash of its stored fields at the "
                "chain's treasury Safe; not signed, for an operator",
                extra={"safe_tx_id": op.id, "safe_tx_hash": op.safe_tx_hash},
            )
            return False
        for index, signer in enumerate(self.owner_signers):
            if len(signed) >= threshold:
                break
            try:
                held = self._owners_held(index, signer)
            except TransientError as exc:
                log.warning("an owner's signer did not answer", extra={"error": str(exc)})
                continue
            for owner in held:
                if len(signed) >= threshold or owner in signed or owner not in owners:
                    continue
                signature = self._ask(signer, op, owner, chain_id, safe, tx, digest)
                if signature is not None and self._store_signature(op, owner, signature):
                    signed[owner] = signature
        if len(signed) < threshold:
            log.warning(
                "treasury operation waits for owners' signatures",
                extra={"safe_tx_id": op.id, "signatures": len(signed), "threshold": threshold},
            )
            return False
        chosen = sorted(signed.items())[:threshold]
        packed = pack_signatures(
            [
                OwnerSignature(ChecksumAddress(Web3.to_checksum_address(owner)), sig)
                for owner, sig in chosen
            ]
        )
        calldata = encode_exec_transaction(tx, packed)
        with self.sessions.begin() as session:
            result = session.execute(
                update(SafeTransaction)
                .where(
                    SafeTransaction.id == op.id, SafeTransaction.state == SafeTxState.PENDING.value
                )
                .values(
                    state=SafeTxState.SIGNED.value, exec_calldata=calldata, update_time=utcnow()
                )
                .execution_options(synchronize_session=False)
            )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            log.info(
                "treasury operation signed by the owners",
                extra={"safe_tx_id": op.id, "owners": [o for o, _ in chosen]},
            )
        return True

    def _ask(
        self,
        signer: SignerClient,
        op: SafeTransaction,
        owner: str,
        chain_id: int,
        safe: str,
        tx: SafeTx,
        digest: bytes,
    ) -> bytes | None:
        """One owner's checked signature of `tx`, or None (refused, away, or wrong)."""
        request = signer_pb2.SignSafeTransactionRequest(
            owner_address=Web3.to_checksum_address(owner),
            chain_id=chain_id,
            safe_address=Web3.to_checksum_address(safe),
            transaction=signer_pb2.SafeTransaction(
                to_address=tx.to,
                value_wei=str(tx.value),
                data=tx.data,
                operation=tx.operation,
                safe_tx_gas="0",
                base_gas="0",
                gas_price_wei="0",
                gas_token_address="",  # empty: the zero address (no refund)
                refund_receiver_address="",
                nonce=tx.nonce,
            ),
        )
        if op.purpose == SafePurpose.PAYOUT:
            with self.sessions() as session:
                row, call = safe_payout_call(session, op)
            request.purpose = signer_pb2.SAFE_PURPOSE_PAYOUT
            request.items.append(
                signer_pb2.PayoutItem(
                    withdrawal_id=row.id,
                    recipient_address=call.payment.recipient,
                    amount_base_units=str(call.payment.amount),
                    token_address=call.token,
                    payout_number=call.payment.number,
                )
            )
        else:
            request.purpose = signer_pb2.SAFE_PURPOSE_TREASURY
            request.change = f"changes/{self._ordering_change(op)}"
        context = {"safe_tx_id": op.id, "owner": owner}
        try:
            answer = signer.sign_safe(request)
        except SignerRefused as refused:
            log.warning(
                f"an owner's signer refused the treasury operation ({refused.reason})",
                extra={**context, "reason": refused.reason, "error": refused.message},
            )
            if refused.reason == "UNKNOWN_WALLET":  # it holds another key now: list it again
                self._owners_of = {
                    index: held
                    for index, held in self._owners_of.items()
                    if self.owner_signers[index] is not signer
                }
            return None
        except TransientError as exc:
            log.warning("an owner's signer did not answer", extra={**context, "error": str(exc)})
            return None
        recovered = ""
        try:
            recovered = Account._recover_hash(digest, signature=answer.signature)
        except Exception as exc:  # eth_account raises several errors for a malformed signature
            log.error("an owner's signature does not recover", extra={**context, "error": str(exc)})
            return None
        if answer.safe_tx_hash != digest or recovered.lower() != owner:
            log.error(
                "an owner's signer returned a signature of something else; ignored",
                extra={**context, "recovered": recovered, "hash": "0x" + answer.safe_tx_hash.hex()},
            )
            return None
        return answer.signature

    def _ordering_change(self, op: SafeTransaction) -> str | None:
        """Its change, or a rotation step's `hot_wallet.rotate` change (svc_processor.rotation)."""
        with self.sessions() as session:
            return rotation_changes.ordering_change(session, op)

    def _store_signature(self, op: SafeTransaction, owner: str, signature: bytes) -> bool:
        try:
            with self.sessions.begin() as session:
                session.add(
                    SafeSignature(
                        safe_tx_id=op.id,
                        owner_address=owner,
                        safe_tx_hash=op.safe_tx_hash or "",
                        signature=signature,
                        create_time=utcnow(),
                    )
                )
        except IntegrityError:
            pass  # stored by another pass meanwhile: the same owner's signature of this hash
        return True

    # ------------------------------------------------------------------ 3. a hot wallet executes

    def _execute(self, op: SafeTransaction) -> None:
        assert op.exec_calldata is not None
        with self.sessions() as session:
            treasury = session.get(SafeTreasury, self.chain)
            assert treasury is not None
            safe = treasury.address
        try:
            payer = self.pipeline.call_payer()
        except FeeCapExceeded:
            log.warning("treasury operation waits: fees above the cap", extra={"safe_tx_id": op.id})
            return
        if payer is None:
            return  # every hot wallet is at its in-flight bound: next pass
        wallet, fees = payer
        try:
            estimate = self.pipeline.reads.estimate_gas(wallet, safe, op.exec_calldata)
        except WouldRevert as exc:
            self._retry_later(
                op.id, SafeTxState.SIGNED, f"execTransaction would revert: {exc.reason}"
            )
            return
        gas_limit = estimate * (100 + self.gas_margin_pct) // 100
        if self.pipeline.reads.native_balance(wallet) < gas_limit * fees.max_fee_per_gas:
            log.warning(
                "treasury operation waits: the hot wallet lacks gas",
                extra={"safe_tx_id": op.id, "wallet": wallet},
            )
            return

        priority = "STANDARD"
        if op.purpose == SafePurpose.PAYOUT:
            with self.sessions() as session:
                paid = session.get(Withdrawal, op.withdrawal_id or "")
                pause = None if paid is None else paused_now(session, self.chain, paid.token_id)
            if pause is not None:  # the hot signer would refuse it: not sent while paused
                log.warning(
                    "Safe payout waits: payouts of its token are paused",
                    extra={"safe_tx_id": op.id, "scope": pause.scope},
                )
                return
            priority = paid.priority if paid is not None else priority

        def link(session: Session, payout_id: str) -> bool:
            if op.purpose == SafePurpose.PAYOUT and not link_withdrawal(session, op, payout_id):
                log.warning(
                    "Safe payout waits: its withdrawal is not payable now",
                    extra={"safe_tx_id": op.id, "withdrawal_id": op.withdrawal_id},
                )
                return False
            result = session.execute(
                update(SafeTransaction)
                .where(
                    SafeTransaction.id == op.id, SafeTransaction.state == SafeTxState.SIGNED.value
                )
                .values(
                    state=SafeTxState.EXECUTING.value, payout_tx_id=payout_id, update_time=utcnow()
                )
                .execution_options(synchronize_session=False)
            )
            return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]

        payout_id = self.payouts.reserve_call(
            CallDraft(
                kind=Kind.SAFE_EXEC,
                wallet=wallet,
                to_address=safe.lower(),
                calldata=op.exec_calldata,
                gas_limit=gas_limit,
                fees=fees,
                priority=priority,
            ),
            link,
        )
        if payout_id is None:
            return
        log.info(
            "treasury operation sent to a hot wallet",
            extra={"safe_tx_id": op.id, "payout_tx_id": payout_id, "wallet": wallet},
        )
        try:
            self.payouts.sign_reserved(payout_id)
        except TransitionConflict:  # the sweeper (resume_payouts) signed and stored it first
            log.info("Safe execution signed by another pass", extra={"payout_tx_id": payout_id})

    # ------------------------------------------------------------------ 4. settle

    def _settle(self, op: SafeTransaction) -> None:
        with self.sessions() as session:
            first = session.get(PayoutTransaction, op.payout_tx_id)
            treasury = session.get(SafeTreasury, self.chain)
            assert first is not None and treasury is not None
            rows = session.scalars(
                select(PayoutTransaction).where(
                    PayoutTransaction.chain == self.chain,
                    PayoutTransaction.wallet == first.wallet,
                    PayoutTransaction.nonce == first.nonce,
                )
            ).all()
        if any(r.kind == Kind.NONCE_RELEASE for r in rows):
            self._retry_later(
                op.id,
                SafeTxState.EXECUTING,
                "the hot wallet's signer refused to send execTransaction (its nonce was released)",
            )
            return
        confirmed = [r for r in rows if r.state == PayoutState.CONFIRMED]
        if confirmed:
            self._settle_confirmed(op, confirmed[0], treasury.address)
            return
        reverted = [r for r in rows if r.state == PayoutState.REVERTED]
        if reverted:
            row = reverted[0]
            self._retry_later(
                op.id,
                SafeTxState.EXECUTING,
                f"execTransaction {row.tx_hash} reverted: {row.revert_reason or 'no reason given'}",
            )

    def _settle_confirmed(self, op: SafeTransaction, row: PayoutTransaction, safe: str) -> None:
        assert op.safe_tx_hash is not None
        try:
            receipt = self.w3.eth.get_transaction_receipt(row.tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            return  # the node lags behind the monitor's: next pass
        except (Web3Exception, ValueError, OSError) as exc:
            raise TransientError(f"reading a receipt failed: {exc}") from exc
        outcome = safe_reads.execution_result(
            receipt["logs"], safe, bytes.fromhex(op.safe_tx_hash[2:])
        )
        if outcome is None:
            log.error(
                "execTransaction mined without the Safe's execution event for the hash; left "
                "EXECUTING for an operator",
                extra={"safe_tx_id": op.id, "tx_hash": row.tx_hash},
            )
            return
        if not outcome.success:
            self._fail(
                op.id,
                SafeTxState.EXECUTING,
                f"the Safe ran the call and it failed (ExecutionFailure in {row.tx_hash})",
                tx_hash=row.tx_hash,
            )
            return
        with self.sessions.begin() as session:
            result = session.execute(
                update(SafeTransaction)
                .where(
                    SafeTransaction.id == op.id,
                    SafeTransaction.state == SafeTxState.EXECUTING.value,
                )
                .values(
                    state=SafeTxState.EXECUTED.value,
                    tx_hash=row.tx_hash,
                    failure_reason="",
                    update_time=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            log.info(
                "treasury operation executed",
                extra={"safe_tx_id": op.id, "tx_hash": row.tx_hash, "safe_nonce": op.safe_nonce},
            )

    def _retry_later(self, op_id: str, from_state: SafeTxState, reason: str) -> None:
        """The Safe did not use the operation's nonce: it goes back to SIGNED with `reason` (its
        owners' signatures stay valid at that nonce, and the owners sign nothing else there),
        and a hot wallet sends it again once RETRY_SECONDS have passed."""
        with self.sessions.begin() as session:
            result = session.execute(
                update(SafeTransaction)
                .where(SafeTransaction.id == op_id, SafeTransaction.state == from_state.value)
                .values(
                    state=SafeTxState.SIGNED.value,
                    failure_reason=f"{LAST_ATTEMPT_PREFIX}{reason}"[:512],
                    update_time=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            log.error(
                "treasury operation not executed; it is sent again later",
                extra={"safe_tx_id": op_id, "reason": reason, "retry_seconds": RETRY_SECONDS},
            )

    def _fail(
        self, op_id: str, from_state: SafeTxState, reason: str, *, tx_hash: str | None = None
    ) -> None:
        """FAILED with `reason`: never executed (it had no Safe nonce), or the Safe used its
        nonce and the call failed (ExecutionFailure)."""
        with self.sessions.begin() as session:
            result = session.execute(
                update(SafeTransaction)
                .where(SafeTransaction.id == op_id, SafeTransaction.state == from_state.value)
                .values(
                    state=SafeTxState.FAILED.value,
                    failure_reason=reason[:512],
                    update_time=utcnow(),
                    **({} if tx_hash is None else {"tx_hash": tx_hash}),
                )
                .execution_options(synchronize_session=False)
            )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            log.error("treasury operation failed", extra={"safe_tx_id": op_id, "reason": reason})
