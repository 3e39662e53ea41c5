"""Hypothesis strategies built from protobuf message descriptors, for fuzzing gRPC services.

`messages(descriptor, hints)` draws a message of any type: every scalar type at its extremes,
nested messages (depth-limited, so `google.protobuf.Struct`/`Value` terminate), repeated
fields, maps, enums with numbers the enum does not declare, at most one member of each oneof,
proto3 `optional` fields set or not. A string is drawn from garbage (any Unicode, control
characters, very long text, injection-looking text) or from valid-shaped values picked by the
field's name: decimal amounts, 0x addresses (lowercase, EIP-55, bad checksums), resource names
built from every `google.api.resource` pattern of the pool (ULID-ish ids, the ids of resources
that exist), token and chain symbols, request ids, list filters.

`invalid_requests(method, hints)` draws requests that are invalid by construction: a drawn
message with one `Breaker` applied that the API rules (AIPs) make a refusal, whatever the
other fields hold, or bytes that do not parse as the request type. `request_bytes` mixes
messages with arbitrary bytes for the open fuzz.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_utils.address import to_checksum_address
from google.api import field_behavior_pb2, resource_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    MethodDescriptor,
)
from google.protobuf.message import DecodeError, Message
from hypothesis import strategies as st

MAX_DEPTH = 4
MAX_ITEMS = 3
_ULID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
REQUIRED = field_behavior_pb2.REQUIRED
OUTPUT_ONLY = field_behavior_pb2.OUTPUT_ONLY

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
_INT_RANGES: dict[int, tuple[int, int]] = {
    FieldDescriptor.TYPE_INT32: INT32,
    FieldDescriptor.TYPE_SINT32: INT32,
    FieldDescriptor.TYPE_SFIXED32: INT32,
    FieldDescriptor.TYPE_INT64: INT64,
    FieldDescriptor.TYPE_SINT64: INT64,
    FieldDescriptor.TYPE_SFIXED64: INT64,
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def behaviors(fd: FieldDescriptor) -> set[int]:
    return set(fd.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def resource_reference(fd: FieldDescriptor) -> str:
    options = fd.GetOptions().Extensions[resource_pb2.resource_reference]
    return str(options.type or options.child_type)


def is_input(fd: FieldDescriptor) -> bool:
    return OUTPUT_ONLY not in behaviors(fd)


def message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)  # type: ignore[no-any-return]


def _real_oneof(fd: FieldDescriptor) -> bool:
    """In a oneof that is not the synthetic one of a proto3 `optional` field."""
    oneof = fd.containing_oneof
    return oneof is not None and not (len(oneof.fields) == 1 and oneof.name == f"_{fd.name}")


def parses(descriptor: Descriptor, data: bytes) -> bool:
    try:
        message_class(descriptor).FromString(data)
    except DecodeError:
        return False
    return True


# --- strings -----------------------------------------------------------------------------

_TEXT = st.characters(exclude_categories=["Cs"])  # a proto string is valid UTF-8
GARBAGE_STRINGS = st.one_of(
    st.text(_TEXT, max_size=40),
    st.text(_TEXT, min_size=120, max_size=600),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "\t\n",
            "null",
            "-1",
            "1e308",
            "NaN",
            "💸",
            "\u202e0x",
            "' OR 1=1 --",
            '"; DROP TABLE withdrawals; --',
            "%s%n%x",
            "../../etc/passwd",
            "a" * 5000,
            "withdrawals/",
            "withdrawals//x",
            "withdrawals/*",
            "/",
        ]
    ),
)


def ulid_ish() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(_ULID_ALPHABET, min_size=26, max_size=26),
        st.text(_ULID_ALPHABET.upper(), min_size=26, max_size=26),
        st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=40),
    )


AMOUNTS = st.one_of(
    st.from_regex(r"\A[1-9][0-9]{0,3}(\.[0-9]{1,6})?\Z"),
    st.from_regex(r"\A(0|[1-9][0-9]{0,7})(\.[0-9]{1,8})?\Z"),
    st.sampled_from(
        ["0", "0.0", "-1", "+1", "1e6", "01", "1.", ".5", "1,5", "1000000.000001", "١٢"]
    ),
)
HEX40 = st.text("0123456789abcdef", min_size=40, max_size=40)
ADDRESSES = st.one_of(
    HEX40.map(lambda h: "0x" + h),
    HEX40.map(lambda h: to_checksum_address("0x" + h)),
    HEX40.map(lambda h: "0x" + h),
    st.text("0123456789abcdefABCDEF", min_size=40, max_size=40).map(lambda h: "0x" + h),
    st.sampled_from(["0x" + "0" * 40, "0x", "0X" + "a" * 40, "0x" + "g" * 40, "0x" + "a" * 39]),
)
REQUEST_IDS = st.one_of(
    st.uuids().map(str), st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:\-]{0,20}\Z")
)
FILTERS = st.one_of(
    st.sampled_from(
        [
            "state = QUEUED",
            "state = STATE_COMPLETED OR state = SIGNED",
            'client_reference = "inv-1"',
            "state = QUEUED AND client_reference = x",
            "state = NOPE",
            "state =",
            "AND",
            "client_reference = a OR client_reference = b",
        ]
    ),
    st.from_regex(r"\A(state|client_reference) = [A-Za-z_]{1,12}\Z"),
)


@dataclass
class Hints:
    """What valid-shaped strings look like in this API, and what exists on the server."""

    patterns: Sequence[str] = ()  # google.api.resource patterns, e.g. withdrawals/{withdrawal}
    existing_names: Sequence[str] = ()
    request_ids: Sequence[str] = ()
    symbols: Sequence[str] = ("USDC", "USDC", "usdc", "ETH")
    chains: Sequence[str] = ("polygon", "polygon", "ethereum", "Polygon")
    by_field: dict[str, st.SearchStrategy[str]] = field(default_factory=dict)

    def names(self) -> st.SearchStrategy[str]:
        options: list[st.SearchStrategy[str]] = [pattern_names(p) for p in self.patterns]
        if self.existing_names:
            options.append(st.sampled_from(list(self.existing_names)))
        return st.one_of(options) if options else GARBAGE_STRINGS

    def shaped(self, fd: FieldDescriptor) -> st.SearchStrategy[str]:
        name = fd.name
        if name in self.by_field:
            return self.by_field[name]
        if name in ("name", "parent") or resource_reference(fd):
            return self.names()
        if "amount" in name or name == "fee":
            return AMOUNTS
        if "address" in name:
            return ADDRESSES
        if name == "request_id":
            return (
                st.one_of(REQUEST_IDS, st.sampled_from(list(self.request_ids)))
                if self.request_ids
                else REQUEST_IDS
            )
        if name in ("token", "fee_currency") or name.endswith("symbol"):
            return st.sampled_from(list(self.symbols))
        if name == "chain":
            return st.sampled_from(list(self.chains))
        if name == "filter":
            return FILTERS
        if name == "page_token":
            return st.one_of(st.just(""), st.text(string.ascii_letters + "-_=", max_size=60))
        return st.text(string.ascii_letters + string.digits + " -_.", max_size=30)

    def strings(self, fd: FieldDescriptor) -> st.SearchStrategy[str]:
        return st.one_of(self.shaped(fd), GARBAGE_STRINGS)


def pattern_names(pattern: str) -> st.SearchStrategy[str]:
    """Names of a resource pattern with ULID-ish or garbage ids in its variables."""
    parts = re.split(r"(\{[^}]+\})", pattern)
    pieces = [ulid_ish() if p.startswith("{") else st.just(p) for p in parts if p]
    return st.tuples(*pieces).map("".join)


def pattern_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(
        "".join(
            "[^/]+" if p.startswith("{") else re.escape(p)
            for p in re.split(r"(\{[^}]+\})", pattern)
            if p
        )
    )


def resource_patterns(descriptors: Sequence[Descriptor]) -> list[str]:
    """Every google.api.resource pattern of these messages and the messages they reach."""
    seen: set[str] = set()
    patterns: list[str] = []

    def visit(descriptor: Descriptor) -> None:
        if descriptor.full_name in seen:
            return
        seen.add(descriptor.full_name)
        for pattern in descriptor.GetOptions().Extensions[resource_pb2.resource].pattern:
            if pattern not in patterns:
                patterns.append(pattern)
        for fd in descriptor.fields:
            if fd.message_type is not None:
                visit(fd.message_type)

    for descriptor in descriptors:
        visit(descriptor)
    return patterns


# --- messages ----------------------------------------------------------------------------


def enum_numbers(enum: EnumDescriptor) -> st.SearchStrategy[int]:
    known = [v.number for v in enum.values]
    return st.one_of(st.sampled_from(known), st.integers(*INT32))


def unknown_enum_numbers(enum: EnumDescriptor) -> st.SearchStrategy[int]:
    known = {v.number for v in enum.values}
    return st.integers(*INT32).filter(lambda n: n not in known)


def scalar(fd: FieldDescriptor, hints: Hints, wild: bool = True) -> st.SearchStrategy[Any]:
    t = fd.type
    if t in _INT_RANGES:
        lo, hi = _INT_RANGES[t]
        return st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi, 0, 1, -1 if lo else 2]))
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32 if t == FieldDescriptor.TYPE_FLOAT else 64)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_STRING:
        return hints.strings(fd) if wild else hints.shaped(fd)
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == FieldDescriptor.TYPE_ENUM:
        if wild:
            return enum_numbers(fd.enum_type)
        return st.sampled_from([v.number for v in fd.enum_type.values])
    raise TypeError(f"no strategy for {fd.full_name} (type {t})")


def _is_map(fd: FieldDescriptor) -> bool:
    mt = fd.message_type
    return mt is not None and mt.GetOptions().map_entry


@st.composite
def _fill(
    draw: st.DrawFn, cls: type[Message], hints: Hints, depth: int, wild: bool | None
) -> Message:
    """Set some fields of `msg`. Wild: any value, any field. Tame (drawn for the whole
    message at the top): valid-shaped strings, declared enum values, REQUIRED fields set and
    output-only ones left out, so that many requests pass validation and reach the store."""
    if wild is None:
        wild = draw(st.booleans())
    msg = cls()
    descriptor = msg.DESCRIPTOR
    for oneof in descriptor.oneofs:
        members = [fd for fd in oneof.fields if _real_oneof(fd)]
        if members:
            chosen = draw(st.none() | st.sampled_from(members))
            if chosen is not None:
                _set(draw, msg, chosen, hints, depth, wild)
    for fd in descriptor.fields:
        if _real_oneof(fd):
            continue
        if fd.message_type is not None and depth >= MAX_DEPTH:
            continue
        if wild:
            chosen = draw(st.booleans())
        elif REQUIRED in behaviors(fd):
            chosen = True
        else:
            chosen = is_input(fd) and draw(st.booleans())
        if chosen:
            _set(draw, msg, fd, hints, depth, wild)
    return msg


def _set(
    draw: st.DrawFn, msg: Message, fd: FieldDescriptor, hints: Hints, depth: int, wild: bool
) -> None:
    target: Any = getattr(msg, fd.name) if fd.is_repeated else None
    if _is_map(fd):
        key_fd = fd.message_type.fields_by_name["key"]
        value_fd = fd.message_type.fields_by_name["value"]
        for _ in range(draw(st.integers(0, MAX_ITEMS))):
            key = draw(scalar(key_fd, hints, wild))
            if value_fd.message_type is not None:
                if depth + 1 < MAX_DEPTH:
                    value = draw(messages(value_fd.message_type, hints, depth + 1, wild))
                    target[key].CopyFrom(value)
            else:
                target[key] = draw(scalar(value_fd, hints, wild))
    elif fd.is_repeated:
        for _ in range(draw(st.integers(0, MAX_ITEMS))):
            if fd.message_type is not None:
                target.add().CopyFrom(draw(messages(fd.message_type, hints, depth + 1, wild)))
            else:
                target.append(draw(scalar(fd, hints, wild)))
    elif fd.message_type is not None:
        getattr(msg, fd.name).CopyFrom(draw(messages(fd.message_type, hints, depth + 1, wild)))
    else:
        setattr(msg, fd.name, draw(scalar(fd, hints, wild)))


def messages(
    descriptor: Descriptor, hints: Hints, depth: int = 0, wild: bool | None = None
) -> st.SearchStrategy[Message]:
    """A message of `descriptor`'s type (its class from the descriptor's own pool); `wild`
    None draws wild or tame for the whole message."""
    cls = message_class(descriptor)
    return _fill(cls, hints, depth, wild)


# --- bytes -------------------------------------------------------------------------------


def malformed_bytes(descriptor: Descriptor, hints: Hints) -> st.SearchStrategy[bytes]:
    """Bytes that do not parse as `descriptor`'s message: bad tags, wire types, truncation,
    invalid UTF-8 in a string field, or random bytes that happen not to parse."""
    string_fields = [
        fd.number
        for fd in descriptor.fields
        if fd.type == FieldDescriptor.TYPE_STRING and not fd.is_repeated
    ]
    serialized = messages(descriptor, hints).map(lambda m: m.SerializeToString())
    options: list[st.SearchStrategy[bytes]] = [
        st.builds(lambda body, bad: bad + body, serialized, st.sampled_from([b"\x00", b"\x0f"])),
        st.builds(lambda body: body + b"\x0a\x7f", serialized),  # length beyond the end
        st.builds(lambda body: body + b"\x80", serialized),  # truncated varint tag
        st.binary(min_size=1, max_size=64),
    ]
    if string_fields:
        options.append(
            st.builds(
                lambda number, body: body + bytes([number << 3 | 2, 2]) + b"\xff\xfe",
                st.sampled_from([n for n in string_fields if n < 16] or [1]),
                serialized,
            )
        )
    return st.one_of(options).filter(lambda data: not parses(descriptor, data))


def request_bytes(descriptor: Descriptor, hints: Hints) -> st.SearchStrategy[bytes]:
    """The open fuzz: a drawn message's bytes (mostly), or bytes that may or may not parse."""
    serialized = messages(descriptor, hints).map(lambda m: m.SerializeToString())
    raw = st.one_of(st.binary(max_size=200), malformed_bytes(descriptor, hints))
    return st.integers(0, 4).flatmap(lambda n: raw if n == 0 else serialized)


