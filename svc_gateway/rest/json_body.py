"""A REST JSON body, read with a nesting limit and checked against the request message before
json_format parses it.

json_format's own errors name Python types ("expected string or bytes-like object, got
'float'") and its recursion has no limit of ours, so the transcoder does not rely on them:
`load_json` refuses bodies nested deeper than `MAX_DEPTH` before decoding them, and
`check_message` compares every value's JSON type with its field's proto3 JSON mapping, so
each mismatch is a violation naming the field as the caller wrote it (`recipientAddress`,
`items[2].amount`) and saying what the field takes. A body that passes `check_message` is one
json_format parses.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from svc_gateway.rest.formats import FieldFormat
from withdrawal_shared.errors import FieldViolation

MAX_DEPTH = 32
"""The deepest nesting of JSON objects and arrays a body may have."""

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")
_INT_TEXT = re.compile(r"[+-]?[0-9]{1,40}\Z")

INT_RANGES: dict[int, tuple[int, int]] = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
"""The values each protobuf integer type can hold (shared with the query-string parser)."""
_FLOATS = frozenset({FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT})
_FLOAT_WORDS = frozenset({"NaN", "Infinity", "-Infinity"})

_WRAPPERS = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
# Well-known types given as a string, and what the string must be.
_STRING_TYPES: dict[str, str] = {
    "google.protobuf.Timestamp": 'an RFC 3339 timestamp such as "2024-05-01T12:00:00Z"',
    "google.protobuf.Duration": 'a duration in seconds such as "1.5s"',
    "google.protobuf.FieldMask": 'a comma-separated list of field paths such as "amount,token"',
}
# Well-known types that take any JSON of a kind.
_ANY_OF_KIND: dict[str, type | None] = {
    "google.protobuf.Struct": dict,
    "google.protobuf.ListValue": list,
    "google.protobuf.Value": None,
    "google.protobuf.Any": dict,
    "google.protobuf.Empty": dict,
}


class BodyError(Exception):
    """The body is not JSON, or not JSON this request message takes."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        super().__init__(violations)
        self.violations = violations


