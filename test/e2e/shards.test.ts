// A model's queue spread over 4 shards (docs/operations.md, "Sharded queues") in the real coordinator
// (`wrangler dev`, SQLite on disk) with real worker processes (`edgeswarm-worker`, onnxruntime-node): a
// worker killed with SIGKILL while it holds a batch, the coordinator stopped and started again with work
// queued and leased in every shard, and every job still ends with the answers of the model run directly.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startWorker, type WorkerProcess } from "../../scripts/lib/worker-process.ts";
import { type Coordinator, freePort, startCoordinator } from "../../scripts/lib/wrangler-dev.ts";
import { type ModelConfig, ModelRegistry, queueOfId } from "../../shared/index.ts";
import type { LoadedModel } from "../../shared/runner/model-runner.ts";
import { expectClose } from "../support/expect-close.ts";
import { loadReferenceModels, REVIEW_TEXTS } from "../support/reference-models.ts";

const SHARDS = 4;
const bundled = ModelRegistry.parse(
  JSON.parse(readFileSync(new URL("../../models/registry.json", import.meta.url), "utf8")),
);
const sentiment = bundled.models.find((m) => m.name === "sentiment") as ModelConfig;
const MODEL = "sentiment-sharded";
const registry = {
  models: [
    {
      ...sentiment,
      name: MODEL,
      shards: SHARDS,
      max_batch_size: 4,
      max_queue_delay_ms: 0,
      // Short, so the killed worker's batch comes back soon; the worker renews at half.
      lease_ms: 2_000,
      files: { ...sentiment.files, base_url: "./sentiment/" },
    },
  ],
};

const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-e2e-shards-"));
const vars = { API_KEYS: "k", WORKER_TOKENS: "w", MODELS: JSON.stringify(registry) };
let coordinator: Coordinator | undefined;
let reference: LoadedModel;
const workers: WorkerProcess[] = [];

beforeAll(async () => {
  coordinator = await startCoordinator({ persistTo, vars });
  reference = (await loadReferenceModels(registry)).get(MODEL) as LoadedModel;
}, 180_000);

afterAll(async () => {
  for (const w of workers) w.child.kill("SIGKILL");
  await coordinator?.stop();
  await reference?.dispose();
  rmSync(persistTo, { recursive: true, force: true });
});

function url(): string {
  if (!coordinator) throw new Error("no coordinator");
  return coordinator.url;
}

const headers = { Authorization: "Bearer k", "Content-Type": "application/json" };

/** A worker process serving the model, once its sockets to every shard are open. */
async function spawnWorker(id: string): Promise<WorkerProcess> {
  const w = startWorker([
    "--coordinator",
    url(),
    "--token",
    "w",
    "--worker-id",
    id,
    "--port",
    String(await freePort()),
    "--status-interval-ms",
    "0",
    "--device",
    "cpu",
    "--max-batch-size",
    "4",
  ]);
  workers.push(w);
  await w.waitFor(/health and metrics on/, 60_000);
  for (let k = SHARDS - 1; k >= 0; k--) await w.waitFor(new RegExp(`\\[${k ? `${MODEL}~${k}` : MODEL}\\] connected`));
  return w;
}

async function inFlight(): Promise<number> {
  const res = await fetch(`${url()}/v1/models`, { headers });
  const models = (await res.json()) as { models: { name: string; in_flight?: Record<string, number> }[] };
  const m = models.models.find((x) => x.name === MODEL);
  return Object.values(m?.in_flight ?? {}).reduce((a, b) => a + b, 0);
}

/** Every number in a count or a count by pool, added up. */
function total(value: unknown): number {
  if (typeof value === "number") return value;
  if (value === null || typeof value !== "object") throw new Error(`not a count: ${JSON.stringify(value)}`);
  return Object.values(value).reduce((sum: number, v) => sum + total(v), 0);
}

/** Items put back after their worker was lost, over the model's shards (0 while a shard has not answered). */
async function redelivered(): Promise<number> {
  const metrics = await (await fetch(`${url()}/metrics`, { headers })).text();
  if (/^edgeswarm_queue_(stale|unavailable)\{/m.test(metrics)) return 0;
  return metrics
    .split("\n")
    .filter((l) => l.startsWith("edgeswarm_items_redelivered_total{") && l.includes(`model="${MODEL}"`))
    .reduce((sum, l) => sum + Number(l.split(" ").pop()), 0);
}

async function job(id: string): Promise<{ status: string; outputs?: unknown[] }> {
  const res = await fetch(`${url()}/v1/jobs/${encodeURIComponent(id)}`, { headers });
  expect(res.status).toBe(200);
  return (await res.json()) as { status: string; outputs?: unknown[] };
}

it("loses nothing over a worker killed mid-batch and a coordinator restart, with every shard holding work", async () => {
  // Queued before any worker is connected: every shard holds work.
  const calls = Array.from({ length: 48 }, (_, i) => REVIEW_TEXTS.slice(i % 5, (i % 5) + 1 + (i % 3)));
  const ids: string[] = [];
  for (const inputs of calls) {
    const res = await fetch(`${url()}/v1/infer`, {
      method: "POST",
      headers,
      body: JSON.stringify({ model: MODEL, inputs, wait: false }),
    });
    expect(res.status).toBe(202);
    ids.push(((await res.json()) as { id: string }).id);
  }
  const shardsUsed = new Set(ids.map((id) => queueOfId(id)));
  expect(shardsUsed.size).toBe(SHARDS); // 48 random picks over 4 shards: a shard left out has odds of 4 * (3/4)^48

  // A worker frozen while it holds a batch, then killed: that batch is leased and never completed.
  const victim = await spawnWorker("victim");
  for (let caught = false; !caught; ) {
    victim.child.kill("SIGSTOP");
    caught = (await inFlight()) > 0;
    if (!caught) {
      victim.child.kill("SIGCONT");
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  victim.child.kill("SIGKILL");
  await victim.exited;
  // Its socket closed, the coordinator puts the batch back at once and counts it redelivered. Read here, the
  // count is written to storage before the restart: counts not yet written (a second's) go with the process.
  await expect.poll(redelivered, { timeout: 30_000, interval: 100 }).toBeGreaterThan(0);

  // The coordinator goes down with that lease held and the rest queued, and comes back on the same state.
  await coordinator?.stop();
  coordinator = await startCoordinator({ persistTo, vars });
  const open = (await Promise.all(ids.map((id) => job(id)))).filter((j) => j.status !== "succeeded");
  expect(open.length).toBeGreaterThan(0);

  await spawnWorker("rescuer");
  for (const [i, id] of ids.entries()) {
    await expect.poll(async () => (await job(id)).status, { timeout: 60_000, interval: 100 }).toBe("succeeded");
    const want = (await reference.run(calls[i] as string[])).map((r) => ("output" in r ? r.output : null));
    expectClose((await job(id)).outputs, want);
  }

  // The count of the killed worker's batch put back outlived the restart (/metrics sums the shards).
  await expect.poll(redelivered, { timeout: 30_000, interval: 100 }).toBeGreaterThan(0);

  // Read as one model: the scaling view sums the shards, finds nothing left and the one worker (on all four).
  const scaling = (await (await fetch(`${url()}/v1/scaling`, { headers })).json()) as {
    models: Record<string, { queued: unknown; in_flight: unknown; workers: unknown }>;
  };
  const view = scaling.models[MODEL];
  expect(total(view?.queued) + total(view?.in_flight)).toBe(0);
  expect(total(view?.workers)).toBe(1);
}, 240_000);
