/**
 * Typed errors. Every failure the SDK raises is an `AssetWithdrawalError`; an answer of the API
 * is an `ApiError` subclass chosen by the status (and, for the common ones, the ErrorInfo
 * `reason`), carrying the google.rpc details of the JSON error body: `reason`, `domain`,
 * `metadata` (ErrorInfo) and `fieldViolations` (BadRequest). Match on the class or on `reason`,
 * never on the message.
 */
import type { ErrorBody, FieldViolation } from "./types.js";

/** The root of every error this SDK raises. */
export class AssetWithdrawalError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The request did not get an answer: a refused or dropped connection, or a timeout. */
export class ConnectionError extends AssetWithdrawalError {}

/** No answer within the attempt's `timeoutMs`. */
export class TimeoutError extends ConnectionError {}

/** A webhook's signature, timestamp or headers are not valid: do not trust its body. */
export class WebhookVerificationError extends AssetWithdrawalError {}

export interface ApiErrorFields {
  /** HTTP status of the answer. */
  httpStatus: number;
  /** Canonical code name, e.g. `INVALID_ARGUMENT`. */
  status: string;
  /** ErrorInfo reason, e.g. `IDEMPOTENCY_KEY_REUSED`; the status when the body had none. */
  reason: string;
  domain: string;
  metadata: Readonly<Record<string, string>>;
  fieldViolations: readonly FieldViolation[];
  /** The gateway's `x-trace-id`: quote it when asking for help. */
  traceId: string | undefined;
  /** Seconds the gateway asked to wait (`Retry-After`), when it did. */
  retryAfterSeconds: number | undefined;
  /** The parsed JSON error body, or undefined when the body was not one. */
  body: ErrorBody | undefined;
}

/** The API answered with an error (a google.rpc.Status as JSON). */
export class ApiError extends AssetWithdrawalError implements ApiErrorFields {
  readonly httpStatus: number;
  readonly status: string;
  readonly reason: string;
  readonly domain: string;
  readonly metadata: Readonly<Record<string, string>>;
  readonly fieldViolations: readonly FieldViolation[];
  readonly traceId: string | undefined;
  readonly retryAfterSeconds: number | undefined;
  readonly body: ErrorBody | undefined;

  constructor(message: string, fields: ApiErrorFields) {
    super(message);
    this.httpStatus = fields.httpStatus;
    this.status = fields.status;
    this.reason = fields.reason;
    this.domain = fields.domain;
    this.metadata = fields.metadata;
    this.fieldViolations = fields.fieldViolations;
    this.traceId = fields.traceId;
    this.retryAfterSeconds = fields.retryAfterSeconds;
    this.body = fields.body;
  }
}

/** 400 INVALID_ARGUMENT: fix the fields named in `fieldViolations`. */
export class InvalidArgumentError extends ApiError {}
/** 400 FAILED_PRECONDITION: the request is valid but the system's state refuses it now. */
export class FailedPreconditionError extends ApiError {}
/** `LIMIT_EXCEEDED`: a limit refused the create (`metadata.limit`); nothing was stored. */
export class LimitExceededError extends FailedPreconditionError {}
/** `WITHDRAWAL_NOT_CANCELLABLE`: it is already in a payout transaction (`metadata.state`). */
export class WithdrawalNotCancellableError extends FailedPreconditionError {}
/** 401: the API key is missing, malformed, unknown or revoked. */
export class AuthenticationError extends ApiError {}
/** 403: the key lacks a scope (`metadata.scope`). */
export class PermissionDeniedError extends ApiError {}
/** 404: no such resource for this key. */
export class NotFoundError extends ApiError {}
/** 409 ALREADY_EXISTS. */
export class AlreadyExistsError extends ApiError {}
/** `IDEMPOTENCY_KEY_REUSED`: the key was used for another body (`metadata.withdrawal`). */
export class IdempotencyKeyReusedError extends AlreadyExistsError {}
/** 409 ABORTED (`CONCURRENT_MODIFICATION`): retry. */
export class ConflictError extends ApiError {}
/** 429 `RATE_LIMITED`: over the key's rate limit; nothing was done (`retryAfterSeconds`). */
export class RateLimitError extends ApiError {}
/** 5xx: the server failed or is unavailable; retrying with the same idempotency key is safe. */
export class ServerError extends ApiError {}

