"""AnvilProcess and anvil's RPC extras, against real anvil processes."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3
from web3.exceptions import TransactionNotFound

from devstack.anvil import (
    ANVIL_DEFAULT_MNEMONIC,
    AnvilError,
    AnvilProcess,
    drop_transaction,
    find_anvil_binary,
    mine,
    reorg,
    revert,
    set_automine,
    set_balance,
    set_interval_mining,
    snapshot,
)
from devstack.transactions import fund_native
from withdrawal_shared.chain.types import ChecksumAddress, PrivateKey, Wei
from withdrawal_shared.runtime import pid_alive

pytestmark = pytest.mark.chain


def _fresh_address() -> ChecksumAddress:
    return Web3.to_checksum_address(Account.create().address)


def _signed_transfer(w3: Web3, key: PrivateKey, to: ChecksumAddress, value: int) -> bytes:
    sender = Account.from_key(key).address
    tx = {
        "to": to,
        "value": value,
        "gas": 21_000,
        "maxFeePerGas": 100 * 10**9,
        "maxPriorityFeePerGas": 10**9,
        "nonce": w3.eth.get_transaction_count(sender, "pending"),
        "chainId": w3.eth.chain_id,
    }
    raw: bytes = Account.sign_transaction(tx, key).raw_transaction
    return raw


def test_session_anvil_looks_like_polygon(w3: Web3, anvil: AnvilProcess) -> None:
    assert anvil.rpc_url.startswith("http://127.0.0.1:")
    assert w3.eth.chain_id == 137
    assert w3.eth.get_block("latest")["gasLimit"] == 60_000_000
    assert len(anvil.accounts) == 10
    # anvil's well-known default mnemonic: public keys, for local tests only.
    assert anvil.accounts[0].address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    for account in anvil.accounts:
        assert Account.from_key(account.private_key).address == account.address
        assert w3.eth.get_balance(account.address) > 0
    assert anvil.mnemonic == ANVIL_DEFAULT_MNEMONIC
    assert "private_key" not in repr(anvil.accounts[0])


def test_mine_advances_the_head(w3: Web3) -> None:
    start = w3.eth.block_number
    mine(w3)
    mine(w3, 5)
    assert w3.eth.block_number == start + 6


def test_snapshot_revert_and_set_balance(w3: Web3) -> None:
    who = _fresh_address()
    snap = snapshot(w3)
    set_balance(w3, who, Wei(12345))
    assert w3.eth.get_balance(who) == 12345
    assert revert(w3, snap)
    assert w3.eth.get_balance(who) == 0


def test_automine_off_keeps_transactions_pending_and_drop_removes_them(
    w3: Web3, anvil: AnvilProcess
) -> None:
    key = anvil.accounts[4].private_key
    to = _fresh_address()
    set_automine(w3, False)
    try:
        tx_hash = w3.eth.send_raw_transaction(_signed_transfer(w3, key, to, 7))
        start = w3.eth.block_number
        time.sleep(0.2)
        assert w3.eth.block_number == start
        assert w3.eth.get_transaction(tx_hash)["blockNumber"] is None  # pending

        drop_transaction(w3, tx_hash)
        mine(w3)
        with pytest.raises(TransactionNotFound):
            w3.eth.get_transaction(tx_hash)
        assert w3.eth.get_balance(to) == 0

        kept = w3.eth.send_raw_transaction(_signed_transfer(w3, key, to, 9))
        mine(w3)
        assert w3.eth.get_transaction_receipt(kept)["status"] == 1
        assert w3.eth.get_balance(to) == 9
    finally:
        set_automine(w3, True)


def test_reorg_removes_a_transaction_from_the_replaced_head(w3: Web3, anvil: AnvilProcess) -> None:
    to = _fresh_address()
    receipt = fund_native(w3, anvil.accounts[5].private_key, to, Wei(10**15))
    height = receipt["blockNumber"]
    assert height == w3.eth.block_number
    old_hash = receipt["blockHash"]

    reorg(w3, 1)

    assert w3.eth.block_number == height
    assert w3.eth.get_block(height)["hash"] != old_hash
    with pytest.raises(TransactionNotFound):
        w3.eth.get_transaction_receipt(receipt["transactionHash"])
    assert w3.eth.get_balance(to) == 0


def test_reorg_can_reinclude_a_transaction_in_another_block(w3: Web3, anvil: AnvilProcess) -> None:
    key = anvil.accounts[6].private_key
    to = _fresh_address()
    raw = _signed_transfer(w3, key, to, 42)
    tx_hash = w3.eth.send_raw_transaction(raw)
    first = w3.eth.wait_for_transaction_receipt(tx_hash)
    mine(w3, 2)  # the transfer now has two confirmations on top of it
    head = w3.eth.block_number

    reorg(w3, 3, [(Web3.to_hex(raw), 2)])  # the new chain carries it in its last block

    moved = w3.eth.get_transaction_receipt(tx_hash)
    assert w3.eth.block_number == head
    assert moved["blockNumber"] == head
    assert moved["blockHash"] != first["blockHash"]
    assert w3.eth.get_block(first["blockNumber"])["hash"] != first["blockHash"]
    assert w3.eth.get_balance(to) == 42


def test_interval_mining_produces_blocks_on_its_own() -> None:
    with AnvilProcess(block_time=0.5) as node:
        w3 = node.web3()
        start = w3.eth.block_number
        deadline = time.monotonic() + 10
        while w3.eth.block_number < start + 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert w3.eth.block_number >= start + 3

        receipt = fund_native(w3, node.accounts[0].private_key, _fresh_address(), Wei(1))
        assert receipt["status"] == 1

        set_interval_mining(w3, 0)  # interval mining off, automine still off: the head stops
        time.sleep(0.3)
        stopped = w3.eth.block_number
        time.sleep(1.2)
        assert w3.eth.block_number == stopped


def test_given_port_quiet_mode_and_log_file(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "anvil.log"
    with AnvilProcess(port=port, quiet=True, log_path=log) as node:
        assert node.rpc_url == f"http://127.0.0.1:{port}"
        assert node.web3().eth.chain_id == 137
        assert node.log_path == log
        pid = node.pid
    assert not pid_alive(pid)
    assert log.exists()


def test_stop_kills_the_process_and_is_idempotent() -> None:
    node = AnvilProcess(chain_id=31337, accounts=2).start()
    pid = node.pid
    assert pid_alive(pid)
    assert node.web3().eth.chain_id == 31337
    assert len(node.accounts) == 2
    node.stop()
    node.stop()
    assert not node.running
    assert not pid_alive(pid)
    with pytest.raises(AnvilError, match="not running"):
        _ = node.rpc_url


def test_start_failure_names_the_log_file() -> None:
    node = AnvilProcess(extra_args=["--no-such-flag"])
    with pytest.raises(AnvilError, match=r"exited with code \d+ during start-up; log ") as caught:
        node.start()
    assert "no-such-flag" in str(caught.value)
    assert not node.running
    log = node.log_path
    assert log is not None and log.exists()  # kept for reading until stop()
    node.stop()
    assert not log.exists()


def test_missing_npm_install_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANVIL_BIN", raising=False)
    with pytest.raises(AnvilError, match="make deps"):
        find_anvil_binary(tmp_path)
    assert find_anvil_binary().is_file()
