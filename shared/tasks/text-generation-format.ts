// JSON mode and structured outputs (params.format "json_object" or "json_schema", OpenAI's response_format): before
// each pick, every token that cannot continue the reply as one JSON object the schema accepts (json-grammar.ts) is
// masked out, and once the object closes only an end-of-text token may come. The decode loop and the teacher-forced
// check both mask through shapeRow, so a donor's claim is held to the same rule. A token is judged by the text it adds after another token (a
// SentencePiece piece decoded alone loses its leading space); special tokens and bytes that end mid-character add
// none usable, so they never come in JSON mode.

import type { GenerationParams } from "../protocol/generation.ts";
import { type CompiledSchema, compileJsonSchema, spacedSchema } from "../protocol/json-schema.ts";
import { JSON_OBJECT, type JsonState, jsonDone, jsonFeed, jsonStart, jsonStateKey } from "./json-grammar.ts";
import type { Decode } from "./tokenizer.ts";

/** A tokenizer's texts, and the tokens allowed in each automaton state seen (most steps repeat one: in a string). */
interface Vocabulary {
  texts: readonly string[];
  /**
   * Each token's text as it reads after another token, bytes that are no whole character each a U+FFFD: how text
   * around a call's prefix is read, token by token. The prefix is ASCII, and decoding never merges an ASCII byte
   * into another character, so the prefix stands in these exactly where it stands in the reply's decoded text.
   * "" only for a token that writes nothing (a special one).
   */
  lossy: readonly string[];
  /**
   * `texts` and `lossy` as a reply's first token reads, decoded alone: a SentencePiece piece there loses its space
   * (`▁{` is the reply `{`), as the reply's decoded text has it.
   */
  first: readonly string[];
  firstLossy: readonly string[];
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
  const lossy = Array.from({ length: vocab }, (_, t) => {
    const both = decode([anchor, t], { skip_special_tokens: true });
    return both.startsWith(lead) ? both.slice(lead.length) : "";
  });
  const texts = lossy.map((text) => (plain(text) ? text : ""));
  const firstLossy = Array.from({ length: vocab }, (_, t) => alone(t));
  const first = firstLossy.map((text) => (plain(text) ? text : ""));
  const reach = [...lossy, ...firstLossy].reduce((most, t) => Math.max(most, t.length), 0);
  const v = { texts, lossy, first, firstLossy, reach, allowed: new Map<string, Uint8Array>() };
  vocabularies.set(decode, v);
  return v;
}

/** What a reply's format reads from its params. */
export type FormatParams = Pick<GenerationParams, "format" | "schema" | "json_spacing" | "json_markers">;

/** GenerationParams.json_markers: the text around the object (a model's tool-call tags), and whether text may replace it. */
export type JsonMarkers = NonNullable<GenerationParams["json_markers"]>;

/**
 * The schema a reply's format holds it to: any one object for json_object, params.schema compiled for
 * json_schema (compileJsonSchema keeps it). The protocol has compiled it before (GenerationParams), so it does not
 * fail here.
 */
export function replySchema(p: FormatParams): CompiledSchema {
  const schema = p.format === "json_schema" && p.schema !== undefined ? compileJsonSchema(p.schema) : JSON_OBJECT;
  return spacedAs(p.json_spacing === "spaced", schema);
}

/** `schema` written as a spaced reply's is (json_spacing "spaced"), or as it is. */
const spacedAs = (spaced: boolean | undefined, schema: CompiledSchema) => (spaced ? spacedSchema(schema) : schema);

/**
 * Where a reply stands under its format: before the markers' prefix is settled (`lead`, the text so far, which is
 * (whitespace, where the object is optional, and) then a proper prefix of it), free text (an optional object's reply that did not begin with the
 * prefix), in the object, in the suffix after it (`tail`), or ended (only end-of-text may come). null: the text is
 * no such reply.
 */
type Phase =
  /** `again`: after an object's suffix, where another may begin (json_markers.parallel) or the reply end. */
  | { k: "lead"; text: string; again?: boolean }
  /**
   * `tail`: with json_markers.after_text, the text's end that may begin the prefix (the longest that does, ""
   * for none), so a call may still come; without, free text to its end.
   */
  | { k: "free"; tail?: string }
  /** `text`: the object that stands instead of a call (json_markers.text_schema), ended by no suffix. */
  | { k: "json"; state: JsonState; text?: boolean }
  | { k: "tail"; text: string }
  | { k: "end" };

