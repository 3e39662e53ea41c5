/**
 * The transport: one `fetch` per attempt, retried the way Stripe's SDKs retry. Network errors
 * and timeouts, 502/503/504 and 429 are retried up to `maxAttempts` in all, after an
 * exponential backoff with jitter, or after the `Retry-After` the gateway sent (429). The
 * requests retried so are safe to repeat: reads and idempotent methods are, and every create
 * carries an `Idempotency-Key` that stays the same across the attempts of one call. The one
 * method that is not (RotateWebhookSecret) is retried only after a 429, which did nothing.
 */
import { ApiError, AssetWithdrawalError, ConnectionError, TimeoutError, errorFromBody } from "./errors.js";
import { VERSION } from "./version.js";

/** What `fetch` takes as a body (Node's types have no global `BodyInit`). */
export type Body = NonNullable<RequestInit["body"]>;

export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

export interface ClientOptions {
  /** The partner API key, `awk_<8 hex>_<secret>`. */
  apiKey: string;
  /** The gateway's REST base URL, e.g. `https://api.example.com` (no trailing `/v1`). */
  baseUrl: string;
  /** Attempts per call in all, the first included (default 3; 1 disables retries). */
  maxAttempts?: number;
  /** One attempt's time limit in milliseconds, until the whole answer is read (default 30 s;
   * for streams, until the answer's headers). */
  timeoutMs?: number;
  /** The first retry's delay before jitter (default 500 ms); doubles per retry. */
  initialRetryDelayMs?: number;
  /** The longest backoff delay (default 8 s). */
  maxRetryDelayMs?: number;
  /** A `Retry-After` longer than this (default 60 s) is not waited for: the error is raised. */
  maxRetryAfterSeconds?: number;
  /** A fetch of your own (a proxy agent, instrumentation); the global `fetch` by default. */
  fetch?: FetchLike;
}

export interface RequestOptions {
  /** Overrides the client's `maxAttempts` for this call. */
  maxAttempts?: number;
  /** Overrides the client's `timeoutMs` for this call (per attempt). */
  timeoutMs?: number;
  /** Aborts the call (no retry after it). */
  signal?: AbortSignal;
}

export interface Request {
  method: "GET" | "POST" | "PATCH" | "DELETE";
  path: string;
  query?: Record<string, string | number | boolean | undefined>;
  json?: unknown;
  /** A body made anew for each attempt (a file stream); `contentType` says what it is. */
  body?: () => Body;
  contentType?: string;
  headers?: Record<string, string>;
  accept?: string;
  /** False for a call that is not safe to repeat (RotateWebhookSecret): only a 429, which
   * did nothing, is retried; a lost answer or a 5xx is raised, never sent again. */
  repeatable?: boolean;
  /** Answer the response with its body unread (streams); the timeout ends at the headers. */
  stream?: boolean;
}

const RETRYABLE_STATUS = new Set([429, 502, 503, 504]);

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

export class Transport {
  readonly baseUrl: string;
  readonly maxAttempts: number;
  readonly timeoutMs: number;
  private readonly apiKey: string;
  private readonly initialDelay: number;
  private readonly maxDelay: number;
  private readonly maxRetryAfter: number;
  private readonly fetchImpl: FetchLike;

  constructor(options: ClientOptions) {
    if (!options.apiKey) throw new AssetWithdrawalError("apiKey is required");
    if (!options.baseUrl) throw new AssetWithdrawalError("baseUrl is required");
    this.apiKey = options.apiKey;
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.maxAttempts = Math.max(1, options.maxAttempts ?? 3);
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.initialDelay = options.initialRetryDelayMs ?? 500;
    this.maxDelay = options.maxRetryDelayMs ?? 8_000;
    this.maxRetryAfter = options.maxRetryAfterSeconds ?? 60;
    this.fetchImpl = options.fetch ?? ((input, init) => fetch(input, init));
  }