def _kind(value: Any) -> str:
    """The JSON kind of a decoded value, as the caller knows it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def too_deep(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """True when objects and arrays nest more than `limit` deep (strings are skipped)."""
    if raw.count(b"{") + raw.count(b"[") <= limit:
        return False
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub(b'""', raw)):
        if match.group() in (b"{", b"["):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def load_json(raw: bytes, name: str, max_depth: int = MAX_DEPTH) -> Any:
    """The decoded body; BodyError naming `name` when it is not JSON or nests too deep."""
    if too_deep(raw, max_depth):
        raise BodyError(
            [FieldViolation(name, f"nests objects and arrays more than {max_depth} levels deep")]
        )
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise BodyError([FieldViolation(name, "is not UTF-8 encoded JSON")]) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        where = f"line {err.lineno}, column {err.colno}"
        raise BodyError(
            [FieldViolation(name, f"is not valid JSON: {err.msg} at {where}")]
        ) from None
    except ValueError:  # an integer literal longer than Python converts
        raise BodyError([FieldViolation(name, "is not valid JSON: a number is too long")]) from None


@dataclass(frozen=True)
class _Fields:
    by_key: dict[str, FieldDescriptor]  # JSON name and proto name
    listing: str  # the JSON names, for "is not a known field"


_field_maps: dict[str, _Fields] = {}


def _fields(desc: Descriptor) -> _Fields:
    found = _field_maps.get(desc.full_name)
    if found is None:
        by_key: dict[str, FieldDescriptor] = {}
        for fd in desc.fields:
            by_key[fd.name] = fd
            by_key[fd.json_name] = fd
        found = _Fields(by_key, ", ".join(fd.json_name for fd in desc.fields))
        _field_maps[desc.full_name] = found
    return found


class _Checker:
    def __init__(self, formats: Mapping[str, FieldFormat]) -> None:
        self.formats = formats
        self.violations: list[FieldViolation] = []
        self.spelled: dict[str, str] = {}

    def bad(self, where: str, description: str) -> None:
        self.violations.append(FieldViolation(where, description))

    def message(self, data: Mapping[str, Any], desc: Descriptor, where: str, proto: str) -> None:
        fields = _fields(desc)
        seen: dict[int, str] = {}
        oneofs: dict[str, str] = {}
        for key, value in data.items():
            path = f"{where}.{key}" if where else key
            fd = fields.by_key.get(key)
            if fd is None:
                self.bad(path, f"is not a known field; the fields are: {fields.listing}")
                continue
            if fd.number in seen:
                self.bad(path, f"is given twice, as {seen[fd.number]} and as {key}")
                continue
            seen[fd.number] = key
            proto_path = f"{proto}.{fd.name}" if proto else fd.name
            if key != fd.json_name:
                self.spelled[proto_path] = path
            oneof = fd.containing_oneof
            if oneof is not None and value is not None:
                other = oneofs.get(oneof.name)
                if other is not None:
                    self.bad(path, f"cannot be given with {other}: only one of them may be set")
                    continue
                oneofs[oneof.name] = key
            if value is None:
                continue  # proto3 JSON: null is the field's default
            self.field(fd, value, path, proto_path)

    def field(self, fd: FieldDescriptor, value: Any, where: str, proto: str) -> None:
        message_type = fd.message_type
        if message_type is not None and message_type.GetOptions().map_entry:
            if not isinstance(value, dict):
                self.bad(where, f"must be a JSON object (a map), not {_kind(value)}")
                return
            key_fd = message_type.fields_by_name["key"]
            value_fd = message_type.fields_by_name["value"]
            for key, item in value.items():
                problem = self.map_key(key_fd, key)
                if problem:
                    self.bad(f"{where}.{key}", problem)
                elif item is None:
                    self.bad(f"{where}.{key}", "must not be null")
                else:
                    self.single(value_fd, item, f"{where}.{key}", f"{proto}.{key}")
            return
        if fd.is_repeated:
            if not isinstance(value, list):
                self.bad(where, f"must be a JSON array, not {_kind(value)}")
                return
            for i, item in enumerate(value):
                if item is None:
                    self.bad(f"{where}[{i}]", "must not be null")
                else:
                    self.single(fd, item, f"{where}[{i}]", f"{proto}[{i}]")
            return
        self.single(fd, value, where, proto)

    @staticmethod
    def map_key(fd: FieldDescriptor, key: str) -> str:
        if fd.type == FieldDescriptor.TYPE_BOOL and key not in ("true", "false"):
            return "is not a valid key: the keys are true and false"
        if fd.type in INT_RANGES and not _INT_TEXT.match(key):
            return "is not a valid key: the keys are integers"
        return ""

    def single(self, fd: FieldDescriptor, value: Any, where: str, proto: str) -> None:
        """One value (not a list) of the field."""
        message_type = fd.message_type
        if message_type is not None:
            self.message_value(message_type, value, where, proto)
            return
        problem = describe_scalar(fd, value, self.formats.get(fd.full_name))
        if problem:
            self.bad(where, problem)

    def message_value(self, desc: Descriptor, value: Any, where: str, proto: str) -> None:
        name = desc.full_name
        if name in _WRAPPERS:
            problem = describe_scalar(desc.fields_by_name["value"], value, None)
            if problem:
                self.bad(where, problem)
            return
        expected = _STRING_TYPES.get(name)
        if expected is not None:
            if not isinstance(value, str) or not _parses(desc, value):
                self.bad(where, f"must be {expected}")
            return
        if name in _ANY_OF_KIND:
            kind = _ANY_OF_KIND[name]
            if kind is not None and not isinstance(value, kind):
                wanted = "a JSON object" if kind is dict else "a JSON array"
                self.bad(where, f"must be {wanted}, not {_kind(value)}")
            elif not _parses(desc, value):
                self.bad(where, f"is not a valid {desc.name}")
            return
        if not isinstance(value, dict):
            self.bad(where, f"must be a JSON object, not {_kind(value)}")
            return
        self.message(value, desc, where, proto)


def _parses(desc: Descriptor, value: Any) -> bool:
    try:
        json_format.ParseDict(value, message_factory.GetMessageClass(desc)())
    except json_format.ParseError:
        return False
    return True


def _integer(value: Any) -> int | None:
    """The integer a JSON value stands for (proto3 JSON takes numbers and strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str):
        if _INT_TEXT.match(value):
            return int(value)
        try:
            number = float(value)
        except ValueError:
            return None
        return int(number) if math.isfinite(number) and number.is_integer() else None
    return None


