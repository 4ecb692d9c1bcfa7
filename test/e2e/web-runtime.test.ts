// `edgeswarm-worker --runtime web` end to end: the browser tab's runner (onnxruntime-web behind comlink)
// in Node worker threads, against the real coordinator (`wrangler dev`). It joins the browser pool,
// answers as onnxruntime-node does, runs batches on its threads in parallel, and when one of its threads
// is ended mid-batch the batch is run again on another thread: every call still gets the right answer.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorker, type WorkerProcess } from "../../scripts/lib/worker-process.ts";
import { type Coordinator, startCoordinator } from "../../scripts/lib/wrangler-dev.ts";
import { ModelRegistry } from "../../shared/index.ts";
import type { LoadedModel } from "../../shared/runner/model-runner.ts";
import { expectMatchesNode } from "../support/browser-swarm.ts";
import { BUNDLED_REGISTRY_URL, loadReferenceModels, REVIEW_TEXTS } from "../support/reference-models.ts";

// Browser-pool answers taken as they come here: verification has its own suites.
const bundled = ModelRegistry.parse(JSON.parse(readFileSync(BUNDLED_REGISTRY_URL, "utf8")));
const registry = { models: bundled.models.map((m) => ({ ...m, verification: { enabled: false } })) };
const API = { Authorization: "Bearer k", "Content-Type": "application/json" };

const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-e2e-web-"));
let coordinator: Coordinator;
let reference = new Map<string, LoadedModel>();
let worker: WorkerProcess;

beforeAll(async () => {
  coordinator = await startCoordinator({
    persistTo,
    vars: { API_KEYS: "k", WORKER_TOKENS: "w", MODELS: JSON.stringify(registry) },
  });
  reference = await loadReferenceModels(registry);
  worker = startWorker([
    ...["--coordinator", coordinator.url, "--token", "w", "--worker-id", "web-1", "--runtime", "web"],
    ...["--threads", "2", "--max-batch-size", "8", "--port", "0", "--status-interval-ms", "0"],
  ]);
  await worker.waitFor(/\[embedder\] connected/, 90_000);
  await worker.waitFor(/\[sentiment\] connected/, 30_000);
}, 150_000);

afterAll(async () => {
  worker?.child.kill("SIGKILL");
  await coordinator?.stop();
  for (const m of reference.values()) await m.dispose();
  rmSync(persistTo, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function infer(model: string, inputs: string[], wait = true) {
  const res = await fetch(`${coordinator.url}/v1/infer`, {
    method: "POST",
    headers: API,
    body: JSON.stringify({ model, inputs, wait, timeout_ms: 120_000 }),
  });
  return { status: res.status, body: (await res.json()) as any };
}

describe("edgeswarm-worker --runtime web", () => {
  it("joins the browser pool on wasm, with its threads, and answers as onnxruntime-node does", async () => {
    expect(worker.output()).toMatch(/started 2 onnxruntime-web threads/);
    expect(worker.output()).toMatch(/\[sentiment\] connected to .* as web-1 \(wasm\)/);
    const scaling = (await (await fetch(`${coordinator.url}/v1/scaling`, { headers: API })).json()) as any;
    expect(scaling.models.sentiment.workers).toEqual({ browser: 1, gpu: 0 });

    const calls = Array.from({ length: 12 }, (_, i) => ({
      model: i % 2 === 0 ? "sentiment" : "embedder",
      inputs: REVIEW_TEXTS.slice(i % REVIEW_TEXTS.length).concat(REVIEW_TEXTS.slice(0, 3)),
    }));
    const answers = await Promise.all(calls.map((c) => infer(c.model, c.inputs)));
    for (const [i, answer] of answers.entries()) {
      expect(answer.status).toBe(200);
      const c = calls[i] as { model: string; inputs: string[] };
      await expectMatchesNode(reference, c.model, c.inputs, answer.body.outputs, 1e-4);
    }
  });

  it("runs a batch again on another thread when its thread is ended mid-batch, and replaces the thread", async () => {
    // Long inputs, so a batch is running when the thread is ended.
    const long = REVIEW_TEXTS.map((t) => `${t} ${t} ${t} ${t} ${t} ${t}`);
    const pending = Array.from({ length: 16 }, () => infer("embedder", long));
    // The drill ends a thread only while it runs a batch; send it until one was ended.
    const from = worker.output().length;
    const killed = () => /drill: ended thread \d+ while it ran embedder/.test(worker.output().slice(from));
    for (let i = 0; i < 100 && !killed(); i++) {
      worker.child.kill("SIGUSR2");
      await sleep(100);
    }
    await sleep(500);
    expect(killed(), worker.output().slice(from)).toBe(true);
    const answers = await Promise.all(pending);
    for (const answer of answers) {
      expect(answer.status).toBe(200);
      await expectMatchesNode(reference, "embedder", long, answer.body.outputs, 1e-4);
    }
    await worker.waitFor(/thread \d+ replaced/, 30_000);
    expect(worker.output()).toMatch(/thread \d+ lost while running embedder/);
    // The pool is whole again and serves.
    const after = await infer("sentiment", REVIEW_TEXTS);
    expect(after.status).toBe(200);
    await expectMatchesNode(reference, "sentiment", REVIEW_TEXTS, after.body.outputs, 1e-4);
  });
});
