"""One exception root for the whole system, and its mapping to `google.rpc.Status`.

Every error a client can see is an `ApiError`: a canonical code, a machine-readable reason
(ErrorInfo), a message saying what to do next, and, for bad input, one violation per field
(BadRequest). Both transports render the same `google.rpc.Status`: gRPC as the status with
details in the trailers, REST as the matching HTTP status with the details as JSON.

Every ErrorInfo carries `ERROR_DOMAIN`, and every reason a client can see is an `ErrorReason`
declared once (the shared ones here, the gateway's in `svc_gateway.errors`), so the OpenAPI
document lists exactly the reasons the code raises.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import any_pb2, json_format
from google.rpc import error_details_pb2, status_pb2

ERROR_DOMAIN = "withdrawals.assetwithdrawal.dev"
"""The `google.rpc.ErrorInfo.domain` of every error: the product's service name."""


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


class SettingsError(WithdrawalSystemError):
    """A setting in the environment cannot be used; the message names the variable.

    Re-exported by `withdrawal_shared.settings`, where the settings helpers raise it."""


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path in the request (e.g. `withdrawal.amount`) and what is wrong."""

    field: str
    description: str


@dataclass(frozen=True)
class ErrorReason:
    """One ErrorInfo reason a client can see: its code, HTTP status and what it means.

    `http_status` differs from the code's standard mapping only for REST-only errors (413).
    `example` (a realistic message) and `example_violation` (field, description) make the
    example error of the docs (`example_error`); with only a violation, the message is the
    one `invalid_argument` writes.
    """

    reason: str
    code: Code
    summary: str
    http_status: int = 0
    example: str = ""
    example_violation: tuple[str, str] | None = None

    @property
    def status(self) -> int:
        """The HTTP status REST answers with."""
        return self.http_status or self.code.http_status

    def example_error(self) -> ApiError:
        """An error of this reason as the docs show it."""
        violations = (FieldViolation(*self.example_violation),) if self.example_violation else ()
        return self.error(self.example or _invalid_message(violations), violations)

    def error(
        self,
        message: str,
        field_violations: Iterable[FieldViolation] = (),
        metadata: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ApiError:
        """An ApiError with this reason, code and HTTP status."""
        return ApiError(
            self.code,
            self.reason,
            message,
            tuple(field_violations),
            dict(metadata or {}),
            self.http_status or None,
            dict(headers or {}),
        )


@dataclass
class ApiError(WithdrawalSystemError):
    """An error a client sees: canonical code, ErrorInfo reason, message, field violations.

    REST answers with `http_status` when set, else with the code's standard HTTP status.
    `headers` (lowercase names) go out as HTTP response headers on REST and as trailing
    metadata on gRPC (e.g. `retry-after`).
    """

    code: Code
    reason: str
    message: str
    field_violations: tuple[FieldViolation, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    http_status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

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

    def with_field_names(self, rename: Callable[[str], str]) -> ApiError:
        """This error with every violation's field renamed by `rename`.

        A message that lists the violations (as `invalid_argument` writes it) is rewritten
        with the new names; any other message is kept.
        """
        if not self.field_violations:
            return self
        renamed = tuple(
            FieldViolation(rename(v.field), v.description) for v in self.field_violations
        )
        message = self.message
        if message == _invalid_message(self.field_violations):
            message = _invalid_message(renamed)
        return dataclasses.replace(self, field_violations=renamed, message=message)


def status_to_json(status: status_pb2.Status) -> dict[str, Any]:
    """The REST error body: `{"error": {code, status, message, details[]}}` (AIP-193)."""
    body = json_format.MessageToDict(status, preserving_proto_field_name=False)
    code = Code(status.code)
    details: list[dict[str, Any]] = body.get("details", [])
    for detail in details:
        # proto3 JSON leaves out empty strings, but a violation always names its field (a
        # query parameter sent with an empty name is the field "") and says what is wrong.
        for violation in detail.get("fieldViolations", ()):
            violation.setdefault("field", "")
            violation.setdefault("description", "")
    return {
        "error": {
            "code": code.http_status,
            "status": code.name,
            "message": status.message,
            "details": details,
        }
    }


INVALID_ARGUMENT = ErrorReason(
    "INVALID_ARGUMENT",
    Code.INVALID_ARGUMENT,
    "A field is missing or invalid; the BadRequest detail names each one and what it must be.",
    example_violation=("amount", 'must be a decimal string such as "12.5", not a number'),
)
NOT_FOUND = ErrorReason(
    "NOT_FOUND",
    Code.NOT_FOUND,
    "The resource does not exist or belongs to another partner.",
    example="withdrawals/01j9zq8m5k3v7t2r4w6y8a0c1e does not exist or is not visible to this "
    "API key.",
)
UNAUTHENTICATED = ErrorReason(
    "UNAUTHENTICATED",
    Code.UNAUTHENTICATED,
    "The Authorization header is missing or malformed, or its API key is unknown or revoked.",
    example="Missing API key: send the header 'Authorization: Bearer <api key>'.",
)
INTERNAL = ErrorReason(
    "INTERNAL",
    Code.INTERNAL,
    "An unexpected server error; retrying with the same idempotency key is safe.",
    example="An internal error occurred; nothing about it is known to be your fault. Retry "
    "the same request, and quote trace id 0af7651916cd43dd8448eb211c80319c if it persists.",
)

UNAVAILABLE = ErrorReason(
    "UNAVAILABLE",
    Code.UNAVAILABLE,
    "The database did not answer in time (a lock held too long, a lost connection, a "
    "failover); retry the same request with the same idempotency key after `Retry-After`.",
    example="The service could not finish the request in time; nothing about it is known "
    "to be your fault. Retry the same request (same request_id or Idempotency-Key) in 1 s: "
    "a repeat is answered as the first request would have been. Quote trace id "
    "0af7651916cd43dd8448eb211c80319c if it persists.",
)
UNAVAILABLE_RETRY_SECONDS = 1


def _invalid_message(violations: Iterable[FieldViolation]) -> str:
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return f"The request has invalid fields ({summary}). Fix them and send it again."


QUOTED_MAX = 40


def quoted(text: str, limit: int = QUOTED_MAX) -> str:
    """What the caller sent, quoted for an error message and cut to `limit` characters.

    A message names a bad value but never echoes it whole: on gRPC the status (message and
    details, where the message appears again) travels in the trailers, which clients cap
    (grpc: 8 KiB), so a long value would turn the error into RESOURCE_EXHAUSTED with no
    details at the client.
    """
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def invalid_argument(
    violations: Iterable[FieldViolation], reason: str = INVALID_ARGUMENT.reason
) -> ApiError:
    found = tuple(violations)
    return ApiError(Code.INVALID_ARGUMENT, reason, _invalid_message(found), found)


def not_found(resource: str) -> ApiError:
    return NOT_FOUND.error(
        f"{resource} does not exist or is not visible to this API key.",
        metadata={"resource": resource},
    )


def unauthenticated(message: str) -> ApiError:
    return UNAUTHENTICATED.error(message)


def unavailable(trace_id: str) -> ApiError:
    """UNAVAILABLE (503, `Retry-After`) for a failure the same request can get past: the
    database timed out on a lock or lost its connection (`withdrawal_shared.unexpected`)."""
    seconds = str(UNAVAILABLE_RETRY_SECONDS)
    return UNAVAILABLE.error(
        "The service could not finish the request in time; nothing about it is known to be "
        f"your fault. Retry the same request (same request_id or Idempotency-Key) in {seconds} "
        "s: a repeat is answered as the first request would have been. Quote trace id "
        f"{trace_id} if it persists.",
        metadata={"trace_id": trace_id, "retry_after": seconds},
        headers={"retry-after": seconds},
    )


def internal(trace_id: str) -> ApiError:
    return INTERNAL.error(
        "An internal error occurred; nothing about it is known to be your fault. Retry the "
        "same request (same request_id or Idempotency-Key), and quote trace id "
        f"{trace_id} if it persists.",
        metadata={"trace_id": trace_id},
    )
