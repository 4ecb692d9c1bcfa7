// Shard 0's record of a sharded model's queue (docs/operations.md, "Sharded queues"): the most shards its
// calls were ever spread over. Workers are told to serve that many, not only the configured count, so a
// model whose `shards` is lowered keeps the dropped shards served until the work they hold is done; then
// the record comes down to the configuration and workers that reconnect leave those shards.
import type { ModelConfig } from "../../shared/index.ts";
import type { Sql } from "../sql.ts";

const KEY = "shards_seen";
/** A lowered record is checked against the dropped shards at most this often. */
const REVIEW_EVERY_MS = 5_000;

/** What shard 0 asks of another shard: how much of its work is not done yet. */
export interface ShardProbe {
  openWork(queue: string): Promise<number>;
}

export class ShardRecord {
  private seen: number | undefined;
  private reviewedAt = Number.NEGATIVE_INFINITY;
  private reviewing = false;

  constructor(
    private readonly sql: Sql,
    /** Shard k of this model and its queue name. */
    private readonly shard: (k: number) => { queue: string; probe: ShardProbe },
    /** Keeps a background review alive (the object's waitUntil). */
    private readonly background: (work: Promise<unknown>) => void,
  ) {}

  /** Records that the model's calls have been spread over (at least) this many shards. */
  note(shards: number): void {
    if (shards <= this.load()) return;
    this.seen = shards;
    this.sql.setMeta(KEY, String(shards));
  }

  /**
   * How many shards workers should serve: the configured count, or more while shards it dropped may still
   * hold work (then they are asked, at most every few seconds, and dropped from the record once empty).
   */
  served(cfg: ModelConfig, now: number): number {
    this.note(cfg.shards);
    const seen = this.load();
    if (seen > cfg.shards && !this.reviewing && now - this.reviewedAt >= REVIEW_EVERY_MS) {
      this.reviewedAt = now;
      this.reviewing = true;
      this.background(this.review(cfg.shards, seen).finally(() => (this.reviewing = false)));
    }
    return seen;
  }

  private async review(configured: number, seen: number): Promise<void> {
    try {
      const dropped = Array.from({ length: seen - configured }, (_, i) => this.shard(configured + i));
      const open = await Promise.all(dropped.map((s) => s.probe.openWork(s.queue)));
      if (open.every((n) => n === 0) && this.load() === seen) {
        this.seen = configured;
        this.sql.setMeta(KEY, String(configured));
      }
    } catch (error) {
      console.error("could not ask the dropped shards for their work; asking again later", error);
    }
  }

  private load(): number {
    this.seen ??= Number(this.sql.getMeta(KEY) ?? 1);
    return this.seen;
  }
}
