// Job and lease ids carry the queue they belong to, so any edge isolate can route them to the right queue
// object without a lookup: `<queue>:<32 hex>`. A model's queue may be sharded over several objects (its
// `shards` setting): shard 0 is named after the model alone (as every queue was before shards, so its ids
// and state stay valid), shard k after `<model>~<k>`.
import { MODEL_NAME } from "./caller.ts";

/** Shards a model's queue may have at most (its `shards` setting). */
export const MAX_SHARDS = 64;

/** The name of a model's queue object: the model for shard 0, `<model>~<shard>` for the others. */
export function queueName(model: string, shard = 0): string {
  return shard === 0 ? model : `${model}~${shard}`;
}

/** The model and shard a queue name stands for, or null when it is not one. */
export function parseQueueName(name: string): { model: string; shard: number } | null {
  const tilde = name.lastIndexOf("~");
  const model = tilde < 0 ? name : name.slice(0, tilde);
  // Shard 0 has one spelling only (the bare model), so every queue has one name.
  const shard = tilde < 0 ? 0 : /^[1-9][0-9]?$/.test(name.slice(tilde + 1)) ? Number(name.slice(tilde + 1)) : -1;
  return MODEL_NAME.test(model) && shard >= 0 && shard < MAX_SHARDS ? { model, shard } : null;
}

/** A new id in the named queue (`queueName`). */
export function newId(queue: string): string {
  return `${queue}:${crypto.randomUUID().replaceAll("-", "")}`;
}

/** The queue an id belongs to, or null when the id is not one of ours. */
export function queueOfId(id: string): string | null {
  const at = id.lastIndexOf(":");
  if (at <= 0) return null;
  const queue = id.slice(0, at);
  if (!/^[0-9a-f]{32}$/.test(id.slice(at + 1)) || parseQueueName(queue) === null) return null;
  return queue;
}

/** The model an id belongs to, or null when the id is not one of ours. */
export function modelOfId(id: string): string | null {
  const queue = queueOfId(id);
  return queue === null ? null : (parseQueueName(queue)?.model ?? null);
}
