"""The stack's bootstrap on a real anvil and SQLite: what it writes; a re-run is a no-op."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from sqlalchemy import select
from web3 import Web3

from devstack.anvil import AnvilProcess
from devstack.bootstrap import (
    DEV_ADMINS,
    DEV_PARTNER,
    HOT_WALLET_NATIVE,
    HOT_WALLET_TOKENS,
    bootstrap,
)
from withdrawal_shared.chain.contracts import balance_of
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.migrate import upgrade
from withdrawal_shared.db.models import HotWallet, SystemAddress, Token
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
