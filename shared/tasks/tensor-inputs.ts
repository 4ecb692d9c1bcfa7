// Parses a tensor-task item: one KServe v2 tensor `{name?, shape, datatype, data}` or a list of them,
// checked on its own (the edge does this much before queueing) and then, on the worker, against the
// model's declared inputs (names, datatypes, ranks, fixed sizes). Pure; no runtime is imported.
import { z } from "zod";
import { DATATYPES, type Datatype, type TensorMetadata, type WireTensor } from "../runner/model-runner.ts";
import { elementCount } from "../runner/wire-tensor.ts";
import { describeType, type Parsed } from "./task-types.ts";

const WireInput = z.object({
  name: z.string().min(1).optional(),
  shape: z.array(z.int().min(0)).max(16),
  datatype: z.enum(DATATYPES),
  // Elements are checked against the datatype by checkValues, in plain passes: a per-element schema
  // took 5-6 ms for 100,000 values, paid on the edge's submit path as well as on the worker.
  data: z.custom<unknown[]>((v) => Array.isArray(v), "expected an array"),
});

export interface TensorItem {
  tensors: Record<string, WireTensor>;
  /** Size of the leading (batch) axis, shared by every input of the item. */
  rows: number;
  /** Items with the same key concatenate along axis 0; null: the item cannot be batched and runs alone. */
  key: string | null;
}

const INT_RANGE: Partial<Record<Datatype, [number, number]>> = {
  INT8: [-128, 127],
  UINT8: [0, 255],
  INT32: [-2_147_483_648, 2_147_483_647],
  INT64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
};

function checkValues(datatype: Datatype, data: readonly unknown[]): string | undefined {
  const want = datatype === "BOOL" ? "boolean" : "number";
  const bad = data.findIndex((v) => typeof v !== want);
  if (bad >= 0) {
    if (Array.isArray(data[bad])) return "data must be flat, in row-major order, not nested";
    return datatype === "BOOL" ? "BOOL data must be true/false" : `${datatype} data must be numbers`;
  }
  const range = INT_RANGE[datatype];
  if (range && !(data as number[]).every((v) => Number.isInteger(v) && v >= range[0] && v <= range[1])) {
    return `${datatype} data must be integers in [${range[0]}, ${range[1]}]`;
  }
  return undefined;
}

function checkAgainstModel(t: SentTensor, meta: TensorMetadata | undefined): string | undefined {
  if (meta?.datatype !== undefined && meta.datatype !== t.datatype)
    return `the model wants ${meta.datatype}, got ${t.datatype}`;
  if (meta?.shape === undefined) return undefined;
  if (meta.shape.length !== t.shape.length) {
    return `the model wants rank ${meta.shape.length} ([${meta.shape.join(", ")}]), got shape [${t.shape.join(", ")}]`;
  }
  for (let i = 0; i < meta.shape.length; i++) {
    const want = meta.shape[i];
    if (typeof want === "number" && want >= 0 && want !== t.shape[i])
      return `dimension ${i} must be ${want}, got ${t.shape[i]}`;
  }
  return undefined;
}

/** A tensor as sent, checked on its own: its name (when given), shape, datatype and data agree. */
export type SentTensor = Omit<WireTensor, "name"> & { name?: string };

/**
 * The tensors of one item, each checked on its own (shape against data length, values against the
 * datatype), knowing nothing of the model: what the edge checks before queueing (input-checks.ts).
 */
export function parseSentTensors(input: unknown): Parsed<SentTensor[]> {
  const list = Array.isArray(input) ? input : [input];
  if (list.length === 0)
    return { error: "input must be a tensor {name, shape, datatype, data} or a non-empty list of them" };
  const tensors: SentTensor[] = [];
  for (const [position, raw] of list.entries()) {
    const parsed = WireInput.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const where = issue && issue.path.length > 0 ? `${issue.path.join(".")}: ` : "";
      const what = typeof raw === "object" && raw !== null ? `${where}${issue?.message}` : `got ${describeType(raw)}`;
      return { error: `tensor ${position} is not {name, shape, datatype, data} with flat data: ${what}` };
    }
    const { name, shape, datatype, data } = parsed.data;
    const label = name ?? String(position);
    const need = elementCount(shape);
    if (need !== data.length)
      return { error: `tensor ${label}: shape [${shape.join(", ")}] needs ${need} values, data has ${data.length}` };
    const problem = checkValues(datatype, data);
    if (problem) return { error: `tensor ${label}: ${problem}` };
    tensors.push({ ...(name === undefined ? {} : { name }), shape, datatype, data: data as number[] | boolean[] });
  }
  return { value: tensors };
}

/** Builds the item's tensors by input name; names may be left out when they follow the model's input order. */
export function parseTensorItem(
  input: unknown,
  inputNames: readonly string[],
  metadata: readonly TensorMetadata[] | undefined,
): Parsed<TensorItem> {
  const sent = parseSentTensors(input);
  if ("error" in sent) return sent;
  const tensors: Record<string, WireTensor> = {};
  for (const [position, t] of sent.value.entries()) {
    const name = t.name ?? inputNames[position];
    if (name === undefined || !inputNames.includes(name)) {
      return { error: `the model has no input ${name ?? `number ${position}`} (its inputs: ${inputNames.join(", ")})` };
    }
    if (tensors[name]) return { error: `input ${name} is given twice` };
    const problem = checkAgainstModel(
      t,
      metadata?.find((m) => m.name === name),
    );
    if (problem) return { error: `tensor ${name}: ${problem}` };
    tensors[name] = { ...t, name };
  }
  const missing = inputNames.filter((n) => !tensors[n]);
  if (missing.length > 0) return { error: `missing input ${missing.join(", ")}` };
  return { value: { tensors, ...batchKey(tensors, inputNames, metadata) } };
}

/** Items batch together when every input has a dynamic leading axis, they agree on it, and the rest of their shapes match. */
function batchKey(
  tensors: Record<string, WireTensor>,
  inputNames: readonly string[],
  metadata: readonly TensorMetadata[] | undefined,
) {
  const ordered = inputNames.map((n) => tensors[n] as WireTensor);
  const rows = ordered[0]?.shape[0] ?? 0;
  const batchable =
    rows > 0 &&
    ordered.every((t) => t.shape.length > 0 && t.shape[0] === rows) &&
    ordered.every((t) => !isFixed(metadata?.find((m) => m.name === t.name)?.shape?.[0]));
  if (!batchable) return { rows, key: null };
  return { rows, key: JSON.stringify(ordered.map((t) => [t.datatype, t.shape.slice(1)])) };
}

/** onnxruntime reports named dynamic axes as strings and unnamed ones as -1. */
function isFixed(dim: number | string | undefined): boolean {
  return typeof dim === "number" && dim >= 0;
}
