/** Typed errors from the gateway's JSON error bodies (google.rpc details). */
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  ApiError,
  AssetWithdrawal,
  AssetWithdrawalError,
  AuthenticationError,
  type FetchLike,
  IdempotencyKeyReusedError,
  InvalidArgumentError,
  NotFoundError,
  RateLimitError,
  WithdrawalNotCancellableError,
} from "@assetwithdrawal/sdk";

import { BASE_URL, client, env, freshAddress, unique } from "./helpers.js";

describe("errors", () => {
  test("bad fields are an InvalidArgumentError naming every field", async () => {
    const error = await client()
      .withdrawals.create({ token: "USDC", recipientAddress: "0x52908400098527886E0F7030069857D2E4169EE8", amount: "1.1234567" })
      .catch((e: unknown) => e);
    assert.ok(error instanceof InvalidArgumentError, String(error));
    assert.ok(error instanceof ApiError && error instanceof AssetWithdrawalError);
    assert.equal(error.httpStatus, 400);
    assert.equal(error.status, "INVALID_ARGUMENT");
    assert.equal(error.reason, "INVALID_ARGUMENT");
    assert.equal(error.domain, "withdrawals.assetwithdrawal.dev");
    assert.deepEqual(error.fieldViolations.map((v) => v.field).sort(), ["amount", "recipientAddress"]);
    assert.ok(error.traceId, "the x-trace-id is kept");
  });

  test("an unknown withdrawal is a NotFoundError", async () => {
    await assert.rejects(client().withdrawals.get("withdrawals/01jzzzzzzzzzzzzzzzzzzzzzzz"), (e: unknown) => {
      assert.ok(e instanceof NotFoundError);
      assert.equal(e.reason, "NOT_FOUND");
      return true;
    });
  });

  test("a key reused for another body is an IdempotencyKeyReusedError with the original", async () => {
    const aw = client();
    const key = unique("sdk-key");
    const first = await aw.withdrawals.create({ token: "USDC", recipientAddress: freshAddress(), amount: "1" }, { idempotencyKey: key });
    await assert.rejects(
      aw.withdrawals.create({ token: "USDC", recipientAddress: freshAddress(), amount: "2" }, { idempotencyKey: key }),
      (e: unknown) => {
        assert.ok(e instanceof IdempotencyKeyReusedError);
        assert.equal(e.httpStatus, 409);
        assert.equal(e.metadata.withdrawal, first.name);
        return true;
      },
    );
  });

  test("an unknown API key is an AuthenticationError", async () => {
    const aw = new AssetWithdrawal({ apiKey: "awk_00000000_unknown", baseUrl: BASE_URL() });
    await assert.rejects(aw.withdrawals.list().toArray(), AuthenticationError);
  });

  test("cancelling after payout is a WithdrawalNotCancellableError; before, it cancels", async () => {
    const aw = client();
    const w = await aw.withdrawals.create({ token: "USDC", recipientAddress: freshAddress(), amount: "1.25" });
    const attempt = await aw.withdrawals.cancel(w.name ?? "", { reason: "sdk test" }).catch((e: unknown) => e);
    if (attempt instanceof ApiError) {
      assert.ok(attempt instanceof WithdrawalNotCancellableError, String(attempt));
    } else {
      assert.equal((attempt as { state?: string }).state, "STATE_CANCELLED");
    }
  });

  test("429 waits Retry-After and retries; with one attempt it is a RateLimitError", async () => {
    const statuses: number[] = [];
    const recording: FetchLike = async (input, init) => {
      const response = await fetch(input, init);
      statuses.push(response.status);
      return response;
    };
    const limited = new AssetWithdrawal({ apiKey: env("ASSETWITHDRAWAL_LIMITED_API_KEY"), baseUrl: BASE_URL(), fetch: recording });
    await limited.withdrawals.list({ page_size: 1 }).pages().next(); // takes the one-request burst
    const started = Date.now();
    await limited.withdrawals.list({ page_size: 1 }).pages().next();
    assert.ok(statuses.includes(429), `a 429 was answered: ${statuses}`);
    assert.equal(statuses.at(-1), 200);
    assert.ok(Date.now() - started >= 300, "it waited as Retry-After said");
    // maxAttempts 1: the first refusal is the answer
    const once = new AssetWithdrawal({ apiKey: env("ASSETWITHDRAWAL_LIMITED_API_KEY"), baseUrl: BASE_URL(), maxAttempts: 1 });
    const refusals: unknown[] = [];
    for (let i = 0; i < 3; i++) refusals.push(await once.withdrawals.list({ page_size: 1 }).pages().next().catch((e: unknown) => e));
    const limitedError = refusals.find((e) => e instanceof RateLimitError);
    assert.ok(limitedError instanceof RateLimitError, `a RateLimitError among ${refusals.map(String)}`);
    assert.equal(limitedError.reason, "RATE_LIMITED");
    assert.ok((limitedError.retryAfterSeconds ?? 0) > 0);
  });
});
