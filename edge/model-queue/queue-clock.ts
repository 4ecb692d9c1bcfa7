// When the queue object (model-queue.ts) wakes: its one alarm, re-armed at the earliest deadline in storage,
// and two in-memory nudges that are never the only record of anything: the batch timer (a partial batch falls
// due within milliseconds, sooner than an alarm's round trip) and the one pump that submits arriving together share.
import type { ModelConfig } from "../../shared/index.ts";
import type { Sql } from "../sql.ts";
import { OPEN } from "./job-store.ts";

/** How long after a partial batch falls due the alarm backs up its in-memory batch timer. */
export const BATCH_BACKSTOP_MS = 1_000;

export class QueueClock {
  /** The alarm time last set, to skip redundant setAlarm calls; read from storage at start (load). */
  private alarmAt: number | null | undefined;
  /** When a partial batch falls due, while one is forming. */
  private batchDueAt: number | null = null;
  private batchTimer: ReturnType<typeof setTimeout> | undefined;
  private pumpTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly sql: Sql,
    private readonly storage: DurableObjectStorage,
    private readonly config: () => ModelConfig,
    /** Deadlines kept outside the queue's tables (a session append to retry, a breaker's probe); null: none. */
    private readonly otherDeadlines: (now: number) => (number | null)[],
    /** Hands out what is due and re-arms the alarm (ModelQueue.pumpAndSchedule). */
    private readonly wake: () => void,
  ) {}

  async load(): Promise<void> {
    this.alarmAt = await this.storage.getAlarm();
  }

  /** The alarm has fired: none is set until schedule() sets one. */
  alarmFired(): void {
    this.alarmAt = null;
  }

  /** A pump is looking at the queue now: the batch it was woken for is no longer pending. */
  pumping(): void {
    this.batchDueAt = null;
  }

  /**
   * One pump for the submits that arrive together, in the task after the first: each would otherwise read
   * the queue's head and the leases again to find, most often, that the batch is still forming. A runtime
   * that dies before it runs loses nothing: the items are stored, and a worker's reconnect or the alarm pumps.
   */
  pumpSoon(): void {
    if (this.pumpTimer !== undefined) return;
    this.pumpTimer = setTimeout(() => {
      this.pumpTimer = undefined;
      this.nudge("pump after submit failed");
    }, 0);
  }

  /**
   * A batch delay is a few milliseconds; an alarm round trip costs more than that. The alarm set by
   * schedule() stays the durable backstop; this timer only lets the batch go out on time.
   */
  armBatchTimer(until: number, now: number): void {
    if (this.batchDueAt !== null && this.batchDueAt <= until) return;
    this.batchDueAt = until;
    if (this.batchTimer !== undefined) clearTimeout(this.batchTimer);
    this.batchTimer = setTimeout(
      () => {
        this.batchTimer = undefined;
        // The alarm armed for the same moment retries; a failed nudge must not be an uncaught exception.
        this.nudge("batch timer: pump failed");
      },
      Math.max(0, until - now),
    );
  }

  /**
   * Re-arms the one alarm at the earliest deadline in storage (and the batch delay, if one is due). When
   * the change only added deadlines no earlier than `addedNoEarlierThan` and the alarm is already set in
   * the future before them, it stays as it is without reading storage.
   */
  schedule(now: number, addedNoEarlierThan?: number): void {
    if (
      addedNoEarlierThan !== undefined &&
      this.alarmAt != null &&
      this.alarmAt > now &&
      this.alarmAt <= Math.min(addedNoEarlierThan, (this.batchDueAt ?? Number.POSITIVE_INFINITY) + BATCH_BACKSTOP_MS)
    ) {
      return;
    }
    const ttl = this.config().result_ttl_ms;
    const row = this.sql.one<{ lease: number | null; job: number | null; backoff: number | null; gc: number | null }>(
      `SELECT
        (SELECT MIN(deadline) FROM leases WHERE state = 'active') AS lease,
        (SELECT MIN(deadline) FROM jobs WHERE status IN ${OPEN}) AS job,
        (SELECT MIN(available_at) FROM items WHERE state = 'queued' AND available_at > enqueued_at AND available_at > ?) AS backoff,
        (SELECT MIN(finished_at) FROM jobs WHERE finished_at IS NOT NULL) + ? AS gc`,
      now,
      ttl,
    );
    // The batch timer sends a partial batch on time; the alarm stands behind it only for a timer lost with the
    // isolate, so a little later: set at the batch's own time, it fired (and swept) after nearly every batch.
    const batchBackstop = this.batchDueAt === null ? null : this.batchDueAt + BATCH_BACKSTOP_MS;
    const times = [row?.lease, row?.job, row?.backoff, row?.gc, batchBackstop, ...this.otherDeadlines(now)].filter(
      (t): t is number => typeof t === "number",
    );
    const next = times.length > 0 ? Math.min(...times) : null;
    // Only ever move the alarm earlier: one that fires early finds nothing due and re-arms itself,
    // which is far cheaper than rewriting the alarm on every call.
    if (next === null || (this.alarmAt != null && this.alarmAt <= next && this.alarmAt > now)) return;
    this.alarmAt = next;
    void this.storage.setAlarm(next);
  }

  private nudge(what: string): void {
    try {
      this.wake();
    } catch (error) {
      console.error(what, error);
    }
  }
}
