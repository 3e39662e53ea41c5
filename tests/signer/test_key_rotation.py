"""The hot signer's side of a key rotation (`svc_signer.key_states`): CreateWallet makes a new
key in the backend and holds it (also after a restart), RetireWallet retires one, a retired
key signs only what finishes its in-flight payouts and its one gas sweep, and a gas sweep goes
to the treasury Safe only, once. Real signers over gRPC, keystore and SoftHSM2 backends."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from eth_account import Account
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from hexbytes import HexBytes

from assetwithdrawal.signer.v1 import signer_pb2
from svc_signer import key_states
from svc_signer.keys.pkcs11_hsm import Pkcs11Backend
from svc_signer.keys.softhsm import SoftHsmToken
from svc_signer.settings import SignerSettings
from tests.signer.support import CHAIN, RunningSigner, SignerWorld, fresh_address
from tests.support.requests import rich_error
from withdrawal_shared.db.models import SafeTreasury
from withdrawal_shared.db.transitions import utcnow
from withdrawal_shared.errors import ApiError

ACTIVE, RETIRED = signer_pb2.Wallet.STATE_ACTIVE, signer_pb2.Wallet.STATE_RETIRED


@pytest.fixture(scope="module")
def settings(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> SignerSettings:
    base = tmp_path_factory.mktemp("rotating-signer")
    return SignerSettings(
        database_url=db_url,
        grpc_port=0,
        shutdown_grace_seconds=1.0,
        key_backend="keystore",
        keystore_path=str(base / "keystore.json"),
        keystore_password_file=str(base / "keystore.password"),
    )


@pytest.fixture(scope="module")
def hot(settings: SignerSettings) -> Iterator[RunningSigner]:
    """A hot signer that opens (and creates) its keys from its settings."""
    running = RunningSigner(settings)
    yield running
    running.close()


@pytest.fixture(scope="module")
def safe(hot: RunningSigner) -> str:
    """The chain's treasury Safe, as the bootstrap records it."""
    address = fresh_address()
    with hot.sessions.begin() as session:
        session.add(SafeTreasury(chain=CHAIN, address=address, threshold=2, create_time=utcnow()))
    return address


def wallets(signer: RunningSigner) -> dict[str, signer_pb2.Wallet]:
    listed = signer.stub.ListWallets(signer_pb2.ListWalletsRequest(), timeout=30).wallets
    return {w.address.lower(): w for w in listed}


def refused(call: object, request: object, reason: str) -> dict[str, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=60)  # type: ignore[operator]
    code, info, fields = rich_error(caught.value)
    if reason == "INVALID_ARGUMENT":
        assert code == grpc.StatusCode.INVALID_ARGUMENT and fields, (code, fields)
        return {}
    assert info.reason == reason, (code, info, fields)
    return dict(info.metadata)


def sweep(
    world: SignerWorld,
    safe: str,
    *,
    nonce: int,
    value: str = "1000000",
    max_fee: int = 40_000_000_000,
) -> signer_pb2.SignTransactionRequest:
    return signer_pb2.SignTransactionRequest(
        wallet_address=world.wallet,
        chain_id=137,
        nonce=nonce,
        to_address=safe,
        value_wei=value,
        gas_limit=30_000,
        max_fee_per_gas_wei=str(max_fee),
        max_priority_fee_per_gas_wei="30000000000",
        purpose=signer_pb2.PURPOSE_GAS_SWEEP,
    )