const FREE: Phase = { k: "free" };
const END: Phase = { k: "end" };

/** A reply may be free text instead of a call: optional markers without a text schema. */
const mayBeText = (m: JsonMarkers | undefined) => m?.optional === true && m.text_schema === undefined;

/** A call may begin after text too (json_markers.after_text). The edge reads replies by it too. */
export const afterText = (m: JsonMarkers | undefined) => m?.after_text === true && mayBeText(m);

/** The longest end of `text` that begins `prefix` without being all of it ("" for none). The edge's reader's too. */
export function prefixTail(text: string, prefix: string): string {
  for (let n = Math.min(text.length, prefix.length - 1); n > 0; n--) {
    if (text.endsWith(prefix.slice(0, n))) return text.slice(-n);
  }
  return "";
}

/**
 * Whether whitespace may come before the prefix: where the reply may be text, and between calls (a call the model
 * must make, or the text schema's object, begins at once, as JSON mode's does: no run of spaces under a mask).
 */
const spacedLead = (m: JsonMarkers | undefined, phase: { again?: boolean }) => phase.again === true || mayBeText(m);

const startPhase = (schema: CompiledSchema, m: JsonMarkers | undefined): Phase =>
  m ? { k: "lead", text: "" } : { k: "json", state: jsonStart(schema) };

const MAX_LEADING_SPACE = 64;
const LEADING_SPACE = new RegExp(`^[ \\t\\r\\n]{1,${MAX_LEADING_SPACE}}`);

/**
 * A reply's text where a call may begin: whitespace before the prefix is the model's own (a newline, or the space
 * a SentencePiece tokenizer's first piece reads with after another token), 64 characters of it at most: past them
 * the reply is text (between calls, only the next prefix or the end may come), so a reply is undecided for a few
 * tokens only. The edge reads replies by it too.
 */
export const callStart = (text: string) => text.replace(LEADING_SPACE, "");

/**
 * The phase after a token that adds `text` ("": one that adds no usable text: a special token, or a byte that ends
 * mid-character). A token may begin the object after the prefix's last characters and close it, but not go on
 * into the suffix: the object's last character ends its token.
 */
function step(schema: CompiledSchema, m: JsonMarkers | undefined, phase: Phase, text: string): Phase | null {
  switch (phase.k) {
    case "free":
      if (phase.tail === undefined || !afterText(m)) return FREE;
      // Read as the lossy texts have it (Vocabulary.lossy): a token that writes nothing leaves the text as it was.
      return text === "" ? phase : inText(schema, m as JsonMarkers, phase.tail + text);
    case "end":
      return null;
    case "lead": {
      const { prefix } = m as JsonMarkers;
      // Text may take the object's place only at the reply's start, where the object is optional.
      const free = m?.optional === true && !phase.again;
      // Nothing written yet that says: the reply's decoded text settles it (phaseAfter).
      if (text === "") return free && mayBeText(m) ? phase : null;
      const u = phase.text + text;
      const t = spacedLead(m, phase) ? callStart(u) : u;
      if (t.length < prefix.length && prefix.startsWith(t)) return { k: "lead", text: u, again: phase.again };
      if (!t.startsWith(prefix)) return free ? instead(schema, m as JsonMarkers, t) : null;
      return callFrom(schema, m, t.slice(prefix.length));
    }
    case "json": {
      const state = text === "" ? null : jsonFeed(phase.state, text);
      if (state === null) return null;
      if (!jsonDone(state)) return { k: "json", state, ...(phase.text ? { text: true } : {}) };
      if (phase.text) return END;
      return m && m.suffix !== "" ? { k: "tail", text: "" } : afterCall(m);
    }
    case "tail": {
      const { suffix } = m as JsonMarkers;
      const u = phase.text + text;
      if (text === "" || !suffix.startsWith(u)) return null;
      return u !== suffix ? { k: "tail", text: u } : afterCall(m as JsonMarkers);
    }
  }
}

