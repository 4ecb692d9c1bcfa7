// OpenAI-compatible chat and text completions inside real workerd, driven by the official `openai` client: a
// SocketWorker generates (deterministically, from the prompt it gets) and streams its tokens by hand; the
// client reads answers with usage, streamed deltas, OpenAI-shaped errors for bad input (nothing queued), and
// a session whose second turn, on another worker, gets the same prompt as one call holding the whole chat.
import { runInDurableObject, SELF } from "cloudflare:test";
import OpenAI from "openai";
import { afterEach, describe, expect, it } from "vitest";
import { type ChatDelta, EdgeSwarmClient } from "../../client/sdk/index.ts";
import { TEST_API_KEY } from "../support/test-models.ts";
import { openAiClient, replyTo, serve } from "./generating-worker.ts";
import { call, queue, SocketWorker, wipeQueues } from "./helpers.ts";

afterEach(() => wipeQueues());

const client = openAiClient();

describe("POST /v1/chat/completions", () => {
  it("answers a chat rendered with the model's template, with usage", async () => {
    const worker = await SocketWorker.connect("scribe");
    const prompts: string[] = [];
    const params: unknown[] = [];
    const stop = serve(worker, prompts, params);
    const answer = await client.chat.completions.create({
      model: "scribe",
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "How was the film?" },
      ],
      max_tokens: 4,
      presence_penalty: 0.5,
      frequency_penalty: -0.25,
      logit_bias: { "7": -100, "12": 3.5 },
      // vLLM's extensions, which the openai client passes through
      ...({ min_tokens: 2, repetition_penalty: 1.2 } as object),
    });
    expect(params[0]).toMatchObject({
      max_new_tokens: 4,
      min_new_tokens: 2,
      presence_penalty: 0.5,
      frequency_penalty: -0.25,
      repetition_penalty: 1.2,
      logit_bias: { "7": -100, "12": 3.5 },
    });
    expect(prompts[0]).toBe("<|system|>Be brief.<|end|><|user|>How was the film?<|end|><|assistant|>");
    expect(answer.object).toBe("chat.completion");
    expect(answer.choices[0]?.message).toEqual({ role: "assistant", content: replyTo(prompts[0] ?? "").join("") });
    expect(answer.choices[0]?.finish_reason).toBe("length");
    expect(answer.usage).toEqual({ prompt_tokens: 7, completion_tokens: 4, total_tokens: 11 });
    stop();
    worker.close();
  });

  it("streams a delta as each of the worker's tokens comes, then [DONE]", async () => {
    const worker = await SocketWorker.connect("scribe");
    const stream = await client.chat.completions.create({
      model: "scribe",
      messages: [{ role: "user", content: "Hi" }],
      stream: true,
      stream_options: { include_usage: true },
      presence_penalty: 0,
      frequency_penalty: 0,
      logit_bias: {},
      // The defaults of what is not served, as some clients send every field: taken, and they change nothing.
      logprobs: false,
      top_logprobs: 0,
      response_format: { type: "text" },
      tools: [{ type: "function", function: { name: "lookup", parameters: {} } }],
      tool_choice: "none",
      parallel_tool_calls: false,
      ...({ repetition_penalty: 1 } as object), // vLLM's extension
    });
    const batch = await worker.next("batch");
    // Not asked for, min_new_tokens is left out, so workers and donor scripts older than it read the item.
    // Nor are penalties, nor the ones that change nothing (an app's defaults of 0, and 1), nor a text format.
    const sent = (batch.items[0]?.input as { params?: object } | undefined)?.params;
    const fields = ["min_new_tokens", "presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias"];
    for (const p of [...fields, "format"]) {
      expect(sent).not.toHaveProperty(p);
    }
    const words = replyTo((batch.items[0]?.input as { prompt: string } | undefined)?.prompt ?? "");
    const chunks = stream[Symbol.asyncIterator]();
    // Each token goes out only once the one before has reached the caller.
    for (const [i, word] of words.entries()) {
      worker.send({ type: "tokens", lease_id: batch.lease_id, pos: 0, offset: i, tokens: [100 + i], text: word });
      expect((await chunks.next()).value?.choices[0]?.delta.content).toBe(word);
    }
    worker.complete(batch, () => ({
      generated_text: words.join(""),
      tokens: words.map((_, i) => 100 + i),
      finish_reason: "length",
      prompt_tokens: 7,
    }));
    let finish: string | null = null;
    let usage: unknown;
    for (let next = await chunks.next(); !next.done; next = await chunks.next()) {
      if (next.value.usage) usage = next.value.usage;
      finish = next.value.choices[0]?.finish_reason ?? finish;
    }
    expect(finish).toBe("length");
    expect(usage).toEqual({ prompt_tokens: 7, completion_tokens: 4, total_tokens: 11 });
    worker.close();
  });

  it("writes OpenAI's stream on the wire: the role first, a finish chunk, a usage chunk with no choices, data: [DONE]", async () => {
    const worker = await SocketWorker.connect("scribe");
    const stop = serve(worker, []);
    try {
      const res = await SELF.fetch("http://edge/v1/chat/completions", {
        method: "POST",
        headers: { Authorization: `Bearer ${TEST_API_KEY}`, "Content-Type": "application/json" },
        body: JSON.stringify({
          model: "scribe",
          messages: [{ role: "user", content: "Hi" }],
          stream: true,
          stream_options: { include_usage: true },
        }),
      });
      expect(res.headers.get("Content-Type")).toContain("text/event-stream");
      const blocks = (await res.text()).split("\n\n").filter((b) => b !== "" && !b.startsWith(":"));
      expect(blocks.every((b) => b.startsWith("data: ") && !b.includes("\n"))).toBe(true);
      expect(blocks.at(-1)).toBe("data: [DONE]");
      const chunks = blocks.slice(0, -1).map((b) => JSON.parse(b.slice("data: ".length)));
      expect(chunks[0].choices[0].delta).toMatchObject({ role: "assistant" });
      expect(chunks.slice(1).some((c) => c.choices[0]?.delta.role !== undefined)).toBe(false);
      const finish = chunks.at(-2);
      expect(finish.choices).toEqual([{ index: 0, delta: {}, finish_reason: "length", logprobs: null }]);
      expect(chunks.at(-1)).toMatchObject({
        object: "chat.completion.chunk",
        choices: [],
        usage: { completion_tokens: 4 },
      });
      const id = chunks[0].id as string;
      expect(id).toMatch(/^chatcmpl-/);
      expect(chunks.every((c) => c.id === id && c.model === "scribe")).toBe(true);
    } finally {
      stop();
      worker.close();
    }
  });

  it("refuses bad input in OpenAI's shape before anything is queued", async () => {
    const refused = async (body: Record<string, unknown>, path = "/v1/chat/completions") => {
      const res = await call(path, { body });
      expect(res.status).toBe(400);
      expect(res.body.error.type).toBe("invalid_request_error");
      return res.body.error as { message: string; param: string | null };
    };
    const hi = [{ role: "user", content: "Hi" }];
    expect((await refused({ model: "scribe", messages: hi, max_tokens: 0 })).param).toBe("max_tokens");
    expect((await refused({ model: "scribe", messages: hi, max_tokens: 9999 })).message).toContain("context of 256");
    const tooMany = await refused({ model: "scribe", messages: hi, max_tokens: 8, min_tokens: 9 });
    expect(tooMany).toMatchObject({ param: "min_tokens", message: expect.stringContaining("0 to max_tokens (8)") });
    expect((await refused({ model: "scribe", messages: [{ role: "wizard", content: "x" }] })).param).toBe(
      "messages[0].role",
    );
    expect((await refused({ model: "scribe", messages: hi, stop: Array(9).fill("x") })).param).toBe("stop");
    expect(await refused({ model: "scribe", messages: hi, presence_penalty: 2.5 })).toMatchObject({
      param: "presence_penalty",
      message: expect.stringContaining("must be -2 to 2"),
    });
    for (const repetition_penalty of [0, 0.05, 11]) {
      expect(await refused({ model: "scribe", messages: hi, repetition_penalty })).toMatchObject({
        param: "repetition_penalty",
        message: expect.stringContaining("repetition_penalty must be 0.1 to 10"),
      });
    }
    const biases: [Record<string, number>, string, string][] = [
      [{ "7": 101 }, "logit_bias.7", "a bias must be -100 to 100"],
      [
        { seven: 1 },
        "logit_bias.seven",
        'keys must be token ids (whole numbers from 0, at most 9 digits, written in decimal); "seven" is not one',
      ],
      [{ "-1": 1 }, "logit_bias.-1", '"-1" is not one'],
      [
        Object.fromEntries(Array.from({ length: 301 }, (_, i) => [String(i), 1])),
        "logit_bias",
        "at most 300 token ids",
      ],
    ];
    for (const [logit_bias, param, message] of biases) {
      expect(await refused({ model: "scribe", messages: hi, logit_bias })).toMatchObject({
        param,
        message: expect.stringContaining(message),
      });
    }
    // What is not served is refused saying so, rather than as an unknown field.
    const notServed: [Record<string, unknown>, string, string][] = [
      [
        { response_format: { type: "xml" } },
        "response_format.type",
        'type must be "text", "json_object" or "json_schema"',
      ],
      [
        { response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "array" } } } },
        "response_format.json_schema.schema",
        "the schema's root must be an object",
      ],
      [
        {
          response_format: {
            type: "json_schema",
            json_schema: { name: "x", schema: { type: "object", properties: { n: { type: "integer", minimum: 1 } } } },
          },
        },
        "response_format.json_schema.schema",
        "$.properties.n.minimum is not served",
      ],
      [
        {
          response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "object" } } },
          stop: ["}"],
        },
        "stop",
        "cannot be used with JSON mode",
      ],
      [{ response_format: { type: "json_object" }, min_tokens: 2 }, "min_tokens", "cannot be used with JSON mode"],
      [{ response_format: { type: "json_object" }, stop: ["}"] }, "stop", "cannot be used with JSON mode"],
      [{ tools: [{ type: "function", function: { name: "f" } }] }, "tool_choice", "cannot decide on its own"],
      [{ tool_choice: "required" }, "tool_choice", "tools lists none"],
    ];
    for (const [fields, param, message] of notServed) {
      expect(await refused({ model: "scribe", messages: hi, ...fields })).toMatchObject({
        param,
        message: expect.stringContaining(message),
      });
    }
    expect((await refused({ model: "plain-writer", messages: hi })).message).toContain("no chat template");
    expect((await refused({ model: "alpha", messages: hi })).message).toContain("not a text-generation");
    expect((await refused({ model: "scribe", prompt: "x".repeat(60_000) }, "/v1/completions")).param).toBe("prompt");
    await expect(client.chat.completions.create({ model: "nope", messages: [] })).rejects.toMatchObject({
      status: 400,
    });
    expect((await queue("scribe").stats("scribe")).queued).toBe(0);
  });

  it("continues a session's conversation on another worker exactly as one call holding it all", async () => {
    expect((await call("/v1/sessions/chat-a", { method: "PUT", body: {} })).status).toBeLessThan(300);
    const prompts: string[] = [];
    const first = await SocketWorker.connect("scribe", { worker_id: "first" });
    const stopFirst = serve(first, prompts);
    const chat = async (messages: { role: "user" | "assistant"; content: string }[], session?: string) =>
      (
        await client.chat.completions.create({
          model: "scribe",
          messages,
          // @ts-expect-error EdgeSwarm's extension
          session,
        })
      ).choices[0]?.message.content ?? "";
    const history: { role: "user" | "assistant"; content: string }[] = [{ role: "user", content: "Hello" }];
    history.push({ role: "assistant", content: await chat(history, "chat-a") });
    stopFirst();
    first.close();
    const second = await SocketWorker.connect("scribe", { worker_id: "second" });
    const stopSecond = serve(second, prompts);
    // Each later turn sends only its message; the same conversation in one call (no session) reads alike. The third
    // turn goes on from the second (the session's newest turn), not from the first.
    for (const content of ["And then?", "Last?"]) {
      const turn = await chat([{ role: "user", content }], "chat-a");
      history.push({ role: "user", content });
      const whole = await chat(history);
      expect(prompts.at(-2)).toBe(prompts.at(-1));
      expect(turn).toBe(whole);
      history.push({ role: "assistant", content: turn });
    }
    expect(prompts).toHaveLength(5);
    stopSecond();
    second.close();
  });

  it("is in the session's history by [DONE], so the next turn reads it", async () => {
    expect((await call("/v1/sessions/chat-s", { method: "PUT", body: {} })).status).toBeLessThan(300);
    const worker = await SocketWorker.connect("scribe");
    const prompts: string[] = [];
    const stop = serve(worker, prompts);
    // `session` is EdgeSwarm's extension: passed as a variable, past the client's excess-property check.
    const turn1 = {
      model: "scribe",
      messages: [{ role: "user" as const, content: "One" }],
      stream: true as const,
      session: "chat-s",
    };
    const stream = await client.chat.completions.create(turn1);
    let reply = "";
    for await (const chunk of stream) reply += chunk.choices[0]?.delta.content ?? "";
    await client.chat.completions.create({
      model: "scribe",
      messages: [{ role: "user", content: "Two" }],
      // @ts-expect-error EdgeSwarm's extension
      session: "chat-s",
    });
    expect(prompts[1]).toBe(`<|user|>One<|end|><|assistant|>${reply}<|end|><|user|>Two<|end|><|assistant|>`);
    stop();
    worker.close();
  });
});

