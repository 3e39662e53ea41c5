"""Typed exceptions: one root, `AssetWithdrawalError`, a subclass per gRPC code and, where the
API documents one, per reason. Both transports raise the same classes with the same fields:
the `google.rpc.Status` the gateway answers (gRPC: the `grpc-status-details-bin` trailer;
REST: the AIP-193 JSON body) is read into `reason`, `domain`, `metadata` (ErrorInfo) and
`field_violations` (BadRequest). Match on the class or on `reason`, never on the message."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2

__all__ = [
    "Aborted",
    "AlreadyExists",
    "AssetWithdrawalError",
    "BatchRowsInvalid",
    "Cancelled",
    "ClientReferenceReused",
    "ConcurrentModification",
    "DeadlineExceeded",
    "DuplicateFile",
    "FailedPrecondition",
    "FieldViolation",
    "IdempotencyKeyReused",
    "InternalError",
    "InvalidArgument",
    "LimitExceeded",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "UnknownError",
    "WebhookVerificationError",
    "WithdrawalNotCancellable",
]

DOMAIN = "withdrawals.assetwithdrawal.dev"
_CODE_NAMES = frozenset(code_pb2.Code.keys())
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: `field` as the transport names it (gRPC: `withdrawal.amount`; REST: as
    sent, e.g. `amount`) and what is wrong with it."""

    field: str
    description: str


class AssetWithdrawalError(Exception):
    """Every error the SDK raises. `code` is the canonical gRPC code name (e.g.
    `INVALID_ARGUMENT`), `reason` the API's machine-readable reason (ErrorInfo), `metadata`
    its details, `field_violations` the BadRequest violations, `http_status` the HTTP status
    (REST) or the code's usual one (gRPC)."""

    default_code: ClassVar[str] = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
        http_status: int | None = None,
        retry_after: float | None = None,
        attempts: int = 1,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code or self.default_code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations: list[FieldViolation] = list(field_violations)
        self.http_status = http_status if http_status is not None else _HTTP.get(self.code, 500)
        self.retry_after = retry_after
        self.attempts = attempts
        """How many attempts were made before this error was raised (retries included)."""

    @property
    def trace_id(self) -> str:
        """The trace id to quote to support (INTERNAL errors carry one)."""
        return self.metadata.get("trace_id", "")

    def __str__(self) -> str:
        label = f"{self.code}: {self.reason}" if self.reason else self.code
        return f"{label}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, message={self.message!r})"


class Cancelled(AssetWithdrawalError):
    default_code = "CANCELLED"


class UnknownError(AssetWithdrawalError):
    default_code = "UNKNOWN"


class InvalidArgument(AssetWithdrawalError):
    """A request with bad fields; `field_violations` lists every one."""

    default_code = "INVALID_ARGUMENT"


class DeadlineExceeded(AssetWithdrawalError):
    """The attempt's deadline passed (REST: a read or connect timeout)."""

    default_code = "DEADLINE_EXCEEDED"


class NotFound(AssetWithdrawalError):
    """No such resource for this API key (another partner's is NOT_FOUND too)."""

    default_code = "NOT_FOUND"


class AlreadyExists(AssetWithdrawalError):
    default_code = "ALREADY_EXISTS"


class IdempotencyKeyReused(AlreadyExists):
    """The request_id was used for another body; `metadata['withdrawal']` names the original."""


class ClientReferenceReused(AlreadyExists):
    """The client_reference belongs to another withdrawal (`metadata['withdrawal']`)."""


class DuplicateFile(AlreadyExists):
    """The same batch file was accepted before under another key (`metadata['batch']`)."""


class PermissionDenied(AssetWithdrawalError):
    """The key lacks the scope the call needs (`metadata['scope']`)."""

    default_code = "PERMISSION_DENIED"


class RateLimited(AssetWithdrawalError):
    """Over the key's rate limit; nothing was done. `retry_after` is in seconds."""

    default_code = "RESOURCE_EXHAUSTED"


class FailedPrecondition(AssetWithdrawalError):
    default_code = "FAILED_PRECONDITION"


class LimitExceeded(FailedPrecondition):
    """A limit refused the create (`metadata['limit']`, `limit_value`, `window`, `token`)."""


class WithdrawalNotCancellable(FailedPrecondition):
    """Too late to cancel (`metadata['state']`)."""


class BatchRowsInvalid(FailedPrecondition):
    """REJECT_ALL refused a file with bad rows; `metadata['batch']` holds the full report."""


class Aborted(AssetWithdrawalError):
    default_code = "ABORTED"


class ConcurrentModification(Aborted):
    """The withdrawal kept changing during the call; retried automatically."""


class Unimplemented(AssetWithdrawalError):
    default_code = "UNIMPLEMENTED"


class InternalError(AssetWithdrawalError):
    """Unexpected server failure; quote `trace_id`."""

    default_code = "INTERNAL"


class Unavailable(AssetWithdrawalError):
    """The gateway could not be reached, the connection broke, or its database did not answer
    in time (503 with `Retry-After`); retried automatically."""

    default_code = "UNAVAILABLE"


