"""Runtime token settings, transport-neutral: enable or disable a token, change its maximum
amount per withdrawal (the `tokens` row), each returning the row before and after (an admin
API calls these and audits the change).

The services read tokens through the reference-data cache (`reference.ReferenceCache`,
refreshed when older than `REFERENCE_MAX_AGE_SECONDS`, 5 s), so every service applies a change
within about five seconds of its commit: the gateway and the processor validate new
withdrawals against it (a disabled token or an amount above the maximum is REJECTED), and the
signer reads the enabled tokens from the database on every request (it refuses to call a
disabled token's contract at once).

Disabling a token is not a pause: withdrawals already accepted are REJECTED `TOKEN_DISABLED`
when validated, not held. To stop payouts and resume them later use the kill switch
(`withdrawal_shared.db.pauses`). Nor is disabling the chain's payout vault
(`payout_vaults.enabled = false`) a pause: the processor then pays one plain ERC-20 transfer
per withdrawal from the hot wallet. Nothing here touches the vault row.

Every function takes a `Session` inside a transaction the caller opens and commits.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from withdrawal_shared.db.models import Token
from withdrawal_shared.db.reference import REFERENCE_MAX_AGE_SECONDS
from withdrawal_shared.errors import FieldViolation, invalid_argument

__all__ = [
    "REFERENCE_MAX_AGE_SECONDS",
    "TokenChange",
    "TokenSettings",
    "set_token_enabled",
    "set_token_max_amount",
]


@dataclass(frozen=True)
class TokenSettings:
    """The runtime settings of one token row."""

    chain: str
    symbol: str
    enabled: bool
    max_amount_base_units: int


@dataclass(frozen=True)
class TokenChange:
    """The token's settings before and after; `changed` False when nothing was written."""

    before: TokenSettings
    after: TokenSettings

    @property
    def changed(self) -> bool:
        return self.before != self.after


def set_token_enabled(session: Session, chain: str, symbol: str, enabled: bool) -> TokenChange:
    """Enable or disable the token; idempotent. INVALID_ARGUMENT for an unknown token."""
    row = _locked(session, chain, symbol)
    before = _settings(row)
    if row.enabled != enabled:
        row.enabled = enabled
        session.flush()
    return TokenChange(before, _settings(row))


def set_token_max_amount(
    session: Session, chain: str, symbol: str, max_amount_base_units: int
) -> TokenChange:
    """Set the largest amount (token base units) one withdrawal may ask for; idempotent.
    INVALID_ARGUMENT for an unknown token or an amount that is not a positive integer of at
    most 65 digits."""
    if (
        isinstance(max_amount_base_units, bool)
        or not isinstance(max_amount_base_units, int)
        or not 0 < max_amount_base_units < 10**65
    ):
        raise invalid_argument(
            [
                FieldViolation(
                    "max_amount_base_units", "must be a positive integer of at most 65 digits"
                )
            ]
        )
    row = _locked(session, chain, symbol)
    before = _settings(row)
    if row.max_amount_base_units != max_amount_base_units:
        row.max_amount_base_units = max_amount_base_units
        session.flush()
    return TokenChange(before, _settings(row))


def _locked(session: Session, chain: str, symbol: str) -> Token:
    row = session.scalars(
        select(Token).where(Token.chain == chain, Token.symbol == symbol).with_for_update()
    ).one_or_none()
    if row is None:
        raise invalid_argument(
            [FieldViolation("token", f"{symbol!r} is not a token of chain {chain!r}")]
        )
    return row


def _settings(row: Token) -> TokenSettings:
    return TokenSettings(row.chain, row.symbol, row.enabled, row.max_amount_base_units)
