"""Signing and sending development transactions with a local private key (anvil dev accounts,
test wallets): fill in nonce, chain id, gas and EIP-1559 fees, sign, send, wait for the receipt.

Every call raises `TransactionReverted` (with the decoded custom error when the ABI names it)
when gas estimation reverts or the mined receipt has status 0. Production services never hold
keys like this: the signer service signs their transactions.
"""

from __future__ import annotations

from typing import Any

from eth_account import Account
from eth_typing import ABI
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError
from web3.types import TxParams, TxReceipt

from withdrawal_shared.chain.contracts import ContractArtifact
from withdrawal_shared.chain.types import ChecksumAddress, HexStr, Nonce, PrivateKey, Wei

__all__ = [
    "DEFAULT_RECEIPT_TIMEOUT",
    "ChainTransactionError",
    "TransactionReverted",
    "deploy_contract",
    "fund_native",
    "send_call",
    "send_transaction",
]

DEFAULT_RECEIPT_TIMEOUT = 60.0


class ChainTransactionError(RuntimeError):
    """A transaction could not be built, sent or confirmed."""


class TransactionReverted(ChainTransactionError):
    """The EVM reverted a transaction, either when estimating gas or on chain (status 0)."""

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        tx_hash: HexStr | None = None,
        receipt: TxReceipt | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.tx_hash = tx_hash
        self.receipt = receipt


def _address_of(private_key: PrivateKey) -> ChecksumAddress:
    return Web3.to_checksum_address(Account.from_key(private_key).address)


def _decode_revert(w3: Web3, abi: ABI, exc: ContractLogicError) -> str:
    """Name the custom error in a revert (e.g. `EnforcedPause()`), else web3's message."""
    data = exc.data if isinstance(exc.data, str) else None
    if data and data.startswith("0x") and len(data) >= 10:
        selector = bytes.fromhex(data[2:10])
        for item in abi:
            if item["type"] != "error":
                continue
            error = item
            types = [str(arg["type"]) for arg in error.get("inputs", [])]
            signature = f"{error['name']}({','.join(types)})"
            if Web3.keccak(text=signature)[:4] == selector:
                values = w3.codec.decode(types, bytes.fromhex(data[10:]))
                shown = [
                    Web3.to_checksum_address(value) if kind == "address" else str(value)
                    for kind, value in zip(types, values, strict=True)
                ]
                return f"{error['name']}({', '.join(shown)})"
    return str(exc.message or exc)


def send_transaction(
    w3: Web3,
    private_key: PrivateKey,
    tx: TxParams,
    *,
    abi: ABI = (),
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> TxReceipt:
    """Fill in what `tx` lacks (nonce, chain id, gas, EIP-1559 fees), sign, send, wait.

    Raises `TransactionReverted` when gas estimation reverts (nothing is sent) or when the
    mined receipt has status 0. Pass an explicit `gas` to skip estimation and get the revert
    on chain. `abi` is used to name custom errors.
    """
    sender = _address_of(private_key)
    params: TxParams = {"from": sender, "chainId": w3.eth.chain_id, **tx}
    if "nonce" not in params:
        params["nonce"] = Nonce(w3.eth.get_transaction_count(sender, "pending"))
    if "gasPrice" not in params and "maxFeePerGas" not in params:
        priority = w3.eth.max_priority_fee
        base_fee = w3.eth.get_block("latest").get("baseFeePerGas", Wei(0))
        params["maxPriorityFeePerGas"] = priority
        params["maxFeePerGas"] = Wei(2 * base_fee + priority)
    if "gas" not in params:
        try:
            params["gas"] = w3.eth.estimate_gas(params)
        except ContractLogicError as exc:
            reason = _decode_revert(w3, abi, exc)
            raise TransactionReverted(
                f"transaction from {sender} would revert: {reason}", reason=reason
            ) from exc
    signed = Account.sign_transaction(params, private_key)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout)
    if receipt["status"] != 1:
        raise TransactionReverted(
            f"transaction {tx_hash.to_0x_hex()} from {sender} reverted on chain in block "
            f"{receipt['blockNumber']} (gas used {receipt['gasUsed']} of {params['gas']})",
            tx_hash=HexStr(tx_hash.to_0x_hex()),
            receipt=receipt,
        )
    return receipt


def send_call(
    w3: Web3,
    private_key: PrivateKey,
    function: ContractFunction,
    *,
    gas: int | None = None,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> TxReceipt:
    """Sign and send a call of `function` from `private_key`; wait for the receipt."""
    tx: TxParams = {"to": function.address, "data": HexStr(function._encode_transaction_data())}
    if gas is not None:
        tx["gas"] = gas
    return send_transaction(w3, private_key, tx, abi=function.contract_abi, timeout=timeout)


def deploy_contract(
    w3: Web3,
    deployer_key: PrivateKey,
    artifact: ContractArtifact,
    *constructor_args: Any,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> ChecksumAddress:
    """Deploy `artifact` with `constructor_args` and return the new contract's address."""
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    data = factory.constructor(*constructor_args).data_in_transaction
    receipt = send_transaction(
        w3, deployer_key, {"data": HexStr(data)}, abi=artifact.abi, timeout=timeout
    )
    address = receipt["contractAddress"]
    if address is None:
        raise ChainTransactionError(f"deploying {artifact.contract_name} created no contract")
    return Web3.to_checksum_address(address)


def fund_native(
    w3: Web3,
    funder_key: PrivateKey,
    to: ChecksumAddress,
    amount: Wei,
    *,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> TxReceipt:
    """Send `amount` wei of the native coin (POL) from the funder to `to`, e.g. for gas."""
    return send_transaction(
        w3, funder_key, {"to": to, "value": amount, "gas": 21_000}, timeout=timeout
    )
