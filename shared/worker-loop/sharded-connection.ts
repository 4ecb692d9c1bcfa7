// A worker's connection to one model, however many shards its queue is spread over (docs/operations.md,
// "Sharded queues"): a ModelConnection per shard, shard 0 first, whose welcome says how many there are; the
// others are opened (or, when the count falls, drained and closed) to match. Every shard hands out batches
// on its own, so the shards share the worker's capacity: once the batches held reach max_concurrent_batches
// (or their items max_items_in_flight), every shard is asked to hold off (the pause frame, `drain`) until one ends. A batch a shard sent before it
// read that is still run, so a worker may briefly hold one more per shard. With one shard (the default) this
// is the ModelConnection alone, frame for frame.

import type { ConnectionOptions } from "./model-connection.ts";
import { ModelConnection } from "./model-connection.ts";

export class ShardedConnection {
  private readonly shards: ModelConnection[] = [];
  /** Paused by its owner (pause()); `releasing`: with its held batches handed back. */
  private paused = false;
  private releasing = false;
  /** Every shard told to hold off because the worker's batches fill its capacity. */
  private full = false;
  private started = false;
  private stopping = false;

  constructor(private readonly opts: ConnectionOptions) {
    this.shards.push(this.open(0));
  }

  get model(): string {
    return this.opts.model.name;
  }

  /** Connected and welcomed on every shard it serves. */
  get connected(): boolean {
    return this.shards.every((s) => s.connected);
  }

  /** Batches this worker runs now, from all shards. */
  get busy(): number {
    return this.shards.reduce((n, s) => n + s.busy, 0);
  }

  /** Shards served now. */
  get shardCount(): number {
    return this.shards.length;
  }

  start(): void {
    this.started = true;
    for (const s of this.shards) s.start();
  }

  pause(release = false): void {
    this.paused = true;
    this.releasing = release;
    for (const s of this.shards) s.pause(release);
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.releasing = false;
    if (this.full) return; // still at capacity: the shards resume when a batch ends
    for (const s of this.shards) s.resume();
  }

  /** Every shard stops taking work, finishes or releases what it holds within timeoutMs, and closes. */
  async drain(timeoutMs: number): Promise<{ finished: number; released: number }> {
    this.stopping = true;
    const each = await Promise.all(this.shards.map((s) => s.drain(timeoutMs)));
    return {
      finished: each.reduce((n, r) => n + r.finished, 0),
      released: each.reduce((n, r) => n + r.released, 0),
    };
  }

  private open(shard: number): ModelConnection {
    const { hooks } = this.opts;
    return new ModelConnection({
      ...this.opts,
      shard,
      // The worker counts as connected to the model once every shard it serves has welcomed it.
      hooks: { ...hooks, onConnected: (model) => hooks.onConnected?.(model, this.connected) },
      onWelcome: shard === 0 ? (count) => this.resize(count) : undefined,
      onBusy: () => this.balance(),
    });
  }

  /** Serves shards 0..count-1: opens the missing ones, drains and closes the ones past it. */
  private resize(count: number): void {
    if (this.stopping) return;
    while (this.shards.length < count) {
      const shard = this.open(this.shards.length);
      if (this.paused || this.full) shard.pause(this.releasing);
      this.shards.push(shard);
      if (this.started) shard.start();
    }
    for (const dropped of this.shards.splice(Math.max(1, count))) {
      // Its work finishes (or goes back) first; the lease's own length is the most it could need.
      void dropped.drain(30_000).then(() => this.balance());
    }
    this.balance();
  }

  /** Holds every shard off while the worker's batches fill its capacity, and lets them go once they do not. */
  private balance(): void {
    if (this.shards.length < 2 && !this.full) return;
    const { max_concurrent_batches, max_items_in_flight } = this.opts.info;
    const items = max_items_in_flight === undefined ? 0 : this.shards.reduce((n, s) => n + s.busyItems, 0);
    const full =
      this.busy >= max_concurrent_batches || (max_items_in_flight !== undefined && items >= max_items_in_flight);
    if (full === this.full) return;
    this.full = full;
    if (this.paused || this.stopping) return;
    for (const s of this.shards) {
      if (full) s.pause(false);
      else s.resume();
    }
  }
}
