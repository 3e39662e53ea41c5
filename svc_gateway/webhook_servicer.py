"""The gRPC adapter of the WebhookService: every method hands its request to the dispatcher
and renders errors (methods made from the service descriptor, so none is forgotten)."""

from __future__ import annotations

from assetwithdrawal.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc
from svc_gateway.grpc_adapter import UnaryAdapter, describe_unary_methods

SERVICE = webhooks_pb2.DESCRIPTOR.services_by_name["WebhookService"]


@describe_unary_methods(SERVICE)
class WebhookServicer(UnaryAdapter, webhooks_pb2_grpc.WebhookServiceServicer):
    pass
