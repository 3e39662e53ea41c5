"""The gRPC adapter of the admin API: every AdminService method hands its request to the
dispatcher and renders errors (methods made from the service descriptor, so none is
forgotten)."""

from __future__ import annotations

from assetwithdrawal.admin.v1 import admin_pb2, admin_pb2_grpc
from svc_gateway.grpc_adapter import UnaryAdapter, describe_unary_methods

SERVICE = admin_pb2.DESCRIPTOR.services_by_name["AdminService"]


@describe_unary_methods(SERVICE)
class AdminServicer(UnaryAdapter, admin_pb2_grpc.AdminServiceServicer):
    pass
