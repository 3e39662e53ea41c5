"""Tiers and limits as four-eyes change kinds (`svc_gateway.admin.kinds`): each kind's
`validate(payload) -> target` and `apply(session, payload) -> ChangeEffect` over
`tier_admin`.

- `tier.set_limits` `{"tier", "token", "chain"?, "per_withdrawal_max"?, "daily_amount"?,
  "daily_count"?}`: replaces the tier's limits for the token; an omitted (or null) limit is
  no limit, so all three omitted removes them;
- `user.assign_tier` `{"partner_id", "user_ref", "tier"}`: puts a partner's user in a tier
  (`tier` null: back to the partner's default tier);
- `partner.set_default_tier` `{"partner_id", "tier"}` (`tier` null: `standard`);
- `partner.set_daily_limit` `{"partner_id", "token", "chain"?, "daily_amount"}`
  (`daily_amount` null removes it).

Validation checks the payload's shape when the change is proposed; whether the tier, token
or partner exist, and the amount's decimals, are checked when it is applied (a refusal then
is `ChangeNotApplicable`, and the change stays PROPOSED). Amounts are decimal strings in
token units, as everywhere at the API.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from sqlalchemy.orm import Session

from withdrawal_shared.db import tier_admin
from withdrawal_shared.db.changes import ChangeEffect, ChangeNotApplicable
from withdrawal_shared.errors import FieldViolation, invalid_argument

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_AMOUNT = re.compile(r"^(0|[1-9][0-9]{0,29})(\.[0-9]{1,18})?$")
_PARTNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_FIELD = "change.payload."


class _Payload:
    """Reads a payload's fields, collecting every violation."""

    def __init__(self, payload: Mapping[str, Any], keys: set[str]) -> None:
        self.payload = payload
        self.violations = [
            FieldViolation(_FIELD + key, "is not a field of this kind")
            for key in sorted(set(payload) - keys)
        ]

    def bad(self, key: str, description: str) -> None:
        self.violations.append(FieldViolation(_FIELD + key, description))

    def name(self, key: str, pattern: re.Pattern[str] = _NAME, *, nullable: bool = False) -> str:
        value = self.payload.get(key)
        if value is None and nullable and key in self.payload:
            return ""
        if not isinstance(value, str) or not pattern.match(value):
            self.bad(
                key,
                "is required: a name of letters, digits and . _ -"
                + (", or null" if nullable else ""),
            )
            return ""
        return value

    def amount(self, key: str) -> None:
        value = self.payload.get(key)
        if value is not None and (not isinstance(value, str) or not _AMOUNT.match(value)):
            self.bad(key, 'must be a decimal string in token units such as "1000.5", or null')

    def count(self, key: str) -> None:
        value = self.payload.get(key)
        if value is None:
            return
        whole = isinstance(value, int | float) and not isinstance(value, bool)
        if not (whole and 0 <= value <= 2**31 - 1 and float(value).is_integer()):
            self.bad(key, "must be a whole number of zero or more, or null")

    def done(self) -> None:
        if self.violations:
            raise invalid_argument(self.violations)


