// The leases workers hold on a model queue's items: looking one up, handing out a batch under a new
// lease, extending it, and counting what each worker and pool holds. Used by ModelQueue; how a lease
// ends (completed, released, expired, lost) is lease-settlement.ts.
import {
  type LeaseAck,
  leaseDeadline,
  type ModelConfig,
  newId,
  type Pool,
  randomHex,
  renewAfterMs,
  traceparentOrNew,
} from "../../shared/index.ts";
import { BOUND_LIMIT, type Sql } from "../sql.ts";
import type { JobStore } from "./job-store.ts";
import type { MetricsStore } from "./metrics-store.ts";
import { type LeaseHolder, workerKey } from "./worker-slots.ts";

export interface LeaseRow extends Record<string, SqlStorageValue> {
  id: string;
  worker_id: string;
  pool: string;
  created_at: number;
  deadline: number;
  state: string;
  n_items: number;
  /** The donor a browser worker's token named; null for a worker-token worker. */
  donor: string | null;
  /** The client network the holder connected from; null when unknown. */
  network: string | null;
  /** The credential that may act on the lease (worker-slots.ts Credential.holder); null: any. */
  holder: string | null;
  /** An untrusted lease's hedge time: it is never extended past it. */
  hedge_at: number | null;
  /** Items done with before the lease ends (settled ahead, cancelled, expired). */
  n_done: number;
  /** 1: given with Batch.item_results, so its items may be settled ahead of its completion. */
  item_results: number;
}

/** What active leases hold, as held() reads it. */
export interface Held {
  byWorker: Map<string, number>;
  itemsByWorker: Map<string, number>;
  byDonor: Map<string, number>;
  byNetwork: Map<string, number>;
}

/** `held` with one more lease of `items` items to `worker`, as held() would read it after the lease is stored. */
export function withLease(held: Held, worker: LeaseHolder, items: number): Held {
  const add = (m: Map<string, number>, k: string | undefined, n: number) => {
    if (k !== undefined) m.set(k, (m.get(k) ?? 0) + n);
  };
  add(held.byWorker, workerKey(worker), 1);
  add(held.itemsByWorker, workerKey(worker), items);
  add(held.byDonor, worker.donor, 1);
  if (worker.donor !== undefined) add(held.byNetwork, worker.network, 1);
  return held;
}

interface HandOutRow extends Record<string, SqlStorageValue> {
  seq: number;
  job_id: string;
  input: string;
  attempts: number;
  traceparent: string | null;
  session: string | null;
  session_state: string | null;
}

/** `n` random item ids of 16 hex digits (from the trace module's pooled random bytes). */
function opaqueIds(n: number): string[] {
  return Array.from({ length: n }, () => randomHex(8));
}

/** A restriction on the items one worker may lease (verification.ts: not its own candidates' items). */
export interface ItemFilter {
  where: string;
  bindings: SqlStorageValue[];
}

/**
 * What a batch needs of an item's job, read once an item by one join; its columns are named apart from the items'
 * (both tables have `pool` and `priority`), so a filter's bare column names still mean the item's.
 */
const JOB_OF_ITEM = "(SELECT id AS job_key, traceparent, session, session_state FROM jobs)";

const NO_FILTER: ItemFilter = { where: "", bindings: [] };

/** An active lease to act on, or the answer to give when there is none. */
export type LeaseLookup = { lease: LeaseRow } | { ack: LeaseAck };

export function notFoundAck(leaseId: string, message = "no such lease (never issued, or long finished)"): LeaseAck {
  return { lease_id: leaseId, status: "not_found", message };
}

export class LeaseTable {
  constructor(
    private readonly sql: Sql,
    private readonly metrics: MetricsStore,
    private readonly jobs: JobStore,
    private readonly config: () => ModelConfig,
    /** The queue this object is (shared/protocol/ids.ts queueName): lease ids name it, so they route back here. */
    private readonly queue: () => string,
  ) {}

  /** The lease if it is still active; else not_found, or duplicate/stale for one that already ended. */
  lookup(leaseId: string): LeaseLookup {
    const lease = this.sql.one<LeaseRow>("SELECT * FROM leases WHERE id = ?", leaseId);
    if (!lease) return { ack: notFoundAck(leaseId) };
    if (lease.state === "active") return { lease };
    if (lease.state === "completed") {
      return {
        ack: { lease_id: lease.id, status: "duplicate", message: "lease already completed; this call changed nothing" },
      };
    }
    return {
      ack: {
        lease_id: lease.id,
        status: "stale",
        message:
          lease.state === "cancelled"
            ? "lease was taken back before this call: its job was cancelled, so this call changed nothing"
            : `lease was ${lease.state} before this call; its items went back to the queue, so this call changed nothing`,
      },
    };
  }

