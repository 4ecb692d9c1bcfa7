// Log probabilities through the queue and the OpenAI routes, inside real workerd: a SocketWorker sends token
// deltas with their entries by hand (the real decoder's values are tested in test/node/generation-logprobs.test.ts
// and end to end in test/e2e/generation-stream.test.ts). The queue keeps them with the tokens (refusing a delta
// without them when the item asks), relays them to a late reader, sends them back with a redelivered item's
// resume; chat and completions answer them in OpenAI's shapes, streamed and not, through the official client.
import { SELF } from "cloudflare:test";
import OpenAI from "openai";
import { afterEach, describe, expect, it } from "vitest";
import { type ChatDelta, EdgeSwarmClient } from "../../client/sdk/index.ts";
import type { TokenLogprob } from "../../shared/protocol/generation.ts";
import { TEST_API_KEY } from "../support/test-models.ts";
import { CALLER, call, infer, SocketWorker, type SseEvent, sseReader, wipeQueues } from "./helpers.ts";

afterEach(() => wipeQueues());

const MODEL = "scribe";
const client = new OpenAI({
  apiKey: TEST_API_KEY,
  baseURL: "http://edge/v1",
  maxRetries: 0,
  fetch: (url: RequestInfo | URL, init?: RequestInit) => SELF.fetch(url, init),
});

/** A token's entry: its text, a log probability from its id, and `top` others. */
const entry = (id: number, token: string, top = 2): TokenLogprob => ({
  token,
  logprob: -id / 100,
  top: Array.from({ length: top }, (_, i) => ({ id: i, token: `t${i}é`, logprob: -(i + 1) / 10 })),
});
// Non-ASCII texts (one outside the BMP): kept and read back by character offsets all the same.
const WORDS = [" I", " r😀", "ead", " it"];
const ENTRIES = WORDS.map((w, i) => entry(100 + i, w));
const IDS = WORDS.map((_, i) => 100 + i);

const delta = (leaseId: string, offset: number, n: number, text: string, withLogprobs = true) => ({
  lease_id: leaseId,
  pos: 0,
  offset,
  tokens: IDS.slice(offset, offset + n),
  text,
  ...(withLogprobs ? { logprobs: ENTRIES.slice(offset, offset + n) } : {}),
});
const output = () => ({
  generated_text: WORDS.join(""),
  tokens: IDS,
  finish_reason: "length",
  prompt_tokens: 3,
  logprobs: ENTRIES,
});

async function until(stream: ReturnType<typeof sseReader>, type: string): Promise<SseEvent[]> {
  const seen: SseEvent[] = [];
  for (;;) {
    const e = await stream.next();
    if (!e) throw new Error(`stream ended before a ${type} event`);
    seen.push(e);
    if (e.event === type) return seen;
  }
}

