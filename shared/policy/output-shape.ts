// The shape each task's output must have before the model queue accepts it from any worker: a worker's
// output is untrusted input, parsed once here. Pure; edge/model-queue calls it for every output it stores.
import { DATATYPES } from "../runner/model-runner.ts";
import { generationProblem } from "./generation-verdict.ts";

export interface ShapeExpectations {
  /** feature-extraction: the vector length every output of the model has, once known. */
  dimensions?: number | undefined;
  /** text-generation: the run was sent `verify` (a held output to check), so it answers a verdict (generation-verdict.ts). */
  verifying?: boolean | undefined;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const isFiniteNumber = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);

function labelScores(output: unknown): string | null {
  if (!Array.isArray(output) || output.length === 0) return "the output must be a non-empty array of {label, score}";
  for (let i = 0; i < output.length; i++) {
    const entry: unknown = output[i];
    if (!isRecord(entry) || Object.keys(entry).length !== 2 || typeof entry.label !== "string") {
      return `[${i}] must be exactly {label: string, score: number}`;
    }
    if (!isFiniteNumber(entry.score) || entry.score < 0 || entry.score > 1) {
      return `[${i}].score must be a finite number in [0, 1]`;
    }
  }
  return null;
}

function vector(output: unknown, expect: ShapeExpectations): string | null {
  if (!Array.isArray(output) || output.length === 0) return "the output must be a non-empty array of numbers";
  for (let i = 0; i < output.length; i++) {
    if (!isFiniteNumber(output[i])) return `[${i}] must be a finite number`;
  }
  if (expect.dimensions !== undefined && output.length !== expect.dimensions) {
    return `the output has ${output.length} dimensions; this model's vectors have ${expect.dimensions}`;
  }
  return null;
}

const TENSOR_KEYS = ["data", "datatype", "name", "shape"].join();

function tensor(t: unknown, at: string): string | null {
  if (!isRecord(t) || Object.keys(t).sort().join() !== TENSOR_KEYS) {
    return `${at} must be exactly {name, shape, datatype, data}`;
  }
  if (typeof t.name !== "string") return `${at}.name must be a string`;
  const datatype = t.datatype as (typeof DATATYPES)[number];
  if (!DATATYPES.includes(datatype)) return `${at}.datatype must be one of ${DATATYPES.join(", ")}`;
  const shape = t.shape;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
    return `${at}.shape must be an array of non-negative integers`;
  }
  const size = shape.reduce((a: number, b: number) => a * b, 1);
  if (!Array.isArray(t.data) || t.data.length !== size) {
    return `${at}.data must hold ${size} values (the product of shape [${shape.join(", ")}])`;
  }
  const ok = datatype === "BOOL" ? (v: unknown) => typeof v === "boolean" : isFiniteNumber;
  const bad = t.data.findIndex((v) => !ok(v));
  if (bad >= 0) return `${at}.data[${bad}] must be ${datatype === "BOOL" ? "a boolean" : "a finite number"}`;
  return null;
}

/** The tensor task answers one tensor per model output, in order; a single tensor is accepted too. */
function tensors(output: unknown): string | null {
  if (!Array.isArray(output)) return tensor(output, "the output");
  if (output.length === 0) return "the output must be a tensor or a non-empty array of tensors";
  for (let i = 0; i < output.length; i++) {
    const problem = tensor(output[i], `[${i}]`);
    if (problem !== null) return problem;
  }
  return null;
}

/**
 * What is wrong with an output of this task, or null when it has the task's shape. Tasks other than the
 * four shared/tasks produces (text-classification, feature-extraction, tensor, text-generation) have no known shape.
 */
export function outputProblem(task: string, output: unknown, expect: ShapeExpectations = {}): string | null {
  switch (task) {
    case "text-classification":
      return labelScores(output);
    case "feature-extraction":
      return vector(output, expect);
    case "tensor":
      return tensors(output);
    case "text-generation":
      return generationProblem(output, expect.verifying === true);
    default:
      return null;
  }
}
