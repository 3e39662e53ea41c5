"""The PayoutVault (contracts/PayoutVault.sol) deployed and driven with local keys, for the
bootstrap, tests and benchmarks: deploy it, fund it, send a payout from an operator, and send the
owner's calls (whose calldata `withdrawal_shared.chain.payout` builds), each waiting for the
receipt and raising `TransactionReverted` on a revert.
"""

from __future__ import annotations

from collections.abc import Sequence

from web3 import Web3
from web3.types import TxParams, TxReceipt

from devstack.stablecoin import mint, transfer
from devstack.transactions import (
    DEFAULT_RECEIPT_TIMEOUT,
    deploy_contract,
    send_call,
    send_transaction,
)
from withdrawal_shared.chain.contracts import balance_of, load_artifact
from withdrawal_shared.chain.payout import (
    PAYOUT_VAULT,
    Payment,
    encode_pause,
    encode_payout,
    encode_set_operator,
    encode_set_outflow_cap,
    encode_sweep,
    encode_unpause,
    payout_vault_contract,
)
from withdrawal_shared.chain.types import BaseUnits, ChecksumAddress, HexStr, PrivateKey

__all__ = [
    "deploy_payout_vault",
    "fund_vault",
    "pause_vault",
    "send_payout",
    "set_operator",
    "set_outflow_cap",
    "sweep",
    "transfer_vault_ownership",
    "unpause_vault",
]


def _send_to_vault(
    w3: Web3,
    vault: ChecksumAddress,
    key: PrivateKey,
    calldata: bytes,
    *,
    gas: int | None = None,
    timeout: float,
) -> TxReceipt:
    tx: TxParams = {"to": vault, "data": HexStr("0x" + calldata.hex())}
    if gas is not None:
        tx["gas"] = gas
    abi = load_artifact(PAYOUT_VAULT).abi
    return send_transaction(w3, key, tx, abi=abi, timeout=timeout)


def deploy_payout_vault(
    w3: Web3,
    deployer_key: PrivateKey,
    owner: ChecksumAddress,
    *,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> ChecksumAddress:
    """Deploy a PayoutVault owned by `owner` (meant to be a Safe) and return its address."""
    return deploy_contract(w3, deployer_key, load_artifact(PAYOUT_VAULT), owner, timeout=timeout)


def fund_vault(
    w3: Web3,
    token: ChecksumAddress,
    funder_key: PrivateKey,
    vault: ChecksumAddress,
    amount: BaseUnits,
    *,
    mint_new: bool = False,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> BaseUnits:
    """Move `amount` of `token` into the vault and return the vault's new balance.

    `mint_new=True` mints it (the funder must own a TestStablecoin); otherwise it is an ERC-20
    transfer from the funder's own balance (the treasury).
    """
    if mint_new:
        mint(w3, token, funder_key, vault, amount, timeout=timeout)
    else:
        transfer(w3, token, funder_key, vault, amount, timeout=timeout)
    return balance_of(w3, token, vault)


def send_payout(
    w3: Web3,
    vault: ChecksumAddress,
    operator_key: PrivateKey,
    token: str,
    payments: Sequence[Payment],
    *,
    gas: int | None = None,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> TxReceipt:
    """Sign and send one payout transaction from an operator and wait for its receipt.

    Pass `gas` to skip estimation (and get a revert on chain instead of before sending).
    """
    calldata = encode_payout(token, payments)
    return _send_to_vault(w3, vault, operator_key, calldata, gas=gas, timeout=timeout)


def set_operator(
    w3: Web3,
    vault: ChecksumAddress,
    owner_key: PrivateKey,
    operator: ChecksumAddress,
    allowed: bool = True,
    *,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> TxReceipt:
    """Allow (or with `allowed=False` disallow) `operator` to call `payout` (owner only)."""
    calldata = encode_set_operator(operator, allowed)
    return _send_to_vault(w3, vault, owner_key, calldata, timeout=timeout)


def pause_vault(
    w3: Web3,
    vault: ChecksumAddress,
    owner_key: PrivateKey,
    *,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> TxReceipt:
    """Stop all payouts (`EnforcedPause()`) until `unpause_vault` (owner only)."""
    return _send_to_vault(w3, vault, owner_key, encode_pause(), timeout=timeout)


def unpause_vault(
    w3: Web3,
    vault: ChecksumAddress,
    owner_key: PrivateKey,
    *,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> TxReceipt:
    """Undo `pause_vault` (owner only)."""
    return _send_to_vault(w3, vault, owner_key, encode_unpause(), timeout=timeout)


def set_outflow_cap(
    w3: Web3,
    vault: ChecksumAddress,
    owner_key: PrivateKey,
    token: ChecksumAddress,
    cap_per_window: BaseUnits,
    window_seconds: int,
    *,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> TxReceipt:
    """Cap `token` payouts at `cap_per_window` per fixed window (cap 0 = none; owner only)."""
    calldata = encode_set_outflow_cap(token, cap_per_window, window_seconds)
    return _send_to_vault(w3, vault, owner_key, calldata, timeout=timeout)


def sweep(
    w3: Web3,
    vault: ChecksumAddress,
    owner_key: PrivateKey,
    token: ChecksumAddress,
    to: ChecksumAddress,
    amount: BaseUnits,
    *,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> TxReceipt:
    """Move `amount` of `token` out of the vault to `to` (owner only)."""
    return _send_to_vault(w3, vault, owner_key, encode_sweep(token, to, amount), timeout=timeout)


def transfer_vault_ownership(
    w3: Web3,
    vault: ChecksumAddress,
    owner_key: PrivateKey,
    new_owner: ChecksumAddress,
    *,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> TxReceipt:
    """Hand the vault to `new_owner` (the treasury Safe) in one step (OpenZeppelin `Ownable`:
    effective at once, no acceptance; owner only)."""
    function = payout_vault_contract(w3, vault).functions.transferOwnership(new_owner)
    return send_call(w3, owner_key, function, timeout=timeout)
