// Log probabilities of generated tokens (params.logprobs) on the bundled decoder (models/gpt-tiny), through
// onnxruntime-node and onnxruntime-web: one entry a token, the model's own distribution (before temperature,
// bias and penalties), the same values from the decode loop's cache as from the check's one prefill, streamed with
// each delta, carried over a resume; and the teacher-forced check holding a donor's claimed values to the model's.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { chatLogprobs } from "../../edge/openai-logprobs.ts";
import { generationProblem } from "../../shared/policy/generation-verdict.ts";
import { outputsDiffer } from "../../shared/policy/verification.ts";
import {
  type GenerationItem,
  type GenerationOutput,
  GenerationParams,
  GenerationVerdict,
  logprobsMisaligned,
  type PromptLogprob,
  type TokenLogprob,
} from "../../shared/protocol/generation.ts";
import type { ItemResult } from "../../shared/protocol/worker.ts";
import type { TokenDelta } from "../../shared/runner/model-runner.ts";
import { logprobsProblem, parseGenerationItem, promptLogprobsFit } from "../../shared/tasks/text-generation-item.ts";
import {
  logprobProblem,
  MIN_LOGPROB,
  rowLogprobs,
  tokenLogprob,
  topIds,
} from "../../shared/tasks/text-generation-logprobs.ts";
import { createTokenizer } from "../../shared/tasks/tokenizer.ts";
import { gptTinyOnBothRuntimes, generationOutput as output } from "../support/gpt-tiny.ts";

const TOL = 1e-3;
const result = (r: ItemResult | undefined): unknown => output(r);

const models = gptTinyOnBothRuntimes();

type Params = Partial<GenerationItem["params"]>;
const PROMPT = "the hotel room";
const generate = async (params: Params, on = models.node, prompt = PROMPT) =>
  output((await on.run([{ prompt, params }]))[0]);
const check = async (params: Params, claim: GenerationOutput, resume?: GenerationItem["resume"]) =>
  GenerationVerdict.parse(
    result(
      (
        await models.node.run([
          { prompt: PROMPT, params, ...(resume ? { resume } : {}), verify: { ...claim, tolerance: TOL } },
        ])
      )[0],
    ),
  );
const close = (a: readonly TokenLogprob[], b: readonly TokenLogprob[]) => {
  expect(a.map((e) => [e.token, e.top.map((t) => t.id)])).toEqual(b.map((e) => [e.token, e.top.map((t) => t.id)]));
  for (const [i, e] of a.entries()) {
    expect(Math.abs(e.logprob - (b[i] as TokenLogprob).logprob)).toBeLessThan(1e-3);
  }
};

