// JSON mode (params.format "json_object", OpenAI's response_format): before each pick, every token that cannot
// continue the reply as one JSON object (json-prefix.ts) is masked out, and once the object closes only an
// end-of-text token may come. The decode loop and the teacher-forced check both mask through shapeRow, so a
// donor's claim is held to the same rule. A token is judged by the text it adds after another token (a
// SentencePiece piece decoded alone loses its leading space); special tokens and bytes that end mid-character add
// none usable, so they never come in JSON mode.
import { type JsonPrefixState, jsonDone, jsonFeed, jsonStart } from "./json-prefix.ts";
import type { Decode } from "./text-generation-sequence.ts";

/** A tokenizer's texts, and the tokens allowed in each automaton state seen (most steps repeat one: in a string). */
interface Vocabulary {
  texts: readonly string[];
  allowed: Map<string, Uint8Array>;
}

/** States whose allowed tokens are kept, per tokenizer; past it the cache starts again. */
const MAX_CACHED_STATES = 4096;

const vocabularies = new WeakMap<Decode, Vocabulary>();

const plain = (text: string) => text !== "" && !text.includes("\uFFFD");

/**
 * The tokenizer's vocabulary as JSON mode reads it, made once per tokenizer and kept: each token id's text as it
 * reads after another token (`decode([anchor, t])` less the anchor's own text), "" for one that adds no usable text.
 */
function vocabulary(decode: Decode, vocab: number): Vocabulary {
  const known = vocabularies.get(decode);
  if (known && known.texts.length === vocab) return known;
  const alone = (t: number) => decode([t], { skip_special_tokens: true });
  let anchor = 0;
  while (anchor < vocab && !plain(alone(anchor))) anchor++;
  const lead = alone(anchor);
  const texts = Array.from({ length: vocab }, (_, t) => {
    const both = decode([anchor, t], { skip_special_tokens: true });
    const text = both.startsWith(lead) ? both.slice(lead.length) : "";
    return plain(text) ? text : "";
  });
  const v = { texts, allowed: new Map<string, Uint8Array>() };
  vocabularies.set(decode, v);
  return v;
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

/** Which tokens may follow a prefix in `state` (1) or not (0): computed once per state and kept. */
function allowedIn(v: Vocabulary, state: JsonPrefixState): Uint8Array {
  const key = `${state.mode}|${state.key ? 1 : 0}|${state.left}|${state.rest}|${state.stack}`;
  let allowed = v.allowed.get(key);
  if (allowed) return allowed;
  allowed = new Uint8Array(v.texts.length);
  for (let t = 0; t < v.texts.length; t++) {
    const text = v.texts[t] as string;
    if (text !== "" && jsonFeed({ ...state }, text)) allowed[t] = 1;
  }
  if (v.allowed.size >= MAX_CACHED_STATES) v.allowed.clear();
  v.allowed.set(key, allowed);
  return allowed;
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
  const v = vocabulary(decode, vocab);
  const state = stateAfter(v.texts, generated, position);
  const allowed = state === null || jsonDone(state) ? undefined : allowedIn(v, state);
  let open = 0;
  for (let t = 0; t < vocab; t++) {
    if (eos.includes(t)) continue;
    if (allowed?.[t] === 1) open++;
    else logits[from + t] = Number.NEGATIVE_INFINITY;
  }
  // Mid-object, end-of-text would cut it short; only a vocabulary with no way forward ends it so.
  if (open > 0) for (const e of eos) logits[from + e] = Number.NEGATIVE_INFINITY;
}
