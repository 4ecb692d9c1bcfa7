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
    expect((await queue("scribe").stats("scribe")).queued).toBe(0);
  });
});
