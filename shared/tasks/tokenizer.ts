// Builds a @huggingface/transformers tokenizer from the parsed tokenizer.json / tokenizer_config.json
// objects (no filesystem, so the same code runs in a browser), and encodes a batch as padded id rows.
// The model loader calls createTokenizer; the text tasks call encodeBatch.
import * as transformers from "@huggingface/transformers";

/** What the text tasks need from a tokenizer: transformers.js's call signature with `return_tensor: false`. */
export type TextTokenizer = (
  texts: string[],
  options: { padding: true; truncation: true; max_length: number; return_tensor: false },
) => Record<string, number[][]>;

type TokenizerClass = new (tokenizerJson: unknown, tokenizerConfig: unknown) => transformers.PreTrainedTokenizer;

/**
 * Picks the class the way AutoTokenizer.from_pretrained does (tokenizer_config.tokenizer_class, minus
 * "Fast", among the classes transformers.js exports), but from objects already fetched and hash-checked.
 */
export function createTokenizer(tokenizerJson: unknown, tokenizerConfig: unknown): transformers.PreTrainedTokenizer {
  if (!isObject(tokenizerJson) || !isObject(tokenizerConfig)) {
    throw new Error("tokenizer.json and tokenizer_config.json must each be a JSON object");
  }
  const declared = tokenizerConfig.tokenizer_class;
  const name = typeof declared === "string" ? declared.replace(/Fast$/, "") : "PreTrainedTokenizer";
  const candidate = (transformers as Record<string, unknown>)[name];
  const cls: TokenizerClass =
    typeof candidate === "function" &&
    (candidate === transformers.PreTrainedTokenizer || candidate.prototype instanceof transformers.PreTrainedTokenizer)
      ? (candidate as TokenizerClass)
      : transformers.PreTrainedTokenizer;
  return new cls(tokenizerJson, tokenizerConfig);
}

export interface EncodedBatch {
  /** Row-major [batch, sequence] values per tokenizer output (input_ids, attention_mask, token_type_ids...). */
  columns: Record<string, number[]>;
  batch: number;
  sequence: number;
}

/** Tokenises every text in one call: padded to the longest in the batch, truncated at `maxLength`. */
export function encodeBatch(tokenizer: TextTokenizer, texts: string[], maxLength: number): EncodedBatch {
  const encoded = tokenizer(texts, { padding: true, truncation: true, max_length: maxLength, return_tensor: false });
  const ids = encoded.input_ids;
  if (!ids || ids.length !== texts.length) throw new Error("tokenizer returned no input_ids for the batch");
  const sequence = ids[0]?.length ?? 0;
  const columns: Record<string, number[]> = {};
  for (const [key, rows] of Object.entries(encoded)) {
    if (rows.some((row) => row.length !== sequence)) throw new Error(`tokenizer returned ragged ${key} rows`);
    columns[key] = rows.flat();
  }
  return { columns, batch: texts.length, sequence };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
