// Known answers of one model queue: (input, output) pairs from trusted runs only (a gpu worker's output,
// never one that donors agreed on), kept few and small, to slip into browser workers' batches as canaries; and
// the vector length feature-extraction outputs of the model have. Used by Verifier and LeaseSettlement.
import { type ModelConfig, outputProblem } from "../../shared/index.ts";
import { BOUND_LIMIT, type Sql } from "../sql.ts";
import type { MetricsStore } from "./metrics-store.ts";

/** Known answers bigger than this are not kept: they are copied into every canary. */
const KNOWN_ANSWER_MAX_BYTES = 64 * 1024;
/** Once the store is full, one trusted output in this many replaces the oldest known answer. */
const REFRESH_EVERY = 8;

export class KnownAnswers {
  /** Known answers stored (all of the current model hash); null until counted after a start. */
  private knownCount: number | null = null;
  /** Outputs offered to learn() while the store was full (REFRESH_EVERY). */
  private fullLearns = 0;
  /** feature-extraction vector length per model hash, once a trusted output showed it. */
  private readonly dimensions = new Map<string, number | null>();

  constructor(
    private readonly sql: Sql,
    private readonly metrics: MetricsStore,
  ) {}

  /** A known answer to slip into a browser batch, at the model's canary rate; none when none is due or known. */
  pickCanary(cfg: ModelConfig): { input: string; output: string }[] {
    return Math.random() < cfg.verification.canary_rate ? this.pick(cfg, 1) : [];
  }

  /**
   * Up to `n` different known answers, drawn at random (a batch of canaries for a donor earning its standing).
   * Each is used once and retired: a canary a donor could have seen before would be one it can tell apart.
   */
  pick(cfg: ModelConfig, n: number): { input: string; output: string }[] {
    if (n <= 0 || this.knownCount === 0) return [];
    const rows = this.sql.all<{ input: string; output: string }>(
      `DELETE FROM known_answers WHERE id IN (SELECT id FROM known_answers WHERE model_sha = ? ORDER BY random() ${BOUND_LIMIT})
       RETURNING input, output`,
      modelSha(cfg),
      n,
    );
    if (this.knownCount !== null) this.knownCount = Math.max(0, this.knownCount - rows.length);
    this.metrics.inc("canaries_sent", "browser", rows.length);
    return rows;
  }

  /**
   * What is wrong with an output's shape, or null. Only models with files have one: their workers run shared/tasks.
   * `verifying`: the run was sent a held output to check (a text-generation verdict, verification.ts).
   */
  shapeProblem(cfg: ModelConfig, output: unknown, verifying = false): string | null {
    if (!cfg.files) return null;
    return outputProblem(cfg.task, output, { dimensions: this.knownDimensions(cfg) ?? undefined, verifying });
  }

  /**
   * Learns from one trusted output: the vector length of the model, and, when `asCanary` (an item no donor
   * has run: its input is new to every donor), a known answer for canaries, in place of the oldest once
   * full (one in REFRESH_EVERY). Called for one output per settlement (a batch, or the items of a `results`
   * frame), so the gpu path pays at most a statement or two per batch.
   */
  learn(cfg: ModelConfig, seq: number, text: string, now: number, asCanary = true): void {
    if (cfg.task === "feature-extraction" && this.knownDimensions(cfg) === null) {
      const output: unknown = JSON.parse(text);
      if (Array.isArray(output)) this.rememberDimensions(cfg, output.length);
    }
    const { enabled, canary_rate, known_answers } = cfg.verification;
    if (!asCanary || !enabled || canary_rate === 0 || known_answers === 0 || text.length > KNOWN_ANSWER_MAX_BYTES)
      return;
    const sha = modelSha(cfg);
    if (this.knownCount === null) {
      // Answers of an earlier version of the model are no use as canaries.
      this.sql.run("DELETE FROM known_answers WHERE model_sha != ?", sha);
      this.knownCount = this.sql.one<{ n: number }>("SELECT COUNT(*) AS n FROM known_answers")?.n ?? 0;
    }
    if (this.knownCount >= known_answers) {
      // Full: one trusted output in REFRESH_EVERY takes the oldest's place, so canaries keep to recent traffic
      // without two statements for every item settled on its own (a `results` frame).
      if (this.fullLearns++ % REFRESH_EVERY !== 0) return;
      this.sql.run("DELETE FROM known_answers WHERE id = (SELECT MIN(id) FROM known_answers)");
      this.knownCount--;
    }
    const kept = this.sql.one<{ id: number }>(
      "INSERT INTO known_answers (model_sha, input, output, added_at) SELECT ?, input, ?, ? FROM items WHERE seq = ? AND length(input) <= ? RETURNING id",
      sha,
      text,
      now,
      seq,
      KNOWN_ANSWER_MAX_BYTES,
    );
    if (kept) this.knownCount++;
  }

  /** feature-extraction vectors of one model all have one length: the first trusted output's. */
  private knownDimensions(cfg: ModelConfig): number | null {
    if (cfg.task !== "feature-extraction") return null;
    const sha = modelSha(cfg);
    let dims = this.dimensions.get(sha);
    if (dims === undefined) {
      const stored = this.sql.getMeta(`dimensions:${sha}`);
      dims = stored === undefined ? null : Number(stored);
      this.dimensions.set(sha, dims);
    }
    return dims;
  }

  private rememberDimensions(cfg: ModelConfig, length: number): void {
    const sha = modelSha(cfg);
    this.sql.setMeta(`dimensions:${sha}`, String(length));
    this.dimensions.set(sha, length);
  }
}

/** Known answers and dimensions belong to one version of the model's weights. */
function modelSha(cfg: ModelConfig): string {
  return cfg.files?.model.sha256 ?? "";
}
