// feature-extraction: a string in, one L2-normalised vector out. Uses the model's own pooled output
// (sentence_embedding) when it has one, else mean-pools its token outputs over the attention mask, as
// sentence-transformers and transformers.js ({pooling: "mean", normalize: true}) do.
import type { ItemResult } from "../protocol/worker.ts";
import type { WireTensor } from "../runner/model-runner.ts";
import { merge, partition, type Task, type TaskContext } from "./task-types.ts";
import { pickOutput, requireTokenizer, textFeeds } from "./text-inputs.ts";
import { parseText } from "./text-item.ts";

export function createFeatureExtraction(ctx: TaskContext): Task {
  const tokenizer = requireTokenizer(ctx, "feature-extraction");
  return {
    async run(inputs) {
      const { results, good } = partition(inputs, (input) => parseText(input, ctx.maxSequenceLength));
      if (good.length === 0) return merge(results, [], []);
      const { feeds, mask, batch, sequence } = await textFeeds(
        ctx,
        tokenizer,
        good.map((g) => g.value),
      );
      const outputs = await ctx.session.run(feeds);
      const pooled = outputs.sentence_embedding;
      const vectors =
        pooled !== undefined
          ? rows(pooled, batch)
          : meanPool(pickOutput(outputs, "last_hidden_state", ctx.session.outputNames), mask, batch, sequence);
      const items: ItemResult[] = vectors.map((v) => ({ output: normalise(v) }));
      return merge(
        results,
        good.map((g) => g.index),
        items,
      );
    },
  };
}

/** A [batch, D] output as one array per row. */
function rows(t: WireTensor, batch: number): number[][] {
  const dim = t.shape[1];
  if (t.shape.length !== 2 || t.shape[0] !== batch || dim === undefined) {
    throw new Error(`expected ${t.name} of shape [${batch}, D], got [${t.shape.join(", ")}]`);
  }
  const data = t.data as number[];
  return Array.from({ length: batch }, (_, r) => data.slice(r * dim, (r + 1) * dim));
}

/** Mean over the tokens the mask keeps, so padding added for other items in the batch changes nothing. */
function meanPool(t: WireTensor, mask: number[], batch: number, sequence: number): number[][] {
  if (t.shape.length === 2) return rows(t, batch);
  const dim = t.shape[2];
  if (t.shape.length !== 3 || t.shape[0] !== batch || t.shape[1] !== sequence || dim === undefined) {
    throw new Error(`expected ${t.name} of shape [${batch}, ${sequence}, D], got [${t.shape.join(", ")}]`);
  }
  const data = t.data as number[];
  return Array.from({ length: batch }, (_, r) => {
    const sum = new Array<number>(dim).fill(0);
    let count = 0;
    for (let s = 0; s < sequence; s++) {
      if (!mask[r * sequence + s]) continue;
      count++;
      const offset = (r * sequence + s) * dim;
      for (let d = 0; d < dim; d++) sum[d] = (sum[d] as number) + (data[offset + d] as number);
    }
    return sum.map((v) => v / Math.max(count, 1));
  });
}

function normalise(v: number[]): number[] {
  const norm = Math.sqrt(v.reduce((a, x) => a + x * x, 0));
  return norm > 0 ? v.map((x) => x / norm) : v;
}
