// Text inputs for the text tasks: tokenises the items that parsed (text-item.ts) as one padded batch
// and builds the session's feeds (input_ids, attention_mask, token_type_ids as the model declares).
import type { WireTensor } from "../runner/model-runner.ts";
import type { TaskContext } from "./task-types.ts";
import { encodeBatch, type TextTokenizer } from "./tokenizer.ts";

/** What a BERT-style tokenizer produces; a text model's inputs must be among these. */
export const TEXT_INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"] as const;

export function requireTokenizer(ctx: TaskContext, task: string): TextTokenizer {
  if (!ctx.tokenizer) throw new Error(`${task} needs a tokenizer: list tokenizer and tokenizer_config in files`);
  const unknown = ctx.session.inputNames.filter((n) => !(TEXT_INPUT_NAMES as readonly string[]).includes(n));
  if (unknown.length > 0) {
    throw new Error(`${task} feeds ${TEXT_INPUT_NAMES.join(", ")}; the model also wants ${unknown.join(", ")}`);
  }
  return ctx.tokenizer;
}

export interface TextFeeds {
  feeds: Record<string, WireTensor>;
  /** [batch, sequence] attention mask, row-major, for pooling token outputs. */
  mask: number[];
  batch: number;
  sequence: number;
}

/** One padded batch for all `texts`; only the inputs the model declares are fed. */
export async function textFeeds(ctx: TaskContext, tokenizer: TextTokenizer, texts: string[]): Promise<TextFeeds> {
  const { columns, batch, sequence } = await encodeBatch(tokenizer, texts, ctx.maxSequenceLength);
  const mask = columns.attention_mask ?? new Array<number>(batch * sequence).fill(1);
  const feeds: Record<string, WireTensor> = {};
  for (const name of ctx.session.inputNames) {
    // BERT ignores token types for single sentences; a tokenizer that omits them means all zeros.
    const data = columns[name] ?? (name === "token_type_ids" ? new Array<number>(batch * sequence).fill(0) : undefined);
    if (data === undefined) throw new Error(`the tokenizer produced no ${name} for the model`);
    feeds[name] = { name, shape: [batch, sequence], datatype: "INT64", data };
  }
  return { feeds, mask, batch, sequence };
}

/** The named output, else the model's first one. */
export function pickOutput(
  outputs: Record<string, WireTensor>,
  preferred: string,
  names: readonly string[],
): WireTensor {
  const output = outputs[preferred] ?? outputs[names[0] ?? ""];
  if (!output) throw new Error(`the model returned no ${preferred} output`);
  return output;
}
