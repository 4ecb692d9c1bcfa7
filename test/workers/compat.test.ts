// The OpenAI-compatible embeddings (POST /v1/embeddings) and Hugging Face-style inference (POST
// /models/{name}) in real workerd, with a protocol-level worker answering what each test says: the answer
// shapes, base64 bytes, dimensions, token estimates, and every kind of bad input as a 4xx in each API's own
// error shape, never a 500. test/e2e/compat.test.ts runs the official clients against a real worker.
import { env } from "cloudflare:test";
import { Hono } from "hono";
import { afterEach, describe, expect, it } from "vitest";
import { app } from "../../edge/app.ts";
import { estimateTokens, float32Base64 } from "../../edge/embedding-vectors.ts";
import { ApiError } from "../../edge/errors.ts";
import { openAiError } from "../../edge/routes/openai.ts";
import { type Answer, CALLER, call, queue, SocketWorker, wipeQueues } from "./helpers.ts";

afterEach(() => wipeQueues());

/** Calls `path` and answers its one batch on `model` with `output` per input. */
async function served(model: string, path: string, body: unknown, output: (input: any) => unknown) {
  const worker = await SocketWorker.connect(model);
  const pending = call(path, { body });
  const batch = await worker.next("batch");
  worker.complete(batch, output);
  const res = await pending;
  worker.close();
  return { inputs: batch.items.map((i) => i.input), res };
}

/** A worker that answers one vector for every text. */
const constant = (v: number[]) => () => v;
const embeddings = (body: Record<string, unknown>) => call("/v1/embeddings", { body });
const hf = (model: string, body: unknown) => call(`/models/${model}`, { body });

/** OpenAI's error shape and nothing else, with the status, type and (where given) param and code. */
function expectOpenAiError(
  res: Answer,
  status: number,
  mentions: RegExp,
  more: { type?: string; param?: string | null; code?: string } = {},
): void {
  expect({ status: res.status, body: res.body }).toMatchObject({
    status,
    body: {
      error: {
        message: expect.stringMatching(mentions),
        type: more.type ?? "invalid_request_error",
        ...("param" in more ? { param: more.param } : {}),
        ...(more.code ? { code: more.code } : {}),
      },
    },
  });
  expect(Object.keys(res.body)).toEqual(["error"]);
  expect(Object.keys(res.body.error).sort()).toEqual(["code", "message", "param", "type"]);
}

/** The Inference API's error shape and nothing else: {"error": "<message>"}. */
function expectHfError(res: Answer, status: number, mentions: RegExp): void {
  expect({ status: res.status, body: res.body }).toMatchObject({
    status,
    body: { error: expect.stringMatching(mentions) },
  });
  expect(Object.keys(res.body)).toEqual(["error"]);
}

const nothingQueued = async (...models: string[]) => {
  for (const m of models) expect((await queue(m).stats(m)).queued).toBe(0);
};

