// The OpenAI-compatible and Hugging Face-style routes end to end, called by the official clients: the real
// coordinator (`wrangler dev`) and a real `edgeswarm-worker` (onnxruntime-node) serving the bundled models.
// `openai` with baseURL <coordinator>/v1 and `@huggingface/inference` with an endpoint URL must get what
// POST /v1/infer and the models run directly give, and refusals as each client's typed errors.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InferenceClient, InferenceClientProviderApiError } from "@huggingface/inference";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorker, type WorkerProcess } from "../../scripts/lib/worker-process.ts";
import { type Coordinator, freePort, startCoordinator } from "../../scripts/lib/wrangler-dev.ts";
import { ModelRegistry } from "../../shared/index.ts";
import type { LoadedModel } from "../../shared/runner/model-runner.ts";
import { createTokenizer, type TextTokenizer } from "../../shared/tasks/index.ts";
import { expectClose, rejection } from "../support/expect-close.ts";
import { loadReferenceModels, REVIEW_TEXTS } from "../support/reference-models.ts";

const registry = ModelRegistry.parse(
  JSON.parse(readFileSync(new URL("../../models/registry.json", import.meta.url), "utf8")),
);
const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-e2e-compat-"));
let coordinator: Coordinator;
let worker: WorkerProcess | undefined;
let reference = new Map<string, LoadedModel>();
let openai: OpenAI;

beforeAll(async () => {
  coordinator = await startCoordinator({
    persistTo,
    vars: { API_KEYS: "k", WORKER_TOKENS: "w", MODELS: JSON.stringify(registry) },
  });
  reference = await loadReferenceModels(registry);
  worker = startWorker([
    ...["--coordinator", coordinator.url, "--token", "w", "--worker-id", "compat", "--device", "cpu"],
    ...["--port", String(await freePort()), "--status-interval-ms", "0"],
  ]);
  for (const m of registry.models) await worker.waitFor(new RegExp(`\\[${m.name}\\] connected`), 60_000);
  openai = new OpenAI({ apiKey: "k", baseURL: `${coordinator.url}/v1` });
});

afterAll(async () => {
  worker?.child.kill("SIGKILL");
  await coordinator?.stop();
  for (const m of reference.values()) await m.dispose();
  rmSync(persistTo, { recursive: true, force: true });
});

async function v1(model: string, inputs: unknown[]): Promise<unknown[]> {
  const res = await fetch(`${coordinator.url}/v1/infer`, {
    method: "POST",
    headers: { Authorization: "Bearer k", "Content-Type": "application/json" },
    body: JSON.stringify({ model, inputs }),
  });
  const body = (await res.json()) as any;
  expect(res.status, JSON.stringify(body)).toBe(200);
  return body.outputs;
}

async function direct(model: string, inputs: unknown[]): Promise<unknown[]> {
  const results = await (reference.get(model) as LoadedModel).run(inputs);
  return results.map((r) => ("output" in r ? r.output : r));
}

const norm = (v: number[]) => Math.sqrt(v.reduce((a, x) => a + x * x, 0));

