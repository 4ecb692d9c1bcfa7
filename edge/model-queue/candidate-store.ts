// Outputs of browser workers held as candidates until verification decides (verification.ts), in SQLite: read
// by item, kept (their items back in the queue for another worker), forgotten once decided, dropped when their
// producer is caught, and items.n_candidates kept in step. The Verifier is its one user.
import type { Sql } from "../sql.ts";
import { IN_SET } from "./job-store.ts";
import type { WorkerRef } from "./trust-store.ts";

/** An item's count of candidates, as items.n_candidates keeps it. */
const CANDIDATES_OF_ITEM = "(SELECT COUNT(*) FROM candidates WHERE candidates.item_seq = items.seq)";
/** Candidate outputs are written in runs of about this many bytes per statement. */
const CANDIDATE_CHUNK_BYTES = 512 * 1024;

export interface CandidateRow extends Record<string, SqlStorageValue> {
  item_seq: number;
  worker_id: string;
  donor: string | null;
  network: string | null;
  lease_id: string;
  output: string;
}

export class CandidateStore {
  constructor(private readonly sql: Sql) {}

  /** The candidates of these items, by item, oldest first. */
  of(seqs: readonly number[]): Map<number, CandidateRow[]> {
    const bySeq = new Map<number, CandidateRow[]>();
    if (seqs.length === 0) return bySeq;
    for (const row of this.sql.all<CandidateRow>(
      `SELECT item_seq, worker_id, donor, network, lease_id, output FROM candidates WHERE item_seq IN ${IN_SET} ORDER BY id`,
      JSON.stringify(seqs),
    )) {
      bySeq.set(row.item_seq, [...(bySeq.get(row.item_seq) ?? []), row]);
    }
    return bySeq;
  }

  /** Forgets every candidate of these items (decided). */
  forget(seqs: readonly number[]): void {
    if (seqs.length === 0) return;
    this.sql.run(`DELETE FROM candidates WHERE item_seq IN ${IN_SET}`, JSON.stringify(seqs));
    this.sql.run(`UPDATE items SET n_candidates = 0 WHERE seq IN ${IN_SET}`, JSON.stringify(seqs));
  }

  /**
   * Keeps runs as candidates and puts their items back in the queue, for a worker other than this one.
   * The run succeeded, so it does not count as one of the item's attempts.
   */
  hold(producer: WorkerRef, leaseId: string, runs: readonly { seq: number; text: string }[], now: number): void {
    if (runs.length === 0) return;
    for (const chunk of chunksOf(runs, CANDIDATE_CHUNK_BYTES)) {
      this.sql.run(
        `INSERT INTO candidates (item_seq, worker_id, donor, network, lease_id, output)
         SELECT json_extract(value, '$[0]'), ?, ?, ?, ?, json_extract(value, '$[1]') FROM json_each(?)`,
        producer.worker_id,
        producer.donor,
        producer.network ?? null,
        leaseId,
        JSON.stringify(chunk.map((r) => [r.seq, r.text])),
      );
    }
    this.sql.run(
      `UPDATE items SET state = 'queued', lease_id = NULL, lease_pos = NULL, attempts = attempts - 1, available_at = ?,
         n_candidates = ${CANDIDATES_OF_ITEM}
       WHERE seq IN ${IN_SET}`,
      now,
      JSON.stringify(runs.map((r) => r.seq)),
    );
  }

  /** Drops the candidates a worker, donor or network produced; answers their items (one per candidate dropped). */
  dropBy(ref: WorkerRef): number[] {
    const seqs = this.sql
      .all<{ item_seq: number }>(
        "DELETE FROM candidates WHERE worker_id = ? OR donor = ? OR network = ? RETURNING item_seq",
        ref.worker_id,
        ref.donor,
        ref.network ?? null,
      )
      .map((r) => r.item_seq);
    if (seqs.length > 0) {
      this.sql.run(
        `UPDATE items SET n_candidates = ${CANDIDATES_OF_ITEM} WHERE seq IN ${IN_SET}`,
        JSON.stringify([...new Set(seqs)]),
      );
    }
    return seqs;
  }

  /** Forgets candidates of items no longer open, and canaries of leases that ended. */
  collectGarbage(): void {
    this.sql.run(
      "DELETE FROM candidates WHERE NOT EXISTS (SELECT 1 FROM items WHERE items.seq = candidates.item_seq AND items.state IN ('queued', 'leased'))",
    );
    this.sql.run(
      "DELETE FROM items WHERE state = 'canary' AND NOT EXISTS (SELECT 1 FROM leases WHERE leases.id = items.lease_id AND leases.state = 'active')",
    );
  }

  /** Items held for verification now (their jobs still open). */
  awaiting(): number {
    return (
      this.sql.one<{ n: number }>(
        "SELECT COUNT(*) AS n FROM items WHERE state IN ('queued', 'leased') AND n_candidates > 0",
      )?.n ?? 0
    );
  }
}

/** Splits runs into chunks of about maxBytes of output text each (at least one run per chunk). */
function chunksOf<T extends { text: string }>(runs: readonly T[], maxBytes: number): T[][] {
  const chunks: T[][] = [];
  let chunk: T[] = [];
  let bytes = 0;
  for (const run of runs) {
    if (chunk.length > 0 && bytes + run.text.length > maxBytes) {
      chunks.push(chunk);
      chunk = [];
      bytes = 0;
    }
    chunk.push(run);
    bytes += run.text.length;
  }
  if (chunk.length > 0) chunks.push(chunk);
  return chunks;
}
