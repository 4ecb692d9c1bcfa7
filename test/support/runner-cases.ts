// The model-runner conformance cases every runner must pass, whatever runs them: onnxruntime-node in this
// process, onnxruntime-web in a Node worker thread (--runtime web), onnxruntime-web in Chromium's Web
// Worker, on wasm and WebGPU. Each runner loads the same registry entries; its answers must match
// onnxruntime-node's to 1e-4 (scores, logits, embedding components), and padding must change nothing to 1e-4.
import { existsSync, readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelConfig, ModelRegistry } from "../../shared/config/model-config.ts";
import type { ItemResult } from "../../shared/protocol/worker.ts";
import { loadModel } from "../../shared/runner/load-model.ts";
import type { LoadedModel } from "../../shared/runner/model-runner.ts";
import { createTokenizer } from "../../shared/tasks/tokenizer.ts";
import { nodeFetch } from "../../worker-gpu/runner/file-fetch.ts";
import { createOrtNodeFactory } from "../../worker-gpu/runner/ort-node-session.ts";
import { BUNDLED_REGISTRY_URL } from "./reference-models.ts";

/** What a runner under test gives back for a model: the device that runs it, and its runs. */
export interface Runnable {
  device: string;
  run(inputs: unknown[]): Promise<ItemResult[]>;
}

export interface RunnerUnderTest {
  /** The device every model must report. */
  device: string;
  /** Loads these registry entries (relative to the bundled registry); answers them by name. */
  loadAll(specs: ModelConfig[]): Promise<Map<string, Runnable>>;
  close(): Promise<void>;
}

/** Debian's chromium package ships SwiftShader's Vulkan driver: a software GPU that Dawn accepts (lavapipe it refuses). */
export const SWIFTSHADER_ICD = "/usr/lib/chromium/vk_swiftshader_icd.json";

/**
 * Points the Vulkan loader at SwiftShader unless the environment names a driver already, so the WebGPU
 * cases run on machines with no GPU (CI installs libvulkan1 and chromium). Call before any thread starts:
 * the loader reads the process environment when Dawn first asks for an adapter.
 */
export function useSoftwareVulkan(): void {
  if (process.env.VK_ICD_FILENAMES || process.env.VK_DRIVER_FILES) return;
  if (!existsSync(SWIFTSHADER_ICD)) throw new Error(`no ${SWIFTSHADER_ICD}: apt-get install libvulkan1 chromium`);
  process.env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;
}

const registry = ModelRegistry.parse(JSON.parse(readFileSync(BUNDLED_REGISTRY_URL, "utf8")));

/** A bundled registry entry, optionally renamed: its files stay the original model's folder. */
export function bundledSpec(name: string, overrides: Partial<ModelConfig> = {}): ModelConfig {
  const entry = registry.models.find((m) => m.name === name);
  const files = entry?.files && { ...entry.files, base_url: `./${name}/` };
  return ModelConfig.parse({ ...entry, files, ...overrides });
}

/** The entries the cases load: the two bundled models, the classifier raw, and the classifier truncated. */
export const CONFORMANCE_SPECS = [
  bundledSpec("sentiment"),
  bundledSpec("embedder"),
  bundledSpec("sentiment", { name: "sentiment-logits", task: "tensor" }),
  bundledSpec("sentiment", { name: "sentiment-short", max_sequence_length: 4 }),
];

const tokenizer = createTokenizer(
  JSON.parse(readFileSync(new URL("sentiment/tokenizer.json", BUNDLED_REGISTRY_URL), "utf8")),
  JSON.parse(readFileSync(new URL("sentiment/tokenizer_config.json", BUNDLED_REGISTRY_URL), "utf8")),
);
const idsOf = (text: string) => tokenizer(text, { return_tensor: false }).input_ids as number[];
/** A tensor-task item for the classifier: INT64 ids and mask of one shape. */
const tensorItem = (ids: number[], mask: number[], shape: number[]) => [
  { name: "input_ids", shape, datatype: "INT64", data: ids },
  { name: "attention_mask", shape, datatype: "INT64", data: mask },
];