describe("log probabilities in the queue", () => {
  it("are kept with the tokens, relayed to a late reader, and sent back with a redelivered item", async () => {
    const first = await SocketWorker.connect(MODEL, { worker_id: "first" });
    const accepted = await infer({
      model: MODEL,
      inputs: [{ prompt: "Tell me", params: { max_new_tokens: 8, logprobs: 2 } }],
      wait: false,
    });
    const batch = await first.next("batch");
    // A delta without its entries, or with too few, is refused saying what to send; nothing is kept.
    first.send({ type: "tokens", ...delta(batch.lease_id, 0, 1, " I", false) });
    expect((await first.next("error")).message).toContain("send one logprobs entry a token (0 for 1)");
    first.send({ type: "tokens", ...delta(batch.lease_id, 0, 2, " I r😀"), logprobs: ENTRIES.slice(0, 1) });
    expect((await first.next("error")).message).toContain("(1 for 2)");
    await first.sendTokens(delta(batch.lease_id, 0, 2, " I r😀"));
    await first.sendTokens(delta(batch.lease_id, 2, 1, "ead"));
    // A reader joining now catches up in one event, entries and all.
    const res = await SELF.fetch(`http://edge/v1/jobs/${accepted.body.id}/events`, { headers: CALLER });
    const stream = sseReader(res);
    const [caught] = (await until(stream, "token")).filter((e) => e.event === "token");
    expect(caught?.data).toEqual({
      index: 0,
      offset: 0,
      tokens: IDS.slice(0, 3),
      text: " I r😀ead",
      logprobs: ENTRIES.slice(0, 3),
    });
    first.close();

    const second = await SocketWorker.connect(MODEL, { worker_id: "second" });
    const again = await second.next("batch", 10_000);
    expect(again.items[0]?.input).toEqual({
      prompt: "Tell me",
      params: { max_new_tokens: 8, logprobs: 2 },
      resume: { tokens: IDS.slice(0, 3), text: " I r😀ead", logprobs: ENTRIES.slice(0, 3) },
    });
    await second.sendTokens(delta(again.lease_id, 3, 1, " it"));
    second.complete(again, output);
    const rest = await until(stream, "completed");
    expect(rest.filter((e) => e.event === "token").map((e) => e.data)).toEqual([
      { index: 0, offset: 3, tokens: [103], text: " it", logprobs: [ENTRIES[3]] },
    ]);
    expect(rest.at(-1)?.data.outputs[0].logprobs).toEqual(ENTRIES);
    second.close();
  });

  it("are not kept for an item that did not ask for them", async () => {
    const worker = await SocketWorker.connect(MODEL);
    const accepted = await infer({ model: MODEL, inputs: [{ prompt: "Hm" }], wait: false });
    const batch = await worker.next("batch");
    await worker.sendTokens(delta(batch.lease_id, 0, 2, " I r😀"));
    const res = await SELF.fetch(`http://edge/v1/jobs/${accepted.body.id}/events`, { headers: CALLER });
    const [caught] = (await until(sseReader(res), "token")).filter((e) => e.event === "token");
    expect(caught?.data).toEqual({ index: 0, offset: 0, tokens: IDS.slice(0, 2), text: " I r😀" });
    worker.close();
  });
});

/** Serves one batch: the tokens in three deltas (the second's text held back, as a possible stop string's). */
async function serveOne(worker: SocketWorker, params: unknown[]) {
  const batch = await worker.next("batch");
  params.push((batch.items[0]?.input as { params?: unknown } | undefined)?.params);
  await worker.sendTokens(delta(batch.lease_id, 0, 1, " I"));
  await worker.sendTokens(delta(batch.lease_id, 1, 1, ""));
  await worker.sendTokens(delta(batch.lease_id, 2, 2, " r😀ead it"));
  worker.complete(batch, output);
}

const bytes = (s: string) => [...new TextEncoder().encode(s)];
const chatEntry = (e: TokenLogprob) => ({
  token: e.token,
  logprob: e.logprob,
  bytes: bytes(e.token),
  top_logprobs: e.top.map((t) => ({ token: t.token, logprob: t.logprob, bytes: bytes(t.token) })),
});

