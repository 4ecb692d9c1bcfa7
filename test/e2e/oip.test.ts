// The Open Inference Protocol v2 routes end to end: the real coordinator (`wrangler dev`) and a real
// `edgeswarm-worker` (onnxruntime-node) serving the bundled text models, the same ONNX files as "tensor"
// models (INT64 inputs), and a tiny FP32 model written here. Called with plain fetch (there is no
// maintained JS KServe client); answers must equal what POST /v1/infer and the models run directly give.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorker, type WorkerProcess } from "../../scripts/lib/worker-process.ts";
import { type Coordinator, freePort, startCoordinator } from "../../scripts/lib/wrangler-dev.ts";
import { type ModelConfig, ModelRegistry } from "../../shared/index.ts";
import type { OipInferResponse, OipTensor } from "../../shared/protocol/oip.ts";
import { sha256Hex } from "../../shared/runner/model-files.ts";
import type { LoadedModel } from "../../shared/runner/model-runner.ts";
import { expectClose } from "../support/expect-close.ts";
import { OnnxGraph } from "../support/onnx-graph.ts";
import { loadReferenceModels, REVIEW_TEXTS } from "../support/reference-models.ts";

const bundled = ModelRegistry.parse(
  JSON.parse(readFileSync(new URL("../../models/registry.json", import.meta.url), "utf8")),
).models;
const bundledModel = (name: string) => bundled.find((m) => m.name === name) as ModelConfig;
/** A bundled model's ONNX file served raw, as task "tensor". */
const asTensor = (name: string) => {
  const m = bundledModel(name);
  return { ...m, name: `${name}-tensor`, task: "tensor", files: { ...m.files, base_url: `./${name}/` } };
};

/** y = x W + b, best = argmax(y): FP32 [batch, 3] in, FP32 [batch, 2] and INT64 [batch] out. */
const W = [
  [1, 2],
  [3, 4],
  [5, 6],
];
const B = [0.5, -1];
function affineGraph(): Uint8Array {
  const g = new OnnxGraph("affine");
  const x = g.input("x", "float32", ["batch", 3]);
  const y = g.node("Add", [g.node("MatMul", [x, g.floats("w", [3, 2], W.flat())]), g.floats("b", [2], B)], {}, "y");
  g.output("y", "float32", ["batch", 2]);
  g.node("ArgMax", [y], { axis: 1, keepdims: 0 }, "best");
  g.output("best", "int64", ["batch"]);
  return g.encode("EdgeSwarm OIP end-to-end fixture");
}

const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-e2e-oip-"));
const modelDir = mkdtempSync(join(tmpdir(), "edgeswarm-e2e-oip-model-"));
let coordinator: Coordinator;
let worker: WorkerProcess | undefined;
let reference = new Map<string, LoadedModel>();

beforeAll(async () => {
  const bytes = affineGraph();
  writeFileSync(join(modelDir, "model.onnx"), bytes);
  const affine = {
    name: "affine",
    task: "tensor",
    files: {
      base_url: `${pathToFileURL(modelDir).href}/`,
      model: { path: "model.onnx", sha256: await sha256Hex(bytes) },
    },
  };
  const registry = { models: [...bundled, asTensor("sentiment"), asTensor("embedder"), affine] };
  coordinator = await startCoordinator({
    persistTo,
    vars: { API_KEYS: "k", WORKER_TOKENS: "w", MODELS: JSON.stringify(registry) },
  });
  reference = await loadReferenceModels(registry);
  worker = startWorker([
    ...["--coordinator", coordinator.url, "--token", "w", "--worker-id", "oip", "--device", "cpu"],
    ...["--port", String(await freePort()), "--status-interval-ms", "0"],
  ]);
  for (const m of registry.models) await worker.waitFor(new RegExp(`\\[${m.name}\\] connected`), 60_000);
});

afterAll(async () => {
  worker?.child.kill("SIGKILL");
  await coordinator?.stop();
  for (const m of reference.values()) await m.dispose();
  rmSync(persistTo, { recursive: true, force: true });
  rmSync(modelDir, { recursive: true, force: true });
});