def _optional_str(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return None if value is None else str(value)


def _chain(payload: Mapping[str, Any]) -> str:
    return str(payload.get("chain") or tier_admin.DEFAULT_CHAIN)


def _applying(error: tier_admin.TierAdminError) -> ChangeNotApplicable:
    return ChangeNotApplicable(f"{error} ({error.field})")


# ---------------------------------------------------------------- tier.set_limits

_LIMIT_KEYS = {"tier", "token", "chain", "per_withdrawal_max", "daily_amount", "daily_count"}


def validate_set_limits(payload: Mapping[str, Any]) -> str:
    check = _Payload(payload, _LIMIT_KEYS)
    tier = check.name("tier")
    check.name("token")
    if "chain" in payload:
        check.name("chain")
    check.amount("per_withdrawal_max")
    check.amount("daily_amount")
    check.count("daily_count")
    check.done()
    return f"tiers/{tier}"


def apply_set_limits(session: Session, payload: Mapping[str, Any]) -> ChangeEffect:
    count = payload.get("daily_count")
    try:
        change = tier_admin.set_tier_limits(
            session,
            str(payload["tier"]),
            str(payload["token"]),
            per_withdrawal_max=_optional_str(payload, "per_withdrawal_max"),
            daily_amount=_optional_str(payload, "daily_amount"),
            daily_count=None if count is None else int(count),
            chain=_chain(payload),
        )
    except tier_admin.TierAdminError as exc:
        raise _applying(exc) from None
    return ChangeEffect(
        f"tiers/{payload['tier']}",
        None if change.before is None else asdict(change.before),
        None if change.after is None else asdict(change.after),
    )


# ---------------------------------------------------------------- user.assign_tier


def validate_assign_tier(payload: Mapping[str, Any]) -> str:
    check = _Payload(payload, {"partner_id", "user_ref", "tier"})
    partner = check.name("partner_id", _PARTNER)
    user_ref = payload.get("user_ref")
    if not isinstance(user_ref, str) or not tier_admin.USER_REF.match(user_ref):
        check.bad("user_ref", f"is required: it {tier_admin.USER_REF_RULE}")
    check.name("tier", nullable=True)
    check.done()
    return f"partners/{partner}/users/{user_ref}"


def apply_assign_tier(session: Session, payload: Mapping[str, Any]) -> ChangeEffect:
    try:
        change = tier_admin.assign_user_tier(
            session,
            str(payload["partner_id"]),
            str(payload["user_ref"]),
            _optional_str(payload, "tier"),
        )
    except tier_admin.TierAdminError as exc:
        raise _applying(exc) from None
    return ChangeEffect(
        f"partners/{payload['partner_id']}/users/{payload['user_ref']}",
        {"tier": change.before},
        {"tier": change.after},
    )


# ---------------------------------------------------------------- partner.set_default_tier


def validate_default_tier(payload: Mapping[str, Any]) -> str:
    check = _Payload(payload, {"partner_id", "tier"})
    partner = check.name("partner_id", _PARTNER)
    check.name("tier", nullable=True)
    check.done()
    return f"partners/{partner}"


def apply_default_tier(session: Session, payload: Mapping[str, Any]) -> ChangeEffect:
    try:
        change = tier_admin.set_partner_default_tier(
            session, str(payload["partner_id"]), _optional_str(payload, "tier")
        )
    except tier_admin.TierAdminError as exc:
        raise _applying(exc) from None
    return ChangeEffect(
        f"partners/{payload['partner_id']}",
        {"default_tier": change.before},
        {"default_tier": change.after},
    )


# ---------------------------------------------------------------- partner.set_daily_limit


def validate_daily_limit(payload: Mapping[str, Any]) -> str:
    check = _Payload(payload, {"partner_id", "token", "chain", "daily_amount"})
    partner = check.name("partner_id", _PARTNER)
    check.name("token")
    if "chain" in payload:
        check.name("chain")
    if "daily_amount" not in payload:
        check.bad("daily_amount", "is required: a decimal string, or null to remove the limit")
    check.amount("daily_amount")
    check.done()
    return f"partners/{partner}"


def apply_daily_limit(session: Session, payload: Mapping[str, Any]) -> ChangeEffect:
    try:
        change = tier_admin.set_partner_daily_limit(
            session,
            str(payload["partner_id"]),
            str(payload["token"]),
            _optional_str(payload, "daily_amount"),
            chain=_chain(payload),
        )
    except tier_admin.TierAdminError as exc:
        raise _applying(exc) from None
    token = {"chain": _chain(payload), "token": str(payload["token"])}
    return ChangeEffect(
        f"partners/{payload['partner_id']}",
        {**token, "daily_amount": change.before},
        {**token, "daily_amount": change.after},
    )
