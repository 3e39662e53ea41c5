"""One exception root for the whole system, and its mapping to `google.rpc.Status`.

Every error a client can see is an `ApiError`: a canonical code, a machine-readable reason
(ErrorInfo), a message saying what to do next, and, for bad input, one violation per field
(BadRequest). Both transports render the same `google.rpc.Status`: gRPC as the status with
details in the trailers, REST as the matching HTTP status with the details as JSON.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import any_pb2, json_format
from google.rpc import error_details_pb2, status_pb2

ERROR_DOMAIN = "assetwithdrawal.example.com"


class Code(enum.IntEnum):
    """google.rpc.Code, the canonical error codes shared by gRPC and REST."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS[self]


# The standard gRPC -> HTTP mapping (google/rpc/code.proto).
_HTTP_STATUS: dict[Code, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


class WithdrawalSystemError(Exception):
    """Root of every exception this system raises on purpose."""


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path in the request (e.g. `withdrawal.amount`) and what is wrong."""

    field: str
    description: str


@dataclass
class ApiError(WithdrawalSystemError):
    """An error a client sees: canonical code, ErrorInfo reason, message, field violations."""

    code: Code
    reason: str
    message: str
    field_violations: tuple[FieldViolation, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.code.name} {self.reason}: {self.message}"

    def to_status(self) -> status_pb2.Status:
        """The `google.rpc.Status` with ErrorInfo (and BadRequest when fields are named)."""
        details: list[any_pb2.Any] = []
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=ERROR_DOMAIN, metadata=dict(self.metadata)
        )
        packed = any_pb2.Any()
        packed.Pack(info)
        details.append(packed)
        if self.field_violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in self.field_violations
                ]
            )
            packed = any_pb2.Any()
            packed.Pack(bad)
            details.append(packed)
        return status_pb2.Status(code=int(self.code), message=self.message, details=details)


def status_to_json(status: status_pb2.Status) -> dict[str, Any]:
    """The REST error body: `{"error": {code, status, message, details[]}}` (AIP-193)."""
    body = json_format.MessageToDict(status, preserving_proto_field_name=False)
    code = Code(status.code)
    return {
        "error": {
            "code": code.http_status,
            "status": code.name,
            "message": status.message,
            "details": body.get("details", []),
        }
    }


def invalid_argument(
    violations: Iterable[FieldViolation], reason: str = "INVALID_ARGUMENT"
) -> ApiError:
    found = tuple(violations)
    summary = "; ".join(f"{v.field}: {v.description}" for v in found)
    return ApiError(
        Code.INVALID_ARGUMENT,
        reason,
        f"The request has invalid fields ({summary}). Fix them and send it again.",
        found,
    )


def not_found(resource: str) -> ApiError:
    return ApiError(
        Code.NOT_FOUND,
        "NOT_FOUND",
        f"{resource} does not exist or is not visible to this API key.",
        metadata={"resource": resource},
    )


def unauthenticated(message: str) -> ApiError:
    return ApiError(Code.UNAUTHENTICATED, "UNAUTHENTICATED", message)


def internal(trace_id: str) -> ApiError:
    return ApiError(
        Code.INTERNAL,
        "INTERNAL",
        "An internal error occurred; nothing about it is known to be your fault. "
        f"Retry with the same request_id, and quote trace id {trace_id} if it persists.",
        metadata={"trace_id": trace_id},
    )
