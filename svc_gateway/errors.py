"""The gateway's errors: every ErrorInfo reason it can answer with, which RPC can answer with
which (`METHOD_ERRORS`, the source of the OpenAPI error responses), and rendering on gRPC
(the shared `withdrawal_shared.grpc_errors`: `ApiError` -> status with google.rpc details;
anything else -> logged and UNAVAILABLE or INTERNAL, `withdrawal_shared.unexpected`).

Code that raises one of these reasons uses its constant (`IDEMPOTENCY_KEY_REUSED.error(...)`
or `.reason`), never a string of its own; tests/unit/test_error_catalog.py checks that.
"""

from __future__ import annotations

from withdrawal_shared.approvals.errors import NOT_PENDING_APPROVAL, SELF_APPROVAL
from withdrawal_shared.errors import (
    INTERNAL,
    INVALID_ARGUMENT,
    NOT_FOUND,
    UNAUTHENTICATED,
    UNAVAILABLE,
    Code,
    ErrorReason,
)
from withdrawal_shared.grpc_errors import abort, to_api_error

SERVICE = "assetwithdrawal.withdrawal.v1.WithdrawalService"
WEBHOOK_SERVICE = "assetwithdrawal.webhooks.v1.WebhookService"
ADMIN_SERVICE = "assetwithdrawal.admin.v1.AdminService"
BATCH_SERVICE = "assetwithdrawal.withdrawal.v1.BatchService"

