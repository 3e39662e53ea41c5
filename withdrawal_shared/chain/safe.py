"""Read calls on a deployed treasury Safe (v1.4.1) and its execution events, through web3 with
a minimal ABI (only what the services call; `withdrawal_shared.chain.safe_tx` builds the
hashes, signatures and calldata).

- `safe_nonce`, `safe_threshold`, `safe_owners`: the Safe's current nonce (the one the next
  `execTransaction` uses), how many owner signatures it needs, and its owners.
- `contract_transaction_hash`: the Safe's own `getTransactionHash` of a `SafeTx`, which must
  equal `safe_tx.safe_tx_hash` (a cross-check against the contract, not needed to sign).
- `execution_result(receipt_logs, safe, safe_tx_hash)`: the `ExecutionSuccess` or
  `ExecutionFailure` log of that hash emitted by that Safe in a receipt, or None.

`ExecutionFailure` is emitted only when the inner call failed and the execution was still
accepted, which needs `safeTxGas` or `gasPrice` non-zero; the transactions built here keep
both zero, so a failing inner call reverts the whole `execTransaction` (GS013) instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from eth_typing import ABI
from web3 import Web3
from web3.contract import Contract

from withdrawal_shared.chain.safe_tx import (
    EXECUTION_FAILURE_TOPIC,
    EXECUTION_SUCCESS_TOPIC,
    SafeTx,
)
from withdrawal_shared.chain.types import ChecksumAddress

__all__ = [
    "SAFE_READ_ABI",
    "ExecutionResult",
    "contract_transaction_hash",
    "execution_result",
    "safe_contract",
    "safe_nonce",
    "safe_owners",
    "safe_threshold",
]

_SAFE_TX_INPUTS = [
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "data", "type": "bytes"},
    {"name": "operation", "type": "uint8"},
    {"name": "safeTxGas", "type": "uint256"},
    {"name": "baseGas", "type": "uint256"},
    {"name": "gasPrice", "type": "uint256"},
    {"name": "gasToken", "type": "address"},
    {"name": "refundReceiver", "type": "address"},
    {"name": "_nonce", "type": "uint256"},
]


def _view(name: str, outputs: list[str], inputs: list[dict[str, str]] | None = None) -> Any:
    return {
        "type": "function",
        "name": name,
        "stateMutability": "view",
        "inputs": inputs or [],
        "outputs": [{"name": "", "type": kind} for kind in outputs],
    }


SAFE_READ_ABI: ABI = cast(
    ABI,
    [
        _view("nonce", ["uint256"]),
        _view("getThreshold", ["uint256"]),
        _view("getOwners", ["address[]"]),
        _view("getTransactionHash", ["bytes32"], _SAFE_TX_INPUTS),
    ],
)
"""The four view functions of Safe v1.4.1 the services read (same in Safe and SafeL2)."""


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """A Safe's `ExecutionSuccess` / `ExecutionFailure(bytes32 indexed txHash, uint256 payment)`
    log: `success` tells which; `payment` is the gas refund paid (0 here, gasPrice is 0)."""

    safe_tx_hash: bytes
    success: bool
    payment: int
    log_index: int | None


def safe_contract(w3: Web3, safe: str) -> Contract:
    """A web3 contract object over `SAFE_READ_ABI` for the Safe (proxy) at `safe`."""
    return w3.eth.contract(address=Web3.to_checksum_address(safe), abi=SAFE_READ_ABI)


def safe_nonce(w3: Web3, safe: str) -> int:
    """The nonce the Safe's next `execTransaction` must be signed for."""
    return int(cast(int, safe_contract(w3, safe).functions.nonce().call()))


def safe_threshold(w3: Web3, safe: str) -> int:
    """How many owner signatures an `execTransaction` needs."""
    return int(cast(int, safe_contract(w3, safe).functions.getThreshold().call()))


def safe_owners(w3: Web3, safe: str) -> list[ChecksumAddress]:
    """The Safe's owners, in the Safe's own (linked-list) order."""
    owners = cast(Sequence[str], safe_contract(w3, safe).functions.getOwners().call())
    return [Web3.to_checksum_address(owner) for owner in owners]


def contract_transaction_hash(w3: Web3, safe: str, tx: SafeTx) -> bytes:
    """The Safe's `getTransactionHash(...)` of `tx` (at `tx.nonce`), computed by the contract."""
    function = safe_contract(w3, safe).functions.getTransactionHash(
        tx.to,
        tx.value,
        tx.data,
        tx.operation,
        tx.safe_tx_gas,
        tx.base_gas,
        tx.gas_price,
        tx.gas_token,
        tx.refund_receiver,
        tx.nonce,
    )
    return bytes(cast(bytes, function.call()))


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return bytes.fromhex(value.removeprefix("0x"))
    raise ValueError(f"expected bytes or 0x-hex, got {type(value).__name__}")


def _log_index(log: Mapping[str, Any]) -> int | None:
    value = log.get("logIndex")
    if value is None:
        return None
    return int(value, 16) if isinstance(value, str) else int(value)


_OUTCOMES = {
    bytes.fromhex(EXECUTION_SUCCESS_TOPIC[2:]): True,
    bytes.fromhex(EXECUTION_FAILURE_TOPIC[2:]): False,
}


def execution_result(
    receipt_logs: Sequence[Mapping[str, Any]], safe: str, safe_tx_hash: bytes
) -> ExecutionResult | None:
    """The `ExecutionSuccess` / `ExecutionFailure` log of `safe_tx_hash` from `safe` in a
    receipt's logs (web3's `receipt["logs"]` or raw JSON-RPC logs), or None when there is none.

    Logs of other addresses (the vault's, the token's, another Safe's) and of other hashes are
    ignored. Raises ValueError for a matching log of the wrong shape or for two of them.
    """
    wanted = _as_bytes(safe_tx_hash)
    if len(wanted) != 32:
        raise ValueError("a Safe transaction hash is 32 bytes")
    address = safe.lower()
    found: ExecutionResult | None = None
    for log in receipt_logs:
        if str(log["address"]).lower() != address:
            continue
        topics = [_as_bytes(topic) for topic in log["topics"]]
        if not topics or topics[0] not in _OUTCOMES:
            continue
        data = _as_bytes(log["data"])
        if len(topics) != 2 or len(data) != 32:
            raise ValueError("malformed ExecutionSuccess/ExecutionFailure log")
        if topics[1] != wanted:
            continue
        if found is not None:
            raise ValueError("two execution logs for one Safe transaction hash")
        found = ExecutionResult(
            safe_tx_hash=wanted,
            success=_OUTCOMES[topics[0]],
            payment=int.from_bytes(data, "big"),
            log_index=_log_index(log),
        )
    return found
