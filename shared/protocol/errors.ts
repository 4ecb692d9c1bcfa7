// The one error shape every EdgeSwarm endpoint answers with, and the stable codes in it.
// Callers, workers and the SDK match on `code`; `message` is for the person reading it.

export const ErrorCode = {
  badRequest: "bad_request",
  invalidJson: "invalid_json",
  validation: "validation_failed",
  unauthorized: "unauthorized",
  forbidden: "forbidden",
  notFound: "not_found",
  unknownModel: "unknown_model",
  jobNotFound: "job_not_found",
  leaseNotFound: "lease_not_found",
  sessionNotFound: "session_not_found",
  badId: "bad_id",
  tooManyInputs: "too_many_inputs",
  payloadTooLarge: "payload_too_large",
  /** An If-Match or If-None-Match that does not hold: the resource changed, or exists, since it was read. */
  preconditionFailed: "precondition_failed",
  unsupportedMediaType: "unsupported_media_type",
  queueFull: "queue_full",
  /** Too many requests of one kind from one client address (donor tokens); Retry-After says when to ask again. */
  rateLimited: "rate_limited",
  timeoutTooLong: "timeout_too_long",
  wrongResultCount: "wrong_result_count",
  outputTooLarge: "output_too_large",
  /** A worker's output does not have its task's shape (shared/policy/output-shape.ts). */
  invalidOutput: "invalid_output",
  /** A worker caught answering wrongly gets no leases for a while. */
  quarantined: "quarantined",
  /** A call pinned to the browser pool, with nothing connected that could check a donor's output. */
  noVerifier: "no_verifier",
  leaseStale: "lease_stale",
  tooDeep: "nested_too_deeply",
  expired: "expired",
  /** A job's results passed its model's result_ttl_ms and were forgotten before they were read. */
  resultExpired: "result_expired",
  /** The job was cancelled (DELETE /v1/jobs/{id}, or its caller hung up on a waiting call). */
  cancelled: "cancelled",
  /** An Idempotency-Key already used by this API key with a different request body. */
  idempotencyConflict: "idempotency_key_reused",
  /** A job that has already ended cannot be cancelled. */
  jobFinished: "job_finished",
  /** No worker of any pool that could run the call is connected (a model with reject_without_workers). */
  noWorker: "no_worker_connected",
  failed: "failed",
  invalidInput: "invalid_input",
  workerError: "worker_error",
  leaseExpired: "lease_expired",
  maxAttempts: "max_attempts_exceeded",
  upstream: "upstream_unavailable",
  internal: "internal_error",
  misconfigured: "misconfigured",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface ErrorBody {
  error: { code: string; message: string };
}

export function errorBody(code: string, message: string): ErrorBody {
  return { error: { code, message } };
}
