// Whether a text is the start of one JSON object that a compiled schema (shared/protocol/json-schema.ts) accepts,
// written compactly (RFC 8259 with no whitespace outside strings) or, for a spaced schema (spacedSchema), with one
// space allowed after each `:` and `,` as Python's json.dumps writes it: the automaton behind JSON mode and structured
// outputs, which lets the sampler pick only the tokens that keep a reply such a prefix (text-generation-format.ts).
// A state is a set of threads (a value that may start several ways is tried each way at once, and the readings that
// fail drop out), each an immutable stack of frames, so feeding a candidate token copies no more than it changes.
// An enum's values, and the keys an object may write next, are one frame over a sorted list (the range of entries
// that share what was written), so they cost one thread however many there are. Pure.
import {
  type CompiledSchema,
  compileJsonSchema,
  MAX_JSON_DEPTH,
  type Property,
  type SchemaNode,
} from "../protocol/json-schema.ts";

export { MAX_JSON_DEPTH };

/**
 * Threads a state keeps. Compiling bounds the ways one value may start (SCHEMA_LIMITS.options); this bounds their
 * product across unresolved nesting, keeping the first (each kept one is a valid reading).
 */
const MAX_THREADS = 64;

type ObjectNode = Extract<SchemaNode, { kind: "object" }>;
type Literals = Extract<SchemaNode, { kind: "literals" }>;
type Frame =
  /** A value of `node` starts with the next character. */
  | { f: "value"; node: SchemaNode }
  /**
   * Within the literals [lo, hi) of `node`'s sorted texts, `pos` characters written (all of them share those);
   * `spaced`: a spaced schema's space was just written inside the literal (after its `:` or `,`).
   */
  | { f: "literal"; node: Literals; pos: number; lo: number; hi: number; spaced?: true }
  /** Within the keys [lo, hi) an object may write after property `next` (objectKeys), `pos` characters written. */
  | { f: "key"; node: ObjectNode; next: number; pos: number; lo: number; hi: number }
  /** In an object of named properties: those from `next` are still to come; "open" after '{', "comma" after ','. */
  | { f: "object"; node: ObjectNode; next: number; phase: "open" | "comma" | "after" }
  /** In an object of free keys: "colon" after a key. */
  | { f: "map"; values: SchemaNode; phase: "open" | "comma" | "colon" | "after" }
  | { f: "array"; node: Extract<SchemaNode, { kind: "array" }>; count: number; phase: "open" | "comma" | "after" }
  /**
   * In a string of `min` to `max` characters (code points), `length` so far; `escape` where an escape or a
   * character stands (ESCAPE).
   */
  | { f: "string"; min: number; max: number; length: number; escape: number }
  | { f: "number"; integer: boolean; part: NumberPart }
  /** After a `:` or `,` of a spaced schema: one space may come before what the frame under it takes. */
  | { f: "space" };
type NumberPart = "minus" | "zero" | "int" | "dot" | "frac" | "exp" | "expSign" | "expDigits";

/** A thread: frames innermost first; null once the root object has closed. Keys are computed once, when asked. */
type Stack = { top: Frame; rest: Stack; containers: number; exact?: string; near?: Map<number, string> } | null;

export interface JsonState {
  schema: CompiledSchema;
  threads: readonly Stack[];
}

/** JSON mode (json_object): any one object. */
export const JSON_OBJECT = compileJsonSchema({ type: "object" });

/** Before the first character: the reply must open the schema's root object. */
export function jsonStart(schema: CompiledSchema = JSON_OBJECT): JsonState {
  return { schema, threads: [push(null, { f: "value", node: schema.root })] };
}

/** Whether the reply is whole: the root object has closed, and nothing may follow. */
export function jsonDone(s: JsonState): boolean {
  return s.threads.includes(null);
}

/** The state after `text`, or null when `text` cannot continue the prefix. `s` itself is left as it was. */
export function jsonFeed(s: JsonState, text: string): JsonState | null {
  let threads = s.threads;
  const sp = s.schema.spaced === true;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const next = threads.length === 1 ? step(threads[0] as Stack, c, sp) : threads.flatMap((t) => step(t, c, sp));
    if (next.length === 0) return null;
    // Most prefixes read one way: only several readings are keyed, to drop the alike and keep MAX_THREADS.
    threads = next.length === 1 ? next : distinct(next);
  }
  return { schema: s.schema, threads };
}

function distinct(threads: readonly Stack[]): Stack[] {
  const seen = new Set<string>();
  const kept: Stack[] = [];
  for (const t of threads) {
    const key = exactKey(t);
    if (seen.has(key) || kept.length >= MAX_THREADS) continue;
    seen.add(key);
    kept.push(t);
  }
  return kept;
}

