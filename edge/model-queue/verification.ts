// Trust in browser workers' outputs, in SQLite: canaries and shapes checked on completion, outputs held
// as candidates until a trusted run or an independent donor in good standing agrees, and the hand-out
// restriction that gives a donor only the items its run can help with. LeaseSettlement calls it when a lease
// completes, HandOut when it hands one out; the decisions are shared/policy/donor-trust.ts and
// verification.ts, known answers known-answers.ts. A held text-generation output is checked by a verdict
// rather than a second output (generation-claims.ts, shared/policy/generation-verdict.ts); candidates are
// stored by candidate-store.ts.
import {
  type Candidate,
  CLAIM_TASK,
  type ClaimReading,
  candidateDiffers,
  checksClaim,
  generationProblem,
  heldOutputOf,
  inGoodStanding,
  judgeStrict,
  type ModelConfig,
  outputsDiffer,
  readClaimRun,
  shouldVerify,
} from "../../shared/index.ts";
import type { Sql } from "../sql.ts";
import { type CandidateRow, CandidateStore } from "./candidate-store.ts";
import { GenerationClaims } from "./generation-claims.ts";
import { countGeneration, generatedItem } from "./generation-stats.ts";
import { IN_SET } from "./job-store.ts";
import { KnownAnswers } from "./known-answers.ts";
import type { ItemFilter, LeaseRow } from "./lease-table.ts";
import type { MetricsStore } from "./metrics-store.ts";
import type { TrustStore, WorkerRef } from "./trust-store.ts";
import type { LeaseHolder } from "./worker-slots.ts";

/** One output of a completed lease that is not final yet, or checks one that is held. */
export interface PendingRun {
  seq: number;
  pos: number;
  /** The output as the worker sent it, and as JSON text. */
  output: unknown;
  text: string;
  /** Earlier runs of the item held as candidates; 0 for an item run the first time. */
  nCandidates: number;
}

/** A row of a completing lease as the checks need it. */
export interface LeaseItem {
  state: string;
  lease_pos: number | null;
  /** A canary's known output (JSON text); null for a real item. */
  expected: string | null;
  /** Earlier runs held as candidates: a text-generation item that holds one was sent a claim to check. */
  n_candidates: number;
}

export interface Caught {
  reason: string;
}

export class Verifier {
  readonly known: KnownAnswers;
  private readonly candidates: CandidateStore;
  private readonly claims: GenerationClaims;

  constructor(
    private readonly sql: Sql,
    private readonly metrics: MetricsStore,
    private readonly trust: TrustStore,
  ) {
    this.known = new KnownAnswers(sql, metrics);
    this.candidates = new CandidateStore(sql);
    this.claims = new GenerationClaims(sql);
  }

  /** Whether a lease's outputs are untrusted: from the browser pool, of a model with verification on. */
  checks(cfg: ModelConfig, pool: string): boolean {
    return pool === "browser" && cfg.verification.enabled;
  }

  // ---- hand-out ---------------------------------------------------------------------------------

  /**
   * The items an untrusted (browser) worker may lease, and whether it is in good standing. First runs: the
   * calls pinned to the browser pool, and routed ones only while donors can release work among themselves
   * (`donorsRelease`) and this donor may vouch. Held items (another donor's output awaits a second run):
   * only for a donor in good standing independent of every candidate's producer (another identity on
   * another network). Never an item whose donor-fault budget is spent, nor one pinned to the gpu pool.
   */
  itemFilter(cfg: ModelConfig, holder: LeaseHolder, donorsRelease: boolean): ItemFilter & { standing: boolean } {
    const standing = inGoodStanding(this.trust.source(holder), { trustAfter: cfg.verification.trust_after });
    return {
      standing,
      where: ` AND donor_faults < ? AND (pool IS NULL OR pool = 'browser') AND (
        (n_candidates = 0 AND (pool = 'browser' OR ?))
        OR (n_candidates > 0 AND ? AND NOT EXISTS (SELECT 1 FROM candidates c WHERE c.item_seq = items.seq
              AND (c.worker_id = ? OR c.donor = ? OR c.network = ? OR c.network IS NULL))))`,
      bindings: [
        cfg.verification.donor_fault_budget,
        donorsRelease && standing ? 1 : 0,
        standing && holder.network !== undefined ? 1 : 0,
        holder.worker_id,
        holder.donor ?? null,
        holder.network ?? null,
      ],
    };
  }

  // ---- completion -------------------------------------------------------------------------------