UNKNOWN_CHAIN = ErrorReason(
    "UNKNOWN_CHAIN",
    Code.INVALID_ARGUMENT,
    "`chain` is not a supported chain.",
    example_violation=("chain", "'solana' is not a supported chain"),
)
UNKNOWN_TOKEN = ErrorReason(
    "UNKNOWN_TOKEN",
    Code.INVALID_ARGUMENT,
    "`token` is not a token configured on the chain; the message lists the known ones.",
    example_violation=("token", "'XYZ' is not a token on polygon; known: USDC, USDT"),
)
TOKEN_DISABLED = ErrorReason(
    "TOKEN_DISABLED",
    Code.INVALID_ARGUMENT,
    "Payouts of the token are disabled on the chain for now.",
    example_violation=("token", "USDT payouts are disabled on polygon"),
)
SYSTEM_ADDRESS = ErrorReason(
    "SYSTEM_ADDRESS",
    Code.INVALID_ARGUMENT,
    "`recipientAddress` is one of this system's own contracts or wallets.",
    example_violation=(
        "recipientAddress",
        "is one of this system's own contracts or wallets; pay a user address",
    ),
)
AMOUNT_ABOVE_MAXIMUM = ErrorReason(
    "AMOUNT_ABOVE_MAXIMUM",
    Code.INVALID_ARGUMENT,
    "`amount` exceeds the token's per-withdrawal maximum.",
    example_violation=("amount", "exceeds the USDC maximum of 100000 per withdrawal"),
)
BODY_TOO_LARGE = ErrorReason(
    "BODY_TOO_LARGE",
    Code.INVALID_ARGUMENT,
    "REST only: the request body is larger than the gateway accepts (GATEWAY_MAX_BODY_BYTES).",
    http_status=413,
    example="The request body is larger than the limit of 65536 bytes; send a smaller one.",
    example_violation=("body", "is larger than 65536 bytes"),
)
METHOD_NOT_ALLOWED = ErrorReason(
    "METHOD_NOT_ALLOWED",
    Code.UNIMPLEMENTED,
    "REST only: the path exists but not with this HTTP method; `Allow` lists the methods.",
    http_status=405,
    example="DELETE is not allowed on /v1/withdrawals; use GET, POST.",
)
IDEMPOTENCY_KEY_REUSED = ErrorReason(
    "IDEMPOTENCY_KEY_REUSED",
    Code.ALREADY_EXISTS,
    "The idempotency key (`Idempotency-Key`, or `request_id` on gRPC) was already used for a "
    "withdrawal (or, on the admin API, a change or an API key) with another body; the metadata "
    "names it.",
    example="The idempotency key 'inv-77-payout' was already used for a different withdrawal "
    "(01j9zq8m5k3v7t2r4w6y8a0c1e); use a new key for a new withdrawal.",
)
WITHDRAWAL_NOT_CANCELLABLE = ErrorReason(
    "WITHDRAWAL_NOT_CANCELLABLE",
    Code.FAILED_PRECONDITION,
    "The withdrawal was already placed in a payout transaction and can no longer be cancelled.",
    example="The withdrawal is SIGNED and can no longer be cancelled: only a withdrawal not yet "
    "placed in a payout transaction can be.",
)
LIMIT_EXCEEDED = ErrorReason(
    "LIMIT_EXCEEDED",
    Code.FAILED_PRECONDITION,
    "The withdrawal would exceed a limit: the user's tier's per-withdrawal maximum or its "
    "24-hour amount or count, or the partner's 24-hour amount (`metadata.limit`, "
    "`limit_value`, `window`, `token`, and `tier` for a tier's limit). Nothing was stored.",
    example="The withdrawal would take user 'user-4711' above the standard tier's limit of "
    "10000 USDC per 24 hours; nothing was stored. Retry once earlier withdrawals leave the "
    "24-hour window, or move the user to another tier.",
)
CLIENT_REFERENCE_REUSED = ErrorReason(
    "CLIENT_REFERENCE_REUSED",
    Code.ALREADY_EXISTS,
    "`clientReference` is already the reference of another of your withdrawals (a "
    "different request); `metadata.withdrawal` names it. In a batch: a row's reference "
    "repeats an earlier row's, or an earlier withdrawal's.",
    example="The client reference 'inv-7781' is already used by withdrawal "
    "01j9zq8m5k3v7t2r4w6y8a0c1e; use another reference for a new withdrawal.",
)
DUPLICATE_FILE = ErrorReason(
    "DUPLICATE_FILE",
    Code.ALREADY_EXISTS,
    "A batch with the same file content was already accepted under another idempotency key "
    "(`metadata.batch` names it); send `allow_duplicate_content` (REST: "
    "`allowDuplicateContent=true`) to upload it again on purpose.",
    example="This file's content was already uploaded as batches/01j9zq8m5k3v7t2r4w6y8a0c1e; "
    "send allow_duplicate_content to upload it again on purpose.",
)
BATCH_FILE_INVALID = ErrorReason(
    "BATCH_FILE_INVALID",
    Code.INVALID_ARGUMENT,
    "The batch file cannot be read as a whole: not UTF-8, malformed CSV, a missing or unknown "
    "header column, or no rows. Nothing was stored; the violation says what to fix.",
    example_violation=("file", "the header lacks the required column 'amount'"),
)
BATCH_TOO_LARGE = ErrorReason(
    "BATCH_TOO_LARGE",
    Code.INVALID_ARGUMENT,
    "The batch file is larger than GATEWAY_BATCH_MAX_BYTES or has more rows than "
    "GATEWAY_BATCH_MAX_ROWS (`metadata.limit_bytes` or `metadata.limit_rows`). Nothing was "
    "stored; split the file.",
    example="The batch file has more than 100000 rows; split it into smaller files.",
)
BATCH_ROWS_INVALID = ErrorReason(
    "BATCH_ROWS_INVALID",
    Code.FAILED_PRECONDITION,
    "Policy REJECT_ALL: rows of the file are invalid, so none was stored. The BadRequest "
    "lists the first problems (`lines[N].column`); `metadata.batch` names the REJECTED batch "
    "whose report lists every one, `metadata.problem_count` counts them.",
    example="12 rows of the file have problems, so no withdrawal was stored (policy "
    "REJECT_ALL); fix them and upload again, or use ACCEPT_VALID. The report of "
    "batches/01j9zq8m5k3v7t2r4w6y8a0c1e lists every problem.",
    example_violation=("lines[7].amount", "has more than 6 decimal places"),
)
CONCURRENT_MODIFICATION = ErrorReason(
    "CONCURRENT_MODIFICATION",
    Code.ABORTED,
    "The withdrawal kept changing while the request ran; retry it.",
    example="The withdrawal kept changing while cancelling; retry the request.",
)