/**
 * Text that may hold a call's prefix (json_markers.after_text), its last characters `text` as far as they may
 * begin one: the call from where the prefix is first whole, else text with the end that may begin it.
 */
function inText(schema: CompiledSchema, m: JsonMarkers, text: string): Phase | null {
  const at = text.indexOf(m.prefix);
  if (at < 0) return { k: "free", tail: prefixTail(text, m.prefix) };
  return callFrom(schema, m, text.slice(at + m.prefix.length));
}

/**
 * The object after a prefix, its first characters `rest`: none of them bytes of a character not yet whole (a
 * U+FFFD of the lossy texts), which no object's token carries (JSON's texts are whole characters).
 */
function callFrom(schema: CompiledSchema, m: JsonMarkers | undefined, rest: string): Phase | null {
  if (rest.includes("\uFFFD")) return null;
  const json: Phase = { k: "json", state: jsonStart(schema) };
  return rest === "" ? json : step(schema, m, json, rest);
}

/**
 * What a reply that did not begin with the prefix is: free text (that a call may still follow, with
 * json_markers.after_text), or the text schema's object from its start, spaced as the reply's `schema` is.
 */
function instead(reply: CompiledSchema, m: JsonMarkers, text: string): Phase | null {
  if (afterText(m)) return inText(reply, m, text);
  if (m.text_schema === undefined) return FREE;
  if (text.includes("\uFFFD")) return null;
  const schema = spacedAs(reply.spaced, compileJsonSchema(m.text_schema));
  return step(schema, undefined, { k: "json", state: jsonStart(schema), text: true }, text);
}

/** After an object and its suffix: another between the markers, or the end. */
const afterCall = (m: JsonMarkers | undefined): Phase => (m?.parallel ? { k: "lead", text: "", again: true } : END);

/** The phase after a whole text, read a character at a time (so the object's end is where its suffix begins). */
function readText(schema: CompiledSchema, m: JsonMarkers | undefined, text: string): Phase | null {
  let phase: Phase | null = startPhase(schema, m);
  for (const ch of text) {
    if (phase === null || (phase.k === "free" && phase.tail === undefined)) break;
    phase = step(schema, m, phase, ch);
  }
  return phase;
}

/**
 * Whether end-of-text may end a reply here: free text, an optional object's prefix not yet begun, or after a call
 * (its suffix and whitespace: not halfway into another's prefix).
 */
const mayEnd = (phase: Phase | null, m: JsonMarkers | undefined) =>
  phase !== null &&
  (phase.k === "free" ||
    phase.k === "end" ||
    (phase.k === "lead" && (phase.again ? callStart(phase.text) === "" : mayBeText(m))));

/** The phase after the first `count` generated tokens, kept per token array so a run feeds each token once. */
const phaseOf = new WeakMap<
  object,
  { count: number; schema: CompiledSchema; markers: JsonMarkers | undefined; phase: Phase | null }
>();

/**
 * Before the prefix is settled the phase is read from the reply's decoded text, as the edge and unfinishedReply
 * read it (a special token adds nothing there; bytes of one character count once it is whole); after, token by
 * token (a token's text as it reads after another).
 */
function phaseAfter(
  schema: CompiledSchema,
  m: JsonMarkers | undefined,
  v: Vocabulary,
  decode: Decode,
  generated: ArrayLike<number>,
  count: number,
): Phase | null {
  let known = phaseOf.get(generated);
  if (!known || known.count > count || known.schema !== schema || known.markers !== m) {
    known = { count: 0, schema, markers: m, phase: startPhase(schema, m) };
  }
  let phase = known.phase;
  for (let i = known.count; i < count && phase !== null; i++) {
    const token = generated[i] as number;
    const text = textsFor(v, phase, i === 0)[token] ?? "";
    // Between calls no token of no text may come, so token by token is exact there (and no re-read of the reply);
    // so it is in text a call may follow (the lossy texts).
    if (phase.k !== "lead" || phase.again || (text === "" && !mayBeText(m))) {
      phase = step(schema, m, phase, text);
      continue;
    }
    // The lead, a few tokens: read on the reply's decoded text, whose first piece reads as the reply begins
    // (a SentencePiece tokenizer's first space is dropped there), as the edge reads it.
    const reply = decode(
      Array.from({ length: i + 1 }, (_, j) => generated[j] as number),
      { skip_special_tokens: true },
    );
    phase = readText(schema, m, reply);
  }
  phaseOf.set(generated, { count, schema, markers: m, phase });
  return phase;
}

