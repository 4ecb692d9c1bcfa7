// Helpers every route shares: parse a JSON body once into a typed value (or a 400 that says what to
// fix), resolve a model or an id to its queue object, fan a call out to every queue, and keep work going
// after the answer.
import type { Context } from "hono";
import type { z } from "zod";
import { ErrorCode, type ModelConfig, modelOfId, ProtocolError, parseJsonText, parseWith } from "../shared/index.ts";
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

export function queueOf(c: Context<HonoEnv>, model: string) {
  return c.env.MODEL_QUEUE.get(c.env.MODEL_QUEUE.idFromName(model));
}

/** The queue an id (job or lease) belongs to; 400 for something that is not one of our ids. */
export function queueOfId(c: Context<HonoEnv>, id: string, kind: "job" | "lease") {
  const model = modelOfId(id);
  if (!model)
    throw new ApiError(
      400,
      ErrorCode.badId,
      `"${id}" is not a ${kind} id; ${kind} ids look like "<model>:<32 hex digits>"`,
    );
  const code = kind === "job" ? ErrorCode.jobNotFound : ErrorCode.leaseNotFound;
  if (!c.get("config").models.has(model))
    throw new ApiError(404, code, `no ${kind} ${id}: model "${model}" is not served here`);
  return { model, queue: queueOf(c, model) };
}

/** Calls every configured model's queue; a queue that fails is left out rather than failing the whole answer. */
export async function eachQueue<T>(
  c: Context<HonoEnv>,
  call: (queue: ReturnType<typeof queueOf>, model: ModelConfig) => Promise<T>,
): Promise<{ results: { model: ModelConfig; value: T }[]; failed: string[] }> {
  const models = [...c.get("config").models.values()];
  const settled = await Promise.allSettled(models.map((m) => call(queueOf(c, m.name), m)));
  const results: { model: ModelConfig; value: T }[] = [];
  const failed: string[] = [];
  settled.forEach((s, i) => {
    const model = models[i] as ModelConfig;
    if (s.status === "fulfilled") results.push({ model, value: s.value });
    else {
      console.error(`queue of ${model.name} did not answer`, s.reason);
      failed.push(model.name);
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
