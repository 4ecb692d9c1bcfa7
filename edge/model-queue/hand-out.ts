// Handing batches to free workers: who is free (breakers, quarantines, and the caps on what donors hold),
// what each may lease (pool-router.ts for the gpu pool, verification.ts for donors), Triton's batching rule,
// canaries for donors, and the hedge time of every untrusted lease. ModelQueue calls pump() after any change.
import {
  decideBatch,
  donorsCanRelease,
  hedgeAt,
  inGoodStanding,
  type ModelConfig,
  mayHoldMore,
} from "../../shared/index.ts";
import type { BreakerStore } from "./breaker-store.ts";
import { breakerKey } from "./breaker-store.ts";
import { type Held, type ItemFilter, type LeaseTable, withLease } from "./lease-table.ts";
import { BROWSER_ITEMS, type PoolRouter, type RoutePlan } from "./pool-router.ts";
import type { TrustStore } from "./trust-store.ts";
import type { Verifier } from "./verification.ts";
import type { LeaseHolder, Slot, WorkerSlots } from "./worker-slots.ts";

/** Both restrictions on the items a worker may lease. */
function both(a: ItemFilter, b: ItemFilter | undefined): ItemFilter {
  return b ? { where: a.where + b.where, bindings: [...a.bindings, ...b.bindings] } : a;
}

/** What one pass of the pump works out once: who holds what, and whether donors can release work alone. */
interface Pass {
  now: number;
  held: Held;
  /** Browser workers whose first runs of routed work count (verification off: all ready ones). */
  firstRunners: LeaseHolder[];
  /** Whether any browser worker could take a batch (connected, not quarantined, breaker closed). */
  donorReady: boolean;
  donorsRelease: boolean;
  plan?: RoutePlan;
}

export class HandOut {
  /**
   * The canary-rate share of the items handed to the gpu pool that donors have not yet shadowed with known
   * answers: a donor with nothing it may run gets a batch of canaries as real work flows, never more.
   */
  private shadowCredit = 0;

  constructor(
    private readonly leases: LeaseTable,
    private readonly slots: WorkerSlots,
    private readonly trust: TrustStore,
    private readonly verifier: Verifier,
    private readonly router: PoolRouter,
    private readonly breakers: BreakerStore,
    private readonly deliverFailed: (leaseId: string) => void,
  ) {}

  /** Whether a worker may be given a batch at all now: not quarantined, breaker closed (or probing), under the caps. */
  mayLease(cfg: ModelConfig, now: number, held?: Pass["held"]): (w: LeaseHolder) => boolean {
    const untrusted = cfg.verification.enabled;
    const caps = { perDonor: cfg.verification.donor_max_leases, perNetwork: cfg.verification.network_max_leases };
    return (w) => {
      if (!this.breakers.allows(breakerKey(w), now).allowed) return false;
      if (w.pool !== "browser") return true;
      if (this.trust.quarantinedUntil(w, now) !== null) return false;
      if (!untrusted || !held || w.donor === undefined) return true;
      const network = w.network === undefined ? null : (held.byNetwork.get(w.network) ?? 0);
      return mayHoldMore(held.byDonor.get(w.donor) ?? 0, network, caps);
    };
  }

  /** The browser workers whose first runs of routed work count, and whether donors can release work alone. */
  firstRunners(
    cfg: ModelConfig,
    now: number,
  ): { firstRunners: LeaseHolder[]; donorsRelease: boolean; donorReady: boolean } {
    const ready = this.slots.ready("browser", now, this.mayLease(cfg, now));
    const donorReady = ready.length > 0;
    if (!cfg.verification.enabled) return { firstRunners: ready, donorsRelease: true, donorReady };
    const rule = { trustAfter: cfg.verification.trust_after };
    const sourced = ready.map((w) => ({ w, source: this.trust.source(w) }));
    const donorsRelease = donorsCanRelease(
      sourced.map((s) => s.source),
      rule,
    );
    return {
      firstRunners: donorsRelease ? sourced.filter((s) => inGoodStanding(s.source, rule)).map((s) => s.w) : [],
      donorsRelease,
      donorReady,
    };
  }

  /** Hands out batches while a worker is free and one is due; answers when to look again for a partial batch. */
  pump(cfg: ModelConfig, now: number): number | null {
    // An HTTP donor that stops polling stops counting as ready: look again then, as what it held back may move.
    let dueAt: number | null = this.slots.httpReadyEndsAt(now);
    // Nothing queued and no donor owed known answers: no worker can be given anything (most pumps after a
    // completion at low load), so who holds what is not read.
    const owedCanaries = cfg.verification.enabled && this.shadowCredit >= 1;
    if (!owedCanaries && !this.leases.anyQueued()) return dueAt;
    const pass: Pass = { now, held: this.leases.held(), ...this.firstRunners(cfg, now) };
    for (;;) {
      const { sent, lookAgainAt } = this.handOutOne(cfg, pass);
      if (lookAgainAt !== null) dueAt = dueAt === null ? lookAgainAt : Math.min(dueAt, lookAgainAt);
      if (!sent) return dueAt;
      pass.plan = undefined; // what the gpu pool may take changed with the batch just sent
    }
  }