# --- invalid by construction -------------------------------------------------------------


@dataclass(frozen=True)
class Breaker:
    """One change that makes any request of the method invalid, and the API rule saying so."""

    kind: str
    path: tuple[str, ...] = ()
    rule: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {'.'.join(self.path)} ({self.rule})"


def _input_fields(
    descriptor: Descriptor, prefix: tuple[str, ...], required_chain: bool
) -> list[tuple[tuple[str, ...], FieldDescriptor, bool]]:
    """(path, field, every ancestor REQUIRED) of input fields, through singular messages."""
    found = []
    for fd in descriptor.fields:
        if not is_input(fd) or fd.is_repeated:
            continue
        path = (*prefix, fd.name)
        required = required_chain and REQUIRED in behaviors(fd)
        found.append((path, fd, required))
        mt = fd.message_type
        if mt is not None and not mt.full_name.startswith("google.protobuf.") and len(path) < 3:
            found.extend(_input_fields(mt, path, required))
    return found


def breakers(method: MethodDescriptor, patterns: Sequence[str]) -> list[Breaker]:
    found = [Breaker("malformed", (), "bytes that do not parse are INVALID_ARGUMENT")]
    for path, fd, required in _input_fields(method.input_type, (), True):
        if required:
            found.append(Breaker("clear", path, "a REQUIRED field is missing (AIP-203)"))
        if fd.type == FieldDescriptor.TYPE_STRING and resource_reference(fd) and patterns:
            found.append(
                Breaker("bad_name", path, "a reference that matches no resource pattern (AIP-122)")
            )
            found.append(
                Breaker("missing_name", path, "a reference to a resource that does not exist")
            )
        if fd.name == "page_size" and fd.type in _INT_RANGES and len(path) == 1:
            found.append(Breaker("negative", path, "a negative page_size (AIP-158)"))
        if fd.name == "page_token" and len(path) == 1:
            found.append(Breaker("garbage_token", path, "a page_token the API never issued"))
        if fd.type == FieldDescriptor.TYPE_ENUM:
            found.append(Breaker("unknown_enum", path, "an enum number the API does not define"))
    return found


