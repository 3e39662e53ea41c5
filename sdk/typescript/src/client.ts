/**
 * The client: `new AssetWithdrawal({ apiKey, baseUrl })`, with `withdrawals`, `batches` and
 * `webhookEndpoints`. REST/JSON over `fetch`, every request retried per `http.ts`.
 */
import { randomUUID } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { stat } from "node:fs/promises";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";

import { ApiError, AssetWithdrawalError, ConnectionError, errorFromBody } from "./errors.js";
import { type Body, type ClientOptions, type Request, type RequestOptions, Transport, sleep } from "./http.js";
import { ndjsonLines } from "./ndjson.js";
import { PagedList } from "./pagination.js";
import {
  type Batch,
  type BatchPolicy,
  type BatchReport,
  type BatchReportRow,
  type GetBatchReportParams,
  type ListStateChangesParams,
  type ListStateChangesResponse,
  type ListWithdrawalsParams,
  type ListWithdrawalsResponse,
  type StateChange,
  TERMINAL_STATES,
  type WatchEvent,
  type WebhookEndpoint,
  type WebhookEndpointCreateParams,
  type Withdrawal,
  type WithdrawalCreateParams,
} from "./types.js";

export interface IdempotentRequestOptions extends RequestOptions {
  /** The idempotency key; a new UUID per call by default, the same on each of its retries. */
  idempotencyKey?: string;
}

export interface WatchOptions {
  /** Start by replaying every change after this version instead of a snapshot (0: all). */
  resumeAfterVersion?: string | number | bigint;
  /** Reconnections in a row without an event before the last error is raised (default 5). */
  maxReconnectAttempts?: number;
  /** Called before each reconnection, with the version it resumes after. */
  onReconnect?: (info: { resumeAfterVersion: string | undefined; error: unknown }) => void;
  /** Stops the watch: the iterator then throws the signal's reason. */
  signal?: AbortSignal;
  /** Time limit for each connection's answer headers (default: the client's `timeoutMs`). */
  timeoutMs?: number;
}

export interface UploadProgress {
  /** Bytes of the file handed to the connection so far. */
  loaded: number;
  /** The file's size in bytes. */
  total: number;
}

export interface BatchCreateOptions extends IdempotentRequestOptions {
  /** REJECT_ALL (the default): any bad row rejects the file; ACCEPT_VALID stores the good rows. */
  policy?: BatchPolicy;
  /** Accept a file whose content equals an earlier batch's (else 409 DUPLICATE_FILE). */
  allowDuplicateContent?: boolean;
  /** Called as the file's bytes are sent (restarting from 0 on a retry). */
  onProgress?: (progress: UploadProgress) => void;
}

/** `withdrawals/{id}` or `{id}` -> the REST path `/v1/withdrawals/{id}`. */
function resourcePath(collection: string, nameOrId: string): string {
  const prefix = `${collection}/`;
  const id = nameOrId.startsWith(prefix) ? nameOrId.slice(prefix.length) : nameOrId;
  if (id === "" || id.includes("/")) {
    throw new AssetWithdrawalError(`'${nameOrId}' is not a ${collection} name (${prefix}{id}) or id`);
  }
  return `/v1/${collection}/${encodeURIComponent(id)}`;
}

function isErrorLine(line: unknown): line is { error: { code?: number } } {
  return typeof line === "object" && line !== null && "error" in line;
}

/** Whether a failure of a stream should end in a reconnection rather than an error. */
function reconnectable(error: unknown): boolean {
  if (error instanceof ApiError) return [429, 502, 503, 504].includes(error.httpStatus);
  if (error instanceof AssetWithdrawalError) return error instanceof ConnectionError;
  return error instanceof TypeError || error instanceof SyntaxError; // a dropped body, a cut line
}

/**
 * Reads newline-delimited JSON messages from `open`, reconnecting after a dropped connection
 * (with backoff) until `done(message)` or a non-retryable error. `open(resume)` is given the
 * last message received (undefined before the first).
 */
