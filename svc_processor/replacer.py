"""Replacing stuck payout transactions at the same nonce (design invariants 1 and 4).

A payout in BROADCAST whose `broadcast_block` is `stuck_after_blocks` or more behind the head
(an EMERGENCY payout: `emergency_after_blocks`, one by default) and that has no receipt is
signed again by `Replacer.replace_stuck`: same wallet, nonce, to,
calldata, gas limit and items, with the tip and the max fee each raised by the configured
percentage (`bumped_fees`; the max fee at most the chain's cap). A SIGNED row the node refused
as underpriced (its `broadcast_block` set by `Payouts.broadcast`) is replaced the same way,
with a bump on top of its own fees. It is never re-signed under another nonce: while the cap
leaves no room for a 10% bump the payout simply keeps waiting.

Signing happens first (nothing locked); then ONE database transaction compare-and-sets the
old row to REPLACED, adds the new row (SIGNED, `replaces_id` = the old one) with copies of
the items, and points the withdrawals (which stay in their state) at it; then the new bytes
are broadcast through `Payouts.broadcast`. Whichever of the two hashes mines, the monitor
settles the withdrawals once (see svc_monitor/mining.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3
from web3.exceptions import TransactionNotFound, Web3Exception

from assetwithdrawal.signer.v1 import signer_pb2
from svc_processor.errors import SignerRefused, TransientError
from svc_processor.payouts import Kind, Payouts, safe_execution, sign_request
from svc_processor.signer_client import SignerClient
from withdrawal_shared.chain.fees import Fees
from withdrawal_shared.crash_points import crash_point
from withdrawal_shared.db.models import Chain, PayoutItem, PayoutTransaction, Withdrawal
from withdrawal_shared.db.transitions import Moved, utcnow
from withdrawal_shared.ids import new_ulid
from withdrawal_shared.metrics import PAYOUT_REPLACEMENTS
from withdrawal_shared.states import PayoutState, Priority

log = logging.getLogger(__name__)

MIN_BUMP_PCT = 10  # what geth-like nodes require of a replacement's tip and max fee


def raised(value: int, pct: int) -> int:
    """`value` raised by `pct` percent, rounded up (integers only)."""
    return -(-value * (100 + pct) // 100)


def bumped_fees(old: Fees, bump_pct: int, cap_wei: int) -> Fees | None:
    """The replacement's fees: tip and max fee each raised by `bump_pct` (at least
    MIN_BUMP_PCT), the max fee at most `cap_wei` and the tip at most the max fee. None when
    the cap leaves less than the MIN_BUMP_PCT a node requires of both."""
    pct = max(bump_pct, MIN_BUMP_PCT)
    max_fee = min(raised(old.max_fee_per_gas, pct), cap_wei)
    tip = min(raised(old.max_priority_fee_per_gas, pct), max_fee)
    if max_fee < raised(old.max_fee_per_gas, MIN_BUMP_PCT):
        return None
    if tip < raised(old.max_priority_fee_per_gas, MIN_BUMP_PCT):
        return None
    return Fees(max_fee_per_gas=max_fee, max_priority_fee_per_gas=tip)


class _Moved(Exception):
    """Internal: the stuck row changed state meanwhile (mined, replaced); roll back."""


class Replacer:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        w3: Web3,
        signer: SignerClient,
        payouts: Payouts,
        chain: str,
    ) -> None:
        self.sessions = sessions
        self.w3 = w3
        self.signer = signer
        self.payouts = payouts
        self.chain = chain

    def replace_stuck(
        self,
        stuck_after_blocks: int,
        bump_pct: int,
        *,
        emergency_after_blocks: int | None = None,
        only_emergency: bool = False,
    ) -> list[Moved]:
        """Replace every payout stuck for `stuck_after_blocks` blocks (an EMERGENCY payout:
        `emergency_after_blocks`, when given); the moves made (the withdrawals of a SIGNED row
        move to BROADCAST once its replacement is sent). `only_emergency` looks at EMERGENCY
        payouts alone (the batcher's frequent check; the head is read only when one is in
        flight)."""
        query = select(PayoutTransaction).where(
            PayoutTransaction.chain == self.chain,
            PayoutTransaction.kind != Kind.NONCE_RELEASE,
            PayoutTransaction.calldata.is_not(None),
            or_(
                PayoutTransaction.state == PayoutState.BROADCAST,
                (PayoutTransaction.state == PayoutState.SIGNED)
                & PayoutTransaction.broadcast_block.is_not(None),
            ),
        )
        if only_emergency:
            query = query.where(PayoutTransaction.priority == Priority.EMERGENCY.value)
        with self.sessions() as session:
            rows = session.scalars(
                query.order_by(PayoutTransaction.wallet, PayoutTransaction.nonce)
            ).all()
            chain = session.get(Chain, self.chain) if rows else None
        if chain is None:
            return []
        head = self.payouts.head()
        if head is None:
            return []
        moved: list[Moved] = []
        for row in rows:
            if row.broadcast_block is None:
                self._start_clock(row.id, head)  # broadcast before the column existed
                continue
            after = stuck_after_blocks
            if emergency_after_blocks is not None and row.priority == Priority.EMERGENCY:
                after = emergency_after_blocks
            if head - row.broadcast_block < after:
                continue
            with self.payouts.traced("processor replace stuck payout", row.id):
                moved.extend(self._replace(row, chain, bump_pct))
        return moved

    def _start_clock(self, payout_id: str, head: int) -> None:
        with self.sessions.begin() as session:
            session.execute(
                update(PayoutTransaction)
                .where(
                    PayoutTransaction.id == payout_id,
                    PayoutTransaction.broadcast_block.is_(None),
                )
                .values(broadcast_block=head)
            )

    def _nonce_taken(self, row: PayoutTransaction) -> bool | None:
        """Whether a transaction at the row's nonce is mined (its own or another one); None
        when the node does not answer."""
        try:
            self.w3.eth.get_transaction_receipt(row.tx_hash)  # type: ignore[arg-type]
            return True
        except TransactionNotFound:
            pass
        except (Web3Exception, ValueError, OSError):
            return None
        try:
            mined = self.w3.eth.get_transaction_count(
                Web3.to_checksum_address(row.wallet), "latest"
            )
        except (Web3Exception, ValueError, OSError):
            return None
        return int(mined) > row.nonce

    def _replace(self, row: PayoutTransaction, chain: Chain, bump_pct: int) -> list[Moved]:
        context = {"payout_tx_id": row.id, "wallet": row.wallet, "nonce": row.nonce}
        taken = self._nonce_taken(row)
        if taken is None or taken:
            return []  # mined (the monitor settles it) or the node is away: look again later
        old = Fees(row.max_fee_per_gas, row.max_priority_fee_per_gas)
        fees = bumped_fees(old, bump_pct, chain.max_fee_cap_wei)
        if fees is None:
            log.warning(
                "stuck payout cannot be replaced: the chain's fee cap leaves no 10% bump; "
                "waiting (it is never re-signed under another nonce)",
                extra={**context, "max_fee_per_gas": row.max_fee_per_gas},
            )
            return []
        assert row.calldata is not None
        with self.sessions() as session:
            items = session.scalars(
                select(PayoutItem)
                .where(PayoutItem.payout_tx_id == row.id)
                .order_by(PayoutItem.payout_number, PayoutItem.withdrawal_id)
            ).all()
            token = Payouts.token_address(session, [i.withdrawal_id for i in items])
        request = sign_request(
            row,
            chain.chain_id,
            row.calldata,
            fees,
            items,
            token,
            signer_pb2.PURPOSE_REPLACEMENT,
        )
        if row.kind == Kind.SAFE_EXEC:
            with self.sessions() as session:
                safe_execution(session, row, request)
            request.purpose = signer_pb2.PURPOSE_REPLACEMENT
        try:
            signed = self.signer.sign(request)
        except SignerRefused as refused:
            log.error(
                "signer refused a replacement; the stuck payout keeps waiting",
                extra={**context, "reason": refused.reason, "error": refused.message},
            )
            return []
        except TransientError as exc:
            log.warning("replacement not signed; retrying", extra={**context, "error": str(exc)})
            return []
        crash_point("processor.after_replacement_signed")
        new_id = new_ulid()
        try:
            self._store(row, items, new_id, signed.raw, signed.tx_hash.lower(), fees)
        except _Moved:
            log.info("stuck payout moved meanwhile; not replaced", extra=context)
            return []
        except IntegrityError:
            log.warning("replacement already stored", extra={**context, "tx_hash": signed.tx_hash})
            return []
        PAYOUT_REPLACEMENTS.add(1)
        log.warning(
            "stuck payout replaced at the same nonce",
            extra={
                **context,
                "replacement_id": new_id,
                "tx_hash": signed.tx_hash.lower(),
                "old_tx_hash": row.tx_hash,
                "max_fee_per_gas": fees.max_fee_per_gas,
                "max_priority_fee_per_gas": fees.max_priority_fee_per_gas,
            },
        )
        return self.payouts.broadcast(new_id)

    def _store(
        self,
        row: PayoutTransaction,
        items: Sequence[PayoutItem],
        new_id: str,
        raw: bytes,
        tx_hash: str,
        fees: Fees,
    ) -> None:
        now = utcnow()
        with self.sessions.begin() as session:
            # The compare-and-set first: the monitor marking the row MINED takes the same row
            # lock, so exactly one of the two wins.
            result = session.execute(
                update(PayoutTransaction)
                .where(PayoutTransaction.id == row.id, PayoutTransaction.state == row.state)
                .values(state=PayoutState.REPLACED, update_time=now)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise _Moved(row.id)
            session.add(
                PayoutTransaction(
                    id=new_id,
                    chain=row.chain,
                    wallet=row.wallet,
                    nonce=row.nonce,
                    to_address=row.to_address,
                    raw_tx=raw,
                    tx_hash=tx_hash,
                    gas_limit=row.gas_limit,
                    max_fee_per_gas=fees.max_fee_per_gas,
                    max_priority_fee_per_gas=fees.max_priority_fee_per_gas,
                    state=PayoutState.SIGNED,
                    create_time=now,
                    update_time=now,
                    kind=row.kind,
                    calldata=row.calldata,
                    replaces_id=row.id,
                    priority=row.priority,
                )
            )
            session.flush()
            for item in items:
                session.add(
                    PayoutItem(
                        payout_tx_id=new_id,
                        withdrawal_id=item.withdrawal_id,
                        payout_number=item.payout_number,
                        recipient=item.recipient,
                        amount=item.amount,
                    )
                )
            # No state change (they stay SIGNED or BROADCAST), so no audit row: only which
            # transaction currently pays them.
            session.execute(
                update(Withdrawal)
                .where(Withdrawal.payout_tx_id == row.id)
                .values(payout_tx_id=new_id, tx_hash=tx_hash)
                .execution_options(synchronize_session=False)
            )
