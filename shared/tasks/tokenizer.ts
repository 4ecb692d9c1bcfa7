// Builds a @huggingface/transformers tokenizer from the parsed tokenizer.json / tokenizer_config.json
// objects (no filesystem, so the same code runs in a browser), and encodes a batch as padded id rows.
// The model loader calls createTokenizer; the text tasks call encodeBatch.
import * as transformers from "@huggingface/transformers";

/** What the text tasks need from a tokenizer: transformers.js's call signature with `return_tensor: false`. */
export type TextTokenizer = ((
  texts: string[],
  options: { padding: true; truncation: true; max_length: number; return_tensor: false },
) => Record<string, number[][]>) & { pad_token_id?: number | null };

/** Longest stretch of tokenising between yields to the event loop, so lease heartbeats keep flowing. */
const SLICE_MS = 10;
const nextTick = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

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

/**
 * Tokenises the texts, truncated at `maxLength`, and pads them to the longest in the batch. Text by
 * text, yielding every SLICE_MS: a batch of long texts can take seconds of synchronous work, and a
 * worker whose event loop is blocked that long cannot extend its lease.
 */
export async function encodeBatch(tokenizer: TextTokenizer, texts: string[], maxLength: number): Promise<EncodedBatch> {
  const rowsByKey: Record<string, number[][]> = {};
  let sliceStart = performance.now();
  for (const text of texts) {
    const encoded = tokenizer([text], { padding: true, truncation: true, max_length: maxLength, return_tensor: false });
    if (!encoded.input_ids?.[0]) throw new Error("tokenizer returned no input_ids");
    for (const [key, rows] of Object.entries(encoded)) {
      const row = rows[0];
      if (!row) throw new Error(`tokenizer returned no ${key} row`);
      const column = rowsByKey[key] ?? [];
      column.push(row);
      rowsByKey[key] = column;
    }
    if (performance.now() - sliceStart > SLICE_MS) {
      await nextTick();
      sliceStart = performance.now();
    }
  }
  const ids = rowsByKey.input_ids ?? [];
  const sequence = Math.max(0, ...ids.map((row) => row.length));
  const columns: Record<string, number[]> = {};
  for (const [key, rows] of Object.entries(rowsByKey)) {
    if (rows.length !== texts.length) throw new Error(`tokenizer returned ${key} for only some texts`);
    // Right padding, as BERT tokenizers pad: the pad token for ids, 0 for the mask and token types.
    const pad = key === "input_ids" ? (tokenizer.pad_token_id ?? 0) : 0;
    columns[key] = rows.flatMap((row) => [...row, ...new Array<number>(sequence - row.length).fill(pad)]);
  }
  return { columns, batch: texts.length, sequence };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
