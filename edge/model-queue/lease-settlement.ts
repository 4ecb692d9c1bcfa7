// How a lease ends: completed with the worker's results (stored in one transaction), released on
// purpose, revoked by a quarantine, or abandoned when it expired or its worker was lost, each item then
// retried or dead-lettered by shared/policy/lease.ts. Used by ModelQueue after LeaseTable.lookup has found
// the active lease; untrusted results go through verification.ts first.
import {
  afterFailedDelivery,
  type CompleteBody,
  chargeFor,
  ErrorCode,
  type ItemResult,
  type ItemResultsBody,
  type LeaseAck,
  type ModelConfig,
  parseTraceparent,
} from "../../shared/index.ts";
import type { Sql } from "../sql.ts";
import { type BreakerStore, breakerKey } from "./breaker-store.ts";
import type { JobStore } from "./job-store.ts";
import type { LeaseRow } from "./lease-table.ts";
import type { MetricsStore } from "./metrics-store.ts";
import type { Quarantine, TrustStore, WorkerRef } from "./trust-store.ts";
import type { PendingRun, Verifier } from "./verification.ts";

export type CompleteResult = LeaseAck | { error: { code: string; message: string } };

interface ItemRow extends Record<string, SqlStorageValue> {
  seq: number;
  job_id: string;
  enqueued_at: number;
  leased_at: number | null;
  attempts: number;
  state: string;
  lease_pos: number | null;
  n_candidates: number;
  donor_faults: number;
  /** A canary's known output; null for a real item. */
  expected: string | null;
}

/** SQLite rows are capped at 2 MB in Durable Objects; an output must fit in one with room to spare. */
const MAX_OUTPUT_BYTES = 1_000_000;
const OUTPUT_CHUNK_BYTES = 512 * 1024;

/**
 * A lease's outputs from position ?3 on (?4 of them), from the JSON array ?2 (null where the result was an error):
 * each item reads its own by position, and SQLite keeps the array parsed for the statement. Joined with json_each
 * instead, the planner looked the items up by lease and scanned the whole array for each: quadratic in the
 * batch's size. A number is bound as a REAL, which `->>` reads as a key: the position is cast to an index.
 */
export const STORE_OUTPUTS = `UPDATE items SET state = 'succeeded', lease_id = NULL, output = ?2 ->> CAST(lease_pos - ?3 AS INTEGER)
  WHERE lease_id = ?1 AND lease_pos >= ?3 AND lease_pos < ?3 + ?4 AND state = 'leased'
    AND (?2 ->> CAST(lease_pos - ?3 AS INTEGER)) IS NOT NULL`;

/** The span each item of lease ?1 was answered under, by position, from the JSON array ?2 (null: none). */
export const STORE_SPANS = `UPDATE items SET worker_traceparent = ?2 ->> lease_pos
  WHERE lease_id = ?1 AND (?2 ->> lease_pos) IS NOT NULL`;

export class LeaseSettlement {
  constructor(
    private readonly sql: Sql,
    private readonly metrics: MetricsStore,
    private readonly storage: DurableObjectStorage,
    private readonly jobs: JobStore,
    private readonly verifier: Verifier,
    private readonly trust: TrustStore,
    private readonly breakers: BreakerStore,
    private readonly config: () => ModelConfig,
    /** Tells a quarantined worker's open sockets. */
    private readonly onQuarantine: (ref: WorkerRef, q: Quarantine) => void,
  ) {}

