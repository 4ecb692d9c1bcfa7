// Token deltas of generating items (issue 14): ModelQueue hands the deltas of each `tokens` or `deltas` frame
// from a lease's holder to accept(), which keeps each item's tokens and text once (a repeated offset is
// ignored, a gap refused), counts the frame as lease activity, and times the first token; JobEvents relays what is kept as `token`
// events, LeaseTable.handOut sends it back as `resume` when the item is redelivered, and finished() records
// the TTFT / per-token / tokens-per-second metrics once outputs are in.
import {
  ErrorCode,
  GenerationOutput,
  type ItemResult,
  logprobsMisaligned,
  type ModelConfig,
  type TokenLogprob,
  type TokensBody,
  verdictOf,
} from "../../shared/index.ts";
import type { Sql } from "../sql.ts";
import { countGeneration, type GeneratedItem } from "./generation-stats.ts";
import type { LeaseRow, LeaseTable } from "./lease-table.ts";
import type { MetricsStore } from "./metrics-store.ts";

/** The task whose items generate (shared/protocol/generation.ts GenerationItem). */
export const GENERATION_TASK = "text-generation";

/** The most tokens kept per item: GenerationParams.max_new_tokens' ceiling. */
const MAX_TOKENS = 4096;

type Refusal = { error: { code: string; message: string } };

interface StreamRow extends Record<string, SqlStorageValue> {
  seq: number;
  job_id: string;
  state: string;
  lease_pos: number;
  gen_count: number;
  created_at: number;
  /**
   * 1 when the item's params ask for log probabilities (its gen_logprobs array was started at submit,
   * job-store.ts): each delta must carry one entry a token.
   */
  logprobs: number;
}

/** An item's tokens taken from one frame, to write (TokenStream.store). */
interface KeptTokens {
  seq: number;
  tokens: number[];
  text: string;
  /** Their log probabilities (params.logprobs), one entry a token; null when not asked for. */
  logprobs: TokenLogprob[] | null;
  /** The item's token count with them. */
  count: number;
}

export class TokenStream {
  constructor(
    private readonly sql: Sql,
    private readonly metrics: MetricsStore,
    private readonly leases: LeaseTable,
    private readonly config: () => ModelConfig,
  ) {}

  /**
   * Keeps token deltas of an active lease's items, in order: `refused` is the first refusal (null when each was
   * kept or already held), `jobs` those whose tokens grew. A refused delta ends the rest of its own item's, not
   * other items' (the lease may hold other jobs' items, which go on when one job is cancelled). An untrusted
   * lease's deltas (a donor's, while verification is on) only keep the lease alive: they are not relayed, since
   * its output reaches callers only once verified, nor kept to resume from, since a next worker must not build
   * on tokens nobody checked. One read finds the lease's items, one write keeps every item's deltas.
   */
  accept(
    lease: LeaseRow,
    body: TokensBody,
    untrusted: boolean,
    now: number,
  ): { refused: Refusal | null; jobs: Set<string> } {
    this.keepAlive(lease, now);
    const jobs = new Set<string>();
    if (untrusted) return { refused: null, jobs };
    const rows = new Map<number, StreamRow>();
    for (const row of this.sql.all<StreamRow>(
      `SELECT seq, job_id, state, lease_pos, gen_count, (SELECT created_at FROM jobs WHERE jobs.id = items.job_id) AS created_at,
         gen_logprobs IS NOT NULL AS logprobs
       FROM items WHERE lease_id = ? AND state = 'leased'`,
      lease.id,
    )) {
      rows.set(row.lease_pos, row);
    }
    let refused: Refusal | null = null;
    const stopped = new Set<number>();
    const kept = new Map<number, KeptTokens>();
    for (const delta of body.deltas) {
      if (stopped.has(delta.pos)) continue;
      const row = rows.get(delta.pos);
      const outcome = row ? this.keep(lease, row, delta, now) : this.noItem(lease, delta.pos);
      if (outcome === "held") continue;
      if (typeof outcome !== "string") {
        refused ??= outcome;
        stopped.add(delta.pos);
        continue;
      }
      if (!row) continue; // kept implies its row: noItem refuses
      jobs.add(row.job_id);
      // An item's deltas in one frame follow one another: kept as one.
      const item = kept.get(row.seq) ?? { seq: row.seq, tokens: [], text: "", logprobs: null, count: 0 };
      item.tokens.push(...delta.tokens);
      item.text += delta.text;
      if (row.logprobs) {
        item.logprobs ??= [];
        item.logprobs.push(...(delta.logprobs ?? []));
      }
      item.count = row.gen_count;
      kept.set(row.seq, item);
    }
    this.store([...kept.values()], now);
    return { refused, jobs };
  }

  /**
   * Writes the tokens kept of a frame, every item's in one statement: each item's join its kept JSON arrays inside
   * SQLite (no read and rewrite of them here), its text its text, and its count moves on.
   */
  private store(kept: readonly KeptTokens[], now: number): void {
    if (kept.length === 0) return;
    this.sql.run(
      `UPDATE items SET
         gen_tokens = ${APPEND("gen_tokens", "tokens")},
         gen_logprobs = CASE WHEN d.value ->> 'logprobs' IS NULL THEN gen_logprobs ELSE ${APPEND("gen_logprobs", "logprobs")} END,
         gen_text = gen_text || (d.value ->> 'text'), gen_count = d.value ->> 'count',
         first_token_at = COALESCE(first_token_at, ?2)
       FROM json_each(?1) AS d WHERE items.seq = d.value ->> 'seq'`,
      JSON.stringify(
        kept.map((k) => ({
          seq: k.seq,
          tokens: JSON.stringify(k.tokens),
          text: k.text,
          logprobs: k.logprobs && asciiJson(k.logprobs),
          count: k.count,
        })),
      ),
      now,
    );
  }

