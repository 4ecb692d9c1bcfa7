// The teacher-forced check of a claimed generation (issue 14, point 8) on the bundled decoder (models/gpt-tiny)
// through onnxruntime-node, and onnxruntime-web's claims checked by it: an honest output (greedy, sampled,
// stopped by a string, cut by max_new_tokens) is agreed in one prefill; a substituted token, a claim cut short,
// a wrong finish_reason or text is a mismatch at the right index; claims share a batch with generating items
// without changing them; the tolerance rule itself on synthetic logits.
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type GenerationItem,
  type GenerationOutput,
  GenerationParams,
  GenerationVerdict,
} from "../../shared/protocol/generation.ts";
import type { ItemResult } from "../../shared/protocol/worker.ts";
import type { InferenceSession, LoadedModel, TypedTensor } from "../../shared/runner/model-runner.ts";
import { inputProblems } from "../../shared/tasks/input-checks.ts";
import { jsonFeed, jsonStart } from "../../shared/tasks/json-grammar.ts";
import { modelProblem } from "../../shared/tasks/text-generation-item.ts";
import { penalise, pickToken, tokenAllowed } from "../../shared/tasks/text-generation-sampler.ts";
import { createOrtNodeFactory } from "../../worker-gpu/runner/ort-node-session.ts";
import { loadGptTiny, generationOutput as output } from "../support/gpt-tiny.ts";

const TOL = 1e-3;

const verdict = (r: ItemResult | undefined): GenerationVerdict => {
  if (!r || !("output" in r)) throw new Error(`expected a verdict, got ${JSON.stringify(r)}`);
  return GenerationVerdict.parse(r.output);
};

let node: LoadedModel;
let web: LoadedModel;
/** Every session run the node model makes, counted: a check is one run, however many tokens it reads. */
let runs = 0;
beforeAll(async () => {
  const factory = createOrtNodeFactory();
  const counting = {
    ...factory,
    async create(...args: Parameters<typeof factory.create>): Promise<InferenceSession> {
      const session = await factory.create(...args);
      const runTyped = session.runTyped?.bind(session);
      return Object.assign(Object.create(session), {
        run: (feeds: Parameters<InferenceSession["run"]>[0]) => {
          runs++;
          return session.run(feeds);
        },
        ...(runTyped
          ? {
              runTyped: (feeds: Record<string, TypedTensor>) => {
                runs++;
                return runTyped(feeds);
              },
            }
          : {}),
      }) as InferenceSession;
    },
  };
  node = await loadGptTiny("cpu", counting);
  web = await loadGptTiny("wasm");
}, 60_000);
afterAll(async () => {
  await node?.dispose();
  await web?.dispose();
});

type Params = Partial<GenerationItem["params"]>;
const generate = async (prompt: string, params: Params, on = node) => output((await on.run([{ prompt, params }]))[0]);
const check = async (prompt: string, params: Params, claim: GenerationOutput, tolerance = TOL) =>
  verdict((await node.run([{ prompt, params, verify: { ...claim, tolerance } }]))[0]);

const CHAT = "<|user|>how was the film?<|end|><|assistant|>";
const vocab: Record<string, number> = JSON.parse(
  readFileSync(new URL("../../models/gpt-tiny/tokenizer.json", import.meta.url), "utf8"),
).model.vocab;
const tokenId = (text: string) => vocab[text] as number;

