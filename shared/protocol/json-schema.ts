// The JSON Schemas structured outputs take (response_format json_schema, params.schema), compiled into the nodes
// shared/tasks/json-grammar.ts walks while a reply is written. The subset is what OpenAI's strict mode and vLLM's
// guided decoding serve in common; a keyword outside it, or one beside another that would change what it means
// (an enum's siblings), is refused with its place, so what the automaton lets through is what the schema accepts.
// A schema is also refused when its shortest reply nests deeper than the automaton goes, or when no finite reply
// exists. Called by GenerationParams' check of an item (a 4xx before anything is queued) and by the decode mask.

/** How deep objects and arrays may nest: a bound on the automaton's state, and on what a looping model can open. */
export const MAX_JSON_DEPTH = 16;

/** What a reply must hold at one place. "choice" is a $ref or an anyOf: `starts` are its other nodes, flattened. */
export type SchemaNode =
  | { kind: "object"; id: number; props: Property[] }
  | { kind: "map"; id: number; values: SchemaNode }
  | { kind: "array"; id: number; items: SchemaNode; min: number; max: number }
  | { kind: "string"; id: number; min: number; max: number }
  | { kind: "number"; id: number; integer: boolean }
  /** One of these JSON texts, sorted (an enum, a const, true, false, null). */
  | { kind: "literals"; id: number; texts: string[] }
  | { kind: "choice"; id: number; options: SchemaNode[]; starts: SchemaNode[] };

export interface Property {
  /** The key as written, quotes and colon included: `"name":`. */
  key: string;
  node: SchemaNode;
  required: boolean;
}

/** A compiled schema: its root node and a number no other compiled schema has (the mask's caches key on it). */
export interface CompiledSchema {
  id: number;
  root: SchemaNode;
  /**
   * Whether one space may follow each `:` and `,` outside strings (`{"a": 1, "b": [1, 2]}`, as Python's json.dumps
   * and so most models' training data write JSON); else none may (compact). See spacedSchema.
   */
  spaced?: true;
}

/**
 * Bounds on what one schema may ask, so a call cannot make the mask's work or state grow without end: its size,
 * its nodes, and the ways a value may start at one place (an anyOf's schemas, $refs and types flattened).
 */
export const SCHEMA_LIMITS = { chars: 32_768, nodes: 2_000, options: 64 } as const;

/** Words that describe and constrain nothing a reply is held to. */
const ANNOTATIONS = new Set([
  "title",
  "description",
  "default",
  "examples",
  "$schema",
  "$id",
  "$comment",
  "$defs",
  "definitions",
  "deprecated",
  "readOnly",
  "writeOnly",
]);
/** The served keywords by the type they constrain (a schema without `type` is of the type its keywords say). */
const KEYWORDS = {
  object: ["properties", "required", "additionalProperties"],
  array: ["items", "minItems", "maxItems"],
  string: ["minLength", "maxLength"],
} as const;
const SERVED = new Set(["type", "enum", "const", "anyOf", "nullable", "$ref", ...Object.values(KEYWORDS).flat()]);
const TYPES = ["object", "array", "string", "number", "integer", "boolean", "null"] as const;

export class SchemaProblem extends Error {}

let compiled = 0;

/** Schemas compiled, by their JSON text (the least recently used go past MAX_KEPT) and by the object sent. */
const byText = new Map<string, CompiledSchema>();
const byObject = new WeakMap<object, CompiledSchema>();
const MAX_KEPT = 64;

/**
 * The schema's nodes, or a SchemaProblem naming the place (`$.properties.age`) and what to change. Kept by the
 * schema's text, so the edge's checks, each worker's parse and the mask compile a schema once, and calls that send
 * the same schema share the mask's allowed-token sets (they key on the compiled schema's id).
 */
export function compileJsonSchema(schema: unknown): CompiledSchema {
  const object = typeof schema === "object" && schema !== null ? schema : undefined;
  const known = object && byObject.get(object);
  if (known) return known;
  const text = JSON.stringify(schema) ?? "";
  const out = byText.get(text) ?? compileFresh(schema, text);
  byText.delete(text);
  byText.set(text, out);
  if (byText.size > MAX_KEPT) byText.delete(byText.keys().next().value as string);
  if (object) byObject.set(object, out);
  return out;
}

const spacedOf = new WeakMap<CompiledSchema, CompiledSchema>();

/**
 * The same schema written with a space after each `:` and `,` allowed (GenerationParams.json_spacing "spaced"):
 * the same nodes under an id of its own, kept, so the mask's allowed-token sets for the two never mix.
 */
export function spacedSchema(schema: CompiledSchema): CompiledSchema {
  if (schema.spaced) return schema;
  let out = spacedOf.get(schema);
  if (!out) {
    out = { id: ++compiled, root: schema.root, spaced: true };
    spacedOf.set(schema, out);
  }
  return out;
}

