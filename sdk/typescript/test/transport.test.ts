/**
 * The transport's retry rules and webhook signing, against a small HTTP server of the test's
 * own that answers what each case needs (statuses the real gateway cannot be made to send on
 * demand: 502/503/504, a 500, a Retry-After beyond the limit).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { type IncomingMessage, type ServerResponse, createServer } from "node:http";
import { describe, test } from "node:test";

import * as esm from "@assetwithdrawal/sdk";
import {
  AssetWithdrawal,
  RateLimitError,
  ServerError,
  VERSION,
  Webhook,
  WebhookVerificationError,
} from "@assetwithdrawal/sdk";

type Handler = (request: IncomingMessage, response: ServerResponse, n: number) => void;

async function serve(handler: Handler): Promise<{ url: string; keys: string[]; close: () => Promise<void> }> {
  const keys: string[] = [];
  const server = createServer((request, response) => {
    keys.push(String(request.headers["idempotency-key"] ?? ""));
    request.resume();
    request.on("end", () => handler(request, response, keys.length));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  assert.ok(address !== null && typeof address !== "string");
  return {
    url: `http://127.0.0.1:${address.port}`,
    keys,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

function status(response: ServerResponse, code: number, headers: Record<string, string> = {}): void {
  const body = JSON.stringify({
    error: {
      code,
      status: code === 429 ? "RESOURCE_EXHAUSTED" : "UNAVAILABLE",
      message: "try later",
      details: [{ "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason: code === 429 ? "RATE_LIMITED" : "UNAVAILABLE", domain: "d" }],
    },
  });
  response.writeHead(code, { "content-type": "application/json", ...headers }).end(body);
}

const WITHDRAWAL = JSON.stringify({ name: "withdrawals/01jaaaaaaaaaaaaaaaaaaaaaaa", state: "STATE_RECEIVED" });
const PARAMS = { token: "USDC", recipientAddress: `0x${"1".repeat(40)}`, amount: "1" };

describe("transport", () => {
  test("502, 503 and 504 are retried with the same Idempotency-Key", async () => {
    const server = await serve((_, response, n) => {
      if (n <= 3) status(response, [502, 503, 504][n - 1] ?? 500);
      else response.writeHead(200, { "content-type": "application/json" }).end(WITHDRAWAL);
    });
    try {
      const aw = new AssetWithdrawal({ apiKey: "awk_x", baseUrl: server.url, maxAttempts: 4, initialRetryDelayMs: 10 });
      const created = await aw.withdrawals.create(PARAMS);
      assert.equal(created.name, "withdrawals/01jaaaaaaaaaaaaaaaaaaaaaaa");
      assert.equal(server.keys.length, 4);
      assert.equal(new Set(server.keys).size, 1);
    } finally {
      await server.close();
    }
  });

  test("retries stop at maxAttempts; a 500 is not retried", async () => {
    const server = await serve((request, response) => status(response, request.url?.includes("fail500") ? 500 : 503));
    try {
      const aw = new AssetWithdrawal({ apiKey: "awk_x", baseUrl: server.url, maxAttempts: 2, initialRetryDelayMs: 10 });
      await assert.rejects(aw.withdrawals.get("withdrawals/x"), (e: unknown) => e instanceof ServerError && e.httpStatus === 503);
      assert.equal(server.keys.length, 2);
      await assert.rejects(aw.withdrawals.get("withdrawals/fail500"), ServerError);
      assert.equal(server.keys.length, 3);
    } finally {
      await server.close();
    }
  });

  test("429 waits Retry-After; one longer than maxRetryAfterSeconds is raised at once", async () => {
    const server = await serve((request, response, n) => {
      if (request.url?.includes("long")) status(response, 429, { "retry-after": "120" });
      else if (n === 1) status(response, 429, { "retry-after": "1" });
      else response.writeHead(200, { "content-type": "application/json" }).end(WITHDRAWAL);
    });
    try {
      const aw = new AssetWithdrawal({ apiKey: "awk_x", baseUrl: server.url, initialRetryDelayMs: 10 });
      const started = Date.now();
      await aw.withdrawals.get("withdrawals/x");
      assert.ok(Date.now() - started >= 950, "waited the second Retry-After asked for");
      await assert.rejects(aw.withdrawals.get("withdrawals/long"), (e: unknown) => e instanceof RateLimitError && e.retryAfterSeconds === 120);
      assert.equal(server.keys.length, 3);
    } finally {
      await server.close();
    }
  });

  test("a secret rotation is not repeated after a 503; after a 429 it is", async () => {
    const server = await serve((_, response, n) => {
      if (n === 1) status(response, 503);
      else if (n === 2) status(response, 429, { "retry-after": "0" });
      else response.writeHead(200, { "content-type": "application/json" }).end('{"name":"webhookEndpoints/e"}');
    });
    try {
      const aw = new AssetWithdrawal({ apiKey: "awk_x", baseUrl: server.url, initialRetryDelayMs: 10 });
      await assert.rejects(aw.webhookEndpoints.rotateSecret("webhookEndpoints/e"), ServerError);
      assert.equal(server.keys.length, 1);
      assert.equal((await aw.webhookEndpoints.rotateSecret("webhookEndpoints/e")).name, "webhookEndpoints/e");
      assert.equal(server.keys.length, 3);
    } finally {
      await server.close();
    }
  });

  test("webhook signatures: every v1 signature of a rotation is accepted", () => {
    const oldHook = new Webhook(`whsec_${Buffer.alloc(32, 1).toString("base64")}`);
    const newHook = new Webhook(`whsec_${Buffer.alloc(32, 2).toString("base64")}`);
    const body = '{"id":"evt_1","type":"withdrawal.received","timestamp":"t","data":{}}';
    const now = Math.floor(Date.now() / 1000);
    const headers = {
      "webhook-id": "evt_1",
      "webhook-timestamp": String(now),
      "webhook-signature": `${oldHook.sign("evt_1", now, body)} ${newHook.sign("evt_1", now, body)}`,
    };
    assert.equal(oldHook.verify(body, headers).id, "evt_1");
    assert.equal(newHook.verify(body, new Headers(headers)).id, "evt_1");
    const stranger = new Webhook(`whsec_${Buffer.alloc(32, 3).toString("base64")}`);
    assert.throws(() => stranger.verify(body, headers), WebhookVerificationError);
    assert.throws(() => oldHook.verify(body, { ...headers, "webhook-signature": "v2,abc" }), WebhookVerificationError);
    assert.throws(() => oldHook.verify(body, { "webhook-id": "evt_1" }), WebhookVerificationError);
  });

  test("require() loads the CommonJS build with the same API", () => {
    const cjs = createRequire(import.meta.url)("@assetwithdrawal/sdk") as typeof esm;
    assert.deepEqual(Object.keys(cjs).sort(), Object.keys(esm).sort());
    assert.notEqual(cjs.AssetWithdrawal, esm.AssetWithdrawal, "a build of its own");
    const hook = new cjs.Webhook(`whsec_${Buffer.alloc(32, 4).toString("base64")}`);
    const now = Math.floor(Date.now() / 1000);
    const headers = { "webhook-id": "evt_2", "webhook-timestamp": String(now), "webhook-signature": hook.sign("evt_2", now, "{}") };
    assert.deepEqual(cjs.verifyWebhook("{}", headers, `whsec_${Buffer.alloc(32, 4).toString("base64")}`), {});
    assert.ok(new cjs.NotFoundError("x", { httpStatus: 404 } as never) instanceof cjs.AssetWithdrawalError);
  });

  test("VERSION is package.json's", () => {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };
    assert.equal(VERSION, pkg.version);
  });
});
