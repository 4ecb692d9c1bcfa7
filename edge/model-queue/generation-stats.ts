// A text-generation job's figures for its view (JobStore.view): from the tokens TokenStream kept and the
// outputs stored, read with one query on the items that generated (index items_generating); and an output's
// figures in /metrics once it reaches callers (countGeneration).
import { GenerationOutput, type GenerationStats } from "../../shared/index.ts";
import type { Sql } from "../sql.ts";
import type { MetricsStore } from "./metrics-store.ts";

/**
 * A generation job's figures for its view: time to its first token, tokens generated, and tokens per
 * second from the first token to the job's end (the decode rate a caller sees); undefined for other jobs.
 */
export function generationStats(sql: Sql, jobId: string, createdAt: number, end: number): GenerationStats | undefined {
  const row = sql.one<{ first: number | null; tokens: number | null; prompt: number | null }>(
    `SELECT MIN(first_token_at) AS first,
       SUM(CASE WHEN state = 'succeeded' THEN json_array_length(output, '$.tokens') ELSE gen_count END) AS tokens,
       SUM(CASE WHEN state = 'succeeded' THEN json_extract(output, '$.prompt_tokens') END) AS prompt
     FROM items WHERE job_id = ? AND first_token_at IS NOT NULL`,
    jobId,
  );
  return row ? statsOf(row, createdAt, end) : undefined;
}

/**
 * The same figures from a finished job's items as its view reads them anyway (outputs parsed), without a
 * query of their own: each item's first token time, tokens kept, and output (null unless it succeeded).
 */
export function finishedGenerationStats(
  items: readonly { first_token_at: number | null; gen_count: number; output: unknown }[],
  createdAt: number,
  end: number,
): GenerationStats | undefined {
  let first: number | null = null;
  let tokens = 0;
  let prompt = 0;
  for (const item of items) {
    if (item.first_token_at === null) continue;
    first = first === null ? item.first_token_at : Math.min(first, item.first_token_at);
    const out = item.output as { tokens?: unknown; prompt_tokens?: unknown } | null;
    if (out === null) tokens += item.gen_count;
    else {
      tokens += Array.isArray(out.tokens) ? out.tokens.length : 0;
      prompt += typeof out.prompt_tokens === "number" ? out.prompt_tokens : 0;
    }
  }
  return statsOf({ first, tokens, prompt }, createdAt, end);
}

function statsOf(
  row: { first: number | null; tokens: number | null; prompt: number | null },
  createdAt: number,
  end: number,
): GenerationStats | undefined {
  if (row.first === null) return undefined;
  const tokens = row.tokens ?? 0;
  const decodeS = (end - row.first) / 1000;
  return {
    ttft_ms: row.first - createdAt,
    tokens,
    prompt_tokens: row.prompt ?? 0,
    tokens_per_s: decodeS > 0 && tokens > 1 ? Math.round(((tokens - 1) / decodeS) * 10) / 10 : null,
  };
}

/** A generating item as countGeneration needs it: when its first token reached callers, and its job began. */
export interface GeneratedItem {
  seq: number;
  first: number | null;
  created_at: number;
}

/**
 * Counts a generating item's output in /metrics as it reaches callers (a trusted run's completion, or a donor's
 * output released by verification): its prompt and generated tokens, its time to first token when no token was
 * relayed before (the output is then the first the caller sees: now), and its decode rate. Not an output: nothing.
 */
export function countGeneration(
  sql: Sql,
  metrics: MetricsStore,
  pool: string,
  item: GeneratedItem,
  output: unknown,
  now: number,
): void {
  const parsed = GenerationOutput.safeParse(output);
  if (!parsed.success) return;
  const n = parsed.data.tokens.length;
  metrics.inc("prompt_tokens", pool, parsed.data.prompt_tokens);
  metrics.inc("generated_tokens", pool, n);
  if (item.first === null) {
    sql.run("UPDATE items SET first_token_at = ? WHERE seq = ?", now, item.seq);
    metrics.observe("ttft", pool, [(now - item.created_at) / 1000]);
  }
  const decodeS = (now - (item.first ?? now)) / 1000;
  if (n > 1 && decodeS > 0) {
    metrics.observe("time_per_output_token", pool, [decodeS / (n - 1)]);
    metrics.observe("tokens_per_second", pool, [(n - 1) / decodeS]);
  }
}

/** The item as countGeneration needs it, read by its seq. */
export function generatedItem(sql: Sql, seq: number): GeneratedItem | undefined {
  return sql.one<GeneratedItem & Record<string, SqlStorageValue>>(
    `SELECT seq, first_token_at AS first, (SELECT created_at FROM jobs WHERE jobs.id = items.job_id) AS created_at
     FROM items WHERE seq = ?`,
    seq,
  );
}
