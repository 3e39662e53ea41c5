"""The portal's routes: its pages and assets, sign-in and sign-out, and its JSON API.

- `GET /portal/` (sign-in), `/portal/withdrawals`, `/portal/withdrawal?name=…`,
  `/portal/batches`, `/portal/webhooks`, `/portal/admin/` (operators), `/portal/static/…`:
  files of `static/`, read once at start-up (nothing else is served).
- `POST /portal/api/session` `{"apiKey": "awk_…"}` signs a partner in: the key is checked by
  the API's own `Authenticator` (same answers as the API), exchanged for a session
  (`sessions`), and forgotten; `GET` tells the session (and its CSRF token) to the page,
  `DELETE` signs out. `/portal/admin/api/session` `{"credential": "awo_…"}` does the same for
  an operator, with the admin API's `OperatorAuthenticator`.
- `/portal/api/v1/…` is the REST API (`/v1/…`, the same transcoding, upload and CSV report)
  and `/portal/admin/api/v1/admin/…` the admin API, each run as the session's identity
  through dispatchers built on the API's own cores (`identity`).

Every state-changing request needs the session's CSRF token (`csrf`); every response gets the
security headers (`headers`). Errors are the API's JSON `google.rpc.Status`.
"""

from __future__ import annotations

import json
import mimetypes
import re
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from google.protobuf.descriptor import ServiceDescriptor
from multidict import CIMultiDict
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker
from yarl import URL

from svc_gateway.admin.core import AdminCore
from svc_gateway.admin.dispatch import AdminDispatcher, OperatorAuth
from svc_gateway.auth import Caller
from svc_gateway.batches.core import BatchCore
from svc_gateway.dispatch import CallerAuth, Charge, Dispatcher
from svc_gateway.portal import csrf
from svc_gateway.portal.headers import add_security_headers
from svc_gateway.portal.identity import OperatorSessionAuth, PartnerSessionAuth, current_session
from svc_gateway.portal.sessions import COOKIE_PATHS, COOKIES, Kind, Session, SessionStore
from svc_gateway.rate_limit import RateLimit
from svc_gateway.rest.transcoder import RestBinding, RestTranscoder
from svc_gateway.rest.upload import UPLOAD_PATH, BatchRoutes, guarded, report_csv_response
from withdrawal_shared.db.api_keys import VerifiedKey, verify_prefix
from withdrawal_shared.db.operators import OperatorIdentity, operator_for_credential_prefix
from withdrawal_shared.errors import FieldViolation, invalid_argument, unauthenticated

STATIC = Path(__file__).parent / "static"
PAGES = {
    "/portal/": "index.html",
    "/portal/withdrawals": "withdrawals.html",
    "/portal/withdrawal": "withdrawal.html",
    "/portal/batches": "batches.html",
    "/portal/webhooks": "webhooks.html",
    "/portal/admin/": "admin.html",
}
API = "/portal/api"
ADMIN_API = "/portal/admin/api"
_REPORT = re.compile(r"/v1/batches/([^/]+)/report")
_DROPPED_HEADERS = ("cookie", "authorization", csrf.HEADER.lower())
_CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}


