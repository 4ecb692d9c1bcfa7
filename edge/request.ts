// Helpers every route shares: parse a JSON body once into a typed value (or a 400 that says what to
// fix), resolve a model or an id to its queue object, fan a call out to every queue, and keep work going
// after the answer.
import type { Context } from "hono";
import type { z } from "zod";
import {
  ErrorCode,
  type ModelConfig,
  ProtocolError,
  parseJsonText,
  parseQueueName,
  parseWith,
  queueName,
  queueOfId,
} from "../shared/index.ts";
import type { HonoEnv } from "./app-env.ts";
import { ApiError } from "./errors.ts";

export async function readJson<S extends z.ZodType>(
  c: Context<HonoEnv>,
  schema: S,
  what: string,
  opts: { emptyAs?: unknown } = {},
): Promise<z.infer<S>> {
  const text = await c.req.text();
  const raw = text.trim() === "" && "emptyAs" in opts ? opts.emptyAs : parseJsonText(text, what);
  const parsed = raw instanceof ProtocolError ? raw : parseWith(schema, raw, what);
  if (parsed instanceof ProtocolError) throw new ApiError(400, parsed.code, parsed.message);
  return parsed;
}

export function modelOrThrow(c: Context<HonoEnv>, name: string): ModelConfig {
  const models = c.get("config").models;
  const model = models.get(name);
  if (!model) {
    throw new ApiError(
      404,
      ErrorCode.unknownModel,
      `unknown model "${name}"; this coordinator serves: ${[...models.keys()].join(", ")}`,
    );
  }
  return model;
}

/** A queue object by its name (shared/protocol/ids.ts queueName: the model for shard 0, `<model>~<k>` after). */
export function queueOf(c: Context<HonoEnv>, queue: string) {
  return c.env.MODEL_QUEUE.get(c.env.MODEL_QUEUE.idFromName(queue));
}

export type QueueStub = ReturnType<typeof queueOf>;

/** FNV-1a, 32 bits: spreads affinity keys over shards the same way in every isolate. */
function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193);
  return hash >>> 0;
}

/**
 * The shard a new call of the model goes to: with an affinity key (its session, so a conversation's turns
 * meet in one queue; or its Idempotency-Key, so a repeat finds the first job) always the same one, else any
 * at random, which spreads calls evenly over the shards without asking them anything.
 */
export function shardFor(model: ModelConfig, affinity?: string): string {
  if (model.shards === 1) return model.name;
  const shard = affinity === undefined ? Math.floor(Math.random() * model.shards) : fnv1a(affinity) % model.shards;
  return queueName(model.name, shard);
}

/** Up to `count` of the model's shards other than `except`, drawn at random. */
export function otherShards(model: ModelConfig, except: string, count: number): string[] {
  const others = shardQueues(model).filter((q) => q !== except);
  for (let i = others.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [others[i], others[j]] = [others[j] as string, others[i] as string];
  }
  return others.slice(0, count);
}

/**
 * The queue an id (job or lease) belongs to: its model, its queue's name and object; 400 for something that
 * is not one of our ids. An id names its shard, so a shard the model no longer spreads calls over is still
 * reached (its work drains; shard-record.ts).
 */
export function stubOfId(c: Context<HonoEnv>, id: string, kind: "job" | "lease") {
  const name = queueOfId(id);
  const model = name === null ? null : (parseQueueName(name)?.model ?? null);
  if (name === null || model === null)
    throw new ApiError(
      400,
      ErrorCode.badId,
      `"${id}" is not a ${kind} id; ${kind} ids look like "<model>:<32 hex digits>"`,
    );
  const code = kind === "job" ? ErrorCode.jobNotFound : ErrorCode.leaseNotFound;
  if (!c.get("config").models.has(model))
    throw new ApiError(404, code, `no ${kind} ${id}: model "${model}" is not served here`);
  return { model, name, queue: queueOf(c, name) };
}

/** The queue names of a model's shards, 0 to count-1 (by default its configured `shards`). */
export function shardQueues(model: ModelConfig, count = model.shards): string[] {
  return Array.from({ length: count }, (_, k) => queueName(model.name, k));
}

/**
 * Every queue of the model that may hold work: its configured shards, and while a lowered `shards` drains
 * the ones it dropped. Only shard 0 knows how many (edge/model-queue/shard-record.ts), so it is asked each
 * time: this is for operators' calls, not the hot path.
 */
export async function servedQueues(c: Context<HonoEnv>, model: ModelConfig): Promise<string[]> {
  const served = await queueOf(c, model.name).servedShards(model.name);
  return shardQueues(model, Math.max(served, model.shards));
}

/** Calls `call` on each of the named queues at once; every answer, in the same order. */
export function onQueues<T>(
  c: Context<HonoEnv>,
  names: readonly string[],
  call: (queue: QueueStub, name: string) => Promise<T>,
): Promise<T[]> {
  return Promise.all(names.map((name) => call(queueOf(c, name), name)));
}

/**
 * Calls every queue of every configured model (each shard, `shards(model)` of them: by default the
 * configured count); a queue that fails is left out rather than failing the whole answer (`failed` names it).
 */
export async function eachQueue<T>(
  c: Context<HonoEnv>,
  call: (queue: QueueStub, name: string, model: ModelConfig) => Promise<T>,
  shards: (model: ModelConfig) => readonly string[] = (m) => shardQueues(m),
): Promise<{ results: { model: ModelConfig; name: string; value: T }[]; failed: string[] }> {
  const targets = [...c.get("config").models.values()].flatMap((model) =>
    shards(model).map((name) => ({ model, name })),
  );
  const settled = await Promise.allSettled(targets.map((t) => call(queueOf(c, t.name), t.name, t.model)));
  const results: { model: ModelConfig; name: string; value: T }[] = [];
  const failed: string[] = [];
  settled.forEach((s, i) => {
    const { model, name } = targets[i] as { model: ModelConfig; name: string };
    if (s.status === "fulfilled") results.push({ model, name, value: s.value });
    else {
      console.error(`queue ${name} did not answer`, s.reason);
      failed.push(name);
    }
  });
  return { results, failed };
}

/** Work that runs on after the answer (ctx.waitUntil): a cancellation, a trace export. */
export function afterAnswer(c: Context<HonoEnv>, work: Promise<unknown>): void {
  try {
    c.executionCtx.waitUntil(work);
  } catch {
    // no execution context (app.request in a test): the promise runs on its own
  }
}
