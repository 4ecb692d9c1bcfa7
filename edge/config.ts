// Reads and validates the edge's configuration from its environment once per isolate.
// A bad configuration is an operator error: it is reported by /readyz and on every call, never guessed around.

import { z } from "zod";
import bundledRegistry from "../models/registry.json";
import {
  describeIssues,
  type ModelConfig,
  ModelRegistry,
  type OtlpExport,
  otlpExport,
  ScalingConfig,
} from "../shared/index.ts";
import type { Env } from "./env.ts";

function originOf(text: string): string | undefined {
  try {
    return new URL(text).origin;
  } catch {
    return undefined;
  }
}

/** A site whose pages may donate compute: the origins its pages are served from, and the models they may run. */
const SiteConfig = z.strictObject({
  origins: z
    .array(
      z.string().refine((o) => o === "*" || originOf(o) === o, "must be an origin such as https://example.com, or *"),
    )
    .min(1),
  models: z.array(z.string()).min(1).optional(),
});
export type SiteConfig = z.infer<typeof SiteConfig>;
const SiteKeys = z.record(z.string().min(1).max(128), SiteConfig);

export interface DonorConfig {
  sites: ReadonlyMap<string, SiteConfig>;
  /** Signs donor tokens; undefined when unset (then only AUTH=open issues tokens, under a per-isolate key). */
  secret: string | undefined;
  tokenTtlMs: number;
  /** Where relative model paths in the registry resolve for browsers; default this edge's /models/registry.json. */
  registryUrl: string | undefined;
}

/** Sessions (edge/sessions/): how long an idle one lives, how large its state may be, how much history it keeps. */
export interface SessionConfig {
  /** Idle time after which a session is deleted; every read or write starts it again. */
  ttlMs: number;
  /** Largest state document, in bytes of compact UTF-8 JSON. */
  maxBytes: number;
  /** History entries kept per session: the newest, the oldest dropped first. */
  historyLimit: number;
}

