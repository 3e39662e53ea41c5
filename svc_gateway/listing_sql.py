"""The SQL conditions of a ListWithdrawals filter (`listing.ListFilter`) on `withdrawals`.

Amounts are stored in each token's base units, and a filter's amount is in token units, so an
amount bound becomes one condition per token, each in that token's own base units (rounded the
way that keeps the comparison exact: `amount >= 1.0000005` on a 6-decimal token is
`>= 1000001` base units, `amount = 1.0000005` matches nothing there).
"""

from __future__ import annotations

import decimal
import math
from typing import Any, cast

from sqlalchemy import ColumnElement, and_, false, func, or_

from svc_gateway.listing import ListFilter
from withdrawal_shared.db.models import Withdrawal
from withdrawal_shared.db.reference import ReferenceData, TokenInfo


def _compare(op: str, column: Any, value: object) -> ColumnElement[bool]:
    """`column <op> value` for the operators a filter accepts."""
    if op == "<":
        return cast("ColumnElement[bool]", column < value)
    if op == "<=":
        return cast("ColumnElement[bool]", column <= value)
    if op == ">":
        return cast("ColumnElement[bool]", column > value)
    if op == ">=":
        return cast("ColumnElement[bool]", column >= value)
    return cast("ColumnElement[bool]", column == value)


def _base_bound(op: str, amount: decimal.Decimal, decimals: int) -> tuple[str, int] | None:
    """`amount` (token units) against base units of a token with `decimals`: the same
    comparison on whole base units, or None when nothing can be equal to it."""
    exact = amount.scaleb(decimals)
    whole = exact == exact.to_integral_value()
    if op == "=":
        return ("=", int(exact)) if whole else None
    if op in (">=", "<"):
        return op, math.ceil(exact)
    return op, math.floor(exact)  # > and <=


def _text_compare(op: str, value: int) -> ColumnElement[bool]:
    """`amount <op> value` where amounts are decimal text (SQLite): a longer number is larger,
    numbers of one length compare as text (no leading zeros, never negative)."""
    text = str(value)
    length = func.length(Withdrawal.amount)
    if op == "=":
        return Withdrawal.amount == value
    same = and_(length == len(text), _compare(op, Withdrawal.amount, value))
    longer_wins = op in (">", ">=")
    return or_(_compare(">" if longer_wins else "<", length, len(text)), same)


def _token_amounts(
    selection: ListFilter, token: TokenInfo, amounts_as_text: bool
) -> ColumnElement[bool]:
    parts: list[ColumnElement[bool]] = [Withdrawal.token_id == token.id]
    for op, amount in selection.amount:
        bound = _base_bound(op, amount, token.decimals)
        if bound is None:
            return false()
        if amounts_as_text:
            parts.append(_text_compare(*bound))
        else:
            parts.append(_compare(bound[0], Withdrawal.amount, bound[1]))
    return and_(*parts)


def filter_conditions(
    selection: ListFilter, reference: ReferenceData, dialect: str
) -> list[ColumnElement[bool]]:
    """The WHERE conditions (ANDed) that select what `selection` selects, for the database
    `dialect` (`IntegerAmount` is DECIMAL on MySQL/MariaDB and decimal text on SQLite)."""
    amounts_as_text = dialect not in ("mysql", "mariadb")
    conditions: list[ColumnElement[bool]] = []
    if selection.states:
        conditions.append(Withdrawal.state.in_(sorted(s.value for s in selection.states)))
    if selection.client_reference is not None:
        conditions.append(Withdrawal.client_reference == selection.client_reference)
    if selection.user_ref is not None:
        conditions.append(Withdrawal.user_ref == selection.user_ref)
    if selection.recipient is not None:
        conditions.append(Withdrawal.recipient == selection.recipient)
    if selection.batch_id is not None:
        conditions.append(Withdrawal.batch_id == selection.batch_id)
    for op, moment in selection.create_time:
        conditions.append(_compare(op, Withdrawal.create_time, moment.replace(tzinfo=None)))
    tokens = [
        token
        for token in reference.tokens_by_id.values()
        if selection.token is None or token.symbol.upper() == selection.token
    ]
    if selection.token is not None and not selection.amount:
        conditions.append(
            Withdrawal.token_id.in_([token.id for token in tokens]) if tokens else false()
        )
    if selection.amount:
        conditions.append(
            or_(*[_token_amounts(selection, token, amounts_as_text) for token in tokens])
            if tokens
            else false()
        )
    return conditions
