"""Treasury operations: payload checks, the one call each kind makes, and the Safe
transaction helpers that need no chain (their agreement with the Safe contract itself is in
tests/chain/test_safe_treasury.py)."""

from __future__ import annotations

from typing import Any

import pytest
from eth_utils.address import to_checksum_address

from withdrawal_shared import treasury_ops
from withdrawal_shared.chain import payout
from withdrawal_shared.chain.erc20 import CalldataError, encode_transfer
from withdrawal_shared.chain.safe_tx import (
    OwnerSignature,
    SafeTx,
    decode_exec_transaction,
    encode_exec_transaction,
    pack_signatures,
    safe_tx_hash,
)
from withdrawal_shared.chain.types import ChecksumAddress
from withdrawal_shared.errors import ApiError, Code


def _address(byte: int) -> ChecksumAddress:
    return ChecksumAddress(to_checksum_address("0x" + f"{byte:02x}" * 20))


SAFE, VAULT, USDC, HOT, OTHER = (_address(b) for b in (0x5A, 0x7A, 0xC0, 0x40, 0x41))
REFS = treasury_ops.TreasuryRefs(
    chain="polygon",
    safe=SAFE,
    vault=VAULT,
    tokens={"USDC": USDC},
    hot_wallets=frozenset({HOT.lower()}),
)


def _fields(error: ApiError) -> set[str]:
    return {violation.field for violation in error.field_violations}


@pytest.mark.parametrize(
    ("kind", "payload", "to", "value", "data"),
    [
        (
            "treasury.set_vault_operator",
            {"chain": "polygon", "operator": HOT, "allowed": True},
            VAULT,
            0,
            payout.encode_set_operator(HOT, True),
        ),
        ("treasury.pause_vault", {"chain": "polygon"}, VAULT, 0, payout.encode_pause()),
        ("treasury.unpause_vault", {"chain": "polygon"}, VAULT, 0, payout.encode_unpause()),
        (
            "treasury.set_outflow_cap",
            {
                "chain": "polygon",
                "token": "usdc",
                "cap_per_window_base_units": "5000000",
                "window_seconds": "3600",
            },
            VAULT,
            0,
            payout.encode_set_outflow_cap(USDC, 5_000_000, 3600),
        ),
        (
            "treasury.sweep",
            {"chain": "polygon", "token": "USDC", "amount_base_units": "7"},
            VAULT,
            0,
            payout.encode_sweep(USDC, SAFE, 7),
        ),
        (
            "treasury.fund_vault",
            {"chain": "polygon", "token": "USDC", "amount_base_units": "9"},
            USDC,
            0,
            encode_transfer(VAULT, 9),
        ),
        (
            "treasury.fund_gas",
            {"chain": "polygon", "wallet": HOT.lower(), "amount_wei": "10"},
            HOT,
            10,
            b"",
        ),
    ],
)
def test_each_kind_builds_its_one_call(
    kind: str, payload: dict[str, Any], to: str, value: int, data: bytes
) -> None:
    assert treasury_ops.validate(kind, payload).startswith("chains/polygon/")
    call = treasury_ops.build(kind, payload, REFS)
    assert (call.to, call.value, call.data) == (to, value, data)


def test_a_sweep_only_ever_goes_back_to_the_treasury() -> None:
    payload = {"chain": "polygon", "token": "USDC", "amount_base_units": "7", "to": OTHER}
    with pytest.raises(ApiError) as refused:
        treasury_ops.validate("treasury.sweep", payload)
    assert _fields(refused.value) == {"change.payload.to"}


