// Held text-generation outputs as claims to check (issue 14, point 8), in SQLite: while a donor's output waits
// for verification, its item's input carries it as `verify`, so the next run (a trusted worker, or an
// independent donor in good standing) checks it with one teacher-forced prefill and answers a verdict instead of
// generating again (shared/policy/generation-verdict.ts). Verifier (verification.ts) calls it as it holds,
// settles and discards candidates; lease-table.ts hands the input out as stored.
import { claimOf, GenerationOutput, type ModelConfig } from "../../shared/index.ts";
import type { Sql } from "../sql.ts";
import { IN_SET } from "./job-store.ts";

export class GenerationClaims {
  constructor(private readonly sql: Sql) {}

  /**
   * Writes each held output into its item's input as the claim to check. Only outputs of the output shape
   * are held (review caught the rest), and at most one per item: a run of an item that holds one answers a
   * verdict, never another output, so the claim sent is the one candidate there is.
   */
  attach(cfg: ModelConfig, runs: readonly { seq: number; output: unknown }[]): void {
    const claims: [number, string][] = [];
    for (const run of runs) {
      const output = GenerationOutput.safeParse(run.output);
      if (output.success) claims.push([run.seq, JSON.stringify(claimOf(output.data, cfg.verification.tolerance))]);
    }
    if (claims.length === 0) return;
    this.sql.run(
      `UPDATE items SET input = json_set(input, '$.verify', json(json_extract(j.value, '$[1]')))
       FROM json_each(?) AS j WHERE items.seq = json_extract(j.value, '$[0]')`,
      JSON.stringify(claims),
    );
  }

  /**
   * The held output of these items is gone (its producer caught, or a trusted check refused it): their next
   * run generates afresh, on the trusted pool only. A check already out on a lease is moot: its item goes back
   * to the queue now, the attempt not spent, and that lease's answer for it is not recorded.
   */
  detach(seqs: readonly number[], donorFaultBudget: number): void {
    if (seqs.length === 0) return;
    this.sql.run(
      `UPDATE items SET input = json_remove(input, '$.verify'), donor_faults = MAX(donor_faults, ?),
         state = CASE WHEN state = 'leased' THEN 'queued' ELSE state END,
         attempts = CASE WHEN state = 'leased' THEN MAX(0, attempts - 1) ELSE attempts END,
         lease_id = CASE WHEN state = 'leased' THEN NULL ELSE lease_id END,
         lease_pos = CASE WHEN state = 'leased' THEN NULL ELSE lease_pos END
       WHERE seq IN ${IN_SET} AND state IN ('queued', 'leased') AND json_type(input, '$.verify') IS NOT NULL`,
      donorFaultBudget,
      JSON.stringify([...new Set(seqs)]),
    );
  }

  /**
   * Checks that did not decide (a donor's that disputed the claim, or one that may not vouch for it): the
   * item keeps its claim and goes back to the queue for the trusted pool alone, the attempt not spent.
   */
  toTrustedPool(seqs: readonly number[], donorFaultBudget: number, now: number): void {
    if (seqs.length === 0) return;
    this.sql.run(
      `UPDATE items SET state = 'queued', lease_id = NULL, lease_pos = NULL, attempts = MAX(0, attempts - 1),
         available_at = ?, donor_faults = MAX(donor_faults, ?)
       WHERE seq IN ${IN_SET} AND state = 'leased'`,
      now,
      donorFaultBudget,
      JSON.stringify(seqs),
    );
  }
}