type ApiErrorClass = new (message: string, fields: ApiErrorFields) => ApiError;

const BY_REASON: Readonly<Record<string, ApiErrorClass>> = {
  IDEMPOTENCY_KEY_REUSED: IdempotencyKeyReusedError,
  LIMIT_EXCEEDED: LimitExceededError,
  WITHDRAWAL_NOT_CANCELLABLE: WithdrawalNotCancellableError,
  RATE_LIMITED: RateLimitError,
};

const BY_STATUS: Readonly<Record<string, ApiErrorClass>> = {
  INVALID_ARGUMENT: InvalidArgumentError,
  OUT_OF_RANGE: InvalidArgumentError,
  FAILED_PRECONDITION: FailedPreconditionError,
  UNAUTHENTICATED: AuthenticationError,
  PERMISSION_DENIED: PermissionDeniedError,
  NOT_FOUND: NotFoundError,
  ALREADY_EXISTS: AlreadyExistsError,
  ABORTED: ConflictError,
  RESOURCE_EXHAUSTED: RateLimitError,
};

const BY_HTTP: Readonly<Record<number, ApiErrorClass>> = {
  400: InvalidArgumentError,
  401: AuthenticationError,
  403: PermissionDeniedError,
  404: NotFoundError,
  409: ConflictError,
  413: InvalidArgumentError,
  429: RateLimitError,
};

const ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo";
const BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest";

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Seconds from a `Retry-After` header (delta-seconds or an HTTP date), else undefined. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (value === null || value.trim() === "") return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, (date - now) / 1000);
}

/**
 * The typed error of an error answer: `parsed` is its JSON body (`{"error": {...}}`) when it
 * was JSON, else undefined (then `text` is used as the message).
 */
export function errorFromBody(
  httpStatus: number,
  parsed: unknown,
  text: string,
  headers?: Headers,
): ApiError {
  const error = isRecord(parsed) && isRecord(parsed.error) ? parsed.error : undefined;
  const details = error !== undefined && Array.isArray(error.details) ? error.details : [];
  const info = details.find((d): d is Record<string, unknown> => isRecord(d) && d["@type"] === ERROR_INFO);
  const badRequest = details.find(
    (d): d is Record<string, unknown> => isRecord(d) && d["@type"] === BAD_REQUEST,
  );
  const status = typeof error?.status === "string" ? error.status : `HTTP_${httpStatus}`;
  const reason = typeof info?.reason === "string" ? info.reason : status;
  const metadata: Record<string, string> = {};
  if (info !== undefined && isRecord(info.metadata)) {
    for (const [key, value] of Object.entries(info.metadata)) metadata[key] = String(value);
  }
  const violations: FieldViolation[] = [];
  if (badRequest !== undefined && Array.isArray(badRequest.fieldViolations)) {
    for (const v of badRequest.fieldViolations) {
      if (isRecord(v)) violations.push({ field: String(v.field ?? ""), description: String(v.description ?? "") });
    }
  }
  const message =
    typeof error?.message === "string" ? error.message : text.trim() || `HTTP ${httpStatus}`;
  const retryAfter =
    parseRetryAfter(headers?.get("retry-after") ?? null) ??
    (metadata.retry_after !== undefined ? parseRetryAfter(metadata.retry_after) : undefined);
  const cls =
    BY_REASON[reason] ??
    BY_STATUS[status] ??
    (httpStatus >= 500 ? ServerError : undefined) ??
    BY_HTTP[httpStatus] ??
    ApiError;
  return new cls(message, {
    httpStatus,
    status,
    reason,
    domain: typeof info?.domain === "string" ? info.domain : "",
    metadata,
    fieldViolations: violations,
    traceId: headers?.get("x-trace-id") ?? metadata.trace_id ?? undefined,
    retryAfterSeconds: retryAfter,
    body: error !== undefined ? (parsed as ErrorBody) : undefined,
  });
}