describe("a session's streamed job", () => {
  /** The queue object's appends to sessions wait for `gate` (the object is reset after each test). */
  const holdAppends = (gate: Promise<void>) =>
    runInDurableObject(queue("scribe"), (instance) => {
      const appender = (instance as unknown as { sessions: { append: (...a: unknown[]) => Promise<unknown> } })
        .sessions;
      const append = appender.append;
      appender.append = async (...a) => {
        await gate;
        return append(...a);
      };
    });
  // `session` is EdgeSwarm's extension: passed as a variable, past the client's excess-property check.
  const turn = (session: string) => ({
    model: "scribe",
    messages: [{ role: "user" as const, content: "One" }],
    stream: true as const,
    session,
  });

  it("sends [DONE] only once its turn is appended to the session", async () => {
    expect((await call("/v1/sessions/chat-hold", { method: "PUT", body: {} })).status).toBeLessThan(300);
    const worker = await SocketWorker.connect("scribe");
    const stop = serve(worker, []);
    let release = () => {};
    await holdAppends(
      new Promise<void>((r) => {
        release = r;
      }),
    );
    let released = false;
    let finished = false;
    try {
      for await (const chunk of await client.chat.completions.create(turn("chat-hold"))) {
        if (chunk.choices[0]?.finish_reason && !finished) {
          finished = true;
          // Without the hold, [DONE] would come with this chunk, before the append could run.
          setTimeout(() => {
            released = true;
            release();
          }, 50);
        }
      }
      expect(finished).toBe(true);
      expect(released).toBe(true);
      expect((await call("/v1/sessions/chat-hold")).body.history).toHaveLength(1);
    } finally {
      stop();
      worker.close();
    }
  });

  it("ends its stream anyway once the wait for a session that does not answer runs out", async () => {
    expect((await call("/v1/sessions/chat-mute", { method: "PUT", body: {} })).status).toBeLessThan(300);
    const worker = await SocketWorker.connect("scribe");
    const stop = serve(worker, []);
    await holdAppends(new Promise<void>(() => {}));
    let reply = "";
    try {
      for await (const chunk of await client.chat.completions.create(turn("chat-mute"))) {
        reply += chunk.choices[0]?.delta.content ?? "";
      }
      expect(reply).not.toBe("");
      expect((await call("/v1/sessions/chat-mute")).body.history).toHaveLength(0);
    } finally {
      stop();
      worker.close();
    }
  }, 30_000);
});

