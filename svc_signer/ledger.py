"""The signer's database access: its double-payment ledger and the rows its policy reads.

`signer_ledger` (one row per signed transaction, with its raw bytes) and `signer_ledger_items`
(which withdrawals each one pays, at which wallet and nonce) are written only here, and so is
`safe_owner_signatures` (a Safe owner's signer: every owner signature it gave, one per Safe
nonce). The policy also reads the withdrawals it pays, their approval requests and decisions,
the blocklist, the tokens it may call, (for a nonce release) the processor's payout row at that
nonce, and for the treasury Safe its row and owners, the vault, the hot wallets and the
four-eyes change a treasury operation names; it never writes them.

Everything runs inside one `Ledger.transaction()` per signing request (sync SQLAlchemy; call it
from a worker thread). `LedgerTransaction.lock_withdrawals` takes row locks on the withdrawals
(`SELECT ... FOR UPDATE` on MySQL/MariaDB; SQLite serialises every write transaction with
`BEGIN IMMEDIATE`), so two requests that pay the same withdrawal are checked and recorded one
after the other, never interleaved.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine, or_, select
from sqlalchemy.orm import Session, sessionmaker

from withdrawal_shared.approvals.blocklist import blocked_among
from withdrawal_shared.approvals.core import (
    ApprovalGap,
    ApprovalTally,
    approval_gaps,
    approval_tallies,
)
from withdrawal_shared.db.engine import make_sessionmaker
from withdrawal_shared.db.models import (
    AdminChange,
    HotWallet,
    HotWalletRotation,
    PayoutTransaction,
    PayoutVault,
    SafeOwner,
    SafeOwnerSignature,
    SafeTreasury,
    SignerKey,
    SignerLedger,
    SignerLedgerItem,
    Token,
    Withdrawal,
)
from withdrawal_shared.db.rotation_changes import KIND as ROTATE_KIND
from withdrawal_shared.db.transitions import utcnow
from withdrawal_shared.states import PayoutState


@dataclass(frozen=True)
class WithdrawalFacts:
    """What the policy needs to know about one withdrawal."""

    id: str
    chain: str
    state: str
    recipient: str  # lowercase
    amount: int  # base units
    token_address: str | None  # lowercase contract of its token (None for a native token)
    payout_number: int | None  # its number in the payout vault's bitmap, once given


@dataclass(frozen=True)
class LedgerClaim:
    """One ledger item: `withdrawal_id` is paid by `tx_hash` at (`wallet`, `nonce`)."""

    withdrawal_id: str
    tx_hash: str
    wallet: str
    nonce: int


@dataclass(frozen=True)
class LedgerEntry:
    """A signed transaction in the ledger and the withdrawals it pays."""

    tx_hash: str
    purpose: str
    raw_tx: bytes
    withdrawal_ids: frozenset[str]


@dataclass(frozen=True)
class NewEntry:
    """A transaction just signed, to be recorded with its items."""

    tx_hash: str
    wallet: str  # lowercase
    chain_id: int
    nonce: int
    purpose: str
    raw_tx: bytes
    withdrawal_ids: tuple[str, ...]


@dataclass(frozen=True)
class TreasuryFacts:
    """A chain's treasury Safe as `safe_treasuries` and `safe_owners` record it."""

    chain: str
    address: str  # lowercase
    threshold: int
    owners: frozenset[str]  # lowercase


@dataclass(frozen=True)
class TokenFacts:
    """An enabled token of the chain (contract lowercase)."""

    symbol: str
    contract: str
    safe_threshold: int | None  # base units; above it a withdrawal is paid by the Safe


@dataclass(frozen=True)
class ChangeFacts:
    """A four-eyes change (`admin_changes`) as the treasury policy reads it."""

    id: str
    kind: str
    payload: str  # canonical JSON
    state: str
    rotation_wallet: str | None = None
    """A `hot_wallet.rotate` change: its rotation's new wallet (lowercase), only when the hot
    signer created that key for that rotation (`signer_keys.request_id` is the rotation's id:
    a row only the signer writes)."""