/**
 * A key equal for states that accept the same texts of up to `reach` characters: what a token of a vocabulary
 * whose longest text is `reach` may add (the mask keeps its allowed tokens by it). Counters (a string's length, an
 * array's items) enter it only as near their bounds as `reach` can tell, so a long string is one state throughout.
 */
export function jsonStateKey(s: JsonState, reach: number): string {
  return `${s.schema.id}|${reach}|${s.threads.map((t) => nearKey(t, reach)).join("|")}`;
}

function exactKey(t: Stack): string {
  if (t === null) return "$";
  if (t.exact === undefined) t.exact = `${frameKey(t.top, Number.POSITIVE_INFINITY)}/${exactKey(t.rest)}`;
  return t.exact;
}

function nearKey(t: Stack, reach: number): string {
  if (t === null) return "$";
  t.near ??= new Map();
  let key = t.near.get(reach);
  if (key === undefined) {
    key = `${frameKey(t.top, reach)}/${nearKey(t.rest, reach)}`;
    t.near.set(reach, key);
  }
  return key;
}

/** How far `count` is from `bound`, as far as `reach` characters can tell (beyond it: "far"). */
const gap = (bound: number, count: number, reach: number) => Math.min(Math.max(bound - count, -1), reach + 1);

function frameKey(f: Frame, reach: number): string {
  switch (f.f) {
    case "value":
      return `v${f.node.id}`;
    case "literal":
      return `l${f.node.id}.${f.pos}.${f.lo}.${f.hi}${f.spaced ? "_" : ""}`;
    case "key":
      return `k${f.node.id}.${f.next}.${f.pos}.${f.lo}.${f.hi}`;
    case "object":
      return `o${f.node.id}.${f.next}${f.phase}`;
    case "map":
      return `m${f.values.id}${f.phase}`;
    case "array":
      return `a${f.node.id}.${gap(f.node.min, f.count, reach)}.${gap(f.node.max, f.count, reach)}${f.phase}`;
    case "string":
      return `s${gap(f.min, f.length, reach)}.${gap(f.max, f.length, reach)}.${f.escape}`;
    case "number":
      return `n${f.integer ? "i" : "f"}${f.part}`;
    case "space":
      return "_";
  }
}

function push(rest: Stack, top: Frame): Stack {
  const container = top.f === "object" || top.f === "map" || top.f === "array";
  return { top, rest, containers: (rest?.containers ?? 0) + (container ? 1 : 0) };
}

/** A frame that replaces the top. */
const swap = (t: NonNullable<Stack>, top: Frame): Stack => push(t.rest, top);

const QUOTE = 34;
const BACKSLASH = 92;
const COMMA = 44;
const isDigit = (c: number) => c >= 48 && c <= 57;
const isHex = (c: number) => isDigit(c) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);
const isHigh = (c: number) => c >= 0xd800 && c <= 0xdbff;
const isLow = (c: number) => c >= 0xdc00 && c <= 0xdfff;
const ESCAPES = new Set([...'"\\/bfnrt'].map((ch) => ch.charCodeAt(0)));

const SPACE = 32;
const SPACE_FRAME: Frame = { f: "space" };

/** `t` with one space allowed next where the schema is spaced (`sp`). */
const spaced = (t: Stack, sp: boolean): Stack => (sp ? push(t, SPACE_FRAME) : t);

/** The threads `t` becomes after character `c` (none: `c` cannot come here); `sp`: the schema is spaced. */
function step(t: Stack, c: number, sp: boolean): Stack[] {
  if (t === null) return [];
  const f = t.top;
  switch (f.f) {
    case "value":
      return startValue(f.node, t.rest, c, sp);
    case "literal":
      return inList(t, f, f.node.texts, c, sp);
    case "key":
      return inList(
        t,
        f,
        objectKeys(f.node, f.next).map((k) => k.text),
        c,
        sp,
      );
    case "object":
      return inObject(t, f, c, sp);
    case "map":
      return inMap(t, f, c, sp);
    case "array":
      return inArray(t, f, c, sp);
    case "string":
      return inString(t, f, c);
    case "number":
      return inNumber(t, f, c, sp);
    case "space":
      // One at most: the frame under it takes no space of its own.
      return c === SPACE ? [t.rest] : step(t.rest, c, sp);
  }
}

