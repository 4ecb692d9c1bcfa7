// Whether a text is the start of one JSON object that a compiled schema (json-schema.ts) accepts, written compactly
// (RFC 8259 with no whitespace outside strings): the automaton behind JSON mode and structured outputs, which lets
// the sampler pick only the tokens that keep a reply such a prefix (text-generation-format.ts). With no blank space
// between tokens a model cannot stall in it, and every state has a way forward.
// A state is a set of threads (an anyOf or an enum is tried every way at once, and the texts that fail drop out),
// each an immutable stack of frames, so feeding one candidate token never copies more than it changes. Pure.
import { type CompiledSchema, compileJsonSchema, type SchemaNode } from "../protocol/json-schema.ts";

/** How deep objects and arrays may nest: a bound on the state, and on what a looping model can open. */
export const MAX_JSON_DEPTH = 16;
/** Threads a state keeps; a prefix read more ways than this keeps the first (each one still a valid reading). */
const MAX_THREADS = 64;

type Props = Extract<SchemaNode, { kind: "object" }>;
type Frame =
  /** A value of `node` starts with the next character. */
  | { f: "value"; node: SchemaNode }
  /** The rest of a literal (a key, an enum's value, true): its characters from `pos`. */
  | { f: "literal"; text: string; pos: number }
  /** In an object of named properties: those from `next` are still to come; "open" after '{', "comma" after ','. */
  | { f: "object"; node: Props; next: number; phase: "open" | "comma" | "after" }
  /** In an object of free keys: "colon" after a key. */
  | { f: "map"; values: SchemaNode; phase: "open" | "comma" | "colon" | "after" }
  | { f: "array"; node: Extract<SchemaNode, { kind: "array" }>; count: number; phase: "open" | "comma" | "after" }
  /** In a string: characters so far (counted up to what min and max need), `escape` 1 after '\\', 2-5 in \uXXXX. */
  | { f: "string"; min: number; max: number; length: number; escape: number }
  | { f: "number"; integer: boolean; part: NumberPart };
type NumberPart = "minus" | "zero" | "int" | "dot" | "frac" | "exp" | "expSign" | "expDigits";

/** A thread: frames innermost first; null once the root object has closed. */
type Stack = { top: Frame; rest: Stack; containers: number; key?: string } | null;

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
  for (let i = 0; i < text.length; i++) {
    const next: Stack[] = [];
    const seen = new Set<string>();
    const c = text.charCodeAt(i);
    for (const t of threads) {
      for (const out of step(t, c)) {
        const key = keyOf(out);
        if (seen.has(key) || next.length >= MAX_THREADS) continue;
        seen.add(key);
        next.push(out);
      }
    }
    if (next.length === 0) return null;
    threads = next;
  }
  return { schema: s.schema, threads };
}

/** A key equal for states that accept the same continuations (the mask keeps its allowed tokens by it). */
export function jsonStateKey(s: JsonState): string {
  return `${s.schema.id}|${s.threads.map(keyOf).join("|")}`;
}

function keyOf(t: Stack): string {
  if (t === null) return "$";
  if (t.key === undefined) t.key = `${frameKey(t.top)}/${keyOf(t.rest)}`;
  return t.key;
}

function frameKey(f: Frame): string {
  switch (f.f) {
    case "value":
      return `v${f.node.id}`;
    case "literal":
      return `l${f.pos}${JSON.stringify(f.text)}`;
    case "object":
      return `o${f.node.id}.${f.next}${f.phase}`;
    case "map":
      return `m${f.values.id}${f.phase}`;
    case "array":
      return `a${f.node.id}.${f.count}${f.phase}`;
    case "string":
      return `s${f.min}.${f.max}.${f.length}.${f.escape}`;
    case "number":
      return `n${f.integer ? "i" : "f"}${f.part}`;
  }
}

function push(rest: Stack, top: Frame): Stack {
  const container = top.f === "object" || top.f === "map" || top.f === "array";
  return { top, rest, containers: (rest?.containers ?? 0) + (container ? 1 : 0) };
}

/** A frame that replaces the top, or none: the value ended, and what holds it goes on. */
const swap = (t: NonNullable<Stack>, top: Frame): Stack => push(t.rest, top);

const QUOTE = 34;
const BACKSLASH = 92;
const COMMA = 44;
const isDigit = (c: number) => c >= 48 && c <= 57;
const isHex = (c: number) => isDigit(c) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);
const ESCAPES = new Set([...'"\\/bfnrt'].map((ch) => ch.charCodeAt(0)));

/** The threads `t` becomes after character `c` (none: `c` cannot come here). */
function step(t: Stack, c: number): Stack[] {
  if (t === null) return [];
  const f = t.top;
  switch (f.f) {
    case "value":
      return startValue(f.node, t.rest, c);
    case "literal":
      if (c !== f.text.charCodeAt(f.pos)) return [];
      return [f.pos + 1 === f.text.length ? t.rest : swap(t, { ...f, pos: f.pos + 1 })];
    case "object":
      return inObject(t, f, c);
    case "map":
      return inMap(t, f, c);
    case "array":
      return inArray(t, f, c);
    case "string":
      return inString(t, f, c);
    case "number":
      return inNumber(t, f, c);
  }
}

