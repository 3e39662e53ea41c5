"""ERC-20 `transfer(address,uint256)` calldata: encoding for the processor, decoding for the
signer's policy (which signs only calldata it has decoded itself)."""

from __future__ import annotations

from dataclasses import dataclass

TRANSFER_SELECTOR = bytes.fromhex("a9059cbb")
TRANSFER_CALLDATA_LENGTH = 4 + 32 + 32
# keccak256("Transfer(address,address,uint256)")
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


class CalldataError(ValueError):
    """The calldata is not the call it is claimed to be."""


@dataclass(frozen=True)
class Transfer:
    recipient: str  # lowercase 0x address
    amount: int  # token base units


def encode_transfer(recipient: str, amount: int) -> bytes:
    if amount < 0 or amount >= 2**256:
        raise CalldataError("amount out of uint256 range")
    address = bytes.fromhex(recipient.removeprefix("0x"))
    if len(address) != 20:
        raise CalldataError("recipient is not a 20-byte address")
    return TRANSFER_SELECTOR + address.rjust(32, b"\0") + amount.to_bytes(32, "big")


def encode_balance_of(holder: str) -> str:
    """Calldata of `balanceOf(holder)` as 0x-hex, for eth_call."""
    return "0x70a08231" + holder.removeprefix("0x").lower().rjust(64, "0")


def decode_transfer(data: bytes) -> Transfer:
    """Decode strictly ABI-encoded `transfer(address,uint256)` or raise CalldataError."""
    if len(data) < 4 or data[:4] != TRANSFER_SELECTOR:
        selector = "0x" + data[:4].hex() if data else "empty calldata"
        raise CalldataError(
            f"only ERC-20 transfer(address,uint256) (selector 0xa9059cbb) is accepted, "
            f"not {selector}"
        )
    if len(data) != TRANSFER_CALLDATA_LENGTH:
        raise CalldataError(
            f"an ERC-20 transfer call is exactly {TRANSFER_CALLDATA_LENGTH} bytes, not {len(data)}"
        )
    word = data[4:36]
    if any(word[:12]):
        raise CalldataError("the recipient word of the transfer has non-zero high bytes")
    return Transfer("0x" + word[12:].hex(), int.from_bytes(data[36:68], "big"))
