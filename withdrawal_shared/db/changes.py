"""The registry of configuration change kinds behind the admin API's four eyes.

A change kind is a name (`operator.create`, `tier.update`, ...) with two transport-neutral
functions:

- `validate(payload) -> target`: checks the proposed payload (raising `ApiError`, e.g.
  `invalid_argument` naming `change.payload.<field>`) and returns the resource name it
  changes (`operators/alice`); run when the change is proposed, and again before applying;
- `apply(session, payload) -> ChangeEffect`: makes the change in the confirming admin's
  transaction and returns the target's values before and after (JSON-ready, for the admin
  audit trail); raises `ChangeNotApplicable` when the world no longer allows it (the
  change then stays PROPOSED).

Registering a kind is one line in `svc_gateway.admin.kinds.change_kinds`:
`registry.register("tier.update", tiers.validate_update, tiers.apply_update)`. A kind whose
effect has to name the change that ordered it (a treasury operation records its change id)
registers with `register_with_change`, and its apply is `apply(session, change) -> ChangeEffect`
with the change's id, kind and payload (`AppliedChange`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from withdrawal_shared.errors import WithdrawalSystemError


class ChangeNotApplicable(WithdrawalSystemError):
    """The change cannot be applied as things are now (e.g. the operator already exists)."""


@dataclass(frozen=True)
class ChangeEffect:
    """What applying a change did: its target's resource name and values before and after."""

    target: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None


@dataclass(frozen=True)
class AppliedChange:
    """The change being applied: its id (the last segment of `changes/{change}`), kind and
    payload."""

    id: str
    kind: str
    payload: Mapping[str, Any]


Validate = Callable[[Mapping[str, Any]], str]
Apply = Callable[[Session, Mapping[str, Any]], ChangeEffect]
ApplyChange = Callable[[Session, AppliedChange], ChangeEffect]


@dataclass(frozen=True)
class ChangeKind:
    name: str
    validate: Validate
    apply_change: ApplyChange

    def apply(self, session: Session, change: AppliedChange) -> ChangeEffect:
        return self.apply_change(session, change)


class ChangeRegistry:
    """Change kinds by name."""

    def __init__(self) -> None:
        self._kinds: dict[str, ChangeKind] = {}

    def register(self, name: str, validate: Validate, apply: Apply) -> None:
        """Add a kind; a name registered twice is a programming error (ValueError)."""

        def apply_change(session: Session, change: AppliedChange) -> ChangeEffect:
            return apply(session, change.payload)

        self.register_with_change(name, validate, apply_change)

    def register_with_change(self, name: str, validate: Validate, apply: ApplyChange) -> None:
        """`register` for a kind whose apply needs the change itself (`AppliedChange`)."""
        if name in self._kinds:
            raise ValueError(f"change kind {name!r} is registered twice")
        self._kinds[name] = ChangeKind(name, validate, apply)

    def get(self, name: str) -> ChangeKind | None:
        return self._kinds.get(name)

    def names(self) -> list[str]:
        return sorted(self._kinds)
