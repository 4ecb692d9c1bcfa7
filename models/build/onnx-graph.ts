// A small builder for standard ONNX models on top of onnx-proto (the protobuf types of onnx.proto): test
// fixtures (test/e2e/oip.test.ts) write tiny real .onnx files with it; onnxruntime loads them like any other.

import type { onnx as Onnx } from "onnx-proto";
import onnxProto from "onnx-proto";

const { onnx } = onnxProto;

/** opset 17: every op used here is in the default domain and supported by onnxruntime's CPU, WASM and WebGPU kernels. */
export const OPSET = 17;
const IR_VERSION = 8;

export type ElemType = "float32" | "float64" | "int64" | "int32" | "int8" | "uint8" | "bool";
const D = onnx.TensorProto.DataType;
const ELEM_TYPE: Record<ElemType, number> = {
  float32: D.FLOAT,
  float64: D.DOUBLE,
  int64: D.INT64,
  int32: D.INT32,
  int8: D.INT8,
  uint8: D.UINT8,
  bool: D.BOOL,
};

/** A dimension: a fixed size, or a name for a dynamic axis (e.g. "batch"). */
export type Dim = number | string;
type AttrValue = number | readonly number[];

export class OnnxGraph {
  private readonly nodes: Onnx.INodeProto[] = [];
  private readonly initializers: Onnx.ITensorProto[] = [];
  private readonly inputs: Onnx.IValueInfoProto[] = [];
  private readonly outputs: Onnx.IValueInfoProto[] = [];
  private counter = 0;

  constructor(private readonly name: string) {}

  input(name: string, type: ElemType, shape: readonly Dim[]): string {
    this.inputs.push(valueInfo(name, type, shape));
    return name;
  }

  output(name: string, type: ElemType, shape: readonly Dim[]): void {
    this.outputs.push(valueInfo(name, type, shape));
  }

  /** A float32 weight; `values` is row-major for `dims`. Little-endian raw bytes, as ONNX requires. */
  floats(name: string, dims: readonly number[], values: ArrayLike<number>): string {
    checkSize(name, dims, values.length);
    const raw = new Uint8Array(values.length * 4);
    const view = new DataView(raw.buffer);
    for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i] as number, true);
    this.initializers.push({ name, dims: [...dims], dataType: ELEM_TYPE.float32, rawData: raw });
    return name;
  }

  int64s(name: string, dims: readonly number[], values: readonly number[]): string {
    checkSize(name, dims, values.length);
    const raw = new Uint8Array(values.length * 8);
    const view = new DataView(raw.buffer);
    for (let i = 0; i < values.length; i++) view.setBigInt64(i * 8, BigInt(values[i] as number), true);
    this.initializers.push({ name, dims: [...dims], dataType: ELEM_TYPE.int64, rawData: raw });
    return name;
  }

  /** Adds a node and returns its output names; `output` names the (first) output, else one is made up. */
  node(opType: string, inputs: readonly string[], attrs: Record<string, AttrValue> = {}, output?: string): string {
    const out = output ?? `${opType.toLowerCase()}_${this.counter++}`;
    const attribute = Object.entries(attrs).map(([name, value]) =>
      typeof value === "number"
        ? { name, type: onnx.AttributeProto.AttributeType.INT, i: value }
        : { name, type: onnx.AttributeProto.AttributeType.INTS, ints: [...value] },
    );
    this.nodes.push({ opType, input: [...inputs], output: [out], name: `${out}_node`, attribute });
    return out;
  }

  /** The serialised ModelProto. protobufjs writes fields in a fixed order, so the bytes are deterministic. */
  encode(docString: string): Uint8Array {
    const model: Onnx.IModelProto = {
      irVersion: IR_VERSION,
      opsetImport: [{ domain: "", version: OPSET }],
      producerName: "edgeswarm-build-models",
      producerVersion: "1",
      docString,
      graph: {
        name: this.name,
        node: this.nodes,
        initializer: this.initializers,
        input: this.inputs,
        output: this.outputs,
      },
    };
    const error = onnx.ModelProto.verify(model);
    if (error) throw new Error(`invalid ONNX model ${this.name}: ${error}`);
    return onnx.ModelProto.encode(model).finish();
  }
}

function valueInfo(name: string, type: ElemType, shape: readonly Dim[]): Onnx.IValueInfoProto {
  const dim = shape.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d }));
  return { name, type: { tensorType: { elemType: ELEM_TYPE[type], shape: { dim } } } };
}

function checkSize(name: string, dims: readonly number[], length: number): void {
  const expected = dims.reduce((a, b) => a * b, 1);
  if (expected !== length)
    throw new Error(`initializer ${name}: dims ${dims.join("x")} need ${expected} values, got ${length}`);
}
