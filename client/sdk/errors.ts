// The SDK's exceptions: every non-2xx answer becomes an EdgeSwarmError (a subclass for the common cases)
// carrying the coordinator's status and `code`, read from its one error shape (shared/protocol/errors.ts),
// or from OpenAI's at /v1/embeddings. Thrown by transport.ts; callers catch a class or match on `code`.
import type { ErrorCode } from "../../shared/protocol/errors.ts";

/** Codes the SDK gives itself, where the coordinator's answer carried none. */
export const ClientErrorCode = {
  /** A non-2xx answer without the error shape (a proxy's HTML page, say). */
  http: "http_error",
  /** An answer the SDK could not read: not JSON, or not the shape the endpoint promises. */
  invalidResponse: "invalid_response",
  /** An event stream that closed before its job ended. */
  streamEnded: "stream_ended",
} as const;
export type ClientErrorCode = (typeof ClientErrorCode)[keyof typeof ClientErrorCode];

export interface ErrorInit {
  status: number;
  code: string;
  message: string;
  /** The answer's other fields: the job's id, status, outputs and errors of a failed call, OpenAI's `param`... */
  details?: Record<string, unknown>;
  retryAfterS?: number | undefined;
  etag?: string | undefined;
}

export class EdgeSwarmError extends Error {
  override name = "EdgeSwarmError";
  /** The HTTP status; 2xx only for an answer the SDK could not read (code invalid_response or stream_ended). */
  readonly status: number;
  /** The coordinator's stable code (ErrorCode), or the SDK's own (ClientErrorCode). */
  readonly code: ErrorCode | ClientErrorCode | (string & {});
  readonly details: Record<string, unknown>;
  /** The answer's Retry-After, in seconds, when it had one. */
  readonly retryAfterS: number | undefined;

  constructor(init: ErrorInit) {
    super(init.message);
    this.status = init.status;
    this.code = init.code;
    this.details = init.details ?? {};
    this.retryAfterS = init.retryAfterS;
  }

  /** The job the error is about, where the answer names one (failed, expired and timed-out calls). */
  get jobId(): string | undefined {
    return typeof this.details.id === "string" ? this.details.id : undefined;
  }
}

/** 400: the request is malformed or breaks a model's limits (validation_failed, too_many_inputs, bad_id...). */
export class BadRequestError extends EdgeSwarmError {
  override name = "BadRequestError";
}

/** 401: no API key, or one the coordinator does not know. */
export class UnauthorizedError extends EdgeSwarmError {
  override name = "UnauthorizedError";
}

/** 403: the key may not do this (pin a call to the gpu pool, say). */
export class ForbiddenError extends EdgeSwarmError {
  override name = "ForbiddenError";
}

/** 404: unknown_model, job_not_found, session_not_found, not_found (model_not_found at /v1/embeddings). */
export class NotFoundError extends EdgeSwarmError {
  override name = "NotFoundError";
}

/**
 * 409: the call conflicts with what the coordinator has: a job that was cancelled (code `cancelled`), an
 * Idempotency-Key reused with another body (`idempotency_key_reused`), a job that had ended before a cancel
 * (`job_finished`), a session call pinned to a pool its session may not use.
 */
export class ConflictError extends EdgeSwarmError {
  override name = "ConflictError";
}

/** 412: an If-Match or If-None-Match that did not hold; `etag` is the session's current one, if it exists. */
export class PreconditionFailedError extends EdgeSwarmError {
  override name = "PreconditionFailedError";
  readonly etag: string | undefined;
  constructor(init: ErrorInit) {
    super(init);
    this.etag = init.etag;
  }
}

/** 413: a body, or the session state it would make, over the coordinator's limit. */
export class PayloadTooLargeError extends EdgeSwarmError {
  override name = "PayloadTooLargeError";
}

/**
 * 422 (inputs refused, the caller's to fix: by the coordinator before queueing, with per-input `errors`
 * in `details` and no job; or by a worker) or 502 (inputs ran out of delivery attempts): `details` of a
 * job that ran holds its id, status, outputs (null where failed) and per-input errors.
 */
export class JobFailedError extends EdgeSwarmError {
  override name = "JobFailedError";
}

/** 429 queue_full: the model's queue is at max_queue_size; thrown once the SDK's retries are spent. */
export class QueueFullError extends EdgeSwarmError {
  override name = "QueueFullError";
}

/**
 * 503: a queue the coordinator could not reach, or a model that rejects calls while no worker is connected
 * (code `no_worker_connected`); thrown once the SDK's retries are spent.
 */
export class UnavailableError extends EdgeSwarmError {
  override name = "UnavailableError";
}

/** 504: the job expired, or was still open at the call's deadline (`jobId` can still be read or watched). */
export class TimeoutError extends EdgeSwarmError {
  override name = "TimeoutError";
}

type ErrorClass = new (init: ErrorInit) => EdgeSwarmError;

const CLASS_OF_STATUS: Record<number, ErrorClass> = {
  400: BadRequestError,
  401: UnauthorizedError,
  403: ForbiddenError,
  404: NotFoundError,
  409: ConflictError,
  412: PreconditionFailedError,
  413: PayloadTooLargeError,
  422: JobFailedError,
  429: QueueFullError,
  502: JobFailedError,
  503: UnavailableError,
  504: TimeoutError,
};

export function errorOfStatus(init: ErrorInit): EdgeSwarmError {
  return new (CLASS_OF_STATUS[init.status] ?? EdgeSwarmError)(init);
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * The error a refusal's body names: {"error": {code, message}, ...extra} (EdgeSwarm), or
 * {"error": {message, type, param, code}} (OpenAI); anything else keeps its status with code http_error.
 */
export function errorOfBody(
  status: number,
  text: string,
  extra: Pick<ErrorInit, "retryAfterS" | "etag">,
): EdgeSwarmError {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  if (isRecord(body) && isRecord(body.error) && typeof body.error.message === "string") {
    const { error, ...rest } = body;
    const { code, message, ...more } = error;
    return errorOfStatus({
      status,
      code: typeof code === "string" ? code : ClientErrorCode.http,
      message: message as string,
      details: { ...more, ...rest },
      ...extra,
    });
  }
  const snippet = text.length > 200 ? `${text.slice(0, 200)}…` : text;
  return errorOfStatus({
    status,
    code: ClientErrorCode.http,
    message: `HTTP ${status}${snippet ? `: ${snippet}` : ""}`,
    ...extra,
  });
}