@pytest.mark.parametrize(
    ("kind", "payload", "fields"),
    [
        ("treasury.pause_vault", {}, {"change.payload.chain"}),
        (
            "treasury.set_vault_operator",
            {"chain": "polygon", "operator": "0x" + "00" * 20, "allowed": "yes"},
            {"change.payload.operator", "change.payload.allowed"},
        ),
        (
            "treasury.fund_vault",
            {"chain": "polygon", "token": "USDC", "amount_base_units": 5},
            {"change.payload.amount_base_units"},
        ),
        (
            "treasury.set_outflow_cap",
            {
                "chain": "polygon",
                "token": "USDC",
                "cap_per_window_base_units": "1",
                "window_seconds": "0",
            },
            {"change.payload.window_seconds"},
        ),
        (
            "treasury.fund_gas",
            {"chain": "Polygon!", "wallet": HOT, "amount_wei": "0"},
            {"change.payload.chain", "change.payload.amount_wei"},
        ),
    ],
)
def test_bad_payloads_name_every_bad_field(
    kind: str, payload: dict[str, Any], fields: set[str]
) -> None:
    with pytest.raises(ApiError) as refused:
        treasury_ops.validate(kind, payload)
    assert refused.value.code is Code.INVALID_ARGUMENT
    assert _fields(refused.value) == fields
    with pytest.raises(ValueError):
        treasury_ops.build(kind, payload, REFS)


def test_an_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(ApiError) as refused:
        treasury_ops.validate("treasury.add_owner", {"chain": "polygon"})
    assert "treasury.fund_gas" in refused.value.field_violations[0].description


def test_what_the_chain_lacks_is_named() -> None:
    with pytest.raises(treasury_ops.TreasuryOperationError, match="not a hot wallet"):
        treasury_ops.build(
            "treasury.fund_gas", {"chain": "polygon", "wallet": OTHER, "amount_wei": "1"}, REFS
        )
    with pytest.raises(treasury_ops.TreasuryOperationError, match="token DAI"):
        treasury_ops.build(
            "treasury.fund_vault",
            {"chain": "polygon", "token": "DAI", "amount_base_units": "1"},
            REFS,
        )
    with pytest.raises(treasury_ops.TreasuryOperationError, match="chain ethereum"):
        treasury_ops.build("treasury.pause_vault", {"chain": "ethereum"}, REFS)


def test_exec_transaction_calldata_round_trips_and_is_strict() -> None:
    tx = SafeTx.call(VAULT, payout.encode_pause(), nonce=4)
    signatures = b"\x01" * 65 + b"\x02" * 65
    calldata = encode_exec_transaction(tx, signatures)
    decoded, decoded_signatures = decode_exec_transaction(calldata)
    assert decoded == SafeTx.call(VAULT, payout.encode_pause(), nonce=-1)
    assert decoded_signatures == signatures
    with pytest.raises(CalldataError):
        decode_exec_transaction(calldata + b"\x00")
    with pytest.raises(CalldataError):
        decode_exec_transaction(b"\x00\x00\x00\x00" + calldata[4:])


def test_the_hash_covers_every_field_chain_and_safe() -> None:
    tx = SafeTx.call(VAULT, payout.encode_pause(), nonce=4)
    base = safe_tx_hash(137, SAFE, tx)
    assert safe_tx_hash(137, SAFE, tx) == base
    others = [
        safe_tx_hash(80002, SAFE, tx),
        safe_tx_hash(137, OTHER, tx),
        safe_tx_hash(137, SAFE, SafeTx.call(VAULT, payout.encode_pause(), nonce=5)),
        safe_tx_hash(137, SAFE, SafeTx.call(VAULT, payout.encode_unpause(), nonce=4)),
        safe_tx_hash(137, SAFE, SafeTx.call(USDC, payout.encode_pause(), nonce=4)),
    ]
    assert len({base, *others}) == 1 + len(others)


def test_signatures_are_packed_in_ascending_owner_order_once_each() -> None:
    low, high = _address(0x11), _address(0xEE)
    packed = pack_signatures(
        [OwnerSignature(high, b"\xbb" * 65), OwnerSignature(low, b"\xaa" * 65)]
    )
    assert packed == b"\xaa" * 65 + b"\xbb" * 65
    with pytest.raises(ValueError, match="same owner"):
        pack_signatures([OwnerSignature(low, b"\xaa" * 65), OwnerSignature(low, b"\xcc" * 65)])
    with pytest.raises(ValueError, match="65 bytes"):
        pack_signatures([OwnerSignature(low, b"\xaa" * 64)])
