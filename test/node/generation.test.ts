// The text-generation task on the bundled decoder (models/gpt-tiny), through onnxruntime-node (cpu) and
// onnxruntime-web (wasm): greedy output the same on both, seeded sampling reproducible, a resumed run equal to
// the uninterrupted one from any prefix, stop strings and max_new_tokens ending with the right finish_reason,
// a batch equal to each prompt alone, streamed deltas adding up to the output, and bad items refused.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ItemResult } from "../../shared/protocol/worker.ts";
import type { LoadedModel, TokenDelta } from "../../shared/runner/model-runner.ts";
import { WebThreadPool } from "../../worker-gpu/web/thread-pool.ts";
import { loadGptTiny, generationOutput as output, registryUrl, gptTiny as spec } from "../support/gpt-tiny.ts";

let node: LoadedModel;
let web: LoadedModel;
beforeAll(async () => {
  node = await loadGptTiny("cpu");
  web = await loadGptTiny("wasm");
}, 60_000);
afterAll(async () => {
  await node?.dispose();
  await web?.dispose();
});

const prompts = ["the pizza was", "<|user|>how was the film?<|end|><|assistant|>", "the hotel room"];

describe("text-generation on the bundled decoder", () => {
  it("writes on-topic text, greedy, the same on onnxruntime-node and onnxruntime-web", async () => {
    const items = prompts.map((prompt) => ({ prompt, params: { max_new_tokens: 24 } }));
    const [a, b] = await Promise.all([node.run(items), web.run(items)]);
    const fromNode = a.map(output);
    expect(b.map(output).map((o) => o.tokens)).toEqual(fromNode.map((o) => o.tokens));
    expect(fromNode[0]?.generated_text).toMatch(/\w+/);
    expect(fromNode[0]?.prompt_tokens).toBeGreaterThan(0);
    // The film chat answers about a film, and ends at the chat template's end-of-turn token.
    expect(fromNode[1]?.generated_text).toMatch(/film|movie|plot|acting|story|ending|cast/);
    expect(fromNode[1]?.finish_reason).toBe("stop");
  }, 60_000);

  it("streams the same tokens from a --runtime web thread (deltas cross the thread through Comlink), and cancels there", async () => {
    const pool = await WebThreadPool.start(
      { size: 1, runTimeoutMs: 60_000, registryUrl: registryUrl.href, log: () => {} },
      [spec],
    );
    try {
      const items = prompts.map((prompt) => ({ prompt, params: { max_new_tokens: 12 } }));
      const deltas: TokenDelta[] = [];
      const threaded = (await pool.models()[0]?.run(items, { onTokens: (d) => deltas.push(d) })) ?? [];
      const direct = (await node.run(items)).map(output);
      expect(threaded.map(output).map((o) => o.tokens)).toEqual(direct.map((o) => o.tokens));
      expect(deltas.flatMap((d) => d.tokens)).toHaveLength(direct.flatMap((o) => o.tokens).length);
      // A signal aborted on this side reaches the run in the thread: it stops at its next step, cancelled.
      const abort = new AbortController();
      let seen = 0;
      const long = [{ prompt: "the", params: { max_new_tokens: 40 } }];
      const [cancelled] =
        (await pool.models()[0]?.run(long, {
          signal: abort.signal,
          onTokens: () => {
            if (++seen === 2) abort.abort();
          },
        })) ?? [];
      expect(cancelled && "error" in cancelled ? cancelled.error.code : cancelled).toBe("cancelled");
      expect(seen).toBeLessThan(40);
    } finally {
      await pool.close();
    }
  }, 120_000);

  it("samples reproducibly by seed, and differently for another seed", async () => {
    const item = (seed: number) => ({
      prompt: "the",
      params: { max_new_tokens: 30, temperature: 1, top_k: 40, top_p: 0.95, seed },
    });
    const [one, again, other] = (await node.run([item(7), item(7), item(8)])).map(output);
    expect(again?.tokens).toEqual(one?.tokens);
    expect(other?.tokens).not.toEqual(one?.tokens);
  }, 60_000);

  it("continues a resumed item exactly as the uninterrupted run, from any prefix", async () => {
    for (const params of [{ max_new_tokens: 20 }, { max_new_tokens: 20, temperature: 0.9, seed: 3 }]) {
      const [full] = (await node.run([{ prompt: "the concert", params }])).map(output);
      const tokens = full?.tokens ?? [];
      expect(tokens.length).toBeGreaterThan(2);
      for (const cut of new Set([1, Math.floor(tokens.length / 2), tokens.length - 1, tokens.length])) {
        const deltas: TokenDelta[] = [];
        const resume = { tokens: tokens.slice(0, cut), text: "" };
        const [resumed] = (
          await node.run([{ prompt: "the concert", params, resume }], { onTokens: (d) => deltas.push(d) })
        ).map(output);
        expect(resumed?.tokens).toEqual(tokens);
        expect(resumed?.finish_reason).toBe(full?.finish_reason);
        // Deltas start after the resumed prefix, never repeating it.
        expect(deltas.map((d) => d.offset)).toEqual(tokens.slice(cut).map((_, i) => cut + i));
      }
    }
  }, 120_000);

  it("streams deltas that add up to the output", async () => {
    const deltas: TokenDelta[] = [];
    const items = prompts.map((prompt) => ({ prompt, params: { max_new_tokens: 16 } }));
    const results = (await node.run(items, { onTokens: (d) => deltas.push(d) })).map(output);
    results.forEach((o, pos) => {
      const mine = deltas.filter((d) => d.pos === pos);
      expect(mine.map((d) => d.offset)).toEqual(mine.map((_, i) => i));
      expect(mine.flatMap((d) => d.tokens)).toEqual(o.tokens);
      expect(mine.map((d) => d.text).join("")).toBe(o.generated_text);
    });
  }, 60_000);

  it("ends at a stop string (not output) with stop, and at max_new_tokens with length", async () => {
    const [free] = (await node.run([{ prompt: "the hotel room", params: { max_new_tokens: 20 } }])).map(output);
    const text = free?.generated_text ?? "";
    const stop = text.trim().split(" ")[1] ?? text.slice(2, 4);
    const [stopped, short] = (
      await node.run([
        { prompt: "the hotel room", params: { max_new_tokens: 20, stop: [stop] } },
        { prompt: "the hotel room", params: { max_new_tokens: 2 } },
      ])
    ).map(output);
    expect(stopped?.finish_reason).toBe("stop");
    expect(stopped?.generated_text).toBe(text.slice(0, text.indexOf(stop)));
    expect(short?.finish_reason).toBe("length");
    expect(free?.tokens.length).toBeGreaterThan(2);
    expect(short?.tokens).toEqual(free?.tokens.slice(0, 2));
  }, 60_000);

  it("decodes a batch of prompts as each prompt alone", async () => {
    const items = prompts.map((prompt) => ({ prompt, params: { max_new_tokens: 12 } }));
    const together = (await node.run(items)).map(output);
    for (const [i, item] of items.entries()) {
      const [alone] = (await node.run([item])).map(output);
      expect(together[i]?.tokens).toEqual(alone?.tokens);
    }
  }, 60_000);

  it("refuses items over the context, or asking too much, saying what to fix", async () => {
    const long = "the pizza was good ".repeat(200);
    const results = await node.run([
      { prompt: long },
      { prompt: "hi", params: { max_new_tokens: 255 } },
      { prompt: "hi", params: { max_new_tokens: 5000 } },
      { prompt: "" },
      { prompt: "the", params: { max_new_tokens: 2 } },
      { prompt: "hi", params: { max_new_tokens: 4, min_new_tokens: 5 } },
    ]);
    const message = (r: ItemResult | undefined) => (r && "error" in r ? `${r.error.code}: ${r.error.message}` : "ok");
    expect(message(results[0])).toMatch(/invalid_input: prompt is \d+ tokens; the model's context is 256/);
    expect(message(results[1])).toMatch(/invalid_input: .*max_new_tokens .*lower max_new_tokens to at most/);
    expect(message(results[2])).toMatch(/invalid_input: params.max_new_tokens/);
    expect(message(results[3])).toMatch(/invalid_input: prompt/);
    expect(output(results[4]).tokens.length).toBeLessThanOrEqual(2);
    expect(message(results[5])).toMatch(
      /invalid_input: params.min_new_tokens: min_new_tokens must be at most max_new_tokens/,
    );
  }, 60_000);
});
