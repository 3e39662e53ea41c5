"""The gRPC services a running gateway serves, found through its server reflection, and one
call of a method with raw request bytes, judged by what every answer must carry.

Discovery is by reflection so that a service added to the gateway (and to its reflection
list) is fuzzed without touching the tests. `grpc.*` services (health, reflection itself)
are left out: they are grpc's own, answer with bare status codes by design, and the
reflection service is a bidirectional stream. Each service may have a credential (metadata);
a service without one is called with none, and must then refuse every call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.rpc import error_details_pb2, status_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status

Metadata = tuple[tuple[str, str], ...]

# Server failures, never an answer to bad input (UNAVAILABLE: the database did not answer in
# time, which no request may cause).
FORBIDDEN = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.UNAVAILABLE,
}
REFUSED_WITHOUT_CREDENTIAL = {
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    # Bytes that do not parse are refused before authentication.
    grpc.StatusCode.INVALID_ARGUMENT,
}
UNARY_TIMEOUT = 10.0
STREAM_TIMEOUT = 1.5


@dataclass(frozen=True)
class Target:
    """One method to fuzz, with the credential of its service (None: no credential)."""

    method: MethodDescriptor
    metadata: Metadata | None

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    def __str__(self) -> str:
        return self.method.full_name


def discover(channel: grpc.Channel) -> list[ServiceDescriptor]:
    """The services the server lists in its reflection, with descriptors from it too."""
    database = ProtoReflectionDescriptorDatabase(channel)
    pool = descriptor_pool.DescriptorPool(database)
    return [
        pool.FindServiceByName(name)
        for name in sorted(database.get_services())
        if not name.startswith("grpc.")
    ]


def targets(
    services: Sequence[ServiceDescriptor], credentials: Mapping[str, Metadata]
) -> list[Target]:
    return [
        Target(method, credentials.get(service.full_name))
        for service in services
        for method in service.methods
        if not method.client_streaming
    ]


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    status: status_pb2.Status | None
    streamed: bool = False  # a server stream sent a message before it was cancelled

    @property
    def ok(self) -> bool:
        return self.code == grpc.StatusCode.OK

    def reason(self) -> str:
        if self.status is None:
            return ""
        for detail in self.status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return str(info.reason)
        return ""

    def __str__(self) -> str:
        return f"{self.code.name} {self.details!r} reason={self.reason()!r}"


def _failed(call: grpc.RpcError) -> Outcome:
    try:
        status = rpc_status.from_call(call)  # type: ignore[arg-type]
    except ValueError as exc:  # the status in the trailer disagrees with the call's
        return Outcome(call.code(), f"{call.details()} [{exc}]", None)  # type: ignore[attr-defined]
    return Outcome(call.code(), call.details() or "", status)  # type: ignore[attr-defined]


def call(channel: grpc.Channel, target: Target, data: bytes) -> Outcome:
    """Send `data` as the request. A server stream is read up to its first message (then
    cancelled) or its end, with a short deadline: a valid watch may wait for events."""
    metadata = target.metadata or ()
    if not target.method.server_streaming:
        unary = channel.unary_unary(target.path)
        try:
            unary(data, metadata=metadata, timeout=UNARY_TIMEOUT)
        except grpc.RpcError as exc:
            return _failed(exc)
        return Outcome(grpc.StatusCode.OK, "", None)
    stream = channel.unary_stream(target.path)(data, metadata=metadata, timeout=STREAM_TIMEOUT)
    try:
        next(stream)
    except StopIteration:
        return Outcome(grpc.StatusCode.OK, "", None)
    except grpc.RpcError as exc:
        return _failed(exc)
    stream.cancel()
    return Outcome(grpc.StatusCode.OK, "", None, streamed=True)


def problems(target: Target, outcome: Outcome) -> list[str]:
    """What is wrong with this answer: a forbidden code, an error without google.rpc details
    and an ErrorInfo reason, or a call without a credential that was not refused."""
    found = []
    if outcome.code in FORBIDDEN:
        found.append(f"{outcome.code.name} is never a valid answer")
    if (
        target.method.server_streaming
        and outcome.code == grpc.StatusCode.DEADLINE_EXCEEDED
        and outcome.status is None
    ):
        return found  # a valid watch waiting for events; our deadline ended it
    if not outcome.ok:
        if outcome.status is None:
            found.append("no google.rpc.Status in grpc-status-details-bin")
        elif not outcome.reason():
            found.append("no ErrorInfo with a reason in the details")
    if target.metadata is None and outcome.code not in REFUSED_WITHOUT_CREDENTIAL:
        found.append("a call without a credential was not refused")
    return found
