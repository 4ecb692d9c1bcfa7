// The SDK's public types. Protocol types come from shared/ (InferRequest, JobView, JobTrace, Timings, Pool,
// ItemError, EmbeddingsResponse, ModelConfig, JobEvent, HistoryEntry); what is here is the SDK's own call
// options and the answers shared/ has no type for yet (written from edge/routes/caller.ts and sessions.ts).
import type { ModelConfig } from "../../shared/config/model-config.ts";
import type {
  GenerationStats,
  InferRequest,
  JobStatus,
  JobTrace,
  Pool,
  Timings,
} from "../../shared/protocol/caller.ts";
import type { Embedding, EmbeddingsResponse } from "../../shared/protocol/openai.ts";
import type { HistoryEntry } from "../../shared/protocol/sessions.ts";

export type { ItemCounts, Job, JobEvent } from "../../shared/protocol/job-events.ts";
export type { HistoryEntry } from "../../shared/protocol/sessions.ts";

/** What the SDK calls fetch with: any fetch (browser, Node 20+, workerd, or a wrapper of one) fits. */
export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

/** Options every call takes. */
export interface CallOptions {
  signal?: AbortSignal | undefined;
  /** A W3C traceparent (00-<trace id>-<span id>-<flags>): the job joins this trace instead of starting one. */
  traceparent?: string | undefined;
}

/** The fields of POST /v1/infer a call may set, as the protocol names them. */
export type InferFields = Partial<Pick<InferRequest, "priority" | "timeout_ms" | "session" | "pool">>;
export type InferOptions = InferFields &
  CallOptions & {
    /**
     * Sent as Idempotency-Key: the same key and body within the coordinator's window answer the first call's
     * job instead of queueing the work again. Default: a new random key per call, reused on its retries.
     */
    idempotencyKey?: string | undefined;
  };

/** A waited call that succeeded: one output per input, in order. */
export interface InferResult<T = unknown> {
  id: string;
  model: string;
  outputs: T[];
  timings: Timings;
  trace: JobTrace;
  /** Text-generation calls: ms to the first token, tokens generated, tokens per second. */
  generation?: GenerationStats;
}

/** A call accepted without waiting (202, Location /v1/jobs/{id}). */
export interface Submitted {
  id: string;
  status: JobStatus;
}

/** A model as GET /v1/models lists it: its configuration (less its files) and its queue now. */
export type ModelInfo = Omit<ModelConfig, "files"> & {
  queue_depth: number | null;
  in_flight: Record<Pool, number> | null;
  workers: Record<Pool, number> | null;
};

export interface ModelList {
  models: ModelInfo[];
  /** Models whose queue did not answer; their counts are null. */
  unavailable?: string[];
}

/** POST /v1/embeddings with encoding_format "float": every vector an array of numbers. */
export type FloatEmbeddings = Omit<EmbeddingsResponse, "data"> & {
  data: (Omit<Embedding, "embedding"> & { embedding: number[] })[];
};

/** A session's state after a write (PUT, PATCH). */
export interface SessionWrite<S extends object = Record<string, unknown>> {
  id: string;
  state: S;
  /** ms since the epoch; every read or write slides it. */
  expires_at: number;
  /** The state's revision, for If-Match on the next write. */
  etag: string;
  /** PUT only: true when the call created the session (201). */
  created: boolean;
}

/** A session as GET answers it. */
export interface Session<S extends object = Record<string, unknown>> {
  id: string;
  state: S;
  /** Oldest first, bounded by the coordinator's SESSION_HISTORY_LIMIT. */
  history: HistoryEntry[];
  expires_at: number;
  etag: string;
}
