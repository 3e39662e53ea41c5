"""The scopes an API key can hold: the one registry every surface checks against.

A scope is a `resource:action` string stored with the key (`api_keys.scopes`, space-separated)
and carried by the authenticated caller. A surface that needs a new permission adds it here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


class Scope(enum.StrEnum):
    """A permission an API key may be granted."""

    WITHDRAWALS_READ = "withdrawals:read"
    """GetWithdrawal, ListWithdrawals, WatchWithdrawal."""
    WITHDRAWALS_CREATE = "withdrawals:create"
    """CreateWithdrawal, CancelWithdrawal."""
    BATCHES_CREATE = "batches:create"
    """Creating payout batches on the partner's behalf."""
    WEBHOOKS_MANAGE = "webhooks:manage"
    """Registering and removing the partner's webhooks."""
    EMERGENCY = "emergency"
    """CreateWithdrawal with `PRIORITY_EMERGENCY` (paid first, from the emergency hot wallet,
    at the highest tip); held in addition to `withdrawals:create`."""


DEFAULT_SCOPES: frozenset[Scope] = frozenset({Scope.WITHDRAWALS_READ, Scope.WITHDRAWALS_CREATE})
"""What a key gets when no scopes are named; also what keys made before scopes existed hold."""


class UnknownScopeError(ValueError):
    """A scope name that is not in `Scope`."""


def parse_scopes(names: Iterable[str]) -> frozenset[Scope]:
    """The scopes named; UnknownScopeError names the first unknown one and the known ones."""
    scopes: set[Scope] = set()
    for name in names:
        try:
            scopes.add(Scope(name))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise UnknownScopeError(f"unknown scope {name!r}; known: {known}") from None
    return frozenset(scopes)


def decode_scopes(stored: str) -> frozenset[Scope]:
    """The scopes of a stored `api_keys.scopes` value; names no longer known are ignored."""
    known = {s.value for s in Scope}
    return frozenset(Scope(name) for name in stored.split() if name in known)


def encode_scopes(scopes: Iterable[Scope]) -> str:
    """The stored form: the scope names sorted, separated by single spaces."""
    return " ".join(sorted(s.value for s in scopes))
