"""Resource names, conversions and audit values of the admin API's operational controls:
partners' API keys, the payout kill switch and token settings.

What they do is in the transport-neutral cores (`withdrawal_shared.db.api_keys`,
`withdrawal_shared.key_revocation`, `withdrawal_shared.db.pauses`,
`withdrawal_shared.db.token_settings`); `AdminCore` calls them and audits.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from google.protobuf import timestamp_pb2

from assetwithdrawal.admin.v1 import admin_pb2
from withdrawal_shared.amounts import AmountError, format_amount, parse_amount
from withdrawal_shared.db.api_keys import KEY_SCHEME, ApiKeyInfo
from withdrawal_shared.db.models import Token
from withdrawal_shared.db.pauses import PauseScope, PauseState
from withdrawal_shared.db.token_settings import TokenSettings
from withdrawal_shared.errors import FieldViolation, invalid_argument, quoted
from withdrawal_shared.scopes import DEFAULT_SCOPES, Scope, UnknownScopeError, parse_scopes

PARTNER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_KEY_NAME = re.compile(r"^partners/([^/]+)/apiKeys/(" + KEY_SCHEME + r"_[0-9a-f]{8})$")
_TOKEN_NAME = re.compile(r"^chains/([^/]+)/tokens/([^/]+)$")
ALL_CHAINS = "-"
TOKEN_FIELDS = ("enabled", "max_amount")
MAX_AMOUNT_LIMIT = 10**65  # the column's 65 digits


def _timestamp(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.replace(tzinfo=dt.UTC))
    return ts


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------- API keys


def partner_name(partner_id: str) -> str:
    return f"partners/{partner_id}"


def api_key_name(partner_id: str, prefix: str) -> str:
    return f"partners/{partner_id}/apiKeys/{prefix}"


def parse_partner_name(name: str, field: str = "parent") -> str:
    partner_id = name.removeprefix("partners/")
    if partner_id == name or not PARTNER_ID.match(partner_id):
        raise invalid_argument(
            [FieldViolation(field, f"{quoted(name)} is not a partner name (partners/{{partner}})")]
        )
    return partner_id


def parse_api_key_name(name: str) -> tuple[str, str]:
    """(partner id, key prefix) of `partners/{partner}/apiKeys/awk_<8 hex>`."""
    match = _KEY_NAME.match(name)
    if match is None or not PARTNER_ID.match(match.group(1)):
        raise invalid_argument(
            [
                FieldViolation(
                    "name",
                    f"{quoted(name)} is not an API key name "
                    "(partners/{partner}/apiKeys/awk_<8 hex>)",
                )
            ]
        )
    return match.group(1), match.group(2)


def requested_scopes(names: list[str]) -> frozenset[Scope]:
    if not names:
        return DEFAULT_SCOPES
    try:
        return parse_scopes(names)
    except UnknownScopeError as exc:
        raise invalid_argument([FieldViolation("api_key.scopes", str(exc))]) from None


def requested_limits(key: admin_pb2.ApiKey) -> tuple[int | None, int | None]:
    rate = key.rate_limit_per_second if key.HasField("rate_limit_per_second") else None
    burst = key.rate_limit_burst if key.HasField("rate_limit_burst") else None
    violations = []
    if rate is not None and rate < 1:
        violations.append(FieldViolation("api_key.rate_limit_per_second", "must be at least 1"))
    if burst is not None and burst < 1:
        violations.append(FieldViolation("api_key.rate_limit_burst", "must be at least 1"))
    elif burst is not None and rate is None:
        violations.append(
            FieldViolation("api_key.rate_limit_burst", "needs api_key.rate_limit_per_second")
        )
    if violations:
        raise invalid_argument(violations)
    return rate, burst


def api_key_to_proto(info: ApiKeyInfo, token: str = "") -> admin_pb2.ApiKey:
    key = admin_pb2.ApiKey(
        name=api_key_name(info.partner_id, info.prefix),
        prefix=info.prefix,
        token=token,
        scopes=sorted(s.value for s in info.scopes),
        create_time=_timestamp(info.create_time),
        last_use_time=_timestamp(info.last_use_time),
        revoke_time=_timestamp(info.revoke_time),
    )
    if info.rate_limit_per_second is not None:
        key.rate_limit_per_second = info.rate_limit_per_second
    if info.rate_limit_burst is not None:
        key.rate_limit_burst = info.rate_limit_burst
    return key


def api_key_as_dict(info: ApiKeyInfo) -> dict[str, Any]:
    """The key as the audit trail records it (never the token)."""
    return {
        "key": info.prefix,
        "partner": info.partner_id,
        "scopes": sorted(s.value for s in info.scopes),
        "rate_limit_per_second": info.rate_limit_per_second,
        "rate_limit_burst": info.rate_limit_burst,
        "revoked": info.revoke_time is not None,
    }


# ---------------------------------------------------------------- payout pauses


def pause_scope(request_scope: admin_pb2.PayoutScope) -> PauseScope:
    return PauseScope(request_scope.chain or None, request_scope.token or None)


def pause_target(state: PauseState) -> str:
    return f"payoutPauses/{state.scope}"


def pause_to_proto(state: PauseState) -> admin_pb2.PayoutPause:
    return admin_pb2.PayoutPause(
        scope_key=state.scope,
        scope=admin_pb2.PayoutScope(chain=state.chain or "", token=state.token or ""),
        paused=state.paused,
        reason=state.reason,
        actor=state.actor,
        update_time=_timestamp(state.update_time),
    )


def pause_as_dict(state: PauseState) -> dict[str, Any]:
    return {
        "scope": state.scope,
        "paused": state.paused,
        "reason": state.reason,
        "actor": state.actor,
        "update_time": _iso(state.update_time),
    }


# ---------------------------------------------------------------- tokens


def token_name(chain: str, symbol: str) -> str:
    return f"chains/{chain}/tokens/{symbol}"


def parse_chain_parent(parent: str) -> str:
    """The chain of `chains/{chain}`; `-` for every chain."""
    chain = parent.removeprefix("chains/")
    if chain == parent or not chain or "/" in chain:
        raise invalid_argument(
            [
                FieldViolation(
                    "parent", f"{quoted(parent)} is not a chain name (chains/{{chain}} or chains/-)"
                )
            ]
        )
    return chain


def parse_token_name(name: str) -> tuple[str, str]:
    match = _TOKEN_NAME.match(name)
    if match is None:
        raise invalid_argument(
            [
                FieldViolation(
                    "token.name",
                    f"{quoted(name)} is not a token name (chains/{{chain}}/tokens/{{token}})",
                )
            ]
        )
    return match.group(1), match.group(2)


def token_mask(request: admin_pb2.UpdateTokenRequest) -> list[str]:
    """The fields UpdateToken is to change (AIP-134: the mask, `*`, or the fields set)."""
    token = request.token
    if request.HasField("update_mask"):
        paths = list(request.update_mask.paths)
        if paths == ["*"]:
            paths = list(TOKEN_FIELDS)
        unknown = [p for p in paths if p not in TOKEN_FIELDS]
        if unknown:
            raise invalid_argument(
                [
                    FieldViolation(
                        "update_mask",
                        f"names {', '.join(map(repr, unknown))}; it may name only "
                        + ", ".join(TOKEN_FIELDS)
                        + " (or *)",
                    )
                ]
            )
    else:
        paths = []
        if token.HasField("enabled"):
            paths.append("enabled")
        if token.max_amount:
            paths.append("max_amount")
    if not paths:
        raise invalid_argument(
            [FieldViolation("update_mask", "names no field to update (enabled, max_amount)")]
        )
    violations = []
    if "enabled" in paths and not token.HasField("enabled"):
        violations.append(FieldViolation("token.enabled", "is in the update mask but not set"))
    if "max_amount" in paths and not token.max_amount:
        violations.append(FieldViolation("token.max_amount", "is in the update mask but not set"))
    if violations:
        raise invalid_argument(violations)
    return sorted(set(paths), key=TOKEN_FIELDS.index)


def max_amount_base_units(text: str, decimals: int) -> int:
    """The decimal string in token units as base units (no float on the way)."""
    try:
        value = parse_amount(text, decimals)
    except AmountError as exc:
        raise invalid_argument([FieldViolation("token.max_amount", str(exc))]) from None
    if value >= MAX_AMOUNT_LIMIT:
        raise invalid_argument(
            [FieldViolation("token.max_amount", "must have at most 65 digits in base units")]
        )
    return int(value)


def token_to_proto(row: Token) -> admin_pb2.Token:
    return admin_pb2.Token(
        name=token_name(row.chain, row.symbol),
        chain=row.chain,
        symbol=row.symbol,
        contract_address=row.contract_address or "",
        decimals=row.decimals,
        enabled=row.enabled,
        max_amount=format_amount(row.max_amount_base_units, row.decimals),
    )


def token_as_dict(settings: TokenSettings, decimals: int) -> dict[str, Any]:
    """The settings as the audit trail records them: amounts as strings, never numbers."""
    return {
        "token": token_name(settings.chain, settings.symbol),
        "enabled": settings.enabled,
        "max_amount": format_amount(settings.max_amount_base_units, decimals),
        "max_amount_base_units": str(settings.max_amount_base_units),
    }