  /**
   * Records a worker's results for an active lease, then ends the jobs that have nothing left open.
   * A browser worker's results are untrusted (verification.ts): a wrong canary or a malformed output
   * quarantines the worker and discards the whole batch, and outputs chosen for verification are held.
   */
  complete(lease: LeaseRow, body: CompleteBody, now: number): CompleteResult {
    const leaseId = lease.id;
    if (body.results.length !== lease.n_items) {
      return {
        error: {
          code: ErrorCode.wrongResultCount,
          message: `lease ${leaseId} holds ${lease.n_items} items but ${body.results.length} results were sent; send one result per item, in batch order`,
        },
      };
    }
    const cfg = this.config();
    const checked = this.verifier.checks(cfg, lease.pool);
    const computeMs = body.compute_ms ?? now - lease.created_at;
    const items = this.sql.all<ItemRow>(
      `SELECT seq, job_id, enqueued_at, leased_at, attempts, state, lease_pos, n_candidates, donor_faults,
         CASE WHEN state = 'canary' THEN output END AS expected
       FROM items WHERE lease_id = ? ORDER BY lease_pos`,
      leaseId,
    );
    if (checked) {
      const caught = this.verifier.review(cfg, items, body.results);
      if (caught) {
        const outputs = items.filter(
          (i) => i.state === "leased" && "output" in (body.results[i.lease_pos ?? -1] ?? {}),
        );
        const q = this.atomically(() => {
          this.metrics.inc("discarded", lease.pool, outputs.length);
          return this.quarantine(refOf(lease), caught.reason, now);
        });
        return { error: { code: ErrorCode.quarantined, message: quarantineMessage(q) } };
      }
    }
    this.breakers.ended(breakerKey(lease), lease.pool, wentWell(body.results, checked), now, cfg);
    return this.record(lease, items, body.results, now, { computeMs });
  }

  /**
   * The results of some items of a lease that goes on (ItemResultsBody), by batch position, or why they
   * cannot be taken: a position the lease lacks or named twice, or an untrusted lease, whose results wait
   * for its completion, where the batch is reviewed whole.
   */
  earlyResults(lease: LeaseRow, body: ItemResultsBody): (ItemResult | undefined)[] | CompleteResult {
    // As it was given: a change of the model's verification since does not change what this lease may do.
    if (lease.item_results !== 1) {
      return {
        error: {
          code: ErrorCode.badRequest,
          message: `lease ${lease.id} was not given with item_results: send its results with its completion`,
        },
      };
    }
    const results: (ItemResult | undefined)[] = [];
    for (const { pos, result } of body.results) {
      if (pos >= lease.n_items || results[pos] !== undefined) {
        return {
          error: {
            code: ErrorCode.wrongResultCount,
            message: `lease ${lease.id} holds items at positions 0..${lease.n_items - 1}; position ${pos} is ${pos >= lease.n_items ? "not one of them" : "named twice"}`,
          },
        };
      }
      results[pos] = result;
    }
    return results;
  }

  /**
   * Records the results of some items of a trusted lease that goes on (earlyResults): each is settled as at
   * completion and leaves the lease, freeing its room; the lease's completion skips it. Results for every item
   * the lease still holds complete it: a completion sent after is answered `duplicate`.
   */
  settleEarly(lease: LeaseRow, results: readonly (ItemResult | undefined)[], now: number): CompleteResult {
    const positions = results.flatMap((r, pos) => (r === undefined ? [] : [pos]));
    const items = this.sql.all<ItemRow>(
      `SELECT seq, job_id, enqueued_at, leased_at, attempts, state, lease_pos, n_candidates, donor_faults, NULL AS expected
       FROM items WHERE lease_id = ? AND state = 'leased' AND lease_pos IN (SELECT value FROM json_each(?))`,
      lease.id,
      JSON.stringify(positions),
    );
    const held = this.sql.one<{ n: number }>("SELECT COUNT(*) AS n FROM items WHERE lease_id = ?", lease.id)?.n ?? 0;
    if (items.length === 0 || items.length < held) return this.record(lease, items, results, now, null);
    const given = results.filter((r): r is ItemResult => r !== undefined);
    this.breakers.ended(breakerKey(lease), lease.pool, wentWell(given, false), now, this.config());
    return this.record(lease, items, results, now, { computeMs: now - lease.created_at });
  }