def _load_static() -> dict[str, tuple[bytes, str]]:
    files: dict[str, tuple[bytes, str]] = {}
    for path in sorted(STATIC.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            kind = _CONTENT_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
            files[path.name] = (path.read_bytes(), kind or "application/octet-stream")
    return files


def _json(data: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(data, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


def _session_json(session: Session, extra: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "kind": session.kind.value,
        "csrfToken": session.csrf_token,
        "expireTime": session.expire_time.isoformat().replace("+00:00", "Z"),
        **extra,
    }


def _inner_request(request: web.Request, prefix: str) -> web.Request:
    """The request as the API would have had it: the path without `prefix`, and without the
    cookie, any Authorization and the CSRF token."""
    raw_path = request.rel_url.raw_path[len(prefix) :]
    query = request.rel_url.raw_query_string
    url = URL(raw_path + (f"?{query}" if query else ""), encoded=True)
    headers = CIMultiDict(
        (k, v) for k, v in request.headers.items() if k.lower() not in _DROPPED_HEADERS
    )
    return request.clone(rel_url=url, headers=headers)


async def _read_object(request: web.Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.read() or b"{}")
    except ValueError:
        raise invalid_argument([FieldViolation("body", "must be JSON")]) from None
    if not isinstance(data, dict):
        raise invalid_argument([FieldViolation("body", "must be a JSON object")])
    return data


def _secret(data: Mapping[str, Any], field: str, what: str) -> str:
    value = data.get(field)
    if not isinstance(value, str) or not value.strip():
        raise invalid_argument([FieldViolation(field, f"is required: {what}")])
    return value.strip()


@dataclass(frozen=True)
class PortalCores:
    """What the gateway hands the portal: the API's cores and authenticators."""

    services: Mapping[ServiceDescriptor, object]
    """WithdrawalService, BatchService, WebhookService -> their cores."""
    batch_service: ServiceDescriptor
    batch_core: BatchCore
    admin_service: ServiceDescriptor
    admin_core: AdminCore
    partner_auth: CallerAuth
    operator_auth: OperatorAuth
    charge: Charge | None
    limit_for: Callable[[VerifiedKey], RateLimit | None]
    db_sessions: sessionmaker[DbSession]
    executor: Executor


class Portal:
    def __init__(
        self,
        cores: PortalCores,
        redis: aioredis.Redis,
        redis_prefix: str,
        session_seconds: int,
        *,
        openapi: Mapping[str, Any],
        max_body_bytes: int,
        explorer_tx_url: str = "",
    ) -> None:
        self._sessions = SessionStore(redis, redis_prefix, session_seconds)
        self._explorer_tx_url = explorer_tx_url
        self._partner_auth = cores.partner_auth
        self._operator_auth = cores.operator_auth
        partner = PartnerSessionAuth(self._key_for_prefix, cores.executor, cores.limit_for)
        self._partner = partner
        self._operator = OperatorSessionAuth(self._operator_for_prefix, cores.executor)
        self._db_sessions = cores.db_sessions
        bindings = []
        batches: Dispatcher | None = None
        for service, core in cores.services.items():
            dispatcher = Dispatcher(service, core, partner, cores.charge)
            if service is cores.batch_service:
                batches = dispatcher
            stream = dispatcher.stream if any(m.server_streaming for m in service.methods) else None
            bindings.append(
                RestBinding(service, dispatcher.unary, stream, authenticate=partner.authenticate)
            )
        if batches is None:
            raise TypeError("PortalCores.services must include the batch service")
        self._batches = batches
        self._batch_core = cores.batch_core
        self._batch_routes = BatchRoutes(self._batches, cores.batch_core)
        self._api = RestTranscoder(bindings, max_body_bytes=max_body_bytes, openapi=openapi)
        admin = AdminDispatcher(cores.admin_service, cores.admin_core, self._operator)
        self._admin_api = RestTranscoder(
            [
                RestBinding(
                    cores.admin_service, admin.unary, authenticate=self._operator.authenticate
                )
            ],
            max_body_bytes=max_body_bytes,
            openapi=openapi,
        )
        self._static = _load_static()

    def _key_for_prefix(self, prefix: str) -> VerifiedKey | None:
        with self._db_sessions() as session:
            return verify_prefix(session, prefix)

    def _operator_for_prefix(self, prefix: str) -> OperatorIdentity | None:
        with self._db_sessions() as session:
            return operator_for_credential_prefix(session, prefix)

    def add_to(self, app: web.Application) -> None:
        app.on_response_prepare.append(add_security_headers)
        router = app.router
        router.add_get("/portal", self._redirect("/portal/"))
        router.add_get("/portal/admin", self._redirect("/portal/admin/"))
        for path, name in PAGES.items():
            router.add_get(path, self._file(name))
        router.add_get("/portal/static/{name}", self._asset)
        for method in ("GET", "POST", "DELETE"):
            router.add_route(method, API + "/session", guarded(self._partner_session))
            router.add_route(method, ADMIN_API + "/session", guarded(self._operator_session))
        router.add_route("*", API + "/v1/{tail:.*}", guarded(self._partner_api))
        router.add_route("*", ADMIN_API + "/v1/{tail:.*}", guarded(self._admin_api_call))

    # ------------------------------------------------------------ pages

    @staticmethod
    def _redirect(location: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def redirect(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(location)

        return redirect

    def _file(self, name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        body, content_type = self._static[name]

        async def page(request: web.Request) -> web.StreamResponse:
            return web.Response(body=body, content_type=content_type, charset="utf-8")

        return page

    async def _asset(self, request: web.Request) -> web.StreamResponse:
        found = self._static.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, content_type = found
        charset = "utf-8" if content_type.startswith("text/") else None
        response = web.Response(body=body, content_type=content_type, charset=charset)
        response.headers["Cache-Control"] = "no-cache"
        return response

    # ------------------------------------------------------------ sessions

    async def _live(self, request: web.Request, kind: Kind) -> tuple[str, Session]:
        session_id = request.cookies.get(COOKIES[kind], "")
        session = await self._sessions.get(session_id, kind)
        if session is None:
            raise unauthenticated(
                "Not signed in, or the portal session has ended (signed out or expired). "
                "Sign in again."
            )
        return session_id, session

    def _set_cookie(self, response: web.StreamResponse, kind: Kind, session_id: str) -> None:
        response.set_cookie(
            COOKIES[kind],
            session_id,
            path=COOKIE_PATHS[kind],
            max_age=self._sessions.ttl_seconds,
            httponly=True,
            secure=True,
            samesite="Strict",
        )

    @staticmethod
    def _clear_cookie(response: web.StreamResponse, kind: Kind) -> None:
        response.del_cookie(
            COOKIES[kind], path=COOKIE_PATHS[kind], secure=True, httponly=True, samesite="Strict"
        )

    async def _start(
        self,
        request: web.Request,
        kind: Kind,
        subject: str,
        prefix: str,
        fields: Mapping[str, Any],
    ) -> web.StreamResponse:
        """A new session for the verified identity; the browser's previous one, if any, ends."""
        previous = request.cookies.get(COOKIES[kind])
        if previous:
            await self._sessions.delete(previous)
        session_id, session = await self._sessions.create(kind, subject, prefix)
        response = _json(_session_json(session, fields))
        self._set_cookie(response, kind, session_id)
        return response

    async def _partner_session(self, request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            csrf.check_origin(request)
            csrf.check_json(request)
            key = _secret(await _read_object(request), "apiKey", "your API key (awk_...)")
            caller: Caller = await self._partner_auth.authenticate(
                {"authorization": f"Bearer {key}"}
            )
            return await self._start(
                request,
                Kind.PARTNER,
                caller.partner_id,
                caller.key_prefix,
                self._partner_fields(caller),
            )
        session_id, session = await self._live(request, Kind.PARTNER)
        csrf.check_token(request, session.csrf_token)
        if request.method == "DELETE":
            await self._sessions.delete(session_id)
            response = _json({})
            self._clear_cookie(response, Kind.PARTNER)
            return response
        token = current_session.set(session)
        try:
            # PartnerSessionAuth ignores the metadata: the session is the identity.
            found = await self._partner.authenticate({})
        finally:
            current_session.reset(token)
        return _json(_session_json(session, self._partner_fields(found)))

    def _partner_fields(self, caller: Caller) -> dict[str, Any]:
        return {
            "partner": caller.partner_id,
            "keyPrefix": caller.key_prefix,
            "scopes": sorted(str(s) for s in caller.scopes),
            # GATEWAY_PORTAL_EXPLORER_TX_URL: where a transaction hash links to ("" = nowhere).
            "explorerTxUrl": self._explorer_tx_url,
        }

    @staticmethod
    def _operator_fields(identity: OperatorIdentity) -> dict[str, Any]:
        return {
            "operator": identity.operator_id,
            "roles": sorted(r.value for r in identity.roles),
        }

    async def _operator_session(self, request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            csrf.check_origin(request)
            csrf.check_json(request)
            credential = _secret(
                await _read_object(request), "credential", "your operator credential (awo_...)"
            )
            identity = await self._operator_auth.authenticate(
                {"authorization": f"Bearer {credential}"}
            )
            return await self._start(
                request,
                Kind.OPERATOR,
                identity.operator_id,
                identity.credential_prefix,
                self._operator_fields(identity),
            )
        session_id, session = await self._live(request, Kind.OPERATOR)
        csrf.check_token(request, session.csrf_token)
        if request.method == "DELETE":
            await self._sessions.delete(session_id)
            response = _json({})
            self._clear_cookie(response, Kind.OPERATOR)
            return response
        token = current_session.set(session)
        try:
            identity = await self._operator.authenticate({})
        finally:
            current_session.reset(token)
        return _json(_session_json(session, self._operator_fields(identity)))

    # ------------------------------------------------------------ the APIs

    async def _partner_api(self, request: web.Request) -> web.StreamResponse:
        _, session = await self._live(request, Kind.PARTNER)
        csrf.check_token(request, session.csrf_token)
        inner = _inner_request(request, API)
        token = current_session.set(session)
        try:
            path = inner.rel_url.path
            if inner.method == "POST" and path == UPLOAD_PATH:
                return await self._batch_routes.upload(inner)
            report = _REPORT.fullmatch(path)
            if (
                inner.method == "GET"
                and report is not None
                and "text/csv" in inner.headers.get("Accept", "")
            ):
                name = f"batches/{report.group(1)}/report"
                return await report_csv_response(inner, self._batches, self._batch_core, name)
            return await self._api.handle(inner)
        finally:
            current_session.reset(token)

    async def _admin_api_call(self, request: web.Request) -> web.StreamResponse:
        _, session = await self._live(request, Kind.OPERATOR)
        csrf.check_token(request, session.csrf_token)
        inner = _inner_request(request, ADMIN_API)
        token = current_session.set(session)
        try:
            return await self._admin_api.handle(inner)
        finally:
            current_session.reset(token)
