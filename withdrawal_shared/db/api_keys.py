"""Partners and their API keys: the transport-neutral lifecycle (create, list, revoke, verify,
record use) every surface calls.

A key is `awk_<8 hex>_<secret>`; only its SHA-256 is stored, found by its public prefix
(`awk_<8 hex>`), which is also all a log or a listing may show of it. A key holds scopes
(`withdrawal_shared.scopes.Scope`) and optionally a rate limit of its own; its partner may hold
a rate limit shared by the keys without one. The functions take a session and never commit:
the caller owns the transaction. Revoking here only writes the row; to make every gateway drop
the key at once as well, use `withdrawal_shared.key_revocation.revoke_key`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from withdrawal_shared.db.models import ApiKey, Partner
from withdrawal_shared.db.transitions import utcnow
from withdrawal_shared.scopes import DEFAULT_SCOPES, Scope, decode_scopes, encode_scopes

KEY_SCHEME = "awk"


class UnknownPartnerError(LookupError):
    """The partner named does not exist."""


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """A key as a listing shows it: never the token or its hash."""

    prefix: str
    partner_id: str
    scopes: frozenset[Scope]
    create_time: dt.datetime
    last_use_time: dt.datetime | None
    """Recorded at most once a minute per gateway process, so up to a minute behind."""
    revoke_time: dt.datetime | None
    rate_limit_per_second: int | None
    """This key's own limit; None: the partner's, else the gateway's default."""
    rate_limit_burst: int | None


@dataclass(frozen=True, slots=True)
class CreatedApiKey:
    """A new key: `token` is shown this once and never stored."""

    token: str
    key: ApiKeyInfo


@dataclass(frozen=True, slots=True)
class VerifiedKey:
    """What a valid token grants: its partner, scopes and the rate limits that apply."""

    partner_id: str
    prefix: str
    scopes: frozenset[Scope]
    key_rate_per_second: int | None
    key_burst: int | None
    partner_rate_per_second: int | None
    partner_burst: int | None


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


def _check_limit(per_second: int | None, burst: int | None) -> None:
    if per_second is not None and per_second < 1:
        raise ValueError(f"rate_limit_per_second={per_second} must be at least 1 (or None)")
    if burst is not None and (burst < 1 or per_second is None):
        raise ValueError(f"rate_limit_burst={burst} needs rate_limit_per_second and must be >= 1")


def _info(row: ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(
        prefix=row.prefix,
        partner_id=row.partner_id,
        scopes=decode_scopes(row.scopes),
        create_time=row.create_time,
        last_use_time=row.last_use_time,
        revoke_time=row.revoke_time,
        rate_limit_per_second=row.rate_limit_per_second,
        rate_limit_burst=row.rate_limit_burst,
    )


def create_api_key(
    session: Session,
    partner_id: str,
    scopes: Iterable[Scope] = DEFAULT_SCOPES,
    *,
    rate_limit_per_second: int | None = None,
    rate_limit_burst: int | None = None,
) -> CreatedApiKey:
    """Create a key for the partner with these scopes (and optionally its own rate limit).

    Raises UnknownPartnerError when the partner does not exist, ValueError for no scopes or a
    limit below 1 (a burst needs a rate).
    """
    granted = frozenset(Scope(s) for s in scopes)
    if not granted:
        raise ValueError("a key needs at least one scope")
    _check_limit(rate_limit_per_second, rate_limit_burst)
    if session.get(Partner, partner_id) is None:
        raise UnknownPartnerError(f"no partner {partner_id!r}")
    prefix = f"{KEY_SCHEME}_{secrets.token_hex(4)}"
    token = f"{prefix}_{secrets.token_hex(32)}"
    row = ApiKey(
        prefix=prefix,
        partner_id=partner_id,
        token_sha256=token_sha256(token),
        create_time=utcnow(),
        revoke_time=None,
        scopes=encode_scopes(granted),
        last_use_time=None,
        rate_limit_per_second=rate_limit_per_second,
        rate_limit_burst=rate_limit_burst,
    )
    session.add(row)
    session.flush()
    return CreatedApiKey(token, _info(row))


def issue_api_key(
    session: Session, partner_id: str, scopes: Iterable[Scope] = DEFAULT_SCOPES
) -> str:
    """Create a key for the partner and return the token (shown once, never stored)."""
    return create_api_key(session, partner_id, scopes).token


def list_api_keys(
    session: Session, partner_id: str, *, include_revoked: bool = True
) -> list[ApiKeyInfo]:
    """The partner's keys, newest first (an unknown partner has none)."""
    query = select(ApiKey).where(ApiKey.partner_id == partner_id)
    if not include_revoked:
        query = query.where(ApiKey.revoke_time.is_(None))
    rows = session.scalars(query.order_by(ApiKey.create_time.desc(), ApiKey.prefix)).all()
    return [_info(row) for row in rows]


def revoke_api_key(session: Session, partner_id: str, prefix: str) -> ApiKeyInfo | None:
    """Revoke the partner's key; idempotent (a revoked key keeps its first revoke time).

    None when the partner has no key with this prefix. The row only: gateways that cached the
    key keep it until their cache drops it (`key_revocation.revoke_key` tells them at once).
    """
    row = session.scalar(
        select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.partner_id == partner_id)
    )
    if row is None:
        return None
    if row.revoke_time is None:
        row.revoke_time = utcnow()
        session.flush()
    return _info(row)