describe("openai client: embeddings.create", () => {
  it("embeds a string as /v1/infer and the model run directly do", async () => {
    const text = REVIEW_TEXTS[0] as string;
    const answer = await openai.embeddings.create({ model: "embedder", input: text, encoding_format: "float" });
    expect(answer).toMatchObject({ object: "list", model: "embedder" });
    expect(answer.data.map((d) => [d.object, d.index])).toEqual([["embedding", 0]]);
    const [native] = (await v1("embedder", [text])) as number[][];
    expectClose(native, (await direct("embedder", [text]))[0]);
    expectClose(answer.data[0]?.embedding, native);
  });

  it("embeds a list, in order, with a token estimate no higher than the tokenizer's count", async () => {
    const texts = REVIEW_TEXTS;
    const answer = await openai.embeddings.create({ model: "embedder", input: texts, encoding_format: "float" });
    expect(answer.data.map((d) => d.index)).toEqual(texts.map((_, i) => i));
    expectClose(
      answer.data.map((d) => d.embedding),
      await direct("embedder", texts),
    );
    const files = new URL("../../models/embedder/", import.meta.url);
    const read = (name: string) => JSON.parse(readFileSync(new URL(name, files), "utf8"));
    const tokenizer = createTokenizer(
      read("tokenizer.json"),
      read("tokenizer_config.json"),
    ) as unknown as TextTokenizer;
    const counts = texts.map(
      (t) =>
        tokenizer([t], { padding: true, truncation: true, max_length: 128, return_tensor: false }).input_ids?.[0]
          ?.length ?? 0,
    );
    const { prompt_tokens, total_tokens } = answer.usage;
    expect(total_tokens).toBe(prompt_tokens);
    expect(prompt_tokens).toBeGreaterThanOrEqual(texts.length * 3);
    expect(prompt_tokens).toBeLessThanOrEqual(counts.reduce((a, b) => a + b, 0));
    // Exact for a text whose words are all in the vocabulary: "I love this" is [CLS] i love this [SEP].
    const one = await openai.embeddings.create({ model: "embedder", input: "I love this", encoding_format: "float" });
    expect(one.usage.prompt_tokens).toBe(counts[0]);
  });

  it("decodes base64 to the float answer: by default (the client asks for base64) and when asked for", async () => {
    const texts = REVIEW_TEXTS.slice(0, 3);
    const float = await openai.embeddings.create({ model: "embedder", input: texts, encoding_format: "float" });
    const expected = float.data.map((d) => d.embedding.map(Math.fround));
    // With no encoding_format the client sends "base64" and decodes the answer itself.
    const decoded = await openai.embeddings.create({ model: "embedder", input: texts });
    expectClose(
      decoded.data.map((d) => d.embedding),
      expected,
      1e-6,
    );
    // Asked for explicitly, the client hands the string back as it came.
    const raw = await openai.embeddings.create({ model: "embedder", input: texts, encoding_format: "base64" });
    for (const [i, d] of raw.data.entries()) {
      expect(typeof d.embedding).toBe("string");
      const bytes = Buffer.from(d.embedding as unknown as string, "base64");
      const values = Array.from({ length: bytes.length / 4 }, (_, j) => bytes.readFloatLE(j * 4));
      expectClose(values, expected[i], 1e-6);
    }
  });

  it("shortens to `dimensions`, scaled back to unit length", async () => {
    const text = REVIEW_TEXTS[2] as string;
    const [full] = (await v1("embedder", [text])) as number[][];
    const short = await openai.embeddings.create({ model: "embedder", input: text, dimensions: 16 });
    const v = short.data[0]?.embedding ?? [];
    expect(v).toHaveLength(16);
    expect(norm(v)).toBeCloseTo(1, 5);
    const head = (full ?? []).slice(0, 16);
    expectClose(
      v,
      head.map((x) => x / norm(head)),
      1e-5,
    );
  });

  it("answers refusals as the client's typed errors, without retrying them", async () => {
    const notEmbedding = await rejection(openai.embeddings.create({ model: "sentiment", input: "x" }));
    expect(notEmbedding).toBeInstanceOf(OpenAI.BadRequestError);
    expect(notEmbedding).toMatchObject({ status: 400, param: "model", type: "invalid_request_error" });
    expect(notEmbedding.message).toMatch(
      /text-classification model, not an embedding model; its embedding models: embedder/,
    );

    const unknown = await rejection(openai.embeddings.create({ model: "text-embedding-3-small", input: "x" }));
    expect(unknown).toBeInstanceOf(OpenAI.NotFoundError);
    expect(unknown).toMatchObject({ status: 404, code: "model_not_found", param: "model" });

    const empty = await rejection(openai.embeddings.create({ model: "embedder", input: ["fine", " "] }));
    expect(empty).toBeInstanceOf(OpenAI.UnprocessableEntityError);
    expect(empty).toMatchObject({ status: 422, param: "input", code: "invalid_input" });
    expect(empty.message).toMatch(/input 1: input must be a non-empty string, got only whitespace/);

    const tokens = await rejection(openai.embeddings.create({ model: "embedder", input: [[101, 2023]] }));
    expect(tokens).toBeInstanceOf(OpenAI.BadRequestError);
    expect(tokens.message).toMatch(/token-id arrays are not supported/);

    const wide = await rejection(openai.embeddings.create({ model: "embedder", input: "x", dimensions: 4096 }));
    expect(wide).toBeInstanceOf(OpenAI.BadRequestError);
    expect(wide).toMatchObject({ param: "dimensions" });
    expect(wide.message).toMatch(/dimensions must be from 1 to \d+/);

    const badKey = new OpenAI({ apiKey: "nope", baseURL: `${coordinator.url}/v1` });
    const unauthorised = await rejection(badKey.embeddings.create({ model: "embedder", input: "x" }));
    expect(unauthorised).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(unauthorised).toMatchObject({ code: "invalid_api_key", type: "authentication_error" });
  });
});

describe("@huggingface/inference pointed at the endpoint URL", () => {
  const client = (model: string) => new InferenceClient("k").endpoint(`${coordinator.url}/models/${model}`);

  it("textClassification answers every label, best first, as /v1/infer does", async () => {
    const text = REVIEW_TEXTS[1] as string;
    const labels = await client("sentiment").textClassification({ inputs: text });
    const [native] = (await v1("sentiment", [text])) as { label: string; score: number }[][];
    expectClose(native, (await direct("sentiment", [text]))[0]);
    expectClose(labels, native);
    expect(labels.map((l) => l.label)).toEqual(["NEGATIVE", "POSITIVE"]); // "this is terrible"
    const best = await client("sentiment").textClassification({ inputs: text, parameters: { top_k: 1 } });
    expectClose(best, native?.slice(0, 1));
  });

  it("featureExtraction answers a vector for a string and vectors for a list, as /v1/infer does", async () => {
    const texts = REVIEW_TEXTS.slice(3, 6);
    const native = (await v1("embedder", texts)) as number[][];
    expectClose(native, await direct("embedder", texts));
    const hf = new InferenceClient("k", { endpointUrl: `${coordinator.url}/models/embedder` });
    expectClose(await hf.featureExtraction({ inputs: texts[0] as string }), native[0]);
    expectClose(await hf.featureExtraction({ inputs: texts, normalize: true }), native);
  });

  it("refusals reach the caller as the client's API errors, with our message and status", async () => {
    // The model decides the task, as on Hugging Face: an embedder's settings sent to a classifier are refused.
    const unhonoured = await rejection(client("sentiment").featureExtraction({ inputs: "x", normalize: true }));
    expect(unhonoured).toBeInstanceOf(InferenceClientProviderApiError);
    expect(unhonoured.httpResponse.status).toBe(400);
    expect(unhonoured.message).toMatch(/normalize applies to feature-extraction models only; model "sentiment"/);
    const unknown = await rejection(client("nope").textClassification({ inputs: "x" }));
    expect(unknown.httpResponse).toMatchObject({
      status: 404,
      body: { error: expect.stringMatching(/unknown model "nope"/) },
    });
    const empty = await rejection(client("sentiment").textClassification({ inputs: " " }));
    expect(empty.httpResponse).toMatchObject({
      status: 422,
      body: { error: expect.stringMatching(/input 0: input must be a non-empty string, got only whitespace/) },
    });
  });
});
