"""The double-payment ledger's one exception for a single transfer: a withdrawal already
signed at one nonce may be signed at another only when the monitor has settled the first
nonce, at the confirmation depth, as consumed by a transaction that did not pay it (REVERTED
with receipt status 0, or CONFIRMED without the withdrawal among its ledger items). Anything
short of that (still in flight, mined but not yet deep enough, confirmed and paying it) stays
refused."""

from __future__ import annotations

import secrets

import grpc
import pytest

from tests.signer.support import RunningSigner, SignerWorld
from tests.support.requests import rich_error
from withdrawal_shared.states import PayoutState


def _refusal(signer: RunningSigner, request: object) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        signer.stub.SignTransaction(request, timeout=30)
    code, info, _ = rich_error(caught.value)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    return info.reason


def test_a_nonce_settled_as_reverted_lets_the_withdrawal_be_paid_at_another(
    signer: RunningSigner, world: SignerWorld
) -> None:
    withdrawal = world.add_withdrawal()
    first, second = world.nonce(), world.nonce()
    signed = signer.stub.SignTransaction(world.payout(withdrawal, nonce=first), timeout=30)

    # Mined and reverted, but not yet at the depth: a reorganisation could still mine it.
    world.reserve(first, state=PayoutState.MINED, tx_hash=signed.transaction_hash, receipt_status=0)
    assert _refusal(signer, world.payout(withdrawal, nonce=second)) == (
        "ALREADY_SIGNED_AT_OTHER_NONCE"
    )
    assert world.ledger_at(second) == []

    # Settled at the depth (here its replacement at the same nonce): the nonce is consumed
    # by a transaction that paid nothing.
    world.reserve(
        first, state=PayoutState.REVERTED, tx_hash="0x" + secrets.token_hex(32), receipt_status=0
    )
    again = signer.stub.SignTransaction(world.payout(withdrawal, nonce=second), timeout=30)
    assert again.transaction_hash != signed.transaction_hash
    assert sorted(i.nonce for i in world.items_of(withdrawal.id)) == [first, second]


def test_a_reverted_row_without_a_receipt_status_is_not_trusted(
    signer: RunningSigner, world: SignerWorld
) -> None:
    """REVERTED written before receipts carried a status (at the first receipt, not at the
    depth) proves nothing."""
    withdrawal = world.add_withdrawal()
    first, second = world.nonce(), world.nonce()
    signed = signer.stub.SignTransaction(world.payout(withdrawal, nonce=first), timeout=30)
    world.reserve(first, state=PayoutState.REVERTED, tx_hash=signed.transaction_hash)
    assert _refusal(signer, world.payout(withdrawal, nonce=second)) == (
        "ALREADY_SIGNED_AT_OTHER_NONCE"
    )


def test_a_nonce_confirmed_by_a_release_lets_the_withdrawal_be_paid_at_another(
    signer: RunningSigner, world: SignerWorld
) -> None:
    withdrawal = world.add_withdrawal()
    first, second = world.nonce(), world.nonce()
    signer.stub.SignTransaction(world.payout(withdrawal, nonce=first), timeout=30)
    # The payout at `first` was never sent; a nonce release took the nonce and confirmed.
    release = signer.stub.SignTransaction(world.nonce_release(nonce=first), timeout=30)
    assert _refusal(signer, world.payout(withdrawal, nonce=second)) == (
        "ALREADY_SIGNED_AT_OTHER_NONCE"
    )  # the release is signed, not yet known to be mined
    world.reserve(
        first, state=PayoutState.CONFIRMED, tx_hash=release.transaction_hash, receipt_status=1
    )
    signer.stub.SignTransaction(world.payout(withdrawal, nonce=second), timeout=30)
    assert sorted(i.nonce for i in world.items_of(withdrawal.id)) == [first, second]


def test_a_nonce_confirmed_by_a_transaction_paying_it_stays_refused(
    signer: RunningSigner, world: SignerWorld
) -> None:
    withdrawal = world.add_withdrawal()
    first, second = world.nonce(), world.nonce()
    signed = signer.stub.SignTransaction(world.payout(withdrawal, nonce=first), timeout=30)
    world.reserve(
        first, state=PayoutState.CONFIRMED, tx_hash=signed.transaction_hash, receipt_status=1
    )
    assert _refusal(signer, world.payout(withdrawal, nonce=second)) == (
        "ALREADY_SIGNED_AT_OTHER_NONCE"
    )
    assert world.ledger_at(second) == []
