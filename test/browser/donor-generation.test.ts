// Generation in a real Chromium tab (issue 14): the demo page the real coordinator (`wrangler dev`) serves joins
// as a donor with the embed script, and its Web Worker generates with the bundled decoder (gpt-tiny) on
// onnxruntime-web's wasm. Callers' calls pinned to the browser pool get onnxruntime-node's greedy text, token for
// token: straight from the tab with verification off (its tokens streamed to the caller as it writes them), and
// with verification on once a real gpu worker's teacher-forced check agrees, the gpu worker generating nothing.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EdgeSwarmClient } from "../../client/sdk/index.ts";
import { startWorker, type WorkerProcess } from "../../scripts/lib/worker-process.ts";
import { type Coordinator, freePort, startCoordinator } from "../../scripts/lib/wrangler-dev.ts";
import { type DonorStatus, ModelRegistry } from "../../shared/index.ts";
import type { GenerationOutput } from "../../shared/protocol/generation.ts";
import type { LoadedModel } from "../../shared/runner/model-runner.ts";
import { waitForStatus } from "../support/browser-swarm.ts";
import { type Chromium, launchChromium } from "../support/chromium.ts";
import { counterOf, directGenerations, pinnedGenerations } from "../support/generation-calls.ts";
import { loadReferenceModels } from "../support/reference-models.ts";

const REGISTRY_URL = new URL("../../models/registry.json", import.meta.url);
const gptTiny = ModelRegistry.parse(JSON.parse(readFileSync(REGISTRY_URL, "utf8"))).models.find(
  (m) => m.name === "gpt-tiny",
);
const registry = {
  models: [
    { ...gptTiny, verification: { enabled: false } },
    // Verification as shipped but no canaries: the tab's outputs wait for a trusted check.
    {
      ...gptTiny,
      name: "gpt-tiny-verified",
      files: { ...gptTiny?.files, base_url: "./gpt-tiny/" },
      verification: { canary_rate: 0 },
    },
  ],
};
const PROMPTS = ["the hotel room", "<|user|>how was the film?<|end|><|assistant|>", "the pizza was", "the concert"];
const PARAMS = { max_new_tokens: 24 };

const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-browser-generation-"));
let coordinator: Coordinator;
let reference: LoadedModel;
let chromium: Chromium;
let page: Page;
let checker: WorkerProcess | undefined;

beforeAll(async () => {
  const port = await freePort();
  coordinator = await startCoordinator({
    persistTo,
    port,
    vars: {
      API_KEYS: "k",
      WORKER_TOKENS: "w",
      MODELS: JSON.stringify(registry),
      SITE_KEYS: JSON.stringify({ demo: { origins: [`http://127.0.0.1:${port}`] } }),
      DONOR_TOKEN_SECRET: "browser-test-secret",
    },
  });
  reference = (await loadReferenceModels({ models: [registry.models[0]] })).get("gpt-tiny") as LoadedModel;
  chromium = await launchChromium();
  page = await chromium.context.newPage();
  await page.goto(`${coordinator.url}/demo/#key=k`);
  await waitForStatus(
    page,
    (s) => s.state === "running" && s.models.length === 2 && s.models.every((m) => m.connected),
    120_000,
  );
}, 240_000);

afterAll(async () => {
  checker?.child.kill("SIGTERM");
  await checker?.exited;
  await chromium?.close();
  await coordinator?.stop();
  await reference?.dispose();
  rmSync(persistTo, { recursive: true, force: true });
});

const generate = (model: string) => pinnedGenerations(coordinator.url, model, PROMPTS, PARAMS);
const expected = () => directGenerations(reference, PROMPTS, PARAMS);

const itemsOf = async (model: string) =>
  ((await page.evaluate("window.EdgeSwarm.status()")) as DonorStatus).models.find((m) => m.name === model)?.items ?? 0;

const counter = (name: string, model: string, pool: string) => counterOf(coordinator.url, name, { model, pool });

describe("a tab generating with gpt-tiny on wasm", () => {
  it("writes onnxruntime-node's greedy text, token for token", async () => {
    const status = (await page.evaluate("window.EdgeSwarm.status()")) as DonorStatus;
    expect(status.models.find((m) => m.name === "gpt-tiny")?.device).toBe("wasm");
    expect(await generate("gpt-tiny")).toEqual(await expected());
    expect(await itemsOf("gpt-tiny")).toBeGreaterThanOrEqual(PROMPTS.length);
  }, 120_000);

  it("streams its tokens to the caller as it writes them", async () => {
    const client = new EdgeSwarmClient({ baseUrl: coordinator.url, apiKey: "k", maxRetries: 0 });
    const prompt = PROMPTS[1] as string;
    const streamed: number[] = [];
    let output: unknown;
    for await (const e of client.inferStream("gpt-tiny", [{ prompt, params: PARAMS }], { pool: "browser" })) {
      if (e.event === "token") streamed.push(...e.data.tokens);
      if (e.event === "output") output = e.data.output;
    }
    const [direct] = await reference.run([{ prompt, params: PARAMS }]);
    expect(output).toEqual((direct as { output: unknown }).output);
    expect(streamed).toEqual((output as GenerationOutput).tokens);
  }, 120_000);

  it("with verification on, its text reaches callers once a gpu worker's one-pass check agrees", async () => {
    checker = startWorker([
      ...["--coordinator", coordinator.url, "--token", "w", "--worker-id", "checker", "--port", "0"],
      ...["--models", "gpt-tiny-verified"],
    ]);
    await checker.waitFor(/\[gpt-tiny-verified\] connected/, 60_000);
    expect(await generate("gpt-tiny-verified")).toEqual(await expected());
    expect(await itemsOf("gpt-tiny-verified")).toBeGreaterThanOrEqual(PROMPTS.length);
    const agreed = counterOf(
      coordinator.url,
      "edgeswarm_verification_agreements_total",
      { model: "gpt-tiny-verified", pool: "gpu" },
      PROMPTS.length - 1,
    );
    expect(await agreed).toBeGreaterThanOrEqual(PROMPTS.length);
    expect(await counter("edgeswarm_generated_tokens_total", "gpt-tiny-verified", "gpu")).toBe(0);
    expect(await counter("edgeswarm_workers_quarantined_total", "gpt-tiny-verified", "browser")).toBe(0);
  }, 120_000);
});
