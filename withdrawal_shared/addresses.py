"""Recipient address rules: 0x + 40 hex; mixed case must be a valid EIP-55 checksum."""

from __future__ import annotations

import re
from typing import NewType

from eth_hash.auto import keccak

LowerAddress = NewType("LowerAddress", str)
"""An address normalised to lowercase hex, as stored in the database."""

ZERO_ADDRESS = LowerAddress("0x" + "0" * 40)
_HEX40 = re.compile(r"^0x[0-9a-fA-F]{40}$")
_UPPER_NIBBLES = frozenset("89abcdef")


def is_eip55(text: str) -> bool:
    """Whether `text` (0x + 40 hex digits) is its address's EIP-55 checksum form: each letter
    uppercase exactly where the Keccak-256 of the lowercase hex has a nibble of 8 or more.
    What `eth_utils.is_checksum_address` decides, at less than half its cost (a batch file's
    rows are checked one by one)."""
    body = text[2:]
    lower = body.lower()
    nibbles = keccak(lower.encode("ascii")).hex()[:40]
    upper = _UPPER_NIBBLES
    expected = [c.upper() if d in upper else c for c, d in zip(lower, nibbles, strict=True)]
    return body == "".join(expected)


class AddressError(ValueError):
    """The text is not an acceptable recipient address."""


def parse_address(text: str) -> LowerAddress:
    """Validate and normalise. Raises AddressError saying what to fix."""
    if not text:
        raise AddressError("is required: 0x followed by 40 hexadecimal digits")
    if not _HEX40.match(text):
        raise AddressError("must be 0x followed by 40 hexadecimal digits")
    body = text[2:]
    if body != body.lower() and not is_eip55(text):
        raise AddressError(
            "has mixed case but an invalid EIP-55 checksum; check it or send it in lowercase"
        )
    lowered = LowerAddress(text.lower())
    if lowered == ZERO_ADDRESS:
        raise AddressError("is the zero address; tokens sent there are lost")
    return lowered
