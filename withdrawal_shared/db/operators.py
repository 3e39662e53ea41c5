"""Operators of the admin API, their roles and credentials, and the operator change kinds.

A credential is `awo_<8 hex>_<secret>` (partner API keys are `awk_…`, so the two kinds are
told apart by their prefix); only its SHA-256 is stored, found by its public prefix
(`awo_<8 hex>`), which is also all a log or the audit trail shows of it. An operator is one
identity whatever credentials it holds; a disabled operator's credentials do not work.

Roles: `viewer` (read), `operator` (holds, pauses, key management), `approver` (approval
decisions), `admin` (rules, tiers, tokens, operators). Every role includes viewer's reads.

The change kinds `operator.create`, `operator.set_roles` and `operator.disable` (validated
when proposed, applied when a second admin confirms) are registered in
`svc_gateway.admin.kinds`.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from withdrawal_shared.db.changes import ChangeEffect, ChangeNotApplicable
from withdrawal_shared.db.models import Operator, OperatorCredential
from withdrawal_shared.errors import FieldViolation, invalid_argument, quoted

CREDENTIAL_SCHEME = "awo"
OPERATOR_ID = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
OPERATOR_PREFIX = "operators/"


class Role(enum.StrEnum):
    """What an operator may do (see the module docstring)."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"


def grants(held: Iterable[Role], required: Role) -> bool:
    """Whether holding `held` allows what `required` allows: the role itself, or any role
    at all for a viewer's reads."""
    roles = set(held)
    return required in roles or (required is Role.VIEWER and bool(roles))


def encode_roles(roles: Iterable[Role]) -> str:
    return ",".join(sorted({Role(r).value for r in roles}))


def decode_roles(text: str) -> frozenset[Role]:
    return frozenset(Role(r) for r in text.split(",") if r)


def operator_name(operator_id: str) -> str:
    return OPERATOR_PREFIX + operator_id


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def credential_prefix(token: str) -> str | None:
    """The public prefix (`awo_<8 hex>`) of a well-formed operator credential, else None."""
    parts = token.split("_", 2)
    if (
        len(parts) != 3
        or parts[0] != CREDENTIAL_SCHEME
        or len(parts[1]) != 8
        or not all(c in "0123456789abcdef" for c in parts[1])
        or not parts[2]
    ):
        return None
    return f"{parts[0]}_{parts[1]}"


def is_operator_credential(token: str) -> bool:
    """Whether `token` looks like an operator credential (its scheme), well-formed or not."""
    return token.startswith(f"{CREDENTIAL_SCHEME}_")


@dataclass(frozen=True)
class OperatorIdentity:
    """An authenticated operator: who, with which roles, through which credential."""

    operator_id: str
    roles: frozenset[Role]
    credential_prefix: str


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def operator_as_dict(row: Operator) -> dict[str, Any]:
    """The operator as the audit trail records it (before/after values)."""
    return {
        "operator": row.id,
        "display_name": row.display_name,
        "roles": sorted(r.value for r in decode_roles(row.roles)),
        "enabled": row.enabled,
    }


def create_operator(
    session: Session, operator_id: str, roles: Iterable[Role], display_name: str = ""
) -> Operator:
    """Add an operator (the caller checked it does not exist and that it may be created)."""
    now = _now()
    row = Operator(
        id=operator_id,
        display_name=display_name or operator_id,
        roles=encode_roles(roles),
        enabled=True,
        create_time=now,
        update_time=now,
    )
    session.add(row)
    return row


def issue_credential(
    session: Session,
    operator_id: str,
    *,
    created_by: str,
    description: str = "",
    request_id: str | None = None,
) -> tuple[OperatorCredential, str]:
    """Create a credential for the operator: (its row, the token). The token is returned
    once and never stored."""
    prefix = f"{CREDENTIAL_SCHEME}_{secrets.token_hex(4)}"
    token = f"{prefix}_{secrets.token_hex(32)}"
    row = OperatorCredential(
        prefix=prefix,
        operator_id=operator_id,
        token_sha256=token_sha256(token),
        description=description,
        created_by=created_by,
        request_id=request_id,
        create_time=_now(),
        revoke_time=None,
    )
    session.add(row)
    return row, token


def operator_for_credential(session: Session, token: str) -> OperatorIdentity | None:
    """The operator the credential belongs to, if it is well-formed, unrevoked and its
    operator enabled."""
    prefix = credential_prefix(token)
    if prefix is None:
        return None
    return _operator_for(session, prefix, token_sha256(token))


def operator_for_credential_prefix(session: Session, prefix: str) -> OperatorIdentity | None:
    """The operator of the credential with this prefix, if it is unrevoked and its operator
    enabled (roles as they are now): for a caller that verified the whole credential before
    (a portal session) and holds only its prefix since."""
    return _operator_for(session, prefix, None)


