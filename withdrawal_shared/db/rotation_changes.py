"""The `hot_wallet.rotate` change kind: rotating a hot wallet's key, started by one four-eyes
change and run by the processor's rotation driver (`svc_processor.rotation`).

Payload: `chain`, `wallet` (the hot wallet whose key is rotated, ACTIVE), `gas_wei` (a decimal
integer string: the native gas the treasury Safe sends the new wallet). Applying it (when a
second admin confirms) records a RUNNING `hot_wallet_rotations` row at its first step and
nothing else. At most one rotation runs per chain at a time.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from withdrawal_shared.db.changes import (
    AppliedChange,
    ChangeEffect,
    ChangeNotApplicable,
    ChangeRegistry,
)
from withdrawal_shared.db.models import (
    HotWallet,
    HotWalletRotation,
    SafeTransaction,
    SafeTreasury,
)
from withdrawal_shared.db.transitions import utcnow
from withdrawal_shared.errors import FieldViolation, invalid_argument
from withdrawal_shared.ids import new_ulid
from withdrawal_shared.states import WalletState

KIND = "hot_wallet.rotate"
ROTATION_PREFIX = "rotations/"
_FIELDS = frozenset({"chain", "wallet", "gas_wei"})
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_INTEGER = re.compile(r"^[1-9][0-9]{0,77}$")
_CHAIN = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


class Step(enum.StrEnum):
    """`hot_wallet_rotations.step`: the step a rotation does next, in this order."""

    CREATE_KEY = "CREATE_KEY"
    """Ask the hot signer for a new key (CreateWallet, the rotation's id as request id)."""
    REGISTER = "REGISTER"
    """Record the new wallet: a PENDING `hot_wallets` row and its `system_addresses` row, and
    the treasury operations of the next two steps."""
    ENABLE_OPERATOR = "ENABLE_OPERATOR"
    """The treasury Safe makes the new wallet a vault operator (`setOperator(new, true)`)."""
    FUND_GAS = "FUND_GAS"
    """The treasury Safe sends the new wallet `gas_wei`."""
    SWITCH = "SWITCH"
    """The new wallet becomes ACTIVE and the old one DRAINING, in one transaction."""
    DRAIN = "DRAIN"
    """Wait until every payout row of the old wallet is settled."""
    REMOVE_OPERATOR = "REMOVE_OPERATOR"
    """The treasury Safe removes the old wallet's operator role (`setOperator(old, false)`)."""
    SWEEP = "SWEEP"
    """The old wallet sends its remaining native balance, less the fee, to the treasury Safe
    (PURPOSE_GAS_SWEEP)."""
    RETIRE = "RETIRE"
    """RetireWallet in the signer; the old wallet becomes RETIRED (and disabled)."""
    DONE = "DONE"


STEPS: tuple[Step, ...] = tuple(Step)
SAFE_STEPS = (Step.ENABLE_OPERATOR, Step.FUND_GAS, Step.REMOVE_OPERATOR)
"""The steps that are treasury operations (`safe_transactions` rows with the rotation's id)."""


class RotationState(enum.StrEnum):
    """`hot_wallet_rotations.state`."""

    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    """A step cannot go on (`failure_reason` says why); an operator takes it from there."""


def rotation_name(rotation_id: str) -> str:
    return ROTATION_PREFIX + rotation_id


def validate(payload: Mapping[str, Any]) -> str:
    """Check the payload (INVALID_ARGUMENT, one violation per field); its target."""
    problems = [
        FieldViolation(f"change.payload.{name}", f"is not a field of {KIND}")
        for name in sorted(set(payload) - _FIELDS)
    ]
    problems += [
        FieldViolation(f"change.payload.{name}", "is required")
        for name in sorted(_FIELDS - set(payload))
    ]
    chain, wallet, gas = payload.get("chain"), payload.get("wallet"), payload.get("gas_wei")
    if "chain" in payload and not (isinstance(chain, str) and _CHAIN.match(chain)):
        problems.append(FieldViolation("change.payload.chain", "must be a chain name"))
    if "wallet" in payload and not (
        isinstance(wallet, str) and _ADDRESS.match(wallet) and int(wallet, 16) != 0
    ):
        problems.append(
            FieldViolation("change.payload.wallet", "must be a 0x-prefixed 20-byte hex address")
        )
    if "gas_wei" in payload and not (isinstance(gas, str) and _INTEGER.match(gas)):
        problems.append(
            FieldViolation(
                "change.payload.gas_wei", 'must be a positive decimal integer string, e.g. "1"'
            )
        )
    if problems:
        raise invalid_argument(problems)
    return f"chains/{chain}/wallets/{str(wallet).lower()}"


def apply_rotation(session: Session, change: AppliedChange) -> ChangeEffect:
    """Record the rotation, RUNNING at CREATE_KEY (ChangeNotApplicable: no treasury Safe, the
    wallet is not an ACTIVE hot wallet of the chain, or a rotation runs on the chain)."""
    chain = str(change.payload["chain"])
    wallet = str(change.payload["wallet"]).lower()
    if session.get(SafeTreasury, chain) is None:
        raise ChangeNotApplicable(f"chain {chain} has no treasury Safe")
    row = session.get(HotWallet, wallet)
    if row is None or row.chain != chain or not row.enabled or row.state != WalletState.ACTIVE:
        raise ChangeNotApplicable(f"{wallet} is not an ACTIVE hot wallet of {chain}")
    running = session.scalar(
        select(HotWalletRotation.id)
        .where(
            HotWalletRotation.chain == chain,
            HotWalletRotation.state == RotationState.RUNNING.value,
        )
        .limit(1)
    )
    if running is not None:
        raise ChangeNotApplicable(
            f"rotation {rotation_name(running)} is running on {chain}; one at a time"
        )
    now = utcnow()
    rotation = HotWalletRotation(
        id=new_ulid(),
        change_id=change.id,
        chain=chain,
        old_wallet=wallet,
        new_wallet=None,
        gas_wei=str(change.payload["gas_wei"]),
        step=Step.CREATE_KEY.value,
        state=RotationState.RUNNING.value,
        failure_reason="",
        create_time=now,
        update_time=now,
    )
    session.add(rotation)
    session.flush()
    after = {
        "rotation": rotation_name(rotation.id),
        "step": Step.CREATE_KEY.value,
        "state": RotationState.RUNNING.value,
    }
    return ChangeEffect(target=validate(change.payload), before=None, after=after)


def ordering_change(session: Session, op: SafeTransaction) -> str | None:
    """The change that ordered a treasury operation: its own, or, for a rotation's step, the
    rotation's `hot_wallet.rotate` change (the owners' signers check the step against it)."""
    if op.change_id is not None or op.rotation_id is None:
        return op.change_id
    return session.scalar(
        select(HotWalletRotation.change_id).where(HotWalletRotation.id == op.rotation_id)
    )


def register(registry: ChangeRegistry) -> None:
    registry.register_with_change(KIND, validate, apply_rotation)
