// Hugging Face's text-generation shape on POST /models/{name}, inside real workerd, driven by the official
// `@huggingface/inference` client (whose textGeneration posts OpenAI completions to <endpoint>/v1/completions):
// [{generated_text}] per input on /models/{name}, the continuation only unless return_full_text, and
// parameters out of range refused before anything is queued.
import { SELF } from "cloudflare:test";
import { InferenceClient } from "@huggingface/inference";
import { afterEach, describe, expect, it } from "vitest";
import { TEST_API_KEY } from "../support/test-models.ts";
import { replyTo, serve } from "./generating-worker.ts";
import { call, queue, SocketWorker, wipeQueues } from "./helpers.ts";

afterEach(() => wipeQueues());

const hf = new InferenceClient(TEST_API_KEY, {
  fetch: (url: RequestInfo | URL, init?: RequestInit) => SELF.fetch(url, init),
}).endpoint("http://edge/models/scribe");

describe("text-generation on /models/{name}", () => {
  it("answers generated_text through @huggingface/inference", async () => {
    const worker = await SocketWorker.connect("scribe");
    const stop = serve(worker);
    const out = await hf.textGeneration({ inputs: "The film", parameters: { max_new_tokens: 4 } });
    expect(out.generated_text).toBe(replyTo("The film").join(""));
    const full = await call("/models/scribe", {
      body: { inputs: ["A", "BB"], parameters: { return_full_text: true } },
    });
    expect(full.body).toEqual([
      { generated_text: `A${replyTo("A").join("")}` },
      { generated_text: `BB${replyTo("BB").join("")}` },
    ]);
    stop();
    worker.close();
  });

  it("refuses parameters out of range before anything is queued", async () => {
    const res = await call("/models/scribe", { body: { inputs: "x", parameters: { max_new_tokens: 0 } } });
    expect(res.status).toBe(400);
    expect(res.body.error).toContain("parameters.max_new_tokens is 0");
    const over = { inputs: "x", parameters: { max_new_tokens: 4, min_new_tokens: 5 } };
    const min = await call("/models/scribe", { body: over });
    expect(min.status).toBe(400);
    expect(min.body.error).toContain("parameters.min_new_tokens is 5; ask for 0 to parameters.max_new_tokens (4)");
    const penalty = await call("/models/scribe", { body: { inputs: "x", parameters: { repetition_penalty: 0.05 } } });
    expect(penalty.status).toBe(400);
    expect(penalty.body.error).toContain("repetition_penalty must be 0.1 to 10");
    // OpenAI's presence_penalty is not a Hugging Face parameter: refused as unknown, not ignored.
    const presence = await call("/models/scribe", { body: { inputs: "x", parameters: { presence_penalty: 1 } } });
    expect(presence.status).toBe(400);
    expect(presence.body.error).toContain("presence_penalty");
    // A regex grammar is not served; a schema the mask cannot hold a reply to is refused where it stands.
    const regex = await call("/models/scribe", {
      body: { inputs: "x", parameters: { grammar: { type: "regex", value: "a+" } } },
    });
    expect(regex.status).toBe(400);
    expect(regex.body.error).toContain('grammar.type "json" (a JSON Schema in value) is served; a regex is not');
    const pattern = await call("/models/scribe", {
      body: {
        inputs: "x",
        parameters: { grammar: { type: "json", value: { type: "object", properties: { a: { pattern: "x" } } } } },
      },
    });
    expect(pattern.status).toBe(400);
    expect(pattern.body.error).toContain("parameters.grammar.value");
    expect(pattern.body.error).toContain("$.properties.a.pattern is not served");
    expect((await queue("scribe").stats("scribe")).queued).toBe(0);
  });

  it("reads the client's Hugging Face parameter names on <endpoint>/v1/completions as /models/{name} does", async () => {
    const worker = await SocketWorker.connect("scribe");
    const params: unknown[] = [];
    const stop = serve(worker, [], params);
    const generate = (parameters: Record<string, unknown>) => hf.textGeneration({ inputs: "The film", parameters });
    // do_sample false is greedy whatever the temperature; true samples, at 1 unless told; stop_sequences is stop.
    const full = await generate({ max_new_tokens: 4, do_sample: false, temperature: 0.7, return_full_text: true });
    expect(full.generated_text).toBe(`The film${replyTo("The film").join("")}`);
    await generate({ max_new_tokens: 4, do_sample: true, min_new_tokens: 2, stop_sequences: ["!"], seed: 3 });
    await generate({ max_new_tokens: 4, temperature: 5 });
    await call("/models/scribe", { body: { inputs: "x", parameters: { max_new_tokens: 4, do_sample: true } } });
    await generate({ max_new_tokens: 4, repetition_penalty: 1.3, frequency_penalty: 0.5 });
    const penalties = { repetition_penalty: 1.3, frequency_penalty: 0.5 };
    await call("/models/scribe", { body: { inputs: "x", parameters: { max_new_tokens: 4, ...penalties } } });
    // TGI's grammar of type json: the reply held to the schema.
    const grammar = { type: "json" as const, value: { type: "object", properties: { a: { type: "integer" } } } };
    await generate({ max_new_tokens: 4, grammar });
    await call("/models/scribe", { body: { inputs: "x", parameters: { max_new_tokens: 4, grammar } } });
    expect(params).toEqual([
      expect.objectContaining({ temperature: 0, max_new_tokens: 4 }),
      expect.objectContaining({ temperature: 1, min_new_tokens: 2, stop: ["!"], seed: 3 }),
      expect.objectContaining({ temperature: 5 }),
      expect.objectContaining({ temperature: 1 }),
      expect.objectContaining(penalties),
      expect.objectContaining(penalties),
      expect.objectContaining({ format: "json_schema", schema: grammar.value }),
      expect.objectContaining({ format: "json_schema", schema: grammar.value }),
    ]);
    stop();
    worker.close();
  });

  it("refuses on <endpoint>/v1/completions what cannot be read, under the names the client sent", async () => {
    const post = (body: Record<string, unknown>) =>
      call("/models/scribe/v1/completions", { body: { model: "scribe", prompt: "x", max_tokens: 4, ...body } });
    const both = await post({ min_new_tokens: 2, min_tokens: 2 });
    expect(both.status).toBe(400);
    // The endpoint answers errors in Hugging Face's shape ({"error": "..."}), as its other routes do.
    expect(both.body).toEqual({ error: "invalid request: give min_new_tokens or min_tokens, not both" });
    expect((await post({ stop_sequences: ["."], stop: "." })).body.error).toContain("give stop_sequences or stop");
    const streamed = await post({ return_full_text: true, stream: true });
    expect(streamed.status).toBe(400);
    expect(streamed.body.error).toContain("return_full_text is not served with stream");
    // Checked as every route checks them, under the name the client sent.
    const over = await post({ min_new_tokens: 5 });
    expect(over.status).toBe(400);
    expect(over.body.error).toContain("min_new_tokens is 5; ask for 0 to max_tokens (4)");
    const stops = await post({ stop_sequences: Array.from({ length: 9 }, (_, i) => `s${i}`) });
    expect(stops.body.error).toContain("stop_sequences holds 9 strings");
    // Hugging Face's names are the endpoint's only: OpenAI's own route still refuses them.
    const plain = await call("/v1/completions", { body: { model: "scribe", prompt: "x", do_sample: false } });
    expect(plain.status).toBe(400);
    expect(plain.body.error.param).toBe("do_sample");
    expect((await queue("scribe").stats("scribe")).queued).toBe(0);
  });
});