describe("n choices", () => {
  it("generates n choices of one prompt, the i-th seeded seed + i, streamed and not, with usage summed", async () => {
    const worker = await SocketWorker.connect("scribe");
    const prompts: string[] = [];
    const params: { seed: number }[] = [];
    const stop = serve(worker, prompts, params as unknown[]);
    const messages = [{ role: "user" as const, content: "How was the film?" }];
    const answer = await client.chat.completions.create({ model: "scribe", messages, n: 3, seed: 7, temperature: 1 });
    const words = replyTo(prompts[0] ?? "");
    expect(answer.choices.map((c) => [c.index, c.message.content])).toEqual([0, 1, 2].map((i) => [i, words.join("")]));
    expect(params.map((p) => p.seed).sort()).toEqual([7, 8, 9]);
    // The prompt once, every choice's tokens (the scripted worker says 7 prompt tokens).
    expect(answer.usage).toEqual({
      prompt_tokens: 7,
      completion_tokens: 3 * words.length,
      total_tokens: 7 + 3 * words.length,
    });

    const stream = await client.completions.create({
      model: "scribe",
      prompt: "The film",
      n: 2,
      stream: true,
      stream_options: { include_usage: true },
    });
    const text = ["", ""];
    const finished: number[] = [];
    const usages: unknown[] = [];
    for await (const chunk of stream) {
      for (const c of chunk.choices) {
        text[c.index] += c.text;
        if (c.finish_reason) finished.push(c.index);
      }
      if (chunk.usage) usages.push(chunk.usage);
    }
    const reply = replyTo("The film");
    expect(text).toEqual([reply.join(""), reply.join("")]);
    expect(finished.sort()).toEqual([0, 1]);
    expect(usages).toEqual([
      { prompt_tokens: 7, completion_tokens: 2 * reply.length, total_tokens: 7 + 2 * reply.length },
    ]);
    stop();
    worker.close();
  });

  it("refuses n out of range, and n > 1 in a session, before anything is queued", async () => {
    const hi = [{ role: "user", content: "Hi" }];
    const over = await call("/v1/chat/completions", { body: { model: "scribe", messages: hi, n: 9 } });
    expect(over.status).toBe(400);
    expect(over.body.error).toMatchObject({ param: "n", message: expect.stringContaining("n must be 1 to 8") });
    expect((await call("/v1/sessions/chat-n", { method: "PUT", body: {} })).status).toBeLessThan(300);
    const session = await call("/v1/chat/completions", {
      body: { model: "scribe", messages: hi, n: 2, session: "chat-n" },
    });
    expect(session.status).toBe(400);
    expect(session.body.error).toMatchObject({ param: "n", message: expect.stringContaining("keeps one reply") });
    expect((await queue("scribe").stats("scribe")).queued).toBe(0);
  });
});

