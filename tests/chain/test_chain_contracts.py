"""The test stablecoin on a real anvil: deploy, mint, transfer, pause, unpause, fund with POL."""

from __future__ import annotations

import pytest
from eth_account import Account
from web3 import Web3

from devstack.anvil import AnvilProcess
from devstack.stablecoin import deploy_test_stablecoin, mint, pause, transfer, unpause
from devstack.transactions import TransactionReverted, fund_native
from withdrawal_shared.chain.contracts import (
    TEST_STABLECOIN,
    balance_of,
    decimals,
    is_paused,
    load_artifact,
    stablecoin_contract,
)
from withdrawal_shared.chain.types import BaseUnits, ChecksumAddress, PrivateKey, Wei

pytestmark = pytest.mark.chain

ONE_USDC = BaseUnits(1_000_000)


def _fresh_account() -> tuple[ChecksumAddress, PrivateKey]:
    account = Account.create()
    return Web3.to_checksum_address(account.address), PrivateKey(account.key.to_0x_hex())


@pytest.fixture
def token(w3: Web3, anvil: AnvilProcess) -> ChecksumAddress:
    return deploy_test_stablecoin(w3, anvil.accounts[0].private_key)


def test_deployed_token_is_a_six_decimal_stablecoin_owned_by_the_deployer(
    w3: Web3, anvil: AnvilProcess, token: ChecksumAddress
) -> None:
    contract = stablecoin_contract(w3, token)
    assert decimals(w3, token) == 6
    assert contract.functions.name().call() == "USD Coin"
    assert contract.functions.symbol().call() == "USDC"
    assert contract.functions.owner().call() == anvil.accounts[0].address
    assert contract.functions.totalSupply().call() == 0
    assert not is_paused(w3, token)
    # No immutables: the runtime code on chain is exactly the committed artifact's.
    deployed = w3.eth.get_code(token).to_0x_hex()
    assert deployed == load_artifact(TEST_STABLECOIN).deployed_bytecode


def test_custom_name_and_symbol(w3: Web3, anvil: AnvilProcess) -> None:
    token = deploy_test_stablecoin(w3, anvil.accounts[0].private_key, "Tether USD", "USDT")
    contract = stablecoin_contract(w3, token)
    assert contract.functions.symbol().call() == "USDT"
    assert decimals(w3, token) == 6


def test_mint_then_transfer_to_a_fresh_address(
    w3: Web3, anvil: AnvilProcess, token: ChecksumAddress
) -> None:
    owner, holder = anvil.accounts[0], anvil.accounts[1]
    fresh, _ = _fresh_account()
    receipt = mint(w3, token, owner.private_key, holder.address, BaseUnits(250 * ONE_USDC))
    assert receipt["status"] == 1
    assert balance_of(w3, token, holder.address) == 250 * ONE_USDC

    transfer(w3, token, holder.private_key, fresh, BaseUnits(123_456_789))
    assert balance_of(w3, token, fresh) == 123_456_789
    assert balance_of(w3, token, holder.address) == 250 * ONE_USDC - 123_456_789
    assert stablecoin_contract(w3, token).functions.totalSupply().call() == 250 * ONE_USDC


def test_only_the_owner_can_mint(w3: Web3, anvil: AnvilProcess, token: ChecksumAddress) -> None:
    intruder = anvil.accounts[2]
    with pytest.raises(TransactionReverted) as caught:
        mint(w3, token, intruder.private_key, intruder.address, ONE_USDC)
    assert caught.value.reason == f"OwnableUnauthorizedAccount({intruder.address})"
    assert balance_of(w3, token, intruder.address) == 0


def test_fund_native_lets_a_fresh_account_pay_its_own_gas(
    w3: Web3, anvil: AnvilProcess, token: ChecksumAddress
) -> None:
    owner = anvil.accounts[0]
    fresh, fresh_key = _fresh_account()
    recipient, _ = _fresh_account()
    mint(w3, token, owner.private_key, fresh, BaseUnits(10 * ONE_USDC))
    one_pol = Wei(10**18)
    fund_native(w3, owner.private_key, fresh, one_pol)
    assert w3.eth.get_balance(fresh) == one_pol

    receipt = transfer(w3, token, fresh_key, recipient, BaseUnits(3 * ONE_USDC))
    assert receipt["from"] == fresh
    assert balance_of(w3, token, recipient) == 3 * ONE_USDC
    assert w3.eth.get_balance(fresh) < one_pol  # gas was paid in POL


def test_paused_token_reverts_transfers_until_unpaused(
    w3: Web3, anvil: AnvilProcess, token: ChecksumAddress
) -> None:
    owner, holder = anvil.accounts[0], anvil.accounts[1]
    recipient, _ = _fresh_account()
    mint(w3, token, owner.private_key, holder.address, BaseUnits(5 * ONE_USDC))

    pause(w3, token, owner.private_key)
    assert is_paused(w3, token)
    # Estimation reverts: nothing is sent, and the error names the token's custom error.
    with pytest.raises(TransactionReverted) as estimated:
        transfer(w3, token, holder.private_key, recipient, ONE_USDC)
    assert estimated.value.reason == "EnforcedPause()"
    assert estimated.value.tx_hash is None
    # With a fixed gas limit the transaction is mined and fails on chain (status 0).
    with pytest.raises(TransactionReverted) as mined:
        transfer(w3, token, holder.private_key, recipient, ONE_USDC, gas=100_000)
    assert mined.value.receipt is not None
    assert mined.value.receipt["status"] == 0
    assert mined.value.tx_hash is not None
    assert balance_of(w3, token, recipient) == 0
    with pytest.raises(TransactionReverted, match="EnforcedPause"):
        mint(w3, token, owner.private_key, recipient, ONE_USDC)

    unpause(w3, token, owner.private_key)
    assert not is_paused(w3, token)
    transfer(w3, token, holder.private_key, recipient, ONE_USDC)
    assert balance_of(w3, token, recipient) == ONE_USDC


def test_only_the_owner_can_pause(w3: Web3, anvil: AnvilProcess, token: ChecksumAddress) -> None:
    with pytest.raises(TransactionReverted, match="OwnableUnauthorizedAccount"):
        pause(w3, token, anvil.accounts[3].private_key)
    assert not is_paused(w3, token)