function startValue(node: SchemaNode, rest: Stack, c: number): Stack[] {
  switch (node.kind) {
    case "anyOf":
      return node.options.flatMap((o) => startValue(o, rest, c));
    case "literal":
      if (c !== node.text.charCodeAt(0)) return [];
      return [node.text.length === 1 ? rest : push(rest, { f: "literal", text: node.text, pos: 1 })];
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

function open(rest: Stack, frame: Frame): Stack[] {
  return (rest?.containers ?? 0) >= MAX_JSON_DEPTH ? [] : [push(rest, frame)];
}

function inObject(t: NonNullable<Stack>, f: Extract<Frame, { f: "object" }>, c: number): Stack[] {
  const left = f.node.props.slice(f.next);
  const requiredLeft = left.some((p) => p.required);
  if (f.phase === "after") {
    if (c === COMMA) return left.length > 0 ? [swap(t, { ...f, phase: "comma" })] : [];
    return c === 125 && !requiredLeft ? [t.rest] : [];
  }
  if (c === 125) return f.phase === "open" && !requiredLeft ? [t.rest] : [];
  if (c !== QUOTE) return [];
  // Any property up to the next required one may come next (the ones between are optional and skipped).
  const out: Stack[] = [];
  for (let j = f.next; j < f.node.props.length; j++) {
    const p = f.node.props[j] as Props["props"][number];
    const after = swap(t, { ...f, next: j + 1, phase: "after" });
    out.push(push(push(after, { f: "value", node: p.node }), { f: "literal", text: p.key, pos: 1 }));
    if (p.required) break;
  }
  return out;
}

function inMap(t: NonNullable<Stack>, f: Extract<Frame, { f: "map" }>, c: number): Stack[] {
  switch (f.phase) {
    case "open":
    case "comma":
      if (c === 125 && f.phase === "open") return [t.rest];
      if (c !== QUOTE) return [];
      return [
        push(swap(t, { ...f, phase: "colon" }), {
          f: "string",
          min: 0,
          max: Number.POSITIVE_INFINITY,
          length: 0,
          escape: 0,
        }),
      ];
    case "colon":
      return c === 58 ? [push(swap(t, { ...f, phase: "after" }), { f: "value", node: f.values })] : [];
    case "after":
      if (c === COMMA) return [swap(t, { ...f, phase: "comma" })];
      return c === 125 ? [t.rest] : [];
  }
}

function inArray(t: NonNullable<Stack>, f: Extract<Frame, { f: "array" }>, c: number): Stack[] {
  if (f.phase === "after") {
    if (c === COMMA) return f.count < f.node.max ? [swap(t, { ...f, phase: "comma" })] : [];
    return c === 93 && f.count >= f.node.min ? [t.rest] : [];
  }
  if (c === 93 && f.phase === "open") return f.node.min === 0 ? [t.rest] : [];
  if (f.count >= f.node.max) return [];
  return startValue(f.node.items, swap(t, { ...f, count: f.count + 1, phase: "after" }), c);
}

function inString(t: NonNullable<Stack>, f: Extract<Frame, { f: "string" }>, c: number): Stack[] {
  // Lengths count characters (code points, as JSON Schema does); past max - and min, when there is no max, the
  // count no longer changes what may come, so it stops there and the states stay few.
  const grown = (): Stack => {
    const cap = f.max === Number.POSITIVE_INFINITY ? f.min : f.max;
    return swap(t, { ...f, escape: 0, length: Math.min(f.length + 1, cap) });
  };
  if (f.escape === 1) {
    if (c === 117) return [swap(t, { ...f, escape: 5 })];
    return ESCAPES.has(c) ? [grown()] : [];
  }
  if (f.escape > 1) {
    if (!isHex(c)) return [];
    return [f.escape === 2 ? grown() : swap(t, { ...f, escape: f.escape - 1 })];
  }
  if (c === QUOTE) return f.length >= f.min ? [t.rest] : [];
  if (c < 0x20) return [];
  const full = f.max !== Number.POSITIVE_INFINITY && f.length >= f.max;
  if (c >= 0xdc00 && c <= 0xdfff) return [t]; // the second half of a character already counted
  if (full) return [];
  return c === BACKSLASH ? [swap(t, { ...f, escape: 1 })] : [grown()];
}

function inNumber(t: NonNullable<Stack>, f: Extract<Frame, { f: "number" }>, c: number): Stack[] {
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
      return step(t.rest, c);
    case "dot":
      return isDigit(c) ? to("frac") : [];
    case "frac":
      if (isDigit(c)) return to("frac");
      return exponent ? to("exp") : step(t.rest, c);
    case "exp":
      return c === 43 || c === 45 ? to("expSign") : isDigit(c) ? to("expDigits") : [];
    case "expSign":
      return isDigit(c) ? to("expDigits") : [];
    case "expDigits":
      return isDigit(c) ? to("expDigits") : step(t.rest, c);
  }
}
