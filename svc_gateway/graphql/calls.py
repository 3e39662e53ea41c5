"""The request context and the one way a resolver reaches the API: the service's
`Dispatcher`, with the caller's `authorization` (and `traceparent`) as metadata, so that
authentication, scopes, rate limits, tenant isolation, validation and idempotency are the
gRPC API's own. Every dispatcher call is charged to the key's rate limit as one request.

An `ApiError` leaves with its violations renamed from the request's proto paths to the
GraphQL arguments the caller wrote (`withdrawal.recipient_address` -> `input.recipientAddress`,
`request_id` -> `requestId`, `page_size` -> `first`, `page_token` -> `after`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import strawberry
from google.protobuf.message import Message

from svc_gateway.dispatch import Dispatcher
from withdrawal_shared.errors import ApiError

M = TypeVar("M", bound=Message)

FORWARDED = ("authorization", "traceparent")
"""The request headers passed on to the dispatcher as metadata."""

COMMON_NAMES: Mapping[str, str] = {
    "page_size": "first",
    "page_token": "after",
    "request_id": "requestId",
    "parent": "name",
}


@dataclass(frozen=True)
class Dispatchers:
    """The entry points of the three partner services, as gRPC and REST use them."""

    withdrawals: Dispatcher
    batches: Dispatcher
    webhooks: Dispatcher


@dataclass
class GraphQLContext:
    dispatchers: Dispatchers
    metadata: dict[str, str]
    """Lowercase header names: `authorization` and `traceparent` when sent."""
    connection_params: dict[str, Any] | None = None
    """The WebSocket `connection_init` payload (set by strawberry)."""
    calls: int = field(default=0)
    """How many dispatcher calls this request made (for the request's log line)."""


Info = strawberry.Info[GraphQLContext, None]


def forwarded(headers: Mapping[str, str]) -> dict[str, str]:
    """The metadata a request passes on: its `authorization` and `traceparent` headers."""
    lower = {k.lower(): v for k, v in headers.items()}
    return {name: lower[name] for name in FORWARDED if name in lower}


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def graphql_name(proto_path: str, prefix: str = "") -> str:
    """The GraphQL argument path of a request field: `withdrawal.amount` -> `input.amount`
    (with `prefix` "withdrawal"), `page_size` -> `first`, other fields in lowerCamelCase."""
    if proto_path in COMMON_NAMES:
        return COMMON_NAMES[proto_path]
    if prefix and (proto_path == prefix or proto_path.startswith(prefix + ".")):
        rest = proto_path[len(prefix) + 1 :]
        return "input" + ("." + ".".join(_camel(p) for p in rest.split(".")) if rest else "")
    return ".".join(_camel(p) for p in proto_path.split("."))


def _renamed(err: ApiError, prefix: str) -> ApiError:
    return err.with_field_names(lambda path: graphql_name(path, prefix))


async def unary(
    info: Info,
    service: str,
    method: str,
    request: Message,
    response_type: type[M],
    *,
    input_prefix: str = "",
) -> M:
    """Call `method` of `service` (`withdrawals`, `batches` or `webhooks`) as the caller."""
    context = info.context
    dispatcher: Dispatcher = getattr(context.dispatchers, service)
    context.calls += 1
    try:
        response = await dispatcher.unary(method, request, context.metadata)
    except ApiError as err:
        raise _renamed(err, input_prefix) from None
    if not isinstance(response, response_type):  # pragma: no cover - the descriptor's type
        raise TypeError(f"{method} answered {type(response).__name__}")
    return response


async def stream(
    info: Info, service: str, method: str, request: Message, response_type: type[M]
) -> AsyncIterator[M]:
    """Each message of the server-streaming `method`, as the caller."""
    context = info.context
    dispatcher: Dispatcher = getattr(context.dispatchers, service)
    context.calls += 1
    try:
        async for message in dispatcher.stream(method, request, context.metadata):
            if not isinstance(message, response_type):  # pragma: no cover
                raise TypeError(f"{method} streamed {type(message).__name__}")
            yield message
    except ApiError as err:
        raise _renamed(err, "") from None
