"""More than one hot wallet per chain: one signer holding several keys (keystore files, or
several labelled key pairs on one PKCS#11 token), each wallet with its own nonce sequence. The
signer signs with the key of the requested wallet, refuses any other, and lists them all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from eth_account import Account

from assetwithdrawal.signer.v1 import signer_pb2
from svc_signer.keys import KeyRing, backends_from_env
from svc_signer.keys.keystore import KeystoreBackend, create_keystore, keystore_paths
from svc_signer.keys.softhsm import SoftHsmToken, provision_softhsm
from svc_signer.settings import SignerSettings
from tests.signer.support import RunningSigner, SignerWorld, fresh_address
from tests.support.requests import rich_error

PASSWORD = "two-wallets-password"


def _keystores(directory: Path, count: int) -> list[Path]:
    """`count` keystores laid out as SIGNER_KEYSTORE_COUNT expects (fast pbkdf2 ones)."""
    paths = keystore_paths(directory / "keystore.json", count)
    for path in paths:
        create_keystore(path, PASSWORD, kdf="pbkdf2", iterations=2)
    return paths


@pytest.fixture(scope="module")
def two_keys(tmp_path_factory: pytest.TempPathFactory) -> list[KeystoreBackend]:
    paths = _keystores(tmp_path_factory.mktemp("two-keys"), 2)
    return [KeystoreBackend.load(path, PASSWORD) for path in paths]


@pytest.fixture(scope="module")
def two_wallet_signer(db_url: str, two_keys: list[KeystoreBackend]) -> Iterator[RunningSigner]:
    """A SignerServer holding both keystore keys (a sequence of backends passed in)."""
    settings = SignerSettings(database_url=db_url, grpc_port=0, shutdown_grace_seconds=1.0)
    running = RunningSigner(settings, two_keys)
    yield running
    running.close()


@pytest.fixture(scope="module")
def worlds(two_wallet_signer: RunningSigner) -> list[SignerWorld]:
    return [
        SignerWorld(two_wallet_signer.sessions, address)
        for address in two_wallet_signer.server.keys.addresses
    ]


def test_keystore_paths_sit_beside_the_first() -> None:
    assert keystore_paths(Path("/k/keystore.json"), 3) == [
        Path("/k/keystore.json"),
        Path("/k/keystore-1.json"),
        Path("/k/keystore-2.json"),
    ]


def test_list_wallets_lists_both(
    two_wallet_signer: RunningSigner, two_keys: list[KeystoreBackend]
) -> None:
    listed = two_wallet_signer.stub.ListWallets(signer_pb2.ListWalletsRequest(), timeout=10)
    assert [(w.address, w.backend) for w in listed.wallets] == [
        (key.address, "keystore") for key in two_keys
    ]
    assert len({w.address for w in listed.wallets}) == 2
    assert two_wallet_signer.server.backend is two_keys[0]


def test_each_wallet_signs_with_its_own_key(
    two_wallet_signer: RunningSigner, worlds: list[SignerWorld]
) -> None:
    """The same nonce on both wallets is two independent transactions: each recovers to the
    wallet it was requested for, and each is in the ledger under that wallet."""
    nonce = worlds[0].nonce()
    for world in worlds:
        withdrawal = world.add_withdrawal()
        response = two_wallet_signer.stub.SignTransaction(
            world.payout(withdrawal, nonce=nonce), timeout=30
        )
        assert Account.recover_transaction(response.raw_transaction) == world.wallet
        (row,) = world.ledger_at(nonce)
        assert row.tx_hash == response.transaction_hash
        release = two_wallet_signer.stub.SignTransaction(
            world.nonce_release(nonce=world.nonce()), timeout=30
        )
        assert Account.recover_transaction(release.raw_transaction) == world.wallet


def test_wallet_address_in_any_case_picks_its_key(
    two_wallet_signer: RunningSigner, worlds: list[SignerWorld]
) -> None:
    world = worlds[1]
    request = world.payout(world.add_withdrawal(), nonce=world.nonce(), wallet=world.wallet.lower())
    response = two_wallet_signer.stub.SignTransaction(request, timeout=30)
    assert Account.recover_transaction(response.raw_transaction) == world.wallet


def test_unknown_wallet_is_still_refused(
    two_wallet_signer: RunningSigner, worlds: list[SignerWorld]
) -> None:
    stranger = fresh_address()
    request = worlds[0].payout(worlds[0].add_withdrawal(), nonce=worlds[0].nonce(), wallet=stranger)
    with pytest.raises(grpc.RpcError) as caught:
        two_wallet_signer.stub.SignTransaction(request, timeout=30)
    code, info, _ = rich_error(caught.value)
    assert (code, info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "UNKNOWN_WALLET")
    assert info.metadata["wallet"] == stranger


def test_a_withdrawal_signed_by_one_wallet_is_refused_to_the_other(
    two_wallet_signer: RunningSigner, worlds: list[SignerWorld]
) -> None:
    """The double-payment ledger spans wallets: a withdrawal bound to (wallet A, nonce) is
    never signed for wallet B, even at the same nonce number."""
    first, second = worlds
    withdrawal = first.add_withdrawal()
    nonce = first.nonce()
    two_wallet_signer.stub.SignTransaction(first.payout(withdrawal, nonce=nonce), timeout=30)
    with pytest.raises(grpc.RpcError) as caught:
        two_wallet_signer.stub.SignTransaction(
            first.payout(withdrawal, nonce=nonce, wallet=second.wallet), timeout=30
        )
    code, info, _ = rich_error(caught.value)
    assert (code, info.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ALREADY_SIGNED_AT_OTHER_NONCE",
    )
    assert info.metadata["wallet"] == first.wallet.lower()


def test_server_opens_keystore_count_keys_from_its_settings(db_url: str, tmp_path: Path) -> None:
    """SIGNER_KEYSTORE_COUNT=2: keystore.json and keystore-1.json, one password file."""
    paths = _keystores(tmp_path, 2)
    password_file = tmp_path / "keystore.password"
    password_file.write_text(PASSWORD, encoding="utf-8")
    settings = SignerSettings(
        database_url=db_url,
        grpc_port=0,
        shutdown_grace_seconds=1.0,
        keystore_path=str(paths[0]),
        keystore_count=2,
        keystore_password_file=str(password_file),
    )
    expected = [KeystoreBackend.load(path, PASSWORD).address for path in paths]
    running = RunningSigner(settings)
    try:
        listed = running.stub.ListWallets(signer_pb2.ListWalletsRequest(), timeout=10)
        assert [w.address for w in listed.wallets] == expected
    finally:
        running.close()


def test_backends_from_env_creates_every_keystore_once(tmp_path: Path) -> None:
    env = {
        "SIGNER_KEYSTORE_PATH": str(tmp_path / "signer" / "keystore.json"),
        "SIGNER_KEYSTORE_PASSWORD_FILE": str(tmp_path / "signer" / "keystore.password"),
        "SIGNER_KEYSTORE_COUNT": "2",
    }
    first = backends_from_env(env)
    assert sorted(p.name for p in (tmp_path / "signer").glob("*.json")) == [
        "keystore-1.json",
        "keystore.json",
    ]
    again = backends_from_env(env)
    assert [b.address for b in again] == [b.address for b in first]
    assert len({b.address for b in first}) == 2
    assert len(KeyRing(first)) == 2


def test_key_ring_refuses_the_same_wallet_twice(two_keys: list[KeystoreBackend]) -> None:
    with pytest.raises(Exception, match="same wallet"):
        KeyRing([two_keys[0], two_keys[0]])
    with pytest.raises(Exception, match="no key"):
        KeyRing([])
    ring = KeyRing(two_keys)
    assert ring.get(two_keys[1].address.lower()) is two_keys[1]
    assert ring.get(fresh_address()) is None


@pytest.mark.hsm
def test_pkcs11_key_labels_open_one_wallet_each(softhsm_token: SoftHsmToken) -> None:
    """SIGNER_PKCS11_KEY_LABELS: several key pairs on the same token, one wallet each."""
    good = softhsm_token.settings
    second = provision_softhsm(
        softhsm_token.conf_path.parent.parent,
        token_label=good.token_label,
        key_label="hot-wallet-test-2",
        pin=good.pin,
        so_pin="so-pin-for-tests",
    )
    env = {
        "SIGNER_KEY_BACKEND": "pkcs11",
        "SIGNER_PKCS11_PIN": good.pin,
        "SIGNER_PKCS11_TOKEN_LABEL": good.token_label,
        "SIGNER_PKCS11_KEY_LABELS": f"{good.key_label}, hot-wallet-test-2",
    }
    backends = backends_from_env(env)
    try:
        assert [b.address for b in backends] == [softhsm_token.address, second.address]
        assert {b.backend_name for b in backends} == {"pkcs11"}
    finally:
        KeyRing(backends).close()
