"""Plain JSON-RPC reads, and the conversion of the node's hex answers.

The monitor reads blocks and receipts without web3's result formatters: they would turn every
field (and every log of a payout, hundreds) into attribute dicts with checksummed addresses,
a keccak each, only for the few fields the monitor uses.
"""

from __future__ import annotations

from typing import Any

from web3 import Web3
from web3.exceptions import Web3RPCError
from web3.types import RPCEndpoint


def rpc_result(w3: Web3, method: str, params: list[Any]) -> Any:
    """The `result` of `method(params)`; `Web3RPCError` when the node answers with an error."""
    response = w3.provider.make_request(RPCEndpoint(method), params)
    error = response.get("error")
    if error:
        raise Web3RPCError(f"{method} failed: {error}")
    return response.get("result")


def hex_string(value: Any) -> str:
    """A hash as lowercase 0x-hex (from bytes or the node's string)."""
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    return str(value).lower()


def quantity(value: Any) -> int:
    """A JSON-RPC quantity (0x-hex string) or an int."""
    return int(value, 16) if isinstance(value, str) else int(value)
