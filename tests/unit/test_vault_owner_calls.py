"""The vault owner's calldata builders against web3's encoding of the compiled ABI."""

from __future__ import annotations

from typing import Any

import pytest
from web3 import Web3

from withdrawal_shared.chain.contracts import load_artifact
from withdrawal_shared.chain.erc20 import CalldataError
from withdrawal_shared.chain.payout import (
    PAYOUT_VAULT,
    encode_pause,
    encode_set_operator,
    encode_set_outflow_cap,
    encode_sweep,
    encode_unpause,
)

TOKEN = "0x" + "ab" * 20
OPERATOR = Web3.to_checksum_address("0x" + "12" * 20)
TREASURY = "0x" + "cd" * 20


def abi_encoded(function: str, *args: Any) -> bytes:
    vault = Web3().eth.contract(abi=load_artifact(PAYOUT_VAULT).abi)
    return bytes.fromhex(vault.encode_abi(function, args=list(args))[2:])


@pytest.mark.parametrize("allowed", [True, False])
def test_set_operator_matches_the_abi(allowed: bool) -> None:
    assert encode_set_operator(OPERATOR, allowed) == abi_encoded("setOperator", OPERATOR, allowed)


def test_pause_and_unpause_are_their_selectors() -> None:
    assert encode_pause() == abi_encoded("pause")
    assert encode_unpause() == abi_encoded("unpause")


@pytest.mark.parametrize(
    ("cap", "window"), [(0, 0), (5_000 * 10**6, 3_600), (2**256 - 1, 2**64 - 1)]
)
def test_set_outflow_cap_matches_the_abi(cap: int, window: int) -> None:
    expected = abi_encoded("setOutflowCap", Web3.to_checksum_address(TOKEN), cap, window)
    assert encode_set_outflow_cap(TOKEN, cap, window) == expected


def test_sweep_matches_the_abi() -> None:
    expected = abi_encoded(
        "sweep", Web3.to_checksum_address(TOKEN), Web3.to_checksum_address(TREASURY), 7
    )
    assert encode_sweep(TOKEN, TREASURY, 7) == expected


@pytest.mark.parametrize(
    "build",
    [
        lambda: encode_set_operator("0x1234", True),
        lambda: encode_set_operator(OPERATOR, 1),  # type: ignore[arg-type]
        lambda: encode_set_outflow_cap(TOKEN, -1, 60),
        lambda: encode_set_outflow_cap(TOKEN, 1, 2**64),
        lambda: encode_set_outflow_cap(TOKEN, True, 60),
        lambda: encode_sweep(TOKEN, "not an address", 1),
        lambda: encode_sweep(TOKEN, TREASURY, 2**256),
    ],
)
def test_out_of_type_arguments_are_refused(build: Any) -> None:
    with pytest.raises(CalldataError):
        build()
