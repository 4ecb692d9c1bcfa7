// What a job's event stream carries (GET /v1/jobs/{id}/events, POST /v1/infer with stream: true): the edge
// writes these as Server-Sent Events, the SDK reads them back.
import type { ItemError, JobStatus, JobView } from "./caller.ts";
import type { TokenLogprob } from "./generation.ts";

/** A job as its end event and GET /v1/jobs/{id} give it: outputs (null where an input failed) once ended. */
export type Job<T = unknown> = Omit<JobView, "created_at" | "outputs"> & { outputs?: (T | null)[] };

/** The item counts of a job, by state (queued, leased, succeeded, failed...). */
export type ItemCounts = Record<string, number>;

/**
 * One event: counts while the job waits, a generating input's tokens as they come, each input's output or error as soon as it is final, then one
 * end event (completed, failed, expired or cancelled) with the whole job.
 */
export type JobEvent<T = unknown> =
  | { event: "queued" | "leased"; data: { id: string; status: JobStatus; items: ItemCounts } }
  /**
   * A generating input's next tokens (issue 14), as the coordinator accepted them: `offset` tokens came
   * before them, so a reader joining late gets all kept so far in one event and then each new delta. With the
   * input's params.logprobs, one log-probabilities entry a token.
   */
  | {
      event: "token";
      data: { index: number; offset: number; tokens: number[]; text: string; logprobs?: TokenLogprob[] };
    }
  | { event: "output"; data: { index: number; output: T } }
  | { event: "error"; data: ItemError }
  | { event: "completed" | "failed" | "expired" | "cancelled"; data: Job<T> };
