/** A CSV batch uploaded from a file with progress, its report as rows and as CSV. */
import assert from "node:assert/strict";
import { mkdtemp, readFile, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import { IdempotencyKeyReusedError, type UploadProgress } from "@assetwithdrawal/sdk";

import { client, freshAddress, unique } from "./helpers.js";

test("a batch from a file path, with progress, and its report", async () => {
  const aw = client();
  const dir = await mkdtemp(join(tmpdir(), "aw-sdk-"));
  const file = join(dir, "payouts.csv");
  const refs = [unique("sdk-b1"), unique("sdk-b2"), unique("sdk-b3")];
  await writeFile(
    file,
    "recipient_address,amount,token,client_reference\r\n" +
      `${freshAddress()},1.5,USDC,${refs[0]}\r\n` +
      `${freshAddress()},not-an-amount,USDC,${refs[1]}\r\n` +
      `${freshAddress()},2.25,USDC,${refs[2]}\r\n`,
  );
  const size = (await stat(file)).size;
  const progress: UploadProgress[] = [];
  const key = unique("sdk-batch");
  const batch = await aw.batches.create(
    { path: file },
    { policy: "ACCEPT_VALID", idempotencyKey: key, onProgress: (p) => progress.push(p) },
  );
  assert.match(batch.name ?? "", /^batches\/[0-9a-z]{26}$/);
  assert.equal(batch.policy, "BATCH_POLICY_ACCEPT_VALID");
  assert.equal(batch.rowCount, 3);
  assert.equal(batch.acceptedCount, 2);
  assert.equal(batch.problemRowCount, 1);
  assert.deepEqual(progress.at(-1), { loaded: size, total: size });
  assert.ok(progress.every((p, i) => i === 0 || p.loaded >= (progress[i - 1]?.loaded ?? 0)));

  // the same file under the same key answers the same batch; another file is refused
  assert.equal((await aw.batches.create({ path: file }, { policy: "ACCEPT_VALID", idempotencyKey: key })).name, batch.name);
  await assert.rejects(
    aw.batches.create({ content: "recipient_address,amount,token\r\n" + `${freshAddress()},1,USDC\r\n` }, { idempotencyKey: key }),
    IdempotencyKeyReusedError,
  );

  const rows = await aw.batches.report(batch.name ?? "", { page_size: 2 }).toArray();
  assert.deepEqual(
    rows.map((r) => r.line),
    [2, 3, 4],
  );
  assert.equal(rows[1]?.withdrawal, "");
  assert.equal(rows[1]?.problems?.[0]?.column, "amount");
  assert.equal(rows[1]?.problems?.[0]?.reason, "INVALID_AMOUNT");
  assert.match(rows[0]?.withdrawal ?? "", /^withdrawals\//);

  const inBatch = await aw.withdrawals.list({ filter: `batch = "${batch.name}"` }).toArray();
  assert.deepEqual(inBatch.map((w) => w.name).sort(), [rows[0]?.withdrawal, rows[2]?.withdrawal].sort());
  assert.equal((await aw.batches.get(batch.name ?? "")).name, batch.name);

  const csv = await aw.batches.reportCsv(batch.name ?? "");
  const lines = csv.trim().split(/\r?\n/);
  assert.match(lines[0] ?? "", /^line,client_reference,withdrawal,state/);
  assert.equal(lines.length, 4);
  const saved = join(dir, "report.csv");
  const written = await aw.batches.downloadReport(batch.name ?? "", saved);
  const text = await readFile(saved, "utf8");
  assert.equal(written, Buffer.byteLength(text));
  assert.equal(text.trim().split(/\r?\n/).length, 4);
  assert.ok(text.includes(refs[1] ?? "?"));

  // the pipeline pays both rows: the batch's watch ends when it is DONE
  let last = batch;
  for await (const update of aw.batches.watch(batch.name ?? "")) last = update;
  assert.equal(last.state, "BATCH_STATE_DONE");
  assert.deepEqual(
    last.stateCounts?.map((c) => [c.state, c.count]),
    [["STATE_COMPLETED", 2]],
  );
});
