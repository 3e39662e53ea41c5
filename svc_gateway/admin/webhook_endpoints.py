"""Any partner's webhook endpoints through the admin API. A part of `AdminCore`.

Each method hands its request to the partner API's own core (`svc_gateway.webhooks.
WebhookCore`, the one copy of the rules) scoped to the partner its resource name gives:
`partners/{partner}/webhookEndpoints/{webhook_endpoint}`. A change is audited by the core's
`record` hook in the transaction that makes it (SUCCEEDED, the endpoint's values before and
after, never a secret); a refused change in a transaction of its own (FAILED with the reason).
Reads are not audited. An endpoint an operator disables says `DISABLED_BY_OPERATOR`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from google.protobuf import empty_pb2
from sqlalchemy.orm import Session

from assetwithdrawal.admin.v1 import admin_pb2
from assetwithdrawal.webhooks.v1 import webhooks_pb2
from svc_gateway.admin import controls
from svc_gateway.admin.base import AdminBase
from svc_gateway.webhooks import EndpointsOf, WebhookCore
from withdrawal_shared.db.admin_audit import SUCCEEDED, append_admin_audit
from withdrawal_shared.db.models import Partner
from withdrawal_shared.db.operators import OperatorIdentity
from withdrawal_shared.errors import ApiError, FieldViolation, invalid_argument, not_found, quoted

T = TypeVar("T")

_ENDPOINT_NAME = re.compile(r"^partners/([^/]+)/webhookEndpoints/[^/]+$")


def endpoint_prefix(partner_id: str) -> str:
    return f"partners/{partner_id}/webhookEndpoints/"


def partner_of_endpoint(name: str, field: str = "name") -> str:
    """The partner id of `partners/{partner}/webhookEndpoints/{id}`, or INVALID_ARGUMENT."""
    match = _ENDPOINT_NAME.match(name)
    if match is None:
        raise invalid_argument(
            [
                FieldViolation(
                    field,
                    f"{quoted(name)} is not a webhook endpoint name "
                    "(partners/{partner}/webhookEndpoints/{webhook_endpoint})",
                )
            ]
        )
    return controls.parse_partner_name(f"partners/{match.group(1)}", field)


class WebhookEndpointsCore(AdminBase):
    def _webhooks(self) -> WebhookCore:
        if self.webhooks is None:
            raise RuntimeError("AdminCore needs the WebhookCore to manage webhook endpoints")
        return self.webhooks

    def _endpoints_of(
        self, partner_id: str, caller: OperatorIdentity | None = None, action: str = ""
    ) -> EndpointsOf:
        """The partner's endpoints, named as this API names them; with `caller`, every change
        is audited as `action` of that operator."""

        def record(
            session: Session,
            target: str,
            before: Mapping[str, Any] | None,
            after: Mapping[str, Any] | None,
        ) -> None:
            assert caller is not None
            append_admin_audit(
                session,
                operator_id=caller.operator_id,
                action=action,
                target=target,
                outcome=SUCCEEDED,
                before=before,
                after=after,
            )

        return EndpointsOf(
            partner_id,
            endpoint_prefix(partner_id),
            record if caller is not None else None,
            disable_reason="DISABLED_BY_OPERATOR",
        )

    async def _partner_exists(self, parent: str) -> str:
        partner_id = controls.parse_partner_name(parent)

        def read() -> bool:
            with self.sessions() as session:
                return session.get(Partner, partner_id) is not None

        if not await self._db(read):
            raise not_found(parent)
        return partner_id

    async def _change(
        self, caller: OperatorIdentity, action: str, target: str, call: Awaitable[T]
    ) -> T:
        """Await a change; a refusal is audited (FAILED) and re-raised."""
        try:
            return await call
        except ApiError as err:
            await self._db(self.record_refusal, caller, action, target, err)
            raise

    async def _changed(
        self, caller: OperatorIdentity, action: str, name: str, field: str = "name"
    ) -> EndpointsOf:
        """The audited scope of a change to the endpoint `name`; a malformed name is refused
        and audited."""
        try:
            partner_id = partner_of_endpoint(name, field)
        except ApiError as err:
            await self._db(self.record_refusal, caller, action, name, err)
            raise
        return self._endpoints_of(partner_id, caller, action)

    # -- reads (not audited) -----------------------------------------------------------------

    async def get_webhook_endpoint(
        self, caller: OperatorIdentity, request: admin_pb2.GetWebhookEndpointRequest
    ) -> webhooks_pb2.WebhookEndpoint:
        scope = self._endpoints_of(partner_of_endpoint(request.name))
        return await self._webhooks().get_webhook_endpoint(
            scope, webhooks_pb2.GetWebhookEndpointRequest(name=request.name)
        )

    async def list_webhook_endpoints(
        self, caller: OperatorIdentity, request: admin_pb2.ListWebhookEndpointsRequest
    ) -> admin_pb2.ListWebhookEndpointsResponse:
        partner_id = await self._partner_exists(request.parent)
        listed = await self._webhooks().list_webhook_endpoints(
            self._endpoints_of(partner_id),
            webhooks_pb2.ListWebhookEndpointsRequest(
                page_size=request.page_size, page_token=request.page_token
            ),
        )
        return admin_pb2.ListWebhookEndpointsResponse(
            webhook_endpoints=listed.webhook_endpoints, next_page_token=listed.next_page_token
        )

    async def list_webhook_delivery_attempts(
        self, caller: OperatorIdentity, request: admin_pb2.ListWebhookDeliveryAttemptsRequest
    ) -> admin_pb2.ListWebhookDeliveryAttemptsResponse:
        scope = self._endpoints_of(partner_of_endpoint(request.parent, "parent"))
        listed = await self._webhooks().list_webhook_delivery_attempts(
            scope,
            webhooks_pb2.ListWebhookDeliveryAttemptsRequest(
                parent=request.parent, page_size=request.page_size, page_token=request.page_token
            ),
        )
        return admin_pb2.ListWebhookDeliveryAttemptsResponse(
            attempts=listed.attempts, next_page_token=listed.next_page_token
        )

    # -- changes (audited) -------------------------------------------------------------------

    async def create_webhook_endpoint(
        self, caller: OperatorIdentity, request: admin_pb2.CreateWebhookEndpointRequest
    ) -> webhooks_pb2.WebhookEndpoint:
        action = "CreateWebhookEndpoint"

        async def create() -> webhooks_pb2.WebhookEndpoint:
            partner_id = await self._partner_exists(request.parent)
            return await self._webhooks().create_webhook_endpoint(
                self._endpoints_of(partner_id, caller, action),
                webhooks_pb2.CreateWebhookEndpointRequest(
                    webhook_endpoint=request.webhook_endpoint, request_id=request.request_id
                ),
            )

        return await self._change(caller, action, request.parent, create())

    async def update_webhook_endpoint(
        self, caller: OperatorIdentity, request: admin_pb2.UpdateWebhookEndpointRequest
    ) -> webhooks_pb2.WebhookEndpoint:
        action, name = "UpdateWebhookEndpoint", request.webhook_endpoint.name
        scope = await self._changed(caller, action, name, "webhook_endpoint.name")
        call = self._webhooks().update_webhook_endpoint(
            scope,
            webhooks_pb2.UpdateWebhookEndpointRequest(
                webhook_endpoint=request.webhook_endpoint, update_mask=request.update_mask
            ),
        )
        return await self._change(caller, action, name, call)

    async def disable_webhook_endpoint(
        self, caller: OperatorIdentity, request: admin_pb2.DisableWebhookEndpointRequest
    ) -> webhooks_pb2.WebhookEndpoint:
        action = "DisableWebhookEndpoint"
        scope = await self._changed(caller, action, request.name)
        call = self._webhooks().disable_webhook_endpoint(
            scope, webhooks_pb2.DisableWebhookEndpointRequest(name=request.name)
        )
        return await self._change(caller, action, request.name, call)

    async def enable_webhook_endpoint(
        self, caller: OperatorIdentity, request: admin_pb2.EnableWebhookEndpointRequest
    ) -> webhooks_pb2.WebhookEndpoint:
        action = "EnableWebhookEndpoint"
        scope = await self._changed(caller, action, request.name)
        call = self._webhooks().enable_webhook_endpoint(
            scope, webhooks_pb2.EnableWebhookEndpointRequest(name=request.name)
        )
        return await self._change(caller, action, request.name, call)

    async def delete_webhook_endpoint(
        self, caller: OperatorIdentity, request: admin_pb2.DeleteWebhookEndpointRequest
    ) -> empty_pb2.Empty:
        action = "DeleteWebhookEndpoint"
        scope = await self._changed(caller, action, request.name)
        call = self._webhooks().delete_webhook_endpoint(
            scope, webhooks_pb2.DeleteWebhookEndpointRequest(name=request.name)
        )
        return await self._change(caller, action, request.name, call)

    async def rotate_webhook_secret(
        self, caller: OperatorIdentity, request: admin_pb2.RotateWebhookSecretRequest
    ) -> webhooks_pb2.WebhookEndpoint:
        action = "RotateWebhookSecret"
        scope = await self._changed(caller, action, request.name)
        call = self._webhooks().rotate_webhook_secret(
            scope,
            webhooks_pb2.RotateWebhookSecretRequest(
                name=request.name, overlap_seconds=request.overlap_seconds
            ),
        )
        return await self._change(caller, action, request.name, call)

    async def replay_webhook_events(
        self, caller: OperatorIdentity, request: admin_pb2.ReplayWebhookEventsRequest
    ) -> admin_pb2.ReplayWebhookEventsResponse:
        action = "ReplayWebhookEvents"
        scope = await self._changed(caller, action, request.name)
        forwarded = webhooks_pb2.ReplayWebhookEventsRequest(
            name=request.name, event_id=request.event_id
        )
        for field in ("start_time", "end_time"):
            if request.HasField(field):
                getattr(forwarded, field).CopyFrom(getattr(request, field))
        replayed = await self._change(
            caller, action, request.name, self._webhooks().replay_webhook_events(scope, forwarded)
        )
        return admin_pb2.ReplayWebhookEventsResponse(replayed_count=replayed.replayed_count)