export interface EdgeConfig {
  models: ReadonlyMap<string, ModelConfig>;
  scaling: ScalingConfig;
  open: boolean;
  apiKeys: readonly string[];
  workerTokens: readonly string[];
  /** Caller keys that may ask for the gpu pool; null: all of them. */
  gpuPoolKeys: readonly string[] | null;
  /**
   * Keys for /metrics, /v1/scaling, the dashboard's data and the admin routes (OPERATOR_KEYS); null when
   * unset: then, for deployments made before the role existed, caller keys and worker tokens still read
   * /metrics and /v1/scaling (edge/auth.ts says so in each answer), and the admin routes are closed.
   */
  operatorKeys: readonly string[] | null;
  maxBodyBytes: number;
  donors: DonorConfig;
  sessions: SessionConfig;
  /** Where each call's spans are exported (OTLP/HTTP); null: tracing off (edge/telemetry/call-trace.ts). */
  tracing: OtlpExport | null;
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;
const DEFAULT_DONOR_TOKEN_TTL_MS = 15 * 60_000;
export const SESSION_DEFAULTS: Readonly<SessionConfig> = Object.freeze({
  ttlMs: 30 * 60_000,
  maxBytes: 64 * 1024,
  historyLimit: 50,
});
/** Durable Object SQLite stores at most 2 MB per value; the state is one value. */
const MAX_SESSION_BYTES = 1024 * 1024;
const MAX_SESSION_TTL_MS = 365 * 24 * 60 * 60_000;
const MAX_HISTORY_LIMIT = 1_000;
let cached: { key: readonly unknown[]; config: EdgeConfig } | undefined;

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

function integerVar(name: string, raw: string | undefined, fallback: number, min: number, max: number): number {
  if (raw === undefined || raw.trim() === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max)
    throw new ConfigError(`${name} must be an integer from ${min} to ${max}, got "${raw}"`);
  return value;
}

function loadSessionConfig(env: Env): SessionConfig {
  return {
    ttlMs: integerVar("SESSION_TTL_MS", env.SESSION_TTL_MS, SESSION_DEFAULTS.ttlMs, 1_000, MAX_SESSION_TTL_MS),
    maxBytes: integerVar("SESSION_MAX_BYTES", env.SESSION_MAX_BYTES, SESSION_DEFAULTS.maxBytes, 2, MAX_SESSION_BYTES),
    historyLimit: integerVar(
      "SESSION_HISTORY_LIMIT",
      env.SESSION_HISTORY_LIMIT,
      SESSION_DEFAULTS.historyLimit,
      0,
      MAX_HISTORY_LIMIT,
    ),
  };
}

/** The variables the configuration is read from; it is read again only when one of them changes. */
const CONFIG_VARS = [
  "AUTH",
  "API_KEYS",
  "WORKER_TOKENS",
  "GPU_POOL_KEYS",
  "OPERATOR_KEYS",
  "MODELS",
  "SCALING",
  "MAX_BODY_BYTES",
  "SITE_KEYS",
  "DONOR_TOKEN_SECRET",
  "DONOR_TOKEN_TTL_MS",
  "MODEL_REGISTRY_URL",
  "SESSION_TTL_MS",
  "SESSION_MAX_BYTES",
  "SESSION_HISTORY_LIMIT",
  "OTEL_EXPORTER_OTLP_ENDPOINT",
  "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
  "OTEL_EXPORTER_OTLP_HEADERS",
  "OTEL_SERVICE_NAME",
] as const satisfies readonly (keyof Env)[];

export function loadConfig(env: Env): EdgeConfig {
  // Compared var by var, on every call: the same strings each time, so no copy of MODELS is made or hashed.
  const key = CONFIG_VARS.map((name) => env[name]);
  if (cached && key.every((value, i) => value === cached?.key[i])) return cached.config;

  const registry = ModelRegistry.safeParse(parseJsonVar("MODELS", env.MODELS) ?? bundledRegistry);
  if (!registry.success) throw new ConfigError(`model registry is invalid: ${describeIssues(registry.error)}`);
  const scaling = ScalingConfig.safeParse(parseJsonVar("SCALING", env.SCALING) ?? {});
  if (!scaling.success) throw new ConfigError(`SCALING is invalid: ${describeIssues(scaling.error)}`);
  const auth = env.AUTH ?? "required";
  if (auth !== "required" && auth !== "open") throw new ConfigError(`AUTH must be "required" or "open", got "${auth}"`);
  const maxBodyBytes = env.MAX_BODY_BYTES ? Number(env.MAX_BODY_BYTES) : DEFAULT_MAX_BODY_BYTES;
  if (!Number.isInteger(maxBodyBytes) || maxBodyBytes <= 0)
    throw new ConfigError("MAX_BODY_BYTES must be a positive integer");

  const sites = SiteKeys.safeParse(parseJsonVar("SITE_KEYS", env.SITE_KEYS) ?? {});
  if (!sites.success) throw new ConfigError(`SITE_KEYS is invalid: ${describeIssues(sites.error)}`);
  const tokenTtlMs = env.DONOR_TOKEN_TTL_MS ? Number(env.DONOR_TOKEN_TTL_MS) : DEFAULT_DONOR_TOKEN_TTL_MS;
  if (!Number.isInteger(tokenTtlMs) || tokenTtlMs < 60_000)
    throw new ConfigError("DONOR_TOKEN_TTL_MS must be an integer of at least 60000");
  const sessions = loadSessionConfig(env);
  let tracing: OtlpExport | null;
  try {
    tracing = otlpExport(env, "edgeswarm-coordinator");
  } catch (error) {
    throw new ConfigError((error as Error).message);
  }

  const config: EdgeConfig = {
    models: new Map(registry.data.models.map((m) => [m.name, m])),
    scaling: scaling.data,
    open: auth === "open",
    apiKeys: list(env.API_KEYS),
    workerTokens: list(env.WORKER_TOKENS),
    gpuPoolKeys: env.GPU_POOL_KEYS === undefined ? null : list(env.GPU_POOL_KEYS),
    operatorKeys: list(env.OPERATOR_KEYS).length > 0 ? list(env.OPERATOR_KEYS) : null,
    maxBodyBytes,
    donors: {
      sites: new Map(Object.entries(sites.data)),
      secret: env.DONOR_TOKEN_SECRET || undefined,
      tokenTtlMs,
      registryUrl: env.MODEL_REGISTRY_URL || undefined,
    },
    sessions,
    tracing,
  };
  cached = { key, config };
  return config;
}