describe("log probabilities on gpt-tiny", () => {
  it("gives one entry a token, the top ones in order, the same on onnxruntime-node and -web; none unless asked", async () => {
    const params = { max_new_tokens: 16, logprobs: 5 };
    const a = await generate(params);
    const entries = a.logprobs ?? [];
    expect(entries).toHaveLength(a.tokens.length);
    for (const [i, e] of entries.entries()) {
      expect(e.top).toHaveLength(5);
      // Greedy: the token is the most likely one, and its text is its own.
      expect(e.top[0]).toEqual({ id: a.tokens[i], token: e.token, logprob: e.logprob });
      const values = e.top.map((t) => t.logprob);
      expect(values).toEqual([...values].sort((x, y) => y - x));
      expect(values.reduce((s, v) => s + Math.exp(v), 0)).toBeLessThanOrEqual(1 + 1e-9);
      expect(e.logprob).toBeLessThanOrEqual(0);
    }
    expect(entries.map((e) => e.token).join("")).toBe(a.generated_text);
    close((await generate(params, models.web)).logprobs ?? [], entries);
    expect((await generate({ max_new_tokens: 16 })).logprobs).toBeUndefined();
    const bare = await generate({ max_new_tokens: 4, logprobs: 0 });
    expect(bare.logprobs?.map((e) => e.top)).toEqual([[], [], [], []]);
  }, 60_000);

  it("reads the model's own distribution: temperature, logit_bias and penalties change the pick, not the values", async () => {
    const greedy = await generate({ max_new_tokens: 2, logprobs: 3 });
    const first = greedy.tokens[0] as number;
    const shaped = await generate({
      max_new_tokens: 2,
      logprobs: 3,
      temperature: 1.5,
      seed: 3,
      logit_bias: { [String(first)]: -100 },
      repetition_penalty: 2,
    });
    expect(shaped.tokens[0]).not.toBe(first);
    // The first place's row depends on the prompt alone: its values are the greedy run's, its top token the banned one.
    expect(shaped.logprobs?.[0]?.top).toEqual(greedy.logprobs?.[0]?.top);
    const picked = shaped.logprobs?.[0];
    expect(picked?.logprob).toBeLessThan(greedy.logprobs?.[0]?.logprob as number);
  }, 60_000);

  it("streams each delta's entries, and carries the accepted ones over a resume", async () => {
    const params = { max_new_tokens: 20, logprobs: 2, temperature: 0.8, seed: 11 };
    const deltas: TokenDelta[] = [];
    const [r] = await models.node.run([{ prompt: PROMPT, params }], { onTokens: (d) => deltas.push(d) });
    const whole = output(r);
    expect(deltas.flatMap((d) => d.logprobs ?? [])).toEqual(whole.logprobs);
    expect(deltas.every((d) => d.logprobs?.length === d.tokens.length)).toBe(true);
    const k = 7;
    const resume = {
      tokens: whole.tokens.slice(0, k),
      text: "",
      logprobs: (whole.logprobs ?? []).slice(0, k),
    };
    const resumed = output((await models.node.run([{ prompt: PROMPT, params, resume }]))[0]);
    expect(resumed.tokens).toEqual(whole.tokens);
    expect(resumed.logprobs?.slice(0, k)).toEqual(resume.logprobs);
    close(resumed.logprobs ?? [], whole.logprobs ?? []);
    // Without the accepted entries the run could not answer one a token: refused, saying so.
    const [bad] = await models.node.run([{ prompt: PROMPT, params, resume: { tokens: resume.tokens, text: "" } }]);
    expect(bad && "error" in bad ? bad.error.message : bad).toContain("resume.logprobs holds 0 entries for 7");
  }, 60_000);

  it("agrees with an honest claim (node's and web's) and finds a value, a top list or a text that is not the model's", async () => {
    const params = { max_new_tokens: 12, logprobs: 3 };
    const honest = await generate(params);
    const entries = honest.logprobs ?? [];
    expect((await check(params, honest)).verdict).toBe("agreed");
    expect((await check(params, await generate(params, models.web))).verdict).toBe("agreed");
    const lie = async (i: number, change: (e: TokenLogprob) => TokenLogprob) => {
      const logprobs = entries.map((e, j) => (j === i ? change(structuredClone(e)) : e));
      return check(params, { ...honest, logprobs });
    };
    const at = 4;
    const cases: [(e: TokenLogprob) => TokenLogprob, string][] = [
      [(e) => ({ ...e, logprob: e.logprob / 2 }), "its logprob is"],
      [(e) => ({ ...e, token: `${e.token}x` }), "its text (or bytes) is not the token's"],
      [(e) => ({ ...e, top: e.top.slice(0, 2) }), "lists 2 top tokens; 3 were asked for"],
      [
        (e) => ({
          ...e,
          top: [e.top[0], e.top[1], { ...(e.top[1] as TokenLogprob["top"][number]) }] as TokenLogprob["top"],
        }),
        "listed twice",
      ],
      [(e) => ({ ...e, top: e.top.map((t, j) => (j === 2 ? { ...t, logprob: t.logprob - 1 } : t)) }), "top token"],
      [(e) => ({ ...e, top: [...e.top].reverse() }), "not in order"],
    ];
    for (const [change, reason] of cases) {
      const v = await lie(at, change);
      expect(v, reason).toMatchObject({ verdict: "mismatch", first_mismatch: at });
      expect(v.reason).toContain(reason);
    }
    // A claim without the entries asked for, or with some not asked for.
    expect((await check(params, { ...honest, logprobs: undefined } as GenerationOutput)).verdict).toBe("mismatch");
    const { logprobs: _, end_logprob: __, ...plain } = honest;
    expect((await check({ max_new_tokens: 12 }, honest)).reason).toContain("were not asked for");
    expect((await check({ max_new_tokens: 12 }, plain)).verdict).toBe("agreed");
    // A resumed claim's check reads the accepted prefix's entries too.
    const resume = { tokens: honest.tokens.slice(0, 3), text: "", logprobs: entries.slice(0, 3) };
    expect((await check(params, honest, resume)).verdict).toBe("agreed");
  }, 60_000);
});