describe("log probabilities on the OpenAI routes", () => {
  it("answer a chat's logprobs.content, with top_logprobs, streamed and not", async () => {
    const worker = await SocketWorker.connect(MODEL);
    const params: unknown[] = [];
    const messages = [{ role: "user" as const, content: "Hi" }];
    const served = serveOne(worker, params);
    const answer = await client.chat.completions.create({ model: MODEL, messages, logprobs: true, top_logprobs: 2 });
    await served;
    expect(params[0]).toMatchObject({ logprobs: 2 });
    expect(answer.choices[0]?.logprobs).toEqual({ content: ENTRIES.map(chatEntry) });

    const streamed = serveOne(worker, params);
    const stream = await client.chat.completions.create({ model: MODEL, messages, logprobs: true, stream: true });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk.choices[0]);
    await streamed;
    expect(params[1]).toMatchObject({ logprobs: 0 });
    // The held-back token's entry comes with the next text; the finish chunk has none left (null, as OpenAI's).
    expect(chunks.map((c) => [c?.delta.content, c?.logprobs?.content?.map((e) => e.token)])).toEqual([
      [" I", [" I"]],
      [" r😀ead it", [" r😀", "ead", " it"]],
      [undefined, undefined],
    ]);
    expect(chunks.at(-1)?.logprobs).toBeNull();
    // Not asked for: none.
    const plain = serveOne(worker, params);
    expect((await client.chat.completions.create({ model: MODEL, messages })).choices[0]?.logprobs).toBeNull();
    await plain;
    expect(params[2]).not.toHaveProperty("logprobs");
    worker.close();
  });

  it("answer a completion's tokens, token_logprobs, top_logprobs and text_offset, streamed and not", async () => {
    const worker = await SocketWorker.connect(MODEL);
    const params: unknown[] = [];
    const served = serveOne(worker, params);
    const answer = await client.completions.create({ model: MODEL, prompt: "The film", logprobs: 1 });
    await served;
    expect(params[0]).toMatchObject({ logprobs: 1 });
    const offsets = [0, 2, 6, 9]; // " I", " r😀" (4 UTF-16 units), "ead"
    const legacy = {
      tokens: WORDS,
      token_logprobs: ENTRIES.map((e) => e.logprob),
      // The top tokens, and the token itself (OpenAI's "logprobs + 1").
      top_logprobs: ENTRIES.map((e) => ({ t0é: -0.1, t1é: -0.2, [e.token]: e.logprob })),
      text_offset: offsets,
    };
    expect(answer.choices[0]?.logprobs).toEqual(legacy);

    const streamed = serveOne(worker, params);
    const stream = await client.completions.create({ model: MODEL, prompt: "The film", logprobs: 1, stream: true });
    const parts = [];
    for await (const chunk of stream) if (chunk.choices[0]) parts.push(chunk.choices[0].logprobs);
    await streamed;
    expect(parts.flatMap((p) => p?.tokens ?? [])).toEqual(WORDS);
    expect(parts.flatMap((p) => p?.text_offset ?? [])).toEqual(offsets);
    worker.close();
  });

  it("stream each of n choices' entries under its own index", async () => {
    const worker = await SocketWorker.connect(MODEL);
    const served = (async () => {
      const batch = await worker.next("batch");
      expect(batch.items).toHaveLength(2);
      // Choice 1's tokens first, then choice 0's: each keeps its own.
      for (const pos of [1, 0]) {
        const own = (e: TokenLogprob) => ({ ...e, token: `${e.token}#${pos}` });
        await worker.sendTokens({
          ...delta(
            batch.lease_id,
            0,
            2,
            WORDS.slice(0, 2)
              .map((w) => `${w}#${pos}`)
              .join(""),
          ),
          pos,
          logprobs: ENTRIES.slice(0, 2).map(own),
        });
      }
      worker.complete(batch, () => output());
    })();
    const stream = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "Hi" }],
      n: 2,
      temperature: 0.5,
      logprobs: true,
      stream: true,
    });
    const byChoice: string[][] = [[], []];
    for await (const chunk of stream) {
      for (const ch of chunk.choices) byChoice[ch.index]?.push(...(ch.logprobs?.content ?? []).map((e) => e.token));
    }
    await served;
    // Each choice's streamed entries, then (as its output's were not all streamed) the rest of its output's.
    expect(byChoice[0]?.slice(0, 2)).toEqual([" I#0", " r😀#0"]);
    expect(byChoice[1]?.slice(0, 2)).toEqual([" I#1", " r😀#1"]);
    expect(byChoice.map((c) => c.length)).toEqual([4, 4]);
    worker.close();
  });

  it("echo a completion's prompt, with its tokens' log probabilities before the reply's", async () => {
    const worker = await SocketWorker.connect(MODEL);
    const params: unknown[] = [];
    // The worker's prompt entries (prompt_tokens 3): the first with no figures.
    const PROMPT_ENTRIES = [
      { token: "The", logprob: null, top: [] },
      { ...entry(1, " fi", 1), logprob: -1.5 },
      { ...entry(2, "lm", 1), logprob: -0.5 },
    ];
    const served = (async () => {
      const batch = await worker.next("batch");
      params.push((batch.items[0]?.input as { params?: unknown } | undefined)?.params);
      worker.complete(batch, () => ({
        ...output(),
        logprobs: ENTRIES.map((e) => ({ ...e, top: e.top.slice(0, 1) })),
        end_logprob: { ...entry(9, "<|end|>", 1), logprob: -0.25 },
        prompt_logprobs: PROMPT_ENTRIES,
      }));
    })();
    const answer = await client.completions.create({ model: MODEL, prompt: "The film", logprobs: 1, echo: true });
    await served;
    expect(params[0]).toMatchObject({ logprobs: 1, prompt_logprobs: 1 });
    const choice = answer.choices[0];
    expect(choice?.text).toBe(`The film${WORDS.join("")}`);
    // The prompt's tokens, the reply's, and the end-of-text token that ended it (its text adds nothing).
    expect(choice?.logprobs?.tokens).toEqual(["The", " fi", "lm", ...WORDS, "<|end|>"]);
    expect(choice?.logprobs?.token_logprobs).toEqual([null, -1.5, -0.5, ...ENTRIES.map((e) => e.logprob), -0.25]);
    expect(choice?.logprobs?.top_logprobs?.[0]).toBeNull();
    expect(choice?.logprobs?.top_logprobs?.[1]).toEqual({ t0é: -0.1, " fi": -1.5 });
    expect(choice?.logprobs?.text_offset).toEqual([0, 3, 6, 8, 10, 14, 17, 20]);
    // echo alone: the prompt first, and no prompt entries asked of the worker.
    const plain = serveOne(worker, params);
    const echoed = await client.completions.create({ model: MODEL, prompt: "The film", echo: true });
    await plain;
    expect(echoed.choices[0]?.text).toBe(`The film${WORDS.join("")}`);
    expect(params[1]).not.toHaveProperty("prompt_logprobs");
    worker.close();
  });

  it("answer a turn in a session, whose history keeps the reply without them", async () => {
    expect((await call("/v1/sessions/lp-s", { method: "PUT", body: {} })).status).toBeLessThan(300);
    const worker = await SocketWorker.connect(MODEL);
    const served = serveOne(worker, []);
    const answer = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "Hi" }],
      logprobs: true,
      // @ts-expect-error EdgeSwarm's extension
      session: "lp-s",
    });
    await served;
    expect(answer.choices[0]?.logprobs?.content).toHaveLength(4);
    const history = (await call("/v1/sessions/lp-s")).body.history as { output: object[] }[];
    expect(history.at(-1)?.output[0]).toEqual({
      generated_text: WORDS.join(""),
      tokens: IDS,
      finish_reason: "length",
      prompt_tokens: 3,
    });
    worker.close();
  });

  it("refuse top_logprobs without logprobs, past 20, more than an answer holds, echo streamed, before anything is queued", async () => {
    const refused = async (path: string, body: object) => {
      const res = await SELF.fetch(`http://edge/v1/${path}`, {
        method: "POST",
        headers: { ...CALLER, "content-type": "application/json" },
        body: JSON.stringify({ model: MODEL, ...body }),
      });
      expect(res.status).toBe(400);
      return ((await res.json()) as { error: { param: string; message: string } }).error;
    };
    const hi = [{ role: "user", content: "Hi" }];
    expect(await refused("chat/completions", { messages: hi, top_logprobs: 2 })).toMatchObject({
      param: "top_logprobs",
      message: expect.stringContaining("top_logprobs needs logprobs: true"),
    });
    expect(await refused("chat/completions", { messages: hi, logprobs: true, top_logprobs: 21 })).toMatchObject({
      param: "top_logprobs",
      message: expect.stringContaining("must be 0 to 20"),
    });
    expect(await refused("completions", { prompt: "The", logprobs: 21 })).toMatchObject({ param: "logprobs" });
    // 600 tokens with 20 top tokens each are 12,600 entries: past the 12,000 an answer holds (a long-context model).
    const LONG = "long-writer";
    expect(await refused("completions", { model: LONG, prompt: "The", logprobs: 20, max_tokens: 600 })).toMatchObject({
      param: "max_tokens",
      message: expect.stringContaining("lower max_tokens to 571 or logprobs"),
    });
    const own = (params: object) =>
      SELF.fetch("http://edge/v1/infer", {
        method: "POST",
        headers: { ...CALLER, "content-type": "application/json" },
        body: JSON.stringify({ model: LONG, inputs: [{ prompt: "The", params }], wait: false }),
      });
    const over = await own({ max_new_tokens: 1000, logprobs: 20 });
    expect(over.status).toBe(422); // the own API's status for inputs the workers would refuse
    expect(JSON.stringify(await over.json())).toContain("lower max_new_tokens to 571 or logprobs");
    // max_tokens 0 scores a prompt: only with echo and logprobs.
    expect(await refused("completions", { prompt: "The", max_tokens: 0, echo: true })).toMatchObject({
      param: "max_tokens",
      message: expect.stringContaining("0 only with echo and logprobs"),
    });
    // Each choice fits (500 × 21), but 10 of them are more than a call's answer holds (96,000).
    const ten = Array.from({ length: 10 }, (_, i) => `p${i}`);
    expect(await refused("completions", { model: LONG, prompt: ten, logprobs: 20, max_tokens: 500 })).toMatchObject({
      param: "prompt",
      message: expect.stringContaining("a call's answer holds at most 96000"),
    });
    // 2,000 tokens with 5 each are exactly 12,000: taken.
    expect((await own({ max_new_tokens: 2000, logprobs: 5 })).status).toBe(202);
    // A caller's resume (the queue's own field) is refused as verify is.
    const resumed = await SELF.fetch("http://edge/v1/infer", {
      method: "POST",
      headers: { ...CALLER, "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL, inputs: [{ prompt: "The", resume: { tokens: [1], text: "x" } }] }),
    });
    expect(resumed.status).toBe(422);
    expect(JSON.stringify(await resumed.json())).toContain("resume is set by the queue");
    expect(await refused("completions", { prompt: "The", echo: true, stream: true })).toMatchObject({
      param: "echo",
      message: expect.stringContaining("echo is served without stream"),
    });
    const hf = { model: "x", prompt: "The", echo: true, return_full_text: true };
    // Hugging Face's route answers its own error shape.
    expect(JSON.stringify(await refused(`../models/${MODEL}/v1/completions`, hf))).toContain(
      "give echo or return_full_text, not both",
    );
  });
});

describe("log probabilities in the SDK", () => {
  it("chat answers them, and chatStream yields each text delta's", async () => {
    const worker = await SocketWorker.connect(MODEL);
    const sdk = new EdgeSwarmClient({
      baseUrl: "http://edge",
      apiKey: TEST_API_KEY,
      fetch: (url, init) => SELF.fetch(url, init),
    });
    const messages = [{ role: "user" as const, content: "Hi" }];
    const params: unknown[] = [];
    const served = serveOne(worker, params);
    const answer = await sdk.generation.chat(MODEL, messages, { logprobs: true, top_logprobs: 2 });
    await served;
    expect(answer.choices[0]?.logprobs?.content).toEqual(ENTRIES.map(chatEntry));
    const streamed = serveOne(worker, params);
    const deltas: ChatDelta[] = [];
    for await (const d of sdk.generation.chatStream(MODEL, messages, { logprobs: true })) deltas.push(d);
    await streamed;
    const texts = deltas.flatMap((d) => (d.type === "text" ? [[d.text, d.logprobs?.map((e) => e.token)]] : []));
    expect(texts).toEqual([
      [" I", [" I"]],
      [" r😀ead it", [" r😀", "ead", " it"]],
    ]);
    worker.close();
  });
});