def _string(fd: FieldDescriptor, value: Any, fmt: FieldFormat | None) -> str:
    if isinstance(value, str):
        return ""
    expected = fmt.expected if fmt is not None else "a string"
    return f"must be {expected}, not {_kind(value)}"


def _enum(fd: FieldDescriptor, value: Any, fmt: FieldFormat | None) -> str:
    enum = fd.enum_type
    assert enum is not None
    if isinstance(value, str) and value in enum.values_by_name:
        return ""
    if isinstance(value, int) and not isinstance(value, bool) and value in enum.values_by_number:
        return ""
    names = ", ".join(v.name for v in enum.values)
    return f"must be one of {names}; got {_shown(value)}"


def _bool(fd: FieldDescriptor, value: Any, fmt: FieldFormat | None) -> str:
    return "" if isinstance(value, bool) else f"must be true or false, not {_kind(value)}"


def _int(fd: FieldDescriptor, value: Any, fmt: FieldFormat | None) -> str:
    low, high = INT_RANGES[fd.type]
    number = _integer(value)
    if number is None or not low <= number <= high:
        return f"must be an integer from {low} to {high}; got {_shown(value)}"
    return ""


def _float(fd: FieldDescriptor, value: Any, fmt: FieldFormat | None) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return ""
    if isinstance(value, str):
        if value in _FLOAT_WORDS:
            return ""
        try:
            float(value)
        except ValueError:
            pass
        else:
            return ""
    return f"must be a number; got {_shown(value)}"


def _bytes(fd: FieldDescriptor, value: Any, fmt: FieldFormat | None) -> str:
    if not isinstance(value, str):
        return f"must be a base64 string, not {_kind(value)}"
    try:
        padded = value.replace("+", "-").replace("/", "_") + "=" * (-len(value) % 4)
        base64.b64decode(padded, altchars=b"-_", validate=True)
    except ValueError:
        return "must be a base64 string"
    return ""


_SCALARS: dict[int, Callable[[FieldDescriptor, Any, FieldFormat | None], str]] = {
    **dict.fromkeys(INT_RANGES, _int),
    **dict.fromkeys(_FLOATS, _float),
    FieldDescriptor.TYPE_STRING: _string,
    FieldDescriptor.TYPE_ENUM: _enum,
    FieldDescriptor.TYPE_BOOL: _bool,
    FieldDescriptor.TYPE_BYTES: _bytes,
}


def describe_scalar(fd: FieldDescriptor, value: Any, fmt: FieldFormat | None) -> str:
    """What is wrong with a decoded JSON value for a scalar or enum field, or "" if nothing.

    `fmt`, when given, says what a string field's text must be.
    """
    check = _SCALARS.get(fd.type)
    if check is None:  # pragma: no cover - groups and messages never get here
        return f"cannot be given as {_kind(value)}"
    return check(fd, value, fmt)


def check_message(
    data: Mapping[str, Any], desc: Descriptor, formats: Mapping[str, FieldFormat]
) -> tuple[list[FieldViolation], dict[str, str]]:
    """Every violation of `data` as proto3 JSON of `desc`, named by the caller's JSON paths;
    and, for the fields the caller named by their proto name instead of their JSON name,
    proto path -> the caller's path."""
    checker = _Checker(formats)
    checker.message(data, desc, "", "")
    return checker.violations, checker.spelled


def check_value(
    fd: FieldDescriptor, value: Any, where: str, formats: Mapping[str, FieldFormat]
) -> list[FieldViolation]:
    """Every violation of `value` as the proto3 JSON of field `fd`, the value named `where`."""
    checker = _Checker(formats)
    if value is not None:
        checker.field(fd, value, where, fd.name)
    return checker.violations
