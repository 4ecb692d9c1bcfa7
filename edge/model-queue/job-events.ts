// What happens to a job, as it happens, for GET /v1/jobs/{id}/events and POST /v1/infer with stream:
// the job's item counts whenever they change (queued, leased), a generating input's tokens, each input's output (or error) as soon as
// it is final, then the job's end (completed, failed, expired or cancelled) with its whole view. ModelQueue calls
// flush() after every change it makes; with no one watching, that costs nothing. Streams are written ready for the
// caller, as Server-Sent Events or as OpenAI's chunks (edge/openai-stream.ts): the edge hands the bytes on unread
// (edge/event-streams.ts), where relaying each event through the Worker cost a generated token more coordinator
// CPU than the queue's own work. A session's job ends its stream once its turn is in the session's history.
import { ErrorCode, FINAL_STATUSES, type JobStatus, type TokenLogprob } from "../../shared/index.ts";
import type { JobEvent } from "../../shared/protocol/job-events.ts";
import { type OpenAiStreamSpec, openAiStream } from "../openai-stream.ts";
import type { Sql } from "../sql.ts";
import type { JobStore } from "./job-store.ts";
import { SESSION_RETRY_MS } from "./session-appender.ts";

export type { JobEvent } from "../../shared/protocol/job-events.ts";

/** The SSE event that ends a job's stream, by the job's final status. */
const END_EVENT = { succeeded: "completed", failed: "failed", expired: "expired", cancelled: "cancelled" } as const;

interface Watch {
  jobId: string;
  /** WatchRequest.key. */
  key: string;
  /** Indices whose output or error was sent. */
  sent: Set<number>;
  /** Per generating index: how far into its kept tokens the `token` events sent went. */
  streamed: Map<number, Sent>;
  /** The item counts last sent, as JSON. */
  counts: string;
  /** The job's status and item counts when it was last looked at, and its tokens when last sent. */
  seen: string;
  tokens: number;
  /** Its succeeded and failed items when last looked at. */
  finals: number;
  /** The stream's text for an event (EventFormat). */
  write: (event: JobEvent) => string;
  controller: ReadableStreamDefaultController<Uint8Array>;
  /** The key whose stream it is (edge/submit.ts ownerOf); undefined under AUTH=open. */
  owner: string | undefined;
  /** Something happened that its reader has not been told, held back while the stream was full (see holdBack). */
  behind: boolean;
}

/**
 * How far into a generating input's kept tokens (token-stream.ts) a watcher was sent: the tokens, the
 * characters of the kept JSON array they end at, and the bytes of the text (UTF-8, as SQLite keeps it), so the
 * rest is read with substr and a long reply costs each frame its new tokens only, not all kept so far.
 */
interface Sent {
  tokens: number;
  arrayChars: number;
  textBytes: number;
  /** Characters of the kept log-probabilities array (ASCII JSON), when the input asked for them. */
  logprobChars: number;
}

const NOTHING_SENT: Sent = { tokens: 0, arrayChars: 0, textBytes: 0, logprobChars: 0 };

/**
 * A generating input's tokens kept past `from` (the least any of its watchers was sent): `tokens_after`, the
 * rest of the kept JSON array after the comma that replaced its end (the whole array when from is at its
 * start); `text_after`, the text's rest as bytes (substr on text stops at a NUL, which a token may decode to).
 * Both null when there is nothing new.
 */
interface GeneratingItem extends Record<string, SqlStorageValue> {
  idx: number;
  gen_count: number;
  from_tokens: number;
  from_array: number;
  from_text: number;
  from_logprobs: number;
  tokens_after: string | null;
  text_after: ArrayBuffer | null;
  /** The log-probabilities array's rest, as tokens_after (null when the input did not ask for them). */
  logprobs_after: string | null;
}

/**
 * What a watcher is told from: a job's status, its items by state, the tokens its items have accepted, and
 * whether its end waits for its turn to reach its session.
 */
