"""Money is integers: decimal strings in the API, integer base units everywhere else.

No float ever touches an amount: parsing works on the string's digits.
"""

from __future__ import annotations

import re
from typing import NewType

BaseUnits = NewType("BaseUnits", int)
"""An amount in a token's smallest unit (USDC: 10^-6)."""

_PATTERN_CACHE: dict[int, re.Pattern[str]] = {}


class AmountError(ValueError):
    """The amount string is not a valid positive decimal for the token."""


def _pattern(decimals: int) -> re.Pattern[str]:
    pattern = _PATTERN_CACHE.get(decimals)
    if pattern is None:
        fraction = rf"(\.[0-9]{{1,{decimals}}})?" if decimals > 0 else ""
        pattern = re.compile(rf"^(0|[1-9][0-9]*){fraction}$")
        _PATTERN_CACHE[decimals] = pattern
    return pattern


def parse_amount(text: str, decimals: int) -> BaseUnits:
    """`"12.5"` with 6 decimals -> 12500000. Raises AmountError saying what is wrong."""
    if not text:
        raise AmountError('is required, e.g. "12.5"')
    if len(text) > 100:
        raise AmountError("is too long")
    if not _pattern(decimals).match(text):
        if re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", text):
            if text.startswith("-"):
                raise AmountError("must be greater than zero")
            if "." in text and len(text.split(".")[1]) > decimals:
                raise AmountError(f"has more than {decimals} decimal places")
        raise AmountError(
            f'must be a decimal string like "12.5" with at most {decimals} decimal places'
        )
    whole, _, fraction = text.partition(".")
    value = int(whole) * 10**decimals + int((fraction or "0").ljust(decimals, "0")[:decimals] or 0)
    if value <= 0:
        raise AmountError("must be greater than zero")
    return BaseUnits(value)


def format_amount(value: int, decimals: int) -> str:
    """12500000 with 6 decimals -> `"12.5"` (no trailing zeros, no exponent)."""
    sign = "-" if value < 0 else ""
    whole, fraction = divmod(abs(value), 10**decimals)
    if decimals == 0 or fraction == 0:
        return f"{sign}{whole}"
    digits = str(fraction).rjust(decimals, "0").rstrip("0")
    return f"{sign}{whole}.{digits}"
