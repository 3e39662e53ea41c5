"""Recipient address rules: 0x + 40 hex; mixed case must be a valid EIP-55 checksum."""

from __future__ import annotations

import re
from typing import NewType

from eth_utils.address import is_checksum_address

LowerAddress = NewType("LowerAddress", str)
"""An address normalised to lowercase hex, as stored in the database."""

ZERO_ADDRESS = LowerAddress("0x" + "0" * 40)
_HEX40 = re.compile(r"^0x[0-9a-fA-F]{40}$")


class AddressError(ValueError):
    """The text is not an acceptable recipient address."""


def parse_address(text: str) -> LowerAddress:
    """Validate and normalise. Raises AddressError saying what to fix."""
    if not text:
        raise AddressError("is required: 0x followed by 40 hexadecimal digits")
    if not _HEX40.match(text):
        raise AddressError("must be 0x followed by 40 hexadecimal digits")
    body = text[2:]
    if body != body.lower() and not is_checksum_address(text):
        raise AddressError(
            "has mixed case but an invalid EIP-55 checksum; check it or send it in lowercase"
        )
    lowered = LowerAddress(text.lower())
    if lowered == ZERO_ADDRESS:
        raise AddressError("is the zero address; tokens sent there are lost")
    return lowered
