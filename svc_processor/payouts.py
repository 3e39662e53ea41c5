"""The life of a payout transaction in the processor, whatever it pays (one ERC-20 transfer or
a PayoutVault batch): reserve a nonce -> sign -> store -> broadcast.

No database lock is held across a remote call, and every step resumes from the database:

1. `reserve`: one transaction locks the hot wallet (and the vault's number counter), links
   each withdrawal to a new RESERVED payout row by compare-and-set (a withdrawal cancelled or
   taken meanwhile simply drops out), gives vault withdrawals their payout number once, stores
   the calldata and the items, and takes the wallet's next nonce.
2. `sign_reserved`: asks svc_signer for exactly that nonce and calldata; then one transaction
   stores the signed bytes (SIGNED) and moves every linked withdrawal to SIGNED — before any
   broadcast. A crash before this commit leaves a RESERVED row that is signed again at the
   same nonce (the signer returns the bytes it stored or signs the same payload there).
3. `broadcast`: sends the stored bytes ("already known" is success) and records BROADCAST
   with the head block at that moment (`broadcast_block`: how long it has waited). When the
   node answers "replacement transaction underpriced" the row stays SIGNED, its
   `broadcast_block` is set once, and `replacer.Replacer` replaces it with a bigger bump.
   With an `RpcPool` (the server's `Web3(PoolProvider(pool))`) the bytes go to every healthy
   provider and the pool's classified `SendOutcome` is handled the same way; when no provider
   answered the row stays SIGNED (the bytes may have been sent) and the sweeper re-sends them.

A Safe execution (`Kind.SAFE_EXEC`, `svc_processor.treasury`) goes through the same steps
without withdrawals: `reserve_call` takes the wallet's nonce for the treasury Safe's
`execTransaction` calldata and, in the same transaction, lets the caller link its Safe
transaction to the new row; it is signed with PURPOSE_SAFE_EXECUTION naming the change and the
Safe nonce (`safe_execution`), and a replacement carries the same two fields.

If the signer refuses, `release_nonce` fills the nonce with a zero-value self-transfer and
puts the withdrawals ON_HOLD, so the wallet never jams on a gap.

The kill switch (`withdrawal_shared.db.pauses`) gates step 1 only: `reserve` reads it in its
own transaction under the pause lock row and reserves nothing while a pause covers the
payout. A payout reserved before the pause committed goes on to be signed (the signer refuses
a first signature while paused, and the nonce is then released) and what is signed is
broadcast, re-sent and replaced as usual.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3
from web3.exceptions import Web3Exception

from assetwithdrawal.signer.v1 import signer_pb2
from svc_processor.errors import SignerRefused, rpc_error_kind
from svc_processor.pauses import check_reservation, hold_for_refusal, is_paused_hold
from svc_processor.signer_client import SignerClient
from withdrawal_shared import tracing
from withdrawal_shared.chain.fees import Fees
from withdrawal_shared.chain.payout import Payment
from withdrawal_shared.chain.rpc_pool import PoolProvider, RpcPool, SendOutcome
from withdrawal_shared.crash_points import crash_point
from withdrawal_shared.db import rotation_changes
from withdrawal_shared.db.models import (
    Chain,
    HotWallet,
    PayoutItem,
    PayoutTransaction,
    PayoutVault,
    SafeTransaction,
    Token,
    Withdrawal,
)
from withdrawal_shared.db.transitions import (
    WITHDRAWALS,
    DirectUpdate,
    Moved,
    RowAsRead,
    Step,
    TransitionConflict,
    by_id,
    move,
    move_many,
    rows_as_read,
    utcnow,
    versions_are,
)
from withdrawal_shared.ids import new_ulid
from withdrawal_shared.states import PayoutState, State, WalletState, most_urgent

log = logging.getLogger(__name__)

ACTOR = "processor"
NATIVE_TRANSFER_GAS = 21_000
PAYABLE = (State.QUEUED, State.ON_HOLD)


class Kind:
    TRANSFER = "transfer"
    VAULT = "vault"
    NONCE_RELEASE = "nonce_release"
    SAFE_EXEC = "safe_exec"


@dataclass(frozen=True)
class Draft:
    """A payout transaction to reserve: who pays whom, through what, at what price."""

    kind: str
    wallet: str  # lowercase
    to_address: str  # lowercase: the token (transfer) or the vault
    token_address: str  # lowercase
    gas_limit: int
    fees: Fees
    members: Sequence[Withdrawal]  # rows as read; their versions are compare-and-set
    build_calldata: Callable[[Sequence[Payment]], bytes]


@dataclass(frozen=True)
class CallDraft:
    """A payout transaction paying no withdrawal: one call of `to_address` with `calldata`."""

    kind: str
    wallet: str  # lowercase
    to_address: str  # lowercase
    calldata: bytes
    gas_limit: int
    fees: Fees
    priority: str = "STANDARD"


def _active_wallet(session: Session, address: str) -> HotWallet:
    """The hot wallet's row, locked; `_NothingLinked` when a rotation switched it meanwhile
    (no longer ACTIVE: it takes no new nonce)."""
    wallet = session.scalars(
        select(HotWallet).where(HotWallet.address == address).with_for_update()
    ).one()
    if wallet.state != WalletState.ACTIVE:
        raise _NothingLinked
    return wallet


class _NothingLinked(Exception):
    """Internal: every member moved meanwhile, or the wallet is no longer ACTIVE (a rotation
    made it DRAINING after it was picked: `svc_processor.rotation`); roll the reservation
    back."""


class _SomeMoved(Exception):
    """Internal: a member moved meanwhile; roll back and link them one by one."""


class Payouts:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        w3: Web3,
        signer: SignerClient,
        chain: str,
        pool: RpcPool | None = None,
    ) -> None:
        self.sessions = sessions
        self.w3 = w3
        self.signer = signer
        self.chain = chain
        if pool is None and isinstance(w3.provider, PoolProvider):
            pool = w3.provider.pool
        self.pool = pool
        """Broadcasts go to every healthy provider of this pool (None: through `w3` alone)."""

    # -- 1. reserve ----------------------------------------------------------------------

    def reserve(self, draft: Draft) -> str | None:
        """The new RESERVED payout's id, or None when no member could be linked; raises
        `PayoutsPaused` (nothing reserved) when the kill switch covers the payout. Members
        held ON_HOLD `PAUSED` are never linked (the pipeline queues them again first).

        The members are linked with one UPDATE (`_link_all`); when one of them moved
        meanwhile the transaction is rolled back and done again linking them one by one
        (`_link`), so that the payout still pays consecutive numbers to those left."""
        try:
            return self._reserve(draft, bulk=True)
        except _SomeMoved:
            return self._reserve(draft, bulk=False)

    def _reserve(self, draft: Draft, *, bulk: bool) -> str | None:
        members = [m for m in draft.members if not is_paused_hold(m)]
        if not members:
            return None
        if len(members) != len(draft.members):
            draft = dataclasses.replace(draft, members=members)
        payout_id = new_ulid()
        now = utcnow()
        try:
            with self.sessions.begin() as session:
                # The kill switch, read under its lock row before any other lock: a pause
                # committed before this point forbids the reservation; one committing later
                # waits for this transaction (svc_processor/pauses.py).
                check_reservation(session, self.chain, {m.token_id for m in draft.members})
                wallet = _active_wallet(session, draft.wallet)
                vault = None
                if draft.kind == Kind.VAULT:
                    vault = session.scalars(
                        select(PayoutVault).where(PayoutVault.chain == self.chain).with_for_update()
                    ).one()
                if bulk:
                    linked = self._link_all(session, draft, payout_id, vault)
                else:
                    linked = self._link(session, draft, payout_id, vault)
                if not linked:
                    raise _NothingLinked
                payments = [payment for _, payment in linked]
                calldata = draft.build_calldata(payments)
                session.add(
                    self._reserved_row(
                        payout_id,
                        wallet,
                        draft,
                        calldata,
                        most_urgent(m.priority for m in members).value,
                        now,
                    )
                )
                session.flush()
                session.execute(
                    insert(PayoutItem),
                    [
                        {
                            "payout_tx_id": payout_id,
                            "withdrawal_id": withdrawal_id,
                            "payout_number": payment.number,
                            "recipient": payment.recipient,
                            "amount": payment.amount,
                            "outcome": "",
                            "outcome_reason": "",
                        }
                        for withdrawal_id, payment in linked
                    ],
                )
                wallet.next_nonce += 1
        except _NothingLinked:
            return None
        crash_point("processor.after_nonce_reserved")
        log.info(
            "nonce reserved",
            extra={"payout_tx_id": payout_id, "wallet": draft.wallet, "items": len(payments)},
        )
        return payout_id

    def _reserved_row(
        self,
        payout_id: str,
        wallet: HotWallet,
        draft: Draft | CallDraft,
        calldata: bytes,
        priority: str,
        now: dt.datetime,
    ) -> PayoutTransaction:
        """The RESERVED row of a payout or call at `wallet`'s next nonce (its calldata stands
        in for the raw transaction until it is signed)."""
        return PayoutTransaction(
            id=payout_id,
            chain=self.chain,
            wallet=draft.wallet,
            nonce=wallet.next_nonce,
            to_address=draft.to_address,
            raw_tx=calldata,  # calldata until signed
            calldata=calldata,
            tx_hash=f"reserved:{payout_id}",
            gas_limit=draft.gas_limit,
            max_fee_per_gas=draft.fees.max_fee_per_gas,
            max_priority_fee_per_gas=draft.fees.max_priority_fee_per_gas,
            state=PayoutState.RESERVED,
            create_time=now,
            update_time=now,
            kind=draft.kind,
            priority=priority,
        )

    def reserve_call(self, draft: CallDraft, link: Callable[[Session, str], bool]) -> str | None:
        """Reserve a RESERVED payout row for `draft` at the wallet's next nonce; in the same
        transaction `link(session, payout_id)` ties whatever the call executes to the row and
        returns False when that moved meanwhile (nothing is then reserved: None)."""
        payout_id = new_ulid()
        now = utcnow()
        try:
            with self.sessions.begin() as session:
                wallet = _active_wallet(session, draft.wallet)
                session.add(
                    self._reserved_row(
                        payout_id, wallet, draft, draft.calldata, draft.priority, now
                    )
                )
                session.flush()
                if not link(session, payout_id):
                    raise _NothingLinked
                wallet.next_nonce += 1
        except _NothingLinked:
            return None
        log.info(
            "nonce reserved for a call",
            extra={"payout_tx_id": payout_id, "wallet": draft.wallet, "kind": draft.kind},
        )
        return payout_id

    def _link_all(
        self, session: Session, draft: Draft, payout_id: str, vault: PayoutVault | None
    ) -> list[tuple[str, Payment]]:
        """`_link` for every member in one UPDATE (compare-and-set on each one's version);
        `_SomeMoved` when not all of them were still as read."""
        linked: list[tuple[str, Payment]] = []
        numbers: dict[str, int | None] = {}
        versions: dict[str, int] = {}
        for row in draft.members:
            number = row.payout_number
            if vault is not None and number is None:
                number = vault.next_number
                vault.next_number += 1
            numbers[row.id] = number
            versions[row.id] = row.version
            linked.append((row.id, Payment(number or 0, row.recipient, row.amount)))
        if not linked:
            return linked
        if DirectUpdate.supported(session):
            stmt = DirectUpdate(session)
            quote = stmt.quote
            assignments = [
                f"{quote('payout_tx_id')} = {stmt.bind('payout_tx_id', payout_id)}",
                f"{quote('payout_number')} = "
                + stmt.case("payout_number", numbers, quote("payout_number")),
            ]
            conditions = [
                stmt.ids(list(numbers)),
                stmt.versions_are(versions),
                f"{quote('payout_tx_id')} IS NULL",
            ]
            if stmt.execute(assignments, conditions) != len(linked):
                raise _SomeMoved
            return linked
        table = WITHDRAWALS
        result = session.execute(
            update(table)
            .where(
                table.c.id.in_(list(numbers)),
                versions_are(versions),
                table.c.payout_tx_id.is_(None),
            )
            .values(payout_tx_id=payout_id, payout_number=by_id("payout_number", numbers))
        )
        if result.rowcount != len(linked):  # type: ignore[attr-defined]
            raise _SomeMoved
        return linked

    def _link(
        self, session: Session, draft: Draft, payout_id: str, vault: PayoutVault | None
    ) -> list[tuple[str, Payment]]:
        """Link each member still payable to the payout; (withdrawal id, payment) of those."""
        linked: list[tuple[str, Payment]] = []
        for row in draft.members:
            number = row.payout_number
            fresh_number = vault is not None and number is None
            if fresh_number:
                assert vault is not None
                number = vault.next_number
            result = session.execute(
                update(Withdrawal)
                .where(
                    Withdrawal.id == row.id,
                    Withdrawal.version == row.version,
                    Withdrawal.payout_tx_id.is_(None),
                )
                .values(payout_tx_id=payout_id, payout_number=number)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                continue  # cancelled or taken meanwhile: it drops out of this payout
            if fresh_number:
                assert vault is not None
                vault.next_number += 1
            linked.append((row.id, Payment(number or 0, row.recipient, row.amount)))
        return linked

    # -- 2. sign and store ---------------------------------------------------------------

    def sign_reserved(self, payout_id: str, *, broadcast: bool = True) -> list[Moved]:
        """Sign a RESERVED payout, store the bytes, broadcast them (a SIGNED one: broadcast).
        With `broadcast=False` it stops once the bytes are stored; the caller sends them."""
        name = "processor sign and broadcast payout" if broadcast else "processor sign payout"
        with self.traced(name, payout_id):
            return self._sign_reserved(payout_id, broadcast)

    def traced(self, name: str, payout_id: str) -> AbstractContextManager[object]:
        """`tracing.payout_span` of the payout, with its withdrawals' stored contexts."""
        if not tracing.enabled():
            return nullcontext()
        with self.sessions() as session:
            traceparents = list(
                session.scalars(
                    select(Withdrawal.trace_context)
                    .where(Withdrawal.payout_tx_id == payout_id)
                    .order_by(Withdrawal.id)
                )
            )
        return tracing.payout_span(name, payout_id, traceparents)

    def _sign_reserved(self, payout_id: str, broadcast: bool = True) -> list[Moved]:
        with self.sessions() as session:
            payout = session.get(PayoutTransaction, payout_id)
            chain = session.get(Chain, self.chain)
            items = session.scalars(
                select(PayoutItem)
                .where(PayoutItem.payout_tx_id == payout_id)
                .order_by(PayoutItem.payout_number, PayoutItem.withdrawal_id)
            ).all()
            token_address = self.token_address(session, [i.withdrawal_id for i in items])
        if payout is None or chain is None:
            return []
        if payout.state == PayoutState.SIGNED:
            return self.broadcast(payout_id) if broadcast else []
        if payout.state != PayoutState.RESERVED:
            return []
        request = sign_request(
            payout,
            chain.chain_id,
            payout.raw_tx,
            Fees(payout.max_fee_per_gas, payout.max_priority_fee_per_gas),
            items,
            token_address,
            signer_pb2.PURPOSE_PAYOUT,
        )
        if payout.kind == Kind.SAFE_EXEC:
            with self.sessions() as session:
                safe_execution(session, payout, request)
        try:
            with tracing.span("processor sign", {"payout.id": payout_id}):
                signed = self.signer.sign(request)
        except SignerRefused as refused:
            log.error(
                "signer refused; releasing the nonce",
                extra={"payout_tx_id": payout_id, "reason": refused.reason},
            )
            return self.release_nonce(payout, chain.chain_id, refused)
        crash_point("processor.after_signed_before_store")
        moved: list[Moved] = []
        with self.sessions.begin() as session:
            stored = session.execute(
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
            if stored.rowcount != 1:  # type: ignore[attr-defined]
                raise TransitionConflict(payout_id)
            moved = move_many(
                session,
                self._members_as_read(session, payout_id, PAYABLE),
                Step(State.SIGNED, "SIGNED", "Signed and stored; broadcasting."),
                actor=ACTOR,
                fields={"tx_hash": signed.tx_hash.lower()},
            )
        crash_point("processor.after_store_before_broadcast")
        if not broadcast:
            return moved
        return [*moved, *self.broadcast(payout_id)]

    @staticmethod
    def token_address(session: Session, withdrawal_ids: Sequence[str]) -> str:
        if not withdrawal_ids:
            return ""
        address = session.scalar(
            select(Token.contract_address)
            .join(Withdrawal, Withdrawal.token_id == Token.id)
            .where(Withdrawal.id == withdrawal_ids[0])
        )
        return address or ""

    @staticmethod
    def _members_as_read(
        session: Session, payout_id: str, states: Sequence[State]
    ) -> list[RowAsRead]:
        """`_members` for `move_many` alone (no ORM objects)."""
        return rows_as_read(
            session,
            WITHDRAWALS.c.payout_tx_id == payout_id,
            WITHDRAWALS.c.state.in_([s.value for s in states]),
        )

    @staticmethod
    def _members(session: Session, payout_id: str, states: Sequence[State]) -> Sequence[Withdrawal]:
        return session.scalars(
            select(Withdrawal)
            .where(
                Withdrawal.payout_tx_id == payout_id,
                Withdrawal.state.in_([s.value for s in states]),
            )
            .order_by(Withdrawal.id)
        ).all()

    def release_nonce(
        self, payout: PayoutTransaction, chain_id: int, refused: SignerRefused
    ) -> list[Moved]:
        """Fill a refused payout's nonce with a zero-value self-transfer (nothing is paid);
        its withdrawals go ON_HOLD `SIGNER_REFUSED`, or `PAUSED` when the signer refused
        because of the kill switch (they resume by themselves once it is lifted)."""
        signed = self.signer.sign(
            signer_pb2.SignTransactionRequest(
                wallet_address=payout.wallet,
                chain_id=chain_id,
                nonce=payout.nonce,
                to_address=payout.wallet,
                value_wei="0",
                gas_limit=NATIVE_TRANSFER_GAS,
                max_fee_per_gas_wei=str(payout.max_fee_per_gas),
                max_priority_fee_per_gas_wei=str(payout.max_priority_fee_per_gas),
                purpose=signer_pb2.PURPOSE_NONCE_RELEASE,
            )
        )
        moved: list[Moved] = []
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
                    kind=Kind.NONCE_RELEASE,
                    update_time=utcnow(),
                )
            )
            hold = hold_for_refusal(refused.reason)  # PAUSED resumes by itself
            for row in self._members(session, payout.id, PAYABLE):
                moved.append(
                    move(
                        session,
                        row,
                        State.ON_HOLD,
                        actor=ACTOR,
                        reason=hold,
                        message=hold.state_message(
                            f"The signer refused ({refused.reason}): {refused.message}"
                        ),
                        payout_tx_id=None,
                    )
                )
        self.broadcast(payout.id)
        return moved

    # -- 3. broadcast --------------------------------------------------------------------

    def broadcast(self, payout_id: str) -> list[Moved]:
        """Send a SIGNED payout's stored bytes and record it BROADCAST when a node took them."""
        with self.traced("processor broadcast payout", payout_id):
            return self._broadcast(payout_id)

    def _broadcast(self, payout_id: str) -> list[Moved]:
        with self.sessions() as session:
            payout = session.get(PayoutTransaction, payout_id)
        if payout is None or payout.state != PayoutState.SIGNED:
            return []
        if self.pool is not None:
            return self._broadcast_to_pool(payout, self.pool.send_raw_transaction(payout.raw_tx))
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
            if kind == "underpriced":
                # Another transaction holds this nonce and pays about as much: this one is
                # replaced with a bigger bump once it has waited (`replacer.Replacer`).
                self._record_refused(payout_id)
                log.warning(
                    "broadcast refused as underpriced; will be replaced with a bigger bump",
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
                "broadcast failed; will retry",
                extra={"payout_tx_id": payout_id, "error": str(exc)},
            )
            return []
        return self._record_broadcast(payout_id)

    def _broadcast_to_pool(self, payout: PayoutTransaction, outcome: SendOutcome) -> list[Moved]:
        """Handle what the pool's providers said to the payout's bytes (see `broadcast`)."""
        status = outcome.status
        extra = {"payout_tx_id": payout.id, "nonce": payout.nonce, "send_status": status}
        if status in ("accepted", "already_known"):
            return self._record_broadcast(payout.id)
        if status == "nonce_too_low":
            if self._mined(payout.tx_hash):
                return self._record_broadcast(payout.id)
            log.error("nonce already used by another transaction", extra=extra)
            return []
        if status == "underpriced":
            self._record_refused(payout.id)
            log.warning(
                "broadcast refused as underpriced; will be replaced with a bigger bump",
                extra=extra,
            )
            return []
        errors = "; ".join(f"{r.url}: {r.error}" for r in outcome.results if r.error)
        if status == "unavailable":
            # It may have reached a node (a timeout hides that): the row stays SIGNED and the
            # sweeper re-sends the same bytes; the monitor finds its receipt if it mined.
            log.warning(
                "no RPC provider answered the broadcast; it may have been sent, the same "
                "bytes are re-sent at the next sweep",
                extra={**extra, "error": errors},
            )
            return []
        log.warning("broadcast failed; will retry", extra={**extra, "error": errors})
        return []

    def head(self) -> int | None:
        """The head block number, or None when the node does not answer."""
        try:
            return int(self.w3.eth.block_number)
        except (Web3Exception, ValueError, OSError):
            return None

    def _record_refused(self, payout_id: str) -> None:
        """Start the clock of a SIGNED payout the node refused as underpriced (once)."""
        head = self.head()
        if head is None:
            return
        with self.sessions.begin() as session:
            session.execute(
                update(PayoutTransaction)
                .where(
                    PayoutTransaction.id == payout_id,
                    PayoutTransaction.state == PayoutState.SIGNED,
                    PayoutTransaction.broadcast_block.is_(None),
                )
                .values(broadcast_block=head, update_time=utcnow())
            )

    def _mined(self, tx_hash: str) -> bool:
        try:
            self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except (Web3Exception, ValueError):
            return False
        return True

    def _record_broadcast(self, payout_id: str) -> list[Moved]:
        crash_point("processor.after_broadcast_before_record")  # only called after a send
        moved: list[Moved] = []
        head = self.head()
        extra = {} if head is None else {"broadcast_block": head}
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
                    **extra,
                )
            )
            moved = move_many(
                session,
                self._members_as_read(session, payout_id, (State.SIGNED,)),
                Step(State.BROADCAST, "BROADCAST", "Sent to the network; waiting to be mined."),
                actor=ACTOR,
            )
        return moved


