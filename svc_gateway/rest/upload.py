"""REST routes the transcoder cannot serve: `POST /v1/batches` takes the CSV file itself as
the body (`text/csv`, or `multipart/form-data` with a `file` part), with `policy` and
`allowDuplicateContent` as query parameters and the `Idempotency-Key` header (or a
`requestId` query parameter); and `GET /v1/batches/{id}/report` with `Accept: text/csv`
streams the whole report as CSV. Both authenticate, check the scope and charge the rate
limit through the dispatcher, and answer errors as the transcoder does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import BodyPartReader, web

from assetwithdrawal.withdrawal.v1 import batch_pb2
from svc_gateway.batches.core import BatchCore, parse_batch_name
from svc_gateway.batches.report import CSV_COLUMNS, csv_header, report_csv
from svc_gateway.batches.spool import Spool
from svc_gateway.dispatch import Dispatcher
from svc_gateway.errors import BATCH_SERVICE, METHOD_ERRORS
from svc_gateway.rest.openapi import error_responses
from svc_gateway.rest.transcoder import RestTranscoder, message_to_json_bytes
from svc_gateway.validation import REQUEST_ID
from withdrawal_shared import tracing
from withdrawal_shared.errors import (
    ApiError,
    FieldViolation,
    invalid_argument,
    status_to_json,
)
from withdrawal_shared.logs import trace_id_from_traceparent, trace_id_var
from withdrawal_shared.unexpected import unexpected_error

UPLOAD_PATH = "/v1/batches"
POLICY_VALUES = {
    "REJECT_ALL": "REJECT_ALL",
    "BATCH_POLICY_REJECT_ALL": "REJECT_ALL",
    "ACCEPT_VALID": "ACCEPT_VALID",
    "BATCH_POLICY_ACCEPT_VALID": "ACCEPT_VALID",
    "BATCH_POLICY_UNSPECIFIED": "REJECT_ALL",
}
QUERY = ("policy", "allowDuplicateContent", "allow_duplicate_content", "requestId", "request_id")
CHUNK = 64 * 1024


def _error(err: ApiError, trace_id: str) -> web.Response:
    body = status_to_json(err.to_status())
    body["error"]["code"] = err.http_status or err.code.http_status
    response = web.Response(
        body=json.dumps(body).encode(),
        status=err.http_status or err.code.http_status,
        content_type="application/json",
        headers={"x-trace-id": trace_id, **err.headers},
    )
    return response


def guarded(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The handler with the transcoder's error answers (an `ApiError` as its JSON status,
    anything else logged and UNAVAILABLE or INTERNAL, `unexpected_error`) and the request's
    trace id."""

    async def serve(request: web.Request) -> web.StreamResponse:
        ids = tracing.current_ids()
        trace_id = ids[0] if ids else trace_id_from_traceparent(request.headers.get("traceparent"))
        token = trace_id_var.set(trace_id)
        try:
            response = await handler(request)
            response.headers.setdefault("x-trace-id", trace_id)
            return response
        except ApiError as err:
            return _error(err, trace_id)
        except Exception as exc:
            where = f"REST {request.method} {request.rel_url.raw_path}"
            return _error(unexpected_error(exc, trace_id, where), trace_id)
        finally:
            trace_id_var.reset(token)

    if not tracing.enabled():
        return serve

    async def traced(request: web.Request) -> web.StreamResponse:
        return await tracing.traced_http(
            request,
            serve,
            lambda r: f"{r.method} {r.match_info.route.resource.canonical}",
        )

    return traced


def _metadata(request: web.Request) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items()}


async def _parts(request: web.Request) -> AsyncIterator[bytes]:
    content_type = request.content_type
    if content_type == "text/csv":
        async for chunk in request.content.iter_chunked(CHUNK):
            yield chunk
        return
    if content_type == "multipart/form-data":
        reader = await request.multipart()
        async for part in reader:
            if isinstance(part, BodyPartReader) and part.name == "file":
                while chunk := await part.read_chunk(CHUNK):
                    yield chunk
                return
        raise invalid_argument(
            [FieldViolation("file", "is required: the form part holding the CSV")]
        )
    raise invalid_argument(
        [
            FieldViolation(
                "Content-Type",
                "must be text/csv (the file as the body) or multipart/form-data (a `file` part)",
            )
        ]
    )