  /**
   * Checks an untrusted lease's results before any is used: a wrong answer to a canary, or an output
   * without its task's shape, catches the worker. Answers why, or null when nothing was caught.
   */
  review(cfg: ModelConfig, items: readonly LeaseItem[], results: readonly ResultLike[]): Caught | null {
    const tol = cfg.verification.tolerance;
    for (const item of items) {
      const result = item.lease_pos === null ? undefined : results[item.lease_pos];
      if (!result) continue;
      if (item.state === "canary" && item.expected !== null) {
        const wrong =
          "output" in result
            ? outputsDiffer(cfg.task, JSON.parse(item.expected), result.output, tol)
            : result.error.retryable
              ? null
              : `answered error ${result.error.code}`;
        if (wrong !== null) {
          this.metrics.inc("canaries_failed", "browser");
          return { reason: `wrong answer to a known-answer item (${wrong})` };
        }
      } else if (item.state === "leased" && "output" in result) {
        // A generation's shape is checked whatever the model: the queue reads it to build the claim it sends out,
        // and a donor sent a claim must answer the verdict of the check it was sent.
        const problem =
          cfg.task === CLAIM_TASK
            ? generationProblem(result.output, checksClaim(cfg.task, item.n_candidates), false)
            : this.known.shapeProblem(cfg, result.output);
        if (problem !== null) {
          this.metrics.inc("invalid_outputs", "browser");
          return { reason: `output ${item.lease_pos} is not a valid ${cfg.task} output: ${problem}` };
        }
      }
    }
    return null;
  }

  /**
   * Settles the runs of a lease that are not simply final. Runs of items that hold candidates are judged
   * against them (judgeStrict): a trusted run decides alone, and catches whoever disagreed; a donor's run
   * decides only with an independent donor in good standing. Fresh runs of an untrusted lease are held as
   * candidates (in sampled mode, a donor in good standing has only a sample of them held). Final outputs
   * are written into `outputs` by batch position; held items go back to the queue. A run of a held text-generation
   * item is a verdict on its one held output: agreed releases that output as its donor wrote it; a trusted mismatch
   * catches its producer and the item generates afresh on the trusted pool; a donor's check that does not decide is
   * held beside it (so the trusted verdict judges that donor too) and the item goes to the trusted pool only.
   * Answers the workers caught.
   */
  settle(
    cfg: ModelConfig,
    lease: LeaseRow,
    runs: readonly PendingRun[],
    outputs: (string | undefined)[],
    now: number,
  ): { ref: WorkerRef; reason: string }[] {
    const trusted = !this.checks(cfg, lease.pool);
    const producer: WorkerRef = { worker_id: lease.worker_id, donor: lease.donor ?? null, network: lease.network };
    const rule = { trustAfter: cfg.verification.trust_after };
    const freshSource = trusted ? null : this.trust.source(producer);
    const held: PendingRun[] = [];
    const resolved: number[] = [];
    // Generation items a donor's check left undecided (trusted pool only), and claims a trusted check refused (afresh).
    const disputed: number[] = [];
    const refused: number[] = [];
    // Donors' generations that reach callers now: released by a verdict, or taken unchecked (sampled mode).
    const released: { seq: number; output: string }[] = [];
    const generation = cfg.task === CLAIM_TASK;
    const dissenters = new Map<string, { ref: WorkerRef; reason: string }>();
    const agreedLeases = new Map<string, WorkerRef>();
    const bySeq = this.candidates.of(runs.filter((r) => r.nCandidates > 0).map((r) => r.seq));
    const tol = cfg.verification.tolerance;
    const refOf = (c: CandidateRow): WorkerRef => ({ worker_id: c.worker_id, donor: c.donor, network: c.network });
    let learned = false;
    for (const run of runs) {
      const candidates = bySeq.get(run.seq);
      if (!candidates) continue;
      const heldOutput = generation ? heldOutputOf(candidates) : undefined;
      const reading: ClaimReading | null = generation
        ? readClaimRun(heldOutput ? JSON.parse(heldOutput.output) : null, run.output, tol)
        : null;
      const differ = (a: unknown, b: unknown) =>
        reading ? candidateDiffers(a, reading) : outputsDiffer(cfg.task, a, b, tol);
      const verdict = judgeStrict<CandidateRow>(
        candidates.map(
          (c): Candidate<CandidateRow> => ({
            worker: c,
            source: this.trust.source(refOf(c)),
            output: JSON.parse(c.output),
          }),
        ),
        { output: run.output, source: freshSource },
        differ,
        rule,
      );
      this.metrics.inc("verifications", lease.pool);
      this.metrics.inc(
        verdict.difference === null ? "verification_agreements" : "verification_disagreements",
        lease.pool,
      );
      if (verdict.kind === "undecided") {
        held.push(run);
        if (reading) disputed.push(run.seq);
        continue;
      }
      resolved.push(run.seq);
      if (reading && !reading.generated) {
        // A verdict releases the held output it agreed with; a trusted one that did not: generate afresh.
        if (reading.agreed && heldOutput) {
          outputs[run.pos] = heldOutput.output;
          released.push({ seq: run.seq, output: heldOutput.output });
        } else refused.push(run.seq);
      } else {
        // Agreement on a classification compares labels and scores, not their order: given out best first.
        outputs[run.pos] = verdict.trusted ? run.text : JSON.stringify(bestFirst(cfg.task, run.output));
      }
      this.metrics.inc("discarded", "browser", verdict.disagree.length);
      if (!verdict.trusted) continue;
      // Only a trusted run teaches: known answers, standing, and who answered wrongly.
      if (!learned && outputs[run.pos] !== undefined) {
        // Its shape only: a donor has run this input, so it would be no canary.
        this.known.learn(cfg, run.seq, outputs[run.pos] as string, now, false);
        learned = true;
      }
      for (const c of verdict.agree) agreedLeases.set(c.lease_id, refOf(c));
      for (const c of verdict.disagree) {
        const reason = `output of item ${c.item_seq} disagreed with a trusted run's (${verdict.difference})`;
        dissenters.set(`${c.worker_id}\u0000${c.donor ?? ""}`, { ref: refOf(c), reason });
      }
    }
    const fresh = runs.filter((r) => !bySeq.has(r.seq));
    if (fresh.length > 0) {
      const { trust_after, sample_rate, mode } = cfg.verification;
      const verify =
        !trusted &&
        (mode === "strict" ||
          shouldVerify(
            this.trust.agreed(producer),
            { trustAfter: trust_after, sampleRate: sample_rate },
            Math.random(),
          ));
      for (const run of fresh) {
        if (verify) held.push(run);
        else {
          outputs[run.pos] = run.text;
          if (generation) released.push({ seq: run.seq, output: run.text });
        }
      }
    }
    for (const r of released) {
      const item = generatedItem(this.sql, r.seq);
      if (item) countGeneration(this.sql, this.metrics, "browser", item, JSON.parse(r.output), now);
    }
    this.candidates.forget(resolved);
    const budget = cfg.verification.donor_fault_budget;
    this.claims.detach(refused, budget);
    this.candidates.hold(producer, lease.id, held, now);
    if (generation) this.claims.attach(cfg, held);
    this.claims.toTrustedPool(disputed, budget);
    // A worker earns standing for a batch a trusted run agreed with once none of its candidates is left undecided.
    for (const [leaseId, ref] of agreedLeases) {
      if (!this.sql.one("SELECT 1 AS left FROM candidates WHERE lease_id = ? LIMIT 1", leaseId))
        this.trust.credit(ref, now);
    }
    return [...dissenters.values()];
  }

