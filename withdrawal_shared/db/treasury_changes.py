"""Treasury operations as four-eyes change kinds, and the Safe transaction states.

Each kind of `withdrawal_shared.treasury_ops.KINDS` is a change kind: `validate` is
`treasury_ops.validate`; `apply` (run when a second admin confirms) records the operation as a
PENDING `safe_transactions` row naming the change, and nothing else: the processor's treasury
executor (`svc_processor.treasury`) takes it from there (Safe nonce, owners' signatures, a hot
wallet's `execTransaction`). An operation therefore exists only once a change was applied, and
at most once per change (`safe_transactions.change_id` is unique).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from functools import partial
from typing import Any

from sqlalchemy.orm import Session

from withdrawal_shared import treasury_ops
from withdrawal_shared.db.admin_audit import canonical_json
from withdrawal_shared.db.changes import (
    AppliedChange,
    ChangeEffect,
    ChangeNotApplicable,
    ChangeRegistry,
)
from withdrawal_shared.db.models import SafeTransaction, SafeTreasury
from withdrawal_shared.db.transitions import utcnow
from withdrawal_shared.ids import new_ulid

OPERATION_PREFIX = "treasuryOperations/"


class SafeTxState(enum.StrEnum):
    """`safe_transactions.state`."""

    PENDING = "PENDING"
    """Recorded; being signed by the owners once it has its Safe nonce."""
    SIGNED = "SIGNED"
    """The threshold of owners signed; signatures and `execTransaction` calldata stored (with
    a `failure_reason`: its last attempt did not execute it, and it is sent again)."""
    EXECUTING = "EXECUTING"
    """A hot wallet's payout transaction (`payout_tx_id`) sends it."""
    EXECUTED = "EXECUTED"
    """Mined at the confirmation depth with the Safe's ExecutionSuccess for its hash."""
    FAILED = "FAILED"
    """Not executed (`failure_reason` says why): it could not be built (no Safe nonce taken),
    or the Safe used its nonce and the call failed; never retried."""


LAST_ATTEMPT_PREFIX = "last attempt: "
"""The start of a SIGNED Safe transaction's `failure_reason` when its last execution attempt
did not execute it (the Safe did not use its nonce) and it is sent again."""


class SafePurpose(enum.StrEnum):
    """`safe_transactions.purpose`."""

    TREASURY = "TREASURY"
    PAYOUT = "PAYOUT"


def operation_name(safe_tx_id: str) -> str:
    return OPERATION_PREFIX + safe_tx_id


def _validate(kind: str, payload: Mapping[str, Any]) -> str:
    return treasury_ops.validate(kind, payload)


def apply_operation(session: Session, change: AppliedChange) -> ChangeEffect:
    """Record the change's treasury operation as PENDING (ChangeNotApplicable when its chain
    has no treasury Safe)."""
    target = treasury_ops.target(change.kind, change.payload)
    chain = str(change.payload["chain"])
    if session.get(SafeTreasury, chain) is None:
        raise ChangeNotApplicable(f"chain {chain} has no treasury Safe")
    now = utcnow()
    row = SafeTransaction(
        id=new_ulid(),
        chain=chain,
        purpose=SafePurpose.TREASURY.value,
        change_id=change.id,
        kind=change.kind,
        payload=canonical_json(dict(change.payload)) or "{}",
        safe_nonce=None,
        state=SafeTxState.PENDING.value,
        failure_reason="",
        create_time=now,
        update_time=now,
    )
    session.add(row)
    session.flush()
    after = {
        "treasury_operation": operation_name(row.id),
        "kind": change.kind,
        "payload": dict(change.payload),
        "state": SafeTxState.PENDING.value,
    }
    return ChangeEffect(target=target, before=None, after=after)


def register(registry: ChangeRegistry) -> None:
    """Register every treasury operation kind."""
    for kind in treasury_ops.KINDS:
        registry.register_with_change(kind, partial(_validate, kind), apply_operation)
