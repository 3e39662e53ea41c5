"""The calldata the signer agrees to sign, decoded by the signer itself (never trusted).

For now exactly one shape is accepted for payouts: ERC-20 `transfer(address,uint256)`, 68 bytes,
strictly ABI-encoded (the address word's 12 high bytes are zero). Anything else is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

TRANSFER_SELECTOR = bytes.fromhex("a9059cbb")  # keccak("transfer(address,uint256)")[:4]
TRANSFER_LENGTH = 4 + 32 + 32


class UnsupportedCalldataError(ValueError):
    """The calldata is not a call the signer knows how to check; the message says why."""


@dataclass(frozen=True)
class Erc20Transfer:
    """A decoded `transfer(recipient, amount)`; the token is the transaction's `to`."""

    recipient: str  # lowercase 0x address
    amount: int  # token base units


def decode_erc20_transfer(data: bytes) -> Erc20Transfer:
    """Decode `data` as an ERC-20 transfer or raise UnsupportedCalldataError."""
    if len(data) < 4 or data[:4] != TRANSFER_SELECTOR:
        selector = "0x" + data[:4].hex() if data else "empty calldata"
        raise UnsupportedCalldataError(
            f"only ERC-20 transfer(address,uint256) (selector 0xa9059cbb) is signed, not {selector}"
        )
    if len(data) != TRANSFER_LENGTH:
        raise UnsupportedCalldataError(
            f"an ERC-20 transfer call is exactly {TRANSFER_LENGTH} bytes, not {len(data)}"
        )
    word = data[4:36]
    if any(word[:12]):
        raise UnsupportedCalldataError("the recipient word of the transfer has non-zero high bytes")
    return Erc20Transfer(
        recipient="0x" + word[12:].hex(), amount=int.from_bytes(data[36:68], "big")
    )


def encode_erc20_transfer(recipient: str, amount: int) -> bytes:
    """The calldata of `transfer(recipient, amount)` (used by tests and tooling)."""
    address = bytes.fromhex(recipient.removeprefix("0x"))
    if len(address) != 20:
        raise ValueError("recipient must be a 20-byte address")
    if not 0 <= amount < 2**256:
        raise ValueError("amount must be a uint256")
    return TRANSFER_SELECTOR + address.rjust(32, b"\0") + amount.to_bytes(32, "big")
