// What every SessionFactory that runs here (onnxruntime-node on cpu, onnxruntime-web on wasm) must do below
// the model level: refuse tampered files, run a batch as one inference run, carry every tensor datatype,
// check tensors per item, agree with each other and fall back. The model-level cases every runner passes
// (Node threads and Chromium included) are in test/support/runner-cases.ts.
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelConfig, ModelRegistry } from "../../shared/config/model-config.ts";
import type { ItemResult } from "../../shared/protocol/worker.ts";
import { loadModel } from "../../shared/runner/load-model.ts";
import { ModelFileError, sha256Hex } from "../../shared/runner/model-files.ts";
import type { InferenceSession, LoadedModel, SessionFactory } from "../../shared/runner/model-runner.ts";
import { createOrtWebFactory } from "../../shared/runner/ort-web-session.ts";
import { ORT_TYPE } from "../../shared/runner/wire-tensor.ts";
import { nodeFetch } from "../../worker-gpu/runner/file-fetch.ts";
import { createOrtNodeFactory } from "../../worker-gpu/runner/ort-node-session.ts";
import { OnnxGraph } from "../support/onnx-graph.ts";

const registryUrl = new URL("../../models/registry.json", import.meta.url);
const registry = ModelRegistry.parse(JSON.parse(readFileSync(registryUrl, "utf8")));
/** A registry entry, optionally renamed: the files stay the original model's folder. */
const spec = (name: string, overrides: Partial<ModelConfig> = {}) => {
  const entry = registry.models.find((m) => m.name === name);
  const files = entry?.files && { ...entry.files, base_url: `./${name}/` };
  return ModelConfig.parse({ ...entry, files, ...overrides });
};

const warnings: string[] = [];
const warn = (message: string) => warnings.push(message);

/** Counts session.run calls, to prove a batch is one inference run. */
function counting(factory: SessionFactory) {
  const counter = { runs: 0 };
  const wrapped: SessionFactory = {
    runtime: factory.runtime,
    devices: factory.devices,
    async create(model, devices) {
      const session = await factory.create(model, devices);
      const counted: InferenceSession = Object.create(session);
      counted.run = (feeds) => {
        counter.runs++;
        return session.run(feeds);
      };
      counted.release = () => session.release();
      return counted;
    },
  };
  return { factory: wrapped, counter };
}

/** A model built in memory, served by a fetch that knows only its bytes. */
async function fixture(name: string, bytes: Uint8Array) {
  const files = {
    base_url: `https://fixtures.invalid/${name}/`,
    model: { path: "model.onnx", sha256: await sha256Hex(bytes) },
  };
  return { spec: ModelConfig.parse({ name, task: "tensor", files }), fetch: async () => new Response(bytes) };
}

/** y = x W + b with x: FP32 [batch, 3], W = [[1, 2], [3, 4], [5, 6]], b = [0.5, -1]: a tiny real FP32 model. */
function affineGraph(): Uint8Array {
  const g = new OnnxGraph("affine");
  const x = g.input("x", "float32", ["batch", 3]);
  const product = g.node("MatMul", [x, g.floats("w", [3, 2], [1, 2, 3, 4, 5, 6])]);
  g.node("Add", [product, g.floats("b", [2], [0.5, -1])], {}, "y");
  g.output("y", "float32", ["batch", 2]);
  return g.encode("test fixture");
}

/** One Identity per wire datatype: what goes in must come back out, type and all. */
const WIRE_TYPES = ORT_TYPE;
function identityGraph(): Uint8Array {
  const g = new OnnxGraph("identity");
  for (const [wire, elem] of Object.entries(WIRE_TYPES)) {
    g.node("Identity", [g.input(`in_${wire}`, elem, ["batch", 2])], {}, `out_${wire}`);
    g.output(`out_${wire}`, elem, ["batch", 2]);
  }
  return g.encode("test fixture");
}