class BatchRoutes:
    def __init__(self, dispatcher: Dispatcher, core: BatchCore) -> None:
        self._dispatch = dispatcher
        self._core = core

    def add_to(self, app: web.Application, transcoder: RestTranscoder) -> None:
        app.router.add_route("POST", UPLOAD_PATH, guarded(self.upload))

        async def report(request: web.Request) -> web.StreamResponse:
            if "text/csv" not in request.headers.get("Accept", ""):
                return await transcoder.handle(request)
            name = f"batches/{request.match_info['batch']}/report"
            return await guarded(
                lambda r: report_csv_response(r, self._dispatch, self._core, name)
            )(request)

        app.router.add_route("GET", UPLOAD_PATH + "/{batch}/report", report)

    async def upload(self, request: web.Request) -> web.StreamResponse:
        caller = await self._dispatch.admit("CreateBatch", _metadata(request))
        query = request.rel_url.query
        violations = [
            FieldViolation(name, "is not a parameter of this method")
            for name in query
            if name not in QUERY
        ]
        policy = POLICY_VALUES.get(query.get("policy", "REJECT_ALL"))
        if policy is None:
            violations.append(FieldViolation("policy", "must be REJECT_ALL or ACCEPT_VALID"))
        allow_text = query.get(
            "allowDuplicateContent", query.get("allow_duplicate_content", "false")
        )
        if allow_text not in ("true", "false"):
            violations.append(FieldViolation("allowDuplicateContent", "must be true or false"))
        header = request.headers.get("Idempotency-Key", "")
        given = query.get("requestId", query.get("request_id", ""))
        if header and given and header != given:
            violations.append(
                FieldViolation("requestId", "differs from the Idempotency-Key header")
            )
        request_id = header or given
        if not request_id:
            violations.append(
                FieldViolation("Idempotency-Key", "is required: a unique key per batch")
            )
        if violations or policy is None:
            raise invalid_argument(violations)
        header_message = batch_pb2.CreateBatchHeader(request_id=request_id)
        with Spool(self._core.max_bytes) as spool:
            async for chunk in _parts(request):
                spool.write(chunk)
            # The header's checks are CreateBatch's, on the stream's first message.
            batch = await self._core.create_from_spool(
                caller, header_message.request_id, policy, allow_text == "true", spool
            )
        return web.Response(
            body=message_to_json_bytes(batch), status=200, content_type="application/json"
        )


async def report_csv_response(
    request: web.Request, dispatcher: Dispatcher, core: BatchCore, name: str
) -> web.StreamResponse:
    """`GET /v1/batches/{id}/report` with `Accept: text/csv`: every row, page by page."""
    metadata = _metadata(request)
    caller = await dispatcher.admit("GetBatchReport", metadata)
    parse_batch_name(name, suffix="/report")
    page = batch_pb2.GetBatchReportRequest(name=name, page_size=5000)
    report = await core.get_batch_report(caller, page)  # NOT_FOUND before any byte is sent
    response = web.StreamResponse(status=200, headers={"cache-control": "no-store"})
    response.content_type = "text/csv"
    await response.prepare(request)
    await response.write(csv_header().encode())
    while True:
        await response.write(report_csv(report.rows).encode())
        if not report.next_page_token:
            break
        page.page_token = report.next_page_token
        report = await core.get_batch_report(caller, page)
    await response.write_eof()
    return response


def document_batch_routes(document: dict[str, Any]) -> None:
    """Add the upload route to an OpenAPI document built from the descriptors (which leave
    out client-streaming methods), and the CSV form of the report."""
    errors = METHOD_ERRORS[f"{BATCH_SERVICE}.CreateBatch"]
    operation = {
        "operationId": "CreateBatch",
        "tags": ["BatchService"],
        "summary": "Uploads a CSV file of withdrawals as a batch.",
        "description": (
            "The body is the CSV file (`text/csv`), or a `multipart/form-data` form whose "
            "`file` part is. Header `recipient_address,amount,token` (required) and "
            "`client_reference`, `user_ref` (optional), in any order; UTF-8, a BOM allowed. "
            "Idempotent on the `Idempotency-Key`."
        ),
        "parameters": [
            {
                "name": "policy",
                "in": "query",
                "required": False,
                "description": "REJECT_ALL (default): any bad row rejects the file; "
                "ACCEPT_VALID: the good rows are stored, the bad ones reported.",
                "schema": {"type": "string", "enum": ["REJECT_ALL", "ACCEPT_VALID"]},
            },
            {
                "name": "allowDuplicateContent",
                "in": "query",
                "required": False,
                "description": "Accept a file whose content equals an earlier batch's.",
                "schema": {"type": "boolean"},
            },
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": True,
                "description": "The idempotency key, unique per partner (a UUID is a good "
                "choice): the same file again answers the original batch; another file is "
                "409 `IDEMPOTENCY_KEY_REUSED`.",
                "schema": {"type": "string", "pattern": REQUEST_ID.pattern},
            },
        ],
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "recipient_address,amount,token,client_reference\r\n"
                    "0x1111111111111111111111111111111111111111,12.5,USDC,inv-1\r\n",
                },
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                },
            },
        },
        "responses": {
            "200": {
                "description": "OK",
                "content": {
                    "application/json": {
                        "schema": {
                            "$ref": "#/components/schemas/assetwithdrawal.withdrawal.v1.Batch"
                        }
                    }
                },
            },
            **error_responses(errors),
            "default": {"$ref": "#/components/responses/Error"},
        },
    }
    document["paths"].setdefault(UPLOAD_PATH, {})["post"] = operation
    for operations in document["paths"].values():
        get = operations.get("get")
        if get is not None and get.get("operationId") == "GetBatchReport":
            get["responses"]["200"]["content"]["text/csv"] = {
                "schema": {"type": "string"},
            }
            get["description"] = (
                get.get("description", "") + "\n\nWith `Accept: text/csv`: the whole report as "
                "CSV (columns " + ", ".join(CSV_COLUMNS) + ")."
            )
