"""The project's compiled contracts (contracts/build/*.json) and read calls on the token.

`load_artifact` reads an artifact written by `scripts/compile_contracts.mjs` (ABI, bytecode,
compiler version). `stablecoin_contract` binds the TestStablecoin ABI (a standard ERC-20 for the
read calls) to a token address; `balance_of`, `decimals` and `is_paused` read through it.
Deploying and driving contracts with a local key is development tooling: `devstack.transactions`,
`devstack.stablecoin`, `devstack.vault`.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from eth_typing import ABI
from web3 import Web3
from web3.contract import Contract

from withdrawal_shared.chain.types import BaseUnits, ChecksumAddress, HexStr

__all__ = [
    "BUILD_DIR",
    "TEST_STABLECOIN",
    "ContractArtifact",
    "balance_of",
    "decimals",
    "is_paused",
    "load_artifact",
    "stablecoin_contract",
]

# AWS_CONTRACTS_DIR: where an installed package (the container image) finds the artifacts,
# which are not Python package data; the repository's contracts/build/ when unset.
BUILD_DIR = Path(
    os.environ.get("AWS_CONTRACTS_DIR", "")
    or Path(__file__).resolve().parents[2] / "contracts" / "build"
)
TEST_STABLECOIN = "TestStablecoin"


@dataclass(frozen=True, slots=True)
class ContractArtifact:
    """One compiled contract, as committed in contracts/build/<contract_name>.json."""

    contract_name: str
    source_name: str
    abi: ABI
    bytecode: HexStr
    deployed_bytecode: HexStr
    compiler_version: str


@functools.cache
def load_artifact(contract_name: str, build_dir: Path = BUILD_DIR) -> ContractArtifact:
    """Read contracts/build/<contract_name>.json (cached per process)."""
    path = build_dir / f"{contract_name}.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no artifact {path}: run `make contracts` (node scripts/compile_contracts.mjs)"
        ) from None
    return ContractArtifact(
        contract_name=raw["contractName"],
        source_name=raw["sourceName"],
        abi=raw["abi"],
        bytecode=HexStr(raw["bytecode"]),
        deployed_bytecode=HexStr(raw["deployedBytecode"]),
        compiler_version=raw["compiler"]["version"],
    )


# -- the token's read calls -------------------------------------------------------------------


def stablecoin_contract(w3: Web3, token: ChecksumAddress) -> Contract:
    """A web3 contract object for a deployed TestStablecoin (any ERC-20 for the read calls)."""
    return w3.eth.contract(address=token, abi=load_artifact(TEST_STABLECOIN).abi)


def balance_of(w3: Web3, token: ChecksumAddress, holder: ChecksumAddress) -> BaseUnits:
    """The holder's token balance in base units, read from the latest block."""
    return BaseUnits(int(stablecoin_contract(w3, token).functions.balanceOf(holder).call()))


def decimals(w3: Web3, token: ChecksumAddress) -> int:
    return int(cast(int, stablecoin_contract(w3, token).functions.decimals().call()))


def is_paused(w3: Web3, token: ChecksumAddress) -> bool:
    return bool(stablecoin_contract(w3, token).functions.paused().call())
