"""The stack's bootstrap on a real anvil and SQLite: what it writes; a re-run is a no-op."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from sqlalchemy import select
from web3 import Web3

from devstack.anvil import AnvilProcess, revert, snapshot
from devstack.bootstrap import (
    DEV_ADMINS,
    DEV_PARTNER,
    HOT_WALLET_NATIVE,
    HOT_WALLET_TOKENS,
    BootstrapError,
    BootstrapResult,
    bootstrap,
)
from devstack.safe import execute_safe_tx
from withdrawal_shared.chain.contracts import balance_of
from withdrawal_shared.chain.payout import encode_set_operator, payout_vault_contract
from withdrawal_shared.chain.safe import safe_nonce, safe_owners, safe_threshold
from withdrawal_shared.chain.safe_tx import SafeTx
from withdrawal_shared.chain.types import ChecksumAddress
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.migrate import upgrade
from withdrawal_shared.db.models import HotWallet, SafeOwner, SafeTreasury, SystemAddress, Token
from withdrawal_shared.db.operators import Role, operator_for_credential

pytestmark = pytest.mark.chain


@pytest.fixture(scope="module")
def anvil() -> Iterator[AnvilProcess]:
    with AnvilProcess() as node:  # automine: each transaction mined at once
        yield node


def test_bootstrap_registers_funds_and_is_idempotent(anvil: AnvilProcess, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    upgrade(url)
    w3 = anvil.web3()
    deployer = anvil.accounts[0]
    hot = Web3.to_checksum_address(Account.create().address)
    messages: list[str] = []

    first = bootstrap(w3, deployer, url, [hot], progress=messages.append)
    assert first.token_deployed and not first.api_key_reused
    assert first.partner_id == DEV_PARTNER and first.api_key.startswith("awk_")
    assert w3.eth.get_balance(hot) == HOT_WALLET_NATIVE
    assert balance_of(w3, first.token_address, hot) == HOT_WALLET_TOKENS
    assert any("deploying" in m for m in messages)
    assert all(first.api_key not in m for m in messages)
    assert len(first.admin_credentials) == 2
    assert all(c.startswith("awo_") for c in first.admin_credentials)

    sessions = make_sessionmaker(make_engine(url, pool_size=1))
    with sessions() as session:
        token = session.scalars(
            select(Token).where(Token.chain == "polygon", Token.symbol == "USDC")
        ).one()
        assert token.contract_address == first.token_address.lower()
        wallet = session.get(HotWallet, hot.lower())
        assert wallet is not None and wallet.next_nonce == 0 and wallet.enabled
        kinds = {a.address: a.kind for a in session.scalars(select(SystemAddress))}
    assert kinds[hot.lower()] == "hot_wallet"
    assert kinds[first.token_address.lower()] == "token"
    assert kinds[deployer.address.lower()] == "treasury"

    block = w3.eth.block_number
    second = bootstrap(
        w3,
        deployer,
        url,
        [hot],
        previous_api_key=first.api_key,
        previous_admin_credentials=first.admin_credentials,
    )
    assert second.admin_credentials == first.admin_credentials
    assert not second.token_deployed and second.token_address == first.token_address
    assert second.api_key_reused and second.api_key == first.api_key
    assert w3.eth.block_number == block, "a re-run sent transactions"

    third = bootstrap(w3, deployer, url, [hot], previous_api_key="awk_00000000_forged")
    assert not third.api_key_reused and third.api_key != first.api_key
    assert third.admin_credentials[0] != first.admin_credentials[0]  # the old still works
    with sessions() as session:
        for credential, operator_id in zip(third.admin_credentials, DEV_ADMINS, strict=True):
            identity = operator_for_credential(session, credential)
            assert identity is not None and identity.operator_id == operator_id
            assert Role.ADMIN in identity.roles


def test_bootstrap_hands_the_vault_to_a_treasury_safe(anvil: AnvilProcess, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    upgrade(url)
    w3 = anvil.web3()
    chain_snapshot = snapshot(w3)
    try:
        deployer = anvil.accounts[0]
        owners = [anvil.accounts[i] for i in (1, 2, 3)]
        hot = Web3.to_checksum_address(Account.create().address)

        def run(wallets: list[ChecksumAddress]) -> BootstrapResult:
            return bootstrap(
                w3,
                deployer,
                url,
                wallets,
                treasury_safe_owners=[o.address for o in owners],
                treasury_safe_threshold=2,
            )

        first = run([hot])
        safe, vault_address = first.treasury_safe, first.payout_vault
        assert safe is not None and vault_address is not None
        vault = payout_vault_contract(w3, vault_address)
        assert vault.functions.owner().call() == safe
        assert vault.functions.operators(safe).call() is True
        assert vault.functions.operators(hot).call() is True
        assert sorted(safe_owners(w3, safe)) == sorted(o.address for o in owners)
        assert safe_threshold(w3, safe) == 2

        sessions = make_sessionmaker(make_engine(url, pool_size=1))
        with sessions() as session:
            row = session.get(SafeTreasury, "polygon")
            assert row is not None and row.address == safe.lower() and row.threshold == 2
            stored = {o.owner_address for o in session.scalars(select(SafeOwner))}
            assert stored == {o.address.lower() for o in owners}
            system = session.get(SystemAddress, safe.lower())
            assert system is not None and system.kind == "treasury_safe"

        block = w3.eth.block_number
        again = run([hot])
        assert again.treasury_safe == safe and again.payout_vault == vault_address
        assert w3.eth.block_number == block, "a re-run sent transactions"

        # Only the Safe's owners can change the vault now: 2 of 3 signatures make an operator.
        newcomer = Web3.to_checksum_address(Account.create().address)
        with pytest.raises(BootstrapError, match="treasury Safe"):
            run([hot, newcomer])
        tx = SafeTx.call(vault_address, encode_set_operator(newcomer), safe_nonce(w3, safe))
        keys = [owners[0].private_key, owners[2].private_key]
        execute_safe_tx(w3, safe, tx, keys, deployer.private_key)
        third = run([hot, newcomer])
        assert third.treasury_safe == safe and newcomer in third.hot_wallets
    finally:
        assert revert(w3, chain_snapshot)
