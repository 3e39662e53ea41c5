"""Small nominal types for chain code: base units, nonces, private keys, snapshot ids.

Addresses are `eth_typing.ChecksumAddress`, native amounts `web3.types.Wei` and nonces
`web3.types.Nonce` (web3's own NewTypes, so values pass straight into `TxParams`); they are
re-exported here so chain code imports its vocabulary from one place. Token amounts are always
integer base units (USDC: 6 decimals), never floats.
"""

from __future__ import annotations

from typing import NewType

from eth_typing import ChecksumAddress, HexStr
from web3.types import Nonce, Wei

__all__ = [
    "POLYGON_CHAIN_ID",
    "BaseUnits",
    "ChecksumAddress",
    "HexStr",
    "Nonce",
    "PrivateKey",
    "SnapshotId",
    "Wei",
]

POLYGON_CHAIN_ID = 137

BaseUnits = NewType("BaseUnits", int)
"""An ERC-20 amount in the token's smallest unit (1 USDC == BaseUnits(1_000_000))."""

PrivateKey = NewType("PrivateKey", str)
"""A secp256k1 private key as 0x-prefixed hex. Only local test keys ever take this form."""

SnapshotId = NewType("SnapshotId", str)
"""An id returned by anvil's `evm_snapshot`, to hand back to `evm_revert`."""