describe("JSON mode", () => {
  it("asks the worker for format json_object when a chat asks for response_format json_object", async () => {
    const worker = await SocketWorker.connect("scribe");
    const params: unknown[] = [];
    const stop = serve(worker, [], params);
    await client.chat.completions.create({
      model: "scribe",
      messages: [{ role: "user", content: "The hotel, as JSON" }],
      max_tokens: 4,
      response_format: { type: "json_object" },
    });
    // Spaced: the model may write JSON as it learnt it, `{"a": 1, "b": 2}`.
    expect(params[0]).toMatchObject({ format: "json_object", json_spacing: "spaced", max_new_tokens: 4 });
    stop();
    worker.close();
  });

  it("asks for format json_schema with the schema for response_format json_schema, on chat and completions", async () => {
    const worker = await SocketWorker.connect("scribe");
    const params: unknown[] = [];
    const stop = serve(worker, [], params);
    const schema = { type: "object", properties: { mood: { enum: ["good", "bad"] } }, required: ["mood"] };
    const response_format = { type: "json_schema" as const, json_schema: { name: "mood", strict: true, schema } };
    await client.chat.completions.create({
      model: "scribe",
      messages: [{ role: "user", content: "Mood?" }],
      response_format,
    });
    await client.completions.create({ model: "scribe", prompt: "Mood:", response_format } as never);
    // No schema given: any one object, as json_object.
    await client.chat.completions.create({
      model: "scribe",
      messages: [{ role: "user", content: "Mood?" }],
      response_format: { type: "json_schema", json_schema: { name: "any" } },
    });
    expect(params).toMatchObject([
      { format: "json_schema", schema, json_spacing: "spaced" },
      { format: "json_schema", schema, json_spacing: "spaced" },
      { format: "json_object", json_spacing: "spaced" },
    ]);
    expect(params[2]).not.toHaveProperty("schema");
    stop();
    worker.close();
  });
});