def _operator_for(session: Session, prefix: str, digest: str | None) -> OperatorIdentity | None:
    row = session.execute(
        select(
            OperatorCredential.token_sha256,
            OperatorCredential.revoke_time,
            Operator.id,
            Operator.roles,
            Operator.enabled,
        )
        .join(Operator, Operator.id == OperatorCredential.operator_id)
        .where(OperatorCredential.prefix == prefix)
    ).first()
    if row is None or row.revoke_time is not None or not row.enabled:
        return None
    if digest is not None and not hmac.compare_digest(row.token_sha256, digest):
        return None
    return OperatorIdentity(str(row.id), decode_roles(row.roles), prefix)


def admin_exists(session: Session) -> bool:
    """Whether an enabled operator holds the admin role."""
    rows = session.scalars(select(Operator.roles).where(Operator.enabled.is_(True)))
    return any(Role.ADMIN in decode_roles(roles) for roles in rows)


# ---------------------------------------------------------------- the operator change kinds


def _payload_str(payload: Mapping[str, Any], key: str, violations: list[FieldViolation]) -> str:
    value = payload.get(key)
    if not isinstance(value, str):
        violations.append(FieldViolation(f"change.payload.{key}", "is required: a string"))
        return ""
    return value


def _operator_id(payload: Mapping[str, Any], violations: list[FieldViolation]) -> str:
    value = _payload_str(payload, "operator", violations)
    if value and not OPERATOR_ID.match(value):
        violations.append(
            FieldViolation(
                "change.payload.operator",
                f"{quoted(value)} is not an operator id: 2-63 lowercase letters, digits and '-', "
                "starting with a letter",
            )
        )
    return value


def _roles(payload: Mapping[str, Any], violations: list[FieldViolation]) -> list[Role]:
    value = payload.get("roles")
    known = ", ".join(r.value for r in Role)
    if not isinstance(value, list) or not value:
        violations.append(
            FieldViolation("change.payload.roles", f"is required: a non-empty list of {known}")
        )
        return []
    roles: list[Role] = []
    for item in value:
        if not isinstance(item, str) or item not in {r.value for r in Role}:
            violations.append(
                FieldViolation("change.payload.roles", f"{quoted(item)} is not a role; use {known}")
            )
        else:
            roles.append(Role(item))
    return roles


def _only(payload: Mapping[str, Any], keys: set[str], violations: list[FieldViolation]) -> None:
    for key in sorted(set(payload) - keys):
        violations.append(FieldViolation(f"change.payload.{key}", "is not a field of this kind"))


def _raise(violations: list[FieldViolation]) -> None:
    if violations:
        raise invalid_argument(violations)


def validate_create(payload: Mapping[str, Any]) -> str:
    """`operator.create`: `{"operator": id, "roles": [...], "display_name"?: str}`."""
    violations: list[FieldViolation] = []
    operator_id = _operator_id(payload, violations)
    _roles(payload, violations)
    name = payload.get("display_name", "")
    if not isinstance(name, str) or len(name) > 128:
        violations.append(
            FieldViolation("change.payload.display_name", "must be a string of at most 128")
        )
    _only(payload, {"operator", "roles", "display_name"}, violations)
    _raise(violations)
    return operator_name(operator_id)


def apply_create(session: Session, payload: Mapping[str, Any]) -> ChangeEffect:
    operator_id = str(payload["operator"])
    if session.get(Operator, operator_id) is not None:
        raise ChangeNotApplicable(f"operator {operator_id!r} already exists")
    roles = [Role(r) for r in payload["roles"]]
    row = create_operator(session, operator_id, roles, str(payload.get("display_name", "")))
    return ChangeEffect(operator_name(operator_id), None, operator_as_dict(row))


def validate_set_roles(payload: Mapping[str, Any]) -> str:
    """`operator.set_roles`: `{"operator": id, "roles": [...]}` (the roles it will hold)."""
    violations: list[FieldViolation] = []
    operator_id = _operator_id(payload, violations)
    _roles(payload, violations)
    _only(payload, {"operator", "roles"}, violations)
    _raise(violations)
    return operator_name(operator_id)


def _existing(session: Session, payload: Mapping[str, Any]) -> Operator:
    operator_id = str(payload["operator"])
    row = session.get(Operator, operator_id, with_for_update=True)
    if row is None:
        raise ChangeNotApplicable(f"operator {operator_id!r} does not exist")
    return row


def apply_set_roles(session: Session, payload: Mapping[str, Any]) -> ChangeEffect:
    row = _existing(session, payload)
    before = operator_as_dict(row)
    row.roles = encode_roles(Role(r) for r in payload["roles"])
    row.update_time = _now()
    return ChangeEffect(operator_name(row.id), before, operator_as_dict(row))


def validate_disable(payload: Mapping[str, Any]) -> str:
    """`operator.disable`: `{"operator": id}`; its credentials stop working."""
    violations: list[FieldViolation] = []
    operator_id = _operator_id(payload, violations)
    _only(payload, {"operator"}, violations)
    _raise(violations)
    return operator_name(operator_id)


def apply_disable(session: Session, payload: Mapping[str, Any]) -> ChangeEffect:
    row = _existing(session, payload)
    before = operator_as_dict(row)
    row.enabled = False
    row.update_time = _now()
    return ChangeEffect(operator_name(row.id), before, operator_as_dict(row))