describe("POST /v1/embeddings", () => {
  it("embeds a string and a list, in order, with the model's name and a token estimate", async () => {
    const one = await served("canaried", "/v1/embeddings", { model: "canaried", input: "I love this" }, () => [
      0.6, 0.8,
    ]);
    expect(one.inputs).toEqual(["I love this"]);
    expect(one.res.status).toBe(200);
    expect(one.res.body).toEqual({
      object: "list",
      data: [{ object: "embedding", index: 0, embedding: [0.6, 0.8] }],
      model: "canaried",
      usage: { prompt_tokens: 5, total_tokens: 5 }, // 3 words, [CLS] and [SEP]
    });

    const texts = ["a", "b, c", "d"];
    const byText: Record<string, number[]> = { a: [1, 0], "b, c": [0, 1], d: [0.6, -0.8] };
    const list = await served(
      "canaried",
      "/v1/embeddings",
      { model: "canaried", input: texts, user: "u-1" },
      (t) => byText[t],
    );
    expect(list.inputs).toEqual(texts);
    expect(list.res.body.data).toEqual(texts.map((t, index) => ({ object: "embedding", index, embedding: byText[t] })));
    expect(list.res.body.usage).toEqual({ prompt_tokens: 3 + 5 + 3, total_tokens: 11 });
  });

  it('answers base64 as the little-endian float32 bytes of the float answer, for encoding_format "base64"', async () => {
    const v = [1, -2.5, 0.1, 1e-8];
    const { res } = await served(
      "canaried",
      "/v1/embeddings",
      { model: "canaried", input: ["x", "y"], encoding_format: "base64" },
      constant(v),
    );
    expect(res.status).toBe(200);
    const [first] = res.body.data;
    expect(typeof first.embedding).toBe("string");
    const bytes = Uint8Array.from(atob(first.embedding), (ch) => ch.charCodeAt(0));
    expect(bytes.byteLength).toBe(16);
    // 1.0f is 0x3f800000: its least significant byte comes first.
    expect([...bytes.subarray(0, 4)]).toEqual([0x00, 0x00, 0x80, 0x3f]);
    const view = new DataView(bytes.buffer);
    expect(v.map((_, i) => view.getFloat32(i * 4, true))).toEqual(v.map(Math.fround));
    expect(float32Base64([1, 0])).toBe("AACAPwAAAAA=");
    // A vector longer than one chunk of the encoder.
    const long = Array.from({ length: 20_000 }, (_, i) => i / 7);
    const decoded = Uint8Array.from(atob(float32Base64(long)), (ch) => ch.charCodeAt(0));
    expect(Array.from(new Float32Array(decoded.buffer))).toEqual(long.map(Math.fround));
  });

  it("shortens vectors to `dimensions` and scales them back to unit length; refuses more than the model gives", async () => {
    const v = [0.5, 0.5, 0.5, 0.5];
    const short = await served(
      "canaried",
      "/v1/embeddings",
      { model: "canaried", input: "x", dimensions: 2 },
      constant(v),
    );
    const [a, b] = short.res.body.data[0].embedding;
    expect([a, b].map((x: number) => x.toFixed(6))).toEqual([Math.SQRT1_2.toFixed(6), Math.SQRT1_2.toFixed(6)]);
    expect(short.res.body.data[0].embedding).toHaveLength(2);
    const same = await served(
      "canaried",
      "/v1/embeddings",
      { model: "canaried", input: "x", dimensions: 4 },
      constant(v),
    );
    expect(same.res.body.data[0].embedding).toEqual(v);
    const over = await served(
      "canaried",
      "/v1/embeddings",
      { model: "canaried", input: "x", dimensions: 5 },
      constant(v),
    );
    expectOpenAiError(over.res, 400, /gives 4-dimensional embeddings; dimensions must be from 1 to 4/, {
      param: "dimensions",
    });
  });

  it("takes the headers the openai client sends", async () => {
    const worker = await SocketWorker.connect("canaried");
    const pending = call("/v1/embeddings", {
      body: { model: "canaried", input: "x" },
      headers: {
        Accept: "application/json",
        "User-Agent": "OpenAI/JS 6.30.1",
        "x-stainless-lang": "js",
        "x-stainless-package-version": "6.30.1",
        "x-stainless-os": "Linux",
        "x-stainless-arch": "x64",
        "x-stainless-runtime": "node",
        "x-stainless-runtime-version": "v20.20.2",
        "x-stainless-retry-count": "0",
        "x-stainless-timeout": "600",
        "OpenAI-Organization": "org-1",
        "OpenAI-Project": "proj-1",
      },
    });
    worker.complete(await worker.next("batch"), constant([1]));
    expect((await pending).status).toBe(200);
  });

  it("refuses a model that is unknown (404) or not an embedding model (400), naming the embedding models", async () => {
    expectOpenAiError(
      await embeddings({ model: "text-embedding-3-small", input: "x" }),
      404,
      /does not exist.*canaried/,
      {
        param: "model",
        code: "model_not_found",
      },
    );
    expectOpenAiError(
      await embeddings({ model: "guarded", input: "x" }),
      400,
      /text-classification model, not an embedding model; its embedding models: canaried/,
      {
        param: "model",
      },
    );
    expectOpenAiError(await embeddings({ model: "bravo", input: "x" }), 400, /tensor model/, { param: "model" });
    await nothingQueued("guarded", "bravo");
  });

  it("refuses every malformed request with a 400 naming the field, before anything is queued", async () => {
    const cases: [unknown, string | null, RegExp][] = [
      [{ input: "x" }, "model", /model/],
      [{ model: "canaried" }, "input", /input/],
      [{ model: "canaried", input: [] }, "input", /at least one string/],
      [{ model: "canaried", input: [1, 2, 3] }, "input", /token-id arrays are not supported/],
      [{ model: "canaried", input: [[1, 2]] }, "input", /token-id arrays are not supported/],
      [{ model: "canaried", input: 7 }, "input", /string or an array of strings/],
      [{ model: "canaried", input: "x", encoding_format: "hex" }, "encoding_format", /encoding_format/],
      [{ model: "canaried", input: "x", dimensions: 0 }, "dimensions", /dimensions/],
      [{ model: "canaried", input: "x", dimensions: 1.5 }, "dimensions", /dimensions/],
      [{ model: "canaried", input: "x", user: 5 }, "user", /user/],
      [{ model: "canaried", input: "x", temperature: 1 }, "temperature", /Unrecognized key: "temperature"/],
      [[{ model: "canaried", input: "x" }], null, /expected object/],
    ];
    for (const [body, param, message] of cases) {
      expectOpenAiError(await call("/v1/embeddings", { body }), 400, message, { param });
    }
    expectOpenAiError(await call("/v1/embeddings", { raw: '{"model": "canaried", ' }), 400, /not valid JSON/, {
      code: "invalid_json",
    });
    const deep = `${"[".repeat(200)}${"]".repeat(200)}`;
    expectOpenAiError(await call("/v1/embeddings", { raw: `{"model":"canaried","input":${deep}}` }), 400, /deeper/);
    await nothingQueued("canaried");
  });

  it("refuses too many inputs for the model, an oversize body, a missing key and other methods, in OpenAI's shape", async () => {
    const tiny = {
      ...env,
      MODELS: JSON.stringify({ models: [{ name: "tiny", task: "feature-extraction", max_inputs_per_request: 2 }] }),
    };
    const res = await app.request(
      "/v1/embeddings",
      {
        method: "POST",
        headers: { ...CALLER, "Content-Type": "application/json" },
        body: JSON.stringify({ model: "tiny", input: ["a", "b", "c"] }),
      },
      tiny,
    );
    expectOpenAiError(
      { status: res.status, headers: res.headers, body: await res.json() },
      400,
      /3 inputs sent; model "tiny" takes at most 2/,
      {
        code: "too_many_inputs",
      },
    );
    const big = "x".repeat(1024 * 1024 + 10);
    expectOpenAiError(await embeddings({ model: "canaried", input: big }), 413, /exceeds 1048576 bytes/, {
      code: "payload_too_large",
    });
    expectOpenAiError(
      await call("/v1/embeddings", { body: { model: "canaried", input: "x" }, headers: { Authorization: "" } }),
      401,
      /Authorization: Bearer/,
      {
        type: "authentication_error",
        code: "invalid_api_key",
      },
    );
    expectOpenAiError(await call("/v1/embeddings"), 404, /no route GET \/v1\/embeddings; embeddings are POST/);
  });

  it("names the inputs a worker refused, as a 422 on `input`", async () => {
    const worker = await SocketWorker.connect("canaried");
    const pending = embeddings({ model: "canaried", input: ["fine", "bad", "worse"] });
    const batch = await worker.next("batch");
    const refused = {
      code: "invalid_input",
      message: "input is 200000 characters; the most is 100000",
      retryable: false,
    };
    worker.send({
      type: "complete",
      lease_id: batch.lease_id,
      results: [{ output: [1, 0] }, { error: refused }, { error: refused }],
    });
    expectOpenAiError(await pending, 422, /^2 of 3 inputs refused; inputs 1, 2: input is 200000 characters/, {
      param: "input",
      code: "invalid_input",
    });
  });

  it("tells the openai client not to retry a call that timed out, which would queue it again", async () => {
    const probe = new Hono()
      .get("/", () => {
        throw new ApiError(504, "expired", "no result within the request's timeout");
      })
      .onError(openAiError);
    const res = await probe.request("/");
    expect(res.status).toBe(504);
    expect(res.headers.get("x-should-retry")).toBe("false");
    expect(await res.json()).toEqual({
      error: { message: "no result within the request's timeout", type: "server_error", param: null, code: "expired" },
    });
  });
});