const TEXTS = ["I love this", "this is terrible", "the pizza was delicious and the crust was perfect", "okay"];

const ok = (r: ItemResult | undefined) => {
  if (!r || !("output" in r)) throw new Error(`expected an output, got ${JSON.stringify(r)}`);
  return r.output as never;
};
const errorOf = (r: ItemResult | undefined) => (r && "error" in r ? r.error : undefined);
const dot = (a: number[], b: number[]) => a.reduce((s, v, i) => s + v * (b[i] as number), 0);
const flat = (r: ItemResult | undefined): number[] =>
  (ok(r) as (number | { score: number })[]).map((x) => (typeof x === "number" ? x : x.score));
const expectClose = (a: number[], b: number[], tol: number) => {
  expect(a.length).toBe(b.length);
  for (let i = 0; i < a.length; i++) expect(Math.abs((a[i] as number) - (b[i] as number))).toBeLessThan(tol);
};

/** Registers the conformance cases for one runner. */
export function describeRunner(label: string, make: () => Promise<RunnerUnderTest>, timeoutMs = 120_000): void {
  // Every case may be the first run of a shader on a software GPU: each gets the whole budget.
  describe(`model runner conformance: ${label}`, { timeout: timeoutMs }, () => {
    let runner: RunnerUnderTest;
    let models = new Map<string, Runnable>();
    const reference = new Map<string, LoadedModel>();
    const model = (name: string) => models.get(name) as Runnable;

    beforeAll(async () => {
      runner = await make();
      models = await runner.loadAll(CONFORMANCE_SPECS);
      const factory = createOrtNodeFactory({ warn: () => {} });
      for (const spec of CONFORMANCE_SPECS) {
        reference.set(
          spec.name,
          await loadModel(spec, factory, { registryUrl: BUNDLED_REGISTRY_URL, fetch: nodeFetch, devices: ["cpu"] }),
        );
      }
    }, timeoutMs);

    afterAll(async () => {
      await runner?.close();
      for (const m of reference.values()) await m.dispose();
    });

    it("reports the device that ran", () => {
      expect([...models.keys()]).toEqual(CONFORMANCE_SPECS.map((s) => s.name));
      for (const m of models.values()) expect(m.device).toBe(runner.device);
    });

    it("classifies the probe sentences, scores softmaxed and sorted", async () => {
      const [pos, neg] = await model("sentiment").run(["I love this", "this is terrible"]);
      const p = ok(pos) as { label: string; score: number }[];
      const n = ok(neg) as { label: string; score: number }[];
      expect(p[0]?.label).toBe("POSITIVE");
      expect(n[0]?.label).toBe("NEGATIVE");
      for (const scores of [p, n]) {
        expect(scores.map((s) => s.label).sort()).toEqual(["NEGATIVE", "POSITIVE"]);
        expect((scores[0]?.score ?? 0) >= (scores[1]?.score ?? 1)).toBe(true);
        expect(scores.reduce((a, s) => a + s.score, 0)).toBeCloseTo(1, 6);
      }
    });

    it("embeds to unit vectors where similar sentences are closer than unrelated ones", async () => {
      const [a, b, c] = (
        await model("embedder").run([
          "the pizza was delicious",
          "this pasta tastes amazing",
          "the flight was delayed for hours",
        ])
      ).map((r) => ok(r) as number[]);
      for (const v of [a, b, c] as number[][]) {
        expect(v).toHaveLength(64);
        expect(Math.sqrt(dot(v, v))).toBeCloseTo(1, 5);
      }
      expect(dot(a as number[], b as number[])).toBeGreaterThan(dot(a as number[], c as number[]) + 0.2);
    });

    it("answers a batch as it answers each input alone (padding changes nothing)", async () => {
      for (const name of ["sentiment", "embedder"]) {
        const batch = await model(name).run(TEXTS);
        for (const [i, text] of TEXTS.entries()) {
          const [single] = await model(name).run([text]);
          expectClose(flat(batch[i]), flat(single), 1e-4);
        }
      }
    });

    it("answers as onnxruntime-node does, to 1e-4", async () => {
      for (const name of ["sentiment", "embedder"]) {
        const got = await model(name).run(TEXTS);
        const want = await (reference.get(name) as LoadedModel).run(TEXTS);
        for (const [i, r] of want.entries()) expectClose(flat(got[i]), flat(r), 1e-4);
      }
    });

    it("truncates at max_sequence_length", async () => {
      // Longer than its four tokens, within the 4 * 64 characters it takes (shared/tasks/text-item.ts).
      const long = `I love this ${"and the crust was perfect ".repeat(9)}`;
      // Both keep only their first four tokens, "[CLS] i love this", so they score the same.
      const [a] = await model("sentiment-short").run([long]);
      const [b] = await model("sentiment-short").run(["I love this and more"]);
      expectClose(flat(a), flat(b), 1e-5);
    });

    it("fails bad items alone, saying what is wrong, and runs the rest", async () => {
      for (const name of ["sentiment", "embedder"]) {
        const results = await model(name).run(["", 42, "I love this", null, "   ", { text: "x" }]);
        expect(results).toHaveLength(6);
        expect(errorOf(results[0])).toMatchObject({
          code: "invalid_input",
          message: expect.stringMatching(/empty string/),
        });
        expect(errorOf(results[1])?.message).toMatch(/non-empty string, got a number/);
        expect(errorOf(results[3])?.message).toMatch(/got null/);
        expect(errorOf(results[4])?.message).toMatch(/got only whitespace/);
        expect(errorOf(results[5])?.message).toMatch(/got an object/);
        const [tooLong] = await model(name).run(["word ".repeat(100_000 / 5 + 1)]);
        expect(errorOf(tooLong)?.message).toMatch(/100005 characters; the most is /);
        expectClose(flat(results[2]), flat((await model(name).run(["I love this"]))[0]), 1e-5);
      }
    });

    it("ignores masked padding in the model itself: a short row padded beside a long one scores as alone", async () => {
      // Below the tokenizer: the runner is handed [PAD] ids under attention_mask 0, as any client may send.
      const short = idsOf("okay");
      const long = idsOf("the pizza was delicious and the crust was perfect");
      const padded = [...short, ...long.slice(short.length).map(() => 0)];
      const mask = [...short.map(() => 1), ...long.slice(short.length).map(() => 0), ...long.map(() => 1)];
      const [both, alone] = await model("sentiment-logits").run([
        tensorItem([...padded, ...long], mask, [2, long.length]),
        tensorItem(
          short,
          short.map(() => 1),
          [1, short.length],
        ),
      ]);
      const [logits] = ok(both) as { data: number[] }[];
      const [want] = ok(alone) as { data: number[] }[];
      expect(logits?.data).toHaveLength(4);
      expectClose((logits?.data ?? []).slice(0, 2), want?.data ?? [], 1e-4);
    });

    it("round-trips raw tensors: the classifier's logits give its scores", async () => {
      const ids = idsOf("I love this");
      const [result, missing] = await model("sentiment-logits").run([
        tensorItem(
          ids,
          ids.map(() => 1),
          [1, ids.length],
        ),
        [{ name: "input_ids", shape: [1, 2], datatype: "INT64", data: [2, 3] }],
      ]);
      const [out] = ok(result) as { name: string; shape: number[]; datatype: string; data: [number, number] }[];
      expect(out).toMatchObject({ name: "logits", shape: [1, 2], datatype: "FP32" });
      const [neg, pos] = (out as { data: [number, number] }).data;
      const [scores] = await model("sentiment").run(["I love this"]);
      const positive = (ok(scores) as { label: string; score: number }[]).find((s) => s.label === "POSITIVE");
      expect(positive?.score).toBeCloseTo(1 / (1 + Math.exp(neg - pos)), 5);
      expect(errorOf(missing)?.message).toMatch(/missing input attention_mask/);
    });
  });
}
