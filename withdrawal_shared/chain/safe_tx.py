"""Safe (v1.4.1) transactions: the EIP-712 hash the owners sign, their signatures, and
`execTransaction` calldata and events.

The treasury is a Safe multisig: an M-of-N contract that runs a call only with M owner
signatures over the call's EIP-712 hash (`safe_tx_hash`). A `SafeTx` is that call: target,
value, calldata, operation (CALL or DELEGATECALL), the gas-refund fields (`safe_tx_gas`,
`base_gas`, `gas_price`, `gas_token`, `refund_receiver`; always zero here, so nobody is refunded
and a failing inner call reverts the whole execution) and the Safe's own nonce.

- processor: `safe_tx_hash(chain_id, safe, tx)`, then `pack_signatures` over the owners'
  signatures (sorted by owner address, as the Safe requires) and `encode_exec_transaction`, the
  calldata a hot wallet sends to the Safe.
- signers: an owner's signer recomputes `safe_tx_hash` from the fields itself (it never signs a
  hash it is handed) and returns `owner_signature` (65 bytes, `v` 27 or 28); the hot wallet's
  signer decodes `execTransaction` calldata with `decode_exec_transaction` (strict: anything but
  the canonical ABI encoding raises `CalldataError`).
- monitor: `EXECUTION_SUCCESS_TOPIC` / `EXECUTION_FAILURE_TOPIC` carry the executed hash as
  their first indexed topic.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from withdrawal_shared.chain.erc20 import CalldataError
from withdrawal_shared.chain.types import ChecksumAddress

__all__ = [
    "DOMAIN_SEPARATOR_TYPEHASH",
    "EXECUTION_FAILURE_TOPIC",
    "EXECUTION_SUCCESS_TOPIC",
    "EXEC_TRANSACTION_SELECTOR",
    "SAFE_TX_TYPEHASH",
    "ZERO_ADDRESS",
    "Operation",
    "OwnerSignature",
    "SafeTx",
    "decode_exec_transaction",
    "domain_separator",
    "encode_exec_transaction",
    "owner_signature",
    "pack_signatures",
    "safe_tx_hash",
    "safe_tx_struct_hash",
]

ZERO_ADDRESS = ChecksumAddress(to_checksum_address("0x" + "00" * 20))

DOMAIN_SEPARATOR_TYPEHASH = keccak(text="EIP712Domain(uint256 chainId,address verifyingContract)")
SAFE_TX_TYPEHASH = keccak(
    text="SafeTx(address to,uint256 value,bytes data,uint8 operation,uint256 safeTxGas,"
    "uint256 baseGas,uint256 gasPrice,address gasToken,address refundReceiver,uint256 nonce)"
)
_EXEC_TYPES = (
    "address",
    "uint256",
    "bytes",
    "uint8",
    "uint256",
    "uint256",
    "uint256",
    "address",
    "address",
    "bytes",
)
EXEC_TRANSACTION_SELECTOR = keccak(
    text="execTransaction(address,uint256,bytes,uint8,uint256,uint256,uint256,address,address,bytes)"
)[:4]
EXECUTION_SUCCESS_TOPIC = "0x" + keccak(text="ExecutionSuccess(bytes32,uint256)").hex()
EXECUTION_FAILURE_TOPIC = "0x" + keccak(text="ExecutionFailure(bytes32,uint256)").hex()

SIGNATURE_SIZE = 65


class Operation(enum.IntEnum):
    """How the Safe runs the call: CALL, or DELEGATECALL (its own storage; always refused)."""

    CALL = 0
    DELEGATECALL = 1


@dataclass(frozen=True)
class SafeTx:
    """One Safe transaction, exactly the fields its EIP-712 hash covers."""

    to: ChecksumAddress
    value: int
    data: bytes
    operation: int
    safe_tx_gas: int
    base_gas: int
    gas_price: int
    gas_token: ChecksumAddress
    refund_receiver: ChecksumAddress
    nonce: int

    @classmethod
    def call(cls, to: str, data: bytes, nonce: int) -> SafeTx:
        """A plain CALL of `to` with `data`, no value, no gas refund, at Safe nonce `nonce`."""
        return cls(
            to=ChecksumAddress(to_checksum_address(to)),
            value=0,
            data=bytes(data),
            operation=Operation.CALL,
            safe_tx_gas=0,
            base_gas=0,
            gas_price=0,
            gas_token=ZERO_ADDRESS,
            refund_receiver=ZERO_ADDRESS,
            nonce=nonce,
        )


@dataclass(frozen=True)
class OwnerSignature:
    """An owner's signature over a Safe transaction hash: 65 bytes `r || s || v`, v 27 or 28."""

    owner: ChecksumAddress
    signature: bytes