function startValue(node: SchemaNode, rest: Stack, c: number, sp: boolean): Stack[] {
  switch (node.kind) {
    case "choice":
      // Flattened when compiled: none of these is a choice.
      return node.starts.flatMap((n) => startValue(n, rest, c, sp));
    case "literals": {
      const [lo, hi] = narrowed(node.texts, 0, node.texts.length, 0, c);
      return lo < hi ? [settle(rest, { f: "literal", node, pos: 1, lo, hi }, node.texts, sp)] : [];
    }
    case "object":
      return c === 123 ? open(rest, { f: "object", node, next: 0, phase: "open" }) : [];
    case "map":
      return c === 123 ? open(rest, { f: "map", values: node.values, phase: "open" }) : [];
    case "array":
      return c === 91 ? open(rest, { f: "array", node, count: 0, phase: "open" }) : [];
    case "string":
      return c === QUOTE ? [push(rest, { f: "string", min: node.min, max: node.max, length: 0, escape: 0 })] : [];
    case "number": {
      const part: NumberPart | undefined = c === 45 ? "minus" : c === 48 ? "zero" : isDigit(c) ? "int" : undefined;
      return part ? [push(rest, { f: "number", integer: node.integer, part })] : [];
    }
  }
}

/** The sub-range of sorted `texts` [lo, hi) whose character `pos` is `c`. */
function narrowed(texts: readonly string[], lo: number, hi: number, pos: number, c: number): [number, number] {
  let a = lo;
  while (a < hi && (texts[a] as string).charCodeAt(pos) !== c) a++;
  let b = a;
  while (b < hi && (texts[b] as string).charCodeAt(pos) === c) b++;
  return [a, b];
}

/**
 * A literal or key frame after its range narrowed: where the one text left is written whole, the frame is done and
 * what holds it goes on (for a key, the property's value comes next).
 */
function settle(
  rest: Stack,
  f: Extract<Frame, { f: "literal" | "key" }>,
  texts: readonly string[],
  sp: boolean,
): Stack {
  if (f.hi - f.lo === 1 && (texts[f.lo] as string).length === f.pos) {
    if (f.f === "literal") return rest;
    const { prop, j } = objectKeys(f.node, f.next)[f.lo] as { prop: Property; j: number };
    // A key's text ends in its colon: the value, after a space where the schema is spaced.
    const value = push(push(rest, { f: "object", node: f.node, next: j + 1, phase: "after" }), {
      f: "value",
      node: prop.node,
    });
    return spaced(value, sp);
  }
  return push(rest, f);
}

function inList(
  t: NonNullable<Stack>,
  f: Extract<Frame, { f: "literal" | "key" }>,
  texts: readonly string[],
  c: number,
  sp: boolean,
) {
  const out: Stack[] = [];
  // A text written whole, while longer ones share it (an enum of 1 and 12): the value may end here, and `c` is
  // what follows it. Keys end in a colon and never share one another's whole text.
  if ((texts[f.lo] as string).length === f.pos && f.f === "literal") out.push(...step(t.rest, c, sp));
  // An object or array the schema fixes (its text compact) is spaced as any other where the schema is spaced.
  if (sp && c === SPACE && f.f === "literal" && !f.spaced && separatorBefore(f.node, f.lo, f.pos)) {
    out.push(push(t.rest, { ...f, spaced: true }));
  }
  const [lo, hi] = narrowed(texts, f.lo, f.hi, f.pos, c);
  if (lo < hi) {
    const next = { ...f, pos: f.pos + 1, lo, hi };
    if (next.f === "literal") delete next.spaced;
    out.push(settle(t.rest, next, texts, sp));
  }
  return out;
}

/** Per literal text, the positions right after one of its `:` and `,` outside strings (where a space may come). */
const separators = new WeakMap<Literals, Uint8Array[]>();

/** Whether the character before `pos` of the literals from `lo` on (they share it) is a `:` or `,` outside strings. */
function separatorBefore(node: Literals, lo: number, pos: number): boolean {
  let marks = separators.get(node);
  if (!marks) {
    marks = node.texts.map((text) => {
      const after = new Uint8Array(text.length + 1);
      let inString = false;
      for (let i = 0; i < text.length; i++) {
        const ch = text[i];
        if (inString) {
          if (ch === "\\") i++;
          else if (ch === '"') inString = false;
        } else if (ch === '"') inString = true;
        else if (ch === ":" || ch === ",") after[i + 1] = 1;
      }
      return after;
    });
    separators.set(node, marks);
  }
  return marks[lo]?.[pos] === 1;
}

