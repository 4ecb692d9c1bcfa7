// The benchmark model (npm run build:models -- --bench): a MiniLM-L6-H384-shaped encoder (6 layers, hidden 384,
// 12 heads, feed-forward 1536, 30,522-token WordPiece vocabulary, ~22M parameters) with random weights from a
// seed, its tokenizer, and an int8 variant, under models/bench/ (not committed), with a registry of its own
// (models/bench/registry.json) so the default registry never serves it. Called by scripts/build-models.ts.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Example } from "./dataset.ts";
import { runPythonJob } from "./python-job.ts";
import { stableJson } from "./stable-json.ts";
import { buildVocab, tokenizerConfigJson, tokenizerJson } from "./wordpiece.ts";

export const BENCH_NAME = "minilm-l6-h384";
const SHAPE = { seed: 384, hidden: 384, layers: 6, heads: 12, ffn: 1536, dropout: 0.1 };
const VOCAB_SIZE = 30_522;
const MAX_POSITIONS = 512;

export async function buildBenchModel(outDir: string, examples: readonly Example[]): Promise<void> {
  // Real words first (so text tokenises as words), then BERT-style [unusedN] entries up to BERT's size.
  const words = buildVocab(examples.map((e) => e.text));
  const vocab = [...words, ...Array.from({ length: VOCAB_SIZE - words.length }, (_, i) => `[unused${i}]`)];
  const folder = join(outDir, BENCH_NAME);
  mkdirSync(join(folder, "onnx"), { recursive: true });
  const log = runPythonJob(
    { vocab_size: VOCAB_SIZE, max_length: MAX_POSITIONS, pad_id: 0, mask_id: vocab.indexOf("[MASK]"), bench: SHAPE },
    join(folder, "onnx"),
  );
  for (const f of ["job.json", "train-log.json"])
    renameSync(join(folder, "onnx", f), join(outDir, `${BENCH_NAME}-${f}`));
  const config = {
    model_type: "bert",
    architectures: ["BertModel"],
    vocab_size: VOCAB_SIZE,
    max_position_embeddings: MAX_POSITIONS,
    pad_token_id: 0,
    hidden_size: SHAPE.hidden,
    num_hidden_layers: SHAPE.layers,
    num_attention_heads: SHAPE.heads,
    intermediate_size: SHAPE.ffn,
    hidden_act: "gelu",
    layer_norm_eps: 1e-12,
    edgeswarm: {
      benchmark: true,
      architecture:
        "MiniLM-L6-H384 shape, random weights (BERT initialisation) from a seed: for timing, not for answers",
      parameters: log.parameters,
      seed: SHAPE.seed,
    },
  };
  writeFileSync(join(folder, "config.json"), stableJson(config));
  writeFileSync(join(folder, "tokenizer.json"), stableJson(tokenizerJson(vocab)));
  writeFileSync(join(folder, "tokenizer_config.json"), stableJson(tokenizerConfigJson(MAX_POSITIONS)));
  const ref = (path: string) => ({ path, sha256: sha256(join(folder, path)) });
  const shared = {
    task: "feature-extraction",
    max_batch_size: 32,
    max_queue_delay_ms: 5,
    max_sequence_length: 128,
    lease_ms: 120_000,
  };
  const files = {
    base_url: `./${BENCH_NAME}/`,
    config: ref("config.json"),
    tokenizer: ref("tokenizer.json"),
    tokenizer_config: ref("tokenizer_config.json"),
  };
  const registry = {
    models: [
      {
        name: BENCH_NAME,
        description: "Benchmark model (random weights, fp32): never served by the default registry",
        ...shared,
        files: { ...files, model: ref("onnx/model.onnx") },
      },
      {
        name: `${BENCH_NAME}-int8`,
        description: "Benchmark model (random weights, dynamic int8 MatMuls and embeddings): never served by default",
        ...shared,
        files: { ...files, model: ref("onnx/model_quantized.onnx") },
      },
    ],
  };
  writeFileSync(join(outDir, "registry.json"), stableJson(registry));
  for (const m of registry.models) {
    const bytes = readFileSync(join(folder, m.files.model.path)).length;
    console.log(`${m.files.model.sha256}  ${(bytes / 2 ** 20).toFixed(1).padStart(6)} MiB  ${m.name}`);
  }
  console.log(`wrote ${join(outDir, "registry.json")}`);
}

function sha256(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}
