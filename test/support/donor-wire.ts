// The network side of test/support/donor-process.ts: every request and socket a donor opens leaves from
// one local address (any of 127.0.0.0/8 on Linux), so the coordinator sees each donor on its own client
// network, as wrangler dev fills CF-Connecting-IP from the real peer. Also used by its tests and bench:donors.
import http from "node:http";
import WebSocket from "ws";
import type { DonorTokenResponse } from "../../shared/index.ts";
import type { FetchFn } from "../../shared/runner/model-files.ts";
import type { SocketLike } from "../../shared/worker-loop/model-connection.ts";
import { lostByDevProxy } from "./dev-proxy-loss.ts";

export interface BoundAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

export interface BoundRequest {
  method?: string;
  headers?: Record<string, string>;
  /** Sent as JSON. */
  json?: unknown;
  /** The local address the connection leaves from; the system's choice when undefined. */
  localAddress?: string;
  timeoutMs?: number;
}

/** One HTTP exchange from `localAddress` (node:http: fetch cannot choose its local address). */
export async function boundRequest(url: string, req: BoundRequest = {}): Promise<BoundAnswer> {
  const answer = await boundRequestOnce(url, req);
  const retryAfter = answer.headers["retry-after"];
  if (!lostByDevProxy(answer.status, typeof retryAfter === "string" ? retryAfter : null, answer.body.toString())) {
    return answer;
  }
  console.error(
    `dev proxy lost ${req.method ?? (req.json === undefined ? "GET" : "POST")} ${url} on its idle connection; sending it again`,
  );
  return boundRequestOnce(url, req);
}

function boundRequestOnce(url: string, req: BoundRequest): Promise<BoundAnswer> {
  const body = req.json === undefined ? undefined : JSON.stringify(req.json);
  return new Promise((resolve, reject) => {
    const request = http.request(
      url,
      {
        method: req.method ?? (body === undefined ? "GET" : "POST"),
        localAddress: req.localAddress,
        headers: {
          ...(body === undefined ? {} : { "Content-Type": "application/json" }),
          "Content-Length": String(body === undefined ? 0 : Buffer.byteLength(body)),
          ...req.headers,
        },
        timeout: req.timeoutMs ?? 120_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("error", reject);
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
        );
      },
    );
    request.on("timeout", () => request.destroy(new Error(`no answer from ${url} within the timeout`)));
    request.on("error", reject);
    request.end(body);
  });
}

/** The body as JSON, or undefined when it is not JSON (an empty 204, an HTML error page). */
export function jsonOf(answer: BoundAnswer): any {
  try {
    return JSON.parse(answer.body.toString());
  } catch {
    return undefined;
  }
}

/** A refused token: the coordinator's status and message, so a caller can tell a 429 from a 403. */
export class TokenRefused extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(`donor token refused: ${status} ${message}`);
  }
}

/** `POST /v1/donors/token` as the embed sends it (a page's Origin and its site key), from `localAddress`. */
export async function requestDonorToken(opts: {
  coordinator: string;
  siteKey: string;
  origin: string;
  models?: string[];
  localAddress?: string;
}): Promise<DonorTokenResponse> {
  const answer = await boundRequest(`${opts.coordinator}/v1/donors/token`, {
    headers: { Origin: opts.origin },
    json: { site_key: opts.siteKey, ...(opts.models ? { models: opts.models } : {}) },
    localAddress: opts.localAddress,
  });
  const body = jsonOf(answer);
  if (answer.status !== 200) throw new TokenRefused(answer.status, body?.error?.message ?? answer.body.toString());
  return body as DonorTokenResponse;
}

/** A FetchFn for the model loader whose downloads also leave from `localAddress`. */
export function boundFetch(localAddress: string | undefined): FetchFn {
  return async (url) => {
    const answer = await boundRequest(url, { localAddress });
    return new Response(answer.status === 204 ? null : new Uint8Array(answer.body), { status: answer.status });
  };
}

/**
 * A worker socket as a page opens one (the token in ?token=, the page's Origin), but from `localAddress`.
 * `ws` sets the Origin header from its `origin` option.
 */
export function boundSocket(origin: string, localAddress: string | undefined) {
  return (url: string, token: string | undefined): SocketLike =>
    new WebSocket(token ? `${url}&token=${encodeURIComponent(token)}` : url, {
      origin,
      localAddress,
      perMessageDeflate: false,
    }) as unknown as SocketLike;
}