describe("the teacher-forced check on gpt-tiny", () => {
  it("agrees with an honest greedy output in one run of the decoder, from onnxruntime-node and -web alike", async () => {
    const params = { max_new_tokens: 32 };
    const claim = await generate(CHAT, params);
    expect(claim.finish_reason).toBe("stop"); // ended by end-of-text: the check reads one place past the tokens
    const before = runs;
    const v = await check(CHAT, params, claim);
    expect(runs - before).toBe(1);
    expect(v).toEqual({ verdict: "agreed", checked: claim.tokens.length + 1, first_mismatch: null, reason: null });
    const fromWeb = await generate(CHAT, params, web);
    expect((await check(CHAT, params, fromWeb)).verdict).toBe("agreed");
  }, 60_000);

  it("agrees with seeded samples, outputs cut by max_new_tokens, and ones ended by a stop string", async () => {
    const sampled = { max_new_tokens: 30, temperature: 0.9, top_k: 40, top_p: 0.95, seed: 5 };
    expect((await check("the pizza was", sampled, await generate("the pizza was", sampled))).verdict).toBe("agreed");
    const short = { max_new_tokens: 3 };
    const cut = await generate("the hotel room", short);
    expect(cut.finish_reason).toBe("length");
    expect(await check("the hotel room", short, cut)).toMatchObject({ verdict: "agreed", checked: 3 });
    const free = await generate("the hotel room", { max_new_tokens: 20 });
    const stop = free.generated_text.trim().split(" ")[1] ?? "";
    const stopped = await generate("the hotel room", { max_new_tokens: 20, stop: [stop] });
    expect(stopped.finish_reason).toBe("stop");
    expect((await check("the hotel room", { max_new_tokens: 20, stop: [stop] }, stopped)).verdict).toBe("agreed");
  }, 60_000);

  it("finds a substituted token, even when the rest is the model's own continuation after it", async () => {
    const params = { max_new_tokens: 24 };
    const honest = await generate("the hotel room", params);
    expect(honest.tokens.length).toBeGreaterThan(4);
    const k = 2;
    const swapped = ((honest.tokens[k] as number) + 1) % 1024;
    // A liar that generates on from its substitution: a self-consistent output, text and all.
    const lie = output(
      (
        await node.run([
          { prompt: "the hotel room", params, resume: { tokens: [...honest.tokens.slice(0, k), swapped], text: "" } },
        ])
      )[0],
    );
    expect(lie.tokens[k]).toBe(swapped);
    const v = await check("the hotel room", params, lie);
    expect(v).toMatchObject({ verdict: "mismatch", first_mismatch: k, checked: k + 1 });
    expect(v.reason).toContain(`the model picks ${honest.tokens[k]}`);
  }, 60_000);

  it("finds a claim cut short, a wrong finish_reason, a text that is not its tokens', a wrong prompt count", async () => {
    const params = { max_new_tokens: 32 };
    const honest = await generate(CHAT, params);
    const n = honest.tokens.length;
    const cutShort = { ...honest, tokens: honest.tokens.slice(0, n - 2), generated_text: "" };
    expect(await check(CHAT, params, cutShort)).toMatchObject({ verdict: "mismatch", first_mismatch: n - 2 });
    expect(await check(CHAT, params, { ...honest, finish_reason: "length" })).toMatchObject({
      verdict: "mismatch",
      first_mismatch: n,
      reason: "finish_reason is length; these tokens end with stop",
    });
    expect(await check(CHAT, params, { ...honest, generated_text: `${honest.generated_text}!` })).toMatchObject({
      first_mismatch: n,
      reason: "generated_text is not the text of its tokens",
    });
    expect(await check(CHAT, params, { ...honest, prompt_tokens: honest.prompt_tokens + 1 })).toMatchObject({
      first_mismatch: n,
    });
    // More tokens than were asked for: the run would have ended at max_new_tokens.
    const long = await generate("the hotel room", { max_new_tokens: 6 });
    expect(await check("the hotel room", { max_new_tokens: 5 }, long)).toMatchObject({ first_mismatch: 5 });
  }, 60_000);

  it("holds end-of-text back until min_new_tokens on both runtimes, and holds a claim to the same rule", async () => {
    const free = await generate(CHAT, { max_new_tokens: 32 });
    expect(free.finish_reason).toBe("stop");
    const k = free.tokens.length;
    expect(k).toBeLessThan(24);
    const params = { max_new_tokens: 32, min_new_tokens: k + 4 };
    const held = await generate(CHAT, params);
    expect(held.tokens.length).toBeGreaterThanOrEqual(k + 4);
    expect(held.tokens.slice(0, k)).toEqual(free.tokens);
    expect(await generate(CHAT, params, web)).toEqual(held);
    expect((await check(CHAT, params, held)).verdict).toBe("agreed");
    // The reply that ends at k is not the model's under min_new_tokens: its end is the mismatch.
    expect(await check(CHAT, params, free)).toMatchObject({ verdict: "mismatch", first_mismatch: k });
  });

  it("lowers repeats with each penalty on both runtimes, resumes under them, and holds a claim to them", async () => {
    const long = { max_new_tokens: 30, min_new_tokens: 30 };
    const free = await generate("the pizza was", long);
    const distinct = (o: GenerationOutput) => new Set(o.tokens).size;
    // Unpenalised, the tiny model loops ("the pizza was spotless.... was awesome....").
    expect(distinct(free)).toBeLessThan(15);
    for (const penalty of [{ frequency_penalty: 1 }, { presence_penalty: 1.5 }, { repetition_penalty: 1.5 }]) {
      const params = { ...long, ...penalty };
      const penalised = await generate("the pizza was", params);
      expect(distinct(penalised)).toBeGreaterThan(distinct(free) + 5);
      expect(await generate("the pizza was", params, web)).toEqual(penalised);
      // Redelivered after 12 of its tokens (and their text), the run counts them as its own and goes on as before;
      // a claim redelivered so is checked under the same penalties.
      const first12 = await generate("the pizza was", { ...params, max_new_tokens: 12, min_new_tokens: 12 });
      expect(first12.tokens).toEqual(penalised.tokens.slice(0, 12));
      const resume = { tokens: first12.tokens, text: first12.generated_text };
      const [resumed, resumedClaim] = await node.run([
        { prompt: "the pizza was", params, resume },
        { prompt: "the pizza was", params, resume, verify: { ...penalised, tolerance: TOL } },
      ]);
      expect(output(resumed)).toEqual(penalised);
      expect(verdict(resumedClaim).verdict).toBe("agreed");
      expect((await check("the pizza was", params, penalised)).verdict).toBe("agreed");
      // The unpenalised reply is not the model's under the penalty: the first token they part at is the mismatch.
      const parted = free.tokens.findIndex((t, i) => penalised.tokens[i] !== t);
      expect(await check("the pizza was", params, free)).toMatchObject({ verdict: "mismatch", first_mismatch: parted });
    }
  }, 60_000);

  it("takes logit_bias on both runtimes: a banned token never comes, a favoured one always; a claim is held to it", async () => {
    const params = { max_new_tokens: 12, min_new_tokens: 12 };
    const free = await generate("the pizza was", params);
    const first = free.tokens[0] as number;
    const banned = { ...params, logit_bias: { [first]: -100 } };
    const without = await generate("the pizza was", banned);
    expect(without.tokens).not.toContain(first);
    expect(await generate("the pizza was", banned, web)).toEqual(without);
    expect((await check("the pizza was", banned, without)).verdict).toBe("agreed");
    // The unbiased reply breaks the ban at its first token.
    expect(await check("the pizza was", banned, free)).toMatchObject({ verdict: "mismatch", first_mismatch: 0 });
    // A token the model would not pick, favoured, is every token; sampled too.
    const rare = ((first + 500) % 1000) as number;
    for (const sampling of [{}, { temperature: 1, seed: 9 }]) {
      const forced = await generate("the pizza was", { ...params, ...sampling, logit_bias: { [rare]: 100 } });
      expect(forced.tokens).toEqual(Array(12).fill(rare));
    }
    // An end-of-text token favoured is held back until min_new_tokens, then ends the reply, and the check reads
    // that end: a claim that goes on past it is a mismatch there.
    const ending = { max_new_tokens: 32, min_new_tokens: 3, logit_bias: { 1024: 100 } };
    const short = await generate(CHAT, ending);
    expect(short).toMatchObject({ finish_reason: "stop", tokens: expect.any(Array) });
    expect(short.tokens).toHaveLength(3);
    expect((await check(CHAT, ending, short)).verdict).toBe("agreed");
    const longer = await generate(CHAT, { max_new_tokens: 32, min_new_tokens: 8 });
    expect(await check(CHAT, ending, longer)).toMatchObject({ verdict: "mismatch", first_mismatch: 3 });
    // Past the vocabulary (1029 tokens) the item is the caller's to fix, and says so.
    const [past] = await node.run([{ prompt: "the pizza was", params: { ...params, logit_bias: { 5000: 1 } } }]);
    expect(past).toMatchObject({ error: { code: "invalid_input", message: expect.stringContaining("token 5000") } });
  }, 60_000);

  it("writes one JSON object in JSON mode on both runtimes, resumes it, and holds a claim to the mask", async () => {
    const ask = "<|user|>describe the hotel as json<|end|><|assistant|>";
    // Unmasked, the model writes prose.
    const prose = await generate(ask, { max_new_tokens: 24 });
    expect(() => JSON.parse(prose.generated_text)).toThrow();
    // Greedy, it closes the object at once.
    const greedy = await generate(ask, { max_new_tokens: 24, format: "json_object" });
    expect(greedy).toMatchObject({ generated_text: "{}", finish_reason: "stop" });
    // Seeds whose replies open a key and run out of tokens inside it (4, 5, 7) and one that closes the object (1).
    let ranOut = 0;
    for (const seed of [1, 4, 5, 7]) {
      const params = {
        max_new_tokens: 24,
        format: "json_object" as const,
        temperature: 0.8,
        seed,
        repetition_penalty: 1.3,
      };
      const out = await generate(ask, params);
      expect(jsonFeed(jsonStart(), out.generated_text), out.generated_text).not.toBeNull();
      if (out.finish_reason === "stop") expect(typeof JSON.parse(out.generated_text)).toBe("object");
      else {
        expect(out.tokens).toHaveLength(24);
        ranOut++;
      }
      expect(await generate(ask, params, web)).toEqual(out);
      expect((await check(ask, params, out)).verdict).toBe("agreed");
      // Redelivered after up to 10 tokens, the mask reads them as its own.
      const first = await generate(ask, { ...params, max_new_tokens: 10 });
      const [resumed] = await node.run([
        { prompt: ask, params, resume: { tokens: first.tokens, text: first.generated_text } },
      ]);
      expect(output(resumed)).toEqual(out);
    }
    expect(ranOut).toBeGreaterThan(0);
    // A token the mask forbids ("x" where a key or "}" must come) is a mismatch where it stands, whatever follows.
    const x = tokenId("x");
    const json = { max_new_tokens: 24, format: "json_object" as const };
    const lie = {
      ...greedy,
      tokens: [greedy.tokens[0] as number, x, ...greedy.tokens.slice(1)],
      generated_text: "{x}",
    };
    expect(await check(ask, json, lie)).toMatchObject({ verdict: "mismatch", first_mismatch: 1 });
    // And the honest prose is no JSON-mode claim.
    expect(await check(ask, json, prose)).toMatchObject({ verdict: "mismatch", first_mismatch: 0 });
  }, 60_000);

  it("holds a claim redelivered mid-stream to the tokens already accepted (resume)", async () => {
    const params = { max_new_tokens: 24 };
    const honest = await generate("the hotel room", params);
    const accepted = honest.tokens.slice(0, 2);
    const withResume = (tokens: number[]) =>
      node.run([
        { prompt: "the hotel room", params, resume: { tokens, text: "" }, verify: { ...honest, tolerance: TOL } },
      ]);
    expect(verdict((await withResume(accepted))[0]).verdict).toBe("agreed");
    const other = [accepted[0] as number, ((accepted[1] as number) + 1) % 1024];
    expect(verdict((await withResume(other))[0])).toMatchObject({
      first_mismatch: 1,
      reason: "the claim does not start with the 2 tokens already accepted",
    });
  }, 60_000);

  it("checks claims in a batch with generating items, which come out as they do alone", async () => {
    const params = { max_new_tokens: 12 };
    const a = await generate("the pizza was", params);
    const b = await generate("the hotel room", params);
    const lie = { ...b, tokens: [...b.tokens.slice(0, 2), ((b.tokens[2] as number) + 7) % 1024, ...b.tokens.slice(3)] };
    const results = await node.run([
      { prompt: "the hotel room", params },
      { prompt: "the pizza was", params, verify: { ...a, tolerance: TOL } },
      { prompt: "the hotel room", params, verify: { ...lie, tolerance: TOL } },
      { prompt: "the pizza was", params },
    ]);
    expect(output(results[0])).toEqual(b);
    expect(verdict(results[1]).verdict).toBe("agreed");
    expect(verdict(results[2]).first_mismatch).toBe(2);
    expect(output(results[3])).toEqual(a);
  }, 60_000);

  it("is the queue's own field: a caller's item with verify is refused at submit", () => {
    const problems = inputProblems({ task: "text-generation", max_sequence_length: 64 }, [
      { prompt: "x" },
      {
        prompt: "x",
        verify: { tokens: [], generated_text: "", finish_reason: "stop", prompt_tokens: 1, tolerance: 0 },
      },
    ]);
    expect(problems).toEqual([{ index: 1, message: expect.stringMatching(/^verify is set by the queue/) }]);
  });
});

