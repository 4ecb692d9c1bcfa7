// The Open Inference Protocol v2 (KServe v2, Triton's HTTP API) as EdgeSwarm serves it under /v2: the
// request schemas, the answer types, and the tensors each task takes and gives. edge/routes/oip.ts
// validates with these; callers and tests use the types. Spec: kserve/open-inference-protocol, inference_rest.md.
import { z } from "zod";
import { DATATYPES } from "../runner/model-runner.ts";

/** Every datatype the protocol names ("Tensor Data Types", plus Triton's BF16). */
export const OIP_DATATYPES = [
  "BOOL",
  "UINT8",
  "UINT16",
  "UINT32",
  "UINT64",
  "INT8",
  "INT16",
  "INT32",
  "INT64",
  "FP16",
  "FP32",
  "FP64",
  "BF16",
  "BYTES",
] as const;
export type OipDatatype = (typeof OIP_DATATYPES)[number];

/** What a "tensor" model takes: the runners' datatypes (shared/runner/wire-tensor.ts), a subset of the protocol's. */
export const OIP_TENSOR_DATATYPES: readonly OipDatatype[] = DATATYPES;

/** EdgeSwarm does not version models; each has this one version, so `/versions/1/...` paths work too. */
export const OIP_MODEL_VERSION = "1";

/** Every worker runs models with onnxruntime (node or web); Triton's name for that backend. */
export const OIP_PLATFORM = "onnxruntime_onnx";

/** A parameter value is a string, a number or a boolean ("Parameters" in the spec). */
export const OipParameters = z.record(z.string(), z.union([z.string(), z.number(), z.boolean()]));
export type OipParameters = z.infer<typeof OipParameters>;

// Objects are not strict: clients add fields of their own (e.g. a model_name), which the protocol ignores.
export const OipRequestInput = z.object({
  name: z.string().min(1),
  shape: z.array(z.int().min(0, "dimensions must be non-negative integers")).max(16, "at most 16 dimensions"),
  /** Checked against OIP_DATATYPES by the route, so an unknown one gets a message that lists them. */
  datatype: z.string().min(1),
  parameters: OipParameters.optional(),
  /** Row-major, flat or nested as the shape. */
  data: z.array(z.unknown()),
});
export type OipRequestInput = z.infer<typeof OipRequestInput>;

export const OipRequestOutput = z.object({ name: z.string().min(1), parameters: OipParameters.optional() });

export const OipInferRequest = z.object({
  id: z.string().max(256).optional(),
  /**
   * Read here: `timeout` (microseconds) and `priority` (0 = the model's default, 1 = highest), as Triton's
   * schedule-policy extension defines them, and EdgeSwarm's `pool` ("gpu" | "browser"). Others are ignored.
   */
  parameters: OipParameters.optional(),
  inputs: z.array(OipRequestInput).min(1, "must hold at least one input tensor"),
  outputs: z.array(OipRequestOutput).optional(),
});
export type OipInferRequest = z.infer<typeof OipInferRequest>;

export interface OipTensor {
  name: string;
  shape: number[];
  datatype: OipDatatype;
  data: (number | boolean | string)[];
}

export interface OipInferResponse {
  model_name: string;
  model_version?: string;
  /** The request's id, else the job's (readable at GET /v1/jobs/{id}). */
  id: string;
  parameters?: OipParameters;
  outputs: OipTensor[];
}

export interface OipTensorMetadata {
  name: string;
  datatype: OipDatatype;
  /** -1 for a variable size, the batch dimension first. */
  shape: number[];
}

export interface OipModelMetadata {
  name: string;
  versions?: string[];
  platform: string;
  inputs: OipTensorMetadata[];
  outputs: OipTensorMetadata[];
}

export interface OipServerMetadata {
  name: string;
  version: string;
  extensions: string[];
}

/** Every /v2 error answer. */
export interface OipError {
  error: string;
}

/** The one input of the text tasks: a BYTES tensor of UTF-8 strings, shape [batch] (or [batch, 1]). */
export const OIP_TEXT_INPUT = "text";

const textInput: OipTensorMetadata = { name: OIP_TEXT_INPUT, datatype: "BYTES", shape: [-1] };

/**
 * The tensors of the tasks whose signature the coordinator knows. text-classification: the best label and
 * its probability per row, then every label and probability, best first. feature-extraction: one
 * L2-normalised vector per row. "tensor" models take and give the ONNX graph's own tensors, which only
 * workers read: the coordinator cannot list them.
 */
export const OIP_TASK_SIGNATURES: Record<string, { inputs: OipTensorMetadata[]; outputs: OipTensorMetadata[] }> = {
  "text-classification": {
    inputs: [textInput],
    outputs: [
      { name: "label", datatype: "BYTES", shape: [-1] },
      { name: "score", datatype: "FP32", shape: [-1] },
      { name: "labels", datatype: "BYTES", shape: [-1, -1] },
      { name: "scores", datatype: "FP32", shape: [-1, -1] },
    ],
  },
  "feature-extraction": {
    inputs: [textInput],
    outputs: [{ name: "embedding", datatype: "FP32", shape: [-1, -1] }],
  },
};

/** The known tensors of a task's models, or undefined where the coordinator cannot know them ("tensor"). */
export function oipSignature(task: string): { inputs: OipTensorMetadata[]; outputs: OipTensorMetadata[] } | undefined {
  return Object.hasOwn(OIP_TASK_SIGNATURES, task) ? OIP_TASK_SIGNATURES[task] : undefined;
}

export function isOipDatatype(datatype: string): datatype is OipDatatype {
  return (OIP_DATATYPES as readonly string[]).includes(datatype);
}