def domain_separator(chain_id: int, safe: str) -> bytes:
    """The Safe's EIP-712 domain separator (chain id and the Safe's own address)."""
    return keccak(
        abi_encode(
            ["bytes32", "uint256", "address"],
            [DOMAIN_SEPARATOR_TYPEHASH, chain_id, to_checksum_address(safe)],
        )
    )


def safe_tx_struct_hash(tx: SafeTx) -> bytes:
    """The EIP-712 struct hash of `tx` (`hashStruct(SafeTx)`)."""
    return keccak(
        abi_encode(
            [
                "bytes32",
                "address",
                "uint256",
                "bytes32",
                "uint8",
                "uint256",
                "uint256",
                "uint256",
                "address",
                "address",
                "uint256",
            ],
            [
                SAFE_TX_TYPEHASH,
                tx.to,
                tx.value,
                keccak(tx.data),
                tx.operation,
                tx.safe_tx_gas,
                tx.base_gas,
                tx.gas_price,
                tx.gas_token,
                tx.refund_receiver,
                tx.nonce,
            ],
        )
    )


def safe_tx_hash(chain_id: int, safe: str, tx: SafeTx) -> bytes:
    """The 32-byte hash the owners sign; the Safe's `getTransactionHash` returns the same."""
    return keccak(b"\x19\x01" + domain_separator(chain_id, safe) + safe_tx_struct_hash(tx))


def owner_signature(owner: str, r: int, s: int, recovery_id: int) -> OwnerSignature:
    """An owner's ECDSA signature of the raw hash in the Safe's form (`v` = 27 + recovery id)."""
    if recovery_id not in (0, 1):
        raise ValueError("a recovery id is 0 or 1")
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([27 + recovery_id])
    return OwnerSignature(owner=ChecksumAddress(to_checksum_address(owner)), signature=raw)


def pack_signatures(signatures: Sequence[OwnerSignature]) -> bytes:
    """The `signatures` argument of `execTransaction`: each 65 bytes, ascending owner address.

    Raises ValueError for two signatures of one owner or a signature not 65 bytes long.
    """
    ordered = sorted(signatures, key=lambda item: int(item.owner, 16))
    owners = [item.owner.lower() for item in ordered]
    if len(set(owners)) != len(owners):
        raise ValueError("two signatures of the same owner")
    for item in ordered:
        if len(item.signature) != SIGNATURE_SIZE:
            raise ValueError(f"an owner signature is {SIGNATURE_SIZE} bytes")
    return b"".join(item.signature for item in ordered)


def encode_exec_transaction(tx: SafeTx, signatures: bytes) -> bytes:
    """Calldata of `execTransaction(...)` running `tx` with the packed owner `signatures`."""
    return EXEC_TRANSACTION_SELECTOR + abi_encode(
        list(_EXEC_TYPES),
        [
            tx.to,
            tx.value,
            tx.data,
            tx.operation,
            tx.safe_tx_gas,
            tx.base_gas,
            tx.gas_price,
            tx.gas_token,
            tx.refund_receiver,
            signatures,
        ],
    )


def decode_exec_transaction(calldata: bytes) -> tuple[SafeTx, bytes]:
    """`(tx, signatures)` from `execTransaction` calldata, where `tx.nonce` is -1 (the nonce
    is not part of the call; the Safe uses its current one). Strict: anything but the
    canonical encoding raises `CalldataError`."""
    data = bytes(calldata)
    if data[:4] != EXEC_TRANSACTION_SELECTOR:
        raise CalldataError("not an execTransaction call")
    try:
        values = abi_decode(list(_EXEC_TYPES), data[4:], strict=True)
    except Exception as error:  # eth_abi raises several decoding errors
        raise CalldataError(f"execTransaction calldata does not decode: {error}") from error
    tx = SafeTx(
        to=ChecksumAddress(to_checksum_address(values[0])),
        value=int(values[1]),
        data=bytes(values[2]),
        operation=int(values[3]),
        safe_tx_gas=int(values[4]),
        base_gas=int(values[5]),
        gas_price=int(values[6]),
        gas_token=ChecksumAddress(to_checksum_address(values[7])),
        refund_receiver=ChecksumAddress(to_checksum_address(values[8])),
        nonce=-1,
    )
    signatures = bytes(values[9])
    if encode_exec_transaction(tx, signatures) != data:
        raise CalldataError("execTransaction calldata is not canonically encoded")
    return tx, signatures
