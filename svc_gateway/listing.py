"""ListWithdrawals: the AIP-160 filter subset we accept, and opaque page tokens.

A filter is terms joined by AND. A term compares one field with a value, which may be quoted
(`"..."`, with `\\"` and `\\\\` escapes) or bare (letters, digits and `_ . : - @ /`):

- `state = COMPLETED`, several joined by OR (`state = QUEUED OR state = SIGNED`); OR joins
  nothing else;
- `client_reference`, `user_ref`, `recipient_address`, `token`, `batch`: `=` only;
- `create_time`: `<`, `<=`, `>`, `>=` with an RFC 3339 time (a zone is required);
- `amount`: `=`, `<`, `<=`, `>`, `>=` with a decimal in token units (`12.5`), compared per
  token in its own base units.

Each field appears once, except `create_time` and `amount`, which may appear twice (a range).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from withdrawal_shared.errors import FieldViolation, invalid_argument, quoted
from withdrawal_shared.ids import is_ulid
from withdrawal_shared.states import State

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

_TOKEN = re.compile(
    r"""\s*(?:(?P<op><=|>=|!=|=|<|>)|"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<word>[A-Za-z0-9_.:@/\-]+))"""
)
_EQUALITY_FIELDS = ("client_reference", "user_ref", "recipient_address", "token", "batch")
_RANGE_FIELDS = ("create_time", "amount")
_FIELDS = ("state", *_EQUALITY_FIELDS, *_RANGE_FIELDS)
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_DECIMAL = re.compile(r"^[0-9]{1,30}(\.[0-9]{1,30})?$")
_EXAMPLES = (
    'use e.g. state = COMPLETED, state = QUEUED OR state = SIGNED, client_reference = "abc", '
    'create_time >= "2026-12-01T00:00:00Z", amount > "100"'
)


@dataclass(frozen=True)
class ListFilter:
    """What a ListWithdrawals filter selects (empty: everything)."""

    states: frozenset[State] = frozenset()
    client_reference: str | None = None
    user_ref: str | None = None
    recipient: str | None = None
    """Lowercase."""
    token: str | None = None
    """Upper-case symbol."""
    batch_id: str | None = None
    create_time: tuple[tuple[str, dt.datetime], ...] = ()
    """(operator, aware UTC time) pairs, ANDed."""
    amount: tuple[tuple[str, decimal.Decimal], ...] = ()
    """(operator, amount in token units) pairs, ANDed."""


@dataclass(frozen=True)
class ListQuery:
    filter: ListFilter
    after_id: str | None
    page_size: int
    filter_digest: str


def _bad_filter(description: str) -> Exception:
    return invalid_argument([FieldViolation("filter", description)])


def _tokens(text: str) -> Iterator[tuple[str, str]]:
    """(kind, text) pairs: kind is `op`, `quoted` or `word`."""
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            return
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise _bad_filter(
                f"cannot read the filter at {quoted(text[position:].strip()[:40])}; {_EXAMPLES}"
            )
        position = match.end()
        if match.group("op") is not None:
            yield "op", match["op"]
        elif match.group("quoted") is not None:
            yield "quoted", re.sub(r"\\(.)", r"\1", match["quoted"])
        else:
            yield "word", match["word"]


@dataclass(frozen=True)
class _Term:
    field: str
    op: str
    value: str


def _conjuncts(text: str) -> list[list[_Term]]:
    """The filter as AND-ed groups of OR-ed terms."""
    tokens = list(_tokens(text))
    groups: list[list[_Term]] = [[]]
    index = 0
    expect_term = True
    while index < len(tokens):
        kind, value = tokens[index]
        if not expect_term:
            if kind == "word" and value in ("AND", "OR"):
                if value == "AND":
                    groups.append([])
                expect_term = True
                index += 1
                continue
            raise _bad_filter(f"expected AND or OR before {quoted(value)}; {_EXAMPLES}")
        if index + 2 >= len(tokens):
            raise _bad_filter(f"an incomplete term at {quoted(value)}; {_EXAMPLES}")
        (field_kind, name), (op_kind, op), (value_kind, operand) = tokens[index : index + 3]
        if field_kind != "word" or name not in _FIELDS:
            raise _bad_filter(
                f"{quoted(name)} is not a field to filter on; fields: {', '.join(_FIELDS)}"
            )
        if op_kind != "op" or value_kind == "op":
            raise _bad_filter(f"{name} needs an operator and a value, e.g. {name} = ...")
        groups[-1].append(_Term(name, op, operand))
        index += 3
        expect_term = False
    if expect_term and tokens:
        raise _bad_filter(f"the filter ends with AND or OR; {_EXAMPLES}")
    return [group for group in groups if group]


def _state(value: str) -> State:
    name = value.removeprefix("STATE_")
    try:
        return State(name)
    except ValueError:
        raise _bad_filter(
            f"unknown state {quoted(value)}; one of {', '.join(s.value for s in State)}"
        ) from None


