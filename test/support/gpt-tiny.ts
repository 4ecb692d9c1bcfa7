// The bundled decoder (models/gpt-tiny) as the node suites load it: its registry entry, the registry's URL for
// the real loading code, a model on onnxruntime-node ("cpu") or onnxruntime-web ("wasm"), and an item's output.
import { readFileSync } from "node:fs";
import { afterAll, beforeAll } from "vitest";
import { ModelConfig, ModelRegistry } from "../../shared/config/model-config.ts";
import type { GenerationOutput } from "../../shared/protocol/generation.ts";
import type { ItemResult } from "../../shared/protocol/worker.ts";
import { loadModel } from "../../shared/runner/load-model.ts";
import type { LoadedModel, SessionFactory } from "../../shared/runner/model-runner.ts";
import { createOrtWebFactory } from "../../shared/runner/ort-web-session.ts";
import { nodeFetch } from "../../worker-gpu/runner/file-fetch.ts";
import { createOrtNodeFactory } from "../../worker-gpu/runner/ort-node-session.ts";

export const registryUrl = new URL("../../models/registry.json", import.meta.url);
const registry = ModelRegistry.parse(JSON.parse(readFileSync(registryUrl, "utf8")));
export const gptTiny = ModelConfig.parse(registry.models.find((m) => m.name === "gpt-tiny"));

/** gpt-tiny loaded by the real loading code; `factory` stands in for the runtime's own (to count its runs). */
export function loadGptTiny(device: "cpu" | "wasm", factory?: SessionFactory): Promise<LoadedModel> {
  const runtime = factory ?? (device === "cpu" ? createOrtNodeFactory() : createOrtWebFactory());
  return loadModel(gptTiny, runtime, { registryUrl, fetch: nodeFetch, devices: [device] });
}

/** An item's generated output, or a thrown error saying what came instead. */
export function generationOutput(r: ItemResult | undefined): GenerationOutput {
  if (!r || !("output" in r)) throw new Error(`expected an output, got ${JSON.stringify(r)}`);
  return r.output as GenerationOutput;
}

/** gpt-tiny on onnxruntime-node and onnxruntime-web for a suite: loaded before its tests, disposed after them. */
export function gptTinyOnBothRuntimes(): { node: LoadedModel; web: LoadedModel } {
  const models = {} as { node: LoadedModel; web: LoadedModel };
  beforeAll(async () => {
    models.node = await loadGptTiny("cpu");
    models.web = await loadGptTiny("wasm");
  }, 60_000);
  afterAll(async () => {
    await models.node?.dispose();
    await models.web?.dispose();
  });
  return models;
}

/** A review as a JSON Schema: structured outputs' example in tests and bench:structured. */
export const REVIEW_SCHEMA = {
  type: "object",
  properties: {
    sentiment: { enum: ["positive", "negative"] },
    stars: { type: "integer" },
    summary: { type: "string", minLength: 3, maxLength: 24 },
    tags: { type: "array", items: { type: "string", maxLength: 12 }, maxItems: 3 },
  },
  required: ["sentiment", "stars", "summary"],
  additionalProperties: false,
};