describe("the end-of-text token's entry", () => {
  const CHAT = "<|user|>how was the film?<|end|><|assistant|>";

  it("comes with a reply an end-of-text token ended (not one cut by its length), and a claim is held to it", async () => {
    const params = { max_new_tokens: 32, logprobs: 2 };
    const ended = await generate(params, models.node, CHAT);
    expect(ended.finish_reason).toBe("stop");
    const end = ended.end_logprob as TokenLogprob;
    expect(end.token).toMatch(/^<\|end(oftext)?\|>$/);
    expect(end.logprob).toBeLessThanOrEqual(0);
    expect(end.top[0]?.token).toBe(end.token); // greedy: the end was the likeliest
    expect((await generate({ max_new_tokens: 3, logprobs: 2 }, models.node, CHAT)).end_logprob).toBeUndefined();
    // The check, on the chat prompt.
    const checkChat = async (claim: GenerationOutput) =>
      GenerationVerdict.parse(
        result((await models.node.run([{ prompt: CHAT, params, verify: { ...claim, tolerance: TOL } }]))[0]),
      );
    expect((await checkChat(ended)).verdict).toBe("agreed");
    const { end_logprob: _, ...withoutEnd } = ended;
    expect((await checkChat(withoutEnd)).reason).toContain("no end_logprob");
    expect((await checkChat({ ...ended, end_logprob: { ...end, logprob: end.logprob - 1 } })).reason).toContain(
      "the end's log probabilities: its logprob is",
    );
    // Under a penalty the end's place is shaped after its entry is read: the entry stays the model's own, and an
    // honest claim of it agrees (the end-of-text token is in the chat prompt, so the penalty changes its logit).
    const penalised = { ...params, repetition_penalty: 3 };
    const underPenalty = await generate(penalised, models.node, CHAT);
    expect(underPenalty.end_logprob).toBeDefined();
    const verdict = GenerationVerdict.parse(
      result(
        (await models.node.run([{ prompt: CHAT, params: penalised, verify: { ...underPenalty, tolerance: TOL } }]))[0],
      ),
    );
    expect(verdict.verdict).toBe("agreed");
    // An end forced at once (logit_bias): no reply token, the end's entry alone, as a scoring client reads it.
    const forced = await generate({
      max_new_tokens: 1,
      logprobs: 1,
      prompt_logprobs: 1,
      logit_bias: { "1024": 100, "1028": 100 },
    });
    expect(forced.tokens).toEqual([]);
    expect(forced.end_logprob?.token).toMatch(/^<\|end/);
  }, 60_000);
});