  /**
   * Drops the candidates a quarantined worker, donor or network produced (none of them released: a released
   * output's candidates are gone); their items are then run afresh, on the trusted pool. Answers how many.
   */
  discard(ref: WorkerRef, budget: number): number {
    const seqs = this.candidates.dropBy(ref);
    if (seqs.length > 0) {
      // A caught donor's items are not handed to donors again.
      this.sql.run(
        `UPDATE items SET donor_faults = MAX(donor_faults, ?) WHERE seq IN ${IN_SET}`,
        budget,
        JSON.stringify(seqs),
      );
      // A text-generation item whose held output this was no longer has a claim to check.
      this.claims.detach(seqs, budget);
    }
    return seqs.length;
  }

  /** Forgets candidates of items no longer open, and canaries of leases that ended. */
  collectGarbage(): void {
    this.candidates.collectGarbage();
  }

  /** Items held for verification now (their jobs still open). */
  awaiting(): number {
    return this.candidates.awaiting();
  }
}

/** The result shapes review reads (ItemResult, as parsed from a completion). */
type ResultLike = { output: unknown } | { error: { code: string; retryable: boolean } };

/** A text-classification output sorted best score first, as callers read it; other outputs as they are. */
function bestFirst(task: string, output: unknown): unknown {
  if (task !== "text-classification" || !Array.isArray(output)) return output;
  const score = (x: unknown) => (typeof x === "object" && x !== null ? Number((x as { score?: unknown }).score) : 0);
  return [...output].sort((a, b) => score(b) - score(a));
}