def _parent_and_field(msg: Message, path: tuple[str, ...]) -> tuple[Message, str]:
    for name in path[:-1]:
        msg = getattr(msg, name)
    return msg, path[-1]


@dataclass(frozen=True)
class InvalidRequest:
    data: bytes
    breaker: Breaker
    message: Message | None

    def describe(self) -> str:
        shown = repr(self.message) if self.message is not None else repr(self.data)
        return f"{self.breaker}: {shown[:2000]}"


@st.composite
def _invalid(
    draw: st.DrawFn, method: MethodDescriptor, hints: Hints, choices: Sequence[Breaker]
) -> InvalidRequest:
    breaker = draw(st.sampled_from(list(choices)))
    if breaker.kind == "malformed":
        return InvalidRequest(draw(malformed_bytes(method.input_type, hints)), breaker, None)
    msg = draw(messages(method.input_type, hints))
    parent, name = _parent_and_field(msg, breaker.path)
    fd = parent.DESCRIPTOR.fields_by_name[name]
    if breaker.kind == "clear":
        parent.ClearField(name)
    elif breaker.kind == "bad_name":
        regexes = [pattern_regex(p) for p in hints.patterns]
        value = draw(GARBAGE_STRINGS.filter(lambda s: not any(r.fullmatch(s) for r in regexes)))
        setattr(parent, name, value)
    elif breaker.kind == "missing_name":
        existing = set(hints.existing_names)
        value = draw(
            st.one_of([pattern_names(p) for p in hints.patterns]).filter(
                lambda s: s not in existing
            )
        )
        setattr(parent, name, value)
    elif breaker.kind == "negative":
        lo, _ = _INT_RANGES[fd.type]
        setattr(parent, name, draw(st.integers(lo, -1)))
    elif breaker.kind == "garbage_token":
        setattr(parent, name, draw(GARBAGE_STRINGS.filter(bool)))
    elif breaker.kind == "unknown_enum":
        setattr(parent, name, draw(unknown_enum_numbers(fd.enum_type)))
    else:  # pragma: no cover - breakers() makes only the kinds above
        raise ValueError(breaker.kind)
    return InvalidRequest(msg.SerializeToString(), breaker, msg)


def invalid_requests(method: MethodDescriptor, hints: Hints) -> st.SearchStrategy[InvalidRequest]:
    """Requests of `method` that are invalid whatever else they hold (see `breakers`)."""
    return _invalid(method, hints, breakers(method, hints.patterns))
