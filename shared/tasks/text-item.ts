// One input of the text tasks (text-classification, feature-extraction): a non-empty string no longer
// than the model can read, or what to fix. The workers' tasks and the edge's submit path
// (shared/tasks/input-checks.ts) call the same parseText. Pure: no tokenizer, nothing of a runtime.
import { describeType, type Parsed } from "./task-types.ts";

/** Characters allowed per token of max_sequence_length: 16 times what an English WordPiece token averages. */
export const CHARS_PER_TOKEN = 64;
/** Hard cap on characters per input, whatever the model's max_sequence_length: it bounds the tokenizer's work. */
export const MAX_TEXT_CHARS = 100_000;

/**
 * The longest input a model with this max_sequence_length takes. The tokenizer truncates at
 * max_sequence_length tokens, so a longer text is answered from its first tokens only; past
 * CHARS_PER_TOKEN characters a token, it is so far past that point that the input is refused instead.
 */
export function maxTextChars(maxSequenceLength: number): number {
  return Math.min(MAX_TEXT_CHARS, maxSequenceLength * CHARS_PER_TOKEN);
}

export function parseText(input: unknown, maxSequenceLength: number): Parsed<string> {
  if (typeof input !== "string") return { error: `input must be a non-empty string, got ${describeType(input)}` };
  if (input.trim() === "") {
    return { error: `input must be a non-empty string, got ${input === "" ? "an empty string" : "only whitespace"}` };
  }
  const most = maxTextChars(maxSequenceLength);
  if (input.length > most) {
    return {
      error: `input is ${input.length} characters; the most is ${most} (the model reads its first ${maxSequenceLength} tokens): shorten or split it`,
    };
  }
  return { value: input };
}
