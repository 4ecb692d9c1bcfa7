// Dead letters end to end (issue 17, point 2): `wrangler dev`, gpt-tiny allowed one delivery, a real worker
// process (test/support/stalling-worker.ts) that takes the item and is killed with SIGKILL mid-stream, so the
// item is dead-lettered with its last error; an operator lists it, a plain edgeswarm-worker process starts, and
// the replay runs it to the answer an uninterrupted run gives. Caller keys may do none of it.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EdgeSwarmClient } from "../../client/sdk/index.ts";
import { startNodeProcess, startWorker, stopAll, type WorkerProcess } from "../../scripts/lib/worker-process.ts";
import { type Coordinator, startCoordinator } from "../../scripts/lib/wrangler-dev.ts";
import { ModelConfig } from "../../shared/config/model-config.ts";
import { loadModel } from "../../shared/runner/load-model.ts";
import type { LoadedModel } from "../../shared/runner/model-runner.ts";
import { nodeFetch } from "../../worker-gpu/runner/file-fetch.ts";
import { createOrtNodeFactory } from "../../worker-gpu/runner/ort-node-session.ts";

const STALLING = fileURLToPath(new URL("../support/stalling-worker.ts", import.meta.url));
const registryUrl = new URL("../../models/registry.json", import.meta.url);
const bundled = JSON.parse(readFileSync(registryUrl, "utf8"));
const gptTiny = { ...bundled.models.find((m: { name: string }) => m.name === "gpt-tiny"), max_attempts: 1 };
const registry = { ...bundled, models: [gptTiny] };
const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-e2e-dead-letters-"));
const OPERATOR = { Authorization: "Bearer op", "Content-Type": "application/json" };
let coordinator: Coordinator;
let model: LoadedModel;
const processes: WorkerProcess[] = [];

beforeAll(async () => {
  coordinator = await startCoordinator({
    persistTo,
    vars: { API_KEYS: "k", WORKER_TOKENS: "w", OPERATOR_KEYS: "op", MODELS: JSON.stringify(registry) },
  });
  model = await loadModel(ModelConfig.parse(gptTiny), createOrtNodeFactory(), {
    registryUrl,
    fetch: nodeFetch,
    devices: ["cpu"],
  });
}, 180_000);

afterAll(async () => {
  await stopAll(processes);
  await coordinator?.stop();
  await model?.dispose();
  rmSync(persistTo, { recursive: true, force: true });
});

const workerArgs = (id: string) => ["--coordinator", coordinator.url, "--token", "w", "--worker-id", id, "--port", "0"];

async function admin(path: string, init: RequestInit = {}, headers: Record<string, string> = OPERATOR) {
  const res = await fetch(`${coordinator.url}${path}`, { ...init, headers });
  return { status: res.status, body: (await res.json()) as any };
}

describe("dead letters", () => {
  it("an item whose only delivery died is listed with its error, and replayed to the right answer", async () => {
    const input = { prompt: "<|user|>tell me about the trip.<|end|><|assistant|>", params: { max_new_tokens: 24 } };
    const [direct] = await model.run([input]);

    const doomed = startNodeProcess(["--import", "tsx", STALLING, ...workerArgs("doomed")], {
      EDGESWARM_STALL_AFTER: "2",
    });
    processes.push(doomed);
    await doomed.waitFor(/\[gpt-tiny\] connected/, 120_000);
    const client = new EdgeSwarmClient({ baseUrl: coordinator.url, apiKey: "k", maxRetries: 0 });
    const { id } = await client.submit("gpt-tiny", [input], { timeout_ms: 300_000 });
    await doomed.waitFor(/stalled after 2 tokens/, 120_000);
    doomed.child.kill("SIGKILL");
    await doomed.exited;

    let listed = await admin("/v1/models/gpt-tiny/dead-letters");
    for (let i = 0; i < 300 && listed.body.total === 0; i++) {
      await new Promise((r) => setTimeout(r, 200));
      listed = await admin("/v1/models/gpt-tiny/dead-letters");
    }
    expect(listed.status).toBe(200);
    expect(listed.body.total).toBe(1);
    expect(listed.body.dead_letters[0]).toMatchObject({
      job_id: id,
      index: 0,
      attempts: 1,
      job_status: "failed",
      error: { code: "max_attempts_exceeded" },
    });
    expect(listed.body.dead_letters[0].error.message).toMatch(/^failed after 1 attempts; last error/);
    expect((await client.job(id)).status).toBe("failed");

    // Caller keys list and replay nothing.
    expect((await admin("/v1/models/gpt-tiny/dead-letters", {}, { Authorization: "Bearer k" })).status).toBe(403);

    const next = startWorker(workerArgs("next"));
    processes.push(next);
    await next.waitFor(/\[gpt-tiny\] connected/, 120_000);
    const replayed = await admin("/v1/models/gpt-tiny/dead-letters/replay", {
      method: "POST",
      body: JSON.stringify({ job_ids: [id] }),
    });
    expect(replayed).toEqual({ status: 200, body: { model: "gpt-tiny", replayed: 1, jobs: [id] } });
    const done = await client.waitForJob(id);
    expect(done).toMatchObject({ status: "succeeded", outputs: [(direct as { output: unknown }).output] });
    expect((await admin("/v1/models/gpt-tiny/dead-letters")).body.total).toBe(0);
  }, 300_000);
});
