// The bundled decoder end to end: a real coordinator (`wrangler dev`), real worker connections running gpt-tiny
// on onnxruntime-node, and the official `openai` and `@huggingface/inference` clients. A streamed chat, and a
// Hugging Face text-generation call, give the text a direct run gives; a
// worker whose socket dies mid-stream (torn down, as a SIGKILL leaves it) loses no token and repeats none: the
// item goes to the next worker with the tokens already accepted, and the caller's stream goes on to the same text.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InferenceClient } from "@huggingface/inference";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type WebSocket from "ws";
import { type Coordinator, startCoordinator } from "../../scripts/lib/wrangler-dev.ts";
import { ModelConfig } from "../../shared/config/model-config.ts";
import type { GenerationOutput } from "../../shared/protocol/generation.ts";
import type { ItemResult } from "../../shared/protocol/worker.ts";
import { loadModel } from "../../shared/runner/load-model.ts";
import type { LoadedModel, RunOptions } from "../../shared/runner/model-runner.ts";
import { ModelConnection } from "../../shared/worker-loop/model-connection.ts";
import { TOKEN_WINDOW_MS } from "../../shared/worker-loop/token-coalescer.ts";
import { nodeFetch } from "../../worker-gpu/runner/file-fetch.ts";
import { createOrtNodeFactory } from "../../worker-gpu/runner/ort-node-session.ts";
import { openSocket } from "../../worker-gpu/worker.ts";

const registryUrl = new URL("../../models/registry.json", import.meta.url);
const registry = JSON.parse(readFileSync(registryUrl, "utf8"));
const spec = ModelConfig.parse(registry.models.find((m: { name: string }) => m.name === "gpt-tiny"));
// The coordinator's gpt-tiny writes tool calls between tags (a template's tool_call), so tool_choice "auto" is served.
const TAGS = { prefix: "<tool_call>", suffix: "</tool_call>" };
for (const m of registry.models) if (m.name === "gpt-tiny") m.chat_template = { ...m.chat_template, tool_call: TAGS };
const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-e2e-generation-"));
let coordinator: Coordinator;
let model: LoadedModel;
let client: OpenAI;
const open: ModelConnection[] = [];

beforeAll(async () => {
  coordinator = await startCoordinator({
    persistTo,
    vars: { API_KEYS: "k", WORKER_TOKENS: "w", MODELS: JSON.stringify(registry) },
  });
  model = await loadModel(spec, createOrtNodeFactory(), { registryUrl, fetch: nodeFetch, devices: ["cpu"] });
  client = new OpenAI({ apiKey: "k", baseURL: `${coordinator.url}/v1`, maxRetries: 0 });
}, 180_000);

afterAll(async () => {
  for (const c of open) await c.drain(0);
  await coordinator?.stop();
  await model?.dispose();
  rmSync(persistTo, { recursive: true, force: true });
});

/** A worker connection; `run` may stand between the socket and the model (to die mid-stream). */
function connect(workerId: string, run?: (inputs: readonly unknown[], opts?: RunOptions) => Promise<ItemResult[]>) {
  const sockets: WebSocket[] = [];
  const connection = new ModelConnection({
    coordinator: coordinator.url,
    token: () => "w",
    openSocket: (url, token) => {
      const ws = openSocket(url, token) as WebSocket;
      sockets.push(ws);
      return ws as never;
    },
    model,
    ...(run ? { run } : {}),
    info: { worker_id: workerId, pool: "gpu", device: model.device, max_batch_size: 16, max_concurrent_batches: 1 },
    hooks: { log: () => {} },
  });
  open.push(connection);
  connection.start();
  return { connection, sockets };
}

async function streamChat(
  content: string,
  params: { max_tokens: number; temperature?: number; seed?: number; logprobs?: boolean; top_logprobs?: number },
) {
  const stream = await client.chat.completions.create({
    model: "gpt-tiny",
    messages: [{ role: "user", content }],
    stream: true,
    ...params,
  });
  let text = "";
  let finish: string | null = null;
  const logprobs: { token: string; logprob: number; top_logprobs: { token: string }[] }[] = [];
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta.content ?? "";
    finish = chunk.choices[0]?.finish_reason ?? finish;
    logprobs.push(...(chunk.choices[0]?.logprobs?.content ?? []));
  }
  return { text, finish, logprobs };
}

async function direct(prompt: string, params: Record<string, number>): Promise<GenerationOutput> {
  const [result] = await model.run([{ prompt, params }]);
  if (!result || !("output" in result)) throw new Error(JSON.stringify(result));
  return result.output as GenerationOutput;
}

