"""schema.graphql is what the code prints (regenerate with `make gen`), and the limit tables
name the schema's fields."""

from __future__ import annotations

from assetwithdrawal.webhooks.v1 import webhooks_pb2
from assetwithdrawal.withdrawal.v1 import batch_pb2, withdrawal_pb2
from svc_gateway.graphql import types as t
from svc_gateway.graphql.limits import MAX_COST, query_cost
from svc_gateway.graphql.schema import SDL_PATH, schema, sdl


def test_printed_schema_matches_the_code() -> None:
    assert SDL_PATH.read_text(encoding="utf-8") == sdl(), "run 'make gen' and commit"


def test_enums_are_the_proto_enums() -> None:
    for kind, descriptor in (
        (t.State, withdrawal_pb2.State.DESCRIPTOR),
        (t.Priority, withdrawal_pb2.Priority.DESCRIPTOR),
        (t.EventType, withdrawal_pb2.EventType.DESCRIPTOR),
        (t.BatchState, batch_pb2.BatchState.DESCRIPTOR),
        (t.BatchPolicy, batch_pb2.BatchPolicy.DESCRIPTOR),
        (t.EndpointState, webhooks_pb2.EndpointState.DESCRIPTOR),
    ):
        assert [m.value for m in kind] == [v.name for v in descriptor.values]


def test_cost_counts_calls_and_pages_times_the_lists_around_them() -> None:
    from graphql import parse

    def cost(query: str, variables: dict[str, int] | None = None) -> int:
        return query_cost(schema._schema, parse(query), None, variables)

    nested = (
        "{ withdrawals(first: 20) { edges { node {"
        " stateChanges(first: 10) { edges { node { version } } } } } } }"
    )
    assert cost(nested) == 1 + 20 + 20 * (1 + 10)
    assert cost('{ withdrawal(name: "withdrawals/x") { name } }') == 1
    assert cost("{ withdrawals { pageInfo { hasNextPage } } }") == 1 + 50  # the API's default
    by_variable = "query($n: Int) { withdrawals(first: $n) { edges { node { name } } } }"
    assert cost(by_variable, {"n": 5}) == 6
    assert (
        cost(
            "{ a: withdrawals(first: 1200) { pageInfo { hasNextPage } }"
            " b: batches(first: 1200) { pageInfo { hasNextPage } } }"
        )
        > MAX_COST
    )
