// Builds the bundled text-generation model (models/gpt-tiny: a small GPT-style decoder with a KV cache, its
// byte-level BPE tokenizer, config.json with the chat template, generation_config.json) and, with --bench, the
// benchmark-size decoder from a seed (models/bench/gpt-bench, not committed). Called by scripts/build-models.ts;
// `node --import tsx models/build/decoder-model.ts [--bench] [--out DIR]` rebuilds the decoder alone.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createTokenizer } from "../../shared/tasks/tokenizer.ts";
import { bpeTokenizerJson, trainBpe } from "./byte-bpe.ts";
import { parseDataset } from "./dataset.ts";
import { CHAT_TEMPLATE, decoderDocuments, SPECIALS } from "./decoder-text.ts";
import { runPythonJob } from "./python-job.ts";
import { stableJson } from "./stable-json.ts";

export const DECODER_NAME = "gpt-tiny";
export const BENCH_DECODER_NAME = "gpt-bench";
const MODELS_DIR = join(dirname(fileURLToPath(import.meta.url)), "..");
/** Merges up to this many entries (bytes + merges), then the special tokens. */
const BPE_SIZE = 1024;
/** Small enough to train in a few minutes on two shared cores; it still learns the corpus's sentences. */
const TINY = {
  seed: 1414,
  context: 256,
  train_ctx: 64,
  hidden: 128,
  layers: 4,
  heads: 4,
  dropout: 0.1,
  steps: 450,
  batch_size: 24,
  lr: 0.003,
  weight_decay: 0.05,
};
/** The benchmark decoder: GPT-2-small-like layers at 6 x 512, random weights from the seed. */
const BENCH = { seed: 512, context: 512, hidden: 512, layers: 6, heads: 8 };

export function buildDecoder(outDir: string, bench: boolean): void {
  // The written sentences are templated ("the broth was not uplifting"): a third of them, so the data set's
  // own sentences set the style.
  const read = (f: string) => parseDataset(readFileSync(join(MODELS_DIR, "data", f), "utf8"));
  const examples = [...read("sentiment.tsv"), ...read("written.tsv").filter((_, i) => i % 3 === 0)];
  const docs = decoderDocuments(examples);
  const { vocab, merges } = trainBpe(docs.map(stripSpecials), BPE_SIZE);
  const specials = Object.values(SPECIALS);
  const tokJson = bpeTokenizerJson(vocab, merges, specials);
  const tokConfig = {
    tokenizer_class: "PreTrainedTokenizerFast",
    bos_token: SPECIALS.eos,
    eos_token: SPECIALS.eos,
    unk_token: SPECIALS.eos,
    pad_token: SPECIALS.eos,
    add_bos_token: false,
    model_max_length: bench ? BENCH.context : TINY.context,
  };
  const tokenizer = createTokenizer(tokJson, tokConfig);
  const ids = (text: string) => tokenizer(text, { return_tensor: false }).input_ids as number[];
  const idOf = (token: string) => vocab.length + specials.indexOf(token);
  const settings = bench ? BENCH : TINY;
  const name = bench ? BENCH_DECODER_NAME : DECODER_NAME;
  const vocabSize = vocab.length + specials.length;
  const encoded = docs.map(ids);
  console.log(`decoder: ${docs.length} documents, ${encoded.flat().length} tokens, vocabulary ${vocabSize}`);

  const work = mkdtempSync(join(tmpdir(), "edgeswarm-decoder-"));
  const log = runPythonJob(
    { vocab_size: vocabSize, settings, docs: bench ? [] : encoded, random: bench },
    work,
    "train-decoder.py",
  );
  const onnx = readFileSync(join(work, "decoder.onnx"));
  rmSync(work, { recursive: true, force: true });

  const eos = [idOf(SPECIALS.eos), idOf(SPECIALS.end)];
  const config = {
    model_type: "gpt2",
    architectures: ["GPT2LMHeadModel"],
    vocab_size: vocabSize,
    n_positions: settings.context,
    n_embd: settings.hidden,
    n_layer: settings.layers,
    n_head: settings.heads,
    activation_function: "gelu",
    tie_word_embeddings: true,
    use_cache: true,
    bos_token_id: eos[0],
    eos_token_id: eos,
    pad_token_id: eos[0],
    edgeswarm: {
      architecture: `GPT-style decoder: token + position embeddings, ${settings.layers} pre-LN blocks of ${settings.heads}-head causal self-attention and GELU MLP (${4 * settings.hidden}), hidden ${settings.hidden}, LM head tied to the token embeddings; ONNX with past_key_values / present KV cache`,
      chat_template: CHAT_TEMPLATE,
      trained_on: bench
        ? "nothing: random weights from the seed, for benchmarks"
        : "models/data/sentiment.tsv and every third line of models/data/written.tsv as plain sentences and as one-turn chats (models/build/decoder-text.ts)",
      settings,
      training: log,
    },
  };
  const generation = { bos_token_id: eos[0], eos_token_id: eos, pad_token_id: eos[0], max_length: settings.context };
  const folder = join(outDir, name);
  const files = {
    model: write(folder, "onnx/model.onnx", onnx),
    config: write(folder, "config.json", stableJson(config)),
    tokenizer: write(folder, "tokenizer.json", stableJson(tokJson)),
    tokenizer_config: write(folder, "tokenizer_config.json", stableJson(tokConfig)),
  };
  write(folder, "generation_config.json", stableJson(generation));
  const registryPath = join(outDir, "registry.json");
  const registry = existsSync(registryPath)
    ? (JSON.parse(readFileSync(registryPath, "utf8")) as { models: Record<string, unknown>[] })
    : { models: [] };
  const entry = {
    name,
    task: "text-generation",
    description: bench
      ? "Benchmark-size decoder (6 x 512, random weights from a seed)"
      : "Bundled text generator (a small GPT-style decoder trained on the project's review sentences)",
    max_batch_size: 16,
    max_queue_delay_ms: 5,
    max_sequence_length: settings.context,
    // The edge renders chats with it (shared/protocol/chat-template.ts); the same object as config.json's.
    chat_template: CHAT_TEMPLATE,
    files,
  };
  const at = registry.models.findIndex((m) => m.name === name);
  if (at >= 0) registry.models[at] = entry;
  else registry.models.push(entry);
  writeFileSync(registryPath, stableJson(registry));
  console.log(`updated ${registryPath}`);
}

/** The BPE learns from the text around the special tokens, which the tokenizer matches whole. */
function stripSpecials(doc: string): string {
  return doc.replace(/<\|[a-z]+\|>/g, "\n");
}

function write(folder: string, path: string, bytes: Uint8Array | string) {
  const full = join(folder, path);
  mkdirSync(dirname(full), { recursive: true });
  writeFileSync(full, bytes);
  const sha256 = createHash("sha256").update(bytes).digest("hex");
  const size = typeof bytes === "string" ? Buffer.byteLength(bytes) : bytes.length;
  console.log(`${sha256}  ${(size / 1024).toFixed(1).padStart(7)} KiB  ${path}`);
  return { path, sha256 };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const out = process.argv.indexOf("--out");
  const bench = process.argv.includes("--bench");
  buildDecoder(out >= 0 ? (process.argv[out + 1] ?? "") : join(MODELS_DIR, bench ? "bench" : ""), bench);
}
