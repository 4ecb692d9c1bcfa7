// Whether a text is the start of one JSON object (RFC 8259, written without whitespace outside strings): the
// automaton behind JSON mode (response_format json_object), which lets the sampler pick only the tokens that keep
// a reply such a prefix (text-generation-sampler.ts jsonMask). Compact on purpose: with no whitespace between
// tokens a model cannot stall in blank space, and every state has a one-character way forward.
// Pure; the state is a small object copied per candidate token.

/** How deep objects and arrays may nest: a bound on the state, and on what a looping model can open. */
export const MAX_JSON_DEPTH = 16;

/**
 * Where the automaton stands: "value" (a value must start: after ':' or ',' in an array), "arrayFirst" (after
 * '[': a value or ']'), "objectFirst" (after '{': a key or '}'), "key" (after ',' in an object), "colon" (after a
 * key), "after" (after a value: ',' or the closing bracket), "string", "escape", "hex" (inside \uXXXX, `left`
 * digits to go), "literal" (the rest of true, false or null in `rest`), the number's parts ("minus", "zero" for a
 * leading 0, "int", "dot", "frac", "exp", "expSign", "expDigits"), and "done" (the object closed: nothing follows).
 */
type Mode =
  | "value"
  | "arrayFirst"
  | "objectFirst"
  | "key"
  | "colon"
  | "after"
  | "string"
  | "escape"
  | "hex"
  | "literal"
  | "minus"
  | "zero"
  | "int"
  | "dot"
  | "frac"
  | "exp"
  | "expSign"
  | "expDigits"
  | "done";

export interface JsonPrefixState {
  mode: Mode;
  /** Open containers, innermost last: "{" or "[". */
  stack: string;
  /** In a string: whether it is a key (a ':' follows it) rather than a value. */
  key: boolean;
  left: number;
  rest: string;
}

/** Before the first character: the reply must open an object. */
export function jsonStart(): JsonPrefixState {
  return { mode: "value", stack: "", key: false, left: 0, rest: "" };
}

export function jsonDone(s: JsonPrefixState): boolean {
  return s.mode === "done";
}

/** `s` after `text`, in place; false (and `s` left part-way) when `text` cannot continue the prefix. */
export function jsonFeed(s: JsonPrefixState, text: string): boolean {
  for (let i = 0; i < text.length; i++) if (!step(s, text.charCodeAt(i))) return false;
  return true;
}

const isDigit = (c: number) => c >= 48 && c <= 57;
const isHex = (c: number) => isDigit(c) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);
const QUOTE = 34;
const BACKSLASH = 92;
const ESCAPES = new Set([...'"\\/bfnrt'].map((ch) => ch.charCodeAt(0)));
const LITERALS: Record<string, string> = { t: "rue", f: "alse", n: "ull" };

function step(s: JsonPrefixState, c: number): boolean {
  switch (s.mode) {
    case "value":
    case "arrayFirst":
      if (s.mode === "arrayFirst" && c === 93) return close(s, "[");
      return startValue(s, c);
    case "objectFirst":
      if (c === 125) return close(s, "{");
      return startKey(s, c);
    case "key":
      return startKey(s, c);
    case "colon":
      if (c !== 58) return false;
      s.mode = "value";
      return true;
    case "after":
      return after(s, c);
    case "string":
      if (c === QUOTE) {
        s.mode = s.key ? "colon" : "after";
        return true;
      }
      if (c === BACKSLASH) s.mode = "escape";
      return c >= 0x20;
    case "escape":
      if (c === 117) {
        s.mode = "hex";
        s.left = 4;
        return true;
      }
      s.mode = "string";
      return ESCAPES.has(c);
    case "hex":
      if (!isHex(c)) return false;
      if (--s.left === 0) s.mode = "string";
      return true;
    case "literal":
      if (c !== s.rest.charCodeAt(0)) return false;
      s.rest = s.rest.slice(1);
      if (s.rest === "") s.mode = "after";
      return true;
    case "minus":
      if (c === 48) s.mode = "zero";
      else if (isDigit(c)) s.mode = "int";
      else return false;
      return true;
    case "zero":
    case "int":
      if (s.mode === "int" && isDigit(c)) return true;
      if (c === 46) s.mode = "dot";
      else if (c === 101 || c === 69) s.mode = "exp";
      else return after(s, c);
      return true;
    case "dot":
      if (!isDigit(c)) return false;
      s.mode = "frac";
      return true;
    case "frac":
      if (isDigit(c)) return true;
      if (c === 101 || c === 69) {
        s.mode = "exp";
        return true;
      }
      return after(s, c);
    case "exp":
      if (c === 43 || c === 45) s.mode = "expSign";
      else if (isDigit(c)) s.mode = "expDigits";
      else return false;
      return true;
    case "expSign":
      if (!isDigit(c)) return false;
      s.mode = "expDigits";
      return true;
    case "expDigits":
      return isDigit(c) || after(s, c);
    case "done":
      return false;
  }
}

function open(s: JsonPrefixState, bracket: "{" | "["): boolean {
  if (s.stack.length >= MAX_JSON_DEPTH) return false;
  s.stack += bracket;
  s.mode = bracket === "{" ? "objectFirst" : "arrayFirst";
  return true;
}

function close(s: JsonPrefixState, bracket: "{" | "["): boolean {
  if (!s.stack.endsWith(bracket)) return false;
  s.stack = s.stack.slice(0, -1);
  s.mode = s.stack === "" ? "done" : "after";
  return true;
}

function startValue(s: JsonPrefixState, c: number): boolean {
  // The whole reply is one object (json_object), so only '{' may start it.
  if (s.stack === "") return c === 123 && open(s, "{");
  if (c === 123) return open(s, "{");
  if (c === 91) return open(s, "[");
  if (c === QUOTE) {
    s.mode = "string";
    s.key = false;
    return true;
  }
  if (c === 45) s.mode = "minus";
  else if (c === 48) s.mode = "zero";
  else if (isDigit(c)) s.mode = "int";
  else {
    const rest = LITERALS[String.fromCharCode(c)];
    if (rest === undefined) return false;
    s.mode = "literal";
    s.rest = rest;
  }
  return true;
}

function startKey(s: JsonPrefixState, c: number): boolean {
  if (c !== QUOTE) return false;
  s.mode = "string";
  s.key = true;
  return true;
}

/** After a value: ',' continues its container, a bracket closes it. */
function after(s: JsonPrefixState, c: number): boolean {
  const inner = s.stack[s.stack.length - 1];
  if (c === 44) {
    s.mode = inner === "{" ? "key" : "value";
    return true;
  }
  if (c === 125) return close(s, "{");
  if (c === 93) return close(s, "[");
  return false;
}
