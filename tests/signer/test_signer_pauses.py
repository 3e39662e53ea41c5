"""The signer's own check of the payout kill switch (`svc_signer/pauses.py`), on MariaDB and
SQLite: a first signature in a paused scope is refused (`PAUSED`) and leaves nothing in the
ledger; a replacement at the same nonce of the same withdrawals, a repeated request and a
nonce release are still signed; a withdrawal ON_HOLD `PAUSED` is never signed for."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy import select, update

from assetwithdrawal.signer.v1 import signer_pb2
from tests.signer.support import CHAIN, RunningSigner, SignerWorld
from tests.support.requests import rich_error
from withdrawal_shared.db.models import Token, Withdrawal
from withdrawal_shared.db.pauses import PauseScope, pause, resume
from withdrawal_shared.holds import HoldReason


@pytest.fixture
def paused_scope(world: SignerWorld) -> Iterator[PauseScope]:
    """The world's token paused for the test, resumed after."""
    with world.sessions.begin() as session:
        symbol = session.scalar(select(Token.symbol).where(Token.contract_address == world.token))
        assert symbol is not None
        scope = PauseScope(CHAIN, symbol)
        pause(session, scope, reason="test pause", actor="test")
    yield scope
    with world.sessions.begin() as session:
        resume(session, scope, actor="test")


def _refused(signer: RunningSigner, request: signer_pb2.SignTransactionRequest) -> dict[str, str]:
    with pytest.raises(grpc.RpcError) as refused:
        signer.stub.SignTransaction(request, timeout=30)
    code, info, _ = rich_error(refused.value)
    assert (code, info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PAUSED")
    return dict(info.metadata)


def test_a_new_payout_in_a_paused_scope_is_refused_and_recorded_nowhere(
    signer: RunningSigner, world: SignerWorld, paused_scope: PauseScope
) -> None:
    withdrawal = world.add_withdrawal()
    nonce = world.nonce()
    assert _refused(signer, world.payout(withdrawal, nonce=nonce)) == {"scope": paused_scope.key}
    assert world.ledger_at(nonce) == []
    # Another token of the chain is not paused.
    other = world.add_withdrawal(token=world.add_token())
    assert signer.stub.SignTransaction(world.payout(other, nonce=world.nonce()), timeout=30)


def test_what_was_signed_before_the_pause_is_repeated_and_replaced_at_its_nonce(
    signer: RunningSigner, world: SignerWorld
) -> None:
    withdrawal = world.add_withdrawal()
    nonce = world.nonce()
    first = signer.stub.SignTransaction(world.payout(withdrawal, nonce=nonce), timeout=30)
    with world.sessions.begin() as session:
        symbol = session.scalar(select(Token.symbol).where(Token.contract_address == world.token))
        assert symbol is not None
        scope = PauseScope(CHAIN, symbol)
        pause(session, scope, reason="test pause", actor="test")
    try:
        again = signer.stub.SignTransaction(world.payout(withdrawal, nonce=nonce), timeout=30)
        assert again.raw_transaction == first.raw_transaction
        bumped = signer.stub.SignTransaction(
            world.payout(
                withdrawal,
                nonce=nonce,
                purpose=signer_pb2.PURPOSE_REPLACEMENT,
                max_fee=70_000_000_000,
                tip=35_000_000_000,
            ),
            timeout=30,
        )
        assert bumped.transaction_hash != first.transaction_hash
        # The same withdrawal at another nonce would be a new payment: refused (by the
        # double-payment rule, which is checked first).
        elsewhere = world.nonce()
        with pytest.raises(grpc.RpcError):
            signer.stub.SignTransaction(world.payout(withdrawal, nonce=elsewhere), timeout=30)
        assert world.ledger_at(elsewhere) == []
        # A nonce release is signed whatever is paused.
        release = world.nonce()
        assert signer.stub.SignTransaction(world.nonce_release(nonce=release), timeout=30)
        assert len(world.ledger_at(release)) == 1
    finally:
        with world.sessions.begin() as session:
            resume(session, scope, actor="test")


def test_a_withdrawal_on_hold_paused_is_never_signed_for(
    signer: RunningSigner, world: SignerWorld
) -> None:
    withdrawal = world.add_withdrawal(state="ON_HOLD")
    with world.sessions.begin() as session:
        session.execute(
            update(Withdrawal)
            .where(Withdrawal.id == withdrawal.id)
            .values(state_reason=HoldReason.PAUSED.value)
        )
    nonce = world.nonce()
    assert _refused(signer, world.payout(withdrawal, nonce=nonce)) == {
        "withdrawal_id": withdrawal.id
    }
    assert world.ledger_at(nonce) == []