def test_create_wallet_holds_a_new_active_key_also_after_a_restart(
    hot: RunningSigner, settings: SignerSettings
) -> None:
    first = hot.server.backend.address.lower()
    created = hot.stub.CreateWallet(signer_pb2.CreateWalletRequest(request_id="rot-1"), timeout=60)
    new = created.address.lower()
    assert new != first and created.state == ACTIVE
    assert (created.backend, created.role) == ("keystore", signer_pb2.Wallet.ROLE_HOT)
    again = hot.stub.CreateWallet(signer_pb2.CreateWalletRequest(request_id="rot-1"), timeout=60)
    assert again.address.lower() == new  # the same request: the same key, nothing created
    listed = wallets(hot)
    assert set(listed) == {first, new} and listed[new].state == ACTIVE
    files = sorted(p.name for p in Path(settings.keystore_path).parent.glob("*.json"))
    assert len(files) == 2 and any("rotated" in name for name in files)
    # It signs with the new key, and a restarted signer holds it too.
    world = SignerWorld(hot.sessions, created.address)
    nonce = world.nonce()
    signed = hot.stub.SignTransaction(world.payout(world.add_withdrawal(), nonce=nonce), timeout=60)
    assert Account.recover_transaction(signed.raw_transaction).lower() == new
    restarted = RunningSigner(settings)
    try:
        assert set(wallets(restarted)) == {first, new}
    finally:
        restarted.close()
    refused(
        hot.stub.CreateWallet, signer_pb2.CreateWalletRequest(request_id=""), "INVALID_ARGUMENT"
    )


def test_a_retired_key_signs_only_what_finishes_its_in_flight_payouts(
    hot: RunningSigner,
) -> None:
    created = hot.stub.CreateWallet(signer_pb2.CreateWalletRequest(request_id="rot-2"), timeout=60)
    world = SignerWorld(hot.sessions, created.address)
    in_flight = world.add_withdrawal()
    signed_at = world.nonce()
    hot.stub.SignTransaction(world.payout(in_flight, nonce=signed_at), timeout=60)
    retired = hot.stub.RetireWallet(
        signer_pb2.RetireWalletRequest(address=created.address), timeout=60
    )
    assert retired.state == RETIRED
    assert wallets(hot)[created.address.lower()].state == RETIRED
    again = hot.stub.RetireWallet(
        signer_pb2.RetireWalletRequest(address=created.address), timeout=60
    )
    assert again.state == RETIRED
    # No new payout, at a new nonce or at the signed one for other withdrawals.
    fresh = world.nonce()
    metadata = refused(
        hot.stub.SignTransaction,
        world.payout(world.add_withdrawal(), nonce=fresh),
        "WALLET_RETIRED",
    )
    assert metadata["nonce"] == str(fresh)
    # The in-flight payout still finishes: a replacement at its nonce, a release of it.
    hot.stub.SignTransaction(
        world.payout(
            in_flight,
            nonce=signed_at,
            purpose=signer_pb2.PURPOSE_REPLACEMENT,
            max_fee=90_000_000_000,
            tip=45_000_000_000,
        ),
        timeout=60,
    )
    hot.stub.SignTransaction(world.nonce_release(nonce=signed_at), timeout=60)
    # Neither at a nonce it never signed at.
    refused(
        hot.stub.SignTransaction,
        world.payout(in_flight, nonce=fresh, purpose=signer_pb2.PURPOSE_REPLACEMENT),
        "WALLET_RETIRED",
    )
    refused(hot.stub.SignTransaction, world.nonce_release(nonce=fresh), "WALLET_RETIRED")
    # Its gas sweep is allowed, but only to a treasury Safe, and this chain has none yet.
    metadata = refused(
        hot.stub.SignTransaction, sweep(world, fresh_address(), nonce=fresh), "INVALID_GAS_SWEEP"
    )
    assert metadata["problem"] == "treasury"
    refused(
        hot.stub.RetireWallet,
        signer_pb2.RetireWalletRequest(address=fresh_address()),
        "UNKNOWN_WALLET",
    )


