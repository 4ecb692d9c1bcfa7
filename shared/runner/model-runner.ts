// The model-runner interface every worker runs models through: onnxruntime-node in the GPU worker
// (cuda, then cpu), onnxruntime-web in the browser and donor workers (webgpu, then wasm).
// Tasks (tokenise, one batched run, post-process) are shared; only the session differs per runtime.
import type { TokenLogprob } from "../protocol/generation.ts";
import type { ItemResult } from "../protocol/worker.ts";

/** Open Inference Protocol v2 datatypes the runners accept and produce. */
export const DATATYPES = ["FP32", "FP64", "INT64", "INT32", "INT8", "UINT8", "BOOL"] as const;
export type Datatype = (typeof DATATYPES)[number];

/** A tensor in the wire shape of KServe v2: row-major flat data. */
export interface WireTensor {
  name: string;
  shape: number[];
  datatype: Datatype;
  data: number[] | boolean[];
}

/** What the model declares about one input or output; the tensor task checks inputs against it. */
export interface TensorMetadata {
  name: string;
  /** Undefined when the model's type has no wire datatype (float16, string) or is not a tensor. */
  datatype: Datatype | undefined;
  /** Fixed sizes as numbers, dynamic axes by name (e.g. "batch"); undefined when the model does not say. */
  shape: (number | string)[] | undefined;
}

export type TypedData = Float32Array | Float64Array | BigInt64Array | Int32Array | Int8Array | Uint8Array;

/** A tensor as onnxruntime holds it (type by onnxruntime's name: "float32", "int64"...), for runs that loop. */
export interface TypedTensor {
  type: string;
  dims: readonly number[];
  data: TypedData;
}

/** Tokens an item of a running batch has just generated (text-generation), at batch position `pos`. */
export interface TokenDelta {
  pos: number;
  /** Tokens of the item generated before these, any resumed prefix included. */
  offset: number;
  tokens: number[];
  text: string;
  /** With the item's params.logprobs: one entry a token. */
  logprobs?: TokenLogprob[];
}

/** What a caller can listen to while a batch runs. */
export interface RunOptions {
  onTokens?: (delta: TokenDelta) => void;
  /**
   * An item's result while the run goes on for others (a generated reply that ended before the batch's
   * longest), so it can be settled at once; the run's answer holds it too. Tasks that answer all at once
   * do not call it.
   */
  onResult?: (pos: number, result: ItemResult) => void;
  /**
   * Aborted when the run's results are no longer wanted (its lease cancelled or released): a generating run
   * takes its sequences out of the running batch at the next step and answers `cancelled` for them. Tasks
   * that run once ignore it.
   */
  signal?: AbortSignal;
}

/** What a runtime must provide: one ONNX session, batched runs, and the provider that actually ran. */
export interface InferenceSession {
  /** The execution provider in use, as reported by the runtime after creation (e.g. "cuda", "cpu", "webgpu", "wasm"). */
  readonly device: string;
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  /** Declared types and shapes, where the runtime reports them (onnxruntime 1.22+ does). */
  readonly inputMetadata?: readonly TensorMetadata[];
  readonly outputMetadata?: readonly TensorMetadata[];
  run(feeds: Record<string, WireTensor>): Promise<Record<string, WireTensor>>;
  /**
   * The same run on typed arrays, without the wire's JSON-ready arrays: a decode loop feeds each step's KV
   * cache back in, megabytes a step that number[] conversion would copy twice.
   */
  runTyped?(feeds: Record<string, TypedTensor>): Promise<Record<string, TypedTensor>>;
  release(): Promise<void>;
}

export interface SessionFactory {
  /** Which runtime this is, for reports: "onnxruntime-node" or "onnxruntime-web". */
  readonly runtime: string;
  /** The frozen device preference table, best first; what loadModel asks for when the caller names none. */
  readonly devices: readonly string[];
  /** Tries the preferred devices in order and falls back; never guesses what ran. */
  create(model: Uint8Array, devices: readonly string[]): Promise<InferenceSession>;
}

/** A model ready to run batches: per-item results, in order, from one batched inference run. */
export interface LoadedModel {
  readonly name: string;
  readonly task: string;
  readonly device: string;
  /** The SessionFactory's runtime that runs it ("onnxruntime-node", "onnxruntime-web"); optional so test doubles need not say. */
  readonly runtime?: string;
  run(inputs: readonly unknown[], opts?: RunOptions): Promise<ItemResult[]>;
  dispose(): Promise<void>;
}
