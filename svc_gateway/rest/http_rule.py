"""`google.api.HttpRule` semantics: path templates (parse, match) and the fields they bind.

Grammar (google/api/http.proto)::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;

`{name}` means `{name=*}`. A variable may span several segments (`{name=withdrawals/*}`),
so its value may contain '/'. Each template compiles once to a regular expression over the
raw (still percent-encoded) URL path; matched variable values are percent-decoded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2  # type: ignore[import-untyped,unused-ignore]
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_LITERAL = re.compile(r"[^/{}*:=]+\Z")


class TemplateError(ValueError):
    """A path template that does not follow the HttpRule grammar."""


@dataclass(frozen=True)
class Variable:
    """One `{field.path=segments}` of a template; `segments` are literals, `*` or `**`."""

    field_path: str
    segments: tuple[str, ...]


@dataclass(frozen=True)
class Segment:
    """One top-level template segment: a literal, `*`, `**`, or a variable."""

    literal: str | None = None
    variable: Variable | None = None

    @property
    def wildcard(self) -> str | None:
        """`*` or `**` when this segment is an unnamed wildcard."""
        return self.literal if self.literal in ("*", "**") else None


@dataclass(frozen=True)
class PathTemplate:
    """A parsed template: its segments, optional `:verb`, and a compiled matcher."""

    template: str
    segments: tuple[Segment, ...]
    verb: str | None
    _regex: re.Pattern[str] = field(repr=False, compare=False)
    _group_fields: tuple[tuple[str, str], ...] = field(repr=False, compare=False)

    @property
    def variables(self) -> tuple[Variable, ...]:
        return tuple(s.variable for s in self.segments if s.variable is not None)

    @property
    def literal_count(self) -> int:
        """How many literal segments the template has: more literals = more specific."""
        count = 0
        for seg in self.segments:
            parts = seg.variable.segments if seg.variable else (seg.literal or "",)
            count += sum(1 for p in parts if p not in ("*", "**"))
        return count

    def match(self, path: str) -> dict[str, str] | None:
        """The path variables (field path -> decoded value) if `path` matches, else None.

        `path` is the raw URL path without the query string, e.g. `/v1/withdrawals/a:cancel`.
        """
        found = self._regex.fullmatch(path)
        if found is None:
            return None
        return {fp: unquote(found.group(g)) for g, fp in self._group_fields}


def _parse_segments(text: str, *, in_variable: bool) -> list[str]:
    parts = text.split("/")
    for part in parts:
        if part in ("*", "**"):
            continue
        if not part or not _LITERAL.match(part):
            where = "variable" if in_variable else "template"
            raise TemplateError(f"bad segment {part!r} in {where} {text!r}")
    if "**" in parts[:-1]:
        raise TemplateError(f"'**' must be the last segment in {text!r}")
    return parts


def _split_top(body: str, template: str) -> list[str]:
    """Split on '/' outside braces."""
    out: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in body:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise TemplateError(f"unbalanced '}}' in {template!r}")
        if ch == "/" and depth == 0:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise TemplateError(f"unbalanced '{{' in {template!r}")
    out.append("".join(current))
    return out


def parse_template(template: str) -> PathTemplate:
    """Parse an HttpRule path template such as `/v1/{name=withdrawals/*}:cancel`."""
    if not template.startswith("/"):
        raise TemplateError(f"template must start with '/': {template!r}")
    body = template[1:]
    verb: str | None = None
    # The verb is a ':' after the last '/' and outside any variable.
    last_close = body.rfind("}")
    colon = body.rfind(":")
    if colon > last_close and colon > body.rfind("/"):
        verb = body[colon + 1 :]
        body = body[:colon]
        if not verb or not _LITERAL.match(verb):
            raise TemplateError(f"bad verb {verb!r} in {template!r}")
    segments: list[Segment] = []
    regex_parts: list[str] = []
    groups: list[tuple[str, str]] = []
    raw_segments = _split_top(body, template)
    for index, raw in enumerate(raw_segments):
        if raw.startswith("{"):
            if not raw.endswith("}"):
                raise TemplateError(f"bad variable {raw!r} in {template!r}")
            inner = raw[1:-1]
            name, eq, pattern = inner.partition("=")
            if not _IDENT.match(name):
                raise TemplateError(f"bad field path {name!r} in {template!r}")
            if name in {fp for _, fp in groups}:
                raise TemplateError(f"variable {name!r} bound twice in {template!r}")
            var_segments = tuple(_parse_segments(pattern, in_variable=True)) if eq else ("*",)
            segments.append(Segment(variable=Variable(name, var_segments)))
            group = f"v{len(groups)}"
            groups.append((group, name))
            regex_parts.append(f"(?P<{group}>{_segments_regex(var_segments)})")
        else:
            parts = _parse_segments(raw, in_variable=False)
            if len(parts) != 1:  # pragma: no cover - _split_top already split on '/'
                raise TemplateError(f"bad segment {raw!r} in {template!r}")
            if raw == "**" and index != len(raw_segments) - 1:
                raise TemplateError(f"'**' must be the last segment in {template!r}")
            segments.append(Segment(literal=raw))
            regex_parts.append(_segments_regex((raw,)))
    if any(
        (s.variable and "**" in s.variable.segments) or s.literal == "**" for s in segments[:-1]
    ):
        raise TemplateError(f"'**' must be the last segment in {template!r}")
    pattern = "/" + "/".join(regex_parts) + (re.escape(":" + verb) if verb else "")
    return PathTemplate(
        template=template,
        segments=tuple(segments),
        verb=verb,
        _regex=re.compile(pattern),
        _group_fields=tuple(groups),
    )


def _segments_regex(parts: tuple[str, ...]) -> str:
    out: list[str] = []
    for part in parts:
        if part == "*":
            out.append("[^/]+")
        elif part == "**":
            out.append(".*")
        else:
            out.append(re.escape(part))
    return "/".join(out)


@dataclass(frozen=True)
class RuleBinding:
    """One (HTTP method, path template, body) of an HttpRule or of its additional_bindings."""

    http_method: str
    template: PathTemplate
    body: str
    response_body: str


def rule_bindings(rule: http_pb2.HttpRule) -> list[RuleBinding]:
    """The rule's own binding followed by its `additional_bindings`, one per HTTP method."""
    out: list[RuleBinding] = []
    kind = rule.WhichOneof("pattern")
    if kind is not None:
        if kind == "custom":
            method, path = rule.custom.kind.upper(), rule.custom.path
        else:
            method, path = kind.upper(), getattr(rule, kind)
        out.append(RuleBinding(method, parse_template(path), rule.body, rule.response_body))
    for extra in rule.additional_bindings:
        out.extend(rule_bindings(extra))
    return out