  /** The backoff before retry number `retry` (1 for the first): exponential, jittered to
   * between half and all of it, so that many clients do not retry in step. */
  backoffMs(retry: number): number {
    const ceiling = Math.min(this.maxDelay, this.initialDelay * 2 ** (retry - 1));
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  url(path: string, query?: Request["query"]): string {
    const url = new URL(this.baseUrl + path);
    for (const [key, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== "") url.searchParams.set(key, String(value));
    }
    return url.toString();
  }

  /** The JSON answer of `request`, after retries; throws an `AssetWithdrawalError`. */
  async json<T>(request: Request, options: RequestOptions = {}): Promise<T> {
    const { text } = await this.send(request, options);
    try {
      return (text === "" ? {} : JSON.parse(text)) as T;
    } catch (error) {
      throw new AssetWithdrawalError(`the answer to ${request.method} ${request.path} is not JSON`, { cause: error });
    }
  }

  /** The text answer of `request` (e.g. CSV), after retries. */
  async text(request: Request, options: RequestOptions = {}): Promise<string> {
    return (await this.send(request, options)).text;
  }

  /** A successful response whose body is still to be read (a stream), after retries. */
  async open(request: Request, options: RequestOptions = {}): Promise<Response> {
    return (await this.send({ ...request, stream: true }, options)).response;
  }

  private async send(request: Request, options: RequestOptions): Promise<{ response: Response; text: string }> {
    const attempts = Math.max(1, options.maxAttempts ?? this.maxAttempts);
    for (let attempt = 1; ; attempt++) {
      const outcome = await this.attempt(request, options);
      if (!(outcome instanceof AssetWithdrawalError)) return outcome;
      let delay: number;
      const rateLimited = outcome instanceof ApiError && outcome.httpStatus === 429;
      if (request.repeatable === false && !rateLimited) throw outcome;
      if (outcome instanceof ConnectionError) {
        delay = this.backoffMs(attempt);
      } else if (outcome instanceof ApiError && RETRYABLE_STATUS.has(outcome.httpStatus)) {
        const after = outcome.retryAfterSeconds;
        if (after !== undefined && after > this.maxRetryAfter) throw outcome;
        delay = after !== undefined ? after * 1000 : this.backoffMs(attempt);
      } else {
        throw outcome;
      }
      if (attempt >= attempts) throw outcome;
      await sleep(delay, options.signal);
    }
  }

  /** One attempt: the response and its text, or the error to retry or raise. */
  private async attempt(
    request: Request,
    options: RequestOptions,
  ): Promise<{ response: Response; text: string } | AssetWithdrawalError> {
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort(new TimeoutError(`no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    const onAbort = (): void => controller.abort(options.signal?.reason);
    if (options.signal?.aborted) onAbort();
    options.signal?.addEventListener("abort", onAbort, { once: true });
    const headers: Record<string, string> = {
      authorization: `Bearer ${this.apiKey}`,
      accept: request.accept ?? "application/json",
      "user-agent": `assetwithdrawal-sdk-typescript/${VERSION} node/${process.versions.node}`,
      ...request.headers,
    };
    const init: RequestInit & { duplex?: "half" } = { method: request.method, headers, signal: controller.signal };
    if (request.json !== undefined) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(request.json);
    } else if (request.body !== undefined) {
      headers["content-type"] = request.contentType ?? "application/octet-stream";
      init.body = request.body();
      init.duplex = "half"; // a stream body: Node's fetch requires it
    }
    let streaming = false;
    try {
      const response = await this.fetchImpl(this.url(request.path, request.query), init);
      if (response.ok && request.stream) {
        streaming = true; // the caller's signal still aborts the body being read
        return { response, text: "" };
      }
      const text = await response.text();
      if (response.ok) return { response, text };
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
      return errorFromBody(response.status, parsed, text, response.headers);
    } catch (error) {
      if (options.signal?.aborted) throw options.signal.reason;
      if (timedOut) return new TimeoutError(`no answer within ${timeoutMs} ms`, { cause: error });
      if (error instanceof AssetWithdrawalError) throw error;
      const detail = error instanceof Error ? (error.cause instanceof Error ? error.cause.message : error.message) : String(error);
      return new ConnectionError(`the request to ${request.method} ${request.path} got no answer: ${detail}`, {
        cause: error,
      });
    } finally {
      clearTimeout(timer);
      if (!streaming) options.signal?.removeEventListener("abort", onAbort);
    }
  }
}