describe("penalise, a row's penalties", () => {
  it("presence and frequency over the tokens generated so far; repetition over the prompt's too", () => {
    const row = () => Float32Array.from([0, 2, -2, 4, 1, 3]); // a vocabulary of 5 from index 1
    const prompt = [0, 3];
    const generated = [1, 2, 1, 4];
    const p = row();
    penalise(p, 1, 5, { presence_penalty: 0.5, frequency_penalty: 0.25 }, prompt, generated);
    // Token 1 twice, 2 and 4 once; 0 and 3 (the prompt's) untouched; the cell before the row untouched.
    expect([...p]).toEqual([0, 2, -2 - 0.5 - 0.5, 4 - 0.5 - 0.25, 1, 3 - 0.5 - 0.25]);
    const upTo = row();
    penalise(upTo, 1, 5, { frequency_penalty: 1 }, prompt, generated, 1); // only the first generated token
    expect([...upTo]).toEqual([0, 2, -3, 4, 1, 3]);
    const r = row();
    penalise(r, 1, 5, { repetition_penalty: 2 }, prompt, generated);
    // 0 (+2, prompt) halved, 1 (-2) doubled, 2 (+4) halved, 3 (+1, prompt) halved, 4 (+3) halved.
    expect([...r]).toEqual([0, 1, -4, 2, 0.5, 1.5]);
    const none = row();
    penalise(none, 1, 5, { presence_penalty: 0, repetition_penalty: 1 }, prompt, generated);
    expect(none).toEqual(row());
    // Token ids outside the row (the prompt's or generated) change nothing.
    const outside = row();
    penalise(outside, 1, 5, { presence_penalty: 1, repetition_penalty: 2 }, [7, -1], [9]);
    expect(outside).toEqual(row());
    // A banned logit stays banned under every penalty.
    const banned = Float32Array.from([Number.NEGATIVE_INFINITY, 1]);
    penalise(banned, 0, 2, { presence_penalty: 1, frequency_penalty: -2, repetition_penalty: 0.5 }, [0], [0, 0]);
    expect(banned[0]).toBe(Number.NEGATIVE_INFINITY);
    const biased = row();
    // logit_bias first, then the penalties: token 2 (+4) +2 then halved; a key past the vocabulary is skipped.
    penalise(biased, 1, 5, { logit_bias: { 2: 2, 3: -1, 9: 5 }, repetition_penalty: 2 }, [], [2]);
    expect([...biased]).toEqual([0, 2, -2, 3, 0, 3]);
  });
});

