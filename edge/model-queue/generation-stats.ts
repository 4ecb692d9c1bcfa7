// A text-generation job's figures for its view (JobStore.view): from the tokens TokenStream kept and the
// outputs stored, read with one query on the items that generated (index items_generating).
import type { GenerationStats } from "../../shared/index.ts";
import type { Sql } from "../sql.ts";

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
  if (!row || row.first === null) return undefined;
  const tokens = row.tokens ?? 0;
  const decodeS = (end - row.first) / 1000;
  return {
    ttft_ms: row.first - createdAt,
    tokens,
    prompt_tokens: row.prompt ?? 0,
    tokens_per_s: decodeS > 0 && tokens > 1 ? Math.round(((tokens - 1) / decodeS) * 10) / 10 : null,
  };
}
