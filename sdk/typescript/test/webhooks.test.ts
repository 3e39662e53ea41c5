/**
 * A real delivery: the gateway registers an endpoint on loopback, the webhook sender
 * (svc_webhooks, signing with the Python `standardwebhooks` library) posts a withdrawal's
 * events to it, and the SDK verifies them; a tampered body, another secret, or a timestamp
 * out of tolerance fail.
 */
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { test } from "node:test";

import { Webhook, WebhookVerificationError, verifyWebhook } from "@assetwithdrawal/sdk";

import { client, freshAddress } from "./helpers.js";

interface Delivery {
  headers: Record<string, string>;
  body: Buffer;
  verified: boolean;
}

test("webhook deliveries verify; tampered ones do not", async (t) => {
  const aw = client();
  const deliveries: Delivery[] = [];
  let secret = "";
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (c: Buffer) => chunks.push(c));
    request.on("end", () => {
      const body = Buffer.concat(chunks);
      const headers = Object.fromEntries(Object.entries(request.headers).map(([k, v]) => [k, String(v)]));
      let verified = false;
      try {
        verifyWebhook(body, request.headers, secret);
        verified = true;
      } catch (error) {
        if (!(error instanceof WebhookVerificationError)) throw error;
      }
      deliveries.push({ headers, body, verified });
      response.writeHead(verified ? 204 : 400).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const address = server.address();
  assert.ok(address !== null && typeof address !== "string");

  const endpoint = await aw.webhookEndpoints.create({
    url: `http://127.0.0.1:${address.port}/hook`,
    eventTypes: ["withdrawal.received"],
    description: "sdk test",
  });
  t.after(() => aw.webhookEndpoints.delete(endpoint.name ?? ""));
  assert.match(endpoint.secret ?? "", /^whsec_/);
  secret = endpoint.secret ?? "";

  const w = await aw.withdrawals.create({ token: "USDC", recipientAddress: freshAddress(), amount: "4.5" });
  const deadline = Date.now() + 30_000;
  let delivery: Delivery | undefined;
  while (delivery === undefined && Date.now() < deadline) {
    delivery = deliveries.find((d) => d.body.toString().includes(`"withdrawal":"${w.name}"`));
    if (delivery === undefined) await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(delivery, "the sender delivered the withdrawal's event");
  assert.ok(delivery.verified, "the receiver verified it");

  const event = new Webhook(secret).verify(delivery.body, delivery.headers);
  assert.equal(event.type, "withdrawal.received");
  assert.equal(event.id, delivery.headers["webhook-id"]);
  assert.equal(event.data.withdrawal, w.name);
  assert.equal(event.data.sequence, 1);
  assert.equal(event.data.amount, "4.5");

  const tampered = Buffer.from(delivery.body.toString().replace('"amount":"4.5"', '"amount":"45"'));
  assert.notDeepEqual(tampered, delivery.body);
  assert.throws(() => verifyWebhook(tampered, delivery.headers, secret), WebhookVerificationError);
  assert.throws(
    () => verifyWebhook(delivery.body, { ...delivery.headers, "webhook-id": "evt_other_1" }, secret),
    WebhookVerificationError,
  );
  const otherSecret = `whsec_${Buffer.alloc(32, 7).toString("base64")}`;
  assert.throws(() => verifyWebhook(delivery.body, delivery.headers, otherSecret), WebhookVerificationError);
  const sent = Number(delivery.headers["webhook-timestamp"]) * 1000;
  assert.throws(
    () => verifyWebhook(delivery.body, delivery.headers, secret, { now: sent + 301_000 }),
    /too old/,
  );
  assert.throws(
    () => verifyWebhook(delivery.body, delivery.headers, secret, { now: sent - 301_000 }),
    /in the future/,
  );
  verifyWebhook(delivery.body, delivery.headers, secret, { now: sent + 290_000 });
  verifyWebhook(delivery.body, delivery.headers, secret, { now: sent + 3_600_000, toleranceSeconds: 7_200 });
  assert.ok(deliveries.every((d) => d.verified), "every delivery verified");
});