interface JobNow {
  status: JobStatus;
  items: Record<string, number>;
  tokens: number;
  /** When the job's end may wait for its session no longer (finished_at + SESSION_END_WAIT_MS), while it waits. */
  awaitingSessionUntil: number | null;
}

/**
 * `sse`: each event as `event:`, `data:` and an `id:` counting from 1; `{openai}`: OpenAI's stream chunks
 * (edge/openai-stream.ts). Either way a comment every KEEP_ALIVE_MS keeps an idle connection open.
 */
export type EventFormat = "sse" | { openai: OpenAiStreamSpec };

/**
 * A stream asked of the queue: its format, and a key the edge makes (newWatch) to end it when its caller hangs
 * up. The edge says so (ModelQueue.unwatch) as soon as its pipe finds the caller gone, because the stream's own
 * cancel does not reach this object: workerd does not carry it back over RPC to the source
 * (cloudflare/workerd#7298; on Miniflare, not in a minute of keep-alives whose writes failed), so a stream
 * whose caller left held its place (MAX_WATCHERS_PER_OWNER) until its job ended.
 */
export interface WatchRequest {
  format: EventFormat;
  key: string;
}

export function newWatch(format: EventFormat): WatchRequest {
  return { format, key: crypto.randomUUID() };
}

function sseText(): (event: JobEvent) => string {
  let id = 0;
  return (e) => `event: ${e.event}\ndata: ${JSON.stringify(e.data)}\nid: ${++id}\n\n`;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Event streams one queue object serves at once; more are refused (429) until some end. */
export const MAX_WATCHERS = 256;
/** Of those, the most one caller key may hold, so one key cannot take every stream of a queue from the others. */
export const MAX_WATCHERS_PER_OWNER = 64;
/**
 * Bytes written to a stream and not yet taken by its reader past which the queue writes it no more until the
 * reader catches up: then it is told what it missed in as few events as say it (the latest counts, the tokens
 * since its last, the outputs not sent, the end). Nothing is written to a full stream, so one that is not read
 * holds at most this and the one event that filled it (a count, an input's tokens or output, the end's view),
 * however long its job streams.
 */
export const STREAM_HIGH_WATER_BYTES = 16 * 1024;
/** Why a stream may not start (JobEvents.refusal): the queue serves all it will, or the caller's key does. */
export type StreamRefusal = "full" | "owner_full";

/** What a caller refused a stream is told; each path adds what to do instead. */
export function streamRefusalMessage(why: StreamRefusal, model: string): string {
  return why === "full"
    ? `the queue of "${model}" serves as many event streams as it will (${MAX_WATCHERS})`
    : `this API key holds as many event streams on the queue of "${model}" as one key may (${MAX_WATCHERS_PER_OWNER}); end one`;
}

/** How often an SSE stream with nothing to say sends a comment, so proxies and clients keep it open. */
export const KEEP_ALIVE_MS = 15_000;
const KEEP_ALIVE = encoder.encode(": keep-alive\n\n");
/**
 * The longest a session's finished job holds back its end event for its turn to be appended: an append that
 * fails is tried again after SESSION_RETRY_MS, when the stream ends anyway.
 */
const SESSION_END_WAIT_MS = SESSION_RETRY_MS;

export class JobEvents {
  private readonly watches = new Set<Watch>();
  private keepAlive: ReturnType<typeof setInterval> | undefined;
  private lookAgain: { at: number; timer: ReturnType<typeof setTimeout> } | undefined;

  constructor(
    private readonly sql: Sql,
    private readonly jobs: JobStore,
    private readonly model: () => string,
  ) {}

  /**
   * Why another stream may not start, or null: the queue serves MAX_WATCHERS (each costs a few reads on every
   * change to the queue), and `owner`, a caller key, holds MAX_WATCHERS_PER_OWNER of them. A stream asked
   * again with the same key (the edge's retry of a call whose answer it lost) takes its earlier one's place.
   */
  refusal(owner: string | undefined, key: string): StreamRefusal | null {
    let all = 0;
    let held = 0;
    for (const w of this.watches) {
      if (w.key === key) continue;
      all++;
      if (owner !== undefined && w.owner === owner) held++;
    }
    if (all >= MAX_WATCHERS) return "full";
    return held >= MAX_WATCHERS_PER_OWNER ? "owner_full" : null;
  }

  /**
   * The job's events from now, in `format`, for `owner`; the stream ends with the job. Written as the reader
   * takes them (STREAM_HIGH_WATER_BYTES).
   */
  watch(jobId: string, { format, key }: WatchRequest, owner: string | undefined): ReadableStream<Uint8Array> {
    let watch: Watch | undefined;
    return new ReadableStream<Uint8Array>(
      {
        start: (controller) => {
          // An earlier try's stream the edge never got (its answer was lost) is replaced, not kept beside.
          this.unwatch(key);
          watch = {
            jobId,
            key,
            sent: new Set(),
            streamed: new Map(),
            counts: "",
            seen: "",
            tokens: 0,
            finals: 0,
            write: format === "sse" ? sseText() : (openAiStream(format.openai) as (event: JobEvent) => string),
            controller,
            owner,
            behind: false,
          };
          this.watches.add(watch);
          this.keepAlive ??= setInterval(() => this.sendKeepAlive(), KEEP_ALIVE_MS);
          this.flushOne(watch, this.lookAt([jobId]).get(jobId));
        },
        // The reader took what was written: what it was not told while the stream was full, it is told now.
        pull: () => {
          if (!watch?.behind || !this.watches.has(watch)) return;
          watch.behind = false;
          this.flushOne(watch, this.lookAt([jobId]).get(jobId));
        },
        cancel: () => {
          if (watch) this.watches.delete(watch);
        },
      },
      new ByteLengthQueuingStrategy({ highWaterMark: STREAM_HIGH_WATER_BYTES }),
    );
  }

  /** Ends the stream watch() made with `key` (its caller hung up); nothing if it has ended. */
  unwatch(key: string): void {
    for (const w of this.watches) {
      if (w.key !== key) continue;
      this.watches.delete(w);
      this.close(w);
    }
  }

  /**
   * Sends every watcher what changed since it was last told: one read looks at every watched job, and only a
   * job whose status, item counts or tokens moved costs its watcher more.
   */
  flush(): void {
    const ready = [...this.watches].filter((w) => !this.holdBack(w));
    if (ready.length === 0) return;
    const now = this.lookAt([...new Set(ready.map((w) => w.jobId))]);
    for (const watch of ready) this.flushOne(watch, now.get(watch.jobId));
  }

  /**
   * Sends the watchers of `jobs` their new tokens: all a token delta changes is its own job's tokens, so the
   * job's status, counts and outputs are not read again (one read a watcher, not four).
   */
  flushTokens(jobs: readonly string[]): void {
    const ready = [...this.watches].filter((w) => jobs.includes(w.jobId) && !this.holdBack(w));
    if (ready.length === 0) return;
    const generating = this.generating(ready);
    for (const watch of ready) if (!this.sendTokens(watch, generating.get(watch.jobId) ?? [])) this.resumeLater(watch);
  }

  /** Whether its reader has not taken what was written (STREAM_HIGH_WATER_BYTES): so, noted behind. */
  private holdBack(w: Watch): boolean {
    if ((w.controller.desiredSize ?? 1) > 0) return false;
    w.behind = true;
    return true;
  }

  /** Each job's JobNow, in one read; a job that is gone is missing. */
  private lookAt(jobIds: readonly string[]): Map<string, JobNow> {
    const found = new Map<string, JobNow>();
    const now = Date.now();
    for (const r of this.sql.all<{
      id: string;
      status: JobStatus;
      session_pending: number;
      finished_at: number | null;
      state: string | null;
      n: number;
      tokens: number;
    }>(
      `SELECT jobs.id, jobs.status, jobs.session_pending, jobs.finished_at, items.state, COUNT(items.seq) AS n,
         TOTAL(items.gen_count) AS tokens
       FROM jobs LEFT JOIN items ON items.job_id = jobs.id
       WHERE jobs.id IN (SELECT value FROM json_each(?)) GROUP BY jobs.id, items.state ORDER BY items.state`,
      JSON.stringify(jobIds),
    )) {
      const until = (r.finished_at ?? now) + SESSION_END_WAIT_MS;
      const awaitingSessionUntil = r.session_pending === 1 && now < until ? until : null;
      const job = found.get(r.id) ?? { status: r.status, items: {}, tokens: 0, awaitingSessionUntil };
      found.set(r.id, job);
      if (r.state !== null) job.items[r.state] = r.n;
      job.tokens += r.tokens;
    }
    return found;
  }

  private flushOne(w: Watch, job: JobNow | undefined): void {
    if (!job) {
      // Dropped after result_ttl_ms while watched (its reader stopped reading before the job's end reached
      // it): what became of the job is gone with it, and the end says so rather than name an outcome.
      const message = `job ${w.jobId}'s results passed its model's result_ttl_ms before this stream read them; read streams as they come, or raise result_ttl_ms`;
      const error = { code: ErrorCode.resultExpired, message };
      this.end(w, { event: "expired", data: { id: w.jobId, model: this.model(), status: "expired", error } });
      return;
    }
    const { items } = job;
    const final = FINAL_STATUSES.includes(job.status);
    // A session's job ends once its turn is in the session's history, so the caller's next turn sees it; a
    // timer ends it when the wait runs out, should the session not answer by then.
    if (final && job.awaitingSessionUntil !== null) this.lookAgainAt(job.awaitingSessionUntil);
    const counts = JSON.stringify(items);
    const seen = `${job.status} ${job.awaitingSessionUntil !== null} ${counts}`;
    const moved = seen !== w.seen;
    if (!moved && job.tokens === w.tokens) return;
    w.seen = seen;
    if (counts !== w.counts && !final) {
      w.counts = counts;
      this.send(w, {
        event: (items.leased ?? 0) > 0 ? "leased" : "queued",
        data: { id: w.jobId, status: job.status, items },
      });
    }
    if (job.tokens !== w.tokens && !this.sendTokens(w, this.generating([w]).get(w.jobId) ?? [])) {
      this.resumeLater(w);
      return;
    }
    if (!moved) return;
    // Outputs are read only when the count of final items changed (an item put back by a replay can leave it
    // the same as the outputs sent).
    const finals = (items.succeeded ?? 0) + (items.failed ?? 0);
    if (finals !== w.finals && !this.sendOutputs(w)) {
      this.resumeLater(w);
      return;
    }
    w.finals = finals;
    if (!final || job.awaitingSessionUntil !== null) return;
    // The end, with the whole view, once the reader has taken what came before it.
    if (this.holdBack(w)) {
      this.resumeLater(w);
      return;
    }
    const view = this.jobs.view(w.jobId);
    if (view && view.status !== "queued" && view.status !== "running") {
      const { created_at: _created, ...rest } = view;
      this.end(w, { event: END_EVENT[view.status], data: rest });
    }
  }

  /**
   * The stream filled before all there was to say was written: the rest (sent tokens, outputs and the end are
   * each remembered, so nothing goes twice) when its reader takes what was (pull).
   */
  private resumeLater(w: Watch): void {
    w.seen = "";
    w.tokens = -1;
    w.finals = -1;
    w.behind = true;
  }

  /** Each input's output (or error) not sent yet; false when the stream filled before all were (see holdBack). */
  private sendOutputs(w: Watch): boolean {
    for (const item of this.sql.all<{
      idx: number;
      state: string;
      output: string | null;
      error_code: string | null;
      error_message: string | null;
    }>(
      `SELECT idx, state, output, error_code, error_message FROM items
       WHERE job_id = ? AND state IN ('succeeded', 'failed') AND idx NOT IN (SELECT value FROM json_each(?))
       ORDER BY idx`,
      w.jobId,
      JSON.stringify([...w.sent]),
    )) {
      w.sent.add(item.idx);
      this.send(
        w,
        item.state === "succeeded"
          ? { event: "output", data: { index: item.idx, output: JSON.parse(item.output ?? "null") } }
          : {
              event: "error",
              data: { index: item.idx, code: item.error_code ?? "failed", message: item.error_message ?? "" },
            },
      );
      if (this.holdBack(w)) return false;
    }
    return true;
  }

  /**
   * The generating items with tokens of the jobs `watches` watch, in order, each read from the least its
   * watchers were sent (one read whatever their number).
   */
  private generating(watches: readonly Watch[]): Map<string, GeneratingItem[]> {
    const byJob = new Map<string, Watch[]>();
    for (const w of watches) {
      const its = byJob.get(w.jobId);
      if (its) its.push(w);
      else byJob.set(w.jobId, [w]);
    }
    const from: [string, number, number, number, number, number][] = [];
    for (const [jobId, its] of byJob) {
      for (const idx of new Set(its.flatMap((w) => [...w.streamed.keys()]))) {
        const least = its
          .map((w) => w.streamed.get(idx) ?? NOTHING_SENT)
          .reduce((a, b) => (b.tokens < a.tokens ? b : a));
        if (least.tokens > 0) {
          from.push([jobId, idx, least.tokens, least.arrayChars, least.textBytes, least.logprobChars]);
        }
      }
    }
    // Inputs some watcher was sent from are found by their index (items_job), from where the least was sent;
    // the rest of the jobs' generating inputs, none of whose watchers had any of them yet, are read whole.
    return this.sql.grouped<GeneratingItem & { job_id: string }, "job_id">(
      "job_id",
      `WITH f (job_id, idx, t, a, b, l) AS MATERIALIZED
         (SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5 FROM json_each(?2))
       SELECT i.job_id, i.idx, i.gen_count, f.t AS from_tokens, f.a AS from_array, f.b AS from_text,
         f.l AS from_logprobs,
         CASE WHEN i.gen_count > f.t THEN substr(i.gen_tokens, f.a + 1) END AS tokens_after,
         CASE WHEN i.gen_count > f.t THEN substr(CAST(i.gen_text AS BLOB), f.b + 1) END AS text_after,
         CASE WHEN i.gen_count > f.t THEN substr(i.gen_logprobs, f.l + 1) END AS logprobs_after
       FROM f JOIN items AS i ON i.job_id = f.job_id AND i.idx = f.idx
       WHERE i.first_token_at IS NOT NULL AND i.gen_count > 0
       UNION ALL
       SELECT job_id, idx, gen_count, 0, 0, 0, 0, gen_tokens, CAST(gen_text AS BLOB), gen_logprobs FROM items
       WHERE job_id IN (SELECT value FROM json_each(?1)) AND first_token_at IS NOT NULL AND gen_count > 0
         AND (job_id, idx) NOT IN (SELECT job_id, idx FROM f)
       ORDER BY 1, 2`,
      JSON.stringify([...byJob.keys()]),
      JSON.stringify(from),
    );
  }

  /**
   * The tokens of each generating input (`items`, its job's) the watcher has not had yet (token-stream.ts keeps
   * them), before its output: a reader that joins late catches up in one event per input. False when the stream
   * filled before every input's were written.
   */
  private sendTokens(w: Watch, items: readonly GeneratingItem[]): boolean {
    w.tokens = 0;
    for (const item of items) {
      w.tokens += item.gen_count;
      const had = w.streamed.get(item.idx) ?? NOTHING_SENT;
      if (item.gen_count <= had.tokens || item.tokens_after === null) continue;
      // A full stream takes no more: each input's catch-up is one event, written once the reader has room.
      if (this.holdBack(w)) return false;
      const { tokens, text, logprobs, sent } = tokensAfter(item, had);
      w.streamed.set(item.idx, sent);
      this.send(w, {
        event: "token",
        data: { index: item.idx, offset: had.tokens, tokens, text, ...(logprobs ? { logprobs } : {}) },
      });
    }
    return true;
  }

  private send(w: Watch, event: JobEvent): void {
    let text: string;
    try {
      text = w.write(event);
    } catch (error) {
      // An event the stream's format cannot say: end this stream (its caller sees it close) rather than stop
      // the flush of every other one.
      console.error(`job ${w.jobId}: its ${event.event} event could not be written; ending its stream`, error);
      this.watches.delete(w);
      this.close(w);
      return;
    }
    if (text !== "") this.enqueue(w, encoder.encode(text));
  }

  /** A flush at `at` (in memory: a stream lives no longer than the object's isolate). */
  private lookAgainAt(at: number): void {
    if (this.lookAgain && this.lookAgain.at <= at) return;
    if (this.lookAgain) clearTimeout(this.lookAgain.timer);
    const timer = setTimeout(
      () => {
        this.lookAgain = undefined;
        this.flush();
      },
      Math.max(0, at - Date.now()),
    );
    this.lookAgain = { at, timer };
  }

  private enqueue(w: Watch, bytes: Uint8Array): void {
    try {
      w.controller.enqueue(bytes);
    } catch {
      // The reader went away: forget the watch.
      this.watches.delete(w);
    }
  }

  /** A comment to every stream; the timer stops once none is left. */
  sendKeepAlive(): void {
    // A stream its reader has not emptied needs no comment to stay open.
    for (const w of this.watches) if ((w.controller.desiredSize ?? 1) > 0) this.enqueue(w, KEEP_ALIVE);
    if (this.watches.size === 0) {
      clearInterval(this.keepAlive);
      this.keepAlive = undefined;
    }
  }

  private end(w: Watch, event: JobEvent): void {
    this.send(w, event);
    this.watches.delete(w);
    this.close(w);
  }

  private close(w: Watch): void {
    try {
      w.controller.close();
    } catch {
      // already closed or cancelled
    }
  }
}

/**
 * A watcher's new tokens of `item` (read from `item.from_*`, where the watcher `had` got to or before it), and
 * where it gets to with them.
 */
export function tokensAfter(
  item: GeneratingItem,
  had: Sent,
): { tokens: number[]; text: string; logprobs: TokenLogprob[] | undefined; sent: Sent } {
  const arrayAfter = item.tokens_after as string;
  const textAfter = new Uint8Array(item.text_after ?? new ArrayBuffer(0));
  const logprobsAfter = item.logprobs_after;
  // From the array's start the rest is the array itself; from "[5,6]" (5 characters) in "[5,6,7,8]", "7,8]".
  const rest = <T>(after: string, from: number) => JSON.parse(from === 0 ? after : `[${after}`) as T[];
  const sent: Sent = {
    tokens: item.gen_count,
    arrayChars: item.from_array + arrayAfter.length,
    textBytes: item.from_text + textAfter.byteLength,
    logprobChars: item.from_logprobs + (logprobsAfter?.length ?? 0),
  };
  // Another watcher of the job may be further behind: this one skips what it had (whole characters: every
  // text read ends where a delta's did).
  const skip = had.tokens - item.from_tokens;
  return {
    tokens: rest<number>(arrayAfter, item.from_array).slice(skip),
    text: decoder.decode(textAfter.subarray(had.textBytes - item.from_text)),
    logprobs: logprobsAfter ? rest<TokenLogprob>(logprobsAfter, item.from_logprobs).slice(skip) : undefined,
    sent,
  };
}
