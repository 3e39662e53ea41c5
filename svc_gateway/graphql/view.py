"""`/graphql` on the gateway's HTTP port: strawberry's aiohttp view, with

- authentication up front: `POST /graphql` without a valid `Authorization: Bearer <api key>`
  is HTTP 401 with one UNAUTHENTICATED error, before the document is read (as REST, a caller
  without a key learns nothing about its input). Scopes, tenant isolation and every other
  API error are per field (HTTP 200, the field null, an error with its path);
- subscriptions over WebSocket (graphql-transport-ws only): the key comes from the
  `connection_init` payload (`{"authorization": "Bearer ..."}`) or the upgrade request's
  header; a missing or bad key closes the socket with 4403;
- POST only (405 otherwise, `Allow: POST`), one operation per request (an array is 400),
  a body over GATEWAY_MAX_BODY_BYTES is 413 BODY_TOO_LARGE, no GraphiQL page;
- every response carries `x-trace-id`; each request logs one structured line (trace id,
  status, API calls, milliseconds), never a header's value.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from aiohttp import web
from cross_web import HTTPException
from strawberry.aiohttp.views import GraphQLView
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from svc_gateway.errors import BODY_TOO_LARGE, METHOD_NOT_ALLOWED
from svc_gateway.graphql import errors
from svc_gateway.graphql.calls import Dispatchers, GraphQLContext, forwarded
from svc_gateway.graphql.schema import GatewaySchema
from withdrawal_shared import tracing
from withdrawal_shared.errors import ApiError, FieldViolation
from withdrawal_shared.logs import trace_id_from_traceparent, trace_id_var
from withdrawal_shared.unexpected import unexpected_error

log = logging.getLogger(__name__)

PATH = "/graphql"
CONTEXT_KEY: web.RequestKey[GraphQLContext] = web.RequestKey("graphql_context", GraphQLContext)
MAX_SUBSCRIPTIONS_PER_CONNECTION = 10
CONNECTION_INIT_SECONDS = 10


def _json(err: ApiError, status: int | None = None) -> web.Response:
    response = web.json_response(
        errors.body(err), status=status or err.http_status or err.code.http_status
    )
    response.headers.update(err.headers)
    return response


class GatewayGraphQLView(GraphQLView[GraphQLContext, None]):
    def __init__(self, schema: GatewaySchema, dispatchers: Dispatchers, max_body_bytes: int):
        super().__init__(
            schema,
            graphql_ide=None,
            allow_queries_via_get=False,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            connection_init_wait_timeout=dt.timedelta(seconds=CONNECTION_INIT_SECONDS),
            max_subscriptions_per_connection=MAX_SUBSCRIPTIONS_PER_CONNECTION,
        )
        self._dispatchers = dispatchers
        self._max_body_bytes = max_body_bytes

    async def get_context(self, request: web.Request, response: Any) -> GraphQLContext:
        context = GraphQLContext(self._dispatchers, forwarded(request.headers))
        request[CONTEXT_KEY] = context
        return context

    async def on_ws_connect(self, context: GraphQLContext) -> None:
        params = context.connection_params or {}
        given = params.get("authorization", params.get("Authorization"))
        if isinstance(given, str) and given:
            context.metadata["authorization"] = given
        try:
            await self._dispatchers.withdrawals.auth.authenticate(context.metadata)
        except ApiError as err:
            log.info("graphql websocket refused", extra={"reason": err.reason})
            raise ConnectionRejectionError(errors.body(err)) from None

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if not tracing.enabled():
            return await self._serve(request)
        return await tracing.traced_http(request, self._serve, lambda r: f"{r.method} {PATH}")

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        ids = tracing.current_ids()
        trace_id = ids[0] if ids else trace_id_from_traceparent(request.headers.get("traceparent"))
        token = trace_id_var.set(trace_id)
        started = time.monotonic()
        websocket = self.is_websocket_request(request)
        status = 0
        try:
            response = await self._respond(request, websocket)
            status = response.status
            if not websocket:
                response.headers["x-trace-id"] = trace_id
            return response
        finally:
            context = request.get(CONTEXT_KEY)
            log.info(
                "graphql websocket closed" if websocket else "graphql request",
                extra={
                    "status": status,
                    "calls": context.calls if isinstance(context, GraphQLContext) else 0,
                    "ms": round((time.monotonic() - started) * 1000, 1),
                },
            )
            trace_id_var.reset(token)

    async def _respond(self, request: web.Request, websocket: bool) -> web.StreamResponse:
        if websocket:
            return await self.run(request)
        if request.method != "POST":
            response = _json(
                METHOD_NOT_ALLOWED.error(
                    f"{request.method} is not allowed on {PATH}; use POST (subscriptions: a "
                    "WebSocket upgrade, graphql-transport-ws)."
                )
            )
            response.headers["allow"] = "POST"
            return response
        try:
            await self._dispatchers.withdrawals.auth.authenticate(forwarded(request.headers))
        except ApiError as err:
            return _json(err)
        if (request.content_length or 0) > self._max_body_bytes:
            return _json(self._too_large())
        try:
            return await self.run(request)
        except HTTPException as exc:
            return _json(errors.query_error(exc.reason), status=exc.status_code)
        except web.HTTPRequestEntityTooLarge:
            return _json(self._too_large())
        except Exception as exc:
            return _json(unexpected_error(exc, trace_id_var.get(), "graphql request"))

    def _too_large(self) -> ApiError:
        limit = self._max_body_bytes
        return BODY_TOO_LARGE.error(
            f"The request body is larger than the limit of {limit} bytes; send a smaller one.",
            [FieldViolation("body", f"is larger than {limit} bytes")],
        )


def add_graphql(app: web.Application, dispatchers: Dispatchers, max_body_bytes: int) -> None:
    """Mount `/graphql` (POST, and GET for the WebSocket upgrade) on the gateway's app."""
    from svc_gateway.graphql.schema import schema

    app.router.add_route("*", PATH, GatewayGraphQLView(schema, dispatchers, max_body_bytes))
