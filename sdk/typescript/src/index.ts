export { AssetWithdrawal, Batches, WebhookEndpoints, Withdrawals } from "./client.js";
export type {
  BatchCreateOptions,
  BatchSource,
  ClientOptions,
  IdempotentRequestOptions,
  RequestOptions,
  UploadProgress,
  WatchOptions,
} from "./client.js";
export * from "./errors.js";
export type { FetchLike } from "./http.js";
export { PagedList, type Page } from "./pagination.js";
export * from "./types.js";
export { DEFAULT_TOLERANCE_SECONDS, Webhook, verifyWebhook } from "./webhooks.js";
export type { VerifyOptions, WebhookEvent, WebhookHeaders } from "./webhooks.js";
export { VERSION } from "./version.js";
