// JSON mode (params.format "json_object", OpenAI's response_format): before each pick, every token that cannot
// continue the reply as one JSON object (json-prefix.ts) is masked out, and once the object closes only an
// end-of-text token may come. The decode loop and the teacher-forced check both mask through shapeRow, so a
// donor's claim is held to the same rule. Tokens are judged by their own text (special tokens and bytes that
// end mid-character have none usable, so they never come in JSON mode).
import { type JsonPrefixState, jsonDone, jsonFeed, jsonStart } from "./json-prefix.ts";
import type { Decode } from "./text-generation-sequence.ts";

const textsOf = new WeakMap<Decode, readonly string[]>();

/** Each token id's text alone, made once per tokenizer (a few thousand decodes) and kept. */
export function tokenTexts(decode: Decode, vocab: number): readonly string[] {
  const known = textsOf.get(decode);
  if (known && known.length === vocab) return known;
  const texts = Array.from({ length: vocab }, (_, t) => {
    const text = decode([t], { skip_special_tokens: true });
    return text.includes("\uFFFD") ? "" : text;
  });
  textsOf.set(decode, texts);
  return texts;
}

/** The automaton after the first `count` generated tokens, kept per token array so a run feeds each token once. */
const stateOf = new WeakMap<object, { count: number; state: JsonPrefixState | null }>();

function stateAfter(texts: readonly string[], generated: ArrayLike<number>, count: number): JsonPrefixState | null {
  let known = stateOf.get(generated);
  if (!known || known.count > count) known = { count: 0, state: jsonStart() };
  let state = known.state === null ? null : { ...known.state };
  for (let i = known.count; i < count && state !== null; i++) {
    if (!jsonFeed(state, texts[generated[i] as number] || "\u0000")) state = null;
  }
  stateOf.set(generated, { count, state });
  return state;
}

/**
 * Masks (to -Infinity, in place) the tokens of the row [from, from + vocab) that cannot follow the first
 * `position` generated tokens in JSON mode. A prefix that is not one (never from a run; a claim is stopped at its
 * first wrong token) leaves only end-of-text, as does a closed object.
 */
export function jsonMask(
  logits: Float32Array,
  from: number,
  vocab: number,
  eos: readonly number[],
  decode: Decode,
  generated: ArrayLike<number>,
  position: number,
): void {
  const texts = tokenTexts(decode, vocab);
  const state = stateAfter(texts, generated, position);
  const ending = state === null || jsonDone(state);
  let open = 0;
  for (let t = 0; t < vocab; t++) {
    if (eos.includes(t)) continue;
    const text = texts[t] as string;
    if (!ending && text !== "" && jsonFeed({ ...(state as JsonPrefixState) }, text)) open++;
    else logits[from + t] = Number.NEGATIVE_INFINITY;
  }
  // Mid-object, end-of-text would cut it short; only a vocabulary with no way forward ends it so.
  if (!ending && open > 0) for (const e of eos) logits[from + e] = Number.NEGATIVE_INFINITY;
}
