// The bindings and variables the edge Worker receives (wrangler.toml, secrets, .dev.vars).
import type { ModelQueue } from "./model-queue/model-queue.ts";
import type { ScalingWindow } from "./scaling/scaling-window.ts";

export interface Env {
  MODEL_QUEUE: DurableObjectNamespace<ModelQueue>;
  SCALING_WINDOW: DurableObjectNamespace<ScalingWindow>;
  /** "required" (default) or "open". Open serves anyone and exists for local development only. */
  AUTH?: string;
  /** Comma-separated caller API keys (a secret in production). */
  API_KEYS?: string;
  /** Comma-separated worker tokens (a secret in production). */
  WORKER_TOKENS?: string;
  /** JSON registry overriding models/registry.json: {"models":[{"name":...}]}. */
  MODELS?: string;
  /** JSON overriding the pool scaling defaults: {"gpu":{...},"browser":{...}}. */
  SCALING?: string;
  /** Largest request body accepted, bytes (default 1 MiB). */
  MAX_BODY_BYTES?: string;
}