  private noItem(lease: LeaseRow, pos: number): Refusal {
    return refusal(ErrorCode.validation, `lease ${lease.id} holds no generating item at position ${pos}`);
  }

  /**
   * Takes one delta of the item `row` (whose count it moves on; accept writes what was taken), or says why not;
   * "held": already kept.
   */
  private keep(
    lease: LeaseRow,
    row: StreamRow,
    delta: TokensBody["deltas"][number],
    now: number,
  ): "kept" | "held" | Refusal {
    const end = delta.offset + delta.tokens.length;
    // Sent again (a worker that resends after a reconnect, or a resumed worker's first delta): kept once.
    if (end <= row.gen_count) return "held";
    if (delta.offset !== row.gen_count) {
      return refusal(
        ErrorCode.validation,
        `item ${delta.pos} of lease ${lease.id} holds ${row.gen_count} tokens; a delta at offset ${delta.offset} would ${delta.offset > row.gen_count ? "leave a gap" : "overlap them"}: send the tokens from offset ${row.gen_count}`,
      );
    }
    if (end > MAX_TOKENS) {
      return refusal(ErrorCode.validation, `an item generates at most ${MAX_TOKENS} tokens; this delta ends at ${end}`);
    }
    if (row.logprobs && delta.logprobs?.length !== delta.tokens.length) {
      return refusal(
        ErrorCode.validation,
        `item ${delta.pos} of lease ${lease.id} asks for log probabilities: send one logprobs entry a token (${delta.logprobs?.length ?? 0} for ${delta.tokens.length})`,
      );
    }
    if (row.gen_count === 0) this.metrics.observe("ttft", lease.pool, [(now - row.created_at) / 1000]);
    row.gen_count = end;
    return "kept";
  }

  /** A generating worker sends deltas rather than extends: each one that finds the lease half spent renews it. */
  private keepAlive(lease: LeaseRow, now: number): void {
    if (lease.deadline - now >= this.config().lease_ms / 2) return;
    // The row is the one the frame's deltas share: renewed once for all of them.
    const { deadline } = this.leases.extend(lease, undefined, now);
    if (deadline !== undefined) lease.deadline = deadline;
  }

  /**
   * Before a trusted lease's results are recorded (at its completion, or some items' ahead of it: a position
   * with no result is left as it is): the results to record, where an output that contradicts the
   * tokens already relayed (not starting with them) becomes a retryable error, so the item runs again from
   * the accepted prefix and the caller's stream and answer never disagree; and, to call once recorded, the
   * metrics of each generating item. An item that streamed nothing had its first token now.
   */
  beforeSettle(
    lease: LeaseRow,
    given: readonly (ItemResult | undefined)[],
    now: number,
  ): { results: (ItemResult | undefined)[]; measure: () => void } {
    const rows = this.sql.all<{
      seq: number;
      pos: number;
      first: number | null;
      created_at: number;
      gen_tokens: string | null;
    }>(
      `SELECT seq, lease_pos AS pos, first_token_at AS first, gen_tokens,
         (SELECT created_at FROM jobs WHERE jobs.id = items.job_id) AS created_at
       FROM items WHERE lease_id = ? AND state = 'leased'`,
      lease.id,
    );
    const results = [...given];
    for (const row of rows) {
      const result = results[row.pos];
      if (!row.gen_tokens || !result || !("output" in result)) continue;
      // A verdict on a held output carries no tokens; the check it ran was sent these as resume (generation-verdict.ts).
      if (verdictOf(result.output)) continue;
      const kept = JSON.parse(row.gen_tokens) as number[];
      const parsed = GenerationOutput.safeParse(result.output);
      const misaligned = parsed.success ? logprobsMisaligned(parsed.data) : null;
      if (parsed.success && !misaligned && kept.every((t, i) => parsed.data.tokens[i] === t)) continue;
      results[row.pos] = {
        error: {
          code: ErrorCode.invalidOutput,
          message:
            misaligned === null
              ? `the output does not start with the ${kept.length} tokens already streamed for this item; it runs again from them`
              : `the output's ${misaligned}; it runs again from the tokens already streamed`,
          retryable: true,
        },
      };
    }
    return { results, measure: this.measure(lease, rows, results, now) };
  }

  private measure(
    lease: LeaseRow,
    rows: readonly (GeneratedItem & { pos: number })[],
    results: readonly (ItemResult | undefined)[],
    now: number,
  ): () => void {
    return () => {
      for (const row of rows) {
        const result = results[row.pos];
        if (result && "output" in result) countGeneration(this.sql, this.metrics, lease.pool, row, result.output, now);
      }
    };
  }
}

/** The kept JSON array in `column` with the array at `field` of the delta row `d` joined on, inside SQLite. */
const APPEND = (column: string, field: string) =>
  `CASE WHEN ${column} IS NULL OR ${column} = '[]' THEN d.value ->> '${field}'
     ELSE substr(${column}, 1, length(${column}) - 1) || ',' || substr(d.value ->> '${field}', 2) END`;

/** JSON in ASCII: every other character escaped, so SQLite's character offsets into it are JavaScript's. */
export function asciiJson(value: unknown): string {
  return JSON.stringify(value).replace(
    /[\u007f-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

function refusal(code: string, message: string): Refusal {
  return { error: { code, message } };
}