describe("what only the model can refuse (modelProblem)", () => {
  it("JSON mode without an end-of-text token, and a logit_bias past the vocabulary", () => {
    const params = GenerationParams.parse({ format: "json_object", logit_bias: { 7: 1 } });
    expect(modelProblem(params, { eos: [] })).toMatch(/no end-of-text token/);
    expect(modelProblem(params, { eos: [5], vocab: 7 })).toMatch(/names token 7; .* 7 tokens/);
    expect(modelProblem(params, { eos: [5], vocab: 8 })).toBeNull();
    expect(modelProblem(params, { eos: [5] })).toBeNull(); // no vocab_size: nothing to check against
  });
});

describe("repetition_penalty's bounds", () => {
  it("are 0.1 to 10: a value near 0 would overflow the logits and widen the check's tolerance without limit", () => {
    for (const ok of [0.1, 1, 10]) expect(GenerationParams.safeParse({ repetition_penalty: ok }).success).toBe(true);
    for (const bad of [0, 0.05, 1e-38, 10.5]) {
      expect(GenerationParams.safeParse({ repetition_penalty: bad }).success).toBe(false);
    }
  });
});

describe("tokenAllowed, the rule per token", () => {
  const greedy = { temperature: 0, top_k: 0, top_p: 1, seed: 0 };
  it("greedy: the argmax, or a token within twice the tolerance of it", () => {
    const logits = [1, 3, 2.999, 0];
    expect(tokenAllowed(logits, 0, 4, greedy, 0, 1, 0)).toBe(true);
    expect(tokenAllowed(logits, 0, 4, greedy, 0, 2, 0)).toBe(false);
    expect(tokenAllowed(logits, 0, 4, greedy, 0, 2, 1e-3)).toBe(true);
    expect(tokenAllowed(logits, 0, 4, greedy, 0, 0, 1e-3)).toBe(false);
    expect(tokenAllowed(logits, 0, 4, greedy, 0, 7, 1)).toBe(false); // not in the vocabulary
  });

  it("sampling: the seeded draw's token; another only where the draw lies within the tolerance of its interval", () => {
    const logits = [2, 1, 0.5, -1, -3];
    const p = { temperature: 1, top_k: 3, top_p: 1, seed: 4 };
    for (let position = 0; position < 40; position++) {
      const drawn = pickToken(logits, 0, 5, p, position);
      expect(tokenAllowed(logits, 0, 5, p, position, drawn, 0)).toBe(true);
      for (let other = 0; other < 5; other++) {
        if (other !== drawn) expect(tokenAllowed(logits, 0, 5, p, position, other, 0)).toBe(false);
      }
      // Outside top_k, whatever the draw.
      expect(tokenAllowed(logits, 0, 5, p, position, 4, 1e-3)).toBe(false);
    }
    // A token that ties the k-th best within the tolerance stands in for it (a top_k edge two runtimes may order apart).
    const tie = [2, 1, 0.5, 0.4995, -3];
    const edge = Array.from({ length: 60 }, (_, pos) => pos).find((pos) => pickToken(tie, 0, 5, p, pos) === 2);
    expect(edge).toBeDefined();
    expect(tokenAllowed(tie, 0, 5, p, edge as number, 3, 1e-3)).toBe(true);
    expect(tokenAllowed(tie, 0, 5, p, edge as number, 3, 1e-5)).toBe(false);
  });
});
