// Every error the edge answers has one shape, {"error":{"code","message"}}; routes throw ApiError and
// app.onError turns anything thrown into that shape. Bad input is a 4xx; only our own faults are 5xx.
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { ErrorCode, errorBody } from "../shared/index.ts";
import { ConfigError } from "./config.ts";

export class ApiError extends HTTPException {
  readonly code: string;
  readonly extra: Record<string, unknown>;
  readonly headers: Record<string, string>;

  constructor(
    status: ContentfulStatusCode,
    code: string,
    message: string,
    opts: { extra?: Record<string, unknown>; headers?: Record<string, string> } = {},
  ) {
    super(status, { message });
    this.code = code;
    this.extra = opts.extra ?? {};
    this.headers = opts.headers ?? {};
  }
}

const CODE_OF_STATUS: Record<number, string> = {
  400: ErrorCode.badRequest,
  401: ErrorCode.unauthorized,
  403: ErrorCode.forbidden,
  404: ErrorCode.notFound,
  413: ErrorCode.payloadTooLarge,
};

export function onError(err: Error, c: Context): Response {
  if (err instanceof ApiError) {
    return c.json({ ...errorBody(err.code, err.message), ...err.extra }, err.status, err.headers);
  }
  if (err instanceof HTTPException) {
    const status = err.status as ContentfulStatusCode;
    return c.json(errorBody(CODE_OF_STATUS[status] ?? ErrorCode.badRequest, err.message || "request refused"), status);
  }
  if (err instanceof ConfigError) {
    return c.json(errorBody(ErrorCode.internal, `the coordinator is misconfigured: ${err.message}`), 500);
  }
  console.error("unhandled error", err);
  return c.json(errorBody(ErrorCode.internal, "internal error; the request may be retried"), 500);
}

/**
 * Any error as a bare {"error": "<message>"}, the shape of the Open Inference Protocol and of Hugging Face's
 * inference API, with the status (and Retry-After) the native API would give.
 */
export function messageOnlyError(err: Error, c: Context): Response {
  if (err instanceof HTTPException) {
    const headers = err instanceof ApiError ? err.headers : {};
    return c.json({ error: err.message || "request refused" }, err.status as ContentfulStatusCode, headers);
  }
  if (err instanceof ConfigError) return c.json({ error: `the coordinator is misconfigured: ${err.message}` }, 500);
  console.error("unhandled error", err);
  return c.json({ error: "internal error; the request may be retried" }, 500);
}
