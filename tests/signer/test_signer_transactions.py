"""EIP-1559 signing over both key backends: recovery, decoding, and acceptance by anvil."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3 import Web3

from svc_signer.keys import KeyBackend
from svc_signer.transactions import InvalidTransactionError, sign_eip1559

RECIPIENT = "0x000000000000000000000000000000000000dEaD"


def test_sign_eip1559_recovers_and_decodes(backend: KeyBackend) -> None:
    signed = sign_eip1559(
        backend,
        chain_id=137,
        nonce=7,
        to=RECIPIENT.lower(),
        data=b"\xa9\x05\x9c\xbb" + b"\x00" * 64,
        value=12_500_000,
        gas=90_000,
        max_fee_per_gas=60_000_000_000,
        max_priority_fee_per_gas=30_000_000_000,
    )
    assert signed.raw[0] == 2
    assert Account.recover_transaction(signed.raw) == backend.address
    assert signed.sender == backend.address
    assert signed.hash == "0x" + keccak(signed.raw).hex()
    fields = TypedTransaction.from_bytes(HexBytes(signed.raw)).as_dict()
    assert fields["chainId"] == 137
    assert fields["nonce"] == 7
    assert HexBytes(fields["to"]) == HexBytes(RECIPIENT)
    assert HexBytes(fields["data"]) == HexBytes(b"\xa9\x05\x9c\xbb" + b"\x00" * 64)
    assert fields["value"] == 12_500_000
    assert fields["gas"] == 90_000
    assert fields["maxFeePerGas"] == 60_000_000_000
    assert fields["maxPriorityFeePerGas"] == 30_000_000_000
    assert list(fields["accessList"]) == []


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("to", "0x1234"),
        ("nonce", -1),
        ("chain_id", 0),
        ("value", 1.5),
        ("max_priority_fee_per_gas", 2_000_000_000),
    ],
)
def test_sign_eip1559_rejects_bad_fields(
    keystore_backend: KeyBackend, field: str, bad: object
) -> None:
    fields: dict[str, object] = {
        "chain_id": 137,
        "nonce": 0,
        "to": RECIPIENT,
        "data": b"",
        "value": 0,
        "gas": 21_000,
        "max_fee_per_gas": 1_000_000_000,
        "max_priority_fee_per_gas": 1_000_000_000,
        field: bad,
    }
    with pytest.raises(InvalidTransactionError):
        sign_eip1559(keystore_backend, **fields)  # type: ignore[arg-type]


@pytest.mark.chain
@pytest.mark.hsm
def test_signed_transactions_are_mined_by_anvil(
    anvil_url: str, keystore_backend: KeyBackend, hsm_backend: KeyBackend
) -> None:
    w3 = Web3(Web3.HTTPProvider(anvil_url, request_kwargs={"timeout": 10}))
    assert w3.eth.chain_id == 137
    for backend in (keystore_backend, hsm_backend):
        w3.provider.make_request("anvil_setBalance", [backend.address, hex(10**18)])  # type: ignore[arg-type]
        base_fee = int(w3.eth.get_block("latest")["baseFeePerGas"])
        tip = 1_000_000_000
        signed = sign_eip1559(
            backend,
            chain_id=137,
            nonce=w3.eth.get_transaction_count(backend.address),  # type: ignore[arg-type]
            to=RECIPIENT,
            data=b"",
            value=12_345,
            gas=21_000,
            max_fee_per_gas=2 * base_fee + tip,
            max_priority_fee_per_gas=tip,
        )
        tx_hash = w3.eth.send_raw_transaction(signed.raw)
        assert "0x" + tx_hash.hex().removeprefix("0x") == signed.hash
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        assert receipt["status"] == 1, backend.backend_name
        assert receipt["from"] == backend.address
        assert w3.eth.get_transaction(tx_hash)["type"] == 2
