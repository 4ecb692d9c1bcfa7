// Conversions between the KServe v2 wire tensor ({name, shape, datatype, data} with flat JSON data) and
// the typed arrays onnxruntime works on. Shared by both session factories and the tensor task.
import type { Datatype, TypedData, WireTensor } from "./model-runner.ts";

/** onnxruntime's name for each wire datatype (onnxruntime-common Tensor.Type). */
export const ORT_TYPE = {
  FP32: "float32",
  FP64: "float64",
  INT64: "int64",
  INT32: "int32",
  INT8: "int8",
  UINT8: "uint8",
  BOOL: "bool",
} as const satisfies Record<Datatype, string>;
export type OrtType = (typeof ORT_TYPE)[Datatype];

export type { TypedData } from "./model-runner.ts";

const DATATYPE_OF = Object.fromEntries(Object.entries(ORT_TYPE).map(([wire, ort]) => [ort, wire])) as Record<
  string,
  Datatype | undefined
>;

/** The wire datatype for an onnxruntime type, or undefined for types the wire does not carry (float16, string...). */
export function datatypeOf(ortType: string): Datatype | undefined {
  return DATATYPE_OF[ortType];
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Flat wire data as the typed array onnxruntime wants; int64 goes through BigInt64Array, bool through Uint8Array. */
export function toTypedData(datatype: Datatype, data: readonly (number | boolean)[]): TypedData {
  switch (datatype) {
    case "FP32":
      return Float32Array.from(data as number[]);
    case "FP64":
      return Float64Array.from(data as number[]);
    case "INT64":
      return BigInt64Array.from(data as number[], (v) => BigInt(v));
    case "INT32":
      return Int32Array.from(data as number[]);
    case "INT8":
      return Int8Array.from(data as number[]);
    case "UINT8":
      return Uint8Array.from(data as number[]);
    case "BOOL":
      return Uint8Array.from(data as boolean[], (v) => (v ? 1 : 0));
  }
}

/**
 * A runtime's output as a wire tensor. int64 values beyond 2^53 lose precision as JSON numbers, which is
 * what KServe's JSON encoding does too.
 */
export function fromTypedData(name: string, ortType: string, dims: readonly number[], data: unknown): WireTensor {
  const datatype = datatypeOf(ortType);
  if (datatype === undefined)
    throw new Error(`output ${name} has type ${ortType}, which the wire format does not carry`);
  if (!ArrayBuffer.isView(data)) throw new Error(`output ${name} has no data on the CPU`);
  const values = data as unknown as ArrayLike<number | bigint>;
  let out: number[] | boolean[];
  if (datatype === "BOOL") out = Array.from(values, (v) => v !== 0);
  else if (datatype === "INT64") out = Array.from(values, (v) => Number(v));
  else out = Array.from(values as ArrayLike<number>);
  return { name, shape: [...dims], datatype, data: out };
}
