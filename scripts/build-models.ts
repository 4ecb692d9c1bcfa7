// Generates the two bundled models (models/sentiment, models/embedder) in the Hugging Face folder layout,
// trained from models/data/sentiment.tsv, and writes their sha256 into models/registry.json.
// Run: node --import tsx scripts/build-models.ts [--out DIR]. Seeded throughout: a re-run writes
// byte-identical files. --out writes the folders and an updated registry.json under DIR instead (the test uses it).
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import { LABELS, parseDataset, splitDataset } from "../models/build/dataset.ts";
import { evaluateEmbedder, PROBES } from "../models/build/evaluate.ts";
import { classifierGraph, embedderGraph } from "../models/build/model-graphs.ts";
import { stableJson } from "../models/build/stable-json.ts";
import { accuracy, CLASSIFIER_SETTINGS, predictClasses, trainClassifier } from "../models/build/train-classifier.ts";
import { cosine, EMBEDDER_SETTINGS, embed, trainEmbedder } from "../models/build/train-embedder.ts";
import { buildVocab, preTokenize, tokenizerConfigJson, tokenizerJson } from "../models/build/wordpiece.ts";
import { createTokenizer } from "../shared/tasks/tokenizer.ts";

const MODELS_DIR = join(dirname(fileURLToPath(import.meta.url)), "..", "models");
const outFlag = process.argv.indexOf("--out");
const OUT_DIR = outFlag >= 0 ? (process.argv[outFlag + 1] ?? "") : MODELS_DIR;
if (OUT_DIR === "") throw new Error("--out needs a folder");
const MAX_LENGTH = 128;

const examples = parseDataset(readFileSync(join(MODELS_DIR, "data", "sentiment.tsv"), "utf8"));
const split = splitDataset(examples);
// The vocabulary comes from the training split only, so held-out figures include words the models never saw.
const vocab = buildVocab(split.train.map((e) => e.text));
const tokJson = tokenizerJson(vocab);
const tokConfig = tokenizerConfigJson(MAX_LENGTH);
const tokenizer = createTokenizer(tokJson, tokConfig);
const unk = vocab.indexOf("[UNK]");

// Encode with the real tokenizer the runners use, so training sees exactly the ids inference will.
const encode = (text: string): number[] => tokenizer(text, { return_tensor: false }).input_ids as number[];
for (const e of split.train) {
  const ids = encode(e.text);
  if (ids.length !== preTokenize(e.text).length + 2 || ids.includes(unk)) {
    throw new Error(`tokenizer does not map every word of "${e.text}" to one vocabulary entry: ${ids.join(" ")}`);
  }
}
const encodeAll = (list: typeof examples) =>
  list.map((e) => ({ ids: encode(e.text), label: e.label, topic: split.topics.indexOf(e.topic) }));
const train = encodeAll(split.train);
const heldOut = encodeAll(split.heldOut);
console.log(
  `data: ${examples.length} sentences, ${train.length} train / ${heldOut.length} held out; vocab ${vocab.length}`,
);

const classifier = trainClassifier(vocab.length, train, LABELS.length);
const trainAcc = accuracy(classifier, train);
const heldOutAcc = accuracy(classifier, heldOut);
console.log(`sentiment: train accuracy ${pct(trainAcc)}, held-out accuracy ${pct(heldOutAcc)}`);
const [pos, neg] = predictClasses(
  classifier,
  [PROBES.positive, PROBES.negative].map((t) => ({ ids: encode(t), label: 0 })),
);
if (LABELS[pos ?? 0] !== "POSITIVE" || LABELS[neg ?? 1] !== "NEGATIVE") {
  throw new Error(
    `sentiment probes came out wrong: "${PROBES.positive}" -> ${LABELS[pos ?? 0]}, "${PROBES.negative}" -> ${LABELS[neg ?? 1]}`,
  );
}

