// The two bundled architectures as ONNX graphs: a bag-of-embeddings sentiment classifier and a
// mean-pooled sentence embedder. Both take BERT's input_ids / attention_mask with dynamic batch and sequence axes.
import { OnnxGraph } from "./onnx-graph.ts";

export interface ClassifierWeights {
  vocab: number;
  dim: number;
  hidden: number;
  classes: number;
  /** [vocab, dim] word embeddings. */
  embeddings: Float64Array;
  /** [dim, hidden] and [hidden]. */
  w1: Float64Array;
  b1: Float64Array;
  /** [hidden, classes] and [classes]. */
  w2: Float64Array;
  b2: Float64Array;
}

export interface EmbedderWeights {
  vocab: number;
  dim: number;
  /** Size of the output vectors. */
  out: number;
  /** [vocab, dim] word embeddings. */
  embeddings: Float64Array;
  /** [dim, out] projection and [out] bias. */
  projection: Float64Array;
  bias: Float64Array;
}

const AXES = ["batch", "sequence"];

/** Gather the embeddings of input_ids; returns them with the float mask as [batch, sequence, 1]. */
function embedTokens(g: OnnxGraph, vocab: number, dim: number, embeddings: Float64Array) {
  const ids = g.input("input_ids", "int64", AXES);
  const mask = g.input("attention_mask", "int64", AXES);
  const table = g.floats("embeddings.word_embeddings.weight", [vocab, dim], embeddings);
  const embedded = g.node("Gather", [table, ids], { axis: 0 });
  const maskFloat = g.node("Cast", [mask], { to: 1 });
  const mask3 = g.node("Unsqueeze", [maskFloat, g.int64s("axis_last", [1], [-1])]);
  return { embedded, mask3 };
}

/** Sum of the unmasked rows over the sequence axis divided by their count: padding never changes a result. */
function maskedMean(g: OnnxGraph, values: string, mask3: string): string {
  const seqAxis = g.int64s("axis_sequence", [1], [1]);
  const summed = g.node("ReduceSum", [g.node("Mul", [values, mask3]), seqAxis], { keepdims: 0 });
  const count = g.node("ReduceSum", [mask3, seqAxis], { keepdims: 0 });
  // An all-padding row would divide by zero; clamp the count so it yields zeros instead of NaN.
  const safeCount = g.node("Max", [count, g.floats("min_count", [], [1e-9])]);
  return g.node("Div", [summed, safeCount]);
}

/** input_ids, attention_mask -> logits [batch, classes] (BertForSequenceClassification's output name). */
export function classifierGraph(w: ClassifierWeights): Uint8Array {
  const g = new OnnxGraph("sentiment");
  const { embedded, mask3 } = embedTokens(g, w.vocab, w.dim, w.embeddings);
  const pooled = maskedMean(g, embedded, mask3);
  const hidden = g.node("Tanh", [
    g.node("Add", [
      g.node("MatMul", [pooled, g.floats("pre_classifier.weight", [w.dim, w.hidden], w.w1)]),
      g.floats("pre_classifier.bias", [w.hidden], w.b1),
    ]),
  ]);
  const product = g.node("MatMul", [hidden, g.floats("classifier.weight", [w.hidden, w.classes], w.w2)]);
  g.node("Add", [product, g.floats("classifier.bias", [w.classes], w.b2)], {}, "logits");
  g.output("logits", "float32", ["batch", w.classes]);
  return g.encode("EdgeSwarm bundled sentiment classifier: mean of word embeddings, tanh layer, 2 logits.");
}

/**
 * input_ids, attention_mask -> last_hidden_state [batch, sequence, out] (per-token projections, so
 * transformers.js pooling works on it) and sentence_embedding [batch, out] (masked mean, L2-normalised).
 */
export function embedderGraph(w: EmbedderWeights): Uint8Array {
  const g = new OnnxGraph("embedder");
  const { embedded, mask3 } = embedTokens(g, w.vocab, w.dim, w.embeddings);
  const projected = g.node("MatMul", [embedded, g.floats("projection.weight", [w.dim, w.out], w.projection)]);
  const tokens = g.node("Add", [projected, g.floats("projection.bias", [w.out], w.bias)], {}, "last_hidden_state");
  g.output("last_hidden_state", "float32", ["batch", "sequence", w.out]);
  const pooled = maskedMean(g, tokens, mask3);
  const squares = g.node("ReduceSum", [g.node("Mul", [pooled, pooled]), g.int64s("axis_features", [1], [1])], {
    keepdims: 1,
  });
  const norm = g.node("Max", [g.node("Sqrt", [squares]), g.floats("min_norm", [], [1e-12])]);
  g.node("Div", [pooled, norm], {}, "sentence_embedding");
  g.output("sentence_embedding", "float32", ["batch", w.out]);
  return g.encode("EdgeSwarm bundled text embedder: projected word embeddings, masked mean, L2 normalisation.");
}
