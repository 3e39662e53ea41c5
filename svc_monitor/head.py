"""The chain head, and canonical block hashes by number, cached while the head is unchanged.

A block hash commits to all of its ancestors, so for as long as the head is the same block the
canonical hash at any height below it stays the same; a new head may sit on a different
history and clears the cache.
"""

from __future__ import annotations

from web3 import Web3
from web3.exceptions import BlockNotFound

from svc_monitor.jsonrpc import hex_string, quantity, rpc_result


class BlockHashes:
    """The head, and canonical block hashes by number, cached while the head is unchanged."""

    def __init__(self, w3: Web3, max_entries: int = 1024) -> None:
        self._w3 = w3
        self._max_entries = max_entries
        self._head: tuple[int, str] | None = None
        self._hashes: dict[int, str | None] = {}

    @property
    def head(self) -> int:
        if self._head is None:
            raise RuntimeError("read_head() first")
        return self._head[0]

    def read_head(self) -> int:
        block = self._block("latest")
        if block is None:
            raise BlockNotFound("the node has no latest block")
        number, block_hash = block
        if self._head != (number, block_hash):
            self._hashes.clear()  # a new head may sit on a different history
            self._head = (number, block_hash)
            self._hashes[number] = block_hash
        return number

    def _block(self, tag: str) -> tuple[int, str] | None:
        """(number, hash) of block `tag` (a number in hex, or "latest"); None when the node
        has no such block. Plain JSON-RPC: web3 would format the whole block (every field
        and transaction hash) only for these two."""
        block = rpc_result(self._w3, "eth_getBlockByNumber", [tag, False])
        if block is None:
            return None
        return quantity(block["number"]), hex_string(block["hash"])

    def canonical_hash(self, number: int) -> str | None:
        """The hash of the canonical block `number`, or None when the node has no such block."""
        if number in self._hashes:
            return self._hashes[number]
        block = self._block(hex(number))
        block_hash = None if block is None else block[1]
        if len(self._hashes) >= self._max_entries:
            self._hashes.clear()
        if block_hash is not None:  # a missing block may appear at any moment: never cache it
            self._hashes[number] = block_hash
        return block_hash