describe("prompt log probabilities on gpt-tiny", () => {
  it("give each prompt token's given those before it: the values the decode loop gives the same tokens generated", async () => {
    const greedy = await generate({ max_new_tokens: 6, logprobs: 3 });
    // The prompt and the reply as one prompt: its last 6 places are the reply's tokens, read in one prefill.
    const whole = output(
      (
        await models.node.run([
          { prompt: PROMPT + greedy.generated_text, params: { max_new_tokens: 1, prompt_logprobs: 3 } },
        ])
      )[0],
    );
    const entries = whole.prompt_logprobs ?? [];
    expect(entries).toHaveLength(whole.prompt_tokens);
    expect(entries[0]).toEqual({ token: expect.any(String), logprob: null, top: [] });
    const asked = greedy.prompt_tokens;
    // The reply's text reads back as its tokens as far as no two of them merge into one (byte-level BPE): compared
    // there, which is at least its first token.
    const tail = entries.slice(asked);
    const reply = greedy.logprobs ?? [];
    let same = 0;
    while (same < reply.length && tail[same]?.token === reply[same]?.token) same++;
    expect(same).toBeGreaterThan(0);
    for (let i = 0; i < same; i++) {
      const [e, g] = [tail[i], reply[i]] as [PromptLogprob, TokenLogprob];
      expect(e.top.map((t) => t.id)).toEqual(g.top.map((t) => t.id));
      expect(Math.abs((e.logprob as number) - g.logprob)).toBeLessThan(1e-3);
    }
    // web reads the same; and without asking there are none.
    const fromWeb = output(
      (await models.web.run([{ prompt: PROMPT, params: { max_new_tokens: 1, prompt_logprobs: 3 } }]))[0],
    );
    expect(fromWeb.prompt_logprobs?.map((e) => e.token)).toEqual(entries.slice(0, asked).map((e) => e.token));
    expect(greedy.prompt_logprobs).toBeUndefined();
  }, 60_000);

  it("score a prompt with max_new_tokens 0: nothing generated, and a claim of it agreed", async () => {
    const params = { max_new_tokens: 0, prompt_logprobs: 1 };
    const scored = await generate(params);
    expect(scored).toMatchObject({ tokens: [], generated_text: "", finish_reason: "length" });
    expect(scored.prompt_logprobs).toHaveLength(scored.prompt_tokens);
    expect((await check(params, scored)).verdict).toBe("agreed");
    // Choices of one prompt share its read; another top count reads its own.
    const item = { prompt: PROMPT, params };
    const [a, b, c] = (
      await models.node.run([item, item, { prompt: PROMPT, params: { ...params, prompt_logprobs: 2 } }])
    ).map(output);
    expect(b?.prompt_logprobs).toEqual(a?.prompt_logprobs);
    expect(a?.prompt_logprobs).toEqual(scored.prompt_logprobs);
    expect(c?.prompt_logprobs?.[1]?.top).toHaveLength(2);
    expect(parseGenerationItem({ prompt: "x", params: { max_new_tokens: 0 } }, 256)).toEqual({
      error: expect.stringContaining("0 only with prompt_logprobs"),
    });
  }, 60_000);

  it("hold a donor's claimed prompt entries to the model's", async () => {
    const params = { max_new_tokens: 4, prompt_logprobs: 2 };
    const honest = await generate(params);
    expect((await check(params, honest)).verdict).toBe("agreed");
    const entries = honest.prompt_logprobs ?? [];
    const lied = entries.map((e, k) => (k === 2 ? { ...e, logprob: (e.logprob as number) - 0.5 } : e));
    expect(await check(params, { ...honest, prompt_logprobs: lied })).toMatchObject({
      verdict: "mismatch",
      first_mismatch: 0,
      reason: expect.stringContaining("prompt token 2: its logprob is"),
    });
    const firstWithValue = entries.map((e, k) => (k === 0 ? { ...e, logprob: -1 } : e));
    expect((await check(params, { ...honest, prompt_logprobs: firstWithValue })).reason).toContain(
      "first prompt token",
    );
    const { prompt_logprobs: _, ...without } = honest;
    expect((await check(params, without)).reason).toContain("prompt_logprobs were left out");
    expect((await check({ max_new_tokens: 4 }, honest)).reason).toContain("prompt_logprobs were not asked for");
  }, 60_000);

  it("fit an answer with the reply's: refused, after the prompt is counted, past 12,000 entries", () => {
    expect(promptLogprobsFit(571, { ...GenerationParams.parse({}), prompt_logprobs: 20 })).toBeNull();
    expect(promptLogprobsFit(572, { ...GenerationParams.parse({}), prompt_logprobs: 20 })).toContain(
      "a prompt of 572 tokens with 20 top tokens each",
    );
    const both = { ...GenerationParams.parse({ max_new_tokens: 500, logprobs: 20 }), prompt_logprobs: 0 };
    expect(promptLogprobsFit(1500, both)).toBeNull(); // 500 × 21 + 1500 × 1 = 12,000
    expect(promptLogprobsFit(1501, both)).toContain("12001");
  });
});