/** The keys an object may write after property `next` (those up to the next required one), sorted. */
function objectKeys(node: ObjectNode, next: number): { text: string; prop: Property; j: number }[] {
  let byNext = keysCache.get(node);
  if (!byNext) {
    byNext = new Map();
    keysCache.set(node, byNext);
  }
  let keys = byNext.get(next);
  if (!keys) {
    keys = [];
    for (let j = next; j < node.props.length; j++) {
      const prop = node.props[j] as Property;
      keys.push({ text: prop.key, prop, j });
      if (prop.required) break;
    }
    keys.sort((a, b) => (a.text < b.text ? -1 : a.text > b.text ? 1 : 0));
    byNext.set(next, keys);
  }
  return keys;
}
const keysCache = new WeakMap<ObjectNode, Map<number, { text: string; prop: Property; j: number }[]>>();

function open(rest: Stack, frame: Frame): Stack[] {
  return (rest?.containers ?? 0) >= MAX_JSON_DEPTH ? [] : [push(rest, frame)];
}

function inObject(t: NonNullable<Stack>, f: Extract<Frame, { f: "object" }>, c: number, sp: boolean): Stack[] {
  const left = f.node.props.length - f.next;
  const requiredLeft = f.node.props.some((p, j) => j >= f.next && p.required);
  if (f.phase === "after") {
    if (c === COMMA) return left > 0 ? [spaced(swap(t, { ...f, phase: "comma" }), sp)] : [];
    return c === 125 && !requiredLeft ? [t.rest] : [];
  }
  if (c === 125) return f.phase === "open" && !requiredLeft ? [t.rest] : [];
  const keys = objectKeys(f.node, f.next).map((k) => k.text);
  const [lo, hi] = narrowed(keys, 0, keys.length, 0, c);
  return lo < hi ? [settle(t.rest, { f: "key", node: f.node, next: f.next, pos: 1, lo, hi }, keys, sp)] : [];
}

function inMap(t: NonNullable<Stack>, f: Extract<Frame, { f: "map" }>, c: number, sp: boolean): Stack[] {
  switch (f.phase) {
    case "open":
    case "comma": {
      if (c === 125 && f.phase === "open") return [t.rest];
      if (c !== QUOTE) return [];
      const key: Frame = { f: "string", min: 0, max: Number.POSITIVE_INFINITY, length: 0, escape: 0 };
      return [push(swap(t, { ...f, phase: "colon" }), key)];
    }
    case "colon":
      return c === 58 ? [spaced(push(swap(t, { ...f, phase: "after" }), { f: "value", node: f.values }), sp)] : [];
    case "after":
      if (c === COMMA) return [spaced(swap(t, { ...f, phase: "comma" }), sp)];
      return c === 125 ? [t.rest] : [];
  }
}

function inArray(t: NonNullable<Stack>, f: Extract<Frame, { f: "array" }>, c: number, sp: boolean): Stack[] {
  if (f.phase === "after") {
    if (c === COMMA) return f.count < f.node.max ? [spaced(swap(t, { ...f, phase: "comma" }), sp)] : [];
    return c === 93 && f.count >= f.node.min ? [t.rest] : [];
  }
  if (c === 93 && f.phase === "open") return f.node.min === 0 ? [t.rest] : [];
  if (f.count >= f.node.max) return [];
  // Past both bounds' reach the count changes nothing: it stops at the minimum when there is no maximum.
  const count = f.node.max === Number.POSITIVE_INFINITY ? Math.min(f.count + 1, f.node.min) : f.count + 1;
  return startValue(f.node.items, swap(t, { ...f, count, phase: "after" }), c, sp);
}

/**
 * Where a string's escape or character stands: a \uXXXX escape's digits one by one; an escaped high surrogate
 * (\uD800 to \uDBFF) must be followed by an escaped low one (\uDC00 to \uDFFF), and the pair is one character, as
 * a raw pair is; a lone half of one is never written.
 */
const ESCAPE = {
  none: 0,
  backslash: 1,
  /** \u, then its digits to come: the first; the second (after a first "d", it says whether a surrogate starts). */
  hex1: 2,
  hex2: 15,
  hex2D: 3,
  hex3: 4,
  hex4: 5,
  /** The high surrogate's last two digits, then "\", "u", "d", a digit c to f and two more. */
  high3: 6,
  high4: 7,
  lowBackslash: 8,
  lowU: 9,
  lowD: 10,
  lowHex2: 11,
  lowHex3: 12,
  lowHex4: 13,
  /** After a raw high surrogate: its low one. */
  rawLow: 14,
} as const;

const between = (c: number, from: string, to: string) => c >= from.charCodeAt(0) && c <= to.charCodeAt(0);
const hexIn = (c: number, from: string, to: string) =>
  between(c, from, to) || between(c, from.toUpperCase(), to.toUpperCase());

