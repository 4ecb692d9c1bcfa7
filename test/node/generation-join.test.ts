// Continuous batching on the bundled decoder (models/gpt-tiny, onnxruntime-node cpu): a run that starts while
// another decodes joins its batch at the next step (told by the engine's run counter and by the order of the
// two runs' deltas, never by time), each run gets exactly the tokens it gets alone (greedy and seeded), the
// one done first resolves first, a cancelled run leaves the batch while the other goes on, and newcomers
// beyond the row cap wait for a row.
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ItemResult } from "../../shared/protocol/worker.ts";
import type { InferenceSession, LoadedModel, TokenDelta } from "../../shared/runner/model-runner.ts";
import { decoderShape } from "../../shared/tasks/text-generation-decoder.ts";
import { DecodeEngine } from "../../shared/tasks/text-generation-engine.ts";
import type { Sequence } from "../../shared/tasks/text-generation-sequence.ts";
import { createOrtNodeFactory } from "../../worker-gpu/runner/ort-node-session.ts";
import { loadGptTiny, generationOutput as output } from "../support/gpt-tiny.ts";

const folder = new URL("../../models/gpt-tiny/", import.meta.url);
const config = JSON.parse(readFileSync(new URL("config.json", folder), "utf8"));

let model: LoadedModel;
let session: InferenceSession;
beforeAll(async () => {
  model = await loadGptTiny("cpu");
  session = await createOrtNodeFactory().create(readFileSync(new URL("onnx/model.onnx", folder)), ["cpu"]);
}, 60_000);
afterAll(async () => {
  await model?.dispose();
  await session?.release();
});

// Greedy "the" runs to max_new_tokens (sampled runs of this model end within a sentence): the first run keeps
// it, so the batch is still decoding when the second run's sequences come and go.
const LONG = { prompt: "the", params: { max_new_tokens: 40 } };
const CASES = {
  greedy: {
    first: [LONG],
    second: [{ prompt: "<|user|>how was the film?<|end|><|assistant|>", params: { max_new_tokens: 12 } }],
  },
  seeded: {
    first: [LONG, { prompt: "the hotel room", params: { max_new_tokens: 30, temperature: 1, top_k: 20, seed: 11 } }],
    second: [
      {
        prompt: "<|user|>how was the film?<|end|><|assistant|>",
        params: { max_new_tokens: 12, temperature: 1.5, top_k: 50, seed: 3 },
      },
      { prompt: "the concert", params: { max_new_tokens: 20, temperature: 1, top_k: 20, seed: 11 } },
    ],
  },
};

const tokensOf = (results: readonly ItemResult[]) => results.map((r) => output(r).tokens);

/**
 * Runs `first`, and `second` from inside the first's `at`-th delta (a run that comes while the first decodes);
 * `order` is whose delta came, in order, and `settled` which run resolved first.
 */
async function joined(first: object[], second: object[], at: number, abort?: AbortController) {
  const order: ("a" | "b")[] = [];
  const settled: string[] = [];
  let started: Promise<ItemResult[]> | undefined;
  const a = await model.run(first, {
    onTokens: () => {
      order.push("a");
      if (order.length !== at) return;
      started = model.run(second, {
        onTokens: () => {
          order.push("b");
          // Cancelled within its second delta: no more of its tokens come.
          if (order.filter((o) => o === "b").length === 2) abort?.abort();
        },
        ...(abort ? { signal: abort.signal } : {}),
      });
      void started.then(() => settled.push("b"));
    },
  });
  settled.push("a");
  return { a, b: (await started) ?? [], order, settled };
}

describe("continuous batching on the bundled decoder", () => {
  for (const [name, { first, second }] of Object.entries(CASES)) {
    it(`lets a run that starts mid-decode join the running batch, each getting its tokens alone (${name})`, async () => {
      const aloneA = tokensOf(await model.run(first));
      const aloneB = tokensOf(await model.run(second));
      expect(aloneA[0]).toHaveLength(40);
      const { a, b, order } = await joined(first, second, 3);
      expect(tokensOf(a)).toEqual(aloneA);
      expect(tokensOf(b)).toEqual(aloneB);
      // Joined: the second's tokens come between the first's, not after the first has ended.
      const firstB = order.indexOf("b");
      const lastB = order.lastIndexOf("b");
      expect(firstB).toBeGreaterThanOrEqual(3);
      expect(order.slice(firstB, lastB).filter((o) => o === "a").length).toBeGreaterThan(0);
      expect(lastB).toBeLessThan(order.lastIndexOf("a"));
    }, 60_000);
  }

  it("resolves the run that is done first while the other still decodes", async () => {
    const { a, b, order, settled } = await joined(CASES.greedy.first, CASES.greedy.second, 2);
    expect(settled).toEqual(["b", "a"]);
    expect(tokensOf(b)[0]?.length).toBeGreaterThan(1);
    expect(tokensOf(a)[0]).toHaveLength(order.filter((o) => o === "a").length);
  }, 60_000);

  it("takes a cancelled run out of the batch at the next step and leaves the other intact", async () => {
    const aloneA = tokensOf(await model.run(CASES.seeded.first));
    const abort = new AbortController();
    const { a, b, order } = await joined(CASES.seeded.first, [LONG], 3, abort);
    expect(b.map((r) => ("error" in r ? r.error.code : "an output"))).toEqual(["cancelled"]);
    expect(order.filter((o) => o === "b")).toHaveLength(2);
    expect(tokensOf(a)).toEqual(aloneA);
  }, 60_000);

  it("answers a run whose signal is already aborted with cancelled, without decoding", async () => {
    const abort = new AbortController();
    abort.abort();
    const deltas: TokenDelta[] = [];
    const [r] = await model.run([LONG], { signal: abort.signal, onTokens: (d) => deltas.push(d) });
    expect(r && "error" in r ? r.error.code : r).toBe("cancelled");
    expect(deltas).toHaveLength(0);
  }, 60_000);
});

