// What a model queue knows about each browser worker: its agreements with trusted runs (its standing,
// which shared/policy/donor-trust.ts reads) and whether it is quarantined — by worker id, by donor and by
// client network. In SQLite, every row with an expiry so the tables stay bounded; the active quarantines and
// the standings in use are also kept in memory, since every hand-out asks about them.
import type { RunSource } from "../../shared/index.ts";
import type { Sql } from "../sql.ts";

/** A worker as trust is keyed: its self-declared id, the donor its token vouched for, and its network. */
export interface WorkerRef {
  worker_id: string;
  donor: string | null;
  network?: string | null | undefined;
}

export interface Quarantine {
  until: number;
  reason: string;
}

export const QUARANTINE_KINDS = ["worker", "donor", "network"] as const;
export type Kind = (typeof QUARANTINE_KINDS)[number];

const cacheKey = (kind: Kind, id: string) => `${kind}\u0000${id}`;

/** A trust row outlives its donor's last sign of life by this long (a donor token lives 15 minutes). */
export const TRUST_TTL_MS = 60 * 60_000;
/** Standings kept in memory at most; the rest are read from SQLite when asked. */
const MAX_CACHED = 10_000;

/** The identity trust is counted by: the donor a token named, else the worker's own id. */
export function identityOf(ref: { worker_id: string; donor?: string | null | undefined }): string {
  return ref.donor ?? `worker:${ref.worker_id}`;
}

export class TrustStore {
  private readonly active = new Map<string, Quarantine>();
  private readonly standing = new Map<string, number>();

  constructor(private readonly sql: Sql) {}

  /** Reads the quarantines still running; called once the schema is in place. */
  load(now: number): void {
    this.active.clear();
    this.standing.clear();
    for (const r of this.sql.all<{ kind: Kind; id: string; until: number; reason: string }>(
      "SELECT kind, id, until, reason FROM quarantine WHERE until > ?",
      now,
    )) {
      this.active.set(cacheKey(r.kind, r.id), { until: r.until, reason: r.reason });
    }
  }

  /** The quarantine a worker is under (its own, its donor's or its network's), or null. */
  quarantinedUntil(
    ref: WorkerRef | { worker_id: string; donor?: string | undefined; network?: string | undefined },
    now: number,
  ): Quarantine | null {
    if (this.active.size === 0) return null;
    const keys = [
      cacheKey("worker", ref.worker_id),
      ref.donor ? cacheKey("donor", ref.donor) : null,
      ref.network ? cacheKey("network", ref.network) : null,
    ];
    for (const key of keys) {
      const q = key === null ? undefined : this.active.get(key);
      if (q && q.until > now) return q;
    }
    return null;
  }

  /** Quarantines a worker, its donor and its network until `until`, and forgets the standing it had earned. */
  quarantine(ref: WorkerRef, until: number, reason: string): void {
    const keys: [Kind, string][] = [["worker", ref.worker_id]];
    if (ref.donor) keys.push(["donor", ref.donor]);
    if (ref.network) keys.push(["network", ref.network]);
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
    const identity = identityOf(ref);
    this.sql.run("DELETE FROM worker_trust WHERE donor = ?", identity);
    this.standing.set(identity, 0);
  }

  /** The quarantines running now, of workers, donors and networks alike (GET /v1/models/{m}/workers). */
  list(now: number): ({ kind: Kind; id: string } & Quarantine)[] {
    const out: ({ kind: Kind; id: string } & Quarantine)[] = [];
    for (const [key, q] of this.active) {
      const [kind, id] = key.split("\u0000") as [Kind, string];
      if (q.until > now) out.push({ kind, id, ...q });
    }
    return out;
  }

  /** Lifts a quarantine (an operator's call); false when there was none of that kind and id. */
  lift(kind: Kind, id: string, now: number): boolean {
    const gone = this.sql.all(
      "DELETE FROM quarantine WHERE kind = ? AND id = ? AND until > ? RETURNING id",
      kind,
      id,
      now,
    );
    const cached = this.active.delete(cacheKey(kind, id));
    return gone.length > 0 || cached;
  }

  /** Workers (by id) quarantined now. */
  quarantinedWorkers(now: number): number {
    let n = 0;
    for (const [key, q] of this.active) if (key.startsWith("worker\u0000") && q.until > now) n++;
    return n;
  }

  /** Agreements with trusted runs this worker's identity has since it was last caught. */
  agreed(ref: { worker_id: string; donor?: string | null | undefined }): number {
    const identity = identityOf(ref);
    const cached = this.standing.get(identity);
    if (cached !== undefined) return cached;
    const agreed =
      this.sql.one<{ agreed: number }>("SELECT agreed FROM worker_trust WHERE donor = ?", identity)?.agreed ?? 0;
    this.remember(identity, agreed);
    return agreed;
  }

  /** The worker as the policies see a run's producer. */
  source(ref: {
    worker_id: string;
    donor?: string | null | undefined;
    network?: string | null | undefined;
  }): RunSource {
    return { identity: identityOf(ref), network: ref.network ?? null, agreed: this.agreed(ref) };
  }

  /** One more agreement with a trusted run; the row lives TRUST_TTL_MS past now. */
  credit(ref: WorkerRef, now: number, n = 1): void {
    const identity = identityOf(ref);
    const row = this.sql.one<{ agreed: number }>(
      `INSERT INTO worker_trust (worker_id, donor, agreed, expires_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (worker_id, donor) DO UPDATE SET agreed = agreed + excluded.agreed, expires_at = MAX(expires_at, excluded.expires_at)
       RETURNING agreed`,
      "",
      identity,
      n,
      now + TRUST_TTL_MS,
    );
    this.remember(identity, row?.agreed ?? n);
  }

  /** Forgets quarantines that have run out, and trust rows past their expiry. */
  dropExpired(now: number): void {
    this.sql.run("DELETE FROM worker_trust WHERE expires_at <= ?", now);
    this.standing.clear();
    if (this.active.size === 0) return;
    this.sql.run("DELETE FROM quarantine WHERE until <= ?", now);
    for (const [key, q] of this.active) if (q.until <= now) this.active.delete(key);
  }

  /** Rows in the trust tables, for the test that fills and drains them. */
  rows(): { trust: number; quarantine: number } {
    return {
      trust: this.sql.one<{ n: number }>("SELECT COUNT(*) AS n FROM worker_trust")?.n ?? 0,
      quarantine: this.sql.one<{ n: number }>("SELECT COUNT(*) AS n FROM quarantine")?.n ?? 0,
    };
  }

  private remember(identity: string, agreed: number): void {
    this.standing.delete(identity);
    this.standing.set(identity, agreed);
    if (this.standing.size > MAX_CACHED) this.standing.delete(this.standing.keys().next().value as string);
  }
}