function compileFresh(schema: unknown, text: string): CompiledSchema {
  if (text.length > SCHEMA_LIMITS.chars) {
    throw new SchemaProblem(`the schema is over ${SCHEMA_LIMITS.chars} characters as JSON: send a smaller one`);
  }
  const memo = new Map<object, SchemaNode>();
  let nodes = 0;
  const node: Numbering = (n) => {
    if (++nodes > SCHEMA_LIMITS.nodes) {
      throw new SchemaProblem(`the schema makes over ${SCHEMA_LIMITS.nodes} nodes: send a smaller one`);
    }
    return { ...n, id: nodes };
  };
  const literals = (values: unknown[], path: string) => {
    for (const v of values) finiteOnly(v, path);
    return node({ kind: "literals", texts: [...new Set(values.map((v) => JSON.stringify(v)))].sort() });
  };
  const choice = (options: SchemaNode[]) =>
    options.length === 1 ? (options[0] as SchemaNode) : node({ kind: "choice", options, starts: [] as SchemaNode[] });
  const any = node({ kind: "choice", options: [] as SchemaNode[], starts: [] as SchemaNode[] });
  any.options.push(
    node({ kind: "map", values: any }),
    node({ kind: "array", items: any, min: 0, max: Number.POSITIVE_INFINITY }),
    node({ kind: "string", min: 0, max: Number.POSITIVE_INFINITY }),
    node({ kind: "number", integer: false }),
    node({ kind: "literals", texts: ["false", "null", "true"] }),
  );

  const compile = (s: unknown, path: string): SchemaNode => {
    if (s === true || (isObject(s) && Object.keys(s).every((k) => ANNOTATIONS.has(k)))) return any;
    if (!isObject(s)) throw new SchemaProblem(`${path} must be a schema (an object, or true)`);
    const known = memo.get(s);
    if (known) return known;
    const keys = Object.keys(s).filter((k) => !ANNOTATIONS.has(k));
    const unserved = keys.find((k) => !SERVED.has(k));
    if (unserved !== undefined) {
      throw new SchemaProblem(
        `${path}.${unserved} is not served: structured outputs take type, properties, required, additionalProperties, items, minItems, maxItems, minLength, maxLength, enum, const, anyOf, nullable and $ref (to #/$defs)`,
      );
    }
    // enum, const, anyOf and $ref each say the whole of what a value may be; beside them only nullable, and type
    // narrowing an enum or a const. Anything else would be dropped, so it is refused.
    const whole = keys.filter((k) => k === "enum" || k === "const" || k === "anyOf" || k === "$ref");
    if (whole.length > 1) throw new SchemaProblem(`${path}: give one of ${whole.join(", ")}, not both`);
    const [only] = whole;
    const besides = only === "enum" || only === "const" ? ["type", "nullable"] : ["nullable"];
    const beside = keys.filter((k) => k !== only && !besides.includes(k));
    if (only !== undefined && beside.length > 0) {
      throw new SchemaProblem(
        `${path}: ${only} cannot stand beside ${beside.join(", ")}, which it would override; ${only === "anyOf" ? "put them in each of its schemas" : "leave them out"}`,
      );
    }
    let main: SchemaNode;
    if (s.$ref !== undefined) {
      const target = resolve(schema, s.$ref, path);
      // A placeholder first, so a schema that refers to itself (a tree) compiles to a loop of nodes.
      const ref = node({ kind: "choice", options: [] as SchemaNode[], starts: [] as SchemaNode[] });
      memo.set(s, ref);
      ref.options.push(compile(target, `${path}.$ref`));
      main = ref;
    } else if (s.const !== undefined || s.enum !== undefined) {
      const values = s.const !== undefined ? [s.const] : s.enum;
      if (!Array.isArray(values) || values.length === 0 || values.length > SCHEMA_LIMITS.options) {
        throw new SchemaProblem(`${path}.enum must list 1 to ${SCHEMA_LIMITS.options} values`);
      }
      const types = typesOf(s, path);
      const kept = types ? values.filter((v) => types.some((t) => ofType(v, t))) : values;
      if (kept.length === 0)
        throw new SchemaProblem(`${path}: no value of its ${s.const !== undefined ? "const" : "enum"} is of its type`);
      main = literals(kept, path);
    } else if (s.anyOf !== undefined) {
      if (!Array.isArray(s.anyOf) || s.anyOf.length === 0 || s.anyOf.length > SCHEMA_LIMITS.options) {
        throw new SchemaProblem(`${path}.anyOf must list 1 to ${SCHEMA_LIMITS.options} schemas`);
      }
      main = choice(s.anyOf.map((o, i) => compile(o, `${path}.anyOf[${i}]`)));
    } else {
      const types = typesOf(s, path) ?? implied(s, path);
      main = types ? choice(types.map((t) => typed(s, t, path))) : any;
    }
    const out = s.nullable === true ? choice([main, literals([null], path)]) : main;
    memo.set(s, out);
    return out;
  };

  const typed = (s: Record<string, unknown>, type: string, path: string): SchemaNode => {
    switch (type) {
      case "object":
        return objectNode(s, path);
      case "array": {
        const min = count(s.minItems, 0, `${path}.minItems`);
        const max = count(s.maxItems, Number.POSITIVE_INFINITY, `${path}.maxItems`);
        if (min > max) throw new SchemaProblem(`${path}: minItems is over maxItems`);
        const items = s.items === undefined ? any : compile(s.items, `${path}.items`);
        return node({ kind: "array", items, min, max });
      }
      case "string": {
        const min = count(s.minLength, 0, `${path}.minLength`);
        const max = count(s.maxLength, Number.POSITIVE_INFINITY, `${path}.maxLength`);
        if (min > max) throw new SchemaProblem(`${path}: minLength is over maxLength`);
        return node({ kind: "string", min, max });
      }
      case "number":
      case "integer":
        return node({ kind: "number", integer: type === "integer" });
      case "boolean":
        return literals([false, true], path);
      default:
        return literals([null], path);
    }
  };

  const objectNode = (s: Record<string, unknown>, path: string): SchemaNode => {
    const properties = s.properties ?? {};
    if (!isObject(properties)) throw new SchemaProblem(`${path}.properties must be an object of schemas`);
    const required = s.required ?? [];
    if (!Array.isArray(required) || required.some((r) => typeof r !== "string" || !Object.hasOwn(properties, r))) {
      throw new SchemaProblem(`${path}.required must list names of ${path}.properties`);
    }
    const names = Object.keys(properties);
    const extra = s.additionalProperties;
    if (extra !== undefined && typeof extra !== "boolean") compile(extra, `${path}.additionalProperties`);
    if (names.length === 0 && extra !== false) {
      // Only free keys: any names, each value what additionalProperties says (any JSON when it says nothing).
      const values = extra === undefined || extra === true ? any : compile(extra, `${path}.additionalProperties`);
      return node({ kind: "map", values });
    }
    // The named properties in the schema's order, the required ones always written; no others (which is what
    // additionalProperties false asks, and what a schema without it takes too).
    const props = names.map((name) => ({
      key: `${JSON.stringify(name)}:`,
      node: compile(properties[name], `${path}.properties.${name}`),
      required: required.includes(name),
    }));
    return node({ kind: "object", props });
  };

  const root = compile(schema, "$");
  settleChoices(root);
  const depth = shortestDepth(root);
  if (depth === Number.POSITIVE_INFINITY) {
    throw new SchemaProblem("no finite reply satisfies the schema: a $ref requires itself with no way out");
  }
  if (depth > MAX_JSON_DEPTH) {
    throw new SchemaProblem(
      `the shortest reply the schema accepts nests ${depth} deep; at most ${MAX_JSON_DEPTH} is served`,
    );
  }
  const objects = (n: SchemaNode) => n.kind === "object" || n.kind === "map";
  if (!(root.kind === "choice" ? root.starts.every(objects) : objects(root))) {
    throw new SchemaProblem(
      "the schema's root must be an object (type \"object\"), as OpenAI's structured outputs ask",
    );
  }
  return { id: ++compiled, root };

  /**
   * Every choice's `starts`: the nodes a value may begin as, choices flattened and literals merged (so one thread
   * reads them all), at most SCHEMA_LIMITS.options of them; a choice that leads back to itself with no object or
   * array between describes no value and is refused.
   */
  function settleChoices(from: SchemaNode) {
    const settled = new Set<SchemaNode>();
    const onPath = new Set<SchemaNode>();
    const flatten = (c: Choice): SchemaNode[] => {
      if (settled.has(c)) return c.starts;
      if (onPath.has(c)) {
        throw new SchemaProblem("a $ref refers back to itself with no object or array between: it describes no value");
      }
      onPath.add(c);
      const seen = new Set<SchemaNode>();
      const texts = new Set<string>();
      for (const o of c.options) {
        for (const n of o.kind === "choice" ? flatten(o) : [o]) {
          if (n.kind === "literals") for (const t of n.texts) texts.add(t);
          else seen.add(n);
        }
      }
      const starts = [...seen];
      if (texts.size > 0) starts.push(node({ kind: "literals", texts: [...texts].sort() }));
      if (starts.length > SCHEMA_LIMITS.options) {
        throw new SchemaProblem(
          `a value may start ${starts.length} ways at one place (anyOf, $ref and types together); at most ${SCHEMA_LIMITS.options} are served`,
        );
      }
      c.starts = starts;
      onPath.delete(c);
      settled.add(c);
      return starts;
    };
    for (const n of reachable(from)) if (n.kind === "choice") flatten(n);
  }
}