describe("the decode engine", () => {
  const shape = decoderShape(config);
  const prompt = [40, 41, 42, 43, 44];
  /** A sequence that ends after `n` tokens, taking tokens as they come. */
  const sequence = (pos: number, n: number, prefix = prompt): Sequence => ({
    pos,
    item: {
      prompt: "",
      params: { max_new_tokens: n, min_new_tokens: 0, temperature: 0, top_k: 0, top_p: 1, seed: 0, stop: [] },
    },
    promptTokens: prefix.length,
    prompt: prefix,
    prefix,
    generated: [],
    decode: () => "",
    sent: 0,
    text: "",
  });
  const take = (seq: Sequence, token: number) => {
    seq.generated.push(token);
    if (seq.generated.length >= seq.item.params.max_new_tokens) seq.finish = "length";
  };

  it("counts one decoder run a step for a batch, joined or not: a joining sequence adds only its prefill", async () => {
    const alone = new DecodeEngine(session, shape, 16);
    const soloA = sequence(0, 10);
    const soloB = sequence(1, 5, [7, 8]);
    await alone.generate([soloA], take);
    await alone.generate([soloB], take);
    // A prefill, then a step per further token.
    expect(alone.state.runs).toBe(10 + 5);

    const engine = new DecodeEngine(session, shape, 16);
    const a = sequence(0, 10);
    const b = sequence(1, 5, [7, 8]);
    let second: Promise<unknown> | undefined;
    await engine.generate([a], (seq, token) => {
      take(seq, token);
      if (seq.generated.length === 3) {
        second = engine.generate([b], take);
        expect(engine.state).toMatchObject({ rows: 1, waiting: 1 });
      }
    });
    await second;
    expect(engine.state).toMatchObject({ runs: 10 + 1, joined: 1, rows: 0, waiting: 0 });
    expect(a.generated).toEqual(soloA.generated);
    expect(b.generated).toEqual(soloB.generated);
  }, 60_000);

  it("fails only the run whose token listener throws; the rest of the batch decodes on", async () => {
    const engine = new DecodeEngine(session, shape, 16);
    const a = sequence(0, 10);
    const b = sequence(1, 8, [7, 8]);
    let second: Promise<unknown> | undefined;
    await engine.generate([a], (seq, token) => {
      take(seq, token);
      if (seq.generated.length !== 2) return;
      second = engine
        .generate([b], (other, t) => {
          take(other, t);
          if (other.generated.length === 3) throw new Error("listener broke");
        })
        .catch((error: Error) => error.message);
    });
    expect(await second).toBe("listener broke");
    const solo = sequence(0, 10);
    await new DecodeEngine(session, shape, 16).generate([solo], take);
    expect(a.generated).toEqual(solo.generated);
    expect(b.generated).toHaveLength(3);
    expect(engine.state).toMatchObject({ rows: 0, waiting: 0 });
  }, 60_000);

  it("keeps newcomers beyond the row cap waiting until a row frees, with the same tokens", async () => {
    const engine = new DecodeEngine(session, shape, 1);
    const a = sequence(0, 6);
    const b = sequence(1, 4, [7, 8]);
    const waitingWhileA: number[] = [];
    let second: Promise<unknown> | undefined;
    await engine.generate([a], (seq, token) => {
      take(seq, token);
      if (seq.generated.length === 2) second = engine.generate([b], take);
      waitingWhileA.push(engine.state.waiting);
    });
    await second;
    // b never decoded beside a: it waited while a ran, and ran alone after (its own prefill and steps).
    expect(waitingWhileA.slice(2)).toEqual([1, 1, 1, 1]);
    expect(engine.state).toMatchObject({ runs: 6 + 4, joined: 0 });
    const solo = sequence(1, 4, [7, 8]);
    await new DecodeEngine(session, shape, 1).generate([solo], take);
    expect(b.generated).toEqual(solo.generated);
  }, 60_000);
});
