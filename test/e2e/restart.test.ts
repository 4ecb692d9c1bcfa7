// The real coordinator (`wrangler dev`, workerd, SQLite on disk) stopped and started again with work
// queued and leased: nothing accepted is lost, and a Node worker over a real WebSocket finishes it.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, expect, it } from "vitest";
import WebSocket from "ws";
import { type Coordinator, startCoordinator } from "../../scripts/lib/wrangler-dev.ts";
import type { Batch, CoordinatorFrame } from "../../shared/index.ts";

const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-e2e-"));
const vars = {
  API_KEYS: "e2e-key",
  WORKER_TOKENS: "e2e-worker",
  MODELS: JSON.stringify({ models: [{ name: "echo", max_batch_size: 8, max_queue_delay_ms: 0, lease_ms: 1_000 }] }),
};
let coordinator: Coordinator | undefined;

afterAll(async () => {
  await coordinator?.stop();
  rmSync(persistTo, { recursive: true, force: true });
});

const callerHeaders = { Authorization: "Bearer e2e-key", "Content-Type": "application/json" };

async function connectWorker(url: string, workerId: string) {
  const ws = new WebSocket(`${url.replace("http", "ws")}/v1/workers/connect?model=echo`, {
    headers: { Authorization: "Bearer e2e-worker" },
  });
  const batches: Batch[] = [];
  const waiting: ((b: Batch) => void)[] = [];
  ws.on("message", (data) => {
    const frame = JSON.parse(String(data)) as CoordinatorFrame;
    if (frame.type !== "batch") return;
    const next = waiting.shift();
    if (next) next(frame);
    else batches.push(frame);
  });
  await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
  ws.send(
    JSON.stringify({
      type: "hello",
      worker_id: workerId,
      pool: "gpu",
      device: "cpu",
      max_batch_size: 8,
      max_concurrent_batches: 1,
    }),
  );
  const nextBatch = () =>
    new Promise<Batch>((resolve, reject) => {
      const ready = batches.shift();
      if (ready) return resolve(ready);
      const timer = setTimeout(() => reject(new Error("no batch within 10 s")), 10_000);
      waiting.push((b) => {
        clearTimeout(timer);
        resolve(b);
      });
    });
  return { ws, nextBatch };
}

async function job(url: string, id: string) {
  const res = await fetch(`${url}/v1/jobs/${id}`, { headers: callerHeaders });
  return (await res.json()) as { status: string; outputs?: unknown[] };
}

it("finishes work that was queued and leased when the coordinator went down", async () => {
  coordinator = await startCoordinator({ persistTo, vars });
  const first = await connectWorker(coordinator.url, "before-restart");
  const submit = async (inputs: unknown[]) => {
    const res = await fetch(`${coordinator?.url}/v1/infer`, {
      method: "POST",
      headers: callerHeaders,
      body: JSON.stringify({ model: "echo", inputs, wait: false }),
    });
    expect(res.status).toBe(202);
    return ((await res.json()) as { id: string }).id;
  };
  const leasedJob = await submit(["a", "b", "c"]);
  const held = await first.nextBatch(); // leased, never completed
  expect(held.items.map((i) => i.input)).toEqual(["a", "b", "c"]);
  const queuedJob = await submit(["d"]); // waits: the only worker is busy
  await coordinator.stop(); // the lease is still held: after the restart it must expire and be redelivered
  first.ws.terminate();

  coordinator = await startCoordinator({ persistTo, vars });
  expect(["queued", "running"]).toContain((await job(coordinator.url, leasedJob)).status);
  expect((await job(coordinator.url, queuedJob)).status).toBe("queued");

  const second = await connectWorker(coordinator.url, "after-restart");
  const seen: unknown[] = [];
  while (seen.length < 4) {
    const batch = await second.nextBatch();
    seen.push(...batch.items.map((i) => i.input));
    second.ws.send(
      JSON.stringify({
        type: "complete",
        lease_id: batch.lease_id,
        results: batch.items.map((i) => ({ output: `${String(i.input)}!` })),
      }),
    );
  }
  expect(seen.sort()).toEqual(["a", "b", "c", "d"]);
  await expect
    .poll(async () => (await job(coordinator?.url ?? "", leasedJob)).outputs, { timeout: 5_000 })
    .toEqual(["a!", "b!", "c!"]);
  expect((await job(coordinator.url, queuedJob)).outputs).toEqual(["d!"]);
  second.ws.close();
});
