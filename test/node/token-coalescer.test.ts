// shared/worker-loop/token-coalescer.ts: an item's first delta goes at once, later contiguous ones leave
// together within the window or at flush, within a frame's limits, and nothing is lost or reordered.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { TokenDelta } from "../../shared/runner/model-runner.ts";
import { deltaSize, FlushWindow, TokenCoalescer } from "../../shared/worker-loop/token-coalescer.ts";

const delta = (pos: number, offset: number, tokens: number[]): TokenDelta => ({
  pos,
  offset,
  tokens,
  text: tokens.map((t) => `<${t}>`).join(""),
});

describe("TokenCoalescer", () => {
  let sent: TokenDelta[];
  let c: TokenCoalescer;
  beforeEach(() => {
    vi.useFakeTimers();
    sent = [];
    c = new TokenCoalescer((d) => sent.push(d), new FlushWindow(20));
  });
  afterEach(() => vi.useRealTimers());

  it("sends each item's first delta at once and the rest as one frame per item when the window ends", () => {
    c.add(delta(0, 0, [1]));
    c.add(delta(1, 3, [7]));
    expect(sent).toEqual([delta(0, 0, [1]), delta(1, 3, [7])]);
    c.add(delta(0, 1, [2]));
    c.add(delta(1, 4, [8]));
    c.add(delta(0, 2, [3]));
    vi.advanceTimersByTime(19);
    expect(sent).toHaveLength(2);
    vi.advanceTimersByTime(1);
    expect(sent.slice(2)).toEqual([delta(0, 1, [2, 3]), delta(1, 4, [8])]);
    // Each item's frames still add up to its tokens, in order, with no gap.
    c.add(delta(0, 3, [4]));
    c.flush();
    const item0 = sent.filter((d) => d.pos === 0);
    expect(item0.flatMap((d) => d.tokens)).toEqual([1, 2, 3, 4]);
    expect(item0.map((d) => d.offset)).toEqual([0, 1, 3]);
    expect(item0.map((d) => d.text).join("")).toBe("<1><2><3><4>");
  });

  it("sends what it holds at flush, before the completion, and nothing after it", () => {
    c.add(delta(0, 0, [1]));
    c.add(delta(0, 1, [2]));
    c.flush();
    expect(sent).toEqual([delta(0, 0, [1]), delta(0, 1, [2])]);
    vi.advanceTimersByTime(100);
    expect(sent).toHaveLength(2);
  });

  it("never joins deltas that are not contiguous, nor past a frame's 256 tokens or 16,384 characters", () => {
    c.add(delta(0, 0, [1]));
    c.add(delta(0, 1, [2]));
    c.add(delta(0, 5, [6]));
    expect(sent).toEqual([delta(0, 0, [1]), delta(0, 1, [2])]);
    c.add(
      delta(
        0,
        6,
        Array.from({ length: 255 }, (_, i) => i),
      ),
    );
    c.add(delta(0, 261, [9]));
    c.flush();
    expect(sent.map((d) => [d.offset, d.tokens.length])).toEqual([
      [0, 1],
      [1, 1],
      [5, 256],
      [261, 1],
    ]);
    const long = "x".repeat(10_000);
    c.add({ pos: 0, offset: 262, tokens: [1], text: long });
    c.add({ pos: 0, offset: 263, tokens: [2], text: long });
    c.flush();
    expect(sent.slice(4).map((d) => [d.offset, d.text.length])).toEqual([
      [262, 10_000],
      [263, 10_000],
    ]);
  });

  it("joins deltas' log probabilities with their tokens, and counts them against a frame's size", () => {
    const entry = (t: number) => ({
      token: `<${t}>`,
      logprob: -1,
      top: Array.from({ length: 20 }, (_, id) => ({ id, token: "y".repeat(200), logprob: -2 })),
    });
    const withLogprobs = (offset: number, t: number) => ({ ...delta(0, offset, [t]), logprobs: [entry(t)] });
    c.add(withLogprobs(0, 1));
    c.add(withLogprobs(1, 2));
    c.add(withLogprobs(2, 3));
    c.add(withLogprobs(3, 4));
    c.flush();
    // A token's entry weighs about 5,000 characters: three after the first fill a frame's 16,384.
    expect(sent.map((d) => d.tokens)).toEqual([[1], [2, 3, 4]]);
    expect(sent.flatMap((d) => d.logprobs ?? []).map((e) => e.token)).toEqual(["<1>", "<2>", "<3>", "<4>"]);
    expect(deltaSize(sent[1] as TokenDelta)).toBeLessThanOrEqual(16_384);
    c.add(withLogprobs(4, 5));
    c.add(withLogprobs(5, 6));
    c.add(withLogprobs(6, 7));
    c.add(withLogprobs(7, 8));
    c.flush();
    expect(sent.slice(2).map((d) => d.tokens)).toEqual([[5, 6, 7], [8]]);
  });
});