# --- Which request fields a binding fills: path variables, body, query parameters. ---

FieldPath = tuple[FieldDescriptor, ...]

# Message types a query parameter or path variable may fill from one string.
SCALAR_MESSAGES: frozenset[str] = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
    }
    | {
        f"google.protobuf.{w}Value"
        for w in (
            "Double",
            "Float",
            "Int64",
            "UInt64",
            "Int32",
            "UInt32",
            "Bool",
            "String",
            "Bytes",
        )
    }
)

_MAX_QUERY_DEPTH = 4


def http_rule_of(method: MethodDescriptor) -> http_pb2.HttpRule | None:
    """The method's `google.api.http` option, or None when it has none."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return None
    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
    return rule


def is_map_field(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


def is_scalar_like(fd: FieldDescriptor) -> bool:
    """A field one string can fill: scalar, enum, or a well-known type with a string form."""
    if fd.message_type is None:
        return True
    return not fd.is_repeated and fd.message_type.full_name in SCALAR_MESSAGES


def resolve_field(message: Descriptor, dotted: str) -> FieldPath:
    """The fields along `a.b.c` (proto names) from `message`; ValueError when one is missing."""
    out: list[FieldDescriptor] = []
    current: Descriptor | None = message
    for part in dotted.split("."):
        if current is None:
            raise ValueError(f"{dotted!r}: {out[-1].name!r} is not a message field")
        fd = current.fields_by_name.get(part)
        if fd is None:
            raise ValueError(f"{current.full_name} has no field {part!r} (from {dotted!r})")
        out.append(fd)
        if fd.is_repeated and len(out) < dotted.count(".") + 1:
            raise ValueError(f"{dotted!r}: repeated field {part!r} cannot be traversed")
        current = fd.message_type
    return tuple(out)


def dotted_name(path: FieldPath) -> str:
    return ".".join(fd.name for fd in path)


def query_fields(message: Descriptor, excluded: Iterable[str]) -> dict[str, FieldPath]:
    """Fields query parameters may fill, keyed by proto dot path (`a.b`).

    Scalar, enum and string-form well-known fields, nested through singular message fields
    (not through cycles, at most a few levels deep), minus the `excluded` dot paths (those
    bound by path variables, and the body field's whole subtree).
    """
    skip = set(excluded)
    out: dict[str, FieldPath] = {}

    def walk(desc: Descriptor, prefix: FieldPath, seen: frozenset[str]) -> None:
        for fd in desc.fields:
            path = (*prefix, fd)
            dotted = dotted_name(path)
            if dotted in skip or is_map_field(fd):
                continue
            if is_scalar_like(fd):
                out[dotted] = path
            elif (
                fd.message_type is not None
                and not fd.is_repeated
                and fd.message_type.full_name not in seen
                and len(path) < _MAX_QUERY_DEPTH
            ):
                walk(fd.message_type, path, seen | {fd.message_type.full_name})

    walk(message, (), frozenset({message.full_name}))
    return out
