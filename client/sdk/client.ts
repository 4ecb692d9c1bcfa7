// EdgeSwarmClient: the typed SDK for callers of a coordinator's HTTP API (edge/routes/caller.ts, openai.ts,
// sessions.ts), for browsers, Node 20+ and workers alike: it needs only fetch, AbortSignal and TextDecoder.
// Every method throws an EdgeSwarmError subclass for a refusal, after retrying 429 and 503 (transport.ts).
import { FINAL_STATUSES } from "../../shared/protocol/job-status.ts";
import { isFloatEmbeddings, isInferResult, isJob, isModelList, isSubmitted } from "./answer-shapes.ts";
import { Generation } from "./generation.ts";
import { readJobEvents } from "./job-events.ts";
import { RETRY_DEFAULTS, sleep } from "./retry.ts";
import { Sessions } from "./sessions.ts";
import { type Call, callOptions, Transport } from "./transport.ts";
import type {
  CallOptions,
  FetchLike,
  FloatEmbeddings,
  InferFields,
  InferOptions,
  InferResult,
  Job,
  JobEvent,
  ModelList,
  Submitted,
} from "./types.ts";

export interface ClientOptions {
  /** The coordinator, e.g. "https://edgeswarm.example.com" (no /v1). */
  baseUrl: string;
  /** Sent as "Authorization: Bearer <apiKey>"; leave out for a coordinator running AUTH=open. */
  apiKey?: string | undefined;
  /** Default: globalThis.fetch, looked up at each call (so a polyfill or test double installed later counts). */
  fetch?: FetchLike | undefined;
  /** Further tries after a 429 or 503; default 3, 0 for none. */
  maxRetries?: number | undefined;
}

export interface WaitOptions {
  /** Time between reads of the job; default 250 ms. */
  pollMs?: number | undefined;
  /** Stops waiting (rejects with the signal's reason). */
  signal?: AbortSignal | undefined;
}

export interface EmbeddingsOptions extends CallOptions {
  /** Truncate each vector to this many dimensions, scaled back to unit length. */
  dimensions?: number | undefined;
}

const DEFAULT_POLL_MS = 250;
const jobPath = (id: string) => `/v1/jobs/${encodeURIComponent(id)}`;

export class EdgeSwarmClient {
  /** Session documents: create, put, get, patch, delete. */
  readonly sessions: Sessions;
  /** Text generation: chat (waited for) and chatStream (typed deltas as tokens come). */
  readonly generation: Generation;
  private readonly http: Transport;

  constructor(opts: ClientOptions) {
    // An arrow, not `globalThis.fetch` itself: browsers refuse fetch called with another `this`.
    const fetch: FetchLike = opts.fetch ?? ((url, init) => globalThis.fetch(url, init));
    this.http = new Transport({
      baseUrl: opts.baseUrl,
      apiKey: opts.apiKey,
      fetch,
      maxRetries: opts.maxRetries ?? RETRY_DEFAULTS.maxRetries,
    });
    this.sessions = new Sessions(this.http);
    this.generation = new Generation(this.http);
  }

  /** Runs `inputs` and waits for them: one output per input, in order. Throws if any input failed. */
  async infer<T = unknown>(model: string, inputs: unknown[], opts: InferOptions = {}): Promise<InferResult<T>> {
    const { body } = await this.http.json<InferResult<T>>(inferCall(model, inputs, opts, {}), isInferResult);
    return body;
  }

  /** Queues `inputs` without waiting: the job's id, to read with job(), waitForJob() or events(). */
  async submit(model: string, inputs: unknown[], opts: InferOptions = {}): Promise<Submitted> {
    const { body } = await this.http.json<Submitted | InferResult>(
      inferCall(model, inputs, opts, { wait: false }),
      isSubmitted,
    );
    // A job that had ended before the answer comes back whole (200), without a status: it succeeded.
    return { id: body.id, status: "status" in body ? body.status : "succeeded" };
  }