const ok = (r: ItemResult | undefined) => {
  if (!r || !("output" in r)) throw new Error(`expected an output, got ${JSON.stringify(r)}`);
  return r.output as never;
};
const errorOf = (r: ItemResult | undefined) => (r && "error" in r ? r.error : undefined);
const expectClose = (a: number[], b: number[], tol = 1e-4) => {
  expect(a.length).toBe(b.length);
  for (let i = 0; i < a.length; i++) expect(Math.abs((a[i] as number) - (b[i] as number))).toBeLessThan(tol);
};

const RUNTIMES = [
  { label: "onnxruntime-node (cpu)", make: () => createOrtNodeFactory({ warn }), devices: ["cpu"], device: "cpu" },
  { label: "onnxruntime-web (wasm)", make: () => createOrtWebFactory({ warn }), devices: ["wasm"], device: "wasm" },
];

const TEXTS = ["I love this", "this is terrible", "the pizza was delicious and the crust was perfect", "okay"];

describe.each(RUNTIMES)("model runner conformance: $label", ({ make, devices, device }) => {
  const { factory, counter } = counting(make());
  const models: LoadedModel[] = [];
  let sentiment: LoadedModel;
  let embedder: LoadedModel;
  let logits: LoadedModel;
  let affine: LoadedModel;
  let identity: LoadedModel;
  const load = async (s: ModelConfig, fetch = nodeFetch) => {
    const model = await loadModel(s, factory, { registryUrl, fetch, devices });
    models.push(model);
    return model;
  };

  beforeAll(async () => {
    sentiment = await load(spec("sentiment"));
    embedder = await load(spec("embedder"));
    logits = await load(spec("sentiment", { name: "sentiment-logits", task: "tensor" }));
    for (const [name, bytes] of [
      ["affine", affineGraph()],
      ["identity", identityGraph()],
    ] as const) {
      const { spec, fetch } = await fixture(name, bytes);
      const model = await load(spec, fetch);
      if (name === "affine") affine = model;
      else identity = model;
    }
  });

  afterAll(async () => {
    for (const model of models) await model.dispose();
    // Disposed means released: the session refuses further runs.
    await expect(sentiment.run(["I love this"])).rejects.toThrow(/released/);
  });

  it("refuses a file whose sha256 differs from the registry's, naming the file and both hashes", async () => {
    const good = spec("sentiment");
    const files = good.files as NonNullable<ModelConfig["files"]>;
    const wrong = "0".repeat(64);
    for (const key of ["model", "tokenizer"] as const) {
      const ref = files[key] as { path: string; sha256: string };
      const tampered = { ...good, files: { ...files, [key]: { ...ref, sha256: wrong } } };
      const error = await loadModel(tampered, factory, { registryUrl, fetch: nodeFetch, devices }).catch((e) => e);
      expect(error).toBeInstanceOf(ModelFileError);
      expect(error.code).toBe("integrity_mismatch");
      expect(error.message).toContain(`sentiment/${ref.path}`);
      expect(error.message).toContain(`sha256 is ${ref.sha256}`);
      expect(error.message).toContain(`expects ${wrong}`);
    }
  });

  it("reports the device and runtime that ran", () => {
    for (const model of models) {
      expect(model.device).toBe(device);
      expect(model.runtime).toBe(factory.runtime);
    }
  });

  it("runs a batch as one inference run, equal to single-item runs (padding changes nothing)", async () => {
    for (const model of [sentiment, embedder]) {
      const before = counter.runs;
      const batch = await model.run(TEXTS);
      expect(counter.runs - before).toBe(1);
      for (const [i, text] of TEXTS.entries()) {
        const [single] = await model.run([text]);
        const flat = (r: ItemResult | undefined) => {
          const out = ok(r) as number[] | { label: string; score: number }[];
          return out.map((x) => (typeof x === "number" ? x : x.score));
        };
        expectClose(flat(batch[i]), flat(single));
      }
    }
  });

  it("runs a batch's good items in one run beside its bad ones, and makes no run for only bad ones", async () => {
    // What each bad item's error says is a shared case (test/support/runner-cases.ts); here, the runs.
    for (const model of [sentiment, embedder]) {
      const before = counter.runs;
      const results = await model.run(["", 42, "I love this", null]);
      expect(counter.runs - before).toBe(1);
      expect(results.map((r) => "output" in r)).toEqual([false, false, true, false]);
    }
    const before = counter.runs;
    const none = await sentiment.run(["", 7]);
    expect(counter.runs).toBe(before);
    expect(none.every((r) => errorOf(r)?.code === "invalid_input")).toBe(true);
  });

  it("computes a FP32 model's outputs, batching same-shaped items into one run", async () => {
    const item = (row: number[]) => ({ shape: [1, 3], datatype: "FP32", data: row });
    const before = counter.runs;
    const results = await affine.run([
      item([1, 0, 0]),
      item([0, 1, 1]),
      { name: "x", shape: [2, 3], datatype: "FP32", data: [1, 1, 1, 0, 0, 0] },
    ]);
    expect(counter.runs - before).toBe(1);
    const y = results.map((r) => (ok(r) as { shape: number[]; data: number[] }[])[0]);
    expect(y[0]).toEqual({ name: "y", shape: [1, 2], datatype: "FP32", data: [1.5, 1] });
    expect(y[1]?.data).toEqual([8.5, 9]);
    expect(y[2]).toMatchObject({ shape: [2, 2], data: [9.5, 11, 0.5, -1] });
  });

  it("carries every wire datatype through the runtime and back", async () => {
    const values: Record<string, (row: number) => number[] | boolean[]> = {
      FP32: (r) => [0.5 + r, -2.25],
      FP64: (r) => [1e-300 * (r + 1), Math.PI],
      INT64: (r) => [2 ** 40 + r, -(2 ** 40)],
      INT32: (r) => [2_147_483_647 - r, -2_147_483_648],
      INT8: (r) => [-128 + r, 127],
      UINT8: (r) => [255 - r, 0],
      BOOL: (r) => [r === 0, true],
    };
    const item = (row: number) =>
      Object.entries(values).map(([wire, f]) => ({ name: `in_${wire}`, shape: [1, 2], datatype: wire, data: f(row) }));
    const before = counter.runs;
    const results = await identity.run([item(0), item(1)]);
    expect(counter.runs - before).toBe(1);
    for (const [row, result] of results.entries()) {
      const outputs = ok(result) as { name: string; datatype: string; shape: number[]; data: unknown[] }[];
      expect(outputs.map((o) => o.name)).toEqual(Object.keys(values).map((w) => `out_${w}`));
      for (const o of outputs) {
        const wire = o.name.slice(4);
        expect(o.datatype).toBe(wire);
        expect(o.shape).toEqual([1, 2]);
        const expected = values[wire]?.(row) ?? [];
        // FP32 loses precision on the way in; the values chosen here are exact in float32.
        expect(o.data).toEqual(expected);
      }
    }
    const [tooBig] = await identity.run([item(0).map((t) => (t.datatype === "INT8" ? { ...t, data: [300, 0] } : t))]);
    expect(errorOf(tooBig)?.message).toMatch(/in_INT8: INT8 data must be integers in \[-128, 127\]/);
    const [notBool] = await identity.run([item(0).map((t) => (t.datatype === "BOOL" ? { ...t, data: [1, 0] } : t))]);
    expect(errorOf(notBool)?.message).toMatch(/BOOL data must be true\/false/);
  });

  it("rejects wrong tensors per item with the reason, and still runs the good ones", async () => {
    const good = { name: "x", shape: [1, 3], datatype: "FP32", data: [1, 0, 0] };
    const bad: [unknown, RegExp][] = [
      [{ ...good, datatype: "INT64" }, /wants FP32, got INT64/],
      [{ ...good, shape: [3] }, /wants rank 2/],
      [{ ...good, shape: [1, 4], data: [1, 2, 3, 4] }, /dimension 1 must be 3, got 4/],
      [{ ...good, data: [1, 2] }, /shape \[1, 3\] needs 3 values, data has 2/],
      [{ ...good, name: "z" }, /no input z/],
      [{ ...good, datatype: "FP16" }, /datatype/],
      [{ ...good, data: [[1, 0, 0]] }, /data/],
      ["x", /got a string/],
      [[good, good], /given twice/],
      [[], /non-empty list/],
    ];
    const results = await affine.run([good, ...bad.map(([input]) => input), good]);
    expect(ok(results[0])).toEqual(ok(results[results.length - 1]));
    bad.forEach(([, message], i) => {
      expect(errorOf(results[i + 1])).toMatchObject({ code: "invalid_input", message: expect.stringMatching(message) });
    });
    const [missing] = await logits.run([{ name: "input_ids", shape: [1, 2], datatype: "INT64", data: [2, 3] }]);
    expect(errorOf(missing)?.message).toMatch(/missing input attention_mask/);
  });
});

