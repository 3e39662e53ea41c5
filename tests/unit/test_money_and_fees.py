"""Pure rules: amounts as integers, address checks, ERC-20 calldata and EIP-1559 pricing."""

from __future__ import annotations

import pytest
from eth_utils.address import is_checksum_address, to_checksum_address
from hypothesis import given
from hypothesis import strategies as st

from withdrawal_shared.addresses import AddressError, is_eip55, parse_address
from withdrawal_shared.amounts import AmountError, format_amount, parse_amount
from withdrawal_shared.chain.erc20 import CalldataError, decode_transfer, encode_transfer
from withdrawal_shared.chain.fees import FeeCapExceeded, FeePolicy, price
from withdrawal_shared.states import Priority

GWEI = 10**9


@given(st.integers(min_value=1, max_value=10**40), st.integers(min_value=0, max_value=18))
def test_amount_round_trip(value: int, decimals: int) -> None:
    assert parse_amount(format_amount(value, decimals), decimals) == value


@pytest.mark.parametrize("text", ["", "0", "0.0", "-1", "1.", ".5", "1e3", "01", "1.2345678", " 1"])
def test_bad_amounts(text: str) -> None:
    with pytest.raises(AmountError):
        parse_amount(text, 6)


def test_addresses() -> None:
    assert parse_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").startswith("0x5aae")
    for bad in ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD", "0x" + "0" * 40, "0x12"):
        with pytest.raises(AddressError):
            parse_address(bad)


@given(st.binary(min_size=20, max_size=20), st.integers(min_value=0, max_value=39))
def test_the_eip55_check_is_eth_utils_s(address: bytes, flip: int) -> None:
    checksummed = to_checksum_address("0x" + address.hex())
    body = checksummed[2:]
    flipped = "0x" + body[:flip] + body[flip].swapcase() + body[flip + 1 :]
    for text in (checksummed, flipped, checksummed.lower(), "0x" + body.upper()):
        assert is_eip55(text) == is_checksum_address(text), text


@given(st.binary(min_size=20, max_size=20), st.integers(min_value=0, max_value=2**256 - 1))
def test_transfer_calldata_round_trip(address: bytes, amount: int) -> None:
    recipient = "0x" + address.hex()
    decoded = decode_transfer(encode_transfer(recipient, amount))
    assert (decoded.recipient, decoded.amount) == (recipient, amount)


def test_transfer_calldata_rejects_other_calls() -> None:
    data = encode_transfer("0x" + "11" * 20, 5)
    for bad in (data[:-1], b"\x00" * 4 + data[4:], data + b"\x00"):
        with pytest.raises(CalldataError):
            decode_transfer(bad)


POLICY = FeePolicy(
    min_priority_fee_wei=25 * GWEI, max_fee_cap_wei=500 * GWEI, base_fee_headroom_pct=100
)


def history(base_fee: int, rewards: list[list[int]]) -> dict[str, object]:
    return {
        "baseFeePerGas": [hex(base_fee)] * (len(rewards) + 1),
        "reward": [[hex(r) for r in row] for row in rewards],
    }


def test_percentile_by_urgency_and_minimum_tip() -> None:
    market = history(30 * GWEI, [[20 * GWEI, 40 * GWEI, 90 * GWEI]] * 5)
    standard = price(market, Priority.STANDARD, POLICY)
    priority = price(market, Priority.PRIORITY, POLICY)
    emergency = price(market, Priority.EMERGENCY, POLICY)
    assert standard.max_priority_fee_per_gas == 25 * GWEI  # market 20 < Polygon's minimum
    assert priority.max_priority_fee_per_gas == 40 * GWEI
    assert emergency.max_priority_fee_per_gas == 90 * GWEI
    assert standard.max_fee_per_gas == 60 * GWEI + 25 * GWEI  # base fee doubled + tip


def test_cap_applies_and_refuses_when_unpayable() -> None:
    capped = price(history(240 * GWEI, [[30 * GWEI] * 3]), Priority.STANDARD, POLICY)
    assert capped.max_fee_per_gas == 500 * GWEI
    with pytest.raises(FeeCapExceeded):
        price(history(490 * GWEI, [[30 * GWEI] * 3]), Priority.STANDARD, POLICY)
