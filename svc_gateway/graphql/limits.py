"""What one GraphQL request may ask for, refused before anything is called:

- depth: at most `MAX_DEPTH` levels of nested selections (strawberry's QueryDepthLimiter);
- size: at most `MAX_TOKENS` tokens in the document (MaxTokensLimiter);
- cost: at most `MAX_COST`, where each field that calls the API costs 1, each list costs its
  `first` (the API's default page size when unset) for the nodes it may return, and a field
  inside a list costs as many times as that list's `first` (so `withdrawals(first: 20)` with
  `stateChanges(first: 10)` on each node costs 1 + 20 + 20 x (1 + 10) = 241).
- one operation per request: an array of operations (batching) is refused with 400.

A refusal is INVALID_ARGUMENT naming the field `query` (see `svc_gateway.graphql.errors`).
Every API call a request makes is still charged to the key's rate limit, as on gRPC.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

from graphql import (
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
)
from graphql.utilities import get_operation_ast
from strawberry.extensions import MaxTokensLimiter, QueryDepthLimiter, SchemaExtension

from svc_gateway.graphql.errors import query_error

MAX_DEPTH = 8
MAX_TOKENS = 2000
MAX_COST = 2000

CALLS: frozenset[tuple[str, str]] = frozenset(
    {
        ("Query", "withdrawal"),
        ("Query", "withdrawals"),
        ("Query", "batch"),
        ("Query", "batches"),
        ("Query", "webhookEndpoints"),
        ("Withdrawal", "stateChanges"),
        ("Batch", "rows"),
        ("Mutation", "createWithdrawal"),
        ("Mutation", "cancelWithdrawal"),
        ("Subscription", "withdrawalStatus"),
    }
)
"""(type, field) of every field whose resolver calls the API."""

DEFAULT_FIRST: Mapping[tuple[str, str], int] = {
    ("Query", "withdrawals"): 50,
    ("Query", "batches"): 50,
    ("Query", "webhookEndpoints"): 50,
    ("Withdrawal", "stateChanges"): 50,
    ("Batch", "rows"): 1000,
}
"""(type, field) of every list with a `first`: the API's page size when `first` is unset."""


def check_schema(schema: GraphQLSchema) -> None:
    """TypeError unless the tables above name exactly the schema's fields with `first`."""
    with_first = {
        (name, field_name)
        for name, kind in schema.type_map.items()
        if isinstance(kind, GraphQLObjectType) and not name.startswith("__")
        for field_name, field in kind.fields.items()
        if "first" in field.args
    }
    if with_first != set(DEFAULT_FIRST):
        raise TypeError(f"DEFAULT_FIRST differs from the fields with `first`: {with_first}")
    for name, field_name in CALLS:
        kind = schema.type_map.get(name)
        if not isinstance(kind, GraphQLObjectType) or field_name not in kind.fields:
            raise TypeError(f"CALLS names {name}.{field_name}, not in the schema")


def _first(node: FieldNode, variables: Mapping[str, Any], default: int) -> int:
    for argument in node.arguments or ():
        if argument.name.value != "first":
            continue
        value = argument.value
        if isinstance(value, IntValueNode):
            return max(int(value.value), 0)
        if isinstance(value, VariableNode):
            given = variables.get(value.name.value)
            return max(given, 0) if isinstance(given, int) else default
    return default


class _Coster:
    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any],
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables

    def cost(
        self,
        selections: SelectionSetNode,
        parent: GraphQLObjectType,
        times: int,
        seen: frozenset[str] = frozenset(),
    ) -> int:
        total = 0
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                total += self._field(selection, parent, times, seen)
            elif isinstance(selection, InlineFragmentNode):
                kind = parent
                if selection.type_condition is not None:
                    named = self.schema.type_map.get(selection.type_condition.name.value)
                    kind = named if isinstance(named, GraphQLObjectType) else parent
                total += self.cost(selection.selection_set, kind, times, seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in seen:
                    continue
                named = self.schema.type_map.get(fragment.type_condition.name.value)
                kind = named if isinstance(named, GraphQLObjectType) else parent
                total += self.cost(fragment.selection_set, kind, times, seen | {name})
        return total

    def _field(
        self, node: FieldNode, parent: GraphQLObjectType, times: int, seen: frozenset[str]
    ) -> int:
        name = node.name.value
        field = parent.fields.get(name)
        if field is None or name.startswith("__"):
            return 0
        key = (parent.name, name)
        total = times if key in CALLS else 0
        inner = times
        if key in DEFAULT_FIRST:
            first = _first(node, self.variables, DEFAULT_FIRST[key])
            total += times * first
            inner = times * first
        child = get_named_type(field.type)
        if node.selection_set is not None and isinstance(child, GraphQLObjectType):
            total += self.cost(node.selection_set, child, inner, seen)
        return total


def query_cost(
    schema: GraphQLSchema,
    document: Any,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
) -> int:
    """The cost of the operation of `document` that would run (0 when there is none)."""
    operation = get_operation_ast(document, operation_name)
    if not isinstance(operation, OperationDefinitionNode):
        return 0
    root = schema.get_root_type(operation.operation)
    if root is None:
        return 0
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    return _Coster(schema, fragments, variables or {}).cost(operation.selection_set, root, 1)


class CostLimit(SchemaExtension):
    """Refuses an operation that costs more than MAX_COST before it runs (its variables
    known by then). A subscription has one field that calls the API and costs 1."""

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None:
            cost = query_cost(
                context.schema._schema, document, context.operation_name, context.variables
            )
            if cost > MAX_COST:
                err = query_error(
                    f"costs {cost}, over the limit of {MAX_COST}: each field that calls the "
                    "API costs 1 and each list its `first`, times the `first` of the lists "
                    "around it; ask for smaller pages or fewer nested lists"
                )
                context.result = ExecutionResult(
                    data=None, errors=[GraphQLError(err.message, original_error=err)]
                )
        yield


def extensions() -> list[Any]:
    """The schema's limit extensions, in order."""
    return [
        functools.partial(MaxTokensLimiter, max_token_count=MAX_TOKENS),
        functools.partial(QueryDepthLimiter, max_depth=MAX_DEPTH),
        CostLimit,
    ]