async function* reconnecting<T>(
  transport: Transport,
  request: (last: T | undefined) => Request,
  done: (message: T) => boolean,
  options: WatchOptions,
  resumeOf: (last: T | undefined) => string | undefined,
): AsyncGenerator<T> {
  const maxFailures = Math.max(1, options.maxReconnectAttempts ?? 5);
  let last: T | undefined;
  let failures = 0;
  for (;;) {
    let failure: unknown = undefined;
    try {
      const response = await transport.open(request(last), {
        maxAttempts: 1,
        signal: options.signal,
        timeoutMs: options.timeoutMs,
      });
      if (response.body === null) throw new ConnectionError("the stream has no body");
      for await (const line of ndjsonLines(response.body)) {
        if (isErrorLine(line)) throw errorFromBody(line.error.code ?? 500, line, "");
        last = line as T;
        failures = 0;
        yield last;
        if (options.signal?.aborted) throw options.signal.reason;
        if (done(last)) return;
      }
      failure = new ConnectionError("the stream ended before a terminal state");
    } catch (error) {
      if (options.signal?.aborted) throw options.signal.reason;
      if (!reconnectable(error)) throw error;
      failure = error;
    }
    failures += 1;
    if (failures > maxFailures) throw failure;
    options.onReconnect?.({ resumeAfterVersion: resumeOf(last), error: failure });
    const after = failure instanceof ApiError ? failure.retryAfterSeconds : undefined;
    await sleep(after !== undefined ? after * 1000 : transport.backoffMs(failures), options.signal);
  }
}

export class Withdrawals {
  constructor(private readonly t: Transport) {}

  /**
   * Creates a withdrawal. An `Idempotency-Key` (a new UUID unless given) is sent and kept on
   * every retry, so a retried call never creates a second withdrawal.
   */
  create(params: WithdrawalCreateParams, options: IdempotentRequestOptions = {}): Promise<Withdrawal> {
    const key = options.idempotencyKey ?? randomUUID();
    return this.t.json<Withdrawal>(
      { method: "POST", path: "/v1/withdrawals", json: params, headers: { "idempotency-key": key } },
      options,
    );
  }

  /** Gets one withdrawal by name (`withdrawals/{id}`) or id. */
  get(name: string, options: RequestOptions = {}): Promise<Withdrawal> {
    return this.t.json<Withdrawal>({ method: "GET", path: resourcePath("withdrawals", name) }, options);
  }

  /** Every withdrawal matching `filter` (AIP-160), newest first, page after page. */
  list(params: Omit<ListWithdrawalsParams, "page_token"> = {}, options: RequestOptions = {}): PagedList<Withdrawal> {
    return new PagedList(async (pageToken) => {
      const page = await this.t.json<ListWithdrawalsResponse>(
        { method: "GET", path: "/v1/withdrawals", query: { ...params, page_token: pageToken } },
        options,
      );
      return { items: page.withdrawals ?? [], nextPageToken: page.nextPageToken ?? "" };
    });
  }

  /** The withdrawal's audit trail, oldest first, page after page. */
  listStateChanges(
    name: string,
    params: Omit<ListStateChangesParams, "page_token"> = {},
    options: RequestOptions = {},
  ): PagedList<StateChange> {
    const path = `${resourcePath("withdrawals", name)}/stateChanges`;
    return new PagedList(async (pageToken) => {
      const page = await this.t.json<ListStateChangesResponse>(
        { method: "GET", path, query: { ...params, page_token: pageToken } },
        options,
      );
      return { items: page.stateChanges ?? [], nextPageToken: page.nextPageToken ?? "" };
    });
  }

  /** Cancels a withdrawal not yet placed in a payout (else `WithdrawalNotCancellableError`). */
  cancel(name: string, params: { reason?: string } = {}, options: RequestOptions = {}): Promise<Withdrawal> {
    return this.t.json<Withdrawal>(
      { method: "POST", path: `${resourcePath("withdrawals", name)}:cancel`, json: params },
      options,
    );
  }

