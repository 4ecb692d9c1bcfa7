// Text inputs for the text tasks: validates each item, then tokenises the good ones as one padded batch
// and builds the session's feeds (input_ids, attention_mask, token_type_ids as the model declares).
import { z } from "zod";
import type { WireTensor } from "../runner/model-runner.ts";
import { describeType, type Parsed, type TaskContext } from "./task-types.ts";
import { encodeBatch, type TextTokenizer } from "./tokenizer.ts";

/** What a BERT-style tokenizer produces; a text model's inputs must be among these. */
export const TEXT_INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"] as const;

/** Hard cap on characters per item: truncation happens after tokenising, so this bounds the tokeniser's work. */
export const MAX_TEXT_CHARS = 100_000;

const TextInput = z
  .string()
  .max(MAX_TEXT_CHARS)
  .refine((s) => s.trim() !== "");

export function parseText(input: unknown): Parsed<string> {
  const parsed = TextInput.safeParse(input);
  if (parsed.success) return { value: parsed.data };
  if (typeof input !== "string") return { error: `input must be a non-empty string, got ${describeType(input)}` };
  if (input.length > MAX_TEXT_CHARS)
    return { error: `input is ${input.length} characters; the most is ${MAX_TEXT_CHARS}` };
  return { error: `input must be a non-empty string, got ${input === "" ? "an empty string" : "only whitespace"}` };
}

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
