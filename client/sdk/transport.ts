// The one way the SDK reaches the coordinator: builds each request (key, JSON body, traceparent, signal),
// asks again after 429/503 as retry.ts says, and turns every other non-2xx answer into a typed error
// (errors.ts). Used by client.ts and sessions.ts.
import { parseTraceparent } from "../../shared/protocol/trace.ts";
import { ClientErrorCode, EdgeSwarmError, errorOfBody } from "./errors.ts";
import { parseRetryAfter, RETRY_STATUSES, retryDelayMs, sleep } from "./retry.ts";
import type { CallOptions, FetchLike } from "./types.ts";

export interface TransportOptions {
  baseUrl: string;
  apiKey?: string | undefined;
  fetch: FetchLike;
  maxRetries: number;
}

export interface Call extends CallOptions {
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  /** From the root, e.g. "/v1/jobs/abc" (ids already escaped). */
  path: string;
  /** Sent as JSON. */
  body?: unknown;
  contentType?: string;
  accept?: string;
  headers?: Record<string, string | undefined>;
}

export class Transport {
  private readonly baseUrl: string;

  constructor(private readonly opts: TransportOptions) {
    this.baseUrl = opts.baseUrl.replace(/\/+$/, "");
  }

  /** The answer when it is a 2xx; otherwise the typed error, once 429s and 503s have had their retries. */
  async send(call: Call): Promise<Response> {
    const init: RequestInit = {
      method: call.method,
      headers: this.headers(call),
      body: call.body === undefined ? undefined : JSON.stringify(call.body),
      signal: call.signal,
    };
    for (let retry = 1; ; retry++) {
      const res = await this.opts.fetch(`${this.baseUrl}${call.path}`, init);
      if (res.ok) return res;
      const retryAfterS = parseRetryAfter(res.headers.get("Retry-After"));
      if (RETRY_STATUSES.has(res.status) && retry <= this.opts.maxRetries) {
        const wait = retryDelayMs(retry, retryAfterS);
        if (wait !== null) {
          // An unread body would hold its connection (undici) until garbage collection.
          await res.body?.cancel();
          await sleep(wait, call.signal);
          continue;
        }
      }
      const etag = res.headers.get("ETag") ?? undefined;
      throw errorOfBody(res.status, await readText(res, call.signal), { retryAfterS, etag });
    }
  }

  /** send(), then the body as JSON that passes `check`; an answer that does not is an invalid_response error. */
  async json<T>(call: Call, check: (body: unknown) => boolean): Promise<{ body: T; res: Response }> {
    const res = await this.send(call);
    const what = `the answer to ${call.method} ${call.path}`;
    const text = await readText(res, call.signal);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw invalidResponse(res.status, `${what} is not JSON: ${text.slice(0, 200)}`);
    }
    if (!check(body)) throw invalidResponse(res.status, `${what} does not have the shape this SDK expects`, body);
    return { body: body as T, res };
  }

  private headers(call: Call): Record<string, string> {
    const headers: Record<string, string> = { Accept: call.accept ?? "application/json" };
    if (this.opts.apiKey !== undefined) headers.Authorization = `Bearer ${this.opts.apiKey}`;
    if (call.body !== undefined) headers["Content-Type"] = call.contentType ?? "application/json";
    if (call.traceparent !== undefined) {
      // The coordinator would ignore a malformed one and start a new trace; say so here instead.
      if (!parseTraceparent(call.traceparent)) {
        throw new TypeError(
          `traceparent ${JSON.stringify(call.traceparent)} is not W3C trace context (00-<32 hex>-<16 hex>-<2 hex>)`,
        );
      }
      headers.traceparent = call.traceparent;
    }
    for (const [name, value] of Object.entries(call.headers ?? {})) if (value !== undefined) headers[name] = value;
    return headers;
  }
}

/** Just the per-call options out of a method's options (which also hold body fields and conditions). */
export function callOptions(opts: CallOptions): CallOptions {
  return { signal: opts.signal, traceparent: opts.traceparent };
}

export function invalidResponse(status: number, message: string, body?: unknown): EdgeSwarmError {
  return new EdgeSwarmError({
    status,
    code: ClientErrorCode.invalidResponse,
    message,
    details: body === undefined ? {} : { body },
  });
}

/** A body being read that stops when its call's signal aborts (bodyReader). */
export interface BodyReader {
  /** The next chunk; once the signal has aborted, a rejection with its reason instead. */
  read(): ReturnType<ReadableStreamDefaultReader<Uint8Array>["read"]>;
  /** Stops the download (a no-op on a body read to its end) and forgets the signal. */
  close(): void;
}

/**
 * Reads `body`, which stops the moment `signal` aborts: the read waiting is ended and the next throws the
 * signal's reason. A fetch given the signal is meant to end its body itself, but Node 20's (undici) can leave a
 * read pending for ever when the abort comes just after the headers, so the SDK cancels the body itself,
 * which ends any read waiting on it, whatever the fetch did. One listener on the signal a body, however
 * many reads.
 */
export function bodyReader(body: ReadableStream<Uint8Array>, signal: AbortSignal | undefined): BodyReader {
  const reader = body.getReader();
  const onAbort = () => {
    reader.cancel(signal?.reason).catch(() => {});
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  return {
    async read() {
      signal?.throwIfAborted();
      let chunk: Awaited<ReturnType<typeof reader.read>>;
      try {
        chunk = await reader.read();
      } catch (error) {
        // A fetch that errors the body on abort with an error of its own: the call still ends with the reason.
        signal?.throwIfAborted();
        throw error;
      }
      // A chunk, or the end, that came with the abort is not delivered: the call ends with its reason.
      signal?.throwIfAborted();
      return chunk;
    },
    close() {
      signal?.removeEventListener("abort", onAbort);
      // Not awaited: a body broken off by an abort in Node's fetch may never settle its cancel either.
      reader.cancel().catch(() => {});
    },
  };
}

/** The answer's body as text, read with bodyReader. */
async function readText(res: Response, signal: AbortSignal | undefined): Promise<string> {
  if (!res.body) return "";
  const reader = bodyReader(res.body, signal);
  const decoder = new TextDecoder();
  let text = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return text + decoder.decode();
      text += decoder.decode(value, { stream: true });
    }
  } finally {
    reader.close();
  }
}
