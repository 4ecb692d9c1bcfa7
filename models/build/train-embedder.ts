// Trains the bundled text embedder: projected mean of word embeddings, L2-normalised, pulled towards a
// learned proxy vector per topic (and, more weakly, per sentiment) by a cosine softmax (NormFace-style
// proxy metric learning). The proxies are dropped after training; cosine between outputs is what remains.
import { Adam, meanRows, param, scatterMean, softmax } from "./adam.ts";
import type { EmbedderWeights } from "./model-graphs.ts";
import { createRng, permutation, uniform } from "./prng.ts";

export interface EncodedSentence {
  ids: number[];
  /** Index into the topic list, or -1 for sentences without a subject (they train only the sentiment head). */
  topic: number;
  label: number;
}

export const EMBEDDER_SETTINGS = {
  seed: 7_919,
  dim: 64,
  out: 64,
  epochs: 60,
  batchSize: 16,
  lr: 0.01,
  weightDecay: 1e-4,
  /** Cosine-softmax temperature: cosines live in [-1, 1], so logits need scaling to become confident. */
  scale: 16,
  /** Sentiment matters less than subject: "the pizza was great" should sit nearer "the pizza was bad" than "the train was great". */
  sentimentWeight: 0.3,
} as const;

/** The normalised output vector, by the float64 weights. */
export function embed(
  w: EmbedderWeights,
  ids: readonly number[],
): { pooled: Float64Array; z: Float64Array; norm: number; u: Float64Array } {
  const pooled = meanRows(w.embeddings, w.dim, ids);
  const z = new Float64Array(w.out);
  for (let j = 0; j < w.out; j++) {
    let v = w.bias[j] as number;
    for (let i = 0; i < w.dim; i++) v += (pooled[i] as number) * (w.projection[i * w.out + j] as number);
    z[j] = v;
  }
  const norm = Math.max(Math.sqrt(z.reduce((a, v) => a + v * v, 0)), 1e-12);
  return { pooled, z, norm, u: z.map((v) => v / norm) };
}

export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
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

/** Accumulates the gradient of weight * cross-entropy(scale * cos(u, proxy_k)) into dU and the proxies' grads. */
function proxyLoss(
  proxies: { value: Float64Array; grad: Float64Array },
  count: number,
  u: Float64Array,
  target: number,
  weight: number,
  dU: Float64Array,
): void {
  const D = u.length;
  const scale = EMBEDDER_SETTINGS.scale;
  const unit: Float64Array[] = [];
  const norms: number[] = [];
  const logits = new Float64Array(count);
  for (let k = 0; k < count; k++) {
    const row = proxies.value.subarray(k * D, (k + 1) * D);
    const n = Math.max(Math.sqrt(row.reduce((a, v) => a + v * v, 0)), 1e-12);
    const c = row.map((v) => v / n);
    unit.push(c);
    norms.push(n);
    logits[k] = scale * c.reduce((a, v, i) => a + v * (u[i] as number), 0);
  }
  const probs = softmax(logits);
  for (let k = 0; k < count; k++) {
    const g = weight * ((probs[k] as number) - (k === target ? 1 : 0)) * scale;
    const c = unit[k] as Float64Array;
    let cDotU = 0;
    for (let i = 0; i < D; i++) {
      dU[i] = (dU[i] as number) + g * (c[i] as number);
      cDotU += (c[i] as number) * (u[i] as number);
    }
    // Back through the proxy's own normalisation: only the part of d/dc orthogonal to c moves it.
    for (let i = 0; i < D; i++) {
      const d = (g * ((u[i] as number) - (c[i] as number) * cDotU)) / (norms[k] as number);
      proxies.grad[k * D + i] = (proxies.grad[k * D + i] as number) + d;
    }
  }
}

export function trainEmbedder(vocab: number, topics: number, train: readonly EncodedSentence[]): EmbedderWeights {
  const s = EMBEDDER_SETTINGS;
  const rng = createRng(s.seed);
  const E = param(uniform(rng, vocab * s.dim, 0.1));
  const P = param(uniform(rng, s.dim * s.out, Math.sqrt(6 / (s.dim + s.out))));
  const B = param(new Float64Array(s.out));
  const topicProxies = param(uniform(rng, topics * s.out, 1));
  const sentimentProxies = param(uniform(rng, 2 * s.out, 1));
  const w: EmbedderWeights = { vocab, dim: s.dim, out: s.out, embeddings: E.value, projection: P.value, bias: B.value };
  const adam = new Adam([E, P, B, topicProxies, sentimentProxies], { lr: s.lr, weightDecay: s.weightDecay });

  for (let epoch = 0; epoch < s.epochs; epoch++) {
    const order = permutation(rng, train.length);
    for (let start = 0; start < order.length; start += s.batchSize) {
      const batch = order.slice(start, start + s.batchSize);
      adam.zeroGrad();
      for (const index of batch) {
        const example = train[index] as EncodedSentence;
        const { pooled, norm, u } = embed(w, example.ids);
        const dU = new Float64Array(s.out);
        if (example.topic >= 0) proxyLoss(topicProxies, topics, u, example.topic, 1, dU);
        proxyLoss(sentimentProxies, 2, u, example.label, s.sentimentWeight, dU);
        // Back through u = z / |z|.
        const uDotDu = u.reduce((a, v, i) => a + v * (dU[i] as number), 0);
        const dz = u.map((v, i) => ((dU[i] as number) - v * uDotDu) / norm);
        const dPooled = new Float64Array(s.dim);
        for (let i = 0; i < s.dim; i++) {
          let dp = 0;
          for (let j = 0; j < s.out; j++) {
            P.grad[i * s.out + j] = (P.grad[i * s.out + j] as number) + (pooled[i] as number) * (dz[j] as number);
            dp += (w.projection[i * s.out + j] as number) * (dz[j] as number);
          }
          dPooled[i] = dp;
        }
        for (let j = 0; j < s.out; j++) B.grad[j] = (B.grad[j] as number) + (dz[j] as number);
        scatterMean(E.grad, s.dim, example.ids, dPooled);
      }
      adam.update(1 / batch.length);
    }
  }
  return w;
}