type Choice = Extract<SchemaNode, { kind: "choice" }>;
/** A node before it is numbered. */
type Unnumbered = SchemaNode extends infer N ? (N extends SchemaNode ? Omit<N, "id"> : never) : never;
type Numbering = <N extends Unnumbered>(n: N) => N & { id: number };

/** Every node reachable from `root`, each once. */
function reachable(root: SchemaNode): SchemaNode[] {
  const all = new Set<SchemaNode>();
  const stack = [root];
  while (stack.length > 0) {
    const n = stack.pop() as SchemaNode;
    if (all.has(n)) continue;
    all.add(n);
    if (n.kind === "choice") stack.push(...n.options);
    else if (n.kind === "object") stack.push(...n.props.map((p) => p.node));
    else if (n.kind === "map") stack.push(n.values);
    else if (n.kind === "array") stack.push(n.items);
  }
  return [...all];
}

/**
 * How deep the shortest reply `root` accepts nests (objects and arrays), Infinity when none is finite: the least
 * fixed point over the nodes, each at its cheapest way (a choice's cheapest option; an object's deepest required
 * property; an array's items only when it must hold one).
 */
function shortestDepth(root: SchemaNode): number {
  const nodes = reachable(root);
  const depth = new Map<SchemaNode, number>(nodes.map((n) => [n, Number.POSITIVE_INFINITY]));
  const of = (n: SchemaNode) => depth.get(n) ?? Number.POSITIVE_INFINITY;
  for (let changed = true; changed; ) {
    changed = false;
    for (const n of nodes) {
      let d: number;
      if (n.kind === "choice") d = Math.min(...n.options.map(of));
      else if (n.kind === "object") d = 1 + Math.max(0, ...n.props.filter((p) => p.required).map((p) => of(p.node)));
      else if (n.kind === "array") d = 1 + (n.min > 0 ? of(n.items) : 0);
      else if (n.kind === "map") d = 1;
      else d = 0;
      if (d < of(n)) {
        depth.set(n, d);
        changed = true;
      }
    }
  }
  return of(root);
}