@dataclass(frozen=True)
class SafeSignatureRecord:
    """An owner signature this signer gave (`safe_owner_signatures`)."""

    safe: str  # lowercase
    safe_nonce: int
    owner: str  # lowercase
    chain_id: int
    safe_tx_hash: str  # 0x-prefixed
    signature: bytes
    purpose: str
    to: str
    change_id: str | None
    withdrawal_ids: tuple[str, ...]


class LedgerTransaction:
    """The queries and writes of one signing request, inside one database transaction."""

    def __init__(self, session: Session) -> None:
        self._session = session

    @property
    def session(self) -> Session:
        """The request's session (for the policy's other reads, e.g. `svc_signer.pauses`)."""
        return self._session

    def payout_targets(self, chain: str) -> frozenset[str]:
        """Lowercase addresses a single-transfer payout may call on `chain`: the enabled
        tokens' contracts."""
        rows = self._session.scalars(
            select(Token.contract_address).where(
                Token.chain == chain, Token.enabled.is_(True), Token.contract_address.is_not(None)
            )
        )
        return frozenset(address.lower() for address in rows if address)

    def payout_vault(self, chain: str) -> str | None:
        """The chain's enabled PayoutVault (lowercase), the only target of batch payouts."""
        vault = self._session.get(PayoutVault, chain)
        return vault.address.lower() if vault is not None and vault.enabled else None

    def treasury(self, chain: str, *, lock: bool = False) -> TreasuryFacts | None:
        """The chain's treasury Safe and its owners, or None; with `lock` its row is locked
        until commit (an owner's signer serialises its signatures of the Safe on it)."""
        query = select(SafeTreasury).where(SafeTreasury.chain == chain)
        if lock:
            query = query.with_for_update()
        row = self._session.scalars(query).one_or_none()
        if row is None:
            return None
        owners = self._session.scalars(
            select(SafeOwner.owner_address).where(SafeOwner.chain == chain)
        )
        return TreasuryFacts(
            chain=chain,
            address=row.address.lower(),
            threshold=row.threshold,
            owners=frozenset(owner.lower() for owner in owners),
        )

    def enabled_tokens(self, chain: str) -> dict[str, TokenFacts]:
        """The chain's enabled tokens with a contract, by lowercase contract address."""
        rows = self._session.execute(
            select(Token.symbol, Token.contract_address, Token.safe_threshold_base_units).where(
                Token.chain == chain, Token.enabled.is_(True), Token.contract_address.is_not(None)
            )
        )
        return {
            row.contract_address.lower(): TokenFacts(
                row.symbol, row.contract_address.lower(), row.safe_threshold_base_units
            )
            for row in rows
            if row.contract_address
        }

    def hot_wallets(self, chain: str) -> frozenset[str]:
        """The chain's enabled hot wallets (lowercase), from `hot_wallets`."""
        rows = self._session.scalars(
            select(HotWallet.address).where(HotWallet.chain == chain, HotWallet.enabled.is_(True))
        )
        return frozenset(address.lower() for address in rows)

    def change(self, change_id: str) -> ChangeFacts | None:
        """The four-eyes change `change_id`, or None."""
        row = self._session.get(AdminChange, change_id)
        if row is None:
            return None
        rotation_wallet = None
        if row.kind == ROTATE_KIND:
            rotation = self._session.scalar(
                select(HotWalletRotation).where(HotWalletRotation.change_id == row.id)
            )
            if rotation is not None and rotation.new_wallet is not None:
                key = self._session.get(SignerKey, rotation.new_wallet)
                if key is not None and key.request_id == rotation.id:
                    rotation_wallet = key.address
        return ChangeFacts(row.id, row.kind, row.payload, row.state, rotation_wallet)

    def approval_tallies(self, ids: Collection[str]) -> dict[str, ApprovalTally]:
        """Of these withdrawals, those ever held for approval, with their approvals counted."""
        return approval_tallies(self._session, ids)

    def safe_signature(self, safe: str, safe_nonce: int, owner: str) -> SafeSignatureRecord | None:
        """The signature this owner gave at this Safe nonce, or None."""
        row = self._session.get(SafeOwnerSignature, (safe, safe_nonce, owner))
        if row is None:
            return None
        return SafeSignatureRecord(
            safe=row.safe_address,
            safe_nonce=row.safe_nonce,
            owner=row.owner_address,
            chain_id=row.chain_id,
            safe_tx_hash=row.safe_tx_hash,
            signature=bytes(row.signature),
            purpose=row.purpose,
            to=row.to_address,
            change_id=row.change_id,
            withdrawal_ids=tuple(filter(None, row.withdrawal_ids.split(","))),
        )

    def record_safe_signature(self, record: SafeSignatureRecord) -> None:
        """Insert an owner signature (flushed; committed with the block). The primary key
        (Safe, Safe nonce, owner) refuses a second one at the same Safe nonce."""
        self._session.add(
            SafeOwnerSignature(
                safe_address=record.safe,
                safe_nonce=record.safe_nonce,
                owner_address=record.owner,
                chain_id=record.chain_id,
                safe_tx_hash=record.safe_tx_hash,
                signature=record.signature,
                purpose=record.purpose,
                to_address=record.to,
                change_id=record.change_id,
                withdrawal_ids=",".join(record.withdrawal_ids),
                create_time=utcnow(),
            )
        )
        self._session.flush()

    def reserved_payout_at(self, chain: str, wallet: str, nonce: int) -> bool:
        """Whether the processor holds (wallet, nonce) for a payout it has not signed yet."""
        found = self._session.scalar(
            select(PayoutTransaction.id)
            .where(
                PayoutTransaction.chain == chain,
                PayoutTransaction.wallet == wallet,
                PayoutTransaction.nonce == nonce,
                PayoutTransaction.state == PayoutState.RESERVED,
            )
            .limit(1)
        )
        return found is not None

    def approval_gaps(self, ids: Collection[str]) -> dict[str, ApprovalGap]:
        """Of these withdrawals, those lacking approvals their rule required."""
        return approval_gaps(self._session, ids)

    def blocked_among(self, addresses: Collection[str]) -> frozenset[str]:
        """Which of these (lowercase) addresses are on the blocklist."""
        return blocked_among(self._session, addresses)

    def lock_withdrawals(self, ids: Collection[str]) -> dict[str, WithdrawalFacts]:
        """The withdrawals with these ids (missing ones are absent), locked until commit."""
        if not ids:
            return {}
        rows = list(
            self._session.execute(
                select(
                    Withdrawal.id,
                    Withdrawal.chain,
                    Withdrawal.state,
                    Withdrawal.recipient,
                    Withdrawal.amount,
                    Withdrawal.token_id,
                    Withdrawal.payout_number,
                )
                .where(Withdrawal.id.in_(sorted(ids)))
                .order_by(Withdrawal.id)
                .with_for_update()
            )
        )
        token_ids = {row.token_id for row in rows}
        contracts = {
            token_id: address
            for token_id, address in self._session.execute(
                select(Token.id, Token.contract_address).where(Token.id.in_(token_ids))
            )
        }
        facts: dict[str, WithdrawalFacts] = {}
        for row in rows:
            contract = contracts.get(row.token_id)
            facts[row.id] = WithdrawalFacts(
                id=row.id,
                chain=row.chain,
                state=row.state,
                recipient=row.recipient.lower(),
                amount=row.amount,
                token_address=contract.lower() if contract else None,
                payout_number=row.payout_number,
            )
        return facts

    def claims_elsewhere(self, ids: Collection[str], wallet: str, nonce: int) -> list[LedgerClaim]:
        """Ledger items for these withdrawals at any (wallet, nonce) other than the given one."""
        if not ids:
            return []
        rows = self._session.execute(
            select(
                SignerLedgerItem.withdrawal_id,
                SignerLedgerItem.tx_hash,
                SignerLedgerItem.wallet,
                SignerLedgerItem.nonce,
            )
            .where(
                SignerLedgerItem.withdrawal_id.in_(sorted(ids)),
                or_(SignerLedgerItem.wallet != wallet, SignerLedgerItem.nonce != nonce),
            )
            .order_by(SignerLedgerItem.withdrawal_id, SignerLedgerItem.nonce)
        )
        return [LedgerClaim(r.withdrawal_id, r.tx_hash, r.wallet, r.nonce) for r in rows]

    def consumed_without_paying(self, chain: str, claim: LedgerClaim) -> bool:
        """Whether the claim's (wallet, nonce) is known to be consumed on chain by a
        transaction that did not pay its withdrawal, so paying it at another nonce cannot pay
        it twice. Known means settled by the monitor at the chain's confirmation depth: a
        transaction at that nonce REVERTED (receipt status 0: it paid nothing), or CONFIRMED
        while this signer's ledger shows it does not pay the withdrawal (a nonce release, or
        a payout of other withdrawals). Only one transaction per nonce can ever be mined."""
        pt = PayoutTransaction
        rows = self._session.execute(
            select(pt.tx_hash, pt.state, pt.receipt_status).where(
                pt.chain == chain,
                pt.wallet == claim.wallet,
                pt.nonce == claim.nonce,
                pt.state.in_([PayoutState.REVERTED, PayoutState.CONFIRMED]),
            )
        ).all()
        for row in rows:
            if row.state == PayoutState.REVERTED and row.receipt_status == 0:
                return True
            if row.state == PayoutState.CONFIRMED:
                entry = self.entry(row.tx_hash)
                if entry is not None and claim.withdrawal_id not in entry.withdrawal_ids:
                    return True
        return False

    def entries_at(self, wallet: str, nonce: int) -> list[LedgerEntry]:
        """Every transaction signed at (wallet, nonce), oldest first."""
        rows = list(
            self._session.execute(
                select(SignerLedger.tx_hash, SignerLedger.purpose, SignerLedger.raw_tx)
                .where(SignerLedger.wallet == wallet, SignerLedger.nonce == nonce)
                .order_by(SignerLedger.create_time, SignerLedger.tx_hash)
            )
        )
        return [
            LedgerEntry(row.tx_hash, row.purpose, bytes(row.raw_tx), self._items_of(row.tx_hash))
            for row in rows
        ]

    def entry(self, tx_hash: str) -> LedgerEntry | None:
        """The ledger entry of `tx_hash`, or None."""
        row = self._session.get(SignerLedger, tx_hash)
        if row is None:
            return None
        return LedgerEntry(row.tx_hash, row.purpose, bytes(row.raw_tx), self._items_of(tx_hash))

    def _items_of(self, tx_hash: str) -> frozenset[str]:
        return frozenset(
            self._session.scalars(
                select(SignerLedgerItem.withdrawal_id).where(SignerLedgerItem.tx_hash == tx_hash)
            )
        )

    def record(self, entry: NewEntry) -> None:
        """Insert the signed transaction and its items (flushed; committed with the block)."""
        self._session.add(
            SignerLedger(
                tx_hash=entry.tx_hash,
                wallet=entry.wallet,
                chain_id=entry.chain_id,
                nonce=entry.nonce,
                purpose=entry.purpose,
                raw_tx=entry.raw_tx,
                create_time=utcnow(),
            )
        )
        self._session.flush()
        self.add_items(entry.tx_hash, entry.wallet, entry.nonce, entry.withdrawal_ids)

    def add_items(self, tx_hash: str, wallet: str, nonce: int, ids: Collection[str]) -> None:
        """Record that `tx_hash` (already in the ledger) also pays these withdrawals."""
        present = self._items_of(tx_hash)
        for withdrawal_id in sorted(set(ids) - present):
            self._session.add(
                SignerLedgerItem(
                    tx_hash=tx_hash, withdrawal_id=withdrawal_id, wallet=wallet, nonce=nonce
                )
            )
        self._session.flush()


class Ledger:
    """Opens the one transaction each signing request runs in."""

    def __init__(self, engine: Engine) -> None:
        self.sessions: sessionmaker[Session] = make_sessionmaker(engine)

    @contextmanager
    def transaction(self) -> Iterator[LedgerTransaction]:
        """A transaction that commits when the block ends normally and rolls back otherwise."""
        with self.sessions.begin() as session:
            yield LedgerTransaction(session)
