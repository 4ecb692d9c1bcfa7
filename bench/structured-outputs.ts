// `npm run bench:structured`: what JSON mode and structured outputs cost on the bundled decoder (gpt-tiny,
// onnxruntime-node, cpu). Per format: a batch of sampled replies generated (µs a token, wall time over the tokens
// of the batch), then every position of those replies replayed through the mask alone
// (shared/tasks/text-generation-format.ts jsonMask): warm (the allowed-token sets generation left cached) and
// cold (the same schema under a title never seen, so every automaton state is computed again). Rounds alternate
// the formats. Prints a table and writes it to bench/results/structured.md; gates nothing.
import { readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import os from "node:os";
import { ModelConfig, ModelRegistry } from "../shared/config/model-config.ts";
import { type GenerationOutput, GenerationParams } from "../shared/protocol/generation.ts";
import { loadModel } from "../shared/runner/load-model.ts";
import { jsonMask } from "../shared/tasks/text-generation-format.ts";
import { createTokenizer } from "../shared/tasks/tokenizer.ts";
import { REVIEW_SCHEMA } from "../test/support/gpt-tiny.ts";
import { nodeFetch } from "../worker-gpu/runner/file-fetch.ts";
import { createOrtNodeFactory } from "../worker-gpu/runner/ort-node-session.ts";
import { loadAverage } from "./bench-kit.ts";

const BATCH = Number(process.env.BENCH_BATCH ?? 16);
const NEW_TOKENS = Number(process.env.BENCH_NEW_TOKENS ?? 96);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const ASK = "<|user|>review the hotel as json<|end|><|assistant|>";
const TAGS = { prefix: "<tool_call>", suffix: "</tool_call>" };
const FORMATS: Record<string, object> = {
  text: {},
  json_object: { format: "json_object" },
  json_schema: { format: "json_schema", schema: REVIEW_SCHEMA },
  // As the OpenAI-compatible routes ask: one space may follow each ":" and "," (GenerationParams.json_spacing).
  "json_schema (spaced)": { format: "json_schema", schema: REVIEW_SCHEMA, json_spacing: "spaced" },
  // Tool calls on a template with tags (edge/openai-tools.ts): a call it must make, between them ("required"), and
  // tool_choice "auto", where gpt-tiny (never trained on calls) answers text: the mask's lead steps, then text that a
  // call may still follow (json_markers.after_text, as the edge sends it): masked only where a prefix may begin.
  "call (required, tags)": { format: "json_schema", schema: REVIEW_SCHEMA, json_markers: { ...TAGS, optional: false } },
  "auto (replies text)": {
    format: "json_schema",
    schema: REVIEW_SCHEMA,
    json_markers: { ...TAGS, optional: true, after_text: true },
  },
};

const registry = new URL("../models/registry.json", import.meta.url);
const entry = ModelRegistry.parse(JSON.parse(readFileSync(registry, "utf8"))).models.find((m) => m.name === "gpt-tiny");
const model = await loadModel(ModelConfig.parse(entry), createOrtNodeFactory(), {
  registryUrl: registry,
  fetch: nodeFetch,
  devices: ["cpu"],
});
const folder = new URL("../models/gpt-tiny/", import.meta.url);
const read = (name: string) => JSON.parse(readFileSync(new URL(name, folder), "utf8"));
const { decode } = createTokenizer(read("tokenizer.json"), read("tokenizer_config.json"));
const vocab = read("config.json").vocab_size as number;
const eos = read("config.json").eos_token_id as number[];

/** µs a position to mask every position of `outputs` under `params`' format (each reply's positions in order). */
function replay(params: GenerationParams, outputs: GenerationOutput[]): number {
  let positions = 0;
  const started = performance.now();
  for (const out of outputs) {
    const generated = [...out.tokens];
    for (let pos = 0; pos <= generated.length; pos++, positions++) {
      jsonMask(params, new Float32Array(vocab), 0, vocab, eos, decode, generated, pos);
    }
  }
  return ((performance.now() - started) * 1000) / positions;
}

const rows = new Map<string, { generate: number[]; warm: number[]; cold: number[]; tokens: number }>();
const loadBefore = loadAverage();
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, format] of Object.entries(FORMATS)) {
    const params = Array.from({ length: BATCH }, (_, i) =>
      GenerationParams.parse({ max_new_tokens: NEW_TOKENS, temperature: 1, seed: 1000 * round + i, ...format }),
    );
    const started = performance.now();
    const results = await model.run(params.map((p) => ({ prompt: ASK, params: p })));
    const outputs = results.map((r) => (r as { output: GenerationOutput }).output);
    const tokens = outputs.reduce((n, o) => n + o.tokens.length, 0);
    const row = rows.get(name) ?? { generate: [], warm: [], cold: [], tokens: 0 };
    row.generate.push(((performance.now() - started) * 1000) / tokens);
    row.tokens += tokens;
    const first = params[0] as GenerationParams;
    if (first.format !== undefined) {
      replay(first, outputs); // the JIT's first pass over this code, not counted
      row.warm.push(replay(first, outputs));
      // JSON mode's language is the schema {type: object}'s.
      const unseen = { ...(first.schema ?? { type: "object" }), title: `unseen ${round}` };
      row.cold.push(replay({ ...first, format: "json_schema", schema: unseen }, outputs));
    }
    rows.set(name, row);
  }
}
await model.dispose();

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (x: number | undefined) => (x === undefined ? "—" : x.toFixed(1));
const table = [
  "| format | tokens (all rounds) | generate µs/token | mask µs/token, warm | mask µs/token, cold |",
  "|---|---:|---:|---:|---:|",
  ...[...rows].map(
    ([name, r]) =>
      `| ${name} | ${r.tokens} | ${fmt(median(r.generate))} | ${fmt(median(r.warm))} | ${fmt(median(r.cold))} |`,
  ),
].join("\n");
const report = `# Structured outputs: what the JSON mask costs

- Machine: ${os.cpus()[0]?.model ?? "?"} × ${os.cpus().length}, Node ${process.version}; load average ${loadBefore} at the start
- Date: ${new Date().toISOString()}
- Command: \`npm run bench:structured\` (BENCH_BATCH=${BATCH}, BENCH_NEW_TOKENS=${NEW_TOKENS}, BENCH_ROUNDS=${ROUNDS})
- Model: gpt-tiny (vocabulary ${vocab}) on onnxruntime-node (cpu); ${BATCH} sampled replies a round (temperature 1, a seed each) to one prompt, a review schema (bench/structured-outputs.ts) for json_schema and the tool-call rows (its tags \`${TAGS.prefix}\` … \`${TAGS.suffix}\`: required, or optional as tool_choice "auto" makes them)
- generate: wall time of the batch over its tokens (the mask included, for the JSON formats); mask: every position of those replies replayed through the mask alone, warm (the sets generation cached) and cold (a schema never seen: each state computed again, a pass over the vocabulary); medians over the rounds, the formats alternating

${table}
`;
console.log(report);
await writeFile(new URL("./results/structured.md", import.meta.url), report);
