// Open Inference Protocol tensors to queue items and back: a request's batch of N rows (the first
// dimension) becomes N items in the task's input format (one string per row for the text tasks, one list
// of [1, ...] tensors per row for "tensor" models), and the N outputs are stacked back along that dimension.
// Pure; edge/routes/oip.ts calls it. Bad input is an ApiError 400; outputs that cannot be stacked are a 502.
import { ErrorCode, type InferRequest, outputProblem } from "../shared/index.ts";
import {
  isOipDatatype,
  OIP_DATATYPES,
  OIP_TENSOR_DATATYPES,
  OIP_TEXT_INPUT,
  type OipDatatype,
  type OipRequestInput,
  type OipTensor,
} from "../shared/protocol/oip.ts";
import { ApiError } from "./errors.ts";

/** One queue item, as POST /v1/infer takes it. */
type Item = InferRequest["inputs"][number];

const bad = (message: string) => new ApiError(400, ErrorCode.invalidInput, message);
const unusable = (message: string) =>
  new ApiError(502, ErrorCode.invalidOutput, `the worker's outputs cannot be answered as tensors: ${message}`);

const show = (v: unknown) => (v === undefined ? "nothing" : JSON.stringify(v).slice(0, 40));
const shapeText = (shape: readonly number[]) => `[${shape.join(", ")}]`;
const product = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** The row-major elements of `data`: flat already, or nested exactly as `shape` says. */
export function flatten(name: string, shape: readonly number[], data: readonly unknown[]): unknown[] {
  let flat: unknown[] = data as unknown[];
  if (data.some(Array.isArray)) {
    flat = [];
    const walk = (values: readonly unknown[], depth: number, at: string): void => {
      if (values.length !== shape[depth]) {
        throw bad(
          `input ${name}: data${at} holds ${values.length} elements where shape ${shapeText(shape)} has ${shape[depth] ?? "no dimension"}; send data flat or nested as the shape`,
        );
      }
      const last = depth === shape.length - 1;
      values.forEach((v, i) => {
        if (last !== !Array.isArray(v)) {
          throw bad(`input ${name}: data${at}[${i}] is ${last ? "nested deeper than" : "not nested as"} the shape`);
        }
        if (last) flat.push(v);
        else walk(v as unknown[], depth + 1, `${at}[${i}]`);
      });
    };
    walk(data, 0, "");
  }
  const need = product(shape);
  if (flat.length !== need) {
    throw bad(`input ${name}: shape ${shapeText(shape)} needs ${need} values, data has ${flat.length}`);
  }
  return flat;
}

const INT_RANGE: Partial<Record<OipDatatype, [number, number]>> = {
  INT8: [-128, 127],
  UINT8: [0, 255],
  INT32: [-2_147_483_648, 2_147_483_647],
  // JSON numbers past 2^53 have already lost precision.
  INT64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
};

/** What a datatype's elements must be, in words, and the check. */
function elementRule(datatype: OipDatatype): [string, (v: unknown) => boolean] {
  if (datatype === "BOOL") return ["true or false", (v) => typeof v === "boolean"];
  if (datatype === "BYTES") return ["strings", (v) => typeof v === "string"];
  const range = INT_RANGE[datatype];
  if (!range) return ["numbers", (v) => typeof v === "number"];
  const [min, max] = range;
  return [`integers in [${min}, ${max}]`, (v) => Number.isInteger(v) && (v as number) >= min && (v as number) <= max];
}

function checkValues(name: string, datatype: OipDatatype, values: readonly unknown[]): void {
  const [want, ok] = elementRule(datatype);
  const at = values.findIndex((v) => !ok(v));
  if (at >= 0) throw bad(`input ${name}: ${datatype} data must be ${want}; element ${at} is ${show(values[at])}`);
}

function knownDatatype(input: OipRequestInput): OipDatatype {
  if (isOipDatatype(input.datatype)) return input.datatype;
  throw bad(
    `input ${input.name}: unknown datatype "${input.datatype}"; the protocol's are ${OIP_DATATYPES.join(", ")}`,
  );
}

type ModelLimits = { name: string; max_inputs_per_request: number };

function checkRows(rows: number, model: ModelLimits): void {
  if (rows === 0) throw bad("the batch dimension (the first) is 0: send at least one row");
  if (rows > model.max_inputs_per_request) {
    throw new ApiError(
      400,
      ErrorCode.tooManyInputs,
      `${rows} rows sent (the first dimension); model "${model.name}" takes at most ${model.max_inputs_per_request} per request: split the call`,
    );
  }
}

/** text-classification, feature-extraction: one BYTES input "text" of shape [N] or [N, 1], a string per row. */
export function textItems(inputs: readonly OipRequestInput[], model: ModelLimits): string[] {
  const input = inputs[0];
  if (inputs.length !== 1 || input?.name !== OIP_TEXT_INPUT) {
    throw bad(
      `model "${model.name}" takes one BYTES input named "${OIP_TEXT_INPUT}", shape [batch]; got ${inputs.map((i) => `"${i.name}"`).join(", ")}`,
    );
  }
  const datatype = knownDatatype(input);
  if (datatype !== "BYTES") throw bad(`input ${input.name} must be BYTES (UTF-8 strings), got ${datatype}`);
  const { shape } = input;
  if (!(shape.length === 1 || (shape.length === 2 && shape[1] === 1))) {
    throw bad(`input ${input.name} must have shape [batch] or [batch, 1], got ${shapeText(shape)}`);
  }
  const values = flatten(input.name, shape, input.data);
  checkValues(input.name, datatype, values);
  checkRows(shape[0] as number, model);
  return values as string[];
}

