// A generating worker process killed with SIGKILL mid-stream (issue 14, point 4), end to end: `wrangler dev`, a
// real worker process (test/support/stalling-worker.ts: edgeswarm-worker's own loop and gpt-tiny on
// onnxruntime-node, holding its batch once two tokens are out, so it is mid-stream however fast the machine is)
// killed by the kernel, then a plain edgeswarm-worker process that takes the item over. The caller reads the job's
// events with the SDK: the tokens it gets add up to an uninterrupted run's, none lost or repeated, and so does the text.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EdgeSwarmClient } from "../../client/sdk/index.ts";
import { startNodeProcess, startWorker, stopAll, type WorkerProcess } from "../../scripts/lib/worker-process.ts";
import { type Coordinator, startCoordinator } from "../../scripts/lib/wrangler-dev.ts";
import { ModelConfig } from "../../shared/config/model-config.ts";
import type { GenerationOutput } from "../../shared/protocol/generation.ts";
import { loadModel } from "../../shared/runner/load-model.ts";
import type { LoadedModel } from "../../shared/runner/model-runner.ts";
import { nodeFetch } from "../../worker-gpu/runner/file-fetch.ts";
import { createOrtNodeFactory } from "../../worker-gpu/runner/ort-node-session.ts";

const STALLING = fileURLToPath(new URL("../support/stalling-worker.ts", import.meta.url));
const registryUrl = new URL("../../models/registry.json", import.meta.url);
const registry = JSON.parse(readFileSync(registryUrl, "utf8"));
const spec = ModelConfig.parse(registry.models.find((m: { name: string }) => m.name === "gpt-tiny"));
const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-e2e-generation-kill-"));
const STALL_AFTER = 2;
let coordinator: Coordinator;
let model: LoadedModel;
const processes: WorkerProcess[] = [];

beforeAll(async () => {
  coordinator = await startCoordinator({
    persistTo,
    vars: { API_KEYS: "k", WORKER_TOKENS: "w", MODELS: JSON.stringify(registry) },
  });
  model = await loadModel(spec, createOrtNodeFactory(), { registryUrl, fetch: nodeFetch, devices: ["cpu"] });
}, 180_000);

afterAll(async () => {
  await stopAll(processes);
  await coordinator?.stop();
  await model?.dispose();
  rmSync(persistTo, { recursive: true, force: true });
});

const workerArgs = (id: string) => ["--coordinator", coordinator.url, "--token", "w", "--worker-id", id, "--port", "0"];

describe("a generating worker process killed with SIGKILL mid-stream", () => {
  it.each([
    ["greedy", { max_new_tokens: 40 }],
    ["seeded sampling", { max_new_tokens: 40, temperature: 0.9, seed: 11 }],
  ])(
    "%s: the next worker goes on from the tokens accepted, and the caller gets an uninterrupted run's text",
    async (_name, params) => {
      const prompt = "<|user|>tell me about the trip.<|end|><|assistant|>";
      const [direct] = await model.run([{ prompt, params }]);
      const expected = (direct as { output: GenerationOutput }).output;
      expect(expected.tokens.length).toBeGreaterThan(STALL_AFTER + 1);

      const doomed = startNodeProcess(["--import", "tsx", STALLING, ...workerArgs("gen-doomed")], {
        EDGESWARM_STALL_AFTER: String(STALL_AFTER),
      });
      processes.push(doomed);
      await doomed.waitFor(/\[gpt-tiny\] connected/, 120_000);
      const client = new EdgeSwarmClient({ baseUrl: coordinator.url, apiKey: "k", maxRetries: 0 });
      const events = client.inferStream("gpt-tiny", [{ prompt, params }], { timeout_ms: 120_000 });
      const tokens: number[] = [];
      let text = "";
      let output: GenerationOutput | undefined;
      let end = "";
      const read = async (until: () => boolean) => {
        while (!until()) {
          const next = await events.next();
          if (next.done) return;
          const e = next.value;
          if (e.event === "token") {
            expect(e.data.offset).toBe(tokens.length); // none repeated, none skipped
            tokens.push(...e.data.tokens);
            text += e.data.text;
          } else if (e.event === "output") output = e.data.output as GenerationOutput;
          else if (e.event !== "queued" && e.event !== "leased") end = e.event;
        }
      };
      // The caller has the first tokens: the worker is mid-stream, holding the rest. Now the kernel ends it.
      await read(() => tokens.length >= STALL_AFTER);
      expect(tokens).toEqual(expected.tokens.slice(0, STALL_AFTER));
      doomed.child.kill("SIGKILL");
      expect(await doomed.exited).toBeNull();
      expect(doomed.child.signalCode).toBe("SIGKILL");
      // A plain worker takes the item over, with the tokens already accepted, and the stream goes on.
      const next = startWorker(workerArgs(`gen-next-${_name.replace(/\W/g, "")}`));
      processes.push(next);
      await read(() => end !== "");
      expect(end).toBe("completed");
      expect(tokens).toEqual(expected.tokens);
      expect(output).toEqual(expected);
      // The streamed text is the answer's, bar what the worker holds back until the end (a partial character).
      expect(expected.generated_text.startsWith(text)).toBe(true);
      next.child.kill("SIGTERM");
      await next.exited;
    },
    240_000,
  );
});
