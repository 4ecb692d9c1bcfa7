// What the donor Web Worker exposes through comlink. Two layers, one object:
// - the runner (shared/runner/web-runner.ts, which the Node worker's --runtime web threads run too): load a
//   registry entry with onnxruntime-web (webgpu, else wasm), through the IndexedDB cache, and run batches;
// - the donor: trade the site key for a worker token, load the models, hold one socket per model to the
//   coordinator (shared/worker-loop), and let the page pause, resume, stop and watch.
// Model execution, sockets and lease timers all live here, off the page's main thread (where timers
// of a background tab are throttled and would let leases lapse).

import type { DonorStatus, DonorTokenResponse } from "../../shared/index.ts";
import type { DonorState } from "../../shared/protocol/donor.ts";
import { modelFileUrls } from "../../shared/runner/model-files.ts";
import { createWebRunner, type LoadedInfo, type RunnerOptions } from "../../shared/runner/web-runner.ts";
import type { BatchReport } from "../../shared/worker-loop/model-connection.ts";
import { ShardedConnection } from "../../shared/worker-loop/sharded-connection.ts";
import { parseRetryAfter, RETRY_DEFAULTS, retryDelayMs, sleep } from "../sdk/retry.ts";
import { IdbModelCache } from "./model-cache.ts";

export type { LoadedInfo, RunnerOptions };

export interface DonorConfig {
  /** The coordinator's origin, e.g. https://swarm.example.com. */
  coordinator: string;
  siteKey: string;
  /** Models to serve; default all the site allows. */
  models?: string[];
  devices?: readonly string[];
  /** Largest batch this tab takes. */
  maxBatchSize?: number;
  /** Share of wall time the worker may be busy, 0 < d <= 1: after a batch of t ms it rests t*(1-d)/d ms. */
  dutyCycle?: number;
  wasmPaths?: string;
  numThreads?: number;
}

export type DonorEvent =
  | { type: "status"; status: DonorStatus }
  | {
      type: "batch";
      model: string;
      device: string;
      items: number;
      failed: number;
      /** How long the batch ran, and when it ended (epoch ms). */
      ms: number;
      endedAt: number;
      /** The rest taken after it to keep to the duty cycle; 0 at a duty cycle of 1. */
      restMs: number;
    }
  | { type: "log"; line: string };

type Listener = (event: DonorEvent) => void;

const DEFAULT_BATCH = 16;
/** Renew the worker token when less than this is left, so reconnects never present an expired one. */
const TOKEN_MARGIN_MS = 60_000;

