// The caller-facing protocol: what `POST /v1/infer` accepts and what the job endpoints answer.
// The edge validates with these schemas; the SDK and tests use the same types.
import { z } from "zod";
import { type JobStatus, Pool } from "./job-status.ts";
import { ParsedJson } from "./validate.ts";

export { FINAL_STATUSES, JobStatus, Pool } from "./job-status.ts";

export const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export const InferRequest = z.strictObject({
  model: z.string().regex(MODEL_NAME, "must be a model name such as 'sentiment' (letters, digits, . _ -)"),
  inputs: z.array(ParsedJson).min(1, "must hold at least one input"),
  priority: z.int().min(0).optional(),
  timeout_ms: z.int().positive().optional(),
  session: z.string().min(1).max(128).optional(),
  /** Pin the call to a pool: "gpu" for latency-critical work (if the key may), "browser" never to overflow. */
  pool: z.enum(Pool).optional(),
  wait: z.boolean().default(true),
  /** Answer as Server-Sent Events: each input's output as soon as its batch is done (see GET /v1/jobs/{id}/events). */
  stream: z.boolean().default(false),
});
export type InferRequest = z.infer<typeof InferRequest>;

export interface ItemError {
  index: number;
  code: string;
  message: string;
}

export interface Timings {
  queued_ms: number;
  compute_ms: number;
  total_ms: number;
}

/** Where a job's trace went: the call's traceparent, and the span of the worker that answered each input. */
export interface JobTrace {
  traceparent: string;
  workers: { index: number; traceparent: string }[];
}

/**
 * A text-generation job's figures (issue 14): ms from accepted to its first token at the coordinator, tokens
 * generated and prompt tokens, and tokens per second from the first token to the end (null under two tokens).
 */
export interface GenerationStats {
  ttft_ms: number;
  tokens: number;
  prompt_tokens: number;
  tokens_per_s: number | null;
}

export interface JobView {
  id: string;
  model: string;
  status: JobStatus;
  outputs?: unknown[];
  errors?: ItemError[];
  error?: { code: string; message: string };
  timings?: Timings;
  trace?: JobTrace;
  /** Text-generation jobs only. */
  generation?: GenerationStats;
  created_at: number;
}

export interface InferAccepted {
  id: string;
  status: JobStatus;
}