  /**
   * How many queued items a batch could take now (past any retry backoff), counted no further than `cap`
   * (a full batch), and when the oldest of those counted was enqueued: a full batch goes out whatever its
   * age, so a deep queue costs no more to look at than a batch does.
   */
  eligible(now: number, cap: number, filter: ItemFilter = NO_FILTER): { n: number; oldest: number | null } | undefined {
    return this.sql.one<{ n: number; oldest: number | null }>(
      `SELECT COUNT(*) AS n, MIN(enqueued_at) AS oldest FROM
         (SELECT enqueued_at FROM items WHERE state = 'queued' AND available_at <= ?${filter.where} ${BOUND_LIMIT})`,
      now,
      ...filter.bindings,
      cap,
    );
  }

  /**
   * Leases the next `size` eligible items to a worker; answers the batch as the JSON text to send. Known
   * answers (canaries) ride along at random positions, each an item like any other on the wire: an opaque
   * id, attempt 1 as almost every item has, a trace context of its own, a real input seen before. An
   * untrusted lease ends at `hedgeAt` at the latest (its items then go back, for the trusted pool too).
   * `itemResults`: the worker may settle items before the lease completes (Batch.item_results).
   */
  handOut(
    worker: LeaseHolder,
    size: number,
    now: number,
    cfg: ModelConfig,
    {
      filter = NO_FILTER,
      canaries = [],
      hedgeAt = null,
      itemResults = false,
    }: {
      filter?: ItemFilter;
      canaries?: readonly { input: string; output: string }[];
      hedgeAt?: number | null;
      itemResults?: boolean;
    } = {},
  ): { leaseId: string; batchJson: string; items: number } {
    const rows: HandOutRow[] =
      size <= 0
        ? []
        : this.sql.all<HandOutRow>(
            // A generating item redelivered carries the tokens already accepted (token-stream.ts), and their log
            // probabilities when asked for, so the next worker continues after them and the caller's stream goes on
            // without repeats.
            `SELECT seq, job_id, attempts,
         CASE WHEN gen_count = 0 THEN input
           WHEN gen_logprobs IS NULL THEN json_set(input, '$.resume', json_object('tokens', json(gen_tokens), 'text', gen_text))
           ELSE json_set(input, '$.resume',
             json_object('tokens', json(gen_tokens), 'text', gen_text, 'logprobs', json(gen_logprobs))) END AS input,
         job.traceparent, CASE WHEN job.session_state IS NOT NULL THEN job.session END AS session, job.session_state
       FROM items LEFT JOIN ${JOB_OF_ITEM} AS job ON job.job_key = items.job_id
       WHERE state = 'queued' AND available_at <= ?${filter.where} ORDER BY priority DESC, seq ${BOUND_LIMIT}`,
            now,
            ...filter.bindings,
            size,
          );
    const leaseId = newId(this.queue());
    const deadline =
      hedgeAt === null ? leaseDeadline(now, cfg.lease_ms) : Math.min(hedgeAt, leaseDeadline(now, cfg.lease_ms));
    // Canaries of one batch look like one call of their own: one trace for all of them.
    const canaryTrace = canaries.length > 0 ? traceparentOrNew(null) : null;
    for (const canary of canaries) {
      const pos = Math.floor(Math.random() * (rows.length + 1));
      const inserted = this.sql.one<{ seq: number }>(
        "INSERT INTO items (job_id, idx, priority, enqueued_at, available_at, state, attempts, lease_id, lease_pos, leased_at, input, output) VALUES ('', 0, 0, ?1, ?1, 'canary', 0, ?2, ?3, ?1, ?4, ?5) RETURNING seq",
        now,
        leaseId,
        pos,
        canary.input,
        canary.output,
      );
      if (inserted) {
        rows.splice(pos, 0, {
          seq: inserted.seq,
          job_id: "",
          input: canary.input,
          attempts: 0,
          traceparent: canaryTrace,
          session: null,
          session_state: null,
        });
      }
    }
    this.sql.run(
      "INSERT INTO leases (id, worker_id, pool, created_at, deadline, state, n_items, donor, network, holder, hedge_at, item_results) VALUES (?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, ?, ?)",
      leaseId,
      worker.worker_id,
      worker.pool,
      now,
      deadline,
      rows.length,
      worker.donor ?? null,
      worker.network ?? null,
      worker.holder ?? null,
      hedgeAt,
      itemResults ? 1 : 0,
    );
    // One statement for the whole batch (canaries' positions included): json_each's key is each item's position,
    // joined once (a lookup of it for each item walked the list again: quadratic in the batch's size).
    this.sql.run(
      `UPDATE items SET state = CASE WHEN state = 'canary' THEN 'canary' ELSE 'leased' END, lease_id = ?1, leased_at = ?2,
        attempts = CASE WHEN state = 'canary' THEN 0 ELSE attempts + 1 END, lease_pos = j.key
       FROM json_each(?3) AS j WHERE items.seq = j.value AND items.state IN ('queued', 'canary')`,
      leaseId,
      now,
      JSON.stringify(rows.map((r) => r.seq)),
    );
    // Spliced in as stored: a traceparent and a session id are checked to be plain text of their pattern
    // (shared/protocol/trace.ts, edge/sessions) and the session state is JSON text, before they are stored.
    // A session's state goes once per batch (in `sessions`), however many of its items the batch holds.
    // Item ids are opaque and random, so neither their order nor their size tells a canary from real work.
    const ids = opaqueIds(rows.length);
    const sessions = new Map<string, string>();
    const parts = rows.map((r, i) => {
      const trace = r.traceparent ? `"traceparent":"${r.traceparent}",` : "";
      if (r.session && r.session_state) sessions.set(r.session, r.session_state);
      const session = r.session ? `"session":"${r.session}",` : "";
      return `{"id":"${ids[i]}","attempt":${r.attempts + 1},${trace}${session}"input":${r.input}}`;
    });
    const states = [...sessions].map(([id, state]) => `"${id}":${state}`);
    this.jobs.markRunning([...new Set(rows.filter((r) => r.job_id !== "").map((r) => r.job_id))], now);
    this.metrics.inc("leases", worker.pool);
    // The items are spliced in as stored JSON text: no parse and re-serialise on the hot path.
    const head = JSON.stringify({
      lease_id: leaseId,
      model: cfg.name,
      deadline,
      renew_after_ms: renewAfterMs(Math.max(1, deadline - now)),
      ...(itemResults ? { item_results: true } : {}),
    });
    const sessionsJson = states.length > 0 ? `,"sessions":{${states.join(",")}}` : "";
    return {
      leaseId,
      batchJson: `${head.slice(0, -1)}${sessionsJson},"items":[${parts.join(",")}]}`,
      items: rows.length - canaries.length,
    };
  }

