// The JSON Schemas structured outputs take (response_format json_schema, params.schema), compiled into the nodes
// shared/tasks/json-grammar.ts walks while a reply is written. The subset is what OpenAI's strict mode and vLLM's
// guided decoding serve in common; any other keyword is refused with its path, so a caller never gets a reply the
// schema would reject. Called by GenerationParams' check of an item (a 4xx before anything is queued) and by the
// decode mask.

/** What a reply must hold at one place. */
export type SchemaNode =
  | { kind: "object"; id: number; props: Property[] }
  | { kind: "map"; id: number; values: SchemaNode }
  | { kind: "array"; id: number; items: SchemaNode; min: number; max: number }
  | { kind: "string"; id: number; min: number; max: number }
  | { kind: "number"; id: number; integer: boolean }
  | { kind: "literal"; id: number; text: string }
  | { kind: "anyOf"; id: number; options: SchemaNode[] };

/** A node before it is numbered. */
type Unnumbered = SchemaNode extends infer N ? (N extends SchemaNode ? Omit<N, "id"> : never) : never;
type Numbering = <N extends Unnumbered>(n: N) => N & { id: number };

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
}

/** Bounds on what one schema may ask, so a call cannot make the mask's work or state grow without end. */
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
const SERVED = new Set([
  "type",
  "properties",
  "required",
  "additionalProperties",
  "items",
  "minItems",
  "maxItems",
  "minLength",
  "maxLength",
  "enum",
  "const",
  "anyOf",
  "nullable",
  "$ref",
]);
const TYPES = ["object", "array", "string", "number", "integer", "boolean", "null"] as const;

export class SchemaProblem extends Error {}

let compiled = 0;

