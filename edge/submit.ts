// Submitting a call to its model's queue, shared by every API shape (EdgeSwarm's own, OpenAI, Open
// Inference Protocol, Hugging Face): the model's limits, its inputs parsed as its workers parse them, the
// caller's right to a pool, the key that owns the job, Idempotency-Key, retries when the queue object restarts
// mid-call, a caller that hangs up on a waiting call cancelling it, refusals as ApiErrors, and a finished job's
// outcome as an answer or an error.
import type { Context } from "hono";
import {
  ErrorCode,
  FINAL_STATUSES,
  type InferRequest,
  idempotencyKeyProblem,
  type JobView,
  type ModelConfig,
  newId,
  queueOfId,
  traceparentOrNew,
} from "../shared/index.ts";
import { type InputProblem, inputProblems, textProblems } from "../shared/tasks/input-checks.ts";
import type { HonoEnv } from "./app-env.ts";
import { mayUseGpuPool } from "./auth.ts";
import { ApiError } from "./errors.ts";
import { type EventFormat, newWatch, type WatchRequest } from "./model-queue/job-events.ts";
import type { SubmitInput, SubmitResult } from "./model-queue/model-queue.ts";
import { afterAnswer, modelOrThrow, otherShards, queueOf, shardFor } from "./request.ts";
import { sessionOf } from "./sessions/session-stub.ts";
import { beginCallTrace } from "./telemetry/call-trace.ts";

/** Extra time a waiting call gives the queue past the job's own deadline, so expiry is reported, not raced. */
const WAIT_GRACE_MS = 2_000;
/** A queue object that restarts mid-call is asked again (the job id makes that idempotent). */
const SUBMIT_TRIES = 3;
/** Other shards a call refused by a full shard is offered to before the model answers 429. */
const FULL_SHARD_PASSES = 2;

const REFUSAL_STATUS: Record<string, 400 | 409 | 429 | 503> = {
  [ErrorCode.queueFull]: 429,
  [ErrorCode.jobNotFound]: 503,
  [ErrorCode.noVerifier]: 503,
  [ErrorCode.noWorker]: 503,
  [ErrorCode.idempotencyConflict]: 409,
};