describe("gpt-tiny through the swarm", () => {
  it("streams a chat's tokens to the openai client, the same text as a direct run", async () => {
    const { connection } = connect("gen-1");
    await expect.poll(() => connection.connected, { timeout: 30_000 }).toBe(true);
    const { text, finish } = await streamChat("how was the film?", { max_tokens: 24 });
    const expected = await direct("<|user|>how was the film?<|end|><|assistant|>", { max_new_tokens: 24 });
    expect(text).toBe(expected.generated_text);
    expect(finish).toBe(expected.finish_reason);
    await connection.drain(1_000);
  }, 120_000);

  it("answers Hugging Face's text-generation shape through @huggingface/inference, as a direct run reads", async () => {
    const { connection } = connect("gen-hf");
    await expect.poll(() => connection.connected, { timeout: 30_000 }).toBe(true);
    // Seeded sampling, the same on every path; min_new_tokens keeps the reply long (this prompt's ends at two).
    const params = { max_new_tokens: 24, min_new_tokens: 12, temperature: 0.9, seed: 11 };
    const expected = await direct("the film was", params);
    expect(expected.tokens.length).toBeGreaterThan(4);
    const hf = new InferenceClient("k").endpoint(`${coordinator.url}/models/gpt-tiny`);
    // The client sends Hugging Face's parameter names to <endpoint>/v1/completions, which reads them.
    const hfParams = { ...params, do_sample: true, return_full_text: true };
    const out = await hf.textGeneration({ inputs: "the film was", parameters: hfParams });
    expect(out.generated_text).toBe(`the film was${expected.generated_text}`);
    const greedy = await hf.textGeneration({ inputs: "the film was", parameters: { ...params, do_sample: false } });
    expect(greedy.generated_text).not.toBe(expected.generated_text);
    expect(greedy.generated_text).toBe(
      (await direct("the film was", { max_new_tokens: 24, min_new_tokens: 12 })).generated_text,
    );
    // The task's own shape on /models/{name}: one generated_text an input, the prompt first when asked.
    const res = await fetch(`${coordinator.url}/models/gpt-tiny`, {
      method: "POST",
      headers: { Authorization: "Bearer k", "Content-Type": "application/json" },
      body: JSON.stringify({ inputs: ["the film was"], parameters: { ...params, return_full_text: true } }),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual([{ generated_text: `the film was${expected.generated_text}` }]);
    await connection.drain(1_000);
  }, 120_000);

  it("gives n seeded choices, JSON mode, structured outputs, tool calls and echoed log probabilities through the openai client, each as a direct run reads", async () => {
    const { connection } = connect("gen-n");
    await expect.poll(() => connection.connected, { timeout: 30_000 }).toBe(true);
    const sampling = { max_tokens: 16, temperature: 0.9, seed: 11 };
    const answer = await client.completions.create({ model: "gpt-tiny", prompt: "the film was", n: 3, ...sampling });
    const texts = answer.choices.sort((a, b) => a.index - b.index).map((c) => c.text);
    const expected = await Promise.all(
      [0, 1, 2].map(
        async (i) =>
          (await direct("the film was", { max_new_tokens: 16, temperature: 0.9, seed: 11 + i })).generated_text,
      ),
    );
    expect(texts).toEqual(expected);
    expect(new Set(texts).size).toBeGreaterThan(1);
    const json = { max_tokens: 24, temperature: 0.8, seed: 2 };
    const chat = await client.chat.completions.create({
      model: "gpt-tiny",
      messages: [{ role: "user", content: "describe the hotel as json" }],
      response_format: { type: "json_object" },
      ...json,
    });
    const content = chat.choices[0]?.message.content ?? "";
    expect(content.startsWith("{")).toBe(true);
    const alone = await model.run([
      {
        prompt: "<|user|>describe the hotel as json<|end|><|assistant|>",
        params: { max_new_tokens: 24, temperature: 0.8, seed: 2, format: "json_object" },
      },
    ]);
    expect(content).toBe((alone[0] as { output: GenerationOutput }).output.generated_text);
    // Structured outputs: the official client's json_schema, the reply an object the schema accepts.
    const schema = {
      type: "object",
      properties: { mood: { enum: ["good", "bad"] }, stars: { enum: [1, 2, 3, 4, 5] } },
      required: ["mood", "stars"],
      additionalProperties: false,
    };
    const structured = await client.chat.completions.create({
      model: "gpt-tiny",
      messages: [{ role: "user", content: "rate the hotel as json" }],
      response_format: { type: "json_schema", json_schema: { name: "rating", strict: true, schema } },
      max_tokens: 32,
    });
    const reply = JSON.parse(structured.choices[0]?.message.content ?? "");
    expect(structured.choices[0]?.finish_reason).toBe("stop");
    expect(Object.keys(reply)).toEqual(["mood", "stars"]);
    expect(["good", "bad"]).toContain(reply.mood);
    expect([1, 2, 3, 4, 5]).toContain(reply.stars);
    // Tool calls: a named function's arguments under its schema, and "required" streamed, the model picking.
    const tools = [
      { type: "function" as const, function: { name: "rate_hotel", parameters: schema } },
      { type: "function" as const, function: { name: "get_time" } },
    ];
    const rate = { role: "user" as const, content: "rate the hotel" };
    const named = await client.chat.completions.create({
      model: "gpt-tiny",
      messages: [rate],
      tools,
      tool_choice: { type: "function", function: { name: "rate_hotel" } },
      max_tokens: 96,
    });
    const made = named.choices[0]?.message.tool_calls?.[0];
    expect(named.choices[0]?.finish_reason).toBe("tool_calls");
    expect(made?.type === "function" && made.function.name).toBe("rate_hotel");
    expect(Object.keys(JSON.parse(made?.type === "function" ? made.function.arguments : ""))).toEqual([
      "mood",
      "stars",
    ]);
    const streamed = await client.chat.completions.create({
      model: "gpt-tiny",
      messages: [rate],
      tools,
      tool_choice: "required",
      max_tokens: 96,
      stream: true,
    });
    let called: string | undefined;
    let args = "";
    let ended: string | null = null;
    for await (const chunk of streamed) {
      for (const d of chunk.choices[0]?.delta.tool_calls ?? []) {
        called ??= d.function?.name;
        args += d.function?.arguments ?? "";
      }
      ended = chunk.choices[0]?.finish_reason ?? ended;
    }
    expect(ended).toBe("tool_calls");
    expect(["rate_hotel", "get_time"]).toContain(called);
    const parsed = JSON.parse(args);
    if (called === "get_time") expect(parsed).toEqual({});
    else expect(Object.keys(parsed)).toEqual(["mood", "stars"]);
    // On a template with tool-call tags the worker wrote each call between them (the edge reads none otherwise).
    // "auto" (tools sent, no tool_choice): gpt-tiny, never trained on calls, does not begin with the tags, so its
    // reply is the text a chat without tools gets, unmasked.
    const plain = await client.chat.completions.create({ model: "gpt-tiny", messages: [rate], max_tokens: 24 });
    const auto = await client.chat.completions.create({ model: "gpt-tiny", messages: [rate], tools, max_tokens: 24 });
    expect(auto.choices[0]?.message.tool_calls).toBeUndefined();
    expect(auto.choices[0]?.message.content).toBe(plain.choices[0]?.message.content);
    expect(auto.choices[0]?.finish_reason).toBe(plain.choices[0]?.finish_reason);
    // An evaluation harness's loglikelihood call (lm-eval's): a batch of prompts, one token each, echoed with
    // the log probability of every prompt token, each as a direct run reads it.
    const scored = await client.completions.create({
      model: "gpt-tiny",
      prompt: ["the film was", "the hotel room"],
      max_tokens: 1,
      logprobs: 1,
      echo: true,
    });
    for (const [i, prompt] of ["the film was", "the hotel room"].entries()) {
      const run = await direct(prompt, { max_new_tokens: 1, logprobs: 1, prompt_logprobs: 1 });
      const got = scored.choices[i]?.logprobs;
      expect(scored.choices[i]?.text).toBe(prompt + run.generated_text);
      const want = [...(run.prompt_logprobs ?? []), ...(run.logprobs ?? [])];
      expect(got?.tokens).toEqual(want.map((e) => e.token));
      expect(got?.token_logprobs?.[0]).toBeNull();
      for (const [k, e] of want.entries()) {
        if (e.logprob === null) continue;
        expect(Math.abs((got?.token_logprobs?.[k] as number) - e.logprob)).toBeLessThan(1e-3);
      }
    }
    // Older harnesses score with max_tokens 0: the prompt echoed, its entries only.
    const zero = await client.completions.create({
      model: "gpt-tiny",
      prompt: "the film was",
      max_tokens: 0,
      logprobs: 1,
      echo: true,
    });
    const prompt = await direct("the film was", { max_new_tokens: 0, prompt_logprobs: 1 });
    expect(zero.choices[0]?.text).toBe("the film was");
    expect(zero.choices[0]?.logprobs?.tokens).toEqual(prompt.prompt_logprobs?.map((e) => e.token));
    expect(zero.usage?.completion_tokens).toBe(0);
    await connection.drain(1_000);
  }, 120_000);

  it("answers a short reply batched with a long one as soon as it ends, not when the batch does", async () => {
    const post = async (input: unknown) => {
      const res = await fetch(`${coordinator.url}/v1/infer`, {
        method: "POST",
        headers: { Authorization: "Bearer k", "Content-Type": "application/json" },
        body: JSON.stringify({ model: "gpt-tiny", inputs: [input], wait: false }),
      });
      expect(res.status).toBe(202);
      return ((await res.json()) as { id: string }).id;
    };
    // Queued before any worker is there, so one batch holds both.
    const short = await post({ prompt: "the", params: { max_new_tokens: 2 } });
    const long = await post({ prompt: "the", params: { max_new_tokens: 40, min_new_tokens: 40 } });
    // The batch's completion (which carries the long reply) waits until the test opens the gate.
    let open = () => {};
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const batches: number[] = [];
    const { connection } = connect("gen-mixed", async (inputs, opts) => {
      batches.push(inputs.length);
      const results = await model.run(inputs, opts);
      await gate;
      return results;
    });
    const status = async (id: string) => {
      const res = await fetch(`${coordinator.url}/v1/jobs/${id}`, { headers: { Authorization: "Bearer k" } });
      return ((await res.json()) as { status: string }).status;
    };
    // The short reply is answered by its own frame while its batch has not completed.
    await expect.poll(() => status(short), { timeout: 60_000, interval: 20 }).toBe("succeeded");
    expect(await status(long)).toBe("running");
    expect(batches).toEqual([2]);
    open();
    await expect.poll(() => status(long), { timeout: 60_000, interval: 20 }).toBe("succeeded");
    await connection.drain(1_000);
  }, 120_000);

  it("goes on after its worker dies mid-stream: the next worker continues, no token lost or repeated", async () => {
    // With log probabilities asked for: those of the tokens accepted go to the next worker with them.
    const params = { max_new_tokens: 40, temperature: 0.9, seed: 11, logprobs: 2 };
    const expected = await direct("<|user|>tell me about the trip.<|end|><|assistant|>", params);
    expect(expected.tokens.length).toBeGreaterThan(4);
    // The first worker runs the real model but lets only two deltas out; once its coalescing window has sent
    // them (shared/worker-loop/token-coalescer.ts), its socket is torn down before it can complete.
    let doomed: WebSocket | undefined;
    const first = connect("gen-dies", async (inputs, opts) => {
      let sent = 0;
      await model.run(inputs, {
        onTokens: (d) => {
          if (sent++ < 2) opts?.onTokens?.(d);
        },
      });
      await new Promise((r) => setTimeout(r, TOKEN_WINDOW_MS * 3));
      doomed?.terminate();
      return [];
    });
    await expect.poll(() => first.connection.connected, { timeout: 30_000 }).toBe(true);
    doomed = first.sockets[0];
    const streamed = streamChat("tell me about the trip.", {
      max_tokens: 40,
      temperature: 0.9,
      seed: 11,
      logprobs: true,
      top_logprobs: 2,
    });
    await expect.poll(() => doomed?.readyState, { timeout: 30_000 }).toBe(3);
    await first.connection.drain(0);
    // The next worker is handed the item with the two tokens the caller already has, and goes on from them.
    const resumed: unknown[] = [];
    connect("gen-next", (inputs, opts) => {
      resumed.push(...inputs.map((i) => (i as { resume?: { tokens: number[] } }).resume?.tokens));
      return model.run(inputs, opts);
    });
    const { text, finish, logprobs } = await streamed;
    expect(resumed).toEqual([expected.tokens.slice(0, 2)]);
    expect(text).toBe(expected.generated_text);
    expect(finish).toBe(expected.finish_reason);
    const want = expected.logprobs ?? [];
    expect(want).toHaveLength(expected.tokens.length);
    expect(logprobs.map((e) => [e.token, e.top_logprobs.map((t) => t.token)])).toEqual(
      want.map((e) => [e.token, e.top.map((t) => t.token)]),
    );
    for (const [i, e] of logprobs.entries()) expect(Math.abs(e.logprob - (want[i]?.logprob ?? 0))).toBeLessThan(1e-3);
  }, 180_000);
});