SCOPE_MISSING = ErrorReason(
    "SCOPE_MISSING",
    Code.PERMISSION_DENIED,
    "The API key lacks the scope this method needs; `metadata.scope` names it.",
    example="This API key lacks the scope 'withdrawals:create' that CreateWithdrawal needs; "
    "use a key granted it, or ask for one.",
)
RATE_LIMITED = ErrorReason(
    "RATE_LIMITED",
    Code.RESOURCE_EXHAUSTED,
    "The API key sent more requests than its rate limit allows; nothing was done. Retry after "
    "`Retry-After` seconds (REST header; gRPC trailing metadata `retry-after` and "
    "`metadata.retry_after`).",
    example="Too many requests for this API key: at most 100 per second, 200 at once. Retry "
    "after 1 s with the same request.",
)
ROLE_REQUIRED = ErrorReason(
    "ROLE_REQUIRED",
    Code.PERMISSION_DENIED,
    "Admin API: the operator lacks the role the method requires (`metadata.role`); audited.",
    example="ConfirmChange requires the role 'admin'; operators/dev-viewer holds viewer. Ask an "
    "admin to change your roles, or use an operator that holds it.",
)
SELF_CONFIRMATION = ErrorReason(
    "SELF_CONFIRMATION",
    Code.PERMISSION_DENIED,
    "Admin API: the change was proposed by the caller; another admin must confirm it (four "
    "eyes); audited.",
    example="changes/01j9zq8m5k3v7t2r4w6y8a0c1e was proposed by operators/alice, who cannot "
    "also confirm it: another admin must.",
)
CHANGE_NOT_PENDING = ErrorReason(
    "CHANGE_NOT_PENDING",
    Code.FAILED_PRECONDITION,
    "Admin API: the change is no longer PROPOSED (rejected, expired, or applied when "
    "rejecting); `metadata.state` says which.",
    example="changes/01j9zq8m5k3v7t2r4w6y8a0c1e is REJECTED and can no longer be confirmed; "
    "propose it again.",
)
CHANGE_NOT_APPLICABLE = ErrorReason(
    "CHANGE_NOT_APPLICABLE",
    Code.FAILED_PRECONDITION,
    "Admin API: the change cannot be applied as things are now (e.g. the operator already "
    "exists); it stays PROPOSED.",
    example="changes/01j9zq8m5k3v7t2r4w6y8a0c1e cannot be applied: operator 'alice' already "
    "exists. Reject it, or fix what blocks it and confirm again.",
)
WEBHOOK_URL_REFUSED = ErrorReason(
    "WEBHOOK_URL_REFUSED",
    Code.INVALID_ARGUMENT,
    "The webhook URL is not allowed: not `https`, or its host resolves to a private, "
    "loopback, link-local or metadata address, or does not resolve.",
    example_violation=(
        "webhookEndpoint.url",
        "host 'internal.example' resolves to 10.0.0.5, a private address",
    ),
)

CSRF_TOKEN_INVALID = ErrorReason(
    "CSRF_TOKEN_INVALID",
    Code.PERMISSION_DENIED,
    "Portal only (`/portal/...`): a state-changing request without the session's CSRF token "
    "in the `X-CSRF-Token` header, or from another origin; nothing was done.",
    example="This request needs the portal session's CSRF token in the X-CSRF-Token header. "
    "Reload the page and try again.",
)

_COMMON = (INVALID_ARGUMENT, UNAUTHENTICATED, SCOPE_MISSING, RATE_LIMITED, INTERNAL, UNAVAILABLE)
_ADMIN_COMMON = (INVALID_ARGUMENT, UNAUTHENTICATED, ROLE_REQUIRED, INTERNAL, UNAVAILABLE)