class Unauthenticated(AssetWithdrawalError):
    """Missing, malformed, unknown or revoked API key."""

    default_code = "UNAUTHENTICATED"


class WebhookVerificationError(AssetWithdrawalError):
    """A webhook delivery whose signature or timestamp does not verify: answer it 400."""

    default_code = "INVALID_ARGUMENT"


_BY_CODE: dict[str, type[AssetWithdrawalError]] = {
    cls.default_code: cls
    for cls in (
        Cancelled,
        UnknownError,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        RateLimited,
        FailedPrecondition,
        Aborted,
        Unimplemented,
        InternalError,
        Unavailable,
        Unauthenticated,
    )
}
_BY_CODE["OUT_OF_RANGE"] = InvalidArgument
_BY_CODE["DATA_LOSS"] = InternalError
_BY_REASON: dict[str, type[AssetWithdrawalError]] = {
    "IDEMPOTENCY_KEY_REUSED": IdempotencyKeyReused,
    "CLIENT_REFERENCE_REUSED": ClientReferenceReused,
    "DUPLICATE_FILE": DuplicateFile,
    "LIMIT_EXCEEDED": LimitExceeded,
    "WITHDRAWAL_NOT_CANCELLABLE": WithdrawalNotCancellable,
    "BATCH_ROWS_INVALID": BatchRowsInvalid,
    "CONCURRENT_MODIFICATION": ConcurrentModification,
    "RATE_LIMITED": RateLimited,
}
_HTTP = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}
_HTTP_TO_CODE = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _parse_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def error_from_status(
    status: status_pb2.Status,
    *,
    http_status: int | None = None,
    retry_after: str | None = None,
) -> AssetWithdrawalError:
    """The typed exception of a `google.rpc.Status` (with its details unpacked)."""
    code = code_pb2.Code.Name(status.code) if status.code in code_pb2.Code.values() else "UNKNOWN"
    reason, domain, metadata = "", "", {}
    violations: list[FieldViolation] = []
    for detail in status.details:
        if detail.type_url == _ERROR_INFO:
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.type_url == _BAD_REQUEST:
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
    cls = _BY_REASON.get(reason) or _BY_CODE.get(code, UnknownError)
    if cls is RateLimited and code != "RESOURCE_EXHAUSTED":
        cls = _BY_CODE.get(code, UnknownError)
    seconds = _parse_seconds(retry_after) or _parse_seconds(metadata.get("retry_after"))
    error = cls(
        status.message or code,
        reason=reason,
        domain=domain,
        metadata=metadata,
        field_violations=violations,
        http_status=http_status,
        retry_after=seconds,
        code=code,
    )
    return error


def error_from_grpc(
    code_name: str,
    details: str | None,
    trailing_metadata: Sequence[tuple[str, str | bytes]] | None,
) -> AssetWithdrawalError:
    """The typed exception of a failed gRPC call (sync or asyncio), from its status code,
    details and trailing metadata (`grpc-status-details-bin`, `retry-after`)."""
    status: status_pb2.Status | None = None
    retry_after: str | None = None
    for key, value in trailing_metadata or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
        elif key == "retry-after":
            retry_after = value.decode() if isinstance(value, bytes) else value
    if status is None:
        number = code_pb2.Code.Value(code_name) if code_name in _CODE_NAMES else 2
        status = status_pb2.Status(code=number, message=details or code_name)
    return error_from_status(status, retry_after=retry_after)


def error_from_http(
    http_status: int, body: bytes, retry_after: str | None = None
) -> AssetWithdrawalError:
    """The typed exception of a REST error answer: the AIP-193 body when there is one, else
    (a proxy's page) the HTTP status mapped to its code."""
    try:
        parsed: Any = json.loads(body)
        error = parsed["error"]
        code_name = str(error.get("status") or _HTTP_TO_CODE.get(http_status, "UNKNOWN"))
        status = json_format.ParseDict(
            {
                "code": code_pb2.Code.Value(code_name)
                if code_name in _CODE_NAMES
                else code_pb2.UNKNOWN,
                "message": str(error.get("message", "")),
                "details": list(error.get("details", [])),
            },
            status_pb2.Status(),
            ignore_unknown_fields=True,
        )
    except (ValueError, KeyError, TypeError, AttributeError, json_format.ParseError):
        code_name = _HTTP_TO_CODE.get(http_status, "INTERNAL" if http_status >= 500 else "UNKNOWN")
        text = body[:200].decode("utf-8", "replace").strip()
        status = status_pb2.Status(
            code=code_pb2.Code.Value(code_name), message=f"HTTP {http_status}: {text}"
        )
    return error_from_status(status, http_status=http_status, retry_after=retry_after)


def error_from_json_line(line: dict[str, Any]) -> AssetWithdrawalError:
    """The error written as the last line of a REST stream (NDJSON)."""
    return error_from_http(int(line["error"].get("code", 500)), json.dumps(line).encode())
