// Donated generation checked by a teacher-forced pass, end to end (issue 14, point 8): `wrangler dev`, a real
// gpu-pool worker process (edgeswarm-worker, gpt-tiny on onnxruntime-node) and real donor processes
// (test/support/donor-process.ts: gpt-tiny on onnxruntime-web, wasm) speaking the real protocol from their own
// loopback addresses, verification as shipped (strict). An honest donor's output reaches the caller once the gpu
// worker's check agrees; a donor that substitutes tokens (and lets the model write on from them, so its output
// reads well) never gets one to a caller and is quarantined.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorker, type WorkerProcess } from "../../scripts/lib/worker-process.ts";
import { type Coordinator, startCoordinator } from "../../scripts/lib/wrangler-dev.ts";
import { ModelRegistry } from "../../shared/index.ts";
import type { LoadedModel } from "../../shared/runner/model-runner.ts";
import {
  DONOR_ORIGIN,
  type DonorOptions,
  type DonorProcess,
  donorCoordinatorVars,
  startDonor,
} from "../support/donor-launcher.ts";
import { counterOf, directGenerations, pinnedGenerations } from "../support/generation-calls.ts";
import { BUNDLED_REGISTRY_URL, loadReferenceModels } from "../support/reference-models.ts";

const bundled = ModelRegistry.parse(JSON.parse(readFileSync(BUNDLED_REGISTRY_URL, "utf8")));
const gptTiny = bundled.models.find((m) => m.name === "gpt-tiny");
// No canaries (a generation canary would compare whole outputs, not what is tested here); a caught donor stays so.
const registry = { models: [{ ...gptTiny, verification: { canary_rate: 0, quarantine_ms: 600_000 } }] };
const PROMPTS = ["the hotel room", "<|user|>how was the film?<|end|><|assistant|>", "the pizza was", "the concert"];
const PARAMS = { max_new_tokens: 24 };

const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-e2e-donor-generation-"));
let coordinator: Coordinator;
let gpu: WorkerProcess;
let reference: LoadedModel;
const donors: DonorProcess[] = [];

beforeAll(async () => {
  coordinator = await startCoordinator({ persistTo, vars: donorCoordinatorVars(registry) });
  gpu = startWorker(["--coordinator", coordinator.url, "--token", "w", "--worker-id", "gpu-1", "--port", "0"]);
  await gpu.waitFor(/\[gpt-tiny\] connected/, 120_000);
  reference = (await loadReferenceModels(registry)).get("gpt-tiny") as LoadedModel;
}, 180_000);

afterAll(async () => {
  await Promise.all(donors.map((d) => d.stop().catch(() => undefined)));
  gpu?.child.kill("SIGTERM");
  await gpu?.exited;
  await coordinator?.stop();
  await reference?.dispose();
  rmSync(persistTo, { recursive: true, force: true });
});

async function donor(opts: Pick<DonorOptions, "mode" | "localAddress">): Promise<DonorProcess> {
  const d = startDonor({
    coordinator: coordinator.url,
    siteKey: "site",
    origin: DONOR_ORIGIN,
    model: "gpt-tiny",
    maxBatchSize: 4,
    ...opts,
  });
  donors.push(d);
  await d.ready();
  return d;
}

const generate = () => pinnedGenerations(coordinator.url, "gpt-tiny", PROMPTS, PARAMS);
const expected = () => directGenerations(reference, PROMPTS, PARAMS);
const counter = (name: string, pool: string, above = -1) =>
  counterOf(coordinator.url, name, { model: "gpt-tiny", pool }, above);

describe("donated generation, checked by one teacher-forced pass on the gpu worker", () => {
  it("an honest donor's outputs reach the caller once the check agrees: onnxruntime-node's greedy text", async () => {
    const before = await counter("edgeswarm_verification_agreements_total", "gpu");
    const honest = await donor({ mode: "honest", localAddress: "127.0.40.1" });
    expect(await generate()).toEqual(await expected());
    const report = await honest.stop();
    expect(report.items).toBeGreaterThan(0);
    expect(report.lies).toBe(0);
    // The donor's runs were released on the gpu worker's verdicts, none disputed.
    expect(await counter("edgeswarm_verification_agreements_total", "gpu", before)).toBeGreaterThan(before);
    expect(await counter("edgeswarm_workers_quarantined_total", "browser")).toBe(0);
    // ...and the gpu worker generated nothing: it checked each output in one pass.
    expect(await counter("edgeswarm_generated_tokens_total", "gpu")).toBe(0);
  }, 180_000);

  it("a donor that substitutes tokens gets none to a caller, and is quarantined", async () => {
    const liar = await donor({ mode: "substitute", localAddress: "127.0.41.1" });
    const want = await expected();
    expect(await generate()).toEqual(want);
    const report = await liar.stop();
    expect(report.lies).toBeGreaterThan(0);
    expect(await counter("edgeswarm_workers_quarantined_total", "browser", 0)).toBeGreaterThan(0);
    expect(await counter("edgeswarm_verification_disagreements_total", "gpu", 0)).toBeGreaterThan(0);
    // Caught by the check's verdict, which names the substituted token and the model's own pick.
    expect(liar.process.output()).toMatch(
      /coordinator error quarantined: .*disagreed with a trusted run's \(token \d+: token \d+ is \d+; the model picks \d+ there\)/,
    );
  }, 180_000);
});
