// text-classification: a string in, `[{label, score}]` out, every label, softmax scores, best first.
// Labels come from config.json's id2label, as transformers.js's pipeline reads them.
import type { ItemResult } from "../protocol/worker.ts";
import { merge, partition, type Task, type TaskContext } from "./task-types.ts";
import { pickOutput, requireTokenizer, textFeeds } from "./text-inputs.ts";
import { parseText } from "./text-item.ts";

export type LabelScore = { label: string; score: number };

export function createTextClassification(ctx: TaskContext): Task {
  const tokenizer = requireTokenizer(ctx, "text-classification");
  const id2label = ctx.config?.id2label ?? {};
  return {
    async run(inputs) {
      const { results, good } = partition(inputs, (input) => parseText(input, ctx.maxSequenceLength));
      if (good.length === 0) return merge(results, [], []);
      const { feeds, batch } = await textFeeds(
        ctx,
        tokenizer,
        good.map((g) => g.value),
      );
      const logits = pickOutput(await ctx.session.run(feeds), "logits", ctx.session.outputNames);
      const classes = logits.shape[1];
      if (logits.shape.length !== 2 || logits.shape[0] !== batch || classes === undefined) {
        throw new Error(`expected logits of shape [${batch}, classes], got [${logits.shape.join(", ")}]`);
      }
      const values = logits.data as number[];
      const rows: ItemResult[] = [];
      for (let row = 0; row < batch; row++) {
        const scores = softmax(values.slice(row * classes, (row + 1) * classes));
        const output: LabelScore[] = scores
          .map((score, i) => ({ label: id2label[String(i)] ?? `LABEL_${i}`, score }))
          .sort((a, b) => b.score - a.score);
        rows.push({ output });
      }
      return merge(
        results,
        good.map((g) => g.index),
        rows,
      );
    },
  };
}

function softmax(logits: number[]): number[] {
  const max = Math.max(...logits);
  const exps = logits.map((z) => Math.exp(z - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / sum);
}