def test_a_gas_sweep_goes_to_the_treasury_once(hot: RunningSigner, safe: str) -> None:
    created = hot.stub.CreateWallet(signer_pb2.CreateWalletRequest(request_id="rot-3"), timeout=60)
    world = SignerWorld(hot.sessions, created.address)
    paid_at = world.nonce()
    hot.stub.SignTransaction(world.payout(world.add_withdrawal(), nonce=paid_at), timeout=60)
    hot.stub.RetireWallet(signer_pb2.RetireWalletRequest(address=created.address), timeout=60)
    nonce = world.nonce()
    variations: list[tuple[str, signer_pb2.SignTransactionRequest]] = []
    for problem, change in (
        ("to", {"to_address": fresh_address()}),
        ("data", {"data": b"\x00"}),
        ("value", {"value_wei": "0"}),
        ("gas", {"gas_limit": key_states.SWEEP_MAX_GAS + 1}),
    ):
        request = sweep(world, safe, nonce=nonce)
        for field, value in change.items():
            setattr(request, field, value)
        variations.append((problem, request))
    with_items = sweep(world, safe, nonce=nonce)
    with_items.items.append(
        signer_pb2.PayoutItem(
            withdrawal_id=world.add_withdrawal().id,
            recipient_address=fresh_address(),
            amount_base_units="1",
            token_address=world.token,
        )
    )
    variations.append(("items", with_items))
    variations.append(("nonce", sweep(world, safe, nonce=paid_at)))  # a payout's nonce
    for problem, request in variations:
        metadata = refused(hot.stub.SignTransaction, request, "INVALID_GAS_SWEEP")
        assert metadata["problem"] == problem
    assert world.ledger_at(nonce) == []
    # The sweep itself, from the retired key: a plain transfer to the Safe.
    signed = hot.stub.SignTransaction(sweep(world, safe, nonce=nonce), timeout=60)
    fields = TypedTransaction.from_bytes(HexBytes(signed.raw_transaction)).as_dict()
    assert (HexBytes(fields["to"]), fields["value"], bytes(fields["data"])) == (
        HexBytes(safe),
        1_000_000,
        b"",
    )
    (row,) = world.ledger_at(nonce)
    assert row.purpose == "GAS_SWEEP"
    # Its replacement at the same nonce, yes; a second sweep at another nonce, no.
    hot.stub.SignTransaction(
        sweep(world, safe, nonce=nonce, value="900000", max_fee=80_000_000_000), timeout=60
    )
    metadata = refused(
        hot.stub.SignTransaction,
        sweep(world, safe, nonce=world.nonce()),
        "GAS_SWEEP_ALREADY_SIGNED",
    )
    assert metadata["nonce"] == str(nonce)


def test_a_signer_given_its_keys_creates_none(db_url: str, hot: RunningSigner) -> None:
    given = RunningSigner(
        SignerSettings(database_url=db_url, grpc_port=0, shutdown_grace_seconds=1.0),
        hot.server.backend,
    )
    try:
        refused(
            given.stub.CreateWallet,
            signer_pb2.CreateWalletRequest(request_id="rot-given"),
            "KEY_CREATION_UNSUPPORTED",
        )
    finally:
        given.close()


def test_aws_kms_refuses_to_create_keys() -> None:
    with pytest.raises(ApiError) as caught:
        key_states.create_key({"SIGNER_KEY_BACKEND": "aws_kms"}, "rot-kms")
    assert caught.value.reason == "KEY_CREATION_UNSUPPORTED"
    assert "create the new key in AWS" in caught.value.message


def test_create_wallet_on_the_pkcs11_token(
    hsm_signer: RunningSigner, softhsm_token: SoftHsmToken
) -> None:
    created = hsm_signer.stub.CreateWallet(
        signer_pb2.CreateWalletRequest(request_id="rot-hsm"), timeout=60
    )
    assert created.backend == "pkcs11" and created.state == ACTIVE
    listed = wallets(hsm_signer)
    assert created.address.lower() in listed and len(listed) == 2
    with hsm_signer.sessions() as session:
        (record,) = [r for r in key_states.created_keys(session, CHAIN) if r.address in listed]
    assert record.locator.startswith(softhsm_token.settings.key_label + "-")
    with Pkcs11Backend.open(replace(softhsm_token.settings, key_label=record.locator)) as key:
        assert key.address.lower() == created.address.lower()
