// The workers and donors of one model queue as an operator reads them (GET /v1/models/{m}/workers): each
// connected worker with its pool, device and GPU adapter, the leases it holds, its standing with the
// verifier, any quarantine on it and its circuit breaker; the quarantines running now; and lifting one.
// ModelQueue calls it; trust-store.ts, breaker-store.ts and worker-slots.ts hold what it reads.
import { type BreakerState, inGoodStanding, type ModelConfig } from "../../shared/index.ts";
import { type BreakerStore, breakerKey } from "./breaker-store.ts";
import type { LeaseTable } from "./lease-table.ts";
import { type Kind, QUARANTINE_KINDS, type TrustStore } from "./trust-store.ts";
import { type WorkerSlots, workerKey } from "./worker-slots.ts";

export interface RosterEntry {
  worker_id: string;
  pool: string;
  transport: "socket" | "http";
  device: string;
  gpu?: Record<string, string | undefined>;
  max_batch_size: number;
  max_concurrent_batches: number;
  /** Set by a worker whose batches join one run: the most items it holds at once. */
  max_items_in_flight?: number;
  draining: boolean;
  /** The donor a browser token named, and the client network it connected from. */
  donor?: string;
  network?: string;
  leases_held: number;
  /** The items those leases hold. */
  items_held: number;
  /** Browser workers under verification: agreements with trusted runs, and whether that is good standing. */
  standing?: { agreed: number; in_good_standing: boolean };
  quarantine: { until: number; reason: string } | null;
  breaker: { state: BreakerState["state"]; failures: number; until?: number };
}

export interface Roster {
  model: string;
  workers: RosterEntry[];
  /** Every quarantine running now, of workers, donors and networks, connected or not. */
  quarantines: { kind: Kind; id: string; until: number; reason: string }[];
}

export function isQuarantineKind(kind: string): kind is Kind {
  return (QUARANTINE_KINDS as readonly string[]).includes(kind);
}

export class WorkerRoster {
  constructor(
    private readonly slots: WorkerSlots,
    private readonly leases: LeaseTable,
    private readonly trust: TrustStore,
    private readonly breakers: BreakerStore,
  ) {}

  list(cfg: ModelConfig, now: number): Roster {
    const held = this.leases.held();
    const rule = { trustAfter: cfg.verification.trust_after };
    const workers = this.slots.list(now).map((w): RosterEntry => {
      const b = this.breakers.describe(breakerKey(w));
      const entry: RosterEntry = {
        worker_id: w.worker_id,
        pool: w.pool,
        transport: w.transport,
        device: w.device,
        max_batch_size: w.max_batch_size,
        max_concurrent_batches: w.max_concurrent_batches,
        draining: w.draining ?? false,
        leases_held: held.byWorker.get(workerKey(w)) ?? 0,
        items_held: held.itemsByWorker.get(workerKey(w)) ?? 0,
        quarantine: w.pool === "browser" ? this.trust.quarantinedUntil(w, now) : null,
        breaker: { state: b.state, failures: b.failures, ...(b.state === "open" ? { until: b.until } : {}) },
      };
      if (w.gpu) entry.gpu = w.gpu;
      if (w.max_items_in_flight !== undefined) entry.max_items_in_flight = w.max_items_in_flight;
      if (w.donor !== undefined) entry.donor = w.donor;
      if (w.network !== undefined) entry.network = w.network;
      if (w.pool === "browser" && cfg.verification.enabled) {
        const source = this.trust.source(w);
        entry.standing = { agreed: source.agreed, in_good_standing: inGoodStanding(source, rule) };
      }
      return entry;
    });
    return { model: cfg.name, workers, quarantines: this.trust.list(now) };
  }

  /** Lifts a quarantine; false when none of that kind and id is running. */
  lift(kind: Kind, id: string, now: number): boolean {
    return this.trust.lift(kind, id, now);
  }
}
