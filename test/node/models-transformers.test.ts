// The bundled folders are standard Hugging Face models: transformers.js pipelines load them from disk and
// compute what our runner computes (its pooling of last_hidden_state matches the model's sentence_embedding).
import { fileURLToPath } from "node:url";
import { env, pipeline } from "@huggingface/transformers";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelRegistry } from "../../shared/config/model-config.ts";
import { loadModel } from "../../shared/runner/load-model.ts";
import type { LoadedModel } from "../../shared/runner/model-runner.ts";
import { nodeFetch } from "../../worker-gpu/runner/file-fetch.ts";
import { createOrtNodeFactory } from "../../worker-gpu/runner/ort-node-session.ts";

const registryUrl = new URL("../../models/registry.json", import.meta.url);
const TEXTS = ["I love this", "this is terrible", "the pizza was delicious", "the flight was delayed for hours"];

describe("bundled models in transformers.js", () => {
  const ours: Record<string, LoadedModel> = {};

  beforeAll(async () => {
    env.allowRemoteModels = false;
    env.localModelPath = fileURLToPath(new URL("../../models/", import.meta.url));
    const registry = ModelRegistry.parse(JSON.parse(await (await nodeFetch(registryUrl.href)).text()));
    const factory = createOrtNodeFactory();
    for (const spec of registry.models) {
      ours[spec.name] = await loadModel(spec, factory, { registryUrl, fetch: nodeFetch, devices: ["cpu"] });
    }
  });
  afterAll(async () => {
    for (const model of Object.values(ours)) await model.dispose();
  });

  it("text-classification pipeline gives our labels and scores", async () => {
    const classify = await pipeline("text-classification", "sentiment", { dtype: "fp32" });
    const theirs = (await classify(TEXTS, { top_k: null })) as unknown as { label: string; score: number }[][];
    const mine = await (ours.sentiment as LoadedModel).run(TEXTS);
    for (const [i, result] of mine.entries()) {
      const expected = (result as { output: { label: string; score: number }[] }).output;
      expect(theirs[i]?.map((s) => s.label)).toEqual(expected.map((s) => s.label));
      for (const [j, s] of (theirs[i] ?? []).entries())
        expect(s.score).toBeCloseTo(expected[j]?.score ?? Number.NaN, 5);
    }
    await classify.dispose();
  });

  it("feature-extraction pipeline (mean pooling, normalised) gives our vectors", async () => {
    const extract = await pipeline("feature-extraction", "embedder", { dtype: "fp32" });
    const theirs = (await extract(TEXTS, { pooling: "mean", normalize: true })).tolist() as number[][];
    const mine = await (ours.embedder as LoadedModel).run(TEXTS);
    for (const [i, result] of mine.entries()) {
      const vector = (result as { output: number[] }).output;
      expect(theirs[i]).toHaveLength(vector.length);
      for (const [j, v] of (theirs[i] ?? []).entries()) expect(Math.abs(v - (vector[j] as number))).toBeLessThan(1e-5);
    }
    await extract.dispose();
  });
});