function typesOf(s: Record<string, unknown>, path: string): string[] | undefined {
  if (s.type === undefined) return undefined;
  const types = Array.isArray(s.type) ? s.type : [s.type];
  if (types.length === 0 || types.some((t) => !TYPES.includes(t))) {
    throw new SchemaProblem(`${path}.type must be one or more of ${TYPES.join(", ")}`);
  }
  return types as string[];
}

/** The type a schema without `type` has by its keywords (`properties`: an object), or undefined for any value. */
function implied(s: Record<string, unknown>, path: string): string[] | undefined {
  const types = (Object.keys(KEYWORDS) as (keyof typeof KEYWORDS)[]).filter((t) => KEYWORDS[t].some((k) => k in s));
  if (types.length > 1) {
    throw new SchemaProblem(`${path}: keywords of ${types.join(" and ")} without a type; give it a type`);
  }
  return types.length === 1 ? types : undefined;
}

function ofType(v: unknown, type: string): boolean {
  switch (type) {
    case "integer":
      return Number.isInteger(v);
    case "number":
      return typeof v === "number";
    case "null":
      return v === null;
    case "array":
      return Array.isArray(v);
    case "object":
      return isObject(v);
    default:
      return typeof v === type;
  }
}

function finiteOnly(v: unknown, path: string): void {
  if (typeof v === "number" && !Number.isFinite(v)) {
    throw new SchemaProblem(`${path}: ${v} is not a JSON number; list values JSON can write`);
  }
  if (typeof v === "object" && v !== null) for (const x of Object.values(v)) finiteOnly(x, path);
}

function resolve(root: unknown, ref: unknown, path: string): unknown {
  if (typeof ref !== "string" || !/^#\/(\$defs|definitions)\/[^/]+$/.test(ref)) {
    throw new SchemaProblem(`${path}.$ref must name a schema of this one's $defs: "#/$defs/<name>"`);
  }
  const [, where, token] = ref.split("/") as [string, string, string];
  let name: string;
  try {
    name = decodeURIComponent(token).replaceAll("~1", "/").replaceAll("~0", "~");
  } catch {
    throw new SchemaProblem(`${path}.$ref: ${ref} is not a valid JSON pointer`);
  }
  const defs = isObject(root) ? root[where] : undefined;
  if (!isObject(defs) || !Object.hasOwn(defs, name))
    throw new SchemaProblem(`${path}.$ref: ${ref} is not in the schema`);
  return defs[name];
}

function count(value: unknown, fallback: number, path: string): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || (value as number) < 0) throw new SchemaProblem(`${path} must be a whole number ≥ 0`);
  return value as number;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
