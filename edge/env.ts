// The bindings and variables the edge Worker receives (wrangler.toml, secrets, .dev.vars).
import type { ModelQueue } from "./model-queue/model-queue.ts";
import type { ScalingWindow } from "./scaling/scaling-window.ts";
import type { SessionObject } from "./sessions/session-object.ts";

export interface Env {
  MODEL_QUEUE: DurableObjectNamespace<ModelQueue>;
  /** dist/public: the embed script, the donor worker, onnxruntime-web's WASM, the bundled models, the demo page. */
  ASSETS?: Fetcher;
  SCALING_WINDOW: DurableObjectNamespace<ScalingWindow>;
  /** One object per session (per caller key and session id): its state, history and sliding expiry. */
  SESSION: DurableObjectNamespace<SessionObject>;
  /** "required" (default) or "open". Open serves anyone and exists for local development only. */
  AUTH?: string;
  /** Comma-separated caller API keys (a secret in production). */
  API_KEYS?: string;
  /** Comma-separated worker tokens (a secret in production). */
  WORKER_TOKENS?: string;
  /** Comma-separated operator keys (a secret): /metrics, /v1/scaling, /dashboard's data, admin routes. */
  OPERATOR_KEYS?: string;
  /** API_KEYS entries that may pin a call to the gpu pool (`pool: "gpu"`); unset: every caller key may. */
  GPU_POOL_KEYS?: string;
  /** JSON registry overriding models/registry.json: {"models":[{"name":...}]}. */
  MODELS?: string;
  /** JSON overriding the pool scaling defaults: {"gpu":{...},"browser":{...}}. */
  SCALING?: string;
  /** Largest request body accepted, bytes (default 1 MiB). */
  MAX_BODY_BYTES?: string;
  /** JSON: site keys whose pages may donate compute, {"KEY":{"origins":["https://example.com"],"models":["sentiment"]}}. */
  SITE_KEYS?: string;
  /** Signs browser donors' short-lived worker tokens (a secret in production). */
  DONOR_TOKEN_SECRET?: string;
  /** Donor tokens issued per client address and minute (wrangler.toml [[ratelimits]]); unbound: no limit. */
  DONOR_TOKEN_LIMIT?: RateLimit;
  /** How long a donor token opens connections, ms (default 15 minutes). */
  DONOR_TOKEN_TTL_MS?: string;
  /** Where browsers resolve relative model paths; default this edge's /models/registry.json. */
  MODEL_REGISTRY_URL?: string;
  /** How long an idle session lives, ms; every read or write starts it again (default 30 minutes). */
  SESSION_TTL_MS?: string;
  /** Largest session state document, bytes of compact JSON (default 65536, at most 1 MiB). */
  SESSION_MAX_BYTES?: string;
  /** History entries kept per session, the oldest dropped first (default 50). */
  SESSION_HISTORY_LIMIT?: string;
  /** OpenTelemetry's collector base URL: each call's spans go to <it>/v1/traces as OTLP/HTTP protobuf. Unset: no traces. */
  OTEL_EXPORTER_OTLP_ENDPOINT?: string;
  /** The traces URL itself; wins over OTEL_EXPORTER_OTLP_ENDPOINT. */
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?: string;
  /** Headers for the collector, `key=value,key2=value2` (a secret when it holds a vendor's key). */
  OTEL_EXPORTER_OTLP_HEADERS?: string;
  /** service.name of the coordinator's spans (default edgeswarm-coordinator). */
  OTEL_SERVICE_NAME?: string;
}
