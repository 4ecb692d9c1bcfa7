// client.sessions: a caller's session documents (edge/routes/sessions.ts): PUT creates or replaces the
// state, PATCH merges into it (JSON Merge Patch, RFC 7396), GET reads it with its history, DELETE ends it.
// Each answer's ETag comes back as `etag`; pass it as ifMatch to write only over what was read.
import { isSessionBody } from "./answer-shapes.ts";
import { callOptions, type Transport } from "./transport.ts";
import type { CallOptions, Session, SessionWrite } from "./types.ts";

export interface WriteConditions {
  /** Write only if the session's ETag is this (or, with "*", if it exists); else PreconditionFailedError. */
  ifMatch?: string | undefined;
  /** "*": write only if there is no such session (create, never replace); else PreconditionFailedError. */
  ifNoneMatch?: string | undefined;
}

const MERGE_PATCH = "application/merge-patch+json";
const path = (id: string) => `/v1/sessions/${encodeURIComponent(id)}`;

interface WriteBody<S> {
  id: string;
  state: S;
  expires_at: number;
}

export class Sessions {
  constructor(private readonly http: Transport) {}

  /** Creates the session; PreconditionFailedError (412) if it exists already. */
  create<S extends object = Record<string, unknown>>(id: string, state: S, opts: CallOptions = {}) {
    return this.put(id, state, { ...callOptions(opts), ifNoneMatch: "*" });
  }

  /** Creates the session or replaces its state (the history stays). */
  async put<S extends object = Record<string, unknown>>(
    id: string,
    state: S,
    opts: CallOptions & WriteConditions = {},
  ): Promise<SessionWrite<S>> {
    const { body, res } = await this.http.json<WriteBody<S>>(
      { method: "PUT", path: path(id), body: state, headers: conditionHeaders(opts), ...callOptions(opts) },
      isSessionBody,
    );
    return { ...body, etag: etagOf(res), created: res.status === 201 };
  }

  /** The state, the history of calls made in the session, its expiry and ETag; NotFoundError if none. */
  async get<S extends object = Record<string, unknown>>(id: string, opts: CallOptions = {}): Promise<Session<S>> {
    const { body, res } = await this.http.json<Omit<Session<S>, "etag">>(
      { method: "GET", path: path(id), ...callOptions(opts) },
      (b) => isSessionBody(b) && Array.isArray((b as { history?: unknown }).history),
    );
    return { ...body, etag: etagOf(res) };
  }

  /** Merges `patch` into the state (RFC 7396: null removes a key, objects merge, the rest replaces). */
  async patch<S extends object = Record<string, unknown>>(
    id: string,
    patch: Record<string, unknown>,
    opts: CallOptions & Pick<WriteConditions, "ifMatch"> = {},
  ): Promise<Omit<SessionWrite<S>, "created">> {
    const { body, res } = await this.http.json<WriteBody<S>>(
      {
        method: "PATCH",
        path: path(id),
        body: patch,
        contentType: MERGE_PATCH,
        headers: conditionHeaders(opts),
        ...callOptions(opts),
      },
      isSessionBody,
    );
    return { ...body, etag: etagOf(res) };
  }

  /** Ends the session (state and history); NotFoundError if there is none. */
  async delete(id: string, opts: CallOptions & Pick<WriteConditions, "ifMatch"> = {}): Promise<void> {
    const res = await this.http.send({
      method: "DELETE",
      path: path(id),
      headers: conditionHeaders(opts),
      ...callOptions(opts),
    });
    await res.body?.cancel();
  }
}

function conditionHeaders(c: WriteConditions): Record<string, string | undefined> {
  return { "If-Match": c.ifMatch, "If-None-Match": c.ifNoneMatch };
}

function etagOf(res: Response): string {
  // Every session answer carries one; "" only from something in between that dropped it.
  return res.headers.get("ETag") ?? "";
}