  private handOutOne(cfg: ModelConfig, pass: Pass): { sent: boolean; lookAgainAt: number | null } {
    const { now } = pass;
    const untrusted = cfg.verification.enabled;
    let lookAgainAt: number | null = null;
    const later = (t: number) => {
      lookAgainAt = lookAgainAt === null ? t : Math.min(lookAgainAt, t);
    };
    // Kinds of worker that found nothing due: every other of the same kind would find the same.
    const foundNone = new Set<string>();
    const free = this.slots.free(pass.held, this.mayLease(cfg, now, pass.held));
    // Donors first when they can release work among themselves: a verifying run then goes to one of them.
    if (untrusted && pass.donorsRelease) free.sort((a, b) => rank(a.slot) - rank(b.slot));
    for (const { slot, room } of free) {
      const info = slot.info;
      const breaker = this.breakers.allows(breakerKey(info), now);
      const maxBatchSize = Math.min(cfg.max_batch_size, room, breaker.maxItems ?? Number.MAX_SAFE_INTEGER);
      let filter: ItemFilter;
      // Workers of a pool with the same room would find the same batch, or none.
      let kind: string | null = `${info.pool} ${maxBatchSize}`;
      let standing = false;
      if (info.pool === "gpu") {
        pass.plan ??= this.router.handOutPlan(
          cfg,
          now,
          pass.firstRunners,
          () => this.leases.activeByPool().inFlight.browser,
          maxBatchSize,
        );
        if (pass.plan.gpu === 0) {
          // Nothing for the GPU pool yet: look again when the oldest routed item becomes overdue.
          if (pass.plan.nextOverdueAt !== null) later(pass.plan.nextOverdueAt);
          continue;
        }
        filter = this.router.gpuItems(cfg, pass.plan, pass.donorReady);
      } else if (untrusted) {
        const own = this.verifier.itemFilter(cfg, info, pass.donorsRelease);
        standing = own.standing;
        filter = both(BROWSER_ITEMS, own);
        kind = null; // what a donor may run depends on who it is
      } else {
        filter = BROWSER_ITEMS;
      }
      if (kind !== null && foundNone.has(kind)) continue;
      const head = this.leases.eligible(now, maxBatchSize, filter);
      const decision = decideBatch({
        eligible: head?.n ?? 0,
        oldestEnqueuedAt: head?.oldest ?? null,
        now,
        maxBatchSize,
        maxQueueDelayMs: cfg.max_queue_delay_ms,
      });
      if (decision.kind === "wait") later(decision.until);
      if (decision.kind === "send") {
        const untrustedSlot = untrusted && info.pool === "browser";
        const canaries = untrustedSlot ? this.verifier.known.pickCanary(cfg) : [];
        // The GPU pool takes no more than its share of the head of the queue.
        const due = Math.min(decision.size, info.pool === "gpu" && pass.plan ? pass.plan.gpu : decision.size);
        const size = canaries.length > 0 && due >= maxBatchSize ? due - canaries.length : due;
        const handed = this.give(cfg, pass, slot, size, filter, canaries);
        // Donors earning standing shadow the trusted pool's work at the canary rate: a share of it, not a copy.
        if (info.pool === "gpu" && untrusted) {
          const earned = handed * cfg.verification.canary_rate;
          this.shadowCredit = Math.min(this.shadowCredit + earned, 4 * cfg.max_batch_size);
        }
        return { sent: true, lookAgainAt };
      }
      if (untrusted && info.pool === "browser" && this.shadowCredit >= 1 && decision.kind === "empty") {
        // Nothing this donor may run: a batch of known answers, as real work flows, earns (or keeps) its standing.
        const n = Math.floor(Math.min(this.shadowCredit, maxBatchSize, standing ? 1 : maxBatchSize));
        const canaries = this.verifier.known.pick(cfg, n);
        if (canaries.length > 0) {
          this.shadowCredit -= canaries.length;
          this.give(cfg, pass, slot, 0, filter, canaries);
          return { sent: true, lookAgainAt };
        }
      }
      if (kind !== null) foundNone.add(kind);
    }
    return { sent: false, lookAgainAt };
  }

  /**
   * Leases `size` items (and the canaries) to the slot, and counts the lease in the pass's `held`; answers how
   * many real items it got.
   */
  private give(
    cfg: ModelConfig,
    pass: Pass,
    slot: Slot,
    size: number,
    filter: ItemFilter,
    canaries: readonly { input: string; output: string }[],
  ): number {
    const { now } = pass;
    const info = slot.info;
    const untrustedSlot = this.verifier.checks(cfg, info.pool);
    const hedge = untrustedSlot
      ? hedgeAt(now, this.router.expectedBrowserMs(size + canaries.length), {
          factor: cfg.verification.hedge_factor,
          minMs: cfg.verification.hedge_min_ms,
          maxMs: cfg.lease_ms,
        })
      : null;
    const { leaseId, batchJson, items } = this.leases.handOut(info, size, now, cfg, {
      filter,
      canaries,
      hedgeAt: hedge,
      // A trusted worker's items settle as they end; an untrusted one's batch is reviewed whole.
      itemResults: !untrustedSlot,
    });
    this.breakers.leased(breakerKey(info), info.pool, now);
    withLease(pass.held, info, items + canaries.length);
    if (!this.slots.deliver(slot, batchJson)) this.deliverFailed(leaseId);
    return items;
  }
}

/** Browser slots before gpu ones. */
function rank(slot: Slot): number {
  return slot.info.pool === "browser" ? 0 : 1;
}