/** Hex SHA-256 of a text, its first `bytes` bytes. */
async function sha256Hex(text: string, bytes = 32): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  return Array.from(digest.slice(0, bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The key a caller's jobs belong to: a fingerprint of its API key (never the key itself), so only that key
 * reads, watches or cancels them; undefined under AUTH=open, where all callers share.
 */
export async function ownerOf(c: Context<HonoEnv>): Promise<string | undefined> {
  if (c.get("config").open) return undefined;
  const token = c.req.header("Authorization")?.match(/^Bearer\s+(.+)$/i)?.[1];
  return token === undefined ? undefined : `key:${await sha256Hex(token, 8)}`;
}

/**
 * The job's id, which names the queue (the shard) it goes to. With an Idempotency-Key: the id the key names
 * (the same for the same API key, model and key, in the same shard, so a repeat finds the first job for as
 * long as its queue keeps it), and a hash of the request. A session's calls share a shard (request.ts shardFor).
 */
async function jobId(
  c: Context<HonoEnv>,
  model: ModelConfig,
  owner: string | undefined,
  call: SubmitCall,
): Promise<{ id: string; request_hash?: string }> {
  const key = c.req.header("Idempotency-Key");
  const affinity = call.session === undefined ? undefined : `session\n${owner ?? "open"}\n${call.session}`;
  if (key === undefined) return { id: newId(shardFor(model, affinity)) };
  const problem = idempotencyKeyProblem(key);
  if (problem) throw new ApiError(400, ErrorCode.validation, problem);
  const { wait: _wait, ...request } = call;
  const named = await sha256Hex(`${owner ?? "open"}\n${key}`, 16);
  return {
    id: `${shardFor(model, affinity ?? named)}:${named}`,
    request_hash: await sha256Hex(JSON.stringify(request)),
  };
}

/** A call as every API shape hands it over: the native request's fields, less how to answer it. */
export type SubmitCall = Omit<InferRequest, "stream">;

/** What an API shape calls one item of a call in its messages: an input, or (Open Inference Protocol) a row. */
export type ItemNoun = "input" | "row";

/** "inputs 0, 2: <message>; input 1: <message>": item errors by message, so one cause is said once. */
export function describeItemErrors(errors: readonly { index: number; message: string }[], noun: ItemNoun): string {
  const byMessage = new Map<string, number[]>();
  for (const e of errors) byMessage.set(e.message, [...(byMessage.get(e.message) ?? []), e.index]);
  const parts = [...byMessage].map(
    ([message, at]) => `${noun}${at.length > 1 ? "s" : ""} ${at.join(", ")}: ${message}`,
  );
  return parts.slice(0, 5).join("; ") + (parts.length > 5 ? `; and ${parts.length - 5} more` : "");
}

/**
 * A 422 naming every input the model's workers would refuse (shared/tasks/input-checks.ts), thrown before
 * anything is queued: bad input is the caller's to fix whichever pool would have run it.
 */
export function refuseBadInputs(model: ModelConfig, inputs: readonly unknown[], noun: ItemNoun = "input"): void {
  refuse(inputProblems(model, inputs), inputs.length, noun);
}

/** A compatible API's texts, parsed as a text model's workers parse them: all strings, or a 422 naming the bad ones. */
export function checkedTexts(model: ModelConfig, inputs: readonly unknown[]): string[] {
  refuse(textProblems(inputs, model.max_sequence_length), inputs.length, "input");
  return inputs as string[];
}

function refuse(problems: readonly InputProblem[], total: number, noun: ItemNoun): void {
  if (problems.length === 0) return;
  const message = `${problems.length} of ${total} ${noun}s refused, nothing was queued; ${describeItemErrors(problems, noun)}`;
  const errors = problems.map((p) => ({ index: p.index, code: ErrorCode.invalidInput, message: p.message }));
  throw new ApiError(422, ErrorCode.invalidInput, message, { extra: { errors, param: "input" } });
}

/**
 * Queues a call; with `wait`, answers the job once it has ended (or as it stands at its deadline), else
 * as accepted. Throws an ApiError for a call the model or the queue refuses. With tracing on, the call's
 * spans are recorded and exported (edge/telemetry/call-trace.ts).
 */
export async function submitJob(
  c: Context<HonoEnv>,
  call: SubmitCall,
  opts: { noun?: ItemNoun } = {},
): Promise<JobView> {
  return (await submitTraced(c, call, opts)).job;
}

/**
 * Queues a streamed call: the job as accepted and its events from the queue (one call to the queue object, which
 * refuses the call before queuing it when it has no room for another stream). The call's trace ends when the
 * stream does (edge/event-streams.ts).
 */
export async function submitStreamed(
  c: Context<HonoEnv>,
  call: Omit<SubmitCall, "wait">,
  format: EventFormat,
): Promise<{ job: JobView; events: Watched }> {
  const watch = newWatch(format);
  const { job, events } = await submitTraced(c, { ...call, wait: false }, { watch });
  if (!events) throw new Error(`the queue answered the streamed call ${job.id} without its events`);
  return { job, events: { stream: events, key: watch.key } };
}

/** A job's event stream from its queue, and the key that ends it there (WatchRequest). */
export interface Watched {
  stream: ReadableStream<Uint8Array>;
  key: string;
}

async function submitTraced(
  c: Context<HonoEnv>,
  call: SubmitCall,
  opts: { noun?: ItemNoun; watch?: WatchRequest },
): Promise<{ job: JobView; events?: ReadableStream<Uint8Array> | undefined }> {
  const trace = beginCallTrace(c, call.model);
  try {
    const { job, replayed, events } = await queueCall(c, call, opts, trace?.traceparent);
    // A streamed call is answered when its stream ends: the trace ends then (event-streams.ts streamClosed).
    if (opts.watch && trace) c.set("callTrace", { trace, accepted: job, replayed });
    else trace?.end({ job, replayed });
    return { job, events };
  } catch (error) {
    const refusal = error instanceof ApiError ? error : new ApiError(500, ErrorCode.internal, String(error));
    trace?.end({ error: { status: refusal.status, code: refusal.code, message: refusal.message } });
    throw error;
  }
}

/** submitJob without its trace: `traceparent` is the call's span when tracing is on. */
async function queueCall(
  c: Context<HonoEnv>,
  call: SubmitCall,
  opts: { noun?: ItemNoun; watch?: WatchRequest },
  traceparent: string | undefined,
): Promise<{ job: JobView; replayed: boolean; events?: ReadableStream<Uint8Array> | undefined }> {
  const model = modelOrThrow(c, call.model);
  if (call.inputs.length > model.max_inputs_per_request) {
    throw new ApiError(
      400,
      ErrorCode.tooManyInputs,
      `${call.inputs.length} inputs sent; model "${model.name}" takes at most ${model.max_inputs_per_request} per request: split the call`,
    );
  }
  refuseBadInputs(model, call.inputs, opts.noun);
  if (call.pool === "gpu" && !mayUseGpuPool(c.get("config"), c.req.header("Authorization"))) {
    throw new ApiError(
      403,
      ErrorCode.forbidden,
      'this API key may not pin calls to the gpu pool (see GPU_POOL_KEYS); leave "pool" out and the queue routes the call',
    );
  }
  const timeout = call.timeout_ms ?? model.default_timeout_ms;
  const waitMs = call.wait ? timeout + WAIT_GRACE_MS : 0;
  // A call in a session carries the session's state to the worker; its inputs and outputs go to the
  // session's history once it succeeds (ModelQueue appends them), so the conversation outlives any worker.
  // Donors see what they run, so a session's calls run on the trusted pool unless it was created with
  // ?share_with_donors=true.
  let session: SubmitInput["session_link"];
  let pool = call.pool;
  if (call.session !== undefined) {
    const stub = await sessionOf(c, call.session);
    const context = await stub.callContext();
    if (context === null) {
      throw new ApiError(
        404,
        ErrorCode.sessionNotFound,
        `no session ${call.session} for this key (never created, deleted, or expired): create it with PUT /v1/sessions/${call.session}`,
      );
    }
    if (!context.shareWithDonors && model.verification.enabled) {
      if (call.pool === "browser") {
        throw new ApiError(
          409,
          ErrorCode.validation,
          `session ${call.session} does not share its state with donors, so its calls run on the gpu pool: leave out "pool", or create the session with PUT /v1/sessions/${call.session}?share_with_donors=true`,
        );
      }
      pool = "gpu";
    }
    session = { ref: stub.id.toString(), state: context.state };
  }
  const owner = await ownerOf(c);
  const submit: SubmitInput = {
    ...(await jobId(c, model, owner, call)),
    owner,
    inputs: call.inputs,
    priority: call.priority,
    timeout_ms: call.timeout_ms,
    session: call.session,
    pool,
    // Carried to the worker and kept in the job's record; a call without one starts a trace. With tracing
    // on it names the coordinator's span of the call, so the workers' spans nest under it.
    traceparent: traceparent ?? traceparentOrNew(c.req.header("traceparent")),
    session_link: session,
    watch: opts.watch,
  };
  // A caller that hangs up on a waiting call cancels it (the request's signal needs workerd's
  // enable_request_signal flag), so no worker runs what nobody will read.
  let target = submit;
  const signal = c.req.raw.signal;
  const hangUp = () => {
    const shard = queueOfId(target.id) ?? model.name;
    const cancel = queueOf(c, shard)
      .cancelJob(shard, target.id, owner, "hung_up")
      .catch((error) => console.error(`cancelling ${target.id} after its caller hung up failed`, error));
    afterAnswer(c, cancel);
  };
  if (waitMs > 0) signal.addEventListener("abort", hangUp, { once: true });
  // A call that may run in any shard (no session, no Idempotency-Key) is passed on by a full shard to up to
  // two others, so the model refuses it only when they are all full (the power of two choices, on room); only
  // the last refusal counts as rejected.
  const free = call.session === undefined && !submit.request_hash;
  const others = free ? otherShards(model, queueOfId(submit.id) ?? model.name, FULL_SHARD_PASSES) : [];
  let result = await submitTo(c, model, { ...target, passed_on_if_full: others.length > 0 }, waitMs);
  for (const [i, other] of others.entries()) {
    if (result.ok || result.code !== ErrorCode.queueFull || signal.aborted) break;
    target = { ...submit, id: newId(other) };
    result = await submitTo(c, model, { ...target, passed_on_if_full: i < others.length - 1 }, waitMs);
  }
  signal.removeEventListener("abort", hangUp);
  if (!result.ok) {
    const status = REFUSAL_STATUS[result.code] ?? 400;
    const headers: Record<string, string> = result.retryAfterS ? { "Retry-After": String(result.retryAfterS) } : {};
    throw new ApiError(status, result.code, result.message, { headers });
  }
  // Said as Stripe and the IETF Idempotency-Key draft's implementations do: this answer is the first call's job.
  if (result.replayed) c.header("Idempotent-Replayed", "true");
  return { job: result.job, replayed: result.replayed === true, events: result.events };
}

/** One job handed to the queue its id names, asked again (the id makes that idempotent) if the object restarts. */
async function submitTo(
  c: Context<HonoEnv>,
  model: ModelConfig,
  submit: SubmitInput,
  waitMs: number,
): Promise<SubmitResult> {
  const shard = queueOfId(submit.id) ?? model.name;
  const queue = queueOf(c, shard);
  for (let attempt = 1; ; attempt++) {
    try {
      return await queue.submit(shard, submit, waitMs);
    } catch (error) {
      if (attempt >= SUBMIT_TRIES) {
        throw new ApiError(
          503,
          ErrorCode.upstream,
          `the queue of "${model.name}" is unavailable (${String(error)}); retry the call`,
        );
      }
    }
  }
}

/**
 * A job a caller waited for, if it succeeded; otherwise the error to answer: 504 when it is still open
 * or expired, 409 when it was cancelled, 422 when the worker rejected inputs (the caller's to fix), 502 when
 * items ran out of attempts.
 */
export function succeededOrThrow(job: JobView): JobView & { status: "succeeded" } {
  if (!FINAL_STATUSES.includes(job.status)) {
    // The queue ends every job by its deadline; a waiting call that still sees it open got no answer in time.
    throw new ApiError(
      504,
      ErrorCode.expired,
      `no result within the request's timeout; the job may still finish: GET /v1/jobs/${job.id}`,
      { extra: { id: job.id, status: job.status } },
    );
  }
  if (job.status === "succeeded") return job as JobView & { status: "succeeded" };
  const error = job.error ?? { code: ErrorCode.failed, message: "job failed" };
  const extra = {
    id: job.id,
    model: job.model,
    status: job.status,
    outputs: job.outputs,
    errors: job.errors,
    timings: job.timings,
  };
  if (job.status === "expired") throw new ApiError(504, error.code, error.message, { extra });
  if (job.status === "cancelled") throw new ApiError(409, error.code, error.message, { extra });
  const ours = job.errors?.some((e) => e.code === ErrorCode.maxAttempts) ?? false;
  throw new ApiError(ours ? 502 : 422, error.code, error.message, { extra });
}
