// JSON mode and structured outputs (params.format "json_object" or "json_schema", OpenAI's response_format): before
// each pick, every token that cannot continue the reply as one JSON object the schema accepts (json-grammar.ts) is
// masked out, and once the object closes only an end-of-text token may come. The decode loop and the teacher-forced
// check both mask through shapeRow, so a donor's claim is held to the same rule. A token is judged by the text it adds after another token (a
// SentencePiece piece decoded alone loses its leading space); special tokens and bytes that end mid-character add
// none usable, so they never come in JSON mode.

import { type CompiledSchema, compileJsonSchema } from "../protocol/json-schema.ts";
import { JSON_OBJECT, type JsonState, jsonDone, jsonFeed, jsonStart, jsonStateKey } from "./json-grammar.ts";
import type { Decode } from "./text-generation-sequence.ts";

/** A tokenizer's texts, and the tokens allowed in each automaton state seen (most steps repeat one: in a string). */
interface Vocabulary {
  texts: readonly string[];
  /** The longest text: how far one token can carry the automaton. */
  reach: number;
  allowed: Map<string, Uint8Array>;
}

/** Bytes of allowed-token sets kept per tokenizer (at most 4,096 states); past it the least recently used go. */
const MAX_CACHED_BYTES = 64 * 2 ** 20;

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
  const reach = texts.reduce((most, t) => Math.max(most, t.length), 0);
  const v = { texts, reach, allowed: new Map<string, Uint8Array>() };
  vocabularies.set(decode, v);
  return v;
}

/**
 * The schema a reply's format holds it to: any one object for json_object, params.schema compiled for
 * json_schema (compileJsonSchema keeps it). The protocol has compiled it before (GenerationParams), so it does not
 * fail here.
 */
export function replySchema(p: { format?: "json_object" | "json_schema"; schema?: object }): CompiledSchema {
  return p.format === "json_schema" && p.schema !== undefined ? compileJsonSchema(p.schema) : JSON_OBJECT;
}

/** The automaton after the first `count` generated tokens, kept per token array so a run feeds each token once. */
const stateOf = new WeakMap<object, { count: number; schema: CompiledSchema; state: JsonState | null }>();

function stateAfter(
  schema: CompiledSchema,
  texts: readonly string[],
  generated: ArrayLike<number>,
  count: number,
): JsonState | null {
  let known = stateOf.get(generated);
  if (!known || known.count > count || known.schema !== schema) known = { count: 0, schema, state: jsonStart(schema) };
  let state = known.state;
  for (let i = known.count; i < count && state !== null; i++) {
    state = jsonFeed(state, texts[generated[i] as number] || "\u0000");
  }
  stateOf.set(generated, { count, schema, state });
  return state;
}

/** Which tokens may follow a prefix in `state` (1) or not (0): computed once per state and kept. */
function allowedIn(v: Vocabulary, state: JsonState): Uint8Array {
  const key = jsonStateKey(state, v.reach);
  let allowed = v.allowed.get(key);
  if (allowed) {
    // Most recently used last, so the bound below lets the oldest go.
    v.allowed.delete(key);
    v.allowed.set(key, allowed);
    return allowed;
  }
  allowed = new Uint8Array(v.texts.length);
  for (let t = 0; t < v.texts.length; t++) {
    const text = v.texts[t] as string;
    if (text !== "" && jsonFeed(state, text) !== null) allowed[t] = 1;
  }
  if (v.allowed.size >= Math.min(4096, MAX_CACHED_BYTES / v.texts.length)) {
    v.allowed.delete(v.allowed.keys().next().value as string);
  }
  v.allowed.set(key, allowed);
  return allowed;
}

/**
 * Masks (to -Infinity, in place) the tokens of the row [from, from + vocab) that cannot follow the first
 * `position` generated tokens as a reply `schema` accepts. A prefix that is not one (never from a run; a claim is
 * stopped at its first wrong token) leaves only end-of-text, as does a closed object.
 */
export function jsonMask(
  schema: CompiledSchema,
  logits: Float32Array,
  from: number,
  vocab: number,
  eos: readonly number[],
  decode: Decode,
  generated: ArrayLike<number>,
  position: number,
): void {
  const v = vocabulary(decode, vocab);
  const state = stateAfter(schema, v.texts, generated, position);
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

/**
 * Why a reply that ended at end-of-text is no object its format accepts, or null when it is one (or has no
 * format). The mask leaves only end-of-text where no token can continue the object: a key or an enum value with a
 * character the tokenizer only writes split across tokens (é, an emoji, on a byte-level vocabulary), or nesting
 * past what the automaton takes. Such a reply is not delivered: the item answers this instead.
 */
export function unfinishedReply(
  p: { format?: "json_object" | "json_schema"; schema?: object },
  text: string,
): string | null {
  if (p.format === undefined) return null;
  const state = jsonFeed(jsonStart(replySchema(p)), text);
  if (state !== null && jsonDone(state)) return null;
  const tail = text.length > 40 ? `…${text.slice(-40)}` : text;
  return `no token of this model can go on with the reply under its ${p.format === "json_schema" ? "schema" : "JSON format"} after ${JSON.stringify(tail)}: a key or value with a character its tokenizer splits across tokens, or nesting past 16; change the schema`;
}
