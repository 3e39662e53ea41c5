"""Faults injected into anvil for tests that drive the chain by hand: blocks only when the
test mines them, and calls sent as an account whose key nobody holds here (a contract such as
the treasury Safe), through anvil's impersonation."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from web3 import Web3

from devstack.anvil import mine, rpc, set_balance, set_interval_mining
from withdrawal_shared.chain.types import ChecksumAddress, HexStr, Wei

T = TypeVar("T")

GWEI = 10**9


@contextlib.contextmanager
def manual_blocks(w3: Web3, restore_seconds: int = 1) -> Iterator[None]:
    """Interval mining off (anvil then mines only on `mine`); back to a block every
    `restore_seconds` on exit."""
    set_interval_mining(w3, 0)
    try:
        yield
    finally:
        set_interval_mining(w3, restore_seconds)


def mine_until(
    w3: Web3,
    probe: Callable[[], T | None],
    timeout: float,
    describe: Callable[[], str],
    every: float = 0.2,
) -> T:
    """Mine a block every `every` seconds until `probe` returns something (returned); an
    AssertionError with `describe()` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value is not None:
            return value
        mine(w3)
        time.sleep(every)
    raise AssertionError(describe())


def send_as(w3: Web3, sender: str, to: str, data: bytes, *, tip_gwei: int = 500) -> HexStr:
    """Send a call as `sender` (impersonated: anvil signs it), with gas money set on its
    balance and a tip of `tip_gwei` (high: it goes first in the next block); its hash. Nothing
    waits for it to be mined."""
    account = ChecksumAddress(Web3.to_checksum_address(sender))
    set_balance(w3, account, Wei(10**18))
    rpc(w3, "anvil_impersonateAccount", [account])
    try:
        base = int(w3.eth.get_block("latest")["baseFeePerGas"])
        sent = w3.eth.send_transaction(
            {
                "from": account,
                "to": Web3.to_checksum_address(to),
                "data": HexStr("0x" + data.hex()),
                "gas": 200_000,
                "maxPriorityFeePerGas": Wei(tip_gwei * GWEI),
                "maxFeePerGas": Wei(2 * base + tip_gwei * GWEI),
            }
        )
    finally:
        rpc(w3, "anvil_stopImpersonatingAccount", [account])
    return HexStr(Web3.to_hex(sent))