  /**
   * The withdrawal's events: a snapshot, then every state change, ending after the terminal
   * one. A dropped connection is reopened with `resumeAfterVersion` set to the last event's
   * version, so no event is lost or repeated.
   */
  watch(name: string, options: WatchOptions = {}): AsyncGenerator<WatchEvent> {
    const path = `${resourcePath("withdrawals", name)}:watch`;
    const initial = options.resumeAfterVersion === undefined ? undefined : String(options.resumeAfterVersion);
    const resumeOf = (last: WatchEvent | undefined): string | undefined => last?.withdrawal?.version ?? initial;
    return reconnecting<WatchEvent>(
      this.t,
      (last) => ({
        method: "GET",
        path,
        query: { resume_after_version: resumeOf(last) },
        accept: "application/x-ndjson",
      }),
      (event) => event.withdrawal?.state !== undefined && TERMINAL_STATES.has(event.withdrawal.state),
      options,
      resumeOf,
    );
  }
}

export type BatchSource = { path: string } | { content: string | Uint8Array };

export class Batches {
  constructor(private readonly t: Transport) {}

  /**
   * Uploads a CSV file (`{ path }`, streamed from disk, or `{ content }`) as a batch. The
   * `Idempotency-Key` (a new UUID unless given) is kept across retries: pass your own, e.g.
   * derived from the file, to be safe across restarts of your process too.
   */
  async create(source: BatchSource, options: BatchCreateOptions = {}): Promise<Batch> {
    const key = options.idempotencyKey ?? randomUUID();
    let body: () => Body;
    if ("path" in source) {
      const total = (await stat(source.path)).size;
      body = () => fileStream(source.path, total, options.onProgress);
    } else {
      const bytes = new Uint8Array(
        typeof source.content === "string" ? new TextEncoder().encode(source.content) : source.content,
      );
      body = () => {
        options.onProgress?.({ loaded: bytes.byteLength, total: bytes.byteLength });
        return bytes;
      };
    }
    return this.t.json<Batch>(
      {
        method: "POST",
        path: "/v1/batches",
        query: { policy: options.policy, allowDuplicateContent: options.allowDuplicateContent },
        headers: { "idempotency-key": key },
        body,
        contentType: "text/csv",
      },
      options,
    );
  }

  get(name: string, options: RequestOptions = {}): Promise<Batch> {
    return this.t.json<Batch>({ method: "GET", path: resourcePath("batches", name) }, options);
  }

  /** Every batch, newest first. */
  list(params: { page_size?: number } = {}, options: RequestOptions = {}): PagedList<Batch> {
    return new PagedList(async (pageToken) => {
      const page = await this.t.json<{ batches?: Batch[]; nextPageToken?: string }>(
        { method: "GET", path: "/v1/batches", query: { ...params, page_token: pageToken } },
        options,
      );
      return { items: page.batches ?? [], nextPageToken: page.nextPageToken ?? "" };
    });
  }

  /** Cancels every withdrawal of the batch that can still be cancelled. */
  cancel(name: string, params: { reason?: string } = {}, options: RequestOptions = {}): Promise<Batch> {
    return this.t.json<Batch>({ method: "POST", path: `${resourcePath("batches", name)}:cancel`, json: params }, options);
  }

  /** The report's rows (one per line of the file, in line order), page after page. */
  report(
    name: string,
    params: Omit<GetBatchReportParams, "page_token"> = {},
    options: RequestOptions = {},
  ): PagedList<BatchReportRow> {
    const path = `${resourcePath("batches", name.replace(/\/report$/, ""))}/report`;
    return new PagedList(async (pageToken) => {
      const page = await this.t.json<BatchReport>(
        { method: "GET", path, query: { ...params, page_token: pageToken } },
        options,
      );
      return { items: page.rows ?? [], nextPageToken: page.nextPageToken ?? "" };
    });
  }

  /** The whole report as CSV text (`Accept: text/csv`). */
  reportCsv(name: string, options: RequestOptions = {}): Promise<string> {
    const path = `${resourcePath("batches", name.replace(/\/report$/, ""))}/report`;
    return this.t.text({ method: "GET", path, accept: "text/csv" }, options);
  }