describe("runtimes agree and fall back", () => {
  it("gives the same outputs on onnxruntime-node and onnxruntime-web", async () => {
    const outputs: number[][][] = [];
    for (const { make, devices } of RUNTIMES) {
      const factory = make();
      const sentiment = await loadModel(spec("sentiment"), factory, { registryUrl, fetch: nodeFetch, devices });
      const embedder = await loadModel(spec("embedder"), factory, { registryUrl, fetch: nodeFetch, devices });
      const scores = (await sentiment.run(TEXTS)).map((r) => (ok(r) as { score: number }[]).map((s) => s.score));
      const vectors = (await embedder.run(TEXTS)).map((r) => ok(r) as number[]);
      outputs.push([...scores, ...vectors]);
      await sentiment.dispose();
      await embedder.dispose();
    }
    const [node, web] = outputs as [number[][], number[][]];
    for (const [i, row] of node.entries()) expectClose(row, web[i] as number[], 1e-5);
  });

  it("falls back from cuda to cpu and from webgpu to wasm with a warning, naming the device that ran", async () => {
    const model = readFileSync(new URL("../../models/sentiment/onnx/model.onnx", import.meta.url));
    for (const [factory, wanted, fallback] of [
      [createOrtNodeFactory({ warn }), "cuda", "cpu"],
      [createOrtWebFactory({ warn }), "webgpu", "wasm"],
    ] as const) {
      warnings.length = 0;
      const session = await factory.create(model, [wanted]);
      // Where the accelerator exists it is used; here (no CUDA library, no navigator.gpu) it is not.
      if (session.device !== wanted) {
        expect(session.device).toBe(fallback);
        expect(warnings.join("\n")).toContain(wanted);
      }
      await session.release();
    }
  });

  it("uses only the device asked for when fallback is off, failing with the reason where it cannot start", async () => {
    const model = readFileSync(new URL("../../models/sentiment/onnx/model.onnx", import.meta.url));
    warnings.length = 0;
    const strict = createOrtNodeFactory({ warn, fallback: false });
    const made = await strict.create(model, ["cuda"]).then(
      (session) => session,
      (error: Error) => error,
    );
    if (made instanceof Error) {
      // Here (no CUDA provider library or no GPU): no session on cpu, and the error says why cuda failed.
      expect(made.message).toMatch(/could not create a session on cuda \(no fallback to cpu was allowed\): cuda: \S/);
      expect(warnings.join("\n")).not.toContain("falling back");
    } else {
      expect(made.device).toBe("cuda");
      await made.release();
    }
    // cpu alone, strict or not, runs here.
    const cpu = await strict.create(model, ["cpu"]);
    expect(cpu.device).toBe("cpu");
    await cpu.release();
    await expect(strict.create(model, ["tpu"])).rejects.toThrow(/runs none of the devices tpu/);
  });
});