describe("POST /v1/completions", () => {
  it("completes a prompt, streamed and not", async () => {
    const worker = await SocketWorker.connect("scribe");
    const stop = serve(worker);
    const answer = await client.completions.create({ model: "scribe", prompt: "The film" });
    expect(answer.choices[0]?.text).toBe(replyTo("The film").join(""));
    expect(answer.usage?.completion_tokens).toBe(4);
    const stream = await client.completions.create({ model: "scribe", prompt: "The film", stream: true });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? "";
    expect(text).toBe(replyTo("The film").join(""));
    stop();
    worker.close();
  });
});

describe("POST /v1/completions with several prompts", () => {
  it("answers n choices of each prompt in order, each prompt counted once in usage, streamed and not", async () => {
    const worker = await SocketWorker.connect("scribe");
    const prompts: string[] = [];
    const params: { seed?: number }[] = [];
    const stop = serve(worker, prompts, params);
    const sent = ["The film", "A hotel"];
    const answer = await client.completions.create({ model: "scribe", prompt: sent, n: 2, temperature: 0.5, seed: 7 });
    // Each prompt's choices seeded seed + j, in a row.
    expect(prompts.map((p, i) => [p, params[i]?.seed])).toEqual([
      ["The film", 7],
      ["The film", 8],
      ["A hotel", 7],
      ["A hotel", 8],
    ]);
    // Choice i·n + j is prompt i's j-th: its text the reply to that prompt.
    expect(answer.choices.map((ch) => [ch.index, ch.text])).toEqual([
      [0, replyTo("The film").join("")],
      [1, replyTo("The film").join("")],
      [2, replyTo("A hotel").join("")],
      [3, replyTo("A hotel").join("")],
    ]);
    expect(answer.usage).toEqual({ prompt_tokens: 14, completion_tokens: 16, total_tokens: 30 });
    const stream = await client.completions.create({
      model: "scribe",
      prompt: sent,
      stream: true,
      stream_options: { include_usage: true },
    });
    const texts = ["", ""];
    let usage: unknown;
    for await (const chunk of stream) {
      for (const ch of chunk.choices) texts[ch.index] += ch.text;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(texts).toEqual(sent.map((p) => replyTo(p).join("")));
    expect(usage).toEqual({ prompt_tokens: 14, completion_tokens: 8, total_tokens: 22 });
    // Hugging Face's return_full_text puts each choice's own prompt before it.
    const res = await call("/models/scribe/v1/completions", {
      body: { model: "x", prompt: sent, return_full_text: true },
    });
    expect(res.body.choices.map((ch: { text: string }) => ch.text)).toEqual(sent.map((p) => p + replyTo(p).join("")));
    stop();
    worker.close();
  });

  it("refuses an empty prompt in the array, token ids, more choices than a call takes, and a session", async () => {
    const refused = async (body: Record<string, unknown>) => {
      const res = await call("/v1/completions", { body: { model: "scribe", ...body } });
      expect(res.status).toBe(400);
      return res.body.error as { message: string; param: string | null };
    };
    expect(await refused({ prompt: ["a", ""] })).toMatchObject({
      param: "prompt.1",
      message: expect.stringContaining("non-empty string"),
    });
    expect((await refused({ prompt: [[1, 2]] })).message).toContain("arrays of token ids are not supported");
    const many = Array.from({ length: 40 }, (_, i) => `p${i}`);
    expect(await refused({ prompt: many, n: 8 })).toMatchObject({
      param: "prompt",
      message: expect.stringContaining('40 prompts × n 8 are 320 choices; model "scribe" takes at most 256'),
    });
    expect((await refused({ prompt: [...many, ...many] })).message).toContain("an array of 1 to 64 prompts");
    expect((await call("/v1/sessions/cmpl-s", { method: "PUT", body: {} })).status).toBeLessThan(300);
    expect(await refused({ prompt: ["a", "b"], session: "cmpl-s" })).toMatchObject({
      param: "prompt",
      message: expect.stringContaining("keeps one reply"),
    });
    expect((await queue("scribe").stats("scribe")).queued).toBe(0);
  });
});

describe("GET /v1/models in OpenAI's shape", () => {
  it("lists every model for models.list(), retrieves one, and answers an unknown one with OpenAI's 404", async () => {
    const ids: string[] = [];
    for await (const model of client.models.list()) ids.push(model.id);
    expect(ids).toContain("scribe");
    expect(ids).toContain("alpha");
    const scribe = await client.models.retrieve("scribe");
    expect(scribe).toMatchObject({ id: "scribe", object: "model", owned_by: "edgeswarm", task: "text-generation" });
    expect((scribe as unknown as { max_model_len: number }).max_model_len).toBeGreaterThan(0);
    expect(await client.models.retrieve("alpha")).not.toHaveProperty("max_model_len");
    const missing = await client.models.retrieve("nope").catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(OpenAI.NotFoundError);
    expect((missing as InstanceType<typeof OpenAI.NotFoundError>).code).toBe("model_not_found");
    const stranger = new OpenAI({
      apiKey: "wrong",
      baseURL: "http://edge/v1",
      maxRetries: 0,
      fetch: SELF.fetch.bind(SELF),
    });
    expect(await stranger.models.retrieve("scribe").catch((e: unknown) => e)).toBeInstanceOf(
      OpenAI.AuthenticationError,
    );
    // EdgeSwarm's own list stays beside OpenAI's, and the routes below a model's name are still the operator's.
    expect((await call("/v1/models")).body.models.length).toBe(ids.length);
    const workers = await call("/v1/models/scribe/workers");
    expect(workers.status).toBe(401);
    expect(workers.body.error).toMatchObject({ code: "unauthorized" });
    expect(workers.body.error).not.toHaveProperty("type");
  });
});

describe("the SDK's generation calls", () => {
  it("chat answers and chatStream yields typed deltas, then the end with usage", async () => {
    const worker = await SocketWorker.connect("scribe");
    const stop = serve(worker);
    const sdk = new EdgeSwarmClient({
      baseUrl: "http://edge",
      apiKey: TEST_API_KEY,
      fetch: (url, init) => SELF.fetch(url, init),
    });
    const messages = [{ role: "user" as const, content: "Hi" }];
    const answer = await sdk.generation.chat("scribe", messages);
    expect(answer.choices[0]?.message.content).toBe(replyTo("<|user|>Hi<|end|><|assistant|>").join(""));
    const deltas: ChatDelta[] = [];
    for await (const delta of sdk.generation.chatStream("scribe", messages)) deltas.push(delta);
    // However the deltas were cut (a reader that joins late gets the tokens so far in one), they make the text.
    const text = deltas.flatMap((d) => (d.type === "text" ? [d.text] : [])).join("");
    expect(text).toBe(replyTo("<|user|>Hi<|end|><|assistant|>").join(""));
    expect(deltas.at(-1)).toEqual({
      type: "end",
      finish_reason: "length",
      usage: { prompt_tokens: 7, completion_tokens: 4, total_tokens: 11 },
    });
    stop();
    worker.close();
  });
});
