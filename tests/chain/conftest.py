"""Fixtures for the chain tests: one real anvil per session, a snapshot-isolated Web3 per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from web3 import Web3

from devstack.anvil import AnvilProcess, revert, snapshot


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilProcess]:
    """An automining anvil (chain id 137) shared by the session; stopped at the end."""
    with AnvilProcess() as node:
        yield node


@pytest.fixture
def w3(anvil: AnvilProcess) -> Iterator[Web3]:
    """A Web3 on the session anvil; the chain is reverted to its prior state after the test."""
    web3 = anvil.web3()
    snap = snapshot(web3)
    yield web3
    assert revert(web3, snap), "evm_revert did not find the test's snapshot"
