/** Withdrawals against a real gateway and pipeline: create, get, list, watch, retries. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  type FetchLike,
  TimeoutError,
  type WatchEvent,
  type Withdrawal,
  WithdrawalNotCancellableError,
} from "@assetwithdrawal/sdk";

import { BASE_URL, DroppingProxy, client, freshAddress, unique } from "./helpers.js";

describe("withdrawals", () => {
  test("create, then get answers the same withdrawal", async () => {
    const aw = client();
    const reference = unique("sdk-create");
    const created = await aw.withdrawals.create({
      token: "USDC",
      recipientAddress: freshAddress(),
      amount: "12.5",
      clientReference: reference,
    });
    assert.match(created.name ?? "", /^withdrawals\/[0-9a-z]{26}$/);
    assert.equal(created.amount, "12.5");
    assert.equal(created.clientReference, reference);
    assert.equal(created.chain, "polygon");
    assert.equal(created.state, "STATE_RECEIVED");
    const fetched = await aw.withdrawals.get(created.name ?? "");
    assert.equal(fetched.name, created.name);
    assert.equal(fetched.recipientAddress, created.recipientAddress);
    // a bare id works too
    assert.equal((await aw.withdrawals.get((created.name ?? "").split("/")[1] ?? "")).name, created.name);
  });

  test("list iterates every page of a filter, newest first", async () => {
    const aw = client();
    const user = unique("sdk-user");
    const names: string[] = [];
    for (let i = 0; i < 5; i++) {
      const w = await aw.withdrawals.create({ token: "USDC", recipientAddress: freshAddress(), amount: `1.${i + 1}`, userRef: user });
      names.push(w.name ?? "");
    }
    const filter = `user_ref = "${user}"`;
    const listed: Withdrawal[] = [];
    for await (const w of aw.withdrawals.list({ filter, page_size: 2 })) listed.push(w);
    assert.deepEqual(
      listed.map((w) => w.name),
      [...names].reverse(),
    );
    const pages: number[] = [];
    for await (const page of aw.withdrawals.list({ filter, page_size: 2 }).pages()) pages.push(page.items.length);
    assert.deepEqual(pages, [2, 2, 1]);
    const amountRange = await aw.withdrawals.list({ filter: `${filter} AND amount >= "1.3"` }).toArray();
    assert.equal(amountRange.length, 3);
  });

  test("watch follows a withdrawal to COMPLETED, resuming after a dropped connection", async () => {
    const aw = client();
    const created = await aw.withdrawals.create({
      token: "USDC",
      recipientAddress: freshAddress(),
      amount: "3.25",
      priority: "PRIORITY_PRIORITY",
    });
    const proxy = new DroppingProxy(new URL(BASE_URL()));
    const proxied = client({ baseUrl: await proxy.start() });
    const events: WatchEvent[] = [];
    const resumedAfter: (string | undefined)[] = [];
    try {
      for await (const event of proxied.withdrawals.watch(created.name ?? "", {
        onReconnect: ({ resumeAfterVersion }) => resumedAfter.push(resumeAfterVersion),
      })) {
        events.push(event);
        if (events.length === 1) proxy.drop(); // the network fails right after the snapshot
      }
    } finally {
      await proxy.stop();
    }
    assert.equal(events[0]?.eventType, "EVENT_TYPE_SNAPSHOT");
    assert.ok(resumedAfter.length >= 1, "the watch reconnected");
    assert.equal(resumedAfter[0], events[0]?.withdrawal?.version);
    assert.ok(proxy.connections >= 2);
    const versions = events.map((e) => Number(e.withdrawal?.version));
    const first = versions[0] ?? 0;
    assert.deepEqual(versions, versions.map((_, i) => first + i), "no event lost or repeated");
    const last = events.at(-1)?.withdrawal;
    assert.equal(last?.state, "STATE_COMPLETED");
    assert.match(last?.transactionHash ?? "", /^0x[0-9a-f]{64}$/);
    await assert.rejects(aw.withdrawals.cancel(created.name ?? ""), (e: unknown) => {
      assert.ok(e instanceof WithdrawalNotCancellableError, String(e));
      assert.equal(e.metadata.state, "COMPLETED");
      return true;
    });

    // the audit trail agrees with what the watch saw, page after page
    const changes = await aw.withdrawals.listStateChanges(created.name ?? "", { page_size: 2 }).toArray();
    assert.equal(changes[0]?.toState, "STATE_RECEIVED");
    assert.equal(changes.at(-1)?.toState, "STATE_COMPLETED");
    assert.deepEqual(
      changes.map((c) => Number(c.version)),
      changes.map((_, i) => i + 1),
    );
    const seen = events.filter((e) => e.eventType !== "EVENT_TYPE_SNAPSHOT").map((e) => e.withdrawal?.state);
    assert.deepEqual(seen, changes.slice(changes.length - seen.length).map((c) => c.toState));

    // a replay from version 0 gives the whole history again
    const replay: WatchEvent[] = [];
    for await (const e of aw.withdrawals.watch(created.name ?? "", { resumeAfterVersion: 0 })) replay.push(e);
    assert.deepEqual(
      replay.map((e) => e.withdrawal?.state),
      changes.map((c) => c.toState),
    );
  });

  test("a watch stops when its signal aborts", async () => {
    const aw = client();
    const created = await aw.withdrawals.create({ token: "USDC", recipientAddress: freshAddress(), amount: "1.5" });
    const controller = new AbortController();
    const seen: WatchEvent[] = [];
    const reason = new Error("the test stops watching");
    await assert.rejects(
      (async () => {
        for await (const event of aw.withdrawals.watch(created.name ?? "", { signal: controller.signal })) {
          seen.push(event);
          controller.abort(reason);
        }
      })(),
      (e: unknown) => e === reason,
    );
    assert.equal(seen.length, 1);
  });

  test("a retried create sends one Idempotency-Key and creates one withdrawal", async () => {
    const keys: string[] = [];
    let firstAnswer: Withdrawal | undefined;
    // The first attempt reaches the gateway, which creates the withdrawal; its answer is then
    // lost as if the connection dropped. The SDK retries with the same key.
    const losingFirstAnswer: FetchLike = async (input, init) => {
      keys.push(new Headers(init.headers).get("idempotency-key") ?? "");
      const response = await fetch(input, init);
      if (keys.length === 1) {
        firstAnswer = (await response.json()) as Withdrawal;
        throw new TypeError("fetch failed", { cause: new Error("socket hang up (dropped by the test)") });
      }
      return response;
    };
    const reference = unique("sdk-retry");
    const created = await client({ fetch: losingFirstAnswer }).withdrawals.create({
      token: "USDC",
      recipientAddress: freshAddress(),
      amount: "7",
      clientReference: reference,
    });
    assert.equal(keys.length, 2);
    assert.equal(keys[0], keys[1]);
    assert.match(keys[0] ?? "", /^[0-9a-f-]{36}$/);
    assert.equal(created.name, firstAnswer?.name, "the retry answered the withdrawal the first attempt made");
    const matching = await client().withdrawals.list({ filter: `client_reference = "${reference}"` }).toArray();
    assert.deepEqual(
      matching.map((w) => w.name),
      [created.name],
    );
  });

  test("attempts cut by a tiny timeout reuse the key; maxAttempts bounds them", async () => {
    const keys: string[] = [];
    const counting: FetchLike = (input, init) => {
      keys.push(new Headers(init.headers).get("idempotency-key") ?? "");
      return fetch(input, init);
    };
    const reference = unique("sdk-timeout");
    const params = { token: "USDC", recipientAddress: freshAddress(), amount: "2.5", clientReference: reference };
    const hurried = client({ fetch: counting, timeoutMs: 1, maxAttempts: 4 });
    await assert.rejects(hurried.withdrawals.create(params), TimeoutError);
    assert.equal(keys.length, 4);
    assert.equal(new Set(keys).size, 1);
    const other = { ...params, clientReference: unique("sdk-timeout-once") };
    await assert.rejects(hurried.withdrawals.create(other, { maxAttempts: 1 }), TimeoutError);
    assert.equal(keys.length, 5);
    // the caller retries the call itself with the key: still one withdrawal
    const key = keys[0] ?? "";
    const created = await client().withdrawals.create(params, { idempotencyKey: key });
    const again = await client().withdrawals.create(params, { idempotencyKey: key });
    assert.equal(again.name, created.name);
    const matching = await client().withdrawals.list({ filter: `client_reference = "${reference}"` }).toArray();
    assert.equal(matching.length, 1);
  });
});
