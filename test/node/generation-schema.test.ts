// Structured outputs on gpt-tiny's real runners (params.format "json_schema"): the reply is one object the
// schema accepts, as Ajv (an independent validator) judges it, alike on onnxruntime-node and onnxruntime-web,
// resumed from the tokens accepted, and a donor's claim is held to the schema's mask by the teacher-forced check.
import { readFileSync } from "node:fs";
import { Ajv } from "ajv";
import { describe, expect, it } from "vitest";
import { GenerationParams, GenerationVerdict } from "../../shared/index.ts";
import { compileJsonSchema } from "../../shared/protocol/json-schema.ts";
import type { ItemResult } from "../../shared/protocol/worker.ts";
import { jsonFeed, jsonStart } from "../../shared/tasks/json-grammar.ts";
import { gptTinyOnBothRuntimes, generationOutput as output, REVIEW_SCHEMA } from "../support/gpt-tiny.ts";

const models = gptTinyOnBothRuntimes();
const ASK = "<|user|>review the hotel as json<|end|><|assistant|>";
const valid = new Ajv().compile(REVIEW_SCHEMA);
const vocab: Record<string, number> = JSON.parse(
  readFileSync(new URL("../../models/gpt-tiny/tokenizer.json", import.meta.url), "utf8"),
).model.vocab;

const params = (extra: object = {}) =>
  GenerationParams.parse({ max_new_tokens: 96, format: "json_schema", schema: REVIEW_SCHEMA, ...extra });
const run = async (p: GenerationParams, on = models.node, resume?: { tokens: number[]; text: string }) =>
  output((await on.run([{ prompt: ASK, params: p, ...(resume ? { resume } : {}) }]))[0]);
const verdict = (r: ItemResult | undefined) => {
  if (!r || !("output" in r)) throw new Error(`expected a verdict, got ${JSON.stringify(r)}`);
  return GenerationVerdict.parse(r.output);
};

describe("structured outputs (json_schema) on gpt-tiny", () => {
  it("writes an object the schema accepts on both runtimes, resumes it, and the check agrees", async () => {
    let whole = 0;
    for (const sampling of [
      {},
      { temperature: 0.9, seed: 3 },
      { temperature: 0.9, seed: 8, repetition_penalty: 1.2 },
    ]) {
      const p = params(sampling);
      const out = await run(p);
      // Every reply is a prefix the schema's automaton takes; a whole one is what Ajv accepts.
      expect(
        jsonFeed(jsonStart(compileJsonSchema(REVIEW_SCHEMA)), out.generated_text),
        out.generated_text,
      ).not.toBeNull();
      if (out.finish_reason === "stop") {
        const reply = JSON.parse(out.generated_text);
        expect(valid(reply), `${out.generated_text}: ${JSON.stringify(valid.errors)}`).toBe(true);
        whole++;
      } else expect(out.tokens).toHaveLength(96);
      expect(await run(p, models.web)).toEqual(out);
      const [checked] = await models.node.run([{ prompt: ASK, params: p, verify: { ...out, tolerance: 1e-3 } }]);
      expect(verdict(checked).verdict).toBe("agreed");
      // Redelivered after 9 tokens, the mask reads them as its own and the reply goes on as it would have.
      const first = await run(params({ ...sampling, max_new_tokens: 9 }));
      expect(await run(p, models.node, { tokens: first.tokens, text: first.generated_text })).toEqual(out);
    }
    expect(whole).toBeGreaterThan(0);
  }, 120_000);

  it("holds a donor's claim to the schema: a key the schema does not name is a mismatch where it stands", async () => {
    const p = params();
    const honest = await run(p);
    // After '{' the schema asks for "sentiment" first; '"x' starts a key JSON mode takes and this schema does not.
    const quote = vocab['"'] as number;
    const x = vocab.x as number;
    const lie = { ...honest, tokens: [honest.tokens[0] as number, quote, x], generated_text: '{"x' };
    const [checked] = await models.node.run([{ prompt: ASK, params: p, verify: { ...lie, tolerance: 1e-3 } }]);
    expect(verdict(checked)).toMatchObject({ verdict: "mismatch", first_mismatch: 2 });
  }, 60_000);

  it("answers an error, not a broken object, where no token of the model can write what the schema asks next", async () => {
    // gpt-tiny's byte-level tokens write é only split across two, which the mask never takes.
    const schema = { type: "object", properties: { café: { type: "string" } }, required: ["café"] };
    const p = GenerationParams.parse({ max_new_tokens: 32, format: "json_schema", schema });
    for (const on of [models.node, models.web]) {
      const [result] = await on.run([{ prompt: ASK, params: p }]);
      expect(result).toMatchObject({
        error: { code: "invalid_input", message: expect.stringContaining('after "{\\"caf"') },
      });
    }
  }, 60_000);

  it("refuses a schema it cannot serve, and a schema without its format, before anything runs", () => {
    const refused = (p: object) => GenerationParams.safeParse({ max_new_tokens: 8, ...p }).error?.issues[0]?.message;
    expect(
      refused({ format: "json_schema", schema: { type: "object", properties: { a: { format: "date" } } } }),
    ).toMatch(/\$\.properties\.a\.format is not served/);
    expect(refused({ format: "json_schema" })).toMatch(/schema comes with format "json_schema"/);
    expect(refused({ schema: REVIEW_SCHEMA })).toMatch(/schema comes with format "json_schema"/);
    expect(refused({ format: "json_schema", schema: REVIEW_SCHEMA, stop: ["}"] })).toMatch(/stop cannot be used/);
  });
});