describe("token estimate", () => {
  it("counts words, punctuation marks and CJK ideographs, plus [CLS] and [SEP], up to the sequence length", () => {
    expect(estimateTokens("I love this", 128)).toBe(5);
    expect(estimateTokens("Hello, world!", 128)).toBe(6);
    expect(estimateTokens("don't stop", 128)).toBe(6); // don ' t stop
    expect(estimateTokens("你好世界 ok", 128)).toBe(7);
    expect(estimateTokens("naïve café 42", 128)).toBe(5);
    expect(estimateTokens("word ".repeat(500), 128)).toBe(128);
  });
});

describe("POST /models/{name}", () => {
  const scores = (text: string) =>
    text === "awful"
      ? [
          { label: "POSITIVE", score: 0.25 }, // out of order: the answer sorts
          { label: "NEGATIVE", score: 0.75 },
        ]
      : [
          { label: "POSITIVE", score: 0.875 },
          { label: "NEGATIVE", score: 0.125 },
        ];

  it("text-classification answers every label, best first, in one list per input, also for one string", async () => {
    const one = await served("guarded", "/models/guarded", { inputs: "I love this" }, scores);
    expect(one.inputs).toEqual(["I love this"]);
    expect(one.res.body).toEqual([
      [
        { label: "POSITIVE", score: 0.875 },
        { label: "NEGATIVE", score: 0.125 },
      ],
    ]);
    const two = await served("guarded", "/models/guarded", { inputs: ["great", "awful"] }, scores);
    expect(two.res.body).toEqual([
      [
        { label: "POSITIVE", score: 0.875 },
        { label: "NEGATIVE", score: 0.125 },
      ],
      [
        { label: "NEGATIVE", score: 0.75 },
        { label: "POSITIVE", score: 0.25 },
      ],
    ]);
  });

  it("text-classification reads top_k and takes the options and function_to_apply it can honour", async () => {
    const body = {
      inputs: ["great", "awful"],
      parameters: { top_k: 1, function_to_apply: "softmax" },
      options: { wait_for_model: true, use_cache: false },
    };
    const { res } = await served("guarded", "/models/guarded", body, scores);
    expect(res.body).toEqual([[{ label: "POSITIVE", score: 0.875 }], [{ label: "NEGATIVE", score: 0.75 }]]);
  });

  it("feature-extraction answers a vector for one string and a list of vectors for a list", async () => {
    const one = await served("canaried", "/models/canaried", { inputs: "x" }, constant([0.6, 0.8]));
    expect(one.res.body).toEqual([0.6, 0.8]);
    const byText: Record<string, number[]> = { a: [1, 0], b: [0, 1] };
    const two = await served(
      "canaried",
      "/models/canaried",
      { inputs: ["a", "b"], normalize: true, truncate: true, options: { use_cache: true } },
      (t) => byText[t],
    );
    expect(two.inputs).toEqual(["a", "b"]);
    expect(two.res.body).toEqual([
      [1, 0],
      [0, 1],
    ]);
  });

  it("feature-extraction shortens to `dimensions`, given at the top level or in parameters", async () => {
    const v = [0.5, 0.5, 0.5, 0.5];
    const top = await served("canaried", "/models/canaried", { inputs: "x", dimensions: 1 }, constant(v));
    expect(top.res.body).toEqual([1]);
    const nested = await served(
      "canaried",
      "/models/canaried",
      { inputs: ["x"], parameters: { dimensions: 1 } },
      constant(v),
    );
    expect(nested.res.body).toEqual([[1]]);
    const over = await served("canaried", "/models/canaried", { inputs: "x", dimensions: 9 }, constant(v));
    expectHfError(over.res, 400, /gives 4-dimensional embeddings; dimensions must be from 1 to 4/);
  });

  it("refuses settings the workers cannot honour, saying why, before anything is queued", async () => {
    const cases: [string, unknown, RegExp][] = [
      ["canaried", { inputs: "x", normalize: false }, /normalize: false cannot be honoured: .*unit-length/],
      ["canaried", { inputs: "x", truncate: false }, /truncate: false cannot be honoured: .*first 128 tokens/],
      ["canaried", { inputs: "x", truncation_direction: "left" }, /truncation_direction: "left" cannot be honoured/],
      ["canaried", { inputs: "x", parameters: { normalize: false } }, /normalize: false/],
      ["canaried", { inputs: "x", prompt_name: "query" }, /prompt_name cannot be honoured: .*no prompts/],
      ["canaried", { inputs: "x", encoding_format: "base64" }, /base64.*POST \/v1\/embeddings/],
      [
        "guarded",
        { inputs: "x", parameters: { function_to_apply: "sigmoid" } },
        /"sigmoid" cannot be honoured: .*softmax/,
      ],
      [
        "guarded",
        { inputs: "x", normalize: true },
        /normalize applies to feature-extraction models only; model "guarded" is text-classification/,
      ],
    ];
    for (const [model, body, message] of cases) expectHfError(await hf(model, body), 400, message);
    await nothingQueued("canaried", "guarded");
  });

  it("refuses every malformed request with a 400 that says what to fix, before anything is queued", async () => {
    const cases: [string, unknown, RegExp][] = [
      ["guarded", {}, /inputs/],
      ["guarded", { inputs: [] }, /at least one string/],
      ["guarded", { inputs: 42 }, /string or an array of strings/],
      ["guarded", { inputs: { text: "x" } }, /string or an array of strings/],
      ["guarded", { inputs: "x", parameters: { top_k: 0 } }, /request for text-classification: parameters\.top_k/],
      ["guarded", { inputs: "x", parameters: { top_k: "2" } }, /top_k/],
      ["guarded", { inputs: "x", parameters: { function_to_apply: "tanh" } }, /function_to_apply/],
      ["guarded", { inputs: "x", parameters: { temperature: 1 } }, /Unrecognized key: "temperature"/],
      ["guarded", { inputs: "x", options: { stream: true } }, /options: Unrecognized key: "stream"/],
      ["guarded", { inputs: "x", model: "guarded" }, /Unrecognized key: "model"/],
      [
        "canaried",
        { inputs: "x", parameters: { top_k: 1 } },
        /request for feature-extraction: parameters: Unrecognized key: "top_k"/,
      ],
      ["canaried", { inputs: "x", dimensions: -1 }, /dimensions/],
      ["canaried", { inputs: "x", truncation_direction: "middle" }, /truncation_direction/],
      ["canaried", "just a string", /expected object/],
    ];
    for (const [model, body, message] of cases) expectHfError(await hf(model, body), 400, message);
    expectHfError(await call("/models/guarded", { raw: '{"inputs": ' }), 400, /not valid JSON/);
    await nothingQueued("canaried", "guarded");
  });

  it("refuses an unknown model (404), a model of another task (400), other routes, a missing key and an oversize body", async () => {
    expectHfError(await hf("nope", { inputs: "x" }), 404, /unknown model "nope".*alpha, bravo/);
    expectHfError(
      await hf("bravo", { inputs: "x" }),
      400,
      /task "tensor"; .*POST \/v1\/infer or \/v2\/models\/bravo\/infer/,
    );
    expectHfError(
      await call("/models/guarded"),
      404,
      /no route GET \/models\/guarded; Hugging Face-style inference is POST/,
    );
    expectHfError(await call("/models/guarded/pipeline/x", { body: { inputs: "x" } }), 404, /no route POST/);
    expectHfError(
      await call("/models/guarded", { body: { inputs: "x" }, headers: { Authorization: "Bearer no" } }),
      401,
      /not valid/,
    );
    expectHfError(await hf("guarded", { inputs: "x".repeat(1024 * 1024 + 10) }), 413, /exceeds 1048576 bytes/);
    await nothingQueued("bravo", "guarded");
  });

  it("names the inputs a worker refused, as a 422", async () => {
    const worker = await SocketWorker.connect("guarded");
    const pending = hf("guarded", { inputs: ["fine", "bad"] });
    const batch = await worker.next("batch");
    worker.send({
      type: "complete",
      lease_id: batch.lease_id,
      results: [
        { output: scores("fine") },
        { error: { code: "invalid_input", message: "input must be a non-empty string", retryable: false } },
      ],
    });
    expectHfError(await pending, 422, /^1 of 2 inputs refused; input 1: input must be a non-empty string$/);
  });
});
