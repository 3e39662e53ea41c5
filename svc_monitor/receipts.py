"""Reading what a mined transaction did: its receipt, ERC-20 Transfer logs and revert reasons.

`read_receipt` and `revert_reason` ask the node; the rest are pure functions over receipt logs
and revert data, testable without a node (candidates for `withdrawal_shared.chain` once
another service needs them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode
from eth_abi.exceptions import DecodingError
from web3 import Web3
from web3.exceptions import TransactionNotFound
from web3.types import RPCEndpoint

from svc_monitor.jsonrpc import hex_string, quantity, rpc_result
from withdrawal_shared.chain.types import HexStr

TRANSFER_TOPIC = Web3.keccak(text="Transfer(address,address,uint256)")
"""topic0 of the ERC-20 (and ERC-721) `Transfer` event."""

ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)

# Custom errors we can name: OpenZeppelin 5 ERC-20 / Pausable / Ownable (the test stablecoin and
# most modern tokens) and the project's own contracts. Unknown selectors are shown as hex.
KNOWN_ERRORS: tuple[str, ...] = (
    "EnforcedPause()",
    "ExpectedPause()",
    "ERC20InsufficientBalance(address,uint256,uint256)",
    "ERC20InvalidSender(address)",
    "ERC20InvalidReceiver(address)",
    "ERC20InsufficientAllowance(address,uint256,uint256)",
    "ERC20InvalidApprover(address)",
    "ERC20InvalidSpender(address)",
    "OwnableUnauthorizedAccount(address)",
    "OwnableInvalidOwner(address)",
    "SafeERC20FailedOperation(address)",
    "FailedCall()",
)


def _selector(signature: str) -> bytes:
    return bytes(Web3.keccak(text=signature)[:4])


def _arg_types(signature: str) -> list[str]:
    inner = signature[signature.index("(") + 1 : -1]
    return [t for t in inner.split(",") if t]


_ERRORS_BY_SELECTOR: dict[bytes, str] = {_selector(sig): sig for sig in KNOWN_ERRORS}


@dataclass(frozen=True, slots=True)
class Erc20Transfer:
    """One `Transfer(from, to, value)` log; addresses lowercase hex."""

    token: str
    sender: str
    recipient: str
    value: int


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return bytes.fromhex(value.removeprefix("0x"))
    raise TypeError(f"expected bytes or hex, got {type(value).__name__}")


def _topic_address(topic: Any) -> str:
    return "0x" + _as_bytes(topic)[-20:].hex()


def erc20_transfers(logs: Iterable[Mapping[str, Any]]) -> list[Erc20Transfer]:
    """The ERC-20 Transfer events among receipt logs (ERC-721 ones, with 4 topics, skipped)."""
    found: list[Erc20Transfer] = []
    for entry in logs:
        topics = entry.get("topics") or []
        if len(topics) != 3 or _as_bytes(topics[0]) != TRANSFER_TOPIC:
            continue
        data = _as_bytes(entry.get("data") or b"")
        if len(data) != 32:
            continue
        found.append(
            Erc20Transfer(
                token=str(entry["address"]).lower(),
                sender=_topic_address(topics[1]),
                recipient=_topic_address(topics[2]),
                value=int.from_bytes(data, "big"),
            )
        )
    return found


def _format_arg(kind: str, value: Any) -> str:
    if kind == "address":
        return Web3.to_checksum_address(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def decode_revert_data(data: bytes) -> str | None:
    """Name the revert in `data` (the return data of a failed call), or None when empty.

    `Error(string)` gives its message, `Panic(uint256)` its code, a known custom error its name
    and arguments (e.g. `EnforcedPause()`), an unknown one `custom error 0x<selector>`.
    """
    if not data:
        return None
    if len(data) < 4:
        return f"malformed revert data 0x{data.hex()}"
    selector, body = data[:4], data[4:]
    try:
        if selector == ERROR_STRING_SELECTOR:
            (message,) = decode(["string"], body)
            return str(message)
        if selector == PANIC_SELECTOR:
            (code,) = decode(["uint256"], body)
            return f"Panic(0x{int(code):02x})"
        signature = _ERRORS_BY_SELECTOR.get(selector)
        if signature is not None:
            types = _arg_types(signature)
            values = decode(types, body) if types else ()
            shown = ", ".join(_format_arg(k, v) for k, v in zip(types, values, strict=True))
            return f"{signature[: signature.index('(')]}({shown})"
    except DecodingError:
        pass
    return f"custom error 0x{selector.hex()}"


def revert_reason_from_rpc_error(error: Mapping[str, Any]) -> str | None:
    """The reason in a JSON-RPC error of a reverted `eth_call`, or None when it names none.

    Nodes put the return data in `error.data` (a hex string, or an object holding `data`);
    some only give a message like `execution reverted: <reason>`.
    """
    data = error.get("data")
    if isinstance(data, Mapping):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x") and len(data) > 2:
        try:
            decoded = decode_revert_data(bytes.fromhex(data[2:]))
        except ValueError:
            decoded = None
        if decoded:
            return decoded
    message = str(error.get("message") or "")
    prefix = "execution reverted:"
    if message.startswith(prefix) and message[len(prefix) :].strip():
        return message[len(prefix) :].strip()
    return None


@dataclass(frozen=True)
class Receipt:
    """What the monitor reads of a receipt (`logs` as the node sent them: hex strings)."""

    block_number: int
    block_hash: str
    gas_used: int
    effective_gas_price: int
    status: int
    logs: Sequence[Mapping[str, Any]]


def read_receipt(w3: Web3, tx_hash: str) -> Receipt | None:
    """The transaction's receipt, or None while the node has none.

    Read as plain JSON-RPC: web3's result formatters would turn every log of a payout
    (hundreds) into attribute dicts with checksummed addresses (a keccak each), which cost
    the monitor more than the rest of settling the payout; the log decoders take the
    node's hex strings as they are."""
    result = rpc_result(w3, "eth_getTransactionReceipt", [tx_hash])
    if result is None:
        return None
    return Receipt(
        block_number=quantity(result["blockNumber"]),
        block_hash=hex_string(result["blockHash"]),
        gas_used=quantity(result["gasUsed"]),
        effective_gas_price=quantity(result["effectiveGasPrice"]),
        status=quantity(result["status"]),
        logs=result.get("logs") or [],
    )


def revert_reason(w3: Web3, tx_hash: str, receipt: Receipt) -> str:
    """Replay the transaction with eth_call at its block and decode why it reverted."""
    try:
        tx = w3.eth.get_transaction(HexStr(tx_hash))
    except TransactionNotFound:
        return "reverted"
    call: dict[str, Any] = {
        "from": tx["from"],
        "to": tx["to"],
        "data": Web3.to_hex(tx["input"]),
        "value": hex(int(tx["value"])),
        "gas": hex(int(tx["gas"])),
    }
    response = w3.provider.make_request(RPCEndpoint("eth_call"), [call, hex(receipt.block_number)])
    error = response.get("error")
    if isinstance(error, Mapping):
        reason = revert_reason_from_rpc_error(error)
        if reason:
            return reason
    if receipt.gas_used >= int(tx["gas"]):
        return f"out of gas (used all {int(tx['gas'])} gas)"
    return "reverted"
