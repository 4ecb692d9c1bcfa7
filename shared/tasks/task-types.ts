// What every task is given and returns: a session, the model's tokenizer and config.json, and one
// ItemResult per input. Tasks live in shared/ so the browser and the Node worker post-process identically.
import { z } from "zod";
import { ErrorCode } from "../protocol/errors.ts";
import type { ItemResult } from "../protocol/worker.ts";
import type { InferenceSession, RunOptions } from "../runner/model-runner.ts";
import type { TextTokenizer } from "./tokenizer.ts";

/** The parts of a Hugging Face config.json the tasks read; anything else in it is kept and ignored. */
export const ModelJsonConfig = z.looseObject({
  id2label: z.record(z.string(), z.string()).optional(),
});
export type ModelJsonConfig = z.infer<typeof ModelJsonConfig>;

export interface TaskContext {
  session: InferenceSession;
  /** Required by the text tasks. */
  tokenizer?: TextTokenizer;
  config?: ModelJsonConfig;
  /** Tokens kept per text; longer texts are truncated (ModelConfig.max_sequence_length). */
  maxSequenceLength: number;
  /** The most items the model's batches hold (ModelConfig.max_batch_size): text-generation decodes no more rows at once. */
  maxBatchSize?: number;
}

export interface Task {
  /** One result per input, in order. Bad inputs get an invalid_input error and stay out of the batch. */
  run(inputs: readonly unknown[], opts?: RunOptions): Promise<ItemResult[]>;
}

export function invalidInput(message: string): ItemResult {
  return { error: { code: ErrorCode.invalidInput, message, retryable: false } };
}

/** An item parsed into what the task runs, or a message saying what is wrong with it. */
export type Parsed<T> = { value: T } | { error: string };

/** Splits a batch into the items that parsed and per-item errors for the rest, keeping positions. */
export function partition<T>(
  inputs: readonly unknown[],
  parse: (input: unknown) => Parsed<T>,
): { results: (ItemResult | undefined)[]; good: { index: number; value: T }[] } {
  const results: (ItemResult | undefined)[] = new Array(inputs.length).fill(undefined);
  const good: { index: number; value: T }[] = [];
  inputs.forEach((input, index) => {
    const parsed = parse(input);
    if ("error" in parsed) results[index] = invalidInput(parsed.error);
    else good.push({ index, value: parsed.value });
  });
  return { results, good };
}

/** Fills the positions `partition` left open, in order, with the batch's results. */
export function merge(
  results: (ItemResult | undefined)[],
  indices: readonly number[],
  batch: readonly ItemResult[],
): ItemResult[] {
  indices.forEach((index, i) => {
    results[index] = batch[i];
  });
  return results.map(
    (r) => r ?? { error: { code: ErrorCode.internal, message: "no result for this item", retryable: true } },
  );
}

/** A short description of a value for error messages: its JSON type, not its (possibly huge) content. */
export function describeType(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "string") return "a string";
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}