METHOD_ERRORS: dict[str, tuple[ErrorReason, ...]] = {
    f"{SERVICE}.CreateWithdrawal": (
        INVALID_ARGUMENT,
        UNKNOWN_CHAIN,
        UNKNOWN_TOKEN,
        TOKEN_DISABLED,
        SYSTEM_ADDRESS,
        AMOUNT_ABOVE_MAXIMUM,
        BODY_TOO_LARGE,
        UNAUTHENTICATED,
        SCOPE_MISSING,
        RATE_LIMITED,
        IDEMPOTENCY_KEY_REUSED,
        CLIENT_REFERENCE_REUSED,
        LIMIT_EXCEEDED,
        INTERNAL,
        UNAVAILABLE,
    ),
    f"{BATCH_SERVICE}.CreateBatch": (
        *_COMMON,
        BATCH_FILE_INVALID,
        BATCH_TOO_LARGE,
        BATCH_ROWS_INVALID,
        IDEMPOTENCY_KEY_REUSED,
        DUPLICATE_FILE,
    ),
    f"{BATCH_SERVICE}.GetBatch": (*_COMMON, NOT_FOUND),
    f"{BATCH_SERVICE}.ListBatches": _COMMON,
    f"{BATCH_SERVICE}.CancelBatch": (*_COMMON, BODY_TOO_LARGE, NOT_FOUND),
    f"{BATCH_SERVICE}.GetBatchReport": (*_COMMON, NOT_FOUND),
    f"{BATCH_SERVICE}.WatchBatch": (*_COMMON, NOT_FOUND),
    f"{SERVICE}.GetWithdrawal": (*_COMMON, NOT_FOUND),
    f"{SERVICE}.ListWithdrawals": _COMMON,
    f"{SERVICE}.ListStateChanges": (*_COMMON, NOT_FOUND),
    f"{SERVICE}.CancelWithdrawal": (
        *_COMMON,
        WITHDRAWAL_NOT_CANCELLABLE,
        BODY_TOO_LARGE,
        NOT_FOUND,
        CONCURRENT_MODIFICATION,
    ),
    f"{SERVICE}.WatchWithdrawal": (*_COMMON, NOT_FOUND),
    f"{WEBHOOK_SERVICE}.CreateWebhookEndpoint": (
        *_COMMON,
        WEBHOOK_URL_REFUSED,
        BODY_TOO_LARGE,
        IDEMPOTENCY_KEY_REUSED,
    ),
    f"{WEBHOOK_SERVICE}.GetWebhookEndpoint": (*_COMMON, NOT_FOUND),
    f"{WEBHOOK_SERVICE}.ListWebhookEndpoints": _COMMON,
    f"{WEBHOOK_SERVICE}.UpdateWebhookEndpoint": (
        *_COMMON,
        WEBHOOK_URL_REFUSED,
        BODY_TOO_LARGE,
        NOT_FOUND,
    ),
    f"{WEBHOOK_SERVICE}.DisableWebhookEndpoint": (*_COMMON, BODY_TOO_LARGE, NOT_FOUND),
    f"{WEBHOOK_SERVICE}.EnableWebhookEndpoint": (*_COMMON, BODY_TOO_LARGE, NOT_FOUND),
    f"{WEBHOOK_SERVICE}.DeleteWebhookEndpoint": (*_COMMON, NOT_FOUND),
    f"{WEBHOOK_SERVICE}.RotateWebhookSecret": (*_COMMON, BODY_TOO_LARGE, NOT_FOUND),
    f"{WEBHOOK_SERVICE}.ListWebhookDeliveryAttempts": (*_COMMON, NOT_FOUND),
    f"{WEBHOOK_SERVICE}.ReplayWebhookEvents": (*_COMMON, BODY_TOO_LARGE, NOT_FOUND),
    f"{ADMIN_SERVICE}.GetOperator": (*_ADMIN_COMMON, NOT_FOUND),
    f"{ADMIN_SERVICE}.ListOperators": _ADMIN_COMMON,
    f"{ADMIN_SERVICE}.CreateChange": (*_ADMIN_COMMON, BODY_TOO_LARGE, IDEMPOTENCY_KEY_REUSED),
    f"{ADMIN_SERVICE}.GetChange": (*_ADMIN_COMMON, NOT_FOUND),
    f"{ADMIN_SERVICE}.ListChanges": _ADMIN_COMMON,
    f"{ADMIN_SERVICE}.ConfirmChange": (
        *_ADMIN_COMMON,
        NOT_FOUND,
        SELF_CONFIRMATION,
        CHANGE_NOT_PENDING,
        CHANGE_NOT_APPLICABLE,
    ),
    f"{ADMIN_SERVICE}.RejectChange": (*_ADMIN_COMMON, NOT_FOUND, CHANGE_NOT_PENDING),
    f"{ADMIN_SERVICE}.CreateOperatorCredential": (*_ADMIN_COMMON, BODY_TOO_LARGE, NOT_FOUND),
    f"{ADMIN_SERVICE}.RevokeOperatorCredential": (*_ADMIN_COMMON, NOT_FOUND),
    f"{ADMIN_SERVICE}.ListAdminAuditEntries": _ADMIN_COMMON,
    f"{ADMIN_SERVICE}.CreateApiKey": (
        *_ADMIN_COMMON,
        BODY_TOO_LARGE,
        NOT_FOUND,
        IDEMPOTENCY_KEY_REUSED,
    ),
    f"{ADMIN_SERVICE}.ListApiKeys": (*_ADMIN_COMMON, NOT_FOUND),
    f"{ADMIN_SERVICE}.RevokeApiKey": (*_ADMIN_COMMON, BODY_TOO_LARGE, NOT_FOUND),
    f"{ADMIN_SERVICE}.ListPayoutPauses": _ADMIN_COMMON,
    f"{ADMIN_SERVICE}.PausePayouts": (*_ADMIN_COMMON, BODY_TOO_LARGE),
    f"{ADMIN_SERVICE}.ResumePayouts": (*_ADMIN_COMMON, BODY_TOO_LARGE),
    f"{ADMIN_SERVICE}.ListTokens": (*_ADMIN_COMMON, NOT_FOUND),
    f"{ADMIN_SERVICE}.UpdateToken": (*_ADMIN_COMMON, BODY_TOO_LARGE, NOT_FOUND),
    # ---- approvals, blocklist, tiers
    f"{ADMIN_SERVICE}.ListPendingApprovals": _ADMIN_COMMON,
    f"{ADMIN_SERVICE}.ApproveWithdrawal": (
        *_ADMIN_COMMON,
        BODY_TOO_LARGE,
        NOT_FOUND,
        SELF_APPROVAL,
        NOT_PENDING_APPROVAL,
        CONCURRENT_MODIFICATION,
    ),
    f"{ADMIN_SERVICE}.RejectWithdrawal": (
        *_ADMIN_COMMON,
        BODY_TOO_LARGE,
        NOT_FOUND,
        NOT_PENDING_APPROVAL,
        CONCURRENT_MODIFICATION,
    ),
    f"{ADMIN_SERVICE}.ApproveBatch": (
        *_ADMIN_COMMON,
        BODY_TOO_LARGE,
        NOT_FOUND,
        NOT_PENDING_APPROVAL,
        CONCURRENT_MODIFICATION,
    ),
    f"{ADMIN_SERVICE}.RejectBatch": (
        *_ADMIN_COMMON,
        BODY_TOO_LARGE,
        NOT_FOUND,
        NOT_PENDING_APPROVAL,
        CONCURRENT_MODIFICATION,
    ),
    f"{ADMIN_SERVICE}.ListBlockedAddresses": _ADMIN_COMMON,
    f"{ADMIN_SERVICE}.BlockAddress": (*_ADMIN_COMMON, BODY_TOO_LARGE),
    f"{ADMIN_SERVICE}.UnblockAddress": _ADMIN_COMMON,
    f"{ADMIN_SERVICE}.ListTiers": _ADMIN_COMMON,
}
"""Every reason each RPC can answer with (by method full name); REST-only ones say so."""