  /** Downloads the report as CSV into the file at `destination`; answers the bytes written. */
  async downloadReport(name: string, destination: string, options: RequestOptions = {}): Promise<number> {
    const path = `${resourcePath("batches", name.replace(/\/report$/, ""))}/report`;
    const response = await this.t.open({ method: "GET", path, accept: "text/csv" }, options);
    if (response.body === null) return 0;
    const source = Readable.fromWeb(response.body as import("node:stream/web").ReadableStream<Uint8Array>);
    let written = 0;
    source.on("data", (chunk: Buffer) => {
      written += chunk.length;
    });
    await pipeline(source, createWriteStream(destination));
    return written;
  }

  /** The batch now and whenever its counts change, until it is no longer PROCESSING. */
  watch(name: string, options: Omit<WatchOptions, "resumeAfterVersion"> = {}): AsyncGenerator<Batch> {
    const path = `${resourcePath("batches", name)}:watch`;
    return reconnecting<Batch>(
      this.t,
      () => ({ method: "GET", path, accept: "application/x-ndjson" }),
      (batch) => batch.state !== undefined && batch.state !== "BATCH_STATE_PROCESSING",
      options,
      () => undefined,
    );
  }
}

/** The file at `path` as a stream of 64 KiB chunks, reporting progress as they are taken. */
function fileStream(path: string, total: number, onProgress?: (p: UploadProgress) => void): ReadableStream<Uint8Array> {
  const chunks = createReadStream(path, { highWaterMark: 64 * 1024 })[Symbol.asyncIterator]();
  let loaded = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const next = (await chunks.next()) as IteratorResult<Buffer>;
      if (next.done) {
        controller.close();
        return;
      }
      loaded += next.value.length;
      controller.enqueue(new Uint8Array(next.value.buffer, next.value.byteOffset, next.value.length));
      onProgress?.({ loaded, total });
    },
    async cancel() {
      await chunks.return?.();
    },
  });
}

export class WebhookEndpoints {
  constructor(private readonly t: Transport) {}

  /** Registers an endpoint; the answer holds its signing `secret` (shown this once). */
  create(params: WebhookEndpointCreateParams, options: IdempotentRequestOptions = {}): Promise<WebhookEndpoint> {
    const key = options.idempotencyKey ?? randomUUID();
    return this.t.json<WebhookEndpoint>(
      { method: "POST", path: "/v1/webhookEndpoints", json: params, headers: { "idempotency-key": key } },
      options,
    );
  }

  get(name: string, options: RequestOptions = {}): Promise<WebhookEndpoint> {
    return this.t.json<WebhookEndpoint>({ method: "GET", path: resourcePath("webhookEndpoints", name) }, options);
  }

  list(options: RequestOptions = {}): PagedList<WebhookEndpoint> {
    return new PagedList(async (pageToken) => {
      const page = await this.t.json<{ webhookEndpoints?: WebhookEndpoint[]; nextPageToken?: string }>(
        { method: "GET", path: "/v1/webhookEndpoints", query: { page_token: pageToken } },
        options,
      );
      return { items: page.webhookEndpoints ?? [], nextPageToken: page.nextPageToken ?? "" };
    });
  }

  /** A new secret; the old one keeps signing for `overlapSeconds` (default 86400). Not
   * idempotent, so never retried after it may have reached the gateway (only after a 429). */
  rotateSecret(name: string, params: { overlapSeconds?: number } = {}, options: RequestOptions = {}): Promise<WebhookEndpoint> {
    return this.t.json<WebhookEndpoint>(
      {
        method: "POST",
        path: `${resourcePath("webhookEndpoints", name)}:rotateSecret`,
        json: params,
        repeatable: false, // a repeat would rotate again and end the secret still in use
      },
      options,
    );
  }

  async delete(name: string, options: RequestOptions = {}): Promise<void> {
    await this.t.json<unknown>({ method: "DELETE", path: resourcePath("webhookEndpoints", name) }, options);
  }
}

export type { ClientOptions, RequestOptions } from "./http.js";

/** The Asset Withdrawal System API client. */
export class AssetWithdrawal {
  readonly withdrawals: Withdrawals;
  readonly batches: Batches;
  readonly webhookEndpoints: WebhookEndpoints;

  constructor(options: ClientOptions) {
    const transport = new Transport(options);
    this.withdrawals = new Withdrawals(transport);
    this.batches = new Batches(transport);
    this.webhookEndpoints = new WebhookEndpoints(transport);
  }
}