describe("the log-probability rules on synthetic rows", () => {
  const decode = (ids: readonly number[]) => ids.map((i) => `<${i}>`).join("");
  const row = new Float32Array([1, 3, 3, -2, 0.5, 3]);

  it("orders the top ids by logit, the lower id first on a tie", () => {
    expect(topIds(row, 0, row.length, 4)).toEqual([1, 2, 5, 0]);
    expect(topIds(row, 1, 4, 2)).toEqual([0, 1]);
    expect(topIds(row, 0, row.length, 0)).toEqual([]);
    const lp = rowLogprobs(row, 0, row.length, 2);
    expect([...row].reduce((s, _, i) => s + Math.exp(lp.of(i)), 0)).toBeCloseTo(1, 12);
  });

  it("lets a claim within the tolerance pass, and a swapped near tie, but not a left-out better token", () => {
    const lp = rowLogprobs(row, 0, row.length, 2);
    const honest = {
      token: "<2>",
      logprob: lp.of(2),
      top: [1, 2].map((id) => ({ id, token: `<${id}>`, logprob: lp.of(id) })),
    };
    expect(logprobProblem(honest, lp, 2, 2, 0.01, decode)).toBeNull();
    const nudged = { ...honest, logprob: honest.logprob + 0.015 };
    expect(logprobProblem(nudged, lp, 2, 2, 0.01, decode)).toBeNull();
    expect(logprobProblem({ ...honest, logprob: honest.logprob + 0.05 }, lp, 2, 2, 0.01, decode)).toContain("logprob");
    // 5 ties 1 and 2: listing it instead of 2 is a run's rounding away; listing 0 (2 below) is not.
    const tie = { ...honest, top: [1, 5].map((id) => ({ id, token: `<${id}>`, logprob: lp.of(id) })) };
    expect(logprobProblem(tie, lp, 2, 2, 0.01, decode)).toBeNull();
    const worse = { ...honest, top: [1, 0].map((id) => ({ id, token: `<${id}>`, logprob: lp.of(id) })) };
    expect(logprobProblem(worse, lp, 2, 2, 0.01, decode)).toContain("leave out 2");
    const past = { ...honest, top: [honest.top[0], { id: 9, token: "<9>", logprob: -5 }] as typeof honest.top };
    expect(logprobProblem(past, lp, 2, 2, 0.01, decode)).toContain("past the vocabulary");
  });
});

