// Figures for the bundled models, measured on the exported ONNX files in onnxruntime-node through the same
// tokenizer code the runners use: classifier accuracy, and for the embedder paraphrase ranking on
// models/data/paraphrases.tsv, nearest-centroid topic accuracy and cosine within / across topics.
// Called by scripts/build-models.ts.
import * as ort from "onnxruntime-node";
import { encodeBatch, type TextTokenizer } from "../../shared/tasks/tokenizer.ts";
import type { Example } from "./dataset.ts";

/** Sentences the build checks the models against; the conformance suite asks the same of every runtime. */
export const PROBES = {
  positive: "I love this",
  negative: "this is terrible",
  similar: ["the pizza was delicious", "this pasta tastes amazing"],
  unrelated: "the flight was delayed for hours",
} as const;

export interface Triple {
  anchor: string;
  paraphrase: string;
  unrelated: string;
}

export function parseTriples(tsv: string): Triple[] {
  const [header, ...lines] = tsv.split("\n").filter((line) => line.trim() !== "");
  if (header !== "anchor\tparaphrase\tunrelated") throw new Error(`paraphrases header is ${header}`);
  return lines.map((line, i) => {
    const [anchor, paraphrase, unrelated, extra] = line.split("\t");
    if (!anchor || !paraphrase || !unrelated || extra !== undefined)
      throw new Error(`paraphrases line ${i + 2} is not three sentences: ${line}`);
    return { anchor, paraphrase, unrelated };
  });
}

/** Runs `texts` through the model in batches of 64, as the runners feed it (padded to the longest in a batch). */
export async function runTexts(
  session: ort.InferenceSession,
  tokenizer: TextTokenizer,
  texts: readonly string[],
  output: string,
): Promise<Float32Array[]> {
  const rows: Float32Array[] = [];
  for (let start = 0; start < texts.length; start += 64) {
    const { columns, batch, sequence } = await encodeBatch(tokenizer, texts.slice(start, start + 64), 128);
    const feeds: Record<string, ort.Tensor> = {};
    for (const name of session.inputNames) {
      feeds[name] = new ort.Tensor("int64", BigInt64Array.from((columns[name] ?? []).map(BigInt)), [batch, sequence]);
    }
    const result = (await session.run(feeds))[output];
    if (!result) throw new Error(`the model has no ${output} output`);
    const data = result.data as Float32Array;
    const width = data.length / batch;
    for (let r = 0; r < batch; r++) rows.push(data.slice(r * width, (r + 1) * width));
  }
  return rows;
}

export async function accuracy(session: ort.InferenceSession, tokenizer: TextTokenizer, examples: readonly Example[]) {
  const logits = await runTexts(
    session,
    tokenizer,
    examples.map((e) => e.text),
    "logits",
  );
  return examples.filter((e, i) => argmax(logits[i] as Float32Array) === e.label).length / examples.length;
}

export function argmax(v: Float32Array): number {
  return v.indexOf(Math.max(...v));
}

export function cosine(a: Float32Array, b: Float32Array): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += (a[i] as number) * (b[i] as number);
    na += (a[i] as number) ** 2;
    nb += (b[i] as number) ** 2;
  }
  return dot / Math.sqrt(na * nb);
}

export async function embedderReport(
  session: ort.InferenceSession,
  tokenizer: TextTokenizer,
  topics: readonly string[],
  train: readonly Example[],
  heldOut: readonly Example[],
  triples: readonly Triple[],
) {
  const vectors = (texts: readonly string[]) => runTexts(session, tokenizer, texts, "sentence_embedding");
  const flat = triples.flatMap((t) => [t.anchor, t.paraphrase, t.unrelated]);
  const tv = await vectors(flat);
  const ranked = triples.filter((_, i) => {
    const [a, p, u] = tv.slice(i * 3, i * 3 + 3) as [Float32Array, Float32Array, Float32Array];
    return cosine(a, p) > cosine(a, u);
  }).length;
  const topical = (list: readonly Example[]) => list.filter((e) => topics.includes(e.topic));
  const centroids: Float32Array[] = topics.map(() => new Float32Array(0));
  const trainTopical = topical(train);
  for (const [i, v] of (await vectors(trainTopical.map((e) => e.text))).entries()) {
    const t = topics.indexOf((trainTopical[i] as Example).topic);
    const c = centroids[t]?.length ? (centroids[t] as Float32Array) : new Float32Array(v.length);
    for (let d = 0; d < v.length; d++) c[d] = (c[d] as number) + (v[d] as number);
    centroids[t] = c;
  }
  const probes = topical(heldOut);
  const pv = await vectors(probes.map((e) => e.text));
  const topicHits = probes.filter((e, i) => {
    const scores = centroids.map((c) => cosine(pv[i] as Float32Array, c));
    return scores.indexOf(Math.max(...scores)) === topics.indexOf(e.topic);
  }).length;
  const same: number[] = [];
  const other: number[] = [];
  for (let a = 0; a < probes.length; a++) {
    for (let b = a + 1; b < probes.length; b++) {
      const c = cosine(pv[a] as Float32Array, pv[b] as Float32Array);
      (probes[a]?.topic === probes[b]?.topic ? same : other).push(c);
    }
  }
  const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
  return {
    paraphraseRanking: ranked / triples.length,
    topicAccuracy: topicHits / probes.length,
    sameTopicCosine: mean(same),
    otherTopicCosine: mean(other),
  };
}