/**
 * What of a reply so far its stop strings are looked for in, so they cut text and never a call (nor a prefix that
 * may begin one), however its tokens split. "text": all of it but its last `held` characters, which may begin a
 * call (json_markers.after_text) and wait, neither sent nor searched, until that is settled; "undecided": it may
 * still become a call or be text, so none of it yet; "call": an object (a call, or JSON mode's) from character
 * `at`, so only what is before it. Without stop strings all of a reply is "text": nothing waits.
 */
export type StopScope = { k: "text"; held: number } | { k: "undecided" } | { k: "call"; at: number };

export function stopScope(p: FormatParams & { stop: readonly string[] }, text: string): StopScope {
  const m = p.json_markers;
  if (p.format === undefined || p.stop.length === 0) return { k: "text", held: 0 };
  if (!m || !mayBeText(m)) return { k: "call", at: 0 };
  const start = callStart(text);
  if (start.startsWith(m.prefix)) return { k: "call", at: 0 };
  if (m.prefix.startsWith(start)) return { k: "undecided" };
  if (!afterText(m)) return { k: "text", held: 0 };
  const at = text.indexOf(m.prefix);
  return at >= 0 ? { k: "call", at } : { k: "text", held: prefixTail(text, m.prefix).length };
}

/**
 * A lead's text as its allowed set depends on it where whitespace may come first: the rest after the whitespace,
 * and how much of callStart's MAX_LEADING_SPACE is left only as near as one token (`reach` characters) can tell.
 */
function spacedKey(text: string, reach: number): string {
  const rest = callStart(text);
  const left = MAX_LEADING_SPACE - (text.length - rest.length);
  return `${rest}\u0001${Math.min(left, reach + 1)}`;
}

/** The key an allowed-token set is kept under: the phase, and what of the format it turns on. */
function phaseKey(v: Vocabulary, schema: CompiledSchema, m: JsonMarkers | undefined, phase: Phase): string {
  switch (phase.k) {
    case "json":
      return jsonStateKey(phase.state, v.reach);
    case "free":
      // Text a call may follow: its end that may begin the prefix, and the object after it (a token may carry both).
      return `free\u0001${schema.id}\u0001${m?.prefix}\u0001${phase.tail}`;
    case "lead":
      // A token may carry the prefix's end into the object: the schema counts.
      // Where whitespace may come first it changes nothing the set depends on: keyed without it.
      // Text may follow a call there or not (after_text): what a token that turns the reply into text may write.
      return `lead\u0001${schema.id}\u0001${m?.text_schema === undefined ? "" : compileJsonSchema(m.text_schema).id}\u0001${m?.optional}\u0001${afterText(m)}\u0001${phase.again}\u0001${m?.prefix}\u0001${spacedLead(m, phase) ? spacedKey(phase.text, v.reach) : phase.text}`;
    default:
      return `${phase.k}\u0001${m?.suffix}\u0001${phase.k === "tail" ? phase.text : ""}`;
  }
}

/**
 * The tokens an allowed-token set of text a call may follow leaves out, by id: few (those that would write the
 * prefix into something else), so such text is masked by them alone, not by a pass over the vocabulary.
 */
const closedIn = new WeakMap<Uint8Array, Int32Array>();

/**
 * The texts a phase reads tokens by: around a call's prefix the lossy ones (Vocabulary.lossy), else whole ones; for
 * the reply's first token, as it reads decoded alone.
 */
function textsFor(v: Vocabulary, phase: Phase, first: boolean): readonly string[] {
  const lossy = phase.k === "lead" || phase.k === "free";
  if (first) return lossy ? v.firstLossy : v.first;
  return lossy ? v.lossy : v.texts;
}