/** The schema's nodes, or a SchemaProblem naming the place (`$.properties.age`) and what to change. */
export function compileJsonSchema(schema: unknown): CompiledSchema {
  if (JSON.stringify(schema).length > SCHEMA_LIMITS.chars) {
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
  const literal = (value: unknown) => node({ kind: "literal", text: JSON.stringify(value) });
  const anyValue = anyJson(node);

  const compile = (s: unknown, path: string): SchemaNode => {
    if (s === true || (isObject(s) && Object.keys(s).every((k) => ANNOTATIONS.has(k)))) return anyValue;
    if (!isObject(s)) throw new SchemaProblem(`${path} must be a schema (an object)`);
    const known = memo.get(s);
    if (known) return known;
    for (const key of Object.keys(s)) {
      if (!ANNOTATIONS.has(key) && !SERVED.has(key)) {
        throw new SchemaProblem(
          `${path}.${key} is not served: structured outputs take type, properties, required, additionalProperties, items, minItems, maxItems, minLength, maxLength, enum, const, anyOf, nullable and $ref (to #/$defs)`,
        );
      }
    }
    if (s.$ref !== undefined) {
      if (Object.keys(s).some((k) => k !== "$ref" && !ANNOTATIONS.has(k))) {
        throw new SchemaProblem(`${path}: $ref must stand alone (besides title and description)`);
      }
      const target = resolve(schema, s.$ref, path);
      // A placeholder first, so a schema that refers to itself (a tree) compiles to a loop of nodes.
      const ref = node({ kind: "anyOf", options: [] as SchemaNode[] });
      memo.set(s, ref);
      ref.options.push(compile(target, `${path}.$ref`));
      return ref;
    }
    const alternatives = (): SchemaNode => {
      if (s.const !== undefined) return literal(s.const);
      if (s.enum !== undefined) {
        if (!Array.isArray(s.enum) || s.enum.length === 0 || s.enum.length > SCHEMA_LIMITS.options) {
          throw new SchemaProblem(`${path}.enum must list 1 to ${SCHEMA_LIMITS.options} values`);
        }
        return options(s.enum.map(literal));
      }
      if (s.anyOf !== undefined) {
        if (!Array.isArray(s.anyOf) || s.anyOf.length === 0 || s.anyOf.length > SCHEMA_LIMITS.options) {
          throw new SchemaProblem(`${path}.anyOf must list 1 to ${SCHEMA_LIMITS.options} schemas`);
        }
        return options(s.anyOf.map((o, i) => compile(o, `${path}.anyOf[${i}]`)));
      }
      const types = s.type === undefined ? undefined : Array.isArray(s.type) ? s.type : [s.type];
      if (types === undefined) return anyValue;
      if (types.length === 0 || types.some((t) => !TYPES.includes(t))) {
        throw new SchemaProblem(`${path}.type must be one or more of ${TYPES.join(", ")}`);
      }
      return options(types.map((t) => typed(s, t, path)));
    };
    const options = (list: SchemaNode[]) =>
      list.length === 1 ? (list[0] as SchemaNode) : node({ kind: "anyOf", options: list });
    const main = alternatives();
    return s.nullable === true ? options([main, literal(null)]) : main;
  };

  const typed = (s: Record<string, unknown>, type: string, path: string): SchemaNode => {
    switch (type) {
      case "object":
        return objectNode(s, path);
      case "array": {
        const min = count(s.minItems, 0, `${path}.minItems`);
        const max = count(s.maxItems, Number.POSITIVE_INFINITY, `${path}.maxItems`);
        if (min > max) throw new SchemaProblem(`${path}: minItems is over maxItems`);
        const items = s.items === undefined ? anyValue : compile(s.items, `${path}.items`);
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
        return node({ kind: "anyOf", options: [literal(true), literal(false)] });
      default:
        return literal(null);
    }
  };

  const objectNode = (s: Record<string, unknown>, path: string): SchemaNode => {
    const properties = s.properties ?? {};
    if (!isObject(properties)) throw new SchemaProblem(`${path}.properties must be an object of schemas`);
    const required = s.required ?? [];
    if (!Array.isArray(required) || required.some((r) => typeof r !== "string" || !(r in properties))) {
      throw new SchemaProblem(`${path}.required must list names of ${path}.properties`);
    }
    const names = Object.keys(properties);
    const extra = s.additionalProperties;
    if (names.length === 0 && extra !== false) {
      // Only free keys: any names, each value what additionalProperties says (any JSON when it says nothing).
      const values = extra === undefined || extra === true ? anyValue : compile(extra, `${path}.additionalProperties`);
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
  if (bareLoop(root)) {
    throw new SchemaProblem("a $ref refers back to itself with no object or array between: it describes no value");
  }
  if (!opensObject(root, new Set())) {
    throw new SchemaProblem(
      "the schema's root must be an object (type \"object\"), as OpenAI's structured outputs ask",
    );
  }
  return { id: ++compiled, root };
}

/** Whether a chain of choices ($refs, anyOf) leads from a node back to itself, which no text could ever start. */
function bareLoop(root: SchemaNode): boolean {
  const done = new Set<SchemaNode>();
  const onPath = new Set<SchemaNode>();
  const choicesLoop = (n: SchemaNode): boolean => {
    if (n.kind !== "anyOf" || done.has(n)) return false;
    if (onPath.has(n)) return true;
    onPath.add(n);
    const looped = n.options.some(choicesLoop);
    onPath.delete(n);
    done.add(n);
    return looped;
  };
  // Every node, each once: a loop may sit below the root (in a property's schema).
  const all = new Set<SchemaNode>();
  const visit = (n: SchemaNode) => {
    if (all.has(n)) return;
    all.add(n);
    if (n.kind === "anyOf") n.options.forEach(visit);
    else if (n.kind === "object") for (const p of n.props) visit(p.node);
    else if (n.kind === "map") visit(n.values);
    else if (n.kind === "array") visit(n.items);
  };
  visit(root);
  return [...all].some(choicesLoop);
}

/** Whether every value `node` takes is an object (a $ref to one, or a choice of them, included). */
function opensObject(node: SchemaNode, seen: Set<SchemaNode>): boolean {
  if (node.kind !== "anyOf") return node.kind === "object" || node.kind === "map";
  if (seen.has(node)) return true;
  seen.add(node);
  return node.options.every((o) => opensObject(o, seen));
}

/** Any JSON value: an object of any keys, an array, a string, a number, true, false or null. */
function anyJson(node: Numbering): SchemaNode {
  const any = node({ kind: "anyOf", options: [] as SchemaNode[] });
  any.options.push(
    node({ kind: "map", values: any }),
    node({ kind: "array", items: any, min: 0, max: Number.POSITIVE_INFINITY }),
    node({ kind: "string", min: 0, max: Number.POSITIVE_INFINITY }),
    node({ kind: "number", integer: false }),
    ...["true", "false", "null"].map((text) => node({ kind: "literal", text })),
  );
  return any;
}

function resolve(root: unknown, ref: unknown, path: string): unknown {
  if (typeof ref !== "string" || !/^#\/(\$defs|definitions)\/[^/]+$/.test(ref)) {
    throw new SchemaProblem(`${path}.$ref must name a schema of this one's $defs: "#/$defs/<name>"`);
  }
  const [, where, name] = ref.split("/") as [string, string, string];
  const defs = isObject(root) ? root[where] : undefined;
  const target = isObject(defs) ? defs[name.replaceAll("~1", "/").replaceAll("~0", "~")] : undefined;
  if (target === undefined) throw new SchemaProblem(`${path}.$ref: ${ref} is not in the schema`);
  return target;
}

function count(value: unknown, fallback: number, path: string): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || (value as number) < 0) throw new SchemaProblem(`${path} must be a whole number ≥ 0`);
  return value as number;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