  /**
   * Moves an active lease's deadline to now plus extendMs, never more than a whole lease ahead, and an
   * untrusted lease never past its hedge time: a donor cannot hold work by extending it.
   */
  extend(lease: LeaseRow, extendMs: number | undefined, now: number): LeaseAck {
    const leaseMs = this.config().lease_ms;
    const wanted = leaseDeadline(now, Math.min(extendMs ?? leaseMs, leaseMs));
    const deadline = lease.hedge_at === null ? wanted : Math.min(wanted, lease.hedge_at);
    this.sql.run("UPDATE leases SET deadline = ? WHERE id = ?", deadline, lease.id);
    this.metrics.inc("lease_extensions", lease.pool);
    return { lease_id: lease.id, status: "ok", deadline };
  }

  /**
   * Active leases by worker (workerKey: its credential and its id, since an id alone is the client's to
   * choose), with the items they hold; by donor and by client network (the caps on what donors hold read those).
   */
  held(): Held {
    const byWorker = new Map<string, number>();
    const itemsByWorker = new Map<string, number>();
    const byDonor = new Map<string, number>();
    const byNetwork = new Map<string, number>();
    const add = (m: Map<string, number>, k: string | null, n: number) => {
      if (k !== null) m.set(k, (m.get(k) ?? 0) + n);
    };
    for (const r of this.sql.all<{
      worker_id: string;
      holder: string | null;
      donor: string | null;
      network: string | null;
      n: number;
      items: number;
    }>(
      "SELECT worker_id, holder, donor, network, COUNT(*) AS n, SUM(n_items - n_done) AS items FROM leases WHERE state = 'active' GROUP BY worker_id, holder, donor, network",
    )) {
      add(byWorker, workerKey(r), r.n);
      add(itemsByWorker, workerKey(r), r.items);
      add(byDonor, r.donor, r.n);
      if (r.donor !== null) add(byNetwork, r.network, r.n);
    }
    return { byWorker, itemsByWorker, byDonor, byNetwork };
  }

  /** Whether any item waits in the queue (due now or after a backoff). */
  anyQueued(): boolean {
    return this.sql.one("SELECT 1 AS queued FROM items WHERE state = 'queued' LIMIT 1") !== undefined;
  }

  heldBy(workerId: string): number {
    return (
      this.sql.one<{ n: number }>("SELECT COUNT(*) AS n FROM leases WHERE worker_id = ? AND state = 'active'", workerId)
        ?.n ?? 0
    );
  }

  /** Active leases, and the items they hold, by pool. */
  activeByPool(): { leases: Record<Pool, number>; inFlight: Record<Pool, number> } {
    const leases: Record<Pool, number> = { browser: 0, gpu: 0 };
    const inFlight: Record<Pool, number> = { browser: 0, gpu: 0 };
    for (const r of this.sql.all<{ pool: string; n: number; items: number }>(
      // Items still leased, not the leases' sizes: an item that expired with its job is no longer in flight.
      `SELECT pool, COUNT(*) AS n,
         (SELECT COUNT(*) FROM items WHERE items.lease_id IN (SELECT id FROM leases l WHERE l.state = 'active' AND l.pool = leases.pool) AND items.state = 'leased') AS items
       FROM leases WHERE state = 'active' GROUP BY pool`,
    )) {
      if (r.pool === "browser" || r.pool === "gpu") {
        leases[r.pool] = r.n;
        inFlight[r.pool] = r.items;
      }
    }
    return { leases, inFlight };
  }

  /** Forgets leases that ended at or before `before`. */
  dropEnded(before: number): void {
    this.sql.run("DELETE FROM leases WHERE state != 'active' AND ended_at <= ?", before);
  }
}
