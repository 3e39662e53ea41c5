"""Partners and their API keys. A key is `awk_<8 hex>_<secret>`; only its SHA-256 is stored,
found by its public prefix (`awk_<8 hex>`), which is also all a log may show of it."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from withdrawal_shared.db.models import ApiKey, Partner
from withdrawal_shared.db.transitions import utcnow

KEY_SCHEME = "awk"


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def key_prefix(token: str) -> str | None:
    """The public prefix of a well-formed token, else None."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME or len(parts[1]) != 8 or not parts[2]:
        return None
    return f"{parts[0]}_{parts[1]}"


def ensure_partner(session: Session, partner_id: str, display_name: str = "") -> Partner:
    partner = session.get(Partner, partner_id)
    if partner is None:
        partner = Partner(
            id=partner_id,
            display_name=display_name or partner_id,
            enabled=True,
            create_time=utcnow(),
        )
        session.add(partner)
    return partner


def issue_api_key(session: Session, partner_id: str) -> str:
    """Create a key for the partner and return the token (shown once, never stored)."""
    prefix = f"{KEY_SCHEME}_{secrets.token_hex(4)}"
    token = f"{prefix}_{secrets.token_hex(32)}"
    session.add(
        ApiKey(
            prefix=prefix,
            partner_id=partner_id,
            token_sha256=token_sha256(token),
            create_time=utcnow(),
            revoke_time=None,
        )
    )
    return token


def partner_for_token(session: Session, token: str) -> str | None:
    """The partner id the token belongs to, if it is valid, unrevoked and its partner enabled."""
    prefix = key_prefix(token)
    if prefix is None:
        return None
    row = session.execute(
        select(ApiKey.token_sha256, ApiKey.revoke_time, ApiKey.partner_id, Partner.enabled)
        .join(Partner, Partner.id == ApiKey.partner_id)
        .where(ApiKey.prefix == prefix)
    ).first()
    if row is None or row.revoke_time is not None or not row.enabled:
        return None
    if not hmac.compare_digest(row.token_sha256, token_sha256(token)):
        return None
    return str(row.partner_id)