  /**
   * Settles `items` of the lease from their results (by batch position; an item with none is left as it is):
   * outputs stored or held for verification, errors retried or failed. `end`: the lease completes with it;
   * null: the items leave a lease that goes on.
   */
  private record(
    lease: LeaseRow,
    items: readonly ItemRow[],
    results: readonly (ItemResult | undefined)[],
    now: number,
    end: { computeMs: number } | null,
  ): CompleteResult {
    const leaseId = lease.id;
    const cfg = this.config();
    const checked = this.verifier.checks(cfg, lease.pool);
    const computeMs = end?.computeMs ?? now - lease.created_at;
    const pool = lease.pool;
    const touchedJobs = new Set<string>();
    const waits: number[] = [];
    const tally = { failed: 0, redelivered: 0, invalid: 0 };
    const failItem = (seq: number, code: string, message: string) => {
      this.sql.run(
        "UPDATE items SET state = 'failed', error_code = ?, error_message = ?, lease_id = NULL WHERE seq = ?",
        code,
        message,
        seq,
      );
      tally.failed++;
    };
    /** A failed delivery is tried again; an untrusted worker's failure is never final on its word alone. */
    const retryItem = (item: ItemRow, code: string, message: string) => {
      if (this.failDelivery(item, now, code, message, !checked) === "dead-letter") tally.failed++;
      else tally.redelivered++;
    };
    // Outputs by batch position as JSON text; stored together by storeOutputs.
    const outputs: (string | undefined)[] = [];
    // Runs that verification settles: items that hold candidates, and fresh runs of an untrusted lease.
    const pending: PendingRun[] = [];
    // One trusted output per settlement is learnt from (verification.ts: known answers, vector length).
    let learned = false;
    // All of it or none of it: a completion that throws half way must not leave items half settled.
    this.atomically(() => {
      const spans = Array.from(results, (r) => (r && parseTraceparent(r.traceparent) ? r.traceparent : null));
      if (spans.some((s) => s !== null)) {
        this.sql.run(STORE_SPANS, leaseId, JSON.stringify(spans));
      }
      for (const item of items) {
        const pos = item.lease_pos;
        const result = pos === null ? undefined : results[pos];
        // Expired with its job meanwhile (or a canary, checked by review): nothing to record.
        if (item.state !== "leased" || pos === null || !result) continue;
        waits.push(((item.leased_at ?? now) - item.enqueued_at) / 1000);
        touchedJobs.add(item.job_id);
        if ("error" in result) {
          if (checked || result.error.retryable) retryItem(item, result.error.code, result.error.message);
          else failItem(item.seq, result.error.code, result.error.message);
          continue;
        }
        const text = JSON.stringify(result.output);
        const problem =
          text.length > MAX_OUTPUT_BYTES
            ? {
                code: ErrorCode.outputTooLarge,
                message: `output is ${text.length} bytes; the most one output may be is ${MAX_OUTPUT_BYTES}`,
              }
            : checked
              ? null // review has checked the shape
              : this.invalidOutput(cfg, result.output, item.n_candidates > 0);
        if (problem) {
          if (checked) retryItem(item, problem.code, problem.message);
          else failItem(item.seq, problem.code, problem.message);
          if (problem.code === ErrorCode.invalidOutput) tally.invalid++;
        } else if (checked || item.n_candidates > 0) {
          pending.push({ seq: item.seq, pos, output: result.output, text, nCandidates: item.n_candidates });
        } else {
          outputs[pos] = text;
          // Learnt at once, so the batch's next outputs are checked against this one's vector length; a canary
          // only if no donor ever held the input.
          if (!learned) {
            this.verifier.known.learn(cfg, item.seq, text, now, item.donor_faults === 0);
            learned = true;
          }
        }
      }
      const dissenters = pending.length > 0 ? this.verifier.settle(cfg, lease, pending, outputs, now) : [];
      this.storeOutputs(leaseId, outputs);
      const canaries = checked ? items.filter((i) => i.state === "canary") : [];
      if (canaries.length > 0) {
        this.sql.run("DELETE FROM items WHERE lease_id = ? AND state = 'canary'", leaseId);
        // Every known answer in the batch answered, and right (review caught nothing): evidence from a
        // trusted run. A canary answered with a (retryable) error proves nothing.
        if (canaries.every((i) => "output" in (results[i.lease_pos ?? -1] ?? {}))) this.trust.credit(refOf(lease), now);
      }
      if (end) this.sql.run("UPDATE leases SET state = 'completed', ended_at = ? WHERE id = ?", now, leaseId);
      else this.sql.run("UPDATE leases SET n_done = n_done + ? WHERE id = ?", waits.length, leaseId);
      this.jobs.recordCompute(touchedJobs, computeMs, pool);
      this.metrics.inc("completed", pool, outputs.filter((o) => o !== undefined).length);
      this.metrics.inc("failed", pool, tally.failed);
      this.metrics.inc("redelivered", pool, tally.redelivered);
      this.metrics.inc("invalid_outputs", pool, tally.invalid);
      this.metrics.observe("queue_wait", pool, waits);
      if (end) {
        this.metrics.observe("compute", pool, [computeMs / 1000]);
        this.metrics.observe("batch_size", pool, [lease.n_items]);
      }
      for (const d of dissenters) this.quarantine(d.ref, d.reason, now);
    });
    // Only an item sent back to the queue (to be tried again, or held for a second run) can leave its job
    // with nothing running.
    if (tally.redelivered > 0 || pending.length > 0) this.jobs.reopen(touchedJobs);
    this.jobs.settleDone(touchedJobs, now);
    return { lease_id: leaseId, status: "ok" };
  }

