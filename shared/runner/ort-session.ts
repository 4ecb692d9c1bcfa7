// Wraps an onnxruntime InferenceSession (node or web; both follow onnxruntime-common) as our InferenceSession:
// wire tensors in and out, metadata in wire terms, and runs queued one at a time when the runtime needs it.
// Used by worker-gpu/runner/ort-node-session.ts and shared/runner/ort-web-session.ts.
import type { InferenceSession, TensorMetadata, TypedData, TypedTensor, WireTensor } from "./model-runner.ts";
import { datatypeOf, fromTypedData, ORT_TYPE, type OrtType, toTypedData } from "./wire-tensor.ts";

/** The parts of an onnxruntime tensor this file uses. */
export interface OrtTensorLike {
  readonly type: string;
  readonly dims: readonly number[];
  readonly data: unknown;
  dispose?(): void;
}

interface OrtValueMetadata {
  readonly name: string;
  readonly isTensor: boolean;
  readonly type?: string;
  readonly shape?: ReadonlyArray<number | string>;
}

/** The parts of an onnxruntime InferenceSession this file uses. */
export interface OrtSessionLike {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  readonly inputMetadata?: readonly OrtValueMetadata[];
  readonly outputMetadata?: readonly OrtValueMetadata[];
  run(feeds: Record<string, OrtTensorLike>): Promise<Record<string, OrtTensorLike>>;
  release(): Promise<void>;
}

export type MakeTensor = (type: OrtType, data: TypedData, dims: readonly number[]) => OrtTensorLike;

export interface WrapOptions {
  /** The execution provider the session was created with. */
  device: string;
  makeTensor: MakeTensor;
  /** Queue runs: onnxruntime-web refuses a run while another is in flight on the same session. */
  serialize: boolean;
}

export function wrapOrtSession(session: OrtSessionLike, opts: WrapOptions): InferenceSession {
  let queue: Promise<unknown> = Promise.resolve();
  let released = false;

  const runNow = async (feeds: Record<string, WireTensor>): Promise<Record<string, WireTensor>> => {
    const inputs: Record<string, OrtTensorLike> = {};
    for (const [name, t] of Object.entries(feeds)) {
      inputs[name] = opts.makeTensor(ORT_TYPE[t.datatype], toTypedData(t.datatype, t.data), t.shape);
    }
    const outputs = await session.run(inputs);
    const result: Record<string, WireTensor> = {};
    try {
      for (const [name, tensor] of Object.entries(outputs)) {
        result[name] = fromTypedData(name, tensor.type, tensor.dims, tensor.data);
      }
    } finally {
      // GPU-resident outputs hold device memory until disposed; CPU ones make this a no-op.
      for (const tensor of Object.values(outputs)) tensor.dispose?.();
    }
    return result;
  };

  const runTypedNow = async (feeds: Record<string, TypedTensor>): Promise<Record<string, TypedTensor>> => {
    const inputs: Record<string, OrtTensorLike> = {};
    for (const [name, t] of Object.entries(feeds)) inputs[name] = opts.makeTensor(t.type as OrtType, t.data, t.dims);
    const outputs = await session.run(inputs);
    const result: Record<string, TypedTensor> = {};
    try {
      for (const [name, tensor] of Object.entries(outputs)) {
        if (!ArrayBuffer.isView(tensor.data)) throw new Error(`output ${name} has no data on the CPU`);
        result[name] = { type: tensor.type, dims: [...tensor.dims], data: tensor.data as TypedData };
      }
    } finally {
      for (const tensor of Object.values(outputs)) tensor.dispose?.();
    }
    return result;
  };
  const queued = <T>(work: () => Promise<T>): Promise<T> => {
    if (released) return Promise.reject(new Error("session was released"));
    if (!opts.serialize) return work();
    const next = queue.then(work);
    queue = next.catch(() => undefined);
    return next;
  };

  return {
    device: opts.device,
    inputNames: session.inputNames,
    outputNames: session.outputNames,
    inputMetadata: session.inputMetadata?.map(toMetadata),
    outputMetadata: session.outputMetadata?.map(toMetadata),
    run: (feeds) => queued(() => runNow(feeds)),
    runTyped: (feeds) => queued(() => runTypedNow(feeds)),
    async release() {
      if (released) return;
      released = true;
      await queue;
      await session.release();
    },
  };
}

function toMetadata(m: OrtValueMetadata): TensorMetadata {
  return {
    name: m.name,
    datatype: m.isTensor && m.type !== undefined ? datatypeOf(m.type) : undefined,
    shape: m.isTensor && m.shape !== undefined ? [...m.shape] : undefined,
  };
}
