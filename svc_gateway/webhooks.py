"""The transport-neutral core of the WebhookService: the partner's endpoints, their secrets
(returned once, stored encrypted), the delivery log and replays.

The sender (`svc_webhooks`) does the deliveries; this core only writes what it reads: the
`webhook_endpoints` rows, and on replay the `webhook_deliveries` rows set PENDING again.

The partner's WebhookService calls it with its `Caller` (the partner's own endpoints, named
`webhookEndpoints/{id}`). The admin API calls the same methods with an `EndpointsOf`: any
partner's endpoints, named `partners/{partner}/webhookEndpoints/{id}`, and a `record` hook
that writes the admin audit row in the transaction of each change.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf import empty_pb2, timestamp_pb2
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from assetwithdrawal.webhooks.v1 import webhooks_pb2
from svc_gateway.auth import Caller
from svc_gateway.errors import IDEMPOTENCY_KEY_REUSED, WEBHOOK_URL_REFUSED
from svc_gateway.validation import REQUEST_ID
from withdrawal_shared.db.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from withdrawal_shared.db.transitions import utcnow
from withdrawal_shared.errors import FieldViolation, invalid_argument, not_found, quoted
from withdrawal_shared.ids import is_ulid, new_ulid
from withdrawal_shared.webhooks.events import EVENT_TYPES
from withdrawal_shared.webhooks.secrets import SecretBox, new_secret
from withdrawal_shared.webhooks.urls import UrlRefused, check_url

log = logging.getLogger(__name__)
T = TypeVar("T")

PREFIX = "webhookEndpoints/"
MAX_EVENT_TYPES = 32
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
DEFAULT_OVERLAP_SECONDS = 86_400
MAX_OVERLAP_SECONDS = 604_800
ENABLED, DISABLED = "ENABLED", "DISABLED"
_STATES = {
    ENABLED: webhooks_pb2.ENDPOINT_STATE_ENABLED,
    DISABLED: webhooks_pb2.ENDPOINT_STATE_DISABLED,
}
_UPDATABLE = ("url", "event_types", "description")


def _ts(moment: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment.replace(tzinfo=dt.UTC))
    return stamp


Record = Callable[[Session, str, Mapping[str, Any] | None, Mapping[str, Any] | None], None]
"""Called in the transaction of a change with (session, the endpoint's name, its values
before, after); the admin API writes its audit row with it."""


@dataclass(frozen=True)
class EndpointsOf:
    """Whose endpoints a call acts on, how they are named to the caller, and what records
    each change (the partner API: its own endpoints, `webhookEndpoints/{id}`, nothing)."""

    partner_id: str
    prefix: str = PREFIX
    record: Record | None = None
    disable_reason: str = "DISABLED_BY_PARTNER"


def _scope(caller: Caller | EndpointsOf) -> EndpointsOf:
    return caller if isinstance(caller, EndpointsOf) else EndpointsOf(caller.partner_id)


def endpoint_values(row: WebhookEndpoint) -> dict[str, Any]:
    """What an audit row records of an endpoint (never a secret)."""
    return {
        "url": row.url,
        "event_types": row.event_types.split(),
        "description": row.description,
        "state": row.state,
        "state_reason": row.state_reason,
    }


def parse_endpoint_name(name: str, field: str = "name", prefix: str = PREFIX) -> str:
    """`{prefix}{id}` (`webhookEndpoints/{id}`) -> id, or INVALID_ARGUMENT naming `field`."""
    if not name:
        raise invalid_argument([FieldViolation(field, f"is required: {prefix}{{id}}")])
    endpoint_id = name.removeprefix(prefix)
    if endpoint_id == name or not is_ulid(endpoint_id):
        raise invalid_argument(
            [FieldViolation(field, f"{quoted(name)} is not a webhook endpoint name")]
        )
    return endpoint_id


def to_proto(
    row: WebhookEndpoint, secret: str = "", prefix: str = PREFIX
) -> webhooks_pb2.WebhookEndpoint:
    message = webhooks_pb2.WebhookEndpoint(
        name=prefix + row.id,
        url=row.url,
        event_types=row.event_types.split(),
        description=row.description,
        state=_STATES.get(row.state, webhooks_pb2.ENDPOINT_STATE_UNSPECIFIED),
        state_reason=row.state_reason,
        secret=secret,
    )
    for field, value in (
        ("previous_secret_expire_time", row.previous_secret_expire_time),
        ("create_time", row.create_time),
        ("update_time", row.update_time),
        ("last_success_time", row.last_success_time),
    ):
        stamp = _ts(value)
        if stamp is not None:
            getattr(message, field).CopyFrom(stamp)
    return message


def _event_types(values: Any, field: str) -> str:
    listed = list(dict.fromkeys(values))
    if len(listed) > MAX_EVENT_TYPES:
        raise invalid_argument([FieldViolation(field, f"lists more than {MAX_EVENT_TYPES}")])
    known = ", ".join(sorted(EVENT_TYPES))
    for value in listed:
        if value not in EVENT_TYPES:
            raise invalid_argument(
                [FieldViolation(field, f"{quoted(value)} is not an event type; known: {known}")]
            )
    return " ".join(listed)


def _description(value: str, field: str) -> str:
    if len(value) > 256:
        raise invalid_argument([FieldViolation(field, "is longer than 256 characters")])
    return value


def _page(page_size: int, page_token: str, token_ok: Callable[[str], bool]) -> int:
    if page_size < 0:
        raise invalid_argument([FieldViolation("page_size", "must not be negative")])
    if page_token and not token_ok(page_token):
        raise invalid_argument(
            [FieldViolation("page_token", "is not a page token of this list; start over")]
        )
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _replay_filter(request: webhooks_pb2.ReplayWebhookEventsRequest, endpoint_id: str) -> list[Any]:
    """The deliveries a replay request selects, or INVALID_ARGUMENT."""
    by_range = request.HasField("start_time") or request.HasField("end_time")
    if bool(request.event_id) == by_range:
        raise invalid_argument(
            [FieldViolation("event_id", "give either event_id or start_time and end_time")]
        )
    where: list[Any] = [WebhookDelivery.endpoint_id == endpoint_id]
    if request.event_id:
        if len(request.event_id) > 64:
            raise invalid_argument([FieldViolation("event_id", "is not an event id")])
        where.append(WebhookDelivery.event_id == request.event_id)
    else:
        if not (request.HasField("start_time") and request.HasField("end_time")):
            raise invalid_argument(
                [FieldViolation("end_time", "start_time and end_time are both required")]
            )
        try:
            start = request.start_time.ToDatetime()
            end = request.end_time.ToDatetime()
        except (ValueError, OverflowError):
            raise invalid_argument([FieldViolation("start_time", "is not a valid time")]) from None
        if not start < end:
            raise invalid_argument([FieldViolation("end_time", "must be after start_time")])
        where += [WebhookDelivery.occur_time >= start, WebhookDelivery.occur_time < end]

    return where


class WebhookCore:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        executor: ThreadPoolExecutor,
        box: SecretBox,
        *,
        allow_http_loopback: bool = False,
    ) -> None:
        self.sessions = sessions
        self.executor = executor
        self.box = box
        self.allow_loopback = allow_http_loopback

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _check_url(self, url: str, field: str) -> str:
        try:
            await check_url(url, allow_loopback=self.allow_loopback)
        except UrlRefused as exc:
            raise WEBHOOK_URL_REFUSED.error(
                f"The webhook URL {quoted(url)} {exc}; use an https URL on a public host.",
                field_violations=[FieldViolation(field, str(exc))],
            ) from None
        return url

    @staticmethod
    def _owned(session: Session, scope: EndpointsOf, endpoint_id: str) -> WebhookEndpoint:
        row = session.get(WebhookEndpoint, endpoint_id, with_for_update=True)
        if row is None or row.partner_id != scope.partner_id:
            raise not_found(scope.prefix + endpoint_id)
        return row

    @staticmethod
    def _record(
        session: Session,
        scope: EndpointsOf,
        endpoint_id: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
    ) -> None:
        if scope.record is not None:
            scope.record(session, scope.prefix + endpoint_id, before, after)

    # -- create, read ------------------------------------------------------------------------

    async def create_webhook_endpoint(
        self, caller: Caller | EndpointsOf, request: webhooks_pb2.CreateWebhookEndpointRequest
    ) -> webhooks_pb2.WebhookEndpoint:
        scope = _scope(caller)
        wanted = request.webhook_endpoint
        event_types = _event_types(wanted.event_types, "webhook_endpoint.event_types")
        description = _description(wanted.description, "webhook_endpoint.description")
        request_id = request.request_id or None
        if request_id is not None and not REQUEST_ID.match(request_id):
            raise invalid_argument(
                [FieldViolation("request_id", "must be 1-128 letters, digits and . _ : -")]
            )
        url = await self._check_url(wanted.url, "webhook_endpoint.url")
        secret = new_secret()
        sealed = self.box.seal(secret)

        def work() -> webhooks_pb2.WebhookEndpoint:
            now = utcnow()
            if request_id is not None:
                with self.sessions() as session:
                    existing = session.scalars(
                        select(WebhookEndpoint).where(
                            WebhookEndpoint.partner_id == scope.partner_id,
                            WebhookEndpoint.request_id == request_id,
                        )
                    ).first()
                    if existing is not None:
                        return self._repeat(
                            existing, url, event_types, description, request_id, scope.prefix
                        )
            row = WebhookEndpoint(
                id=new_ulid(),
                partner_id=scope.partner_id,
                url=url,
                description=description,
                event_types=event_types,
                state=ENABLED,
                state_reason="",
                secret=sealed,
                previous_secret=None,
                previous_secret_expire_time=None,
                request_id=request_id,
                create_time=now,
                update_time=now,
            )
            try:
                with self.sessions.begin() as session:
                    session.add(row)
                    session.flush()
                    self._record(session, scope, row.id, None, endpoint_values(row))
            except IntegrityError:
                with self.sessions() as session:
                    existing = session.scalars(
                        select(WebhookEndpoint).where(
                            WebhookEndpoint.partner_id == scope.partner_id,
                            WebhookEndpoint.request_id == request_id,
                        )
                    ).first()
                if existing is None:
                    raise
                return self._repeat(
                    existing, url, event_types, description, request_id or "", scope.prefix
                )
            log.info(
                "webhook endpoint created",
                extra={"endpoint_id": row.id, "partner_id": scope.partner_id},
            )
            return to_proto(row, secret, scope.prefix)

        return await self._db(work)

    @staticmethod
    def _repeat(
        existing: WebhookEndpoint,
        url: str,
        event_types: str,
        description: str,
        request_id: str,
        prefix: str,
    ) -> webhooks_pb2.WebhookEndpoint:
        if (existing.url, existing.event_types, existing.description) != (
            url,
            event_types,
            description,
        ):
            raise IDEMPOTENCY_KEY_REUSED.error(
                f"The idempotency key {quoted(request_id)} was already used for a different "
                f"webhook endpoint ({prefix}{existing.id}); use a new key for a new endpoint.",
                metadata={"request_id": request_id, "existing": prefix + existing.id},
            )
        return to_proto(existing, prefix=prefix)

    async def get_webhook_endpoint(
        self, caller: Caller | EndpointsOf, request: webhooks_pb2.GetWebhookEndpointRequest
    ) -> webhooks_pb2.WebhookEndpoint:
        scope = _scope(caller)
        endpoint_id = parse_endpoint_name(request.name, prefix=scope.prefix)

        def read() -> webhooks_pb2.WebhookEndpoint:
            with self.sessions() as session:
                row = session.get(WebhookEndpoint, endpoint_id)
                if row is None or row.partner_id != scope.partner_id:
                    raise not_found(scope.prefix + endpoint_id)
                return to_proto(row, prefix=scope.prefix)

        return await self._db(read)

    async def list_webhook_endpoints(
        self, caller: Caller | EndpointsOf, request: webhooks_pb2.ListWebhookEndpointsRequest
    ) -> webhooks_pb2.ListWebhookEndpointsResponse:
        scope = _scope(caller)
        size = _page(request.page_size, request.page_token, is_ulid)
        after = request.page_token

        def read() -> webhooks_pb2.ListWebhookEndpointsResponse:
            with self.sessions() as session:
                query = select(WebhookEndpoint).where(
                    WebhookEndpoint.partner_id == scope.partner_id
                )
                if after:
                    query = query.where(WebhookEndpoint.id > after)
                rows = session.scalars(query.order_by(WebhookEndpoint.id).limit(size + 1)).all()
            response = webhooks_pb2.ListWebhookEndpointsResponse(
                webhook_endpoints=[to_proto(r, prefix=scope.prefix) for r in rows[:size]]
            )
            if len(rows) > size:
                response.next_page_token = rows[size - 1].id
            return response

        return await self._db(read)

    # -- change ------------------------------------------------------------------------------

    async def update_webhook_endpoint(
        self, caller: Caller | EndpointsOf, request: webhooks_pb2.UpdateWebhookEndpointRequest
    ) -> webhooks_pb2.WebhookEndpoint:
        scope = _scope(caller)
        wanted = request.webhook_endpoint
        endpoint_id = parse_endpoint_name(wanted.name, "webhook_endpoint.name", scope.prefix)
        paths = list(request.update_mask.paths)
        if not paths or paths == ["*"]:
            paths = (
                list(_UPDATABLE)
                if paths
                else [
                    p
                    for p, set_ in (
                        ("url", bool(wanted.url)),
                        ("event_types", bool(wanted.event_types)),
                        ("description", bool(wanted.description)),
                    )
                    if set_
                ]
            )
        values: dict[str, Any] = {}
        for path in paths:
            if path == "url":
                values["url"] = await self._check_url(wanted.url, "webhook_endpoint.url")
            elif path == "event_types":
                values["event_types"] = _event_types(
                    wanted.event_types, "webhook_endpoint.event_types"
                )
            elif path == "description":
                values["description"] = _description(
                    wanted.description, "webhook_endpoint.description"
                )
            else:
                raise invalid_argument(
                    [
                        FieldViolation(
                            "update_mask",
                            f"{quoted(path)} cannot be updated; use url, event_types, "
                            "description or *",
                        )
                    ]
                )

        def work() -> webhooks_pb2.WebhookEndpoint:
            with self.sessions.begin() as session:
                row = self._owned(session, scope, endpoint_id)
                before = endpoint_values(row)
                for key, value in values.items():
                    setattr(row, key, value)
                if values:
                    row.update_time = utcnow()
                self._record(session, scope, endpoint_id, before, endpoint_values(row))
                return to_proto(row, prefix=scope.prefix)

        return await self._db(work)

    async def _set_state(
        self, caller: Caller | EndpointsOf, name: str, state: str, reason: str
    ) -> webhooks_pb2.WebhookEndpoint:
        scope = _scope(caller)
        endpoint_id = parse_endpoint_name(name, prefix=scope.prefix)

        def work() -> webhooks_pb2.WebhookEndpoint:
            with self.sessions.begin() as session:
                row = self._owned(session, scope, endpoint_id)
                before = endpoint_values(row)
                if row.state != state:
                    row.state, row.state_reason, row.update_time = state, reason, utcnow()
                    if state == ENABLED:
                        row.failing_since = None
                self._record(session, scope, endpoint_id, before, endpoint_values(row))
                return to_proto(row, prefix=scope.prefix)

        result = await self._db(work)
        log.info(
            "webhook endpoint state set",
            extra={"endpoint_id": endpoint_id, "state": state, "partner_id": scope.partner_id},
        )
        return result

    async def disable_webhook_endpoint(
        self, caller: Caller | EndpointsOf, request: webhooks_pb2.DisableWebhookEndpointRequest
    ) -> webhooks_pb2.WebhookEndpoint:
        reason = _scope(caller).disable_reason
        return await self._set_state(caller, request.name, DISABLED, reason)

    async def enable_webhook_endpoint(
        self, caller: Caller | EndpointsOf, request: webhooks_pb2.EnableWebhookEndpointRequest
    ) -> webhooks_pb2.WebhookEndpoint:
        return await self._set_state(caller, request.name, ENABLED, "")

    async def delete_webhook_endpoint(
        self, caller: Caller | EndpointsOf, request: webhooks_pb2.DeleteWebhookEndpointRequest
    ) -> empty_pb2.Empty:
        scope = _scope(caller)
        endpoint_id = parse_endpoint_name(request.name, prefix=scope.prefix)

        def work() -> None:
            with self.sessions.begin() as session:
                row = self._owned(session, scope, endpoint_id)
                self._record(session, scope, endpoint_id, endpoint_values(row), None)
                session.execute(
                    delete(WebhookAttempt).where(WebhookAttempt.endpoint_id == endpoint_id)
                )
                session.execute(
                    delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
                )
                session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id))

        await self._db(work)
        log.info(
            "webhook endpoint deleted",
            extra={"endpoint_id": endpoint_id, "partner_id": scope.partner_id},
        )
        return empty_pb2.Empty()

    async def rotate_webhook_secret(
        self, caller: Caller | EndpointsOf, request: webhooks_pb2.RotateWebhookSecretRequest
    ) -> webhooks_pb2.WebhookEndpoint:
        scope = _scope(caller)
        endpoint_id = parse_endpoint_name(request.name, prefix=scope.prefix)
        overlap = request.overlap_seconds or DEFAULT_OVERLAP_SECONDS
        if not 0 <= request.overlap_seconds <= MAX_OVERLAP_SECONDS:
            raise invalid_argument(
                [FieldViolation("overlap_seconds", f"must be 0-{MAX_OVERLAP_SECONDS}")]
            )
        secret = new_secret()
        sealed = self.box.seal(secret)

        def work() -> webhooks_pb2.WebhookEndpoint:
            now = utcnow()
            with self.sessions.begin() as session:
                row = self._owned(session, scope, endpoint_id)
                row.previous_secret = row.secret
                row.previous_secret_expire_time = now + dt.timedelta(seconds=overlap)
                row.secret = sealed
                row.update_time = now
                after = {
                    **endpoint_values(row),
                    "secret_rotated": True,
                    "overlap_seconds": overlap,
                }
                self._record(session, scope, endpoint_id, None, after)
                return to_proto(row, secret, scope.prefix)

        result = await self._db(work)
        log.info(
            "webhook secret rotated",
            extra={"endpoint_id": endpoint_id, "overlap_seconds": overlap},
        )
        return result

    # -- the log and replays -----------------------------------------------------------------

    async def list_webhook_delivery_attempts(
        self, caller: Caller | EndpointsOf, request: webhooks_pb2.ListWebhookDeliveryAttemptsRequest
    ) -> webhooks_pb2.ListWebhookDeliveryAttemptsResponse:
        scope = _scope(caller)
        endpoint_id = parse_endpoint_name(request.parent, "parent", scope.prefix)
        size = _page(
            request.page_size,
            request.page_token,
            lambda t: t.isdigit() and len(t) < 19,
        )
        before = int(request.page_token) if request.page_token else None

        def read() -> webhooks_pb2.ListWebhookDeliveryAttemptsResponse:
            with self.sessions() as session:
                owner = session.get(WebhookEndpoint, endpoint_id)
                if owner is None or owner.partner_id != scope.partner_id:
                    raise not_found(scope.prefix + endpoint_id)
                query = (
                    select(WebhookAttempt, WebhookDelivery)
                    .join(WebhookDelivery, WebhookDelivery.id == WebhookAttempt.delivery_id)
                    .where(WebhookAttempt.endpoint_id == endpoint_id)
                )
                if before is not None:
                    query = query.where(WebhookAttempt.id < before)
                rows = session.execute(
                    query.order_by(WebhookAttempt.id.desc()).limit(size + 1)
                ).all()
            response = webhooks_pb2.ListWebhookDeliveryAttemptsResponse()
            for attempt, delivery in rows[:size]:
                item = response.attempts.add(
                    event_id=delivery.event_id,
                    event_type=delivery.event_type,
                    withdrawal=f"withdrawals/{delivery.withdrawal_id}"
                    if delivery.withdrawal_id
                    else "",
                    sequence=delivery.sequence,
                    attempt=attempt.attempt,
                    status_code=attempt.status_code,
                    latency_ms=attempt.latency_ms,
                    outcome=attempt.outcome,
                    error=attempt.error,
                )
                stamp = _ts(attempt.attempt_time)
                if stamp is not None:
                    item.attempt_time.CopyFrom(stamp)
            if len(rows) > size:
                response.next_page_token = str(rows[size - 1][0].id)
            return response

        return await self._db(read)

    async def replay_webhook_events(
        self, caller: Caller | EndpointsOf, request: webhooks_pb2.ReplayWebhookEventsRequest
    ) -> webhooks_pb2.ReplayWebhookEventsResponse:
        scope = _scope(caller)
        endpoint_id = parse_endpoint_name(request.name, prefix=scope.prefix)

        def work() -> int:
            with self.sessions.begin() as session:
                self._owned(session, scope, endpoint_id)  # another partner's: NOT_FOUND first
                where = _replay_filter(request, endpoint_id)
                result = session.execute(
                    update(WebhookDelivery)
                    .where(*where)
                    .values(
                        state="PENDING",
                        attempts=0,
                        next_attempt_time=utcnow(),
                        end_time=None,
                        lease_until=None,
                    )
                    .execution_options(synchronize_session=False)
                )
                count = int(result.rowcount)  # type: ignore[attr-defined]
                if request.event_id and count == 0:
                    raise not_found(f"{scope.prefix}{endpoint_id} event {quoted(request.event_id)}")
                replayed: dict[str, Any] = {"replayed_count": count}
                if request.event_id:
                    replayed["event_id"] = request.event_id
                else:
                    replayed["start_time"] = request.start_time.ToJsonString()
                    replayed["end_time"] = request.end_time.ToJsonString()
                self._record(session, scope, endpoint_id, None, replayed)
            return count

        count = await self._db(work)
        log.info("webhook events replayed", extra={"endpoint_id": endpoint_id, "count": count})
        return webhooks_pb2.ReplayWebhookEventsResponse(replayed_count=count)