  /** A storage transaction whose metrics are counted only if it commits. */
  private atomically<T>(run: () => T): T {
    return this.metrics.counting(() => this.storage.transactionSync(run));
  }

  /**
   * A worker caught answering wrongly: no leases for quarantine_ms (it and its donor), the candidates it
   * produced are discarded (their items run afresh elsewhere), and its active leases are taken back
   * without counting against their items. Answers the quarantine.
   */
  quarantine(ref: WorkerRef, reason: string, now: number): Quarantine {
    const q = { until: now + this.config().verification.quarantine_ms, reason };
    this.trust.quarantine(ref, q.until, reason);
    this.metrics.inc("quarantined", "browser");
    this.metrics.inc("discarded", "browser", this.verifier.discard(ref, this.config().verification.donor_fault_budget));
    for (const lease of this.sql.all<LeaseRow>(
      "SELECT * FROM leases WHERE state = 'active' AND pool = 'browser' AND (worker_id = ? OR donor = ? OR network = ?)",
      ref.worker_id,
      ref.donor,
      ref.network ?? null,
    )) {
      this.putBack(lease, now, "revoked");
    }
    this.onQuarantine(ref, q);
    return q;
  }

  /** The error a shape check answers for a trusted worker's output, or null. */
  private invalidOutput(
    cfg: ModelConfig,
    output: unknown,
    verifying: boolean,
  ): { code: string; message: string } | null {
    const problem = this.verifier.known.shapeProblem(cfg, output, verifying);
    return problem === null
      ? null
      : { code: ErrorCode.invalidOutput, message: `the worker's output is not a valid ${cfg.task} output: ${problem}` };
  }

  /**
   * A worker hands work back on purpose (shutdown, pause): it does not count as an attempt. An untrusted
   * worker's release counts as a donor fault and a failed batch, or a donor could take and hand back the
   * same items for ever (each lease new, so never hedged); a trusted one's ends a breaker's probe well.
   */
  release(lease: LeaseRow, now: number, reason?: string): LeaseAck {
    const cfg = this.config();
    const untrusted = this.verifier.checks(cfg, lease.pool);
    this.breakers.ended(breakerKey(lease), lease.pool, !untrusted, now, cfg);
    this.putBack(lease, now, untrusted ? "released-untrusted" : "released");
    return { lease_id: lease.id, status: "ok", ...(reason ? { message: `released: ${reason}` } : {}) };
  }