  /** The job as it stands; outputs, errors, timings and trace once it has ended. */
  async job<T = unknown>(id: string, opts: CallOptions = {}): Promise<Job<T>> {
    const { body } = await this.http.json<Job<T>>({ method: "GET", path: jobPath(id), ...callOptions(opts) }, isJob);
    return body;
  }

  /**
   * Cancels the job (only the key that made it may): queued inputs are dropped and workers holding only its
   * inputs told to stop. Answers the job as it ended; ConflictError (job_finished) if it had already ended.
   */
  async cancel<T = unknown>(id: string, opts: CallOptions = {}): Promise<Job<T>> {
    const { body } = await this.http.json<Job<T>>({ method: "DELETE", path: jobPath(id), ...callOptions(opts) }, isJob);
    return body;
  }

  /** Reads the job every `pollMs` until it has ended (succeeded, failed, expired or cancelled), and answers it. */
  async waitForJob<T = unknown>(id: string, opts: WaitOptions = {}): Promise<Job<T>> {
    for (;;) {
      const job = await this.job<T>(id, { signal: opts.signal });
      if (FINAL_STATUSES.includes(job.status)) return job;
      await sleep(opts.pollMs ?? DEFAULT_POLL_MS, opts.signal);
    }
  }

  /**
   * The job's events as they happen: queued / leased counts, each input's output (or error) as soon as it
   * is final, then completed, failed, expired or cancelled with the whole job, where the iteration ends.
   */
  async *events<T = unknown>(id: string, opts: CallOptions = {}): AsyncGenerator<JobEvent<T>, void, undefined> {
    const res = await this.http.send({
      method: "GET",
      path: `${jobPath(id)}/events`,
      accept: "text/event-stream",
      ...callOptions(opts),
    });
    yield* readJobEvents<T>(res, opts.signal);
  }

  /** Runs `inputs`, answering as events(): each output as soon as its batch is done, then the job's end. */
  async *inferStream<T = unknown>(
    model: string,
    inputs: unknown[],
    opts: InferOptions = {},
  ): AsyncGenerator<JobEvent<T>, void, undefined> {
    const res = await this.http.send({
      ...inferCall(model, inputs, opts, { stream: true }),
      accept: "text/event-stream",
    });
    yield* readJobEvents<T>(res, opts.signal);
  }

  /** Every model the coordinator serves, with its settings and its queue now. */
  async models(opts: CallOptions = {}): Promise<ModelList> {
    const { body } = await this.http.json<ModelList>(
      { method: "GET", path: "/v1/models", ...callOptions(opts) },
      isModelList,
    );
    return body;
  }

  /** Embeds one text or several (OpenAI's POST /v1/embeddings), as float vectors in input order. */
  async embeddings(model: string, input: string | string[], opts: EmbeddingsOptions = {}): Promise<FloatEmbeddings> {
    const body = { model, input, encoding_format: "float", dimensions: opts.dimensions };
    const answer = await this.http.json<FloatEmbeddings>(
      { method: "POST", path: "/v1/embeddings", body, headers: idempotencyHeader(undefined), ...callOptions(opts) },
      isFloatEmbeddings,
    );
    return answer.body;
  }
}

/** POST /v1/infer with the protocol's fields picked out of `opts` (which also holds the call's options). */
function inferCall(model: string, inputs: unknown[], opts: InferOptions, how: { wait?: false; stream?: true }): Call {
  const fields: InferFields = {
    priority: opts.priority,
    timeout_ms: opts.timeout_ms,
    session: opts.session,
    pool: opts.pool,
  };
  return {
    method: "POST",
    path: "/v1/infer",
    body: { model, inputs, ...fields, ...how },
    headers: idempotencyHeader(opts.idempotencyKey),
    ...callOptions(opts),
  };
}

/**
 * One Idempotency-Key per call, made here and so sent unchanged on each of the transport's retries: a retry
 * after a lost answer finds the first job rather than queueing the work twice.
 */
function idempotencyHeader(key: string | undefined): Record<string, string> {
  return { "Idempotency-Key": key ?? newKey() };
}

/** A random UUID; crypto.randomUUID needs a secure context in browsers, getRandomValues does not. */
function newKey(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}
