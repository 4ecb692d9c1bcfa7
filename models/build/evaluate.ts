// Held-out figures for the bundled models, printed by scripts/build-models.ts: classifier accuracy, and for
// the embedder nearest-centroid topic accuracy plus mean cosine within and across topics.
import type { EmbedderWeights } from "./model-graphs.ts";
import { cosine, type EncodedSentence, embed } from "./train-embedder.ts";

export interface EmbedderReport {
  topicAccuracy: number;
  sameTopicCosine: number;
  otherTopicCosine: number;
}

export function evaluateEmbedder(
  w: EmbedderWeights,
  topics: number,
  train: readonly EncodedSentence[],
  heldOut: readonly EncodedSentence[],
): EmbedderReport {
  const centroids = Array.from({ length: topics }, () => new Float64Array(w.out));
  for (const e of train) {
    if (e.topic < 0) continue;
    const { u } = embed(w, e.ids);
    const c = centroids[e.topic] as Float64Array;
    for (let i = 0; i < w.out; i++) c[i] = (c[i] as number) + (u[i] as number);
  }
  const probes = heldOut.filter((e) => e.topic >= 0).map((e) => ({ topic: e.topic, u: embed(w, e.ids).u }));
  let correct = 0;
  for (const p of probes) {
    const scores = centroids.map((c) => cosine(p.u, c));
    if (scores.indexOf(Math.max(...scores)) === p.topic) correct++;
  }
  let same = 0;
  let sameCount = 0;
  let other = 0;
  let otherCount = 0;
  for (let a = 0; a < probes.length; a++) {
    for (let b = a + 1; b < probes.length; b++) {
      const pa = probes[a] as (typeof probes)[number];
      const pb = probes[b] as (typeof probes)[number];
      const c = cosine(pa.u, pb.u);
      if (pa.topic === pb.topic) {
        same += c;
        sameCount++;
      } else {
        other += c;
        otherCount++;
      }
    }
  }
  return {
    topicAccuracy: correct / probes.length,
    sameTopicCosine: same / sameCount,
    otherTopicCosine: other / otherCount,
  };
}

/** Sentences the build checks the models against; the conformance suite asks the same of every runtime. */
export const PROBES = {
  positive: "I love this",
  negative: "this is terrible",
  similar: ["the pizza was delicious", "this pasta tastes amazing"],
  unrelated: "the flight was delayed for hours",
} as const;
