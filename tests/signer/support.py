"""A real signer (gRPC) in a background thread, and the rows its policy reads, inserted
directly through the models."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from assetwithdrawal.signer.v1 import signer_pb2, signer_pb2_grpc
from svc_signer.keys import KeyBackend
from svc_signer.server import SignerServer
from svc_signer.settings import SignerSettings
from withdrawal_shared.chain.erc20 import encode_transfer
from withdrawal_shared.db.api_keys import ensure_partner
from withdrawal_shared.db.models import (
    HotWallet,
    PayoutTransaction,
    SignerLedger,
    SignerLedgerItem,
    Token,
    Withdrawal,
)
from withdrawal_shared.db.transitions import utcnow
from withdrawal_shared.ids import new_ulid
from withdrawal_shared.states import PayoutState

T = TypeVar("T")
CHAIN = "polygon"
PARTNER = "signer-tests"


class RunningSigner:
    """SignerServer on port 0 in its own event loop thread, with a blocking stub."""

    def __init__(
        self,
        settings: SignerSettings,
        backend: KeyBackend | Sequence[KeyBackend] | None = None,
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server = SignerServer(settings, backend)
        self.run(self.server.start())
        self.target = f"127.0.0.1:{self.server.grpc_port}"
        self.channel = grpc.insecure_channel(self.target)
        self.stub = signer_pb2_grpc.SignerServiceStub(self.channel)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self.server.ledger.sessions

    def close(self) -> None:
        self.channel.close()
        self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass(frozen=True)
class Payable:
    """A withdrawal row as inserted: what a payout item must claim."""

    id: str
    recipient: str
    amount: int
    token: str


def fresh_address() -> str:
    return "0x" + secrets.token_hex(20)


class SignerWorld:
    """Tokens, withdrawals and the hot wallet row for one signer, plus request builders."""

    _nonces = itertools.count(1000)

    def __init__(self, sessions: sessionmaker[Session], wallet: str) -> None:
        self.sessions = sessions
        self.wallet = wallet
        with sessions.begin() as session:
            ensure_partner(session, PARTNER)
            if session.get(HotWallet, wallet.lower()) is None:
                session.add(
                    HotWallet(address=wallet.lower(), chain=CHAIN, next_nonce=0, enabled=True)
                )
        self.token = self.add_token()

    def nonce(self) -> int:
        """A nonce no other test in the session uses."""
        return next(self._nonces)

    def add_token(self, *, enabled: bool = True) -> str:
        contract = fresh_address()
        with self.sessions.begin() as session:
            session.add(
                Token(
                    chain=CHAIN,
                    symbol=f"T{secrets.token_hex(4)}",
                    contract_address=contract,
                    decimals=6,
                    max_amount_base_units=10**15,
                    enabled=enabled,
                )
            )
        return contract

    def add_withdrawal(
        self,
        *,
        state: str = "QUEUED",
        amount: int = 12_500_000,
        recipient: str | None = None,
        token: str | None = None,
    ) -> Payable:
        contract = token or self.token
        recipient = (recipient or fresh_address()).lower()
        withdrawal_id = new_ulid()
        now = utcnow()
        with self.sessions.begin() as session:
            token_id = session.scalar(select(Token.id).where(Token.contract_address == contract))
            assert token_id is not None
            session.add(
                Withdrawal(
                    id=withdrawal_id,
                    partner_id=PARTNER,
                    request_id=withdrawal_id,
                    request_fingerprint="0" * 64,
                    client_reference="",
                    chain=CHAIN,
                    token_id=token_id,
                    recipient=recipient,
                    amount=amount,
                    priority="STANDARD",
                    state=state,
                    state_reason="",
                    state_message="",
                    tx_hash=None,
                    fee_wei=None,
                    confirmations=0,
                    version=1,
                    audit_head="",
                    create_time=now,
                    update_time=now,
                    end_time=None,
                    payout_tx_id=None,
                )
            )
        return Payable(withdrawal_id, recipient, amount, contract)

    def payout(
        self,
        withdrawal: Payable,
        *,
        nonce: int,
        purpose: int = signer_pb2.PURPOSE_PAYOUT,
        max_fee: int = 60_000_000_000,
        tip: int = 30_000_000_000,
        wallet: str | None = None,
        chain_id: int = 137,
        to: str | None = None,
        data: bytes | None = None,
        items: list[signer_pb2.PayoutItem] | None = None,
        value: str = "0",
    ) -> signer_pb2.SignTransactionRequest:
        """A payout of `withdrawal` by ERC-20 transfer; any field can be overridden."""
        return signer_pb2.SignTransactionRequest(
            wallet_address=wallet or self.wallet,
            chain_id=chain_id,
            nonce=nonce,
            to_address=to or withdrawal.token,
            data=encode_transfer(withdrawal.recipient, withdrawal.amount) if data is None else data,
            value_wei=value,
            gas_limit=90_000,
            max_fee_per_gas_wei=str(max_fee),
            max_priority_fee_per_gas_wei=str(tip),
            purpose=purpose,  # type: ignore[arg-type]
            items=[item_of(withdrawal)] if items is None else items,
        )

    def reserve(
        self,
        nonce: int,
        *,
        state: str = PayoutState.RESERVED,
        tx_hash: str | None = None,
        receipt_status: int | None = None,
    ) -> None:
        """The processor's payout row holding (this wallet, `nonce`), as `Payouts.reserve`
        leaves it (RESERVED) or in another state (with the monitor's `tx_hash` and
        `receipt_status` for a settled one)."""
        payout_id = new_ulid()
        now = utcnow()
        with self.sessions.begin() as session:
            session.add(
                PayoutTransaction(
                    id=payout_id,
                    chain=CHAIN,
                    wallet=self.wallet.lower(),
                    nonce=nonce,
                    to_address=self.token,
                    raw_tx=b"",
                    tx_hash=tx_hash or f"reserved:{payout_id}",
                    receipt_status=receipt_status,
                    gas_limit=90_000,
                    max_fee_per_gas=90_000_000_000,
                    max_priority_fee_per_gas=40_000_000_000,
                    state=state,
                    create_time=now,
                    update_time=now,
                )
            )

    def nonce_release(
        self, *, nonce: int, data: bytes = b"", reserve: bool = True
    ) -> signer_pb2.SignTransactionRequest:
        """A release of `nonce` as `Payouts.release_nonce` asks for it; with `reserve` the
        processor's RESERVED payout row at that nonce is inserted first."""
        if reserve:
            self.reserve(nonce)
        return signer_pb2.SignTransactionRequest(
            wallet_address=self.wallet,
            chain_id=137,
            nonce=nonce,
            to_address=self.wallet,
            data=data,
            value_wei="0",
            gas_limit=21_000,
            max_fee_per_gas_wei="90000000000",
            max_priority_fee_per_gas_wei="40000000000",
            purpose=signer_pb2.PURPOSE_NONCE_RELEASE,
        )

    def ledger_at(self, nonce: int) -> list[SignerLedger]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(SignerLedger).where(
                        SignerLedger.wallet == self.wallet.lower(), SignerLedger.nonce == nonce
                    )
                )
            )

    def items_of(self, withdrawal_id: str) -> list[SignerLedgerItem]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(SignerLedgerItem).where(SignerLedgerItem.withdrawal_id == withdrawal_id)
                )
            )


def item_of(withdrawal: Payable, **overrides: str) -> signer_pb2.PayoutItem:
    fields = {
        "withdrawal_id": withdrawal.id,
        "recipient_address": withdrawal.recipient,
        "amount_base_units": str(withdrawal.amount),
        "token_address": withdrawal.token,
        **overrides,
    }
    return signer_pb2.PayoutItem(**fields)
