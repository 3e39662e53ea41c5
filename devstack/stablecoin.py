"""The test stablecoin (contracts/TestStablecoin.sol) driven by its owner and holders with local
keys: deploy it, mint, transfer, pause and unpause, each waiting for the receipt.
"""

from __future__ import annotations

from web3 import Web3
from web3.types import TxReceipt

from devstack.transactions import DEFAULT_RECEIPT_TIMEOUT, deploy_contract, send_call
from withdrawal_shared.chain.contracts import TEST_STABLECOIN, load_artifact, stablecoin_contract
from withdrawal_shared.chain.types import BaseUnits, ChecksumAddress, PrivateKey

__all__ = ["deploy_test_stablecoin", "mint", "pause", "transfer", "unpause"]


def deploy_test_stablecoin(
    w3: Web3,
    deployer_key: PrivateKey,
    name: str = "USD Coin",
    symbol: str = "USDC",
    *,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> ChecksumAddress:
    """Deploy a TestStablecoin owned by the deployer and return its address."""
    return deploy_contract(
        w3, deployer_key, load_artifact(TEST_STABLECOIN), name, symbol, timeout=timeout
    )


def mint(
    w3: Web3,
    token: ChecksumAddress,
    owner_key: PrivateKey,
    to: ChecksumAddress,
    amount: BaseUnits,
    *,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> TxReceipt:
    """Mint `amount` base units to `to` (owner only)."""
    function = stablecoin_contract(w3, token).functions.mint(to, amount)
    return send_call(w3, owner_key, function, timeout=timeout)


def transfer(
    w3: Web3,
    token: ChecksumAddress,
    sender_key: PrivateKey,
    to: ChecksumAddress,
    amount: BaseUnits,
    *,
    gas: int | None = None,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> TxReceipt:
    """ERC-20 `transfer` from the sender's account; pass `gas` to send even if it will revert."""
    function = stablecoin_contract(w3, token).functions.transfer(to, amount)
    return send_call(w3, sender_key, function, gas=gas, timeout=timeout)


def pause(
    w3: Web3,
    token: ChecksumAddress,
    owner_key: PrivateKey,
    *,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> TxReceipt:
    """Pause the token: every transfer then reverts with `EnforcedPause()` (owner only)."""
    return send_call(
        w3, owner_key, stablecoin_contract(w3, token).functions.pause(), timeout=timeout
    )


def unpause(
    w3: Web3,
    token: ChecksumAddress,
    owner_key: PrivateKey,
    *,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> TxReceipt:
    """Undo `pause` (owner only)."""
    function = stablecoin_contract(w3, token).functions.unpause()
    return send_call(w3, owner_key, function, timeout=timeout)
