// Reads and validates the edge's configuration from its environment once per isolate.
// A bad configuration is an operator error: it is reported by /readyz and on every call, never guessed around.

import bundledRegistry from "../models/registry.json";
import { describeIssues, type ModelConfig, ModelRegistry, ScalingConfig } from "../shared/index.ts";
import type { Env } from "./env.ts";

export interface EdgeConfig {
  models: ReadonlyMap<string, ModelConfig>;
  scaling: ScalingConfig;
  open: boolean;
  apiKeys: readonly string[];
  workerTokens: readonly string[];
  maxBodyBytes: number;
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;
let cached: { key: string; config: EdgeConfig } | undefined;

function parseJsonVar(name: string, raw: string | undefined): unknown {
  if (raw === undefined || raw === "") return undefined;
  try {
    return JSON.parse(raw);
  } catch (error) {
    throw new ConfigError(`${name} is not valid JSON: ${(error as Error).message}`);
  }
}

function list(raw: string | undefined): string[] {
  return (raw ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

export function loadConfig(env: Env): EdgeConfig {
  const key = JSON.stringify([env.AUTH, env.API_KEYS, env.WORKER_TOKENS, env.MODELS, env.SCALING, env.MAX_BODY_BYTES]);
  if (cached?.key === key) return cached.config;

  const registry = ModelRegistry.safeParse(parseJsonVar("MODELS", env.MODELS) ?? bundledRegistry);
  if (!registry.success) throw new ConfigError(`model registry is invalid: ${describeIssues(registry.error)}`);
  const scaling = ScalingConfig.safeParse(parseJsonVar("SCALING", env.SCALING) ?? {});
  if (!scaling.success) throw new ConfigError(`SCALING is invalid: ${describeIssues(scaling.error)}`);
  const auth = env.AUTH ?? "required";
  if (auth !== "required" && auth !== "open") throw new ConfigError(`AUTH must be "required" or "open", got "${auth}"`);
  const maxBodyBytes = env.MAX_BODY_BYTES ? Number(env.MAX_BODY_BYTES) : DEFAULT_MAX_BODY_BYTES;
  if (!Number.isInteger(maxBodyBytes) || maxBodyBytes <= 0)
    throw new ConfigError("MAX_BODY_BYTES must be a positive integer");

  const config: EdgeConfig = {
    models: new Map(registry.data.models.map((m) => [m.name, m])),
    scaling: scaling.data,
    open: auth === "open",
    apiKeys: list(env.API_KEYS),
    workerTokens: list(env.WORKER_TOKENS),
    maxBodyBytes,
  };
  cached = { key, config };
  return config;
}
