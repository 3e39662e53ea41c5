"""The signer's policy for a nonce release (PURPOSE_NONCE_RELEASE): a NOOP self-transfer that
only fills a nonce whose payload must not be paid (`svc_processor.payouts.release_nonce`, its
only user). Exactly that is signed; every variation that could move value, call something,
burn more gas, or take a nonce the processor does not hold RESERVED is refused and leaves
nothing in the ledger."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from eth_account import Account
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from hexbytes import HexBytes

from assetwithdrawal.signer.v1 import signer_pb2
from tests.signer.support import RunningSigner, SignerWorld, fresh_address, item_of
from tests.support.requests import rich_error
from withdrawal_shared.chain.erc20 import encode_transfer
from withdrawal_shared.states import PayoutState

Request = signer_pb2.SignTransactionRequest


def test_exactly_the_noop_at_a_reserved_nonce_is_signed(
    signer: RunningSigner, world: SignerWorld
) -> None:
    nonce = world.nonce()
    response = signer.stub.SignTransaction(world.nonce_release(nonce=nonce), timeout=30)
    raw = response.raw_transaction
    assert Account.recover_transaction(raw) == world.wallet
    fields = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
    assert HexBytes(fields["to"]) == HexBytes(world.wallet)
    assert (fields["value"], bytes(fields["data"]), fields["gas"]) == (0, b"", 21_000)
    assert (fields["nonce"], fields["chainId"]) == (nonce, 137)
    (row,) = world.ledger_at(nonce)
    assert (row.purpose, row.tx_hash) == ("NONCE_RELEASE", response.transaction_hash)


def _value(r: Request, w: SignerWorld) -> None:
    r.value_wei = "1"


def _other_recipient(r: Request, w: SignerWorld) -> None:
    r.to_address = fresh_address()


def _token_as_recipient(r: Request, w: SignerWorld) -> None:
    r.to_address = w.token


def _one_byte_of_data(r: Request, w: SignerWorld) -> None:
    r.data = b"\x00"


def _transfer_calldata(r: Request, w: SignerWorld) -> None:
    r.data = encode_transfer(fresh_address(), 1)


def _one_more_gas(r: Request, w: SignerWorld) -> None:
    r.gas_limit = 21_001


def _payout_gas(r: Request, w: SignerWorld) -> None:
    r.gas_limit = 90_000


def _items(r: Request, w: SignerWorld) -> None:
    r.items.append(item_of(w.add_withdrawal()))


VARIATIONS: dict[str, Callable[[Request, SignerWorld], None]] = {
    "value": _value,
    "other recipient": _other_recipient,
    "token as recipient": _token_as_recipient,
    "one byte of data": _one_byte_of_data,
    "transfer calldata": _transfer_calldata,
    "21001 gas": _one_more_gas,
    "payout gas": _payout_gas,
    "items": _items,
}


def _assert_refused(signer: RunningSigner, world: SignerWorld, request: Request) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        signer.stub.SignTransaction(request, timeout=30)
    code, info, _ = rich_error(caught.value)
    assert (code, info.reason) == (grpc.StatusCode.PERMISSION_DENIED, "INVALID_NONCE_RELEASE")
    assert world.ledger_at(request.nonce) == []


@pytest.mark.parametrize("variation", list(VARIATIONS))
def test_every_variation_of_the_noop_is_refused(
    signer: RunningSigner, world: SignerWorld, variation: str
) -> None:
    request = world.nonce_release(nonce=world.nonce())  # reserved: only the variation is wrong
    VARIATIONS[variation](request, world)
    _assert_refused(signer, world, request)


def test_a_nonce_not_reserved_is_not_released(signer: RunningSigner, world: SignerWorld) -> None:
    _assert_refused(signer, world, world.nonce_release(nonce=world.nonce(), reserve=False))
    # A reservation at another nonce does not make this one releasable.
    nonce, other = world.nonce(), world.nonce()
    world.reserve(other)
    _assert_refused(signer, world, world.nonce_release(nonce=nonce, reserve=False))


@pytest.mark.parametrize(
    "state", [PayoutState.SIGNED, PayoutState.BROADCAST, PayoutState.CONFIRMED]
)
def test_a_nonce_whose_payout_is_signed_is_not_released(
    signer: RunningSigner, world: SignerWorld, state: PayoutState
) -> None:
    """Its payout may be on its way (or mined): a release there could only cancel it."""
    nonce = world.nonce()
    world.reserve(nonce, state=state)
    _assert_refused(signer, world, world.nonce_release(nonce=nonce, reserve=False))