function inString(t: NonNullable<Stack>, f: Extract<Frame, { f: "string" }>, c: number): Stack[] {
  // Lengths count characters (code points, as JSON Schema does). Past max - and min, when there is no max - the
  // count no longer changes what may come, so it stops there.
  const unbounded = f.max === Number.POSITIVE_INFINITY;
  if (f.escape === ESCAPE.none && c >= 0x20 && c !== QUOTE && c !== BACKSLASH && (c < 0xd800 || c > 0xdfff)) {
    // The common case, a plain character, without the closures below.
    if (!unbounded && f.length >= f.max) return [];
    const length = Math.min(f.length + 1, unbounded ? f.min : f.max);
    return [length === f.length ? t : swap(t, { ...f, length })];
  }
  const grown = (then: number = ESCAPE.none): Stack => {
    const cap = f.max === Number.POSITIVE_INFINITY ? f.min : f.max;
    return swap(t, { ...f, escape: then, length: Math.min(f.length + 1, cap) });
  };
  const to = (then: number): Stack => swap(t, { ...f, escape: then });
  const hex = (then: number) => (isHex(c) ? [to(then)] : []);
  switch (f.escape) {
    case ESCAPE.backslash:
      if (c === 117) return [to(ESCAPE.hex1)];
      return ESCAPES.has(c) ? [grown()] : [];
    case ESCAPE.hex1:
      return c === 100 || c === 68 ? [to(ESCAPE.hex2D)] : hex(ESCAPE.hex2);
    case ESCAPE.hex2:
      return hex(ESCAPE.hex3);
    case ESCAPE.hex2D:
      if (hexIn(c, "8", "b")) return [to(ESCAPE.high3)];
      return isDigit(c) && c <= 55 ? [to(ESCAPE.hex3)] : []; // d0 to d7; dc to df would be a lone low half
    case ESCAPE.hex3:
      return hex(ESCAPE.hex4);
    case ESCAPE.hex4:
      return isHex(c) ? [grown()] : [];
    case ESCAPE.high3:
      return hex(ESCAPE.high4);
    case ESCAPE.high4:
      return hex(ESCAPE.lowBackslash);
    case ESCAPE.lowBackslash:
      return c === BACKSLASH ? [to(ESCAPE.lowU)] : [];
    case ESCAPE.lowU:
      return c === 117 ? [to(ESCAPE.lowD)] : [];
    case ESCAPE.lowD:
      return c === 100 || c === 68 ? [to(ESCAPE.lowHex2)] : [];
    case ESCAPE.lowHex2:
      return hexIn(c, "c", "f") ? [to(ESCAPE.lowHex3)] : [];
    case ESCAPE.lowHex3:
      return hex(ESCAPE.lowHex4);
    case ESCAPE.lowHex4:
      return isHex(c) ? [grown()] : [];
    case ESCAPE.rawLow:
      return isLow(c) ? [to(ESCAPE.none)] : [];
  }
  if (c === QUOTE) return f.length >= f.min ? [t.rest] : [];
  if (c < 0x20 || isLow(c)) return [];
  if (f.max !== Number.POSITIVE_INFINITY && f.length >= f.max) return [];
  if (c === BACKSLASH) return [to(ESCAPE.backslash)];
  return [isHigh(c) ? grown(ESCAPE.rawLow) : grown()];
}

function inNumber(t: NonNullable<Stack>, f: Extract<Frame, { f: "number" }>, c: number, sp: boolean): Stack[] {
  const to = (part: NumberPart) => [swap(t, { ...f, part })];
  const exponent = c === 101 || c === 69;
  switch (f.part) {
    case "minus":
      return c === 48 ? to("zero") : isDigit(c) ? to("int") : [];
    case "zero":
    case "int":
      if (f.part === "int" && isDigit(c)) return to("int");
      if (!f.integer && c === 46) return to("dot");
      if (!f.integer && exponent) return to("exp");
      return step(t.rest, c, sp);
    case "dot":
      return isDigit(c) ? to("frac") : [];
    case "frac":
      if (isDigit(c)) return to("frac");
      return exponent ? to("exp") : step(t.rest, c, sp);
    case "exp":
      return c === 43 || c === 45 ? to("expSign") : isDigit(c) ? to("expDigits") : [];
    case "expSign":
      return isDigit(c) ? to("expDigits") : [];
    case "expDigits":
      return isDigit(c) ? to("expDigits") : step(t.rest, c, sp);
  }
}