  /** Abandons every active lease past its deadline. */
  expire(now: number): void {
    for (const lease of this.sql.all<LeaseRow>("SELECT * FROM leases WHERE state = 'active' AND deadline <= ?", now)) {
      this.abandon(
        lease,
        "expired",
        now,
        ErrorCode.leaseExpired,
        `lease expired: worker ${lease.worker_id} neither completed nor extended it within ${this.config().lease_ms} ms`,
      );
    }
  }

  /** Abandons the active leases of a worker (its id, under its credential) whose connection is gone. */
  abandonWorker(worker: { worker_id: string; holder?: string | undefined }, now: number, message: string): void {
    for (const lease of this.sql.all<LeaseRow>(
      "SELECT * FROM leases WHERE worker_id = ? AND holder IS ? AND state = 'active'",
      worker.worker_id,
      worker.holder ?? null,
    )) {
      this.abandon(lease, "lost", now, ErrorCode.workerError, message);
    }
  }

  /**
   * Writes a batch's outputs with one UPDATE per run of positions of about 512 KB: far fewer statements
   * than one per item, and each bound parameter stays well under SQLite's size limit (STORE_OUTPUTS).
   */
  private storeOutputs(leaseId: string, outputs: readonly (string | undefined)[]): void {
    let start = 0;
    while (start < outputs.length) {
      const run: (string | null)[] = [];
      let bytes = 0;
      while (start + run.length < outputs.length) {
        const o = outputs[start + run.length];
        if (run.length > 0 && o !== undefined && bytes + o.length > OUTPUT_CHUNK_BYTES) break;
        run.push(o ?? null);
        bytes += o?.length ?? 0;
      }
      this.sql.run(STORE_OUTPUTS, leaseId, JSON.stringify(run), start, run.length);
      start += run.length;
    }
  }

  /**
   * An item's delivery failed. A trusted worker's failure spends an attempt: back to the queue after a
   * backoff, or dead-lettered as failed once it has had max_attempts deliveries. An untrusted worker's
   * failure spends the item's donor-fault budget instead (shared/policy/hold-and-breaker.ts chargeFor): back
   * at once, and for the trusted pool only once the budget is spent; it never dead-letters. Answers which.
   */
  private failDelivery(
    item: ItemRow,
    now: number,
    code: string,
    message: string,
    trusted: boolean,
  ): "retry" | "dead-letter" {
    const cfg = this.config();
    if (chargeFor(trusted, item.donor_faults, cfg.verification.donor_fault_budget) !== "attempt") {
      this.sql.run(
        "UPDATE items SET state = 'queued', lease_id = NULL, lease_pos = NULL, attempts = MAX(0, attempts - 1), donor_faults = donor_faults + 1, available_at = ?, error_code = ?, error_message = ? WHERE seq = ?",
        now,
        code,
        message,
        item.seq,
      );
      this.metrics.inc("donor_faults", "browser");
      return "retry";
    }
    const next = afterFailedDelivery(item.attempts, now, {
      maxAttempts: cfg.max_attempts,
      backoffMs: cfg.retry_backoff_ms,
      backoffMaxMs: cfg.retry_backoff_max_ms,
    });
    if (next.kind === "retry") {
      this.sql.run(
        "UPDATE items SET state = 'queued', lease_id = NULL, lease_pos = NULL, available_at = ?, error_code = ?, error_message = ? WHERE seq = ?",
        next.availableAt,
        code,
        message,
        item.seq,
      );
      return "retry";
    }
    this.sql.run(
      "UPDATE items SET state = 'failed', lease_id = NULL, error_code = ?, error_message = ? WHERE seq = ?",
      ErrorCode.maxAttempts,
      `failed after ${item.attempts} attempts; last error (${code}): ${message}`,
      item.seq,
    );
    return "dead-letter";
  }

