"""Pure parts of the monitor: fee split, revert decoding, Transfer logs, settings."""

from __future__ import annotations

import pytest
from eth_abi.abi import encode
from hypothesis import given
from hypothesis import strategies as st
from web3 import Web3

from svc_monitor.fees import split_fee
from svc_monitor.receipts import (
    TRANSFER_TOPIC,
    decode_revert_data,
    erc20_transfers,
    revert_reason_from_rpc_error,
)
from svc_monitor.settings import MonitorSettings
from withdrawal_shared.settings import SettingsError


def test_split_fee_gives_the_remainder_to_the_first_id() -> None:
    assert split_fee(10, ["c", "a", "b"]) == {"a": 4, "b": 3, "c": 3}
    assert split_fee(9, ["b", "a"]) == {"a": 5, "b": 4}
    assert split_fee(7, ["x"]) == {"x": 7}
    assert split_fee(5, []) == {}
    with pytest.raises(ValueError):
        split_fee(-1, ["a"])


@given(
    fee=st.integers(min_value=0, max_value=10**30),
    ids=st.sets(st.text(alphabet="0123456789abc", min_size=1, max_size=4), min_size=1),
)
def test_split_fee_shares_add_up_exactly(fee: int, ids: set[str]) -> None:
    shares = split_fee(fee, ids)
    assert sum(shares.values()) == fee
    assert set(shares) == ids
    assert max(shares.values()) - min(shares.values()) <= fee % len(ids)


def _selector(signature: str) -> bytes:
    return bytes(Web3.keccak(text=signature)[:4])


def test_decode_revert_data() -> None:
    assert decode_revert_data(b"") is None
    assert decode_revert_data(_selector("EnforcedPause()")) == "EnforcedPause()"
    holder = "0x" + "11" * 20
    data = _selector("ERC20InsufficientBalance(address,uint256,uint256)") + encode(
        ["address", "uint256", "uint256"], [holder, 5, 7]
    )
    assert decode_revert_data(data) == (
        f"ERC20InsufficientBalance({Web3.to_checksum_address(holder)}, 5, 7)"
    )
    error_string = _selector("Error(string)") + encode(["string"], ["Pausable: paused"])
    assert decode_revert_data(error_string) == "Pausable: paused"
    assert decode_revert_data(_selector("Panic(uint256)") + encode(["uint256"], [0x11])) == (
        "Panic(0x11)"
    )
    assert decode_revert_data(bytes.fromhex("deadbeef")) == "custom error 0xdeadbeef"
    assert decode_revert_data(b"\x01") == "malformed revert data 0x01"


def test_revert_reason_from_rpc_error() -> None:
    pause = "0x" + _selector("EnforcedPause()").hex()
    assert revert_reason_from_rpc_error({"message": "execution reverted", "data": pause}) == (
        "EnforcedPause()"
    )
    assert revert_reason_from_rpc_error({"data": {"data": pause}}) == "EnforcedPause()"
    assert revert_reason_from_rpc_error({"message": "execution reverted: nope"}) == "nope"
    assert revert_reason_from_rpc_error({"message": "execution reverted"}) is None


def test_erc20_transfers_reads_only_erc20_transfer_logs() -> None:
    token = "0x" + "aa" * 20
    sender, recipient = "0x" + "01" * 20, "0x" + "02" * 20

    def topic(address: str) -> bytes:
        return bytes(12) + bytes.fromhex(address[2:])

    logs = [
        {
            "address": token.upper().replace("0X", "0x"),
            "topics": [TRANSFER_TOPIC, topic(sender), topic(recipient)],
            "data": (42).to_bytes(32, "big"),
        },
        {  # ERC-721 Transfer: the token id is a topic
            "address": token,
            "topics": [TRANSFER_TOPIC, topic(sender), topic(recipient), bytes(32)],
            "data": b"",
        },
        {"address": token, "topics": [bytes(32)], "data": b""},
    ]
    [found] = erc20_transfers(logs)
    assert (found.token, found.sender, found.recipient, found.value) == (
        token,
        sender,
        recipient,
        42,
    )


def test_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CHAIN",
        "CHAIN_RPC_URL",
        "MONITOR_POLL_SECONDS",
        "MONITOR_GRPC_PORT",
        "REDIS_PREFIX",
    ):
        monkeypatch.delenv(name, raising=False)
    defaults = MonitorSettings.from_env()
    assert (defaults.chain, defaults.chain_rpc_url) == ("polygon", "http://127.0.0.1:8545")
    assert (defaults.poll_seconds, defaults.grpc_port, defaults.redis_prefix) == (
        0.5,
        50054,
        "aws:",
    )
    monkeypatch.setenv("MONITOR_GRPC_PORT", "0")
    monkeypatch.setenv("MONITOR_POLL_SECONDS", "2")
    monkeypatch.setenv("CHAIN_RPC_URL", "http://127.0.0.1:9999")
    settings = MonitorSettings.from_env()
    assert (settings.grpc_port, settings.poll_seconds, settings.chain_rpc_url) == (
        0,
        2.0,
        "http://127.0.0.1:9999",
    )
    monkeypatch.setenv("MONITOR_GRPC_PORT", "-1")
    with pytest.raises(SettingsError, match="MONITOR_GRPC_PORT"):
        MonitorSettings.from_env()