describe("json_markers on gpt-tiny: a call between a template's tool-call tags, which the model may decide on", () => {
  const TAGS = { prefix: "<tool_call>", suffix: "</tool_call>" };
  const plain = () => run(GenerationParams.parse({ max_new_tokens: 48 }));
  const marked = (markers: { prefix: string; suffix: string; optional: boolean }, extra: object = {}) =>
    params({ json_markers: markers, ...extra });
  const object = (text: string, { prefix, suffix }: { prefix: string; suffix: string }) => {
    expect(text.startsWith(prefix) && text.endsWith(suffix), text).toBe(true);
    return JSON.parse(text.slice(prefix.length, text.length - suffix.length));
  };

  it("optional, where the model does not begin with the prefix: its reply is the text it writes unmasked", async () => {
    const text = await plain();
    expect(text.generated_text.startsWith("<")).toBe(false);
    const p = GenerationParams.parse({
      max_new_tokens: 48,
      format: "json_schema",
      schema: REVIEW_SCHEMA,
      json_markers: { ...TAGS, optional: true },
    });
    const out = await run(p);
    expect(out).toEqual(text);
    expect(await run(p, models.web)).toEqual(out);
  }, 60_000);

  it("optional, where it begins with the prefix: the object follows, then the suffix, then end-of-text", async () => {
    const text = await plain();
    // The model's own first word as the prefix: greedy, it begins a call.
    const prefix = /^\s*\S+/.exec(text.generated_text)?.[0] as string;
    const markers = { prefix, suffix: "</call>", optional: true };
    for (const sampling of [{}, { temperature: 0.9, seed: 5 }]) {
      const p = marked(markers, sampling);
      const out = await run(p);
      if (Object.keys(sampling).length === 0) {
        expect(out.finish_reason).toBe("stop");
        expect(valid(object(out.generated_text, markers)), out.generated_text).toBe(true);
      } else {
        // Seed 5 draws another first word: the reply is text, the mask off once it left the prefix.
        expect(out.generated_text.startsWith(prefix)).toBe(false);
        expect(out.generated_text.startsWith(prefix.slice(0, 1))).toBe(true);
      }
      expect(await run(p, models.web)).toEqual(out);
      const [checked] = await models.node.run([{ prompt: ASK, params: p, verify: { ...out, tolerance: 1e-3 } }]);
      expect(verdict(checked).verdict).toBe("agreed");
      const first = await run(marked(markers, { ...sampling, max_new_tokens: 3 }));
      expect(await run(p, models.node, { tokens: first.tokens, text: first.generated_text })).toEqual(out);
    }
  }, 120_000);

  it("optional: stop strings cut a text reply as they cut an unmasked one, and never a call", async () => {
    const text = await plain();
    const stop = [text.generated_text.split(" ")[1] as string];
    const cut = await run(GenerationParams.parse({ max_new_tokens: 48, stop }));
    expect(cut.generated_text.length).toBeLessThan(text.generated_text.length);
    const asText = marked({ ...TAGS, optional: true }, { max_new_tokens: 48, stop });
    expect(await run(asText)).toEqual(cut);
    expect(await run(asText, models.web)).toEqual(cut);
    const prefix = /^\s*\S+/.exec(text.generated_text)?.[0] as string;
    const asCall = marked({ prefix, suffix: "", optional: true }, { stop: ['"'] });
    const call = await run(asCall);
    expect(call.finish_reason).toBe("stop");
    expect(valid(JSON.parse(call.generated_text.slice(prefix.length))), call.generated_text).toBe(true);
    const [checked] = await models.node.run([{ prompt: ASK, params: asCall, verify: { ...call, tolerance: 1e-3 } }]);
    expect(verdict(checked).verdict).toBe("agreed");
  }, 60_000);

  it("optional with a text schema: a reply that makes no call is that schema's object, a call as before", async () => {
    const tool = { type: "object", properties: { stars: { enum: [1, 2, 3] } }, required: ["stars"] };
    const calls = new Ajv().compile(tool);
    // Held to "{" or the tags at its start, gpt-tiny calls greedily and with seed 0, and answers with seed 1.
    for (const [sampling, calling] of [
      [{}, true],
      [{ temperature: 1, seed: 0 }, true],
      [{ temperature: 1, seed: 1 }, false],
    ] as const) {
      const p = GenerationParams.parse({
        max_new_tokens: 96,
        format: "json_schema",
        schema: tool,
        json_markers: { ...TAGS, optional: true, text_schema: REVIEW_SCHEMA },
        ...sampling,
      });
      const out = await run(p);
      expect(out.finish_reason).toBe("stop");
      if (calling) expect(calls(object(out.generated_text, TAGS)), out.generated_text).toBe(true);
      else expect(valid(JSON.parse(out.generated_text)), out.generated_text).toBe(true);
      expect(await run(p, models.web)).toEqual(out);
      const [checked] = await models.node.run([{ prompt: ASK, params: p, verify: { ...out, tolerance: 1e-3 } }]);
      expect(verdict(checked).verdict).toBe("agreed");
    }
  }, 60_000);

  it("required: the reply is the prefix, an object the schema accepts and the suffix, whatever the model would write", async () => {
    const markers = { ...TAGS, optional: false };
    const out = await run(marked(markers));
    expect(out.finish_reason).toBe("stop");
    expect(valid(object(out.generated_text, markers)), out.generated_text).toBe(true);
    expect(await run(marked(markers), models.web)).toEqual(out);
  }, 60_000);

  it("parallel: after each call the model ends the reply or begins another, every one between the tags", async () => {
    const markers = { ...TAGS, optional: false, parallel: true };
    for (const sampling of [{}, { temperature: 0.9, seed: 4 }]) {
      const p = marked(markers, { ...sampling, max_new_tokens: 200 });
      const out = await run(p);
      const calls = out.generated_text.split(TAGS.suffix);
      // Whole calls, each followed by its suffix; what follows the last is whitespace, or a call cut by the length.
      for (const call of calls.slice(0, -1)) expect(valid(object(call.trim() + TAGS.suffix, TAGS)), call).toBe(true);
      // gpt-tiny, never trained on calls, ends after its first (several calls: the toy vocabulary's test, json-grammar).
      expect(calls.length).toBe(2);
      if (out.finish_reason === "stop") expect(calls.at(-1)?.trim()).toBe("");
      expect(await run(p, models.web)).toEqual(out);
      const [checked] = await models.node.run([{ prompt: ASK, params: p, verify: { ...out, tolerance: 1e-3 } }]);
      expect(verdict(checked).verdict).toBe("agreed");
    }
  }, 120_000);

  it("holds a donor's claim to the markers: text where a call was required, or a call's prefix then no object", async () => {
    const text = await plain();
    const required = marked({ ...TAGS, optional: false });
    const [asText] = await models.node.run([{ prompt: ASK, params: required, verify: { ...text, tolerance: 1e-3 } }]);
    expect(verdict(asText)).toMatchObject({ verdict: "mismatch", first_mismatch: 0 });
    const prefix = /^\s*\S+/.exec(text.generated_text)?.[0] as string;
    const optional = marked({ prefix, suffix: "", optional: true });
    const honest = await run(optional);
    // The prefix written, the object must begin: the text the model writes unmasked goes on otherwise.
    const at = honest.tokens.findIndex((t, i) => t !== text.tokens[i]);
    expect(honest.generated_text.slice(prefix.length)).toMatch(/^\{/);
    expect(at).toBeGreaterThan(0);
    const lie = { ...text, tokens: text.tokens.slice(0, at + 1), generated_text: "" };
    const [checked] = await models.node.run([{ prompt: ASK, params: optional, verify: { ...lie, tolerance: 1e-3 } }]);
    expect(verdict(checked)).toMatchObject({ verdict: "mismatch", first_mismatch: at });
  }, 60_000);

  it("refuses markers without a format", () => {
    const refused = GenerationParams.safeParse({ json_markers: { ...TAGS, optional: true } }).error?.issues[0];
    expect(refused?.message).toMatch(/json_markers come with a format/);
    // Stop strings cut text only: with markers the model may not leave, they would have none to cut.
    const required = { format: "json_object", json_markers: { ...TAGS, optional: false }, stop: ["x"] };
    expect(GenerationParams.safeParse(required).error?.issues[0]?.message).toMatch(/stop cannot be used/);
    expect(GenerationParams.safeParse({ ...required, json_markers: { ...TAGS, optional: true } }).success).toBe(true);
  });
});
