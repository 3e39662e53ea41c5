"""EIP-1559 (type 2) transaction signing over any `KeyBackend`.

`sign_eip1559()` builds the unsigned transaction with eth-account's `TypedTransaction`, has the
backend sign its signing hash (the key never leaves the backend), encodes the signed
transaction with the same library, and checks that the result recovers to the backend's
address before returning it. The access list is always empty.

`decode_eip1559()` reads the fields back out of signed bytes (the signer compares a repeated
request with what it stored).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_typing import HexStr
from eth_utils.address import is_address, to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes

from svc_signer.keys.backend import KeyBackend, KeyBackendError

EIP1559_TYPE = 2
_UINT256_MAX = 2**256 - 1


class InvalidTransactionError(ValueError):
    """A transaction field is out of range or malformed; nothing was signed."""


@dataclass(frozen=True)
class SignedTransaction:
    """A signed EIP-1559 transaction: its raw bytes (ready to broadcast) and its hash."""

    raw: bytes
    hash: HexStr
    sender: str
    nonce: int


def _uint(name: str, value: int, *, positive: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTransactionError(f"{name} must be an integer, not {type(value).__name__}")
    if value < (1 if positive else 0) or value > _UINT256_MAX:
        bound = "positive" if positive else "non-negative"
        raise InvalidTransactionError(f"{name} must be a {bound} 256-bit integer")
    return value


def build_unsigned_eip1559(
    *,
    chain_id: int,
    nonce: int,
    to: str,
    data: bytes,
    value: int,
    gas: int,
    max_fee_per_gas: int,
    max_priority_fee_per_gas: int,
) -> TypedTransaction:
    """The unsigned type-2 transaction for these fields; raises InvalidTransactionError."""
    if not isinstance(to, str) or not is_address(to):
        raise InvalidTransactionError("to must be a 20-byte hex address (EIP-55 if mixed case)")
    if not isinstance(data, bytes | bytearray):
        raise InvalidTransactionError("data must be bytes")
    max_fee = _uint("max_fee_per_gas", max_fee_per_gas)
    tip = _uint("max_priority_fee_per_gas", max_priority_fee_per_gas)
    if tip > max_fee:
        raise InvalidTransactionError("max_priority_fee_per_gas must not exceed max_fee_per_gas")
    fields: dict[str, Any] = {
        "type": EIP1559_TYPE,
        "chainId": _uint("chain_id", chain_id, positive=True),
        "nonce": _uint("nonce", nonce),
        "to": to_checksum_address(to),
        "data": bytes(data),
        "value": _uint("value", value),
        "gas": _uint("gas", gas, positive=True),
        "maxFeePerGas": max_fee,
        "maxPriorityFeePerGas": tip,
        "accessList": [],
    }
    return TypedTransaction.from_dict(fields)


def sign_eip1559(
    backend: KeyBackend,
    *,
    chain_id: int,
    nonce: int,
    to: str,
    data: bytes,
    value: int,
    gas: int,
    max_fee_per_gas: int,
    max_priority_fee_per_gas: int,
) -> SignedTransaction:
    """Sign an EIP-1559 transaction with `backend`'s key.

    Raises InvalidTransactionError for bad fields, and KeyBackendError when the backend fails
    or the signed transaction does not recover to the backend's address.
    """
    unsigned = build_unsigned_eip1559(
        chain_id=chain_id,
        nonce=nonce,
        to=to,
        data=data,
        value=value,
        gas=gas,
        max_fee_per_gas=max_fee_per_gas,
        max_priority_fee_per_gas=max_priority_fee_per_gas,
    )
    signature = backend.sign_digest(unsigned.hash())
    signed_fields = {
        **unsigned.as_dict(),
        "v": signature.v,
        "r": signature.r,
        "s": signature.s,
    }
    raw = TypedTransaction.from_dict(signed_fields).encode()
    sender = Account.recover_transaction(raw)
    if sender != backend.address:
        raise KeyBackendError(
            f"the {backend.backend_name} backend signed a transaction that recovers to "
            f"{sender}, not to its address {backend.address}; refusing to return it"
        )
    return SignedTransaction(
        raw=raw, hash=HexStr("0x" + keccak(raw).hex()), sender=sender, nonce=nonce
    )


@dataclass(frozen=True)
class Eip1559Fields:
    """The signed-over fields of an EIP-1559 transaction (addresses lowercase, empty access list
    implied)."""

    chain_id: int
    nonce: int
    to: str
    data: bytes
    value: int
    gas: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int


def decode_eip1559(raw: bytes) -> Eip1559Fields:
    """The fields of a signed type-2 transaction; raises InvalidTransactionError otherwise.

    A transaction with a non-empty access list or no `to` (contract creation) is refused too:
    `sign_eip1559` never produces one.
    """
    if not raw or raw[0] != EIP1559_TYPE:
        raise InvalidTransactionError("not an EIP-1559 (type 2) transaction")
    try:
        fields = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
    except Exception as exc:  # rlp and eth-account raise several unrelated types
        raise InvalidTransactionError(f"cannot decode the transaction: {exc}") from None
    to = bytes(fields.get("to") or b"")
    if len(to) != 20 or list(fields.get("accessList") or ()):
        raise InvalidTransactionError("not a plain call (no `to`, or a non-empty access list)")
    return Eip1559Fields(
        chain_id=int(fields["chainId"]),
        nonce=int(fields["nonce"]),
        to="0x" + to.hex(),
        data=bytes(fields.get("data") or b""),
        value=int(fields["value"]),
        gas=int(fields["gas"]),
        max_fee_per_gas=int(fields["maxFeePerGas"]),
        max_priority_fee_per_gas=int(fields["maxPriorityFeePerGas"]),
    )