describe("log probabilities in answers", () => {
  const entry = (top: number): TokenLogprob => ({
    token: "a",
    logprob: -1,
    top: Array.from({ length: top }, (_, id) => ({ id, token: "b", logprob: -2 })),
  });
  const out = (logprobs?: TokenLogprob[]): GenerationOutput => ({
    generated_text: "aa",
    tokens: [1, 2],
    finish_reason: "length",
    prompt_tokens: 1,
    ...(logprobs ? { logprobs } : {}),
  });

  it("are reported to 6 significant digits, and a masked logit's -Infinity as vLLM's -9999", () => {
    const row = new Float32Array([0.123456789, Number.NEGATIVE_INFINITY, 2.987654321]);
    const e = tokenLogprob(rowLogprobs(row, 0, 3, 2), 0, (ids) => `<${ids[0]}>`);
    const exact = rowLogprobs(row, 0, 3, 2).of(0);
    expect(e.logprob).not.toBe(exact);
    expect(e.logprob).toBe(Number(exact.toPrecision(6)));
    expect(e.top.map((t) => t.id)).toEqual([2, 0]);
    expect(tokenLogprob(rowLogprobs(row, 0, 3, 0), 1, () => "x").logprob).toBe(MIN_LOGPROB);
  });

  it("must be one entry a token, each listing as many top tokens, in outputs the queue reviews", () => {
    expect(logprobsMisaligned(out())).toBeNull();
    expect(logprobsMisaligned(out([entry(2), entry(2)]))).toBeNull();
    expect(logprobsMisaligned(out([entry(2)]))).toContain("1 entries for 2 tokens");
    expect(logprobsMisaligned(out([entry(2), entry(1)]))).toContain("entry 1 lists 1 top tokens");
    expect(generationProblem(out([entry(0)]), false)).toContain("1 entries for 2 tokens");
    expect(generationProblem(out([entry(0), entry(0)]), false)).toBeNull();
    // A prompt's (prompt_tokens 1 here): its first entry has no figures.
    const first = { token: "p", logprob: null, top: [] };
    expect(logprobsMisaligned({ ...out(), prompt_logprobs: [first] })).toBeNull();
    expect(logprobsMisaligned({ ...out(), prompt_logprobs: [first, first] })).toContain("2 entries for 1 tokens");
    expect(logprobsMisaligned({ ...out(), prompt_logprobs: [{ ...first, logprob: -1 }] })).toContain("first entry");
  });

  it("are left out where two runs' outputs are compared: near ties order top tokens either way", () => {
    const tol = { abs: 1e-3, rel: 1e-3 };
    const a = out([entry(2), entry(2)]);
    const b = out([entry(2), { ...entry(2), top: [...entry(2).top].reverse() }]);
    expect(outputsDiffer("text-generation", a, b, tol)).toBeNull();
    expect(outputsDiffer("text-generation", a, { ...b, tokens: [1, 3] }, tol)).toContain("tokens");
  });

  it("fit an answer: max_new_tokens × (logprobs + 1) at most 12,000, or what to lower", () => {
    expect(logprobsProblem({ max_new_tokens: 4096 })).toBeNull();
    expect(logprobsProblem({ max_new_tokens: 2000, logprobs: 5 })).toBeNull();
    expect(logprobsProblem({ max_new_tokens: 572, logprobs: 20 })).toContain("lower max_new_tokens to 571 or logprobs");
    expect(parseGenerationItem({ prompt: "x", params: { max_new_tokens: 3000, logprobs: 5 } }, 4096)).toEqual({
      error: expect.stringContaining("params.logprobs: 3000 tokens with 5 top tokens each are 18000"),
    });
  });
});

describe("a token split mid-character", () => {
  const tokenizer = createTokenizer(
    JSON.parse(readFileSync(new URL("../../models/gpt-tiny/tokenizer.json", import.meta.url), "utf8")),
    JSON.parse(readFileSync(new URL("../../models/gpt-tiny/tokenizer_config.json", import.meta.url), "utf8")),
  );
  const text = "héllo 😀 日本";
  const ids = tokenizer(text, { return_tensor: false }).input_ids as number[];

  it("has its own bytes from the byte-level vocabulary: the tokens' bytes make the text's UTF-8", () => {
    const bytes = ids.flatMap((id) => tokenizer.decode.tokenBytes?.(id) ?? []);
    expect(bytes).toEqual([...new TextEncoder().encode(text)]);
    const split = ids.filter((id) => tokenizer.decode([id]).includes("\uFFFD"));
    expect(split.length).toBeGreaterThan(0); // gpt-tiny's 1,024 tokens split these characters
    // An entry gives them where its text cannot; a special token has none.
    const row = rowLogprobs(new Float32Array(1029), 0, 1029, 0);
    const entry = tokenLogprob(row, split[0] as number, tokenizer.decode);
    expect(entry.token).toContain("\uFFFD");
    expect(entry.bytes).toEqual(tokenizer.decode.tokenBytes?.(split[0] as number));
    expect(tokenLogprob(row, ids[0] as number, tokenizer.decode).bytes).toBeUndefined();
    expect(tokenizer.decode.tokenBytes?.(1024)).toBeNull();
    // A claim with other bytes is not the token's; chat's entry carries the worker's bytes.
    const lie = { ...entry, bytes: [0x41] };
    expect(logprobProblem(lie, row, split[0] as number, 0, 1e-3, tokenizer.decode)).toContain("bytes");
    expect(logprobProblem(entry, row, split[0] as number, 0, 1e-3, tokenizer.decode)).toBeNull();
    expect(chatLogprobs([entry]).content[0]?.bytes).toEqual(entry.bytes);
  });
});
