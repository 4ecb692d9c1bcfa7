// Held text-generation outputs as claims to check (issue 14, point 8), in SQLite: while a donor's output waits
// for verification, its item's input carries it as `verify`, so the next run (a trusted worker, or an
// independent donor in good standing) checks it with one teacher-forced prefill and answers a verdict instead of
// generating again (shared/policy/generation-verdict.ts). Verifier (verification.ts) calls it as it holds,
// settles and discards candidates; lease-table.ts hands the input out as stored. Besides the held output, an item
// may hold donors' verdicts on it (checks that did not decide), never a second output.
import { claimOf, GenerationOutput, type ModelConfig } from "../../shared/index.ts";
import type { Sql } from "../sql.ts";
import { IN_SET } from "./job-store.ts";

export class GenerationClaims {
  constructor(private readonly sql: Sql) {}

  /**
   * Writes each held output into its item's input as the claim to check; a donor's verdict held beside one is no
   * claim. At most one output is held per item: a run of an item that holds one answers a verdict, never another
   * output (review refuses it from a donor; a trusted one decides), so the claim sent is the one output there is.
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
   * Of these items, those whose held output is gone (its producer caught, or a trusted check refused it): donors'
   * verdicts on it go with it, and their next run generates afresh, on the trusted pool only. A check already out on a
   * lease is moot: its item goes back to the queue now, the attempt not spent, and that lease's answer for it is
   * not recorded.
   */
  detach(seqs: readonly number[], donorFaultBudget: number): void {
    if (seqs.length === 0) return;
    const claimed = this.sql
      .all<{ seq: number }>(
        `SELECT seq FROM items WHERE seq IN ${IN_SET} AND state IN ('queued', 'leased') AND json_type(input, '$.verify') IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM candidates c WHERE c.item_seq = items.seq AND json_type(c.output, '$.verdict') IS NULL)`,
        JSON.stringify([...new Set(seqs)]),
      )
      .map((r) => r.seq);
    if (claimed.length === 0) return;
    this.sql.run(`DELETE FROM candidates WHERE item_seq IN ${IN_SET}`, JSON.stringify(claimed));
    this.sql.run(
      `UPDATE items SET input = json_remove(input, '$.verify'), donor_faults = MAX(donor_faults, ?), n_candidates = 0,
         state = CASE WHEN state = 'leased' THEN 'queued' ELSE state END,
         attempts = CASE WHEN state = 'leased' THEN MAX(0, attempts - 1) ELSE attempts END,
         lease_id = CASE WHEN state = 'leased' THEN NULL ELSE lease_id END,
         lease_pos = CASE WHEN state = 'leased' THEN NULL ELSE lease_pos END
       WHERE seq IN ${IN_SET}`,
      donorFaultBudget,
      JSON.stringify(claimed),
    );
  }

  /**
   * Items a donor's check left undecided (a dispute, since either donor may be the liar, or a check by a donor that
   * may not vouch): held with that verdict beside the output, they go to the trusted pool only, whose verdict
   * judges both.
   */
  toTrustedPool(seqs: readonly number[], donorFaultBudget: number): void {
    if (seqs.length === 0) return;
    this.sql.run(
      `UPDATE items SET donor_faults = MAX(donor_faults, ?) WHERE seq IN ${IN_SET}`,
      donorFaultBudget,
      JSON.stringify(seqs),
    );
  }
}
