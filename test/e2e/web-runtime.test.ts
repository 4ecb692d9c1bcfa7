// `edgeswarm-worker --runtime web` end to end: the browser tab's runner (onnxruntime-web behind comlink)
// in Node worker threads, against the real coordinator (`wrangler dev`). It joins the browser pool,
// answers as onnxruntime-node does, runs batches on its threads in parallel, and when one of its threads
// is ended mid-batch the batch is run again on another thread: every call still gets the right answer.
// Then `--device webgpu` (Dawn, on SwiftShader's software Vulkan here) in the gpu pool: it reports its
// adapter, answers as onnxruntime-node does, and when its GPU device is destroyed mid-work (the drill
// route, offered only under EDGESWARM_GPU_DRILLS=1) it moves to wasm and still answers every call right.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorker, type WorkerProcess } from "../../scripts/lib/worker-process.ts";
import { type Coordinator, startCoordinator } from "../../scripts/lib/wrangler-dev.ts";
import { ModelRegistry } from "../../shared/index.ts";
import type { LoadedModel } from "../../shared/runner/model-runner.ts";
import { expectMatchesNode } from "../support/browser-swarm.ts";
import { BUNDLED_REGISTRY_URL, loadReferenceModels, REVIEW_TEXTS } from "../support/reference-models.ts";
import { bundledSpec, useSoftwareVulkan } from "../support/runner-cases.ts";

// Browser-pool answers taken as they come here: verification has its own suites.
const bundled = ModelRegistry.parse(JSON.parse(readFileSync(BUNDLED_REGISTRY_URL, "utf8")));
// sentiment-webgpu is sentiment's files under a name only the WebGPU worker serves.
const registry = {
  models: [...bundled.models, bundledSpec("sentiment", { name: "sentiment-webgpu" })].map((m) => ({
    ...m,
    verification: { enabled: false },
  })),
};
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
    ...["--models", "sentiment,embedder"],
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

async function infer(model: string, inputs: string[], wait = true, pool?: "gpu") {
  const res = await fetch(`${coordinator.url}/v1/infer`, {
    method: "POST",
    headers: API,
    // A software GPU compiles each shader on its first run: about a minute here.
    body: JSON.stringify({ model, inputs, wait, timeout_ms: 300_000, ...(pool ? { pool } : {}) }),
  });
  const text = await res.text();
  try {
    return { status: res.status, body: JSON.parse(text) as any };
  } catch {
    throw new Error(`${model}: ${res.status} answered with no JSON: ${text.slice(0, 500)}`);
  }
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

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe("edgeswarm-worker --device webgpu", () => {
  let gpuWorker: WorkerProcess;
  let health: string;

  beforeAll(async () => {
    useSoftwareVulkan();
    const port = await freePort();
    health = `http://127.0.0.1:${port}`;
    gpuWorker = startWorker(
      [
        ...["--coordinator", coordinator.url, "--token", "w", "--worker-id", "webgpu-1", "--device", "webgpu"],
        ...["--pool", "gpu", "--models", "sentiment-webgpu", "--max-batch-size", "8"],
        ...["--port", String(port), "--host", "127.0.0.1", "--status-interval-ms", "1000"],
      ],
      { EDGESWARM_GPU_DRILLS: "1" },
    );
    await gpuWorker.waitFor(/\[sentiment-webgpu\] connected/, 240_000);
  }, 300_000);

  afterAll(() => {
    gpuWorker?.child.kill("SIGKILL");
  });

  const metrics = async () => (await fetch(`${health}/metrics`)).text();

  it("joins the gpu pool on webgpu, reports its adapter, and answers as onnxruntime-node does", async () => {
    expect(gpuWorker.output()).toMatch(/webgpu adapter: google swiftshader \(.*vulkan, software\)/);
    expect(gpuWorker.output()).toMatch(/started 1 onnxruntime-web threads on webgpu/);
    expect(gpuWorker.output()).toMatch(/\[sentiment-webgpu\] connected to .* as webgpu-1 \(webgpu\)/);
    const answer = await infer("sentiment-webgpu", REVIEW_TEXTS, true, "gpu");
    expect(answer.status).toBe(200);
    await expectMatchesNode(reference, "sentiment-webgpu", REVIEW_TEXTS, answer.body.outputs, 1e-4);
    await gpuWorker.waitFor(/status: .*sentiment-webgpu@webgpu .* gpu google swiftshader .* gpu buffers \d/, 30_000);
    const text = await metrics();
    expect(text).toMatch(
      /edgeswarm_worker_gpu_info\{vendor="google",architecture="swiftshader",.*backend="vulkan",software="true"\} 1/,
    );
    expect(Number(text.match(/^edgeswarm_worker_gpu_buffer_bytes (\d+)/m)?.[1])).toBeGreaterThan(0);
    expect(text).toMatch(/^edgeswarm_worker_gpu_devices_lost 0/m);
  }, 400_000);

  it("moves to wasm when its GPU device is lost mid-work, and every call still gets the right answer", async () => {
    const pending = Array.from({ length: 6 }, () => infer("sentiment-webgpu", REVIEW_TEXTS, true, "gpu"));
    await sleep(200);
    const drill = await fetch(`${health}/drills/lose-gpu-device`, { method: "POST" });
    expect(await drill.json()).toEqual({ lost: 1 });
    for (const answer of await Promise.all(pending)) {
      expect(answer.status).toBe(200);
      await expectMatchesNode(reference, "sentiment-webgpu", REVIEW_TEXTS, answer.body.outputs, 1e-4);
    }
    expect(gpuWorker.output()).toMatch(/the WebGPU device was lost \(.*\); models move to wasm/);
    const after = await infer("sentiment-webgpu", REVIEW_TEXTS, true, "gpu");
    expect(after.status).toBe(200);
    await expectMatchesNode(reference, "sentiment-webgpu", REVIEW_TEXTS, after.body.outputs, 1e-4);
    await gpuWorker.waitFor(/status: .*sentiment-webgpu@wasm .* device lost, on wasm: thread 1/, 30_000);
    expect(await metrics()).toMatch(/^edgeswarm_worker_gpu_devices_lost 1/m);
  }, 400_000);

  it("is refused the drill without EDGESWARM_GPU_DRILLS: a worker in service cannot be told to break its GPU", async () => {
    const port = await freePort();
    const plain = startWorker([
      ...["--coordinator", coordinator.url, "--token", "w", "--worker-id", "wasm-plain", "--device", "wasm"],
      ...["--models", "sentiment", "--threads", "1", "--port", String(port), "--host", "127.0.0.1"],
    ]);
    try {
      await plain.waitFor(/\[sentiment\] connected/, 120_000);
      const res = await fetch(`http://127.0.0.1:${port}/drills/lose-gpu-device`, { method: "POST" });
      expect(res.status).toBe(404);
    } finally {
      plain.child.kill("SIGKILL");
    }
  }, 180_000);
});