def _states(group: list[_Term]) -> set[State]:
    if any(term.op != "=" for term in group):
        raise _bad_filter("state is compared with = only")
    return {_state(term.value) for term in group}


def _time(value: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise _bad_filter(
            f"create_time needs an RFC 3339 time with a zone, e.g. "
            f'"2026-12-01T00:00:00Z"; got {quoted(value)}'
        )
    return parsed.astimezone(dt.UTC)


def _amount(value: str) -> decimal.Decimal:
    if not _DECIMAL.match(value):
        raise _bad_filter(
            f'amount needs a decimal in token units, e.g. "12.5"; got {quoted(value)}'
        )
    return decimal.Decimal(value)


def _equality(term: _Term) -> str:
    if term.op != "=":
        raise _bad_filter(f"{term.field} is compared with = only")
    value = term.value
    if term.field == "recipient_address":
        if not _ADDRESS.match(value):
            raise _bad_filter(f"recipient_address needs a 0x address; got {quoted(value)}")
        return value.lower()
    if term.field == "token":
        return value.upper()
    if term.field == "batch":
        batch_id = value.removeprefix("batches/")
        if batch_id == value or not is_ulid(batch_id):
            raise _bad_filter(f"batch needs a batch name, batches/{{id}}; got {quoted(value)}")
        return batch_id
    return value


def parse_filter(text: str) -> ListFilter:
    """The filter's selection, or INVALID_ARGUMENT on `filter` saying what is wrong."""
    states: set[State] = set()
    equal: dict[str, str] = {}
    times: list[tuple[str, dt.datetime]] = []
    amounts: list[tuple[str, decimal.Decimal]] = []
    for group in _conjuncts(text):
        if len(group) > 1 and any(term.field != "state" for term in group):
            raise _bad_filter("OR joins state terms only (state = QUEUED OR state = SIGNED)")
        if group[0].field == "state":
            if states:
                raise _bad_filter("join several states with OR, not AND")
            states.update(_states(group))
            continue
        for term in group:
            if term.field in _EQUALITY_FIELDS:
                if term.field in equal:
                    raise _bad_filter(f"{term.field} may appear once")
                equal[term.field] = _equality(term)
            elif term.field == "create_time":
                if term.op not in ("<", "<=", ">", ">="):
                    raise _bad_filter("create_time is compared with <, <=, > or >=")
                times.append((term.op, _time(term.value)))
            else:
                if term.op == "!=":
                    raise _bad_filter("amount is compared with =, <, <=, > or >=")
                amounts.append((term.op, _amount(term.value)))
    if len(times) > 2 or len(amounts) > 2:
        raise _bad_filter("create_time and amount may each appear at most twice (a range)")
    return ListFilter(
        states=frozenset(states),
        client_reference=equal.get("client_reference"),
        user_ref=equal.get("user_ref"),
        recipient=equal.get("recipient_address"),
        token=equal.get("token"),
        batch_id=equal.get("batch"),
        create_time=tuple(times),
        amount=tuple(amounts),
    )


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode_page_token(after_id: str, filter_text: str) -> str:
    raw = json.dumps({"a": after_id, "f": _digest(filter_text)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def parse_page_size(page_size: int) -> int:
    if page_size < 0:
        raise invalid_argument([FieldViolation("page_size", "must not be negative")])
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def parse_list_request(page_size: int, page_token: str, filter_text: str) -> ListQuery:
    size = parse_page_size(page_size)
    selection = parse_filter(filter_text)
    after_id: str | None = None
    if page_token:
        try:
            padded = page_token + "=" * (-len(page_token) % 4)
            decoded = json.loads(base64.urlsafe_b64decode(padded.encode()))
            after_id = str(decoded["a"])
            digest = str(decoded["f"])
        except (ValueError, KeyError, TypeError):
            raise invalid_argument(
                [FieldViolation("page_token", "is not a token this API returned")]
            ) from None
        if not is_ulid(after_id):
            raise invalid_argument(
                [FieldViolation("page_token", "is not a token this API returned")]
            )
        if digest != _digest(filter_text):
            raise invalid_argument(
                [FieldViolation("page_token", "was issued for another filter; keep it the same")]
            )
    return ListQuery(selection, after_id, size, _digest(filter_text))


def encode_version_token(version: int, withdrawal_id: str) -> str:
    """ListStateChanges' page token: the last version returned, bound to its withdrawal."""
    raw = json.dumps({"v": version, "w": withdrawal_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def parse_version_token(page_token: str, withdrawal_id: str) -> int:
    """The version a ListStateChanges page token continues after, or INVALID_ARGUMENT."""
    try:
        padded = page_token + "=" * (-len(page_token) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded.encode()))
        version = int(decoded["v"])
        owner = str(decoded["w"])
    except (ValueError, KeyError, TypeError):
        raise invalid_argument(
            [FieldViolation("page_token", "is not a token this API returned")]
        ) from None
    if owner != withdrawal_id or version < 0:
        raise invalid_argument(
            [FieldViolation("page_token", "was issued for another withdrawal; keep `parent`")]
        )
    return version
