"""Whether the payout vault covers a batch: per token of its accepted rows, what the vault
could pay now, from the processor's last reading of the chain (`vault_funds`; the gateway
reads no chain), less the open withdrawals of that token still waiting ahead of the batch
(not yet in a payout). An estimate with its reading's time: a batch is accepted whatever it
says, and rows the vault cannot pay yet wait ON_HOLD until it can."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Engine, or_, select

from svc_gateway.limits import _amount_sum, _exact
from withdrawal_shared.db.models import VaultFunds, Withdrawal
from withdrawal_shared.holds import HoldReason
from withdrawal_shared.states import State

WAITING = (
    State.RECEIVED,
    State.VALIDATED,
    State.PENDING_APPROVAL,
    State.QUEUED,
    State.ON_HOLD,
)
"""States of a withdrawal that will draw on the vault and has not been placed in a payout."""


@dataclass(frozen=True)
class Funding:
    token_id: int
    amount: int  # the batch's, base units
    payable: int  # of `amount`, what the vault could pay now
    reason: str  # what limits it when short; "" when covered
    observe_time: dt.datetime

    @property
    def shortfall(self) -> int:
        return self.amount - self.payable


def batch_funding(
    engine: Engine, batch_id: str, totals: Mapping[int, tuple[int, int]]
) -> list[Funding]:
    """Per token of `totals` (token id -> (amount, rows)) whose vault was read, in token id
    order."""
    if not totals:
        return []
    dialect = engine.dialect.name
    found = []
    with engine.connect() as connection:
        readings = connection.execute(
            select(
                VaultFunds.token_id,
                VaultFunds.available,
                VaultFunds.allowance,
                VaultFunds.observe_time,
            ).where(VaultFunds.token_id.in_(sorted(totals)))
        ).all()
        for token_id, available, allowance, observe_time in sorted(readings):
            ahead = _exact(
                connection.scalar(
                    select(_amount_sum(Withdrawal.amount, dialect)).where(
                        Withdrawal.token_id == token_id,
                        Withdrawal.state.in_([s.value for s in WAITING]),
                        Withdrawal.payout_tx_id.is_(None),
                        or_(Withdrawal.batch_id.is_(None), Withdrawal.batch_id != batch_id),
                    )
                )
            )
            amount = totals[token_id][0]
            funds = int(available) - ahead
            cap = None if allowance is None else int(allowance) - ahead
            payable = max(0, min(amount, funds, amount if cap is None else cap))
            reason = ""
            if payable < amount:
                by_funds = cap is None or funds <= cap
                reason = (
                    HoldReason.INSUFFICIENT_VAULT_FUNDS
                    if by_funds
                    else HoldReason.OUTFLOW_CAP_REACHED
                ).value
            found.append(Funding(token_id, amount, payable, reason, observe_time))
    return found