const embedder = trainEmbedder(vocab.length, split.topics.length, train);
const report = evaluateEmbedder(embedder, split.topics.length, train, heldOut);
const [a, b] = PROBES.similar.map((t) => embed(embedder, encode(t)).u);
const far = embed(embedder, encode(PROBES.unrelated)).u;
console.log(
  `embedder: held-out nearest-centroid topic accuracy ${pct(report.topicAccuracy)}, mean cosine same topic ` +
    `${report.sameTopicCosine.toFixed(3)} vs other topics ${report.otherTopicCosine.toFixed(3)}; ` +
    `probe cos(similar) ${cosine(a as Float64Array, b as Float64Array).toFixed(3)} vs cos(unrelated) ${cosine(a as Float64Array, far).toFixed(3)}`,
);

const sentimentOnnx = classifierGraph(classifier);
const embedderOnnx = embedderGraph(embedder);
await checkOnnx(sentimentOnnx, embedderOnnx);

const bert = { model_type: "bert", vocab_size: vocab.length, max_position_embeddings: MAX_LENGTH, pad_token_id: 0 };
const files = {
  sentiment: {
    config: {
      ...bert,
      architectures: ["BertForSequenceClassification"],
      hidden_size: CLASSIFIER_SETTINGS.dim,
      id2label: Object.fromEntries(LABELS.map((l, i) => [String(i), l])),
      label2id: Object.fromEntries(LABELS.map((l, i) => [l, i])),
      edgeswarm: {
        architecture: "mean of word embeddings -> tanh layer -> logits",
        trained_on: "models/data/sentiment.tsv (every 5th line held out)",
        settings: CLASSIFIER_SETTINGS,
        train_accuracy: round(trainAcc),
        held_out_accuracy: round(heldOutAcc),
      },
    },
    onnx: sentimentOnnx,
  },
  embedder: {
    config: {
      ...bert,
      architectures: ["BertModel"],
      hidden_size: EMBEDDER_SETTINGS.out,
      edgeswarm: {
        architecture: "projected word embeddings -> masked mean -> L2 normalisation (sentence_embedding)",
        trained_on: "models/data/sentiment.tsv: cosine softmax towards topic and sentiment proxies",
        settings: EMBEDDER_SETTINGS,
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

/** Loads both files in onnxruntime-node and checks they compute what the float64 weights do. */
async function checkOnnx(sentimentBytes: Uint8Array, embedderBytes: Uint8Array): Promise<void> {
  const texts = split.heldOut.map((e) => e.text);
  const enc = tokenizer(texts, { padding: true, truncation: true, max_length: MAX_LENGTH, return_tensor: false });
  const rows = enc.input_ids as number[][];
  const shape = [rows.length, rows[0]?.length ?? 0];
  const feeds = {
    input_ids: new ort.Tensor("int64", BigInt64Array.from(rows.flat().map(BigInt)), shape),
    attention_mask: new ort.Tensor(
      "int64",
      BigInt64Array.from((enc.attention_mask as number[][]).flat().map(BigInt)),
      shape,
    ),
  };
  const sentiment = await ort.InferenceSession.create(sentimentBytes);
  const logits = (await sentiment.run(feeds)).logits?.data as Float32Array;
  const expected = predictClasses(classifier, heldOut);
  const mismatched = expected.filter(
    (p, i) => p !== ((logits[i * 2 + 1] as number) > (logits[i * 2] as number) ? 1 : 0),
  );
  if (mismatched.length > 0)
    throw new Error(`ONNX sentiment disagrees with training on ${mismatched.length} sentences`);
  const embedding = await ort.InferenceSession.create(embedderBytes);
  const vectors = (await embedding.run(feeds)).sentence_embedding?.data as Float32Array;
  const D = EMBEDDER_SETTINGS.out;
  heldOut.forEach((e, i) => {
    const c = cosine(embed(embedder, e.ids).u, vectors.subarray(i * D, (i + 1) * D));
    if (!(c > 0.9999)) throw new Error(`ONNX embedder disagrees with training on "${texts[i]}" (cosine ${c})`);
  });
  await sentiment.release();
  await embedding.release();
  console.log("onnx: both models load in onnxruntime-node and agree with the trained weights on the held-out set");
}

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
