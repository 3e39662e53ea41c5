/**
 * The API's types, named: aliases into the types openapi-typescript generated from the
 * gateway's OpenAPI document (`src/generated/openapi.ts`, from `openapi.json`). Regenerate
 * both with `make sdk-typescript-gen`; a drifted copy fails the SDK's tests and `tsc`.
 */
import type { components, operations } from "./generated/openapi.js";

type Schemas = components["schemas"];
type Json<Op extends keyof operations> = operations[Op] extends {
  responses: { 200: { content: { "application/json": infer T } } };
}
  ? T
  : never;
type Query<Op extends keyof operations> = NonNullable<operations[Op]["parameters"]["query"]>;

export type Withdrawal = Schemas["assetwithdrawal.withdrawal.v1.Withdrawal"];
export type WithdrawalState = Schemas["assetwithdrawal.withdrawal.v1.State"];
export type Priority = Schemas["assetwithdrawal.withdrawal.v1.Priority"];
export type StateChange = Schemas["assetwithdrawal.withdrawal.v1.StateChange"];
export type WatchEvent = Schemas["assetwithdrawal.withdrawal.v1.WatchWithdrawalResponse"];
export type ListWithdrawalsResponse = Json<"ListWithdrawals">;
export type ListStateChangesResponse = Json<"ListStateChanges">;
export type Batch = Schemas["assetwithdrawal.withdrawal.v1.Batch"];
export type BatchReport = Schemas["assetwithdrawal.withdrawal.v1.BatchReport"];
export type BatchReportRow = Schemas["assetwithdrawal.withdrawal.v1.BatchReportRow"];
export type BatchPolicy = NonNullable<Query<"CreateBatch">["policy"]>;
export type WebhookEndpoint = Schemas["assetwithdrawal.webhooks.v1.WebhookEndpoint"];
export type WebhookDeliveryAttempt = Schemas["assetwithdrawal.webhooks.v1.WebhookDeliveryAttempt"];
export type ErrorBody = Schemas["Error"];
export type ErrorInfo = Schemas["google.rpc.ErrorInfo"];
export type BadRequest = Schemas["google.rpc.BadRequest"];
export type FieldViolation = BadRequest["fieldViolations"][number];

/** The fields a create takes (the output-only ones are left out). */
export type WithdrawalCreateParams = Pick<
  Withdrawal,
  "token" | "recipientAddress" | "amount" | "chain" | "clientReference" | "priority" | "userRef"
>;
/** The fields of a new webhook endpoint. */
export type WebhookEndpointCreateParams = Pick<WebhookEndpoint, "url" | "eventTypes" | "description">;
/** ListWithdrawals' query: `filter` is AIP-160 (see the API docs), `page_size` the page's size. */
export type ListWithdrawalsParams = Query<"ListWithdrawals">;
export type ListStateChangesParams = Query<"ListStateChanges">;
export type GetBatchReportParams = Query<"GetBatchReport">;

/** States after which a withdrawal never changes again. */
export const TERMINAL_STATES: ReadonlySet<WithdrawalState> = new Set<WithdrawalState>([
  "STATE_COMPLETED",
  "STATE_REJECTED",
  "STATE_CANCELLED",
  "STATE_FAILED",
]);