def verify_token(session: Session, token: str) -> VerifiedKey | None:
    """What the token grants, if it is well-formed, unrevoked and its partner enabled."""
    prefix = key_prefix(token)
    if prefix is None:
        return None
    return _verified(session, prefix, token_sha256(token))


def verify_prefix(session: Session, prefix: str) -> VerifiedKey | None:
    """What the key with this prefix grants now, if it is unrevoked and its partner enabled:
    for a caller that verified the whole token before (a portal session) and holds only its
    prefix since."""
    return _verified(session, prefix, None)


def _verified(session: Session, prefix: str, digest: str | None) -> VerifiedKey | None:
    row = session.execute(
        select(
            ApiKey.token_sha256,
            ApiKey.revoke_time,
            ApiKey.partner_id,
            ApiKey.scopes,
            ApiKey.rate_limit_per_second,
            ApiKey.rate_limit_burst,
            Partner.enabled,
            Partner.rate_limit_per_second.label("partner_rate"),
            Partner.rate_limit_burst.label("partner_burst"),
        )
        .join(Partner, Partner.id == ApiKey.partner_id)
        .where(ApiKey.prefix == prefix)
    ).first()
    if row is None or row.revoke_time is not None or not row.enabled:
        return None
    if digest is not None and not hmac.compare_digest(row.token_sha256, digest):
        return None
    return VerifiedKey(
        partner_id=str(row.partner_id),
        prefix=prefix,
        scopes=decode_scopes(row.scopes),
        key_rate_per_second=row.rate_limit_per_second,
        key_burst=row.rate_limit_burst,
        partner_rate_per_second=row.partner_rate,
        partner_burst=row.partner_burst,
    )


def partner_for_token(session: Session, token: str) -> str | None:
    """The partner id the token belongs to, if it is valid, unrevoked and its partner enabled."""
    verified = verify_token(session, token)
    return None if verified is None else verified.partner_id


def record_key_use(session: Session, prefixes: Collection[str], when: dt.datetime) -> None:
    """Set the keys' `last_use_time` to `when` unless a later use is already recorded."""
    if not prefixes:
        return
    session.execute(
        update(ApiKey)
        .where(
            ApiKey.prefix.in_(sorted(prefixes)),
            or_(ApiKey.last_use_time.is_(None), ApiKey.last_use_time < when),
        )
        .values(last_use_time=when)
    )
