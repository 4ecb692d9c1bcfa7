// EdgeSwarm's SDK for callers, in browsers, Node 20+ and workers: `new EdgeSwarmClient({ baseUrl, apiKey })`,
// then infer / submit / job / waitForJob / events / inferStream / models / embeddings / sessions / generation.
// Protocol types are re-exported from shared/, the one place they live.
export type {
  InferRequest,
  ItemError,
  JobStatus,
  JobTrace,
  JobView,
  Pool,
  Timings,
} from "../../shared/protocol/caller.ts";
export { ErrorCode } from "../../shared/protocol/errors.ts";
export type { EmbeddingsResponse } from "../../shared/protocol/openai.ts";
export { type ClientOptions, EdgeSwarmClient, type EmbeddingsOptions, type WaitOptions } from "./client.ts";
export {
  BadRequestError,
  ClientErrorCode,
  ConflictError,
  EdgeSwarmError,
  ForbiddenError,
  JobFailedError,
  NotFoundError,
  PayloadTooLargeError,
  PreconditionFailedError,
  QueueFullError,
  TimeoutError,
  UnauthorizedError,
  UnavailableError,
} from "./errors.ts";
export type { ChatCompletion, ChatDelta, ChatInput, ChatMessage, ChatOptions, Generation } from "./generation.ts";
export { parseRetryAfter, RETRY_DEFAULTS, retryDelayMs } from "./retry.ts";
export type { Sessions, WriteConditions } from "./sessions.ts";
export type * from "./types.ts";
