// Cancelling reaches a real worker: the real coordinator (`wrangler dev`) and a real worker process
// (`edgeswarm-worker`, onnxruntime-node) running a batch that takes seconds. DELETE /v1/jobs/{id} ends the
// job cancelled and sends the worker a cancel frame: it drops the batch (no completion, nothing counted
// completed) and serves the next call as before. A caller hanging up is tested in workerd
// (test/workers/job-admin.test.ts): `wrangler dev`'s local entry does not pass a client's disconnect on to
// the Worker's request.signal (checked here on 2026-12-04: the waiting call's job ran on to success).
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorker, type WorkerProcess } from "../../scripts/lib/worker-process.ts";
import { type Coordinator, freePort, startCoordinator } from "../../scripts/lib/wrangler-dev.ts";
import { type ModelConfig, ModelRegistry } from "../../shared/index.ts";

const REGISTRY_URL = new URL("../../models/registry.json", import.meta.url);
const bundled = ModelRegistry.parse(JSON.parse(readFileSync(REGISTRY_URL, "utf8")));
const sentiment = bundled.models.find((m) => m.name === "sentiment") as ModelConfig;
// One batch of long texts: WordPiece tries ever shorter prefixes of each 40-letter word, so 64 such texts take
// seconds to tokenize (worker.test.ts measures the same batch) — time for a cancel to arrive mid-batch.
const LONG_BATCH = 64;
const slow = {
  ...sentiment,
  name: "sentiment-slow",
  max_batch_size: LONG_BATCH,
  max_queue_delay_ms: 0,
  files: { ...sentiment.files, base_url: "./sentiment/" },
};
const registry = { models: [slow] };
const letter = (k: number) => String.fromCharCode(97 + (k % 26));
const longTexts = (seed: number) =>
  Array.from({ length: LONG_BATCH }, (_, i) =>
    Array.from({ length: 110 }, (_, j) => letter(seed + i + j).repeat(40)).join(" "),
  );

const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-e2e-cancel-"));
let coordinator: Coordinator;
let worker: WorkerProcess;
const auth = { Authorization: "Bearer k" };

beforeAll(async () => {
  coordinator = await startCoordinator({
    persistTo,
    vars: { API_KEYS: "k", WORKER_TOKENS: "w", MODELS: JSON.stringify(registry) },
  });
  worker = startWorker([
    ...["--coordinator", coordinator.url, "--token", "w", "--worker-id", "canceller"],
    ...["--port", String(await freePort()), "--status-interval-ms", "0", "--device", "cpu"],
  ]);
  await worker.waitFor(/\[sentiment-slow\] connected/, 90_000);
}, 180_000);

afterAll(async () => {
  worker?.child.kill("SIGKILL");
  await coordinator?.stop();
  rmSync(persistTo, { recursive: true, force: true });
});

async function api(path: string, init: RequestInit = {}) {
  const res = await fetch(`${coordinator.url}${path}`, {
    ...init,
    headers: { ...auth, "Content-Type": "application/json", ...init.headers },
  });
  return { status: res.status, body: (await res.json()) as any };
}

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`${coordinator.url}/metrics`, { headers: auth })).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{model="sentiment-slow",pool="gpu"}`));
  return line === undefined ? 0 : Number(line.split(" ").pop());
}

/** Resolves once the job's batch is on the worker (the job is running). */
async function running(id: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if ((await api(`/v1/jobs/${id}`)).body.status === "running") return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`job ${id} never started running`);
}

describe("cancelling a job a real worker is running", () => {
  it("DELETE /v1/jobs/{id}: the worker drops the batch, the job ends cancelled, the next call is served", async () => {
    const before = await metric("edgeswarm_items_completed_total");
    const submitted = await api("/v1/infer", {
      method: "POST",
      body: JSON.stringify({ model: "sentiment-slow", inputs: longTexts(0), wait: false, timeout_ms: 120_000 }),
    });
    expect(submitted.status).toBe(202);
    const id = submitted.body.id as string;
    await running(id);
    const cancelled = await api(`/v1/jobs/${id}`, { method: "DELETE" });
    expect(cancelled.status).toBe(200);
    expect(cancelled.body.status).toBe("cancelled");
    await worker.waitFor(/lease sentiment-slow:\S+ cancelled by the coordinator \(the job was cancelled\)/, 30_000);
    const next = await api("/v1/infer", {
      method: "POST",
      body: JSON.stringify({ model: "sentiment-slow", inputs: ["I love this"] }),
    });
    expect(next.status).toBe(200);
    expect(next.body.outputs[0][0].label).toBe("POSITIVE");
    // Only the next call's one input was completed: the cancelled batch's results were never sent.
    expect(await metric("edgeswarm_items_completed_total")).toBe(before + 1);
    expect((await api(`/v1/jobs/${id}`)).body.status).toBe("cancelled");
  }, 120_000);
});
