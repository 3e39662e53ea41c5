"""The AdminService over one gRPC channel, and failed calls as readable errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from assetwithdrawal.admin.v1 import admin_pb2_grpc
from awctl.config import Config

STATUS_DETAILS_KEY = "grpc-status-details-bin"
DEFAULT_TIMEOUT = 15.0

Response = TypeVar("Response")


@dataclass
class ApiError(Exception):
    """A call that failed: its status, message and the google.rpc details it carried."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[tuple[str, str]] = field(default_factory=list)
    hint: str = ""

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


def _details(exc: grpc.Call) -> status_pb2.Status | None:
    for key, value in exc.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except DecodeError:
                return None
            return status
    return None


def _hint(error: ApiError, config: Config) -> str:
    code = error.code
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and (
        not error.reason
    ):
        return (
            f"could not reach the gateway at {config.target} (from {config.target_source}). "
            "Check that it is running (`make up`), that this is its gRPC port (stack.json's "
            "grpc_target), and --target/AWCTL_TARGET."
        )
    if code == grpc.StatusCode.UNAUTHENTICATED and config.kind == "partner":
        return (
            f"the gateway at {config.target} did not accept the API key "
            f"{config.shown_credential} (from {config.credential_source}). It must be a "
            "partner API key (`awk_…`, not an operator credential), not revoked: check "
            "--api-key/AWCTL_API_KEY."
        )
    if code == grpc.StatusCode.PERMISSION_DENIED and error.reason == "SCOPE_MISSING":
        scope = error.metadata.get("scope", "another scope")
        return (
            f"the API key {config.shown_credential} (from {config.credential_source}) lacks "
            f"the `{scope}` scope: use a key that holds it (an operator grants it with "
            "`awctl keys create`)."
        )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return (
            f"the gateway at {config.target} did not accept the credential "
            f"{config.shown_credential} (from {config.credential_source}). It must be an "
            "operator credential (`awo_…`, not a partner API key), not revoked, of an active "
            "operator: check --credential/AWCTL_CREDENTIAL."
        )
    if code == grpc.StatusCode.PERMISSION_DENIED and error.reason == "ROLE_REQUIRED":
        role = error.metadata.get("role", "another role")
        return f"this needs the `{role}` role, which {config.shown_credential}'s operator lacks."
    if code == grpc.StatusCode.PERMISSION_DENIED and error.reason == "SELF_CONFIRMATION":
        return (
            "four eyes: the operator that proposed a change cannot confirm it; another admin "
            "must (`awctl changes confirm` with their credential)."
        )
    if code == grpc.StatusCode.PERMISSION_DENIED and error.reason == "SELF_APPROVAL":
        return "four eyes: the operator that created a withdrawal cannot approve it."
    return ""


def api_error(exc: grpc.RpcError, config: Config) -> ApiError:
    call: Any = exc
    code = call.code() if hasattr(call, "code") else grpc.StatusCode.UNKNOWN
    message = (call.details() if hasattr(call, "details") else None) or str(exc)
    error = ApiError(code, message)
    status = _details(call) if hasattr(call, "trailing_metadata") else None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            error.reason, error.domain = info.reason, info.domain
            error.metadata = dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            error.violations.extend((v.field, v.description) for v in bad.field_violations)
    error.hint = _hint(error, config)
    return error


class AdminClient:
    """The AdminService stub with the operator's credential on every call."""

    def __init__(self, config: Config, channel: grpc.Channel, timeout: float) -> None:
        self.config = config
        self.stub = admin_pb2_grpc.AdminServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {config.credential}"),)
        self._timeout = timeout

    def call(self, method: Callable[..., Response], request: Any) -> Response:
        try:
            return method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise api_error(exc, self.config) from None


@contextmanager
def connect(config: Config, timeout: float = DEFAULT_TIMEOUT) -> Iterator[AdminClient]:
    with grpc.insecure_channel(config.target) as channel:
        yield AdminClient(config, channel, timeout)
