// What happens to a job, as it happens, for GET /v1/jobs/{id}/events and POST /v1/infer with stream:
// the job's item counts whenever they change (queued, leased), a generating input's tokens, each input's output (or error) as soon as
// it is final, then the job's end (completed, failed, expired or cancelled) with its whole view. ModelQueue calls
// flush() after every change it makes; with no one watching, that costs nothing.
import { FINAL_STATUSES, type JobStatus } from "../../shared/index.ts";
import type { JobEvent } from "../../shared/protocol/job-events.ts";
import type { Sql } from "../sql.ts";
import type { JobStore } from "./job-store.ts";

export type { JobEvent } from "../../shared/protocol/job-events.ts";

/** The SSE event that ends a job's stream, by the job's final status. */
const END_EVENT = { succeeded: "completed", failed: "failed", expired: "expired", cancelled: "cancelled" } as const;

interface Watch {
  jobId: string;
  /** Indices whose output or error was sent. */
  sent: Set<number>;
  /** Per generating index: tokens and characters of text sent in `token` events. */
  streamed: Map<number, { tokens: number; chars: number }>;
  /** The item counts last sent, as JSON. */
  counts: string;
  controller: ReadableStreamDefaultController<Uint8Array>;
}

const encoder = new TextEncoder();

/** Event streams one queue object serves at once; more are refused (429) until some end. */
export const MAX_WATCHERS = 256;

export class JobEvents {
  private readonly watches = new Set<Watch>();

  constructor(
    private readonly sql: Sql,
    private readonly jobs: JobStore,
    private readonly model: () => string,
  ) {}

  /** Whether another watcher may start: each costs a few reads on every change to the queue. */
  get full(): boolean {
    return this.watches.size >= MAX_WATCHERS;
  }

  /** The job's events from now, one JSON line each ({event, data}); the stream ends with the job. */
  watch(jobId: string): ReadableStream<Uint8Array> {
    let watch: Watch | undefined;
    return new ReadableStream<Uint8Array>({
      start: (controller) => {
        watch = { jobId, sent: new Set(), streamed: new Map(), counts: "", controller };
        this.watches.add(watch);
        this.flushOne(watch);
      },
      cancel: () => {
        if (watch) this.watches.delete(watch);
      },
    });
  }

  /** Sends every watcher what changed since it was last told (each watcher told costs a few reads). */
  flush(): void {
    for (const watch of this.watches) this.flushOne(watch);
  }

  /**
   * Sends the watchers of `jobs` their new tokens: all a token delta changes is its own job's tokens, so the
   * job's status, counts and outputs are not read again (one read a watcher, not four).
   */
  flushTokens(jobs: readonly string[]): void {
    for (const watch of this.watches) if (jobs.includes(watch.jobId)) this.sendTokens(watch);
  }

  private flushOne(w: Watch): void {
    const job = this.sql.one<{ status: JobStatus }>("SELECT status FROM jobs WHERE id = ?", w.jobId);
    if (!job) {
      // Dropped after result_ttl_ms while watched: nothing more will happen to it.
      this.end(w, { event: "expired", data: { id: w.jobId, model: this.model(), status: "expired" } });
      return;
    }
    const final = FINAL_STATUSES.includes(job.status);
    const items: Record<string, number> = {};
    for (const r of this.sql.all<{ state: string; n: number }>(
      "SELECT state, COUNT(*) AS n FROM items WHERE job_id = ? GROUP BY state ORDER BY state",
      w.jobId,
    )) {
      items[r.state] = r.n;
    }
    const counts = JSON.stringify(items);
    if (counts !== w.counts && !final) {
      w.counts = counts;
      this.send(w, {
        event: (items.leased ?? 0) > 0 ? "leased" : "queued",
        data: { id: w.jobId, status: job.status, items },
      });
    }
    this.sendTokens(w);
    // Only outputs not sent yet are read.
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
    }
    const view = final ? this.jobs.view(w.jobId) : null;
    if (view && view.status !== "queued" && view.status !== "running") {
      const { created_at: _created, ...rest } = view;
      this.end(w, { event: END_EVENT[view.status], data: rest });
    }
  }

  /**
   * The tokens of each generating input the watcher has not had yet (token-stream.ts keeps them), before its
   * output: a reader that joins late catches up in one event per input.
   */
  private sendTokens(w: Watch): void {
    for (const item of this.sql.all<{ idx: number; gen_count: number; gen_tokens: string; gen_text: string }>(
      `SELECT idx, gen_count, gen_tokens, gen_text FROM items
       WHERE job_id = ? AND first_token_at IS NOT NULL AND gen_count > 0 ORDER BY idx`,
      w.jobId,
    )) {
      const had = w.streamed.get(item.idx) ?? { tokens: 0, chars: 0 };
      if (item.gen_count <= had.tokens) continue;
      const tokens = (JSON.parse(item.gen_tokens) as number[]).slice(had.tokens);
      const text = item.gen_text.slice(had.chars);
      w.streamed.set(item.idx, { tokens: item.gen_count, chars: item.gen_text.length });
      this.send(w, { event: "token", data: { index: item.idx, offset: had.tokens, tokens, text } });
    }
  }

  private send(w: Watch, event: JobEvent): void {
    try {
      w.controller.enqueue(encoder.encode(`${JSON.stringify(event)}\n`));
    } catch {
      // The reader went away: forget the watch.
      this.watches.delete(w);
    }
  }

  private end(w: Watch, event: JobEvent): void {
    this.send(w, event);
    this.watches.delete(w);
    try {
      w.controller.close();
    } catch {
      // already closed or cancelled
    }
  }
}
