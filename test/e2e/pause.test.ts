// A worker connection that pauses (a hidden browser tab, a duty-cycle rest) against the real coordinator
// (`wrangler dev`) with a real onnxruntime-node model. The coordinator may push a batch before it reads the
// worker's drain: this always happens to a connection opened while paused, since the hello that precedes
// the drain already makes the queue hand out work. A pause that releases hands such a batch straight back
// and runs nothing; a pause that holds (a rest between batches) runs it.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Coordinator, startCoordinator } from "../../scripts/lib/wrangler-dev.ts";
import type { ItemResult } from "../../shared/index.ts";
import type { LoadedModel } from "../../shared/runner/model-runner.ts";
import { ModelConnection } from "../../shared/worker-loop/model-connection.ts";
import { openSocket } from "../../worker-gpu/worker.ts";
import { BUNDLED_REGISTRY_URL, loadReferenceModels, REVIEW_TEXTS } from "../support/reference-models.ts";
import { waitUntil } from "../support/wait-until.ts";

const registry = JSON.parse(readFileSync(BUNDLED_REGISTRY_URL, "utf8"));
const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-e2e-pause-"));
let coordinator: Coordinator;
let models = new Map<string, LoadedModel>();
const open: ModelConnection[] = [];

beforeAll(async () => {
  coordinator = await startCoordinator({
    persistTo,
    vars: { API_KEYS: "k", WORKER_TOKENS: "w", MODELS: JSON.stringify(registry) },
  });
  models = await loadReferenceModels(registry);
});

afterAll(async () => {
  for (const c of open) await c.drain(0);
  await coordinator?.stop();
  for (const m of models.values()) await m.dispose();
  rmSync(persistTo, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const API = { Authorization: "Bearer k", "Content-Type": "application/json" };

async function enqueue(model: string, inputs: unknown[]): Promise<string> {
  const res = await fetch(`${coordinator.url}/v1/infer`, {
    method: "POST",
    headers: API,
    body: JSON.stringify({ model, inputs, wait: false, timeout_ms: 60_000 }),
  });
  expect(res.status).toBe(202);
  return ((await res.json()) as { id: string }).id;
}

async function job(id: string): Promise<{ status: string; outputs?: unknown[] }> {
  return (await (await fetch(`${coordinator.url}/v1/jobs/${id}`, { headers: API })).json()) as never;
}

/** A connection to the coordinator for `model`, counting the batches it runs. */
function connect(name: string, workerId: string) {
  const model = models.get(name) as LoadedModel;
  const runs: number[] = [];
  const connection = new ModelConnection({
    coordinator: coordinator.url,
    token: () => "w",
    openSocket,
    model,
    run: (inputs: readonly unknown[]): Promise<ItemResult[]> => {
      runs.push(inputs.length);
      return model.run(inputs);
    },
    info: { worker_id: workerId, pool: "gpu", device: model.device, max_batch_size: 32, max_concurrent_batches: 1 },
    hooks: { log: () => {} },
  });
  open.push(connection);
  return { connection, runs };
}

describe("a paused worker connection", () => {
  it("hands back a batch that arrives while paused with release, and serves it once resumed", async () => {
    const id = await enqueue("sentiment", REVIEW_TEXTS);
    const { connection, runs } = connect("sentiment", "paused-release");
    connection.pause(true);
    connection.start();
    await waitUntil(() => connection.connected, "the connection");
    // The hello had the queue push the waiting batch before the drain was read; it came back unrun.
    await sleep(1_000);
    expect(runs).toEqual([]);
    expect((await job(id)).status).toBe("queued");

    connection.resume();
    await waitUntil(async () => (await job(id)).status === "succeeded", "the job");
    expect(runs).toEqual([REVIEW_TEXTS.length]);
    const want = await (models.get("sentiment") as LoadedModel).run(REVIEW_TEXTS);
    expect((await job(id)).outputs).toEqual(want.map((r) => ("output" in r ? r.output : r)));
  });

  it("runs a batch that arrives while paused to hold (a rest between batches), and takes no more", async () => {
    const first = await enqueue("embedder", REVIEW_TEXTS);
    const { connection, runs } = connect("embedder", "paused-hold");
    connection.pause(false);
    connection.start();
    await waitUntil(async () => (await job(first)).status === "succeeded", "the first job");
    expect(runs).toEqual([REVIEW_TEXTS.length]);

    // Now the coordinator has read the drain: new work waits for the resume.
    const second = await enqueue("embedder", REVIEW_TEXTS.slice(0, 3));
    await sleep(1_000);
    expect((await job(second)).status).toBe("queued");
    connection.resume();
    await waitUntil(async () => (await job(second)).status === "succeeded", "the second job");
    expect(runs).toEqual([REVIEW_TEXTS.length, 3]);
  });
});
