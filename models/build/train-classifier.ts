// Trains the bundled sentiment classifier in plain TypeScript: mean of word embeddings -> tanh layer ->
// 2 logits, cross-entropy, Adam on minibatches. Called by scripts/build-models.ts; deterministic for a seed.
import { Adam, meanRows, param, scatterMean, softmax } from "./adam.ts";
import type { ClassifierWeights } from "./model-graphs.ts";
import { createRng, permutation, uniform } from "./prng.ts";

export interface Encoded {
  /** Token ids from the real tokenizer, [CLS] and [SEP] included. */
  ids: number[];
  label: number;
}

export const CLASSIFIER_SETTINGS = {
  seed: 20_240_611,
  dim: 32,
  hidden: 32,
  epochs: 100,
  batchSize: 16,
  lr: 0.01,
  weightDecay: 1e-4,
} as const;

interface Forward {
  pooled: Float64Array;
  hidden: Float64Array;
  probs: Float64Array;
}

function forward(w: ClassifierWeights, ids: readonly number[]): Forward {
  const pooled = meanRows(w.embeddings, w.dim, ids);
  const hidden = new Float64Array(w.hidden);
  for (let j = 0; j < w.hidden; j++) {
    let a = w.b1[j] as number;
    for (let i = 0; i < w.dim; i++) a += (pooled[i] as number) * (w.w1[i * w.hidden + j] as number);
    hidden[j] = Math.tanh(a);
  }
  const logits = new Float64Array(w.classes);
  for (let k = 0; k < w.classes; k++) {
    let z = w.b2[k] as number;
    for (let j = 0; j < w.hidden; j++) z += (hidden[j] as number) * (w.w2[j * w.classes + k] as number);
    logits[k] = z;
  }
  return { pooled, hidden, probs: softmax(logits) };
}

/** The predicted class of each example, by the float64 weights (the build checks the ONNX file agrees). */
export function predictClasses(w: ClassifierWeights, data: readonly Encoded[]): number[] {
  return data.map(({ ids }) => {
    const { probs } = forward(w, ids);
    return (probs[1] as number) > (probs[0] as number) ? 1 : 0;
  });
}

export function accuracy(w: ClassifierWeights, data: readonly Encoded[]): number {
  const predicted = predictClasses(w, data);
  return predicted.filter((p, i) => p === data[i]?.label).length / data.length;
}

export type ClassifierSettings = { readonly [K in keyof typeof CLASSIFIER_SETTINGS]: number };

export function trainClassifier(
  vocab: number,
  train: readonly Encoded[],
  classes = 2,
  s: ClassifierSettings = CLASSIFIER_SETTINGS,
): ClassifierWeights {
  const rng = createRng(s.seed);
  const xavier = (fanIn: number, fanOut: number) => Math.sqrt(6 / (fanIn + fanOut));
  const E = param(uniform(rng, vocab * s.dim, 0.1));
  const W1 = param(uniform(rng, s.dim * s.hidden, xavier(s.dim, s.hidden)));
  const B1 = param(new Float64Array(s.hidden));
  const W2 = param(uniform(rng, s.hidden * classes, xavier(s.hidden, classes)));
  const B2 = param(new Float64Array(classes));
  const w: ClassifierWeights = {
    vocab,
    dim: s.dim,
    hidden: s.hidden,
    classes,
    embeddings: E.value,
    w1: W1.value,
    b1: B1.value,
    w2: W2.value,
    b2: B2.value,
  };
  const adam = new Adam([E, W1, B1, W2, B2], { lr: s.lr, weightDecay: s.weightDecay });

  for (let epoch = 0; epoch < s.epochs; epoch++) {
    const order = permutation(rng, train.length);
    for (let start = 0; start < order.length; start += s.batchSize) {
      const batch = order.slice(start, start + s.batchSize);
      adam.zeroGrad();
      for (const index of batch) {
        const example = train[index] as Encoded;
        const { pooled, hidden, probs } = forward(w, example.ids);
        const dz = probs.map((p, k) => p - (k === example.label ? 1 : 0));
        const da = new Float64Array(s.hidden);
        for (let j = 0; j < s.hidden; j++) {
          let dh = 0;
          for (let k = 0; k < classes; k++) {
            W2.grad[j * classes + k] = (W2.grad[j * classes + k] as number) + (hidden[j] as number) * (dz[k] as number);
            dh += (w.w2[j * classes + k] as number) * (dz[k] as number);
          }
          da[j] = dh * (1 - (hidden[j] as number) ** 2);
          B1.grad[j] = (B1.grad[j] as number) + (da[j] as number);
        }
        for (let k = 0; k < classes; k++) B2.grad[k] = (B2.grad[k] as number) + (dz[k] as number);
        const dPooled = new Float64Array(s.dim);
        for (let i = 0; i < s.dim; i++) {
          let dp = 0;
          for (let j = 0; j < s.hidden; j++) {
            W1.grad[i * s.hidden + j] =
              (W1.grad[i * s.hidden + j] as number) + (pooled[i] as number) * (da[j] as number);
            dp += (w.w1[i * s.hidden + j] as number) * (da[j] as number);
          }
          dPooled[i] = dp;
        }
        scatterMean(E.grad, s.dim, example.ids, dPooled);
      }
      adam.update(1 / batch.length);
    }
  }
  return w;
}