async function request(method: "GET" | "POST", path: string, body?: unknown) {
  const res = await fetch(`${coordinator.url}${path}`, {
    method,
    headers: { Authorization: "Bearer k", ...(body === undefined ? {} : { "Content-Type": "application/json" }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: (await res.json()) as any };
}

async function v2(model: string, body: unknown): Promise<OipInferResponse> {
  const res = await request("POST", `/v2/models/${model}/infer`, body);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body;
}

async function v1(model: string, inputs: unknown[]): Promise<unknown[]> {
  const res = await request("POST", "/v1/infer", { model, inputs });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.outputs;
}

async function direct(model: string, inputs: unknown[]): Promise<unknown[]> {
  const results = await (reference.get(model) as LoadedModel).run(inputs);
  return results.map((r) => ("output" in r ? r.output : r));
}

const output = (answer: OipInferResponse, name: string) => answer.outputs.find((o) => o.name === name) as OipTensor;

describe("health and metadata", () => {
  it("is live and ready, and describes the server and each model", async () => {
    expect(await (await fetch(`${coordinator.url}/v2/health/live`)).json()).toEqual({ live: true });
    expect(await (await fetch(`${coordinator.url}/v2/health/ready`)).json()).toEqual({ ready: true });
    expect((await request("GET", "/v2")).body).toMatchObject({ name: "edgeswarm", extensions: ["schedule_policy"] });
    expect((await request("GET", "/v2/models/sentiment")).body).toMatchObject({
      name: "sentiment",
      inputs: [{ name: "text", datatype: "BYTES", shape: [-1] }],
      outputs: [{ name: "label" }, { name: "score" }, { name: "labels" }, { name: "scores" }],
    });
    expect((await request("GET", "/v2/models/affine/ready")).body).toEqual({ name: "affine", ready: true });
  });
});

describe("text models: a BYTES tensor of strings", () => {
  it("text-classification answers what /v1/infer and the model run directly answer", async () => {
    const texts = REVIEW_TEXTS;
    const answer = await v2("sentiment", {
      id: "r1",
      inputs: [{ name: "text", shape: [texts.length], datatype: "BYTES", data: texts }],
    });
    expect(answer).toMatchObject({ model_name: "sentiment", id: "r1" });
    const native = (await v1("sentiment", texts)) as { label: string; score: number }[][];
    expectClose(native, await direct("sentiment", texts));
    const n = texts.length;
    const classes = native[0]?.length ?? 0;
    expect(classes).toBe(2);
    expect(output(answer, "label")).toEqual({
      name: "label",
      shape: [n],
      datatype: "BYTES",
      data: native.map((r) => r[0]?.label),
    });
    expect(output(answer, "labels")).toEqual({
      name: "labels",
      shape: [n, classes],
      datatype: "BYTES",
      data: native.flatMap((r) => r.map((e) => e.label)),
    });
    expect(output(answer, "score")).toMatchObject({ shape: [n], datatype: "FP32" });
    expectClose(
      output(answer, "score").data,
      native.map((r) => r[0]?.score),
    );
    expect(output(answer, "scores")).toMatchObject({ shape: [n, classes], datatype: "FP32" });
    expectClose(
      output(answer, "scores").data,
      native.flatMap((r) => r.map((e) => e.score)),
    );
    expect(output(answer, "label").data[0]).toBe("POSITIVE"); // "I love this"
  });

  it("feature-extraction answers one [N, D] embedding, row for row what /v1/infer answers", async () => {
    const texts = REVIEW_TEXTS.slice(0, 5);
    const answer = await v2("embedder", {
      inputs: [{ name: "text", shape: [5, 1], datatype: "BYTES", data: texts.map((t) => [t]) }],
    });
    const native = (await v1("embedder", texts)) as number[][];
    expectClose(native, await direct("embedder", texts));
    const dim = native[0]?.length ?? 0;
    expect(dim).toBeGreaterThan(1);
    expect(answer.outputs.map((o) => [o.name, o.datatype, o.shape])).toEqual([["embedding", "FP32", [5, dim]]]);
    expectClose(output(answer, "embedding").data, native.flat());
  });

  it("names the rows the workers would refuse, before anything is queued", async () => {
    const res = await request("POST", "/v2/models/sentiment/infer", {
      inputs: [{ name: "text", shape: [3], datatype: "BYTES", data: ["fine", " ", "great"] }],
    });
    expect(res.status).toBe(422);
    expect(res.body).toEqual({ error: expect.stringMatching(/row 1: input must be a non-empty string/) });
  });
});

describe("tensor models: named tensors, the first dimension the batch", () => {
  // Token ids of one length, the last row padded: the mask must keep padding out of the answer.
  const ids = [
    [2, 15, 40, 7, 3],
    [2, 99, 12, 3, 0],
    [2, 33, 3, 0, 0],
  ];
  const mask = ids.map((row) => row.map((id) => (id === 0 ? 0 : 1)));
  const int64 = (name: string, rows: number[][]) => ({
    name,
    shape: [rows.length, rows[0]?.length ?? 0],
    datatype: "INT64",
    data: rows.flat(),
  });
  const row = (name: string, r: number[]) => ({ name, shape: [1, r.length], datatype: "INT64", data: r });

  it("INT64 inputs: stacked logits equal /v1/infer row by row and one batched run of the model", async () => {
    const answer = await v2("sentiment-tensor", { inputs: [int64("input_ids", ids), int64("attention_mask", mask)] });
    expect(answer.outputs.map((o) => [o.name, o.datatype, o.shape])).toEqual([["logits", "FP32", [3, 2]]]);
    const native = (await v1(
      "sentiment-tensor",
      ids.map((r, i) => [row("input_ids", r), row("attention_mask", mask[i] as number[])]),
    )) as OipTensor[][];
    expectClose(
      output(answer, "logits").data,
      native.flatMap((o) => o[0]?.data),
    );
    const [whole] = (await direct("sentiment-tensor", [
      [int64("input_ids", ids), int64("attention_mask", mask)],
    ])) as OipTensor[][];
    expectClose(output(answer, "logits").data, whole?.[0]?.data);
  });

  it("rank-3 outputs stack along the batch, and only the outputs asked for come back", async () => {
    const inputs = [int64("input_ids", ids), int64("attention_mask", mask)];
    const [whole] = (await direct("embedder-tensor", [inputs])) as OipTensor[][];
    const all = await v2("embedder-tensor", { inputs });
    expect(all.outputs.map((o) => o.name)).toEqual(whole?.map((t) => t.name));
    for (const t of whole ?? []) {
      expect(output(all, t.name).shape).toEqual(t.shape);
      expectClose(output(all, t.name).data, t.data);
    }
    expect(output(all, "last_hidden_state").shape.slice(0, 2)).toEqual([3, 5]);
    const one = await v2("embedder-tensor", { inputs, outputs: [{ name: "sentence_embedding" }] });
    expect(one.outputs.map((o) => o.name)).toEqual(["sentence_embedding"]);
  });

  it("FP32 in, FP32 and INT64 out, from flat or nested data", async () => {
    const x = [
      [1, 0, 0],
      [0, 1, 0],
      [0.5, -1, 2.5],
    ];
    const y = x.map((r) => B.map((b, j) => b + r.reduce((s, v, i) => s + v * (W[i]?.[j] ?? 0), 0)));
    const flat = await v2("affine", { inputs: [{ name: "x", shape: [3, 3], datatype: "FP32", data: x.flat() }] });
    expect(output(flat, "y")).toMatchObject({ shape: [3, 2], datatype: "FP32" });
    expectClose(output(flat, "y").data, y.flat());
    expect(output(flat, "best")).toEqual({ name: "best", shape: [3], datatype: "INT64", data: [0, 0, 1] });
    const nested = await v2("affine", { inputs: [{ name: "x", shape: [3, 3], datatype: "FP32", data: x }] });
    expect(nested.outputs).toEqual(flat.outputs);
  });

  it("answers the worker's refusal of an input the model does not have, or of the wrong datatype, as a 422", async () => {
    const wrongName = await request("POST", "/v2/models/sentiment-tensor/infer", {
      inputs: [{ ...int64("input_ids", ids), name: "pixels" }, int64("attention_mask", mask)],
    });
    expect(wrongName.status).toBe(422);
    expect(wrongName.body.error).toMatch(/rows 0, 1, 2: .*no input pixels \(its inputs: input_ids, attention_mask\)/);
    const wrongType = await request("POST", "/v2/models/affine/infer", {
      inputs: [{ name: "x", shape: [1, 3], datatype: "INT64", data: [1, 2, 3] }],
    });
    expect(wrongType.status).toBe(422);
    expect(wrongType.body.error).toMatch(/row 0: tensor x: the model wants FP32, got INT64/);
  });
});