function randomId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function createDonorApi() {
  const cache = new IdbModelCache("edgeswarm-models", (m) => emit({ type: "log", line: m }));
  const runner = createWebRunner({ cache, warn: (line) => emit({ type: "log", line }) });
  const listeners = new Set<Listener>();
  const connections: ShardedConnection[] = [];
  const counts = new Map<string, { batches: number; items: number }>();
  const pausedFor = new Set<string>();
  let state: DonorState = "idle";
  let error: string | undefined;
  let donor: DonorTokenResponse | undefined;
  /** The token request in flight: connections renewing at once share it, so a tab keeps one donor id. */
  let renewing: Promise<DonorTokenResponse> | undefined;
  let config: DonorConfig | undefined;
  let busyMs = 0;
  let restTimer: ReturnType<typeof setTimeout> | undefined;
  const workerId = `browser-${randomId()}`;

  function emit(event: DonorEvent) {
    for (const listener of listeners) {
      try {
        listener(event);
      } catch {
        // A page listener that throws must not stop the worker.
      }
    }
  }

  function status(): DonorStatus {
    return {
      state,
      pausedFor: [...pausedFor],
      workerId,
      donorId: donor?.donor_id,
      models: [...runner.models().values()].map((m) => {
        const c = counts.get(m.name) ?? { batches: 0, items: 0 };
        const connected = connections.find((x) => x.model === m.name)?.connected ?? false;
        return { name: m.name, task: m.task, device: m.device, connected, ...c };
      }),
      busyMs,
      cache: { ...cache.counts },
      gpuDeviceLost: runner.gpu().lost,
      error,
    };
  }

  function setState(next: DonorState) {
    state = next;
    emit({ type: "status", status: status() });
  }

  /**
   * A donor token. A 503 (the coordinator unavailable for a moment) or a request that never reached it is asked
   * again, after its Retry-After or a backoff, as the SDK asks (client/sdk/retry.ts); a 429 is the coordinator
   * limiting this address, and is said at once.
   */
  async function fetchToken(cfg: DonorConfig): Promise<DonorTokenResponse> {
    for (let retry = 1; ; retry++) {
      const res = await fetch(`${cfg.coordinator}/v1/donors/token`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ site_key: cfg.siteKey, ...(cfg.models ? { models: cfg.models } : {}) }),
      }).catch((e: unknown) => (e instanceof Error ? e : new Error(String(e))));
      const again = res instanceof Error || res.status === 503;
      const waitMs =
        again && retry <= RETRY_DEFAULTS.maxRetries
          ? retryDelayMs(retry, res instanceof Error ? undefined : parseRetryAfter(res.headers.get("Retry-After")))
          : null;
      if (waitMs !== null) {
        emit({ type: "log", line: `donor token: ${res instanceof Error ? res.message : "503"}; asking again` });
        await sleep(waitMs);
        continue;
      }
      if (res instanceof Error) throw res;
      return tokenOf(res);
    }
  }

  /** The token in the coordinator's answer, or an error the page can act on. */
  async function tokenOf(res: Response): Promise<DonorTokenResponse> {
    const body = (await res.json().catch(() => ({}))) as DonorTokenResponse & { error?: { message?: string } };
    if (res.status === 429) {
      const after = res.headers.get("Retry-After") ?? "60";
      throw new Error(`the coordinator is limiting donor tokens for this address; start again in ${after} s`);
    }
    if (!res.ok) throw new Error(`the coordinator refused a donor token: ${res.status} ${body.error?.message ?? ""}`);
    return body;
  }

  async function currentToken(): Promise<string> {
    if (!config) throw new Error("not started");
    if (donor && donor.expires_at - Date.now() >= TOKEN_MARGIN_MS) return donor.token;
    renewing ??= fetchToken(config).finally(() => {
      renewing = undefined;
    });
    donor = await renewing;
    return donor.token;
  }

  /** Pauses or resumes one connection as `pausedFor` says; only a duty-cycle rest keeps held batches. */
  function applyPauseTo(c: ShardedConnection) {
    if (pausedFor.size > 0) c.pause(!pausedFor.has("duty cycle"));
    else c.resume();
  }

  function applyPause() {
    for (const c of connections) applyPauseTo(c);
    if (state === "running" || state === "paused") setState(pausedFor.size > 0 ? "paused" : "running");
  }

  /** After a batch of `ms`, rest so the busy share stays at the duty cycle. */
  function afterBatch(report: BatchReport) {
    busyMs += report.ms;
    const c = counts.get(report.model) ?? { batches: 0, items: 0 };
    c.batches++;
    c.items += report.ok + report.failed;
    counts.set(report.model, c);
    const duty = config?.dutyCycle ?? 1;
    const rest = duty >= 1 || pausedFor.has("duty cycle") ? 0 : (report.ms * (1 - duty)) / duty;
    emit({
      type: "batch",
      model: report.model,
      device: report.device,
      items: report.ok + report.failed,
      failed: report.failed,
      ms: report.ms,
      endedAt: Date.now(),
      restMs: rest,
    });
    if (rest === 0) return;
    pausedFor.add("duty cycle");
    applyPause();
    restTimer = setTimeout(() => {
      pausedFor.delete("duty cycle");
      applyPause();
    }, rest);
  }

  return {
    // ---- runner --------------------------------------------------------------------------------
    load: runner.load,
    run: runner.run,
    unload: runner.unload,
    loseGpuDevice: runner.loseGpuDevice,

    // ---- donor ---------------------------------------------------------------------------------
    /** Listens for status changes, batches and log lines (pass a comlink proxy from the page). */
    subscribe(listener: Listener): void {
      listeners.add(listener);
    },

    async start(cfg: DonorConfig): Promise<DonorStatus> {
      if (state !== "idle" && state !== "stopped" && state !== "failed") return status();
      config = cfg;
      error = undefined;
      setState("starting");
      try {
        donor = await fetchToken(cfg);
        const grant = donor;
        const registryUrl = grant.registry_url;
        await cache.retainOnly(grant.models.flatMap((m) => modelFileUrls(m, registryUrl)));
        for (const spec of grant.models) {
          emit({ type: "log", line: `loading ${spec.name}` });
          const info = await runner.load(spec, {
            registryUrl,
            devices: cfg.devices,
            wasmPaths: cfg.wasmPaths,
            numThreads: cfg.numThreads,
          });
          emit({ type: "log", line: `loaded ${info.name} on ${info.device}` });
        }
        for (const model of runner.models().values()) {
          const connection = new ShardedConnection({
            coordinator: cfg.coordinator,
            token: currentToken,
            openSocket: (url, token) => new WebSocket(token ? `${url}&token=${encodeURIComponent(token)}` : url),
            model,
            info: {
              worker_id: workerId,
              pool: "browser",
              device: model.device,
              max_batch_size: cfg.maxBatchSize ?? DEFAULT_BATCH,
              max_concurrent_batches: 1,
            },
            hooks: {
              log: (line) => emit({ type: "log", line }),
              onConnected: () => emit({ type: "status", status: status() }),
              onBatch: afterBatch,
            },
          });
          connections.push(connection);
          applyPauseTo(connection);
          connection.start();
        }
        setState(pausedFor.size > 0 ? "paused" : "running");
      } catch (e) {
        error = (e as Error).message;
        setState("failed");
      }
      return status();
    },

    /** Pause for a reason ("hidden", "battery", "page"); work resumes when every reason is cleared. */
    pause(reason = "page"): DonorStatus {
      pausedFor.add(reason);
      applyPause();
      return status();
    },

    resume(reason = "page"): DonorStatus {
      pausedFor.delete(reason);
      applyPause();
      return status();
    },

    /** Hands back what it holds and closes every socket; start() may be called again. */
    async stop(): Promise<DonorStatus> {
      clearTimeout(restTimer);
      pausedFor.delete("duty cycle");
      const closing = connections.splice(0);
      await Promise.all(closing.map((c) => c.drain(0)));
      if (state !== "idle") setState("stopped");
      return status();
    },

    status,
  };
}

export type DonorApi = ReturnType<typeof createDonorApi>;
export type { DonorStatus };
