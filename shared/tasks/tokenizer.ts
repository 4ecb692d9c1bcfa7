// Builds a tokenizer from the parsed tokenizer.json / tokenizer_config.json objects with @huggingface/tokenizers
// (the tokenizer transformers.js itself uses, without its runtime, onnxruntime-web or sharp), and encodes a
// batch as padded id rows. No filesystem, so the same code runs in a browser. The model loader calls
// createTokenizer; the text tasks call encodeBatch.
import { Tokenizer } from "@huggingface/tokenizers";

interface CallOptions {
  padding?: boolean;
  truncation?: boolean;
  max_length?: number;
  return_tensor: false;
}

/** What the text tasks need from a tokenizer: transformers.js's call signature with `return_tensor: false`. */
export type TextTokenizer = ((
  texts: string[],
  options: { padding: true; truncation: true; max_length: number; return_tensor: false },
) => Record<string, number[][]>) & { pad_token_id?: number | null; decode?: CallableTokenizer["decode"] };

/** transformers.js's call: one text gives rows of ids, a list gives a row per text; both with `return_tensor: false`. */
export interface CallableTokenizer {
  (text: string, options: CallOptions): Record<string, number[]>;
  (texts: string[], options: CallOptions): Record<string, number[][]>;
  pad_token_id: number | null;
  /**
   * Text of token ids (byte-level tokens that end mid-character decode to U+FFFD until completed). On a
   * byte-level tokenizer it also answers a token's own bytes (`decode.tokenBytes`; null for a special token).
   */
  decode: Decode;
}

export type Decode = ((ids: readonly number[], options?: { skip_special_tokens?: boolean }) => string) & {
  tokenBytes?: (id: number) => number[] | null;
};

/**
 * GPT-2's byte-level alphabet read back: each character of a byte-level token's string to the byte it stands for
 * (printable bytes stand for themselves; the others were moved to U+0100 on, in order).
 */
function byteLevelAlphabet(): Map<string, number> {
  const bytes: number[] = [];
  for (let b = 0; b < 256; b++) if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) bytes.push(b);
  const chars = [...bytes];
  let moved = 0;
  for (let b = 0; b < 256; b++) {
    if (!bytes.includes(b)) {
      bytes.push(b);
      chars.push(256 + moved++);
    }
  }
  return new Map(bytes.map((b, i) => [String.fromCodePoint(chars[i] as number), b]));
}

/** Longest stretch of tokenising between yields to the event loop, so lease heartbeats keep flowing. */
const SLICE_MS = 10;
const nextTick = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

/**
 * A tokenizer from objects already fetched and hash-checked, called as transformers.js's tokenizers are:
 * ids, attention mask and (where the post-processor gives them) token types, truncated as transformers.js
 * truncates (cut at max_length), padded on the right with the pad token.
 */
export function createTokenizer(tokenizerJson: unknown, tokenizerConfig: unknown): CallableTokenizer {
  if (!isObject(tokenizerJson) || !isObject(tokenizerConfig)) {
    throw new Error("tokenizer.json and tokenizer_config.json must each be a JSON object");
  }
  const tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
  const padToken = tokenizerConfig.pad_token;
  const padId = typeof padToken === "string" ? (tokenizer.token_to_id(padToken) ?? null) : null;
  const call = (input: string | string[], options: CallOptions) => {
    const texts = typeof input === "string" ? [input] : input;
    const max = (options.truncation && (options.max_length ?? Number(tokenizerConfig.model_max_length))) || Infinity;
    const encoded = texts.map((text) => {
      const e = tokenizer.encode(text, { return_token_type_ids: true });
      const columns: Record<string, number[]> = { input_ids: e.ids, attention_mask: e.attention_mask };
      if (e.token_type_ids) columns.token_type_ids = e.token_type_ids;
      for (const key of Object.keys(columns)) columns[key] = (columns[key] as number[]).slice(0, max);
      return columns;
    });
    const width = options.padding ? Math.max(0, ...encoded.map((c) => c.input_ids?.length ?? 0)) : 0;
    const out: Record<string, number[][]> = {};
    for (const columns of encoded) {
      for (const [key, row] of Object.entries(columns)) {
        const pad = key === "input_ids" ? (padId ?? 0) : 0;
        const rows = out[key] ?? [];
        rows.push(row.length < width ? [...row, ...new Array<number>(width - row.length).fill(pad)] : row);
        out[key] = rows;
      }
    }
    if (typeof input !== "string") return out;
    return Object.fromEntries(Object.entries(out).map(([key, rows]) => [key, rows[0] ?? []]));
  };
  // Spaces before punctuation are cleaned up only where the tokenizer's config asks (transformers' default since
  // 4.45; the library's is to clean): cleaned, a reply's decoded text could shrink as it grows (" " then "." read
  // "."), so streamed text would differ from the whole, and text read token by token from its decoded whole.
  const cleanUp = tokenizerConfig.clean_up_tokenization_spaces === true;
  const decode: Decode = (ids: readonly number[], options?: { skip_special_tokens?: boolean }) =>
    // The library refuses an empty list; a sequence that ends at once has no text.
    ids.length === 0 ? "" : tokenizer.decode([...ids], { clean_up_tokenization_spaces: cleanUp, ...options });
  const decoder = tokenizerJson.decoder;
  if (isObject(decoder) && decoder.type === "ByteLevel") {
    const alphabet = byteLevelAlphabet();
    const added = new Set(
      (Array.isArray(tokenizerJson.added_tokens) ? tokenizerJson.added_tokens : []).map((t) =>
        isObject(t) ? t.id : undefined,
      ),
    );
    decode.tokenBytes = (id) => {
      const piece = added.has(id) ? undefined : tokenizer.id_to_token(id);
      if (piece === undefined) return null;
      const bytes = [...piece].map((ch) => alphabet.get(ch));
      return bytes.every((b) => b !== undefined) ? (bytes as number[]) : null;
    };
  }
  return Object.assign(call, { pad_token_id: padId, decode }) as CallableTokenizer;
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
