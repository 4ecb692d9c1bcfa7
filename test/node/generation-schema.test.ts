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
