// `npm run bench:generate`: time to first token (TTFT) and tokens/s of the text-generation task straight on
// onnxruntime-node, no coordinator: 1 prompt, and 16 prompts decoded as one batch, on the bundled decoder
// (models/gpt-tiny) and the benchmark decoder (models/bench/gpt-bench: `npm run build:models -- --bench`; skipped
// when absent). Writes bench/results/generate.md. The rows through the swarm come with the coordinator's side.
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import os from "node:os";
import { ModelConfig, ModelRegistry } from "../shared/config/model-config.ts";
import { loadModel } from "../shared/runner/load-model.ts";
import { nodeFetch } from "../worker-gpu/runner/file-fetch.ts";
import { createOrtNodeFactory } from "../worker-gpu/runner/ort-node-session.ts";

const RESULTS_FILE = new URL("./results/generate.md", import.meta.url);
const MODELS = [
  { name: "gpt-tiny", registry: new URL("../models/registry.json", import.meta.url) },
  { name: "gpt-bench", registry: new URL("../models/bench/registry.json", import.meta.url) },
];
const NEW_TOKENS = Number(process.env.BENCH_NEW_TOKENS ?? 64);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const PROMPTS = ["the pizza was", "the film", "how was the trip", "the new phone", "the weather today"];

interface Row {
  model: string;
  concurrent: number;
  ttft: number[];
  perSequence: number[];
  aggregate: number[];
}

const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))] ?? 0;

const rows: Row[] = [];
const device = (process.env.BENCH_DEVICE ?? "cpu") as "cpu" | "cuda";
for (const { name, registry } of MODELS) {
  if (!existsSync(registry)) {
    console.log(`${name}: no ${registry.pathname}; skipped`);
    continue;
  }
  const entry = ModelRegistry.parse(JSON.parse(await readFile(registry, "utf8"))).models.find((m) => m.name === name);
  if (!entry) continue;
  const model = await loadModel(ModelConfig.parse(entry), createOrtNodeFactory(), {
    registryUrl: registry,
    fetch: nodeFetch,
    devices: [device],
  });
  for (const concurrent of [1, 16]) {
    const row: Row = { model: `${name} (${model.device})`, concurrent, ttft: [], perSequence: [], aggregate: [] };
    // Seeded sampling: every round draws the same tokens, so rounds compare.
    const items = Array.from({ length: concurrent }, (_, i) => ({
      prompt: `${PROMPTS[i % PROMPTS.length]} (${i})`,
      params: { max_new_tokens: NEW_TOKENS, temperature: 1, seed: i + 1 },
    }));
    for (let round = 0; round <= ROUNDS; round++) {
      const started = performance.now();
      let first = 0;
      let tokens = 0;
      await model.run(items, {
        onTokens: (d) => {
          first ||= performance.now() - started;
          tokens += d.tokens.length;
        },
      });
      const seconds = (performance.now() - started) / 1000;
      if (round === 0) continue; // warm-up
      row.ttft.push(first);
      row.aggregate.push(tokens / seconds);
      row.perSequence.push(tokens / concurrent / (seconds - first / 1000));
    }
    rows.push(row);
    console.log(
      `${row.model} x${concurrent}: TTFT p50 ${pct(row.ttft, 0.5).toFixed(1)} ms, ` +
        `${pct(row.perSequence, 0.5).toFixed(0)} tok/s per sequence, ${pct(row.aggregate, 0.5).toFixed(0)} tok/s in all`,
    );
  }
  await model.dispose();
}

const table = rows.map(
  (r) =>
    `| ${r.model} | ${r.concurrent} | ${pct(r.ttft, 0.5).toFixed(1)} | ${pct(r.ttft, 0.99).toFixed(1)} | ${pct(r.perSequence, 0.5).toFixed(0)} | ${pct(r.aggregate, 0.5).toFixed(0)} |`,
);
await writeFile(
  RESULTS_FILE,
  `# Text generation, direct onnxruntime-node\n\n` +
    `${os.cpus()[0]?.model ?? "unknown CPU"}, ${os.cpus().length} cores, Node ${process.version}; ` +
    `${NEW_TOKENS} new tokens a sequence, seeded sampling, ${ROUNDS} rounds after a warm-up (p50 / p99 over rounds).\n\n` +
    `| model | concurrent prompts | TTFT p50 (ms) | TTFT p99 (ms) | tokens/s per sequence | tokens/s in all |\n|---|---|---|---|---|---|\n` +
    `${table.join("\n")}\n`,
);
console.log(`wrote ${RESULTS_FILE.pathname}`);