/** "tensor": named tensors sharing a first (batch) dimension N; item r holds row r of each, shape [1, ...]. */
export function tensorItems(inputs: readonly OipRequestInput[], model: ModelLimits): Item[] {
  const seen = new Set<string>();
  const tensors = inputs.map((input) => {
    if (seen.has(input.name)) throw bad(`input ${input.name} is given twice`);
    seen.add(input.name);
    const datatype = knownDatatype(input);
    if (!OIP_TENSOR_DATATYPES.includes(datatype)) {
      throw bad(
        `input ${input.name}: ${datatype} is not supported; tensor models take ${OIP_TENSOR_DATATYPES.join(", ")}`,
      );
    }
    if (input.shape.length === 0)
      throw bad(`input ${input.name} has no batch dimension: its shape must be [batch, ...]`);
    const values = flatten(input.name, input.shape, input.data);
    checkValues(input.name, datatype, values);
    return { name: input.name, datatype, shape: input.shape, values: values as number[] | boolean[] };
  });
  const first = tensors[0];
  if (!first) throw bad("send at least one input tensor");
  const rows = first.shape[0] as number;
  const other = tensors.find((t) => t.shape[0] !== rows);
  if (other) {
    throw bad(
      `inputs disagree on the batch dimension (the first): ${first.name} has ${rows} rows, ${other.name} has ${other.shape[0]}`,
    );
  }
  checkRows(rows, model);
  return Array.from({ length: rows }, (_, r) =>
    tensors.map((t) => {
      const size = product(t.shape.slice(1));
      const data = t.values.slice(r * size, (r + 1) * size) as number[] | boolean[];
      return { name: t.name, shape: [1, ...t.shape.slice(1)], datatype: t.datatype, data };
    }),
  );
}

type LabelScore = { label: string; score: number };

function stackLabels(outputs: LabelScore[][]): OipTensor[] {
  // Best first, as the worker already sorts them; sorted again so "label" is the best whatever a worker sent.
  const rows = outputs.map((o) => [...o].sort((a, b) => b.score - a.score));
  const classes = rows[0]?.length ?? 0;
  if (rows.some((r) => r.length !== classes)) throw unusable("rows have different numbers of labels");
  const n = rows.length;
  return [
    { name: "label", datatype: "BYTES", shape: [n], data: rows.map((r) => (r[0] as LabelScore).label) },
    { name: "score", datatype: "FP32", shape: [n], data: rows.map((r) => (r[0] as LabelScore).score) },
    { name: "labels", datatype: "BYTES", shape: [n, classes], data: rows.flatMap((r) => r.map((e) => e.label)) },
    { name: "scores", datatype: "FP32", shape: [n, classes], data: rows.flatMap((r) => r.map((e) => e.score)) },
  ];
}

function stackVectors(outputs: number[][]): OipTensor[] {
  const dim = outputs[0]?.length ?? 0;
  if (outputs.some((v) => v.length !== dim)) throw unusable("rows have vectors of different lengths");
  return [{ name: "embedding", datatype: "FP32", shape: [outputs.length, dim], data: outputs.flat() }];
}

/** Row outputs of [1, ...] (or any one shape all rows share) stack into [N, ...]. */
function stackTensors(outputs: unknown[]): OipTensor[] {
  const rows = outputs.map((o) => (Array.isArray(o) ? o : [o]) as OipTensor[]);
  const first = rows[0] ?? [];
  return first.map((t) => {
    const parts = rows.map((row, i) => {
      const part = row.find((p) => p.name === t.name);
      if (row.length !== first.length || !part) throw unusable(`row ${i} does not give the outputs row 0 gives`);
      if (part.datatype !== t.datatype || shapeText(part.shape) !== shapeText(t.shape)) {
        throw unusable(
          `output ${t.name} is ${part.datatype} ${shapeText(part.shape)} in row ${i}, ${t.datatype} ${shapeText(t.shape)} in row 0`,
        );
      }
      return part;
    });
    const rest = t.shape[0] === 1 ? t.shape.slice(1) : t.shape;
    return { name: t.name, datatype: t.datatype, shape: [rows.length, ...rest], data: parts.flatMap((p) => p.data) };
  });
}

/** The response tensors for one output per row, in row order. Outputs come from workers: checked, never trusted. */
export function stackOutputs(task: string, outputs: readonly unknown[]): OipTensor[] {
  outputs.forEach((output, row) => {
    const problem = outputProblem(task, output);
    if (problem !== null) throw unusable(`row ${row}: ${problem}`);
  });
  if (task === "text-classification") return stackLabels(outputs as LabelScore[][]);
  if (task === "feature-extraction") return stackVectors(outputs as number[][]);
  return stackTensors([...outputs]);
}

/** The output names a request asked for, checked against the model's; undefined when it named none (all). */
export function requestedOutputs(
  available: readonly string[],
  requested: readonly { name: string }[] | undefined,
): string[] | undefined {
  if (requested === undefined) return undefined;
  const names = [...new Set(requested.map((r) => r.name))];
  const unknown = names.find((n) => !available.includes(n));
  if (unknown !== undefined) throw bad(`the model has no output "${unknown}"; its outputs: ${available.join(", ")}`);
  return names;
}

/** The tensors the request asked for, in its order; all of them when it named none. */
export function pickOutputs(tensors: readonly OipTensor[], requested: readonly { name: string }[] | undefined) {
  const names = requestedOutputs(
    tensors.map((t) => t.name),
    requested,
  );
  return names ? names.map((n) => tensors.find((t) => t.name === n) as OipTensor) : [...tensors];
}
