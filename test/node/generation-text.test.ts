// The text-generation task's pure parts: what text a delta may carry (held back: a character whose bytes are
// not all out, a tail that may become a stop string), where a stop string cuts, and the seeded sampler
// (a pure function of seed and position, inside top_k / top_p). The model-level tests are generation.test.ts.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { GenerationParams } from "../../shared/protocol/generation.ts";
import { inputProblems } from "../../shared/tasks/input-checks.ts";
import { advanceText } from "../../shared/tasks/text-generation.ts";
import { candidates, pickToken, uniformAt } from "../../shared/tasks/text-generation-sampler.ts";
import { startSequence, takeToken } from "../../shared/tasks/text-generation-sequence.ts";
import { createTokenizer } from "../../shared/tasks/tokenizer.ts";

describe("text-generation deltas and sampling", () => {
  it("holds back a partial character and a possible stop string, and cuts at the first stop", () => {
    expect(advanceText("hello wor\uFFFD", 0, [])).toEqual({ text: "hello wor" });
    expect(advanceText("the food. Us", 4, ["User:"])).toEqual({ text: "food. " });
    expect(advanceText("the food. User: hi", 10, ["User:", "hi"])).toEqual({
      text: "",
      stopped: "the food. ",
    });
    expect(advanceText("abc END more", 2, ["END"])).toEqual({ text: "c ", stopped: "abc " });
  });

  it("streams text that only grows: gpt-tiny's spaces before punctuation are kept, as its config asks nothing else", () => {
    const read = (name: string) =>
      JSON.parse(readFileSync(new URL(`../../models/gpt-tiny/${name}`, import.meta.url), "utf8"));
    const tokenizer = createTokenizer(read("tokenizer.json"), read("tokenizer_config.json"));
    const ids = tokenizer("Hi . ok , fine", { return_tensor: false }).input_ids as number[];
    expect(tokenizer.decode(ids)).toBe("Hi . ok , fine");
    // Token by token, as the decode loop streams it: the deltas add up to the whole text at every step.
    const seq = startSequence(
      0,
      { prompt: "p", params: GenerationParams.parse({ max_new_tokens: 64 }) },
      [1],
      tokenizer.decode,
    );
    let sent = "";
    for (const id of ids) {
      sent += takeToken(seq, id, [], tokenizer.decode) ?? "";
      expect(tokenizer.decode(seq.generated).startsWith(sent)).toBe(true);
    }
    expect(sent).toBe("Hi . ok , fine");
  });

  it("draws the same number for the same seed and position, and keeps samples inside top_k and top_p", () => {
    expect(uniformAt(7, 12)).toBe(uniformAt(7, 12));
    expect(uniformAt(7, 12)).not.toBe(uniformAt(7, 13));
    expect(uniformAt(7, 12)).not.toBe(uniformAt(8, 12));
    const logits = [0, 5, 4, 3, -2];
    const p = { temperature: 1, top_k: 2, top_p: 1, seed: 0 };
    expect(candidates(logits, 0, 5, p).map((c) => c.id)).toEqual([1, 2]);
    for (let position = 0; position < 50; position++) expect([1, 2]).toContain(pickToken(logits, 0, 5, p, position));
    const nucleus = candidates(logits, 0, 5, { temperature: 1, top_k: 0, top_p: 0.5, seed: 0 });
    expect(nucleus.map((c) => c.id)).toEqual([1]);
    expect(pickToken(logits, 0, 5, { temperature: 0, top_k: 0, top_p: 1, seed: 9 }, 3)).toBe(1);
  });

  it("orders a Float32Array row (radix sort of its bits) exactly as a plain array (a comparator): ties, -0, -Infinity", () => {
    let x = 7;
    const next = () => {
      x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
      return x / 2 ** 32;
    };
    for (let t = 0; t < 300; t++) {
      const vocab = 1 + Math.floor(next() * 700);
      const row = new Float32Array(vocab * 2);
      for (let i = 0; i < row.length; i++) {
        const k = next();
        row[i] =
          k < 0.05 ? Number.NEGATIVE_INFINITY : k < 0.15 ? Math.round(next() * 4) : k < 0.2 ? -0 : (next() - 0.5) * 20;
      }
      const plain = Array.from(row);
      const p = {
        temperature: [0.5, 1, 1.5][t % 3] as number,
        top_k: [0, 1, 7][t % 3] as number,
        top_p: [1, 0.9, 0.3, 0.6][t % 4] as number,
        seed: t,
      };
      expect(candidates(row, vocab, 2 * vocab, p)).toEqual(candidates(plain, vocab, 2 * vocab, p));
      for (let position = 0; position < 4; position++) {
        expect(pickToken(row, vocab, 2 * vocab, p, position)).toBe(pickToken(plain, vocab, 2 * vocab, p, position));
      }
    }
  });

  it("refuses bad text-generation items at the edge, before queueing, saying what to fix", () => {
    const model = {
      task: "text-generation",
      max_sequence_length: 256,
      files: { model: { path: "m", sha256: "0".repeat(64) } },
    };
    const problems = inputProblems(model, [
      { prompt: "the film" },
      "a bare prompt",
      { prompt: "x", params: { max_new_tokens: 0 } },
      { prompt: "x", params: { max_new_tokens: 300 } },
      { prompt: "x", params: { stop: Array(9).fill("a") } },
      { text: "x" },
    ]);
    expect(problems.map((p) => p.index)).toEqual([2, 3, 4, 5]);
    expect(problems[0]?.message).toMatch(/^params.max_new_tokens: /);
    expect(problems[1]?.message).toMatch(/max_new_tokens is 300; the model's context is 256 tokens/);
    expect(problems[2]?.message).toMatch(/^params.stop: /);
    expect(problems[3]?.message).toMatch(/expected \{prompt, params\?, resume\?\}/);
  });
});
