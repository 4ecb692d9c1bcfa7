// GPU overflow end to end: the real coordinator (`wrangler dev`) and real worker processes
// (`edgeswarm-worker`, onnxruntime-node) in both pools. With no browser worker the gpu pool serves
// everything; an idle browser pool keeps a trickle to itself; a burst beyond the browser pool's rate
// spills to the gpu pool and drains back; the gpu replica figure follows it up and, after the
// stabilisation window, down.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorker, type WorkerProcess } from "../../scripts/lib/worker-process.ts";
import { type Coordinator, startCoordinator } from "../../scripts/lib/wrangler-dev.ts";
import { ModelRegistry } from "../../shared/index.ts";
import { BUNDLED_REGISTRY_URL, REVIEW_TEXTS } from "../support/reference-models.ts";

const bundled = ModelRegistry.parse(JSON.parse(readFileSync(BUNDLED_REGISTRY_URL, "utf8")));
const sentiment = bundled.models.find((m) => m.name === "sentiment");
// Browser-pool answers taken as they come (trust has its own suites); overflow on age after 2 s, and on
// depth beyond what the browser pool drains in 1 s.
const registry = {
  models: [{ ...sentiment, verification: { enabled: false }, overflow_after_ms: 2_000, latency_target_ms: 1_000 }],
};
const SCALING = {
  gpu: {
    target_per_replica: 64,
    activation_threshold: 0,
    min_replicas: 1,
    max_replicas: 10,
    scale_down_window_ms: 3_000,
  },
};
const API = { Authorization: "Bearer k", "Content-Type": "application/json" };

const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-e2e-overflow-"));
let coordinator: Coordinator;
const workers: WorkerProcess[] = [];

beforeAll(async () => {
  coordinator = await startCoordinator({
    persistTo,
    vars: { API_KEYS: "k", WORKER_TOKENS: "w", MODELS: JSON.stringify(registry), SCALING: JSON.stringify(SCALING) },
  });
});

afterAll(async () => {
  for (const w of workers) w.child.kill("SIGKILL");
  await coordinator?.stop();
  rmSync(persistTo, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function spawn(id: string, pool: "gpu" | "browser", extra: string[] = []): Promise<WorkerProcess> {
  const w = startWorker([
    ...["--coordinator", coordinator.url, "--token", "w", "--worker-id", id, "--pool", pool],
    ...["--port", "0", "--status-interval-ms", "0", "--device", "cpu", "--models", "sentiment", ...extra],
  ]);
  workers.push(w);
  await w.waitFor(/\[sentiment\] connected/, 60_000);
  return w;
}

async function infer(inputs: string[], wait = true) {
  const res = await fetch(`${coordinator.url}/v1/infer`, {
    method: "POST",
    headers: API,
    body: JSON.stringify({ model: "sentiment", inputs, wait, timeout_ms: 120_000 }),
  });
  return { status: res.status, body: (await res.json()) as any };
}

/** Items completed so far, by the pool that completed them. */
async function served(): Promise<{ browser: number; gpu: number }> {
  const text = await (await fetch(`${coordinator.url}/metrics`, { headers: API })).text();
  const count = (pool: string) =>
    text
      .split("\n")
      .filter((l) => l.startsWith("edgeswarm_items_completed_total{") && l.includes(`pool="${pool}"`))
      .reduce((n, l) => n + Number(l.split(" ").pop()), 0);
  return { browser: count("browser"), gpu: count("gpu") };
}

async function gpuSignal(): Promise<{ queue_length: number; desired_replicas: number }> {
  return ((await (await fetch(`${coordinator.url}/v1/scaling`, { headers: API })).json()) as any).pools.gpu;
}

describe("overflow from the browser pool to the gpu pool", () => {
  it("serves everything on the gpu pool while no browser worker is connected", async () => {
    await spawn("gpu-1", "gpu");
    const before = await served();
    const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => infer(REVIEW_TEXTS.slice(i))));
    for (const a of answers) expect(a.status).toBe(200);
    const after = await served();
    expect(after.gpu - before.gpu).toBe(answers.reduce((n, a) => n + a.body.outputs.length, 0));
    expect(after.browser).toBe(before.browser);
  });

  it("keeps a trickle on an idle browser pool: the gpu pool gets none of it", async () => {
    // A modest browser worker: batches of 4, one at a time.
    await spawn("browser-1", "browser", ["--max-batch-size", "4"]);
    const before = await served();
    for (let i = 0; i < 10; i++) {
      const answer = await infer(REVIEW_TEXTS.slice(0, 4));
      expect(answer.status).toBe(200);
    }
    const after = await served();
    expect(after.browser - before.browser).toBe(40);
    expect(after.gpu).toBe(before.gpu);
  });

  it("spills a burst beyond the browser pool's rate to the gpu pool, drains, and scales gpu replicas up and back", async () => {
    const before = await served();
    const peak = { queue: 0, replicas: 0 };
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const s = await gpuSignal();
        peak.queue = Math.max(peak.queue, s.queue_length);
        peak.replicas = Math.max(peak.replicas, s.desired_replicas);
        await sleep(50);
      }
    })();
    // 3,200 items at once: far more than the browser worker drains in the 1 s latency target.
    const texts = Array.from({ length: 64 }, (_, i) => `${REVIEW_TEXTS[i % REVIEW_TEXTS.length]} (${i})`);
    const ids = (await Promise.all(Array.from({ length: 50 }, () => infer(texts, false)))).map((r) => r.body.id);
    for (const id of ids) {
      let view: any;
      do {
        await sleep(100);
        view = await (await fetch(`${coordinator.url}/v1/jobs/${id}`, { headers: API })).json();
      } while (view.status === "queued" || view.status === "running");
      expect(view.status).toBe("succeeded");
    }
    sampling = false;
    await sampler;
    const after = await served();
    expect(after.browser - before.browser + (after.gpu - before.gpu)).toBe(50 * 64);
    expect(after.gpu - before.gpu).toBeGreaterThan(0);
    expect(after.browser - before.browser).toBeGreaterThan(0);
    // Up with the burst: more than the floor of one replica.
    expect(peak.queue).toBeGreaterThan(64);
    expect(peak.replicas).toBeGreaterThan(1);

    // Drained: the gpu pool's queue is empty at once, its replicas back to the floor after the 3 s window.
    const drained = await gpuSignal();
    expect(drained.queue_length).toBe(0);
    let settled = drained;
    for (let i = 0; i < 100 && settled.desired_replicas > 1; i++) {
      await sleep(100);
      settled = await gpuSignal();
    }
    expect(settled.desired_replicas).toBe(1);

    // And a trickle afterwards is the browser pool's again.
    const quiet = await served();
    for (let i = 0; i < 5; i++) expect((await infer(REVIEW_TEXTS.slice(0, 4))).status).toBe(200);
    expect((await served()).gpu).toBe(quiet.gpu);
  });
});