__all__ = [
    "ADMIN_SERVICE",
    "AMOUNT_ABOVE_MAXIMUM",
    "BATCH_FILE_INVALID",
    "BATCH_ROWS_INVALID",
    "BATCH_SERVICE",
    "BATCH_TOO_LARGE",
    "BODY_TOO_LARGE",
    "CHANGE_NOT_APPLICABLE",
    "CHANGE_NOT_PENDING",
    "CLIENT_REFERENCE_REUSED",
    "CONCURRENT_MODIFICATION",
    "CSRF_TOKEN_INVALID",
    "DUPLICATE_FILE",
    "IDEMPOTENCY_KEY_REUSED",
    "LIMIT_EXCEEDED",
    "METHOD_ERRORS",
    "METHOD_NOT_ALLOWED",
    "NOT_PENDING_APPROVAL",
    "RATE_LIMITED",
    "ROLE_REQUIRED",
    "SCOPE_MISSING",
    "SELF_APPROVAL",
    "SELF_CONFIRMATION",
    "SYSTEM_ADDRESS",
    "TOKEN_DISABLED",
    "UNKNOWN_CHAIN",
    "UNKNOWN_TOKEN",
    "WEBHOOK_SERVICE",
    "WEBHOOK_URL_REFUSED",
    "WITHDRAWAL_NOT_CANCELLABLE",
    "abort",
    "to_api_error",
]
