// What a model queue knows about each browser worker: how many of its verified batches agreed (adaptive
// replication reads it) and whether it is quarantined, by worker id and by donor. In SQLite; the active
// quarantines are also kept in memory, loaded at start, since every hand-out asks about them.
import type { Sql } from "../sql.ts";

/** A worker as trust is keyed: its self-declared id, and the donor id its token vouched for (if any). */
export interface WorkerRef {
  worker_id: string;
  donor: string | null;
}

export interface Quarantine {
  until: number;
  reason: string;
}

type Kind = "worker" | "donor";

const cacheKey = (kind: Kind, id: string) => `${kind}\u0000${id}`;

export class TrustStore {
  private readonly active = new Map<string, Quarantine>();

  constructor(private readonly sql: Sql) {}

  /** Reads the quarantines still running; called once the schema is in place. */
  load(now: number): void {
    this.active.clear();
    for (const r of this.sql.all<{ kind: Kind; id: string; until: number; reason: string }>(
      "SELECT kind, id, until, reason FROM quarantine WHERE until > ?",
      now,
    )) {
      this.active.set(cacheKey(r.kind, r.id), { until: r.until, reason: r.reason });
    }
  }

  /** The quarantine a worker is under (its own, or its donor's), or null. */
  quarantinedUntil(ref: { worker_id: string; donor?: string | null | undefined }, now: number): Quarantine | null {
    if (this.active.size === 0) return null;
    for (const key of [cacheKey("worker", ref.worker_id), ref.donor ? cacheKey("donor", ref.donor) : null]) {
      const q = key === null ? undefined : this.active.get(key);
      if (q && q.until > now) return q;
    }
    return null;
  }

  /** Quarantines a worker and its donor until `until`, and forgets the trust it had earned. */
  quarantine(ref: WorkerRef, until: number, reason: string): void {
    const keys: [Kind, string][] = [["worker", ref.worker_id]];
    if (ref.donor) keys.push(["donor", ref.donor]);
    for (const [kind, id] of keys) {
      this.sql.run(
        "INSERT INTO quarantine (kind, id, until, reason) VALUES (?, ?, ?, ?) ON CONFLICT (kind, id) DO UPDATE SET until = MAX(until, excluded.until), reason = excluded.reason",
        kind,
        id,
        until,
        reason,
      );
      const key = cacheKey(kind, id);
      this.active.set(key, { until: Math.max(until, this.active.get(key)?.until ?? 0), reason });
    }
    this.sql.run("DELETE FROM worker_trust WHERE worker_id = ? AND donor = ?", ref.worker_id, ref.donor ?? "");
  }

  /** Workers (by id) quarantined now. */
  quarantinedWorkers(now: number): number {
    let n = 0;
    for (const [key, q] of this.active) if (key.startsWith("worker\u0000") && q.until > now) n++;
    return n;
  }

  /** How many of this worker's verified batches agreed since it was last quarantined. */
  agreed(ref: WorkerRef): number {
    return (
      this.sql.one<{ agreed: number }>(
        "SELECT agreed FROM worker_trust WHERE worker_id = ? AND donor = ?",
        ref.worker_id,
        ref.donor ?? "",
      )?.agreed ?? 0
    );
  }

  /** One more of this worker's verified batches agreed in full. */
  credit(ref: WorkerRef): void {
    this.sql.run(
      "INSERT INTO worker_trust (worker_id, donor, agreed) VALUES (?, ?, 1) ON CONFLICT (worker_id, donor) DO UPDATE SET agreed = agreed + 1",
      ref.worker_id,
      ref.donor ?? "",
    );
  }

  /** Forgets quarantines that have run out. */
  dropExpired(now: number): void {
    if (this.active.size === 0) return;
    this.sql.run("DELETE FROM quarantine WHERE until <= ?", now);
    for (const [key, q] of this.active) if (q.until <= now) this.active.delete(key);
  }
}
