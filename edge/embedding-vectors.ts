// What the compatible embedding APIs (edge/routes/openai.ts, huggingface.ts) do to the workers' vectors:
// shorten them to `dimensions`, encode them as base64 float32, and estimate the tokens their texts cost.
// Pure; the coordinator holds no tokenizer, so token counts are an estimate (see estimateTokens).
import { ErrorCode } from "../shared/index.ts";
import { ApiError } from "./errors.ts";

/**
 * The first `dimensions` components scaled back to unit length, as OpenAI's text-embedding-3 models
 * shorten vectors. Sound for models trained for it (Matryoshka); for others it only keeps the vector's
 * length. More dimensions than the model gives is a 400: nothing honest pads a vector.
 */
export function shortenVectors(vectors: number[][], dimensions: number | undefined, model: string): number[][] {
  const size = vectors[0]?.length ?? 0;
  if (dimensions === undefined || dimensions === size) return vectors;
  if (dimensions > size) {
    throw new ApiError(
      400,
      ErrorCode.badRequest,
      `model "${model}" gives ${size}-dimensional embeddings; dimensions must be from 1 to ${size}`,
      { extra: { param: "dimensions" } },
    );
  }
  return vectors.map((v) => {
    const kept = v.slice(0, dimensions);
    const norm = Math.sqrt(kept.reduce((a, x) => a + x * x, 0));
    return norm > 0 ? kept.map((x) => x / norm) : kept;
  });
}

/** The vector as float32, little-endian (what the openai client decodes), in base64. */
export function float32Base64(vector: readonly number[]): string {
  const bytes = new Uint8Array(vector.length * 4);
  const view = new DataView(bytes.buffer);
  for (const [i, x] of vector.entries()) view.setFloat32(i * 4, x, true);
  // btoa takes a binary string; built in chunks so a long vector does not overflow the argument list.
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

/**
 * What BERT's basic tokenizer splits text into before WordPiece: each CJK ideograph, each run of letters,
 * marks and digits, each other non-space character (punctuation and symbols).
 */
const PIECE = /\p{Script=Han}|[^\s\p{P}\p{S}\p{Script=Han}]+|[\p{P}\p{S}]/gu;
/** [CLS] and [SEP], which BERT-style tokenizers add to every text. */
const SPECIAL_TOKENS = 2;

/**
 * An estimate of the tokens a BERT-style tokenizer makes of `text`: its words and punctuation marks, plus
 * the two special tokens, capped at the model's max_sequence_length (the workers truncate there). WordPiece
 * may split a word into several pieces, so for such tokenizers this is a lower bound, exact when every word
 * is in the vocabulary. The real tokenizer runs only on workers, whose answers do not report counts.
 */
export function estimateTokens(text: string, maxSequenceLength: number): number {
  const pieces = text.match(PIECE)?.length ?? 0;
  return Math.min(pieces + SPECIAL_TOKENS, maxSequenceLength);
}