def safe_execution(
    session: Session, payout: PayoutTransaction, request: signer_pb2.SignTransactionRequest
) -> None:
    """Make `request` (for a `Kind.SAFE_EXEC` row or its replacement) a PURPOSE_SAFE_EXECUTION
    naming the change and the Safe nonce of the Safe transaction it executes (the one linked to
    the first row at the payout's (wallet, nonce))."""
    first = select(PayoutTransaction.id).where(
        PayoutTransaction.chain == payout.chain,
        PayoutTransaction.wallet == payout.wallet,
        PayoutTransaction.nonce == payout.nonce,
    )
    safe_tx = session.scalars(
        select(SafeTransaction).where(SafeTransaction.payout_tx_id.in_(first))
    ).first()
    if safe_tx is None or safe_tx.safe_nonce is None:
        raise RuntimeError(f"payout {payout.id} executes no Safe transaction with a nonce")
    request.purpose = signer_pb2.PURPOSE_SAFE_EXECUTION
    request.safe_nonce = safe_tx.safe_nonce
    change_id = rotation_changes.ordering_change(session, safe_tx)  # a rotation's step: its
    if change_id is not None:
        request.change = f"changes/{change_id}"


def sign_request(
    payout: PayoutTransaction,
    chain_id: int,
    data: bytes,
    fees: Fees,
    items: Sequence[PayoutItem],
    token_address: str,
    purpose: signer_pb2.Purpose.ValueType,
) -> signer_pb2.SignTransactionRequest:
    """What to ask the signer for `payout` at its (wallet, nonce), paying `items`."""
    return signer_pb2.SignTransactionRequest(
        wallet_address=payout.wallet,
        chain_id=chain_id,
        nonce=payout.nonce,
        to_address=payout.to_address,
        data=data,
        value_wei="0",
        gas_limit=payout.gas_limit,
        max_fee_per_gas_wei=str(fees.max_fee_per_gas),
        max_priority_fee_per_gas_wei=str(fees.max_priority_fee_per_gas),
        purpose=purpose,
        items=[
            signer_pb2.PayoutItem(
                withdrawal_id=item.withdrawal_id,
                recipient_address=item.recipient,
                amount_base_units=str(item.amount),
                token_address=token_address,
                payout_number=item.payout_number,
            )
            for item in items
        ],
    )