/** Which tokens may follow a prefix in `phase` (1) or not (0): computed once per phase and kept. */
function allowedIn(
  v: Vocabulary,
  schema: CompiledSchema,
  m: JsonMarkers | undefined,
  phase: Phase,
  first: boolean,
): Uint8Array {
  const key = `${phaseKey(v, schema, m, phase)}${first ? "\u0001first" : ""}`;
  let allowed = v.allowed.get(key);
  if (allowed) {
    // Most recently used last, so the bound below lets the oldest go.
    v.allowed.delete(key);
    v.allowed.set(key, allowed);
    return allowed;
  }
  allowed = new Uint8Array(v.texts.length);
  const texts = textsFor(v, phase, first);
  for (let t = 0; t < v.texts.length; t++) {
    const text = texts[t] as string;
    // A token of no usable text is never part of the object; before an optional prefix is settled it may come.
    if (step(schema, m, phase, text) !== null) allowed[t] = 1;
  }
  if (phase.k === "free")
    closedIn.set(
      allowed,
      Int32Array.from(allowed.keys()).filter((t) => allowed[t] === 0),
    );
  if (v.allowed.size >= Math.min(4096, MAX_CACHED_BYTES / v.texts.length)) {
    v.allowed.delete(v.allowed.keys().next().value as string);
  }
  v.allowed.set(key, allowed);
  return allowed;
}

/**
 * Masks (to -Infinity, in place) the tokens of the row [from, from + vocab) that cannot follow the first
 * `position` generated tokens as a reply the format `p` accepts. A prefix that is not one (never from a run; a
 * claim is stopped at its first wrong token) leaves only end-of-text, as does a closed object (and its suffix).
 * Free text (json_markers.optional, a reply that did not begin with the prefix) is not masked, but where a call
 * may follow it (json_markers.after_text) no token may write the prefix into something other than a call.
 */
export function jsonMask(
  p: FormatParams,
  logits: Float32Array,
  from: number,
  vocab: number,
  eos: readonly number[],
  decode: Decode,
  generated: ArrayLike<number>,
  position: number,
): void {
  const v = vocabulary(decode, vocab);
  const schema = replySchema(p);
  const m = p.json_markers;
  const phase = phaseAfter(schema, m, v, decode, generated, position);
  if (phase?.k === "free" && phase.tail === undefined) return;
  const allowed = phase === null || phase.k === "end" ? undefined : allowedIn(v, schema, m, phase, position === 0);
  // Text a call may follow (end-of-text may come): only the tokens that would write the prefix wrongly go.
  const closed = allowed && closedIn.get(allowed);
  if (closed) {
    for (const t of closed) if (!eos.includes(t)) logits[from + t] = Number.NEGATIVE_INFINITY;
    return;
  }
  let open = 0;
  for (let t = 0; t < vocab; t++) {
    if (eos.includes(t)) continue;
    if (allowed?.[t] === 1) open++;
    else logits[from + t] = Number.NEGATIVE_INFINITY;
  }
  // Mid-object, end-of-text would cut it short; only a vocabulary with no way forward ends it so.
  if (open > 0 && !mayEnd(phase, m)) for (const e of eos) logits[from + e] = Number.NEGATIVE_INFINITY;
}

/**
 * Why a reply that ended at end-of-text is no object its format accepts, or null when it is one (or has no
 * format, or is free text its markers allow). The mask leaves only end-of-text where no token can continue the
 * object: a key or an enum value with a character the tokenizer only writes split across tokens (é, an emoji, on
 * a byte-level vocabulary), or nesting past what the automaton takes. Such a reply is not delivered: the item
 * answers this instead.
 */
export function unfinishedReply(p: FormatParams, text: string): string | null {
  if (p.format === undefined) return null;
  const m = p.json_markers;
  const phase = readText(replySchema(p), m, text);
  if (mayEnd(phase, m)) return null;
  const tail = text.length > 40 ? `…${text.slice(-40)}` : text;
  const after = `no token of this model can go on with the reply after ${JSON.stringify(tail)}`;
  if (m && phase?.k === "lead") return `${after}: it cannot write the call's prefix ${JSON.stringify(m.prefix)}`;
  if (m && phase?.k === "tail") return `${after}: it cannot write the call's suffix ${JSON.stringify(m.suffix)}`;
  return `${after} under its ${p.format === "json_schema" ? "schema" : "JSON format"}: a key or value with a character its tokenizer splits across tokens, or nesting past 16; change the schema`;
}