  /** Puts a lease's items back in the queue without counting the attempt: released, or revoked by a quarantine. */
  private putBack(lease: LeaseRow, now: number, how: "released" | "released-untrusted" | "revoked"): void {
    // A lease revoked from a worker caught lying goes to the trusted pool: no donor runs those items again.
    // One an untrusted worker released is one donor fault: the items are the trusted pool's too from now.
    const budget = this.config().verification.donor_fault_budget;
    const items = this.sql.all<{ job_id: string }>(
      `UPDATE items SET state = 'queued', attempts = attempts - 1, lease_id = NULL, lease_pos = NULL, available_at = ?,
         donor_faults = MIN(MAX(donor_faults + ?, ?), ?) WHERE lease_id = ? AND state = 'leased' RETURNING job_id`,
      now,
      how === "released-untrusted" ? 1 : 0,
      how === "revoked" ? budget : 0,
      Math.max(budget, 1),
      lease.id,
    );
    if (how === "released-untrusted") this.metrics.inc("donor_faults", "browser", items.length);
    const state = how === "revoked" ? "revoked" : "released";
    this.sql.run("UPDATE leases SET state = ?, ended_at = ? WHERE id = ?", state, now, lease.id);
    this.metrics.inc("redelivered", lease.pool, items.length);
    this.jobs.reopen(new Set(items.map((i) => i.job_id)));
  }

  /** Puts back or dead-letters every item still held under a lease that ended without a completion. */
  private abandon(lease: LeaseRow, state: "expired" | "lost", now: number, code: string, message: string): void {
    const items = this.sql.all<ItemRow>(
      "SELECT seq, job_id, enqueued_at, leased_at, attempts, state, lease_pos, donor_faults FROM items WHERE lease_id = ? AND state = 'leased'",
      lease.id,
    );
    this.sql.run("UPDATE leases SET state = ?, ended_at = ? WHERE id = ?", state, now, lease.id);
    const cfg = this.config();
    const trusted = !this.verifier.checks(cfg, lease.pool);
    this.breakers.ended(breakerKey(lease), lease.pool, false, now, cfg);
    let dead = 0;
    const jobs = new Set<string>();
    for (const item of items) {
      jobs.add(item.job_id);
      if (this.failDelivery(item, now, code, message, trusted) === "dead-letter") dead++;
    }
    this.metrics.inc("failed", lease.pool, dead);
    this.metrics.inc("redelivered", lease.pool, items.length - dead);
    if (state === "expired") this.metrics.inc("leases_expired", lease.pool);
    this.jobs.settleDone(jobs, now);
    this.jobs.reopen(jobs);
  }
}

/**
 * Whether a batch's results count for its worker's breaker: a batch that is all errors counts against it, as
 * one that expires does: from a donor (`checked`) whatever the errors, since inputs were checked at submit;
 * from a trusted worker only when some error is its own (retryable: out of memory, device lost), as a batch of
 * inputs its model refuses is not its fault.
 */
function wentWell(results: readonly ItemResult[], checked: boolean): boolean {
  const allErrors = results.length > 0 && results.every((r) => "error" in r);
  const ownFault = checked || results.some((r) => "error" in r && r.error.retryable);
  return !(allErrors && ownFault);
}

/** The worker a lease names, as trust is keyed. */
function refOf(lease: LeaseRow): WorkerRef {
  return { worker_id: lease.worker_id, donor: lease.donor ?? null, network: lease.network ?? null };
}

export function quarantineMessage(q: Quarantine): string {
  return `quarantined until ${new Date(q.until).toISOString()}: ${q.reason}; this worker gets no leases until then`;
}
