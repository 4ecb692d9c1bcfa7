// The self-hosted worker: reads the coordinator's registry, loads the models it serves, opens one
// socket per model, prints a status line, serves health and metrics, and drains on SIGTERM.
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import WebSocket from "ws";
import { MAX_CONCURRENT_BATCHES, type ModelConfig } from "../shared/index.ts";
import type { LoadedModel } from "../shared/runner/model-runner.ts";
import { describeGpu, type GpuAdapterInfo } from "../shared/runner/ort-web-session.ts";
import type { OpenSocket } from "../shared/worker-loop/model-connection.ts";
import { ShardedConnection } from "../shared/worker-loop/sharded-connection.ts";
import { type HealthSource, startHealthServer } from "./health-server.ts";
import type { WorkerOptions } from "./options.ts";
import { startTracing } from "./tracing.ts";
import { WorkerMetrics } from "./worker-metrics.ts";

/** The GPU a WebGPU worker runs on: the adapter, threads whose device was lost, GPU buffer bytes held. */
export interface GpuReport {
  adapter: GpuAdapterInfo & { backend?: string; software?: boolean };
  lost: string[];
  bufferBytes: number;
}

export interface LoadedModels {
  models: LoadedModel[];
  /** Batches at once per model when --concurrency is not given (the web runtime: one per thread). */
  concurrency: number;
  /**
   * A text-generation model's batches join one decode (onnxruntime-node, shared/tasks/text-generation-engine.ts):
   * it takes as many batches, and items over them, as the decode has rows (workAtOnce).
   */
  joinsDecode?: boolean;
  /** On webgpu: what the status line, the hello and /metrics say about the GPU. */
  gpu?: () => Promise<GpuReport>;
}
/** Loads every model to serve on the device the options ask for (worker-gpu/device-cascade.ts). */
export type LoadModels = (configs: readonly ModelConfig[]) => Promise<LoadedModels>;

export interface RunningWorker {
  models: LoadedModel[];
  connections: ShardedConnection[];
  /** The health server's port; absent with --port 0. */
  port: number | undefined;
  stop(reason: string): Promise<void>;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The registry as the coordinator serves it; waits for a coordinator that is still starting. */
async function fetchRegistry(opts: WorkerOptions, log: (l: string) => void): Promise<ModelConfig[]> {
  const headers: Record<string, string> = opts.token ? { Authorization: `Bearer ${opts.token}` } : {};
  for (let attempt = 1; ; attempt++) {
    try {
      const res = await fetch(`${opts.coordinator}/v1/workers/models`, { headers });
      const body = (await res.json()) as { models?: ModelConfig[]; error?: { message: string } };
      if (res.ok && body.models) return body.models;
      // A refusal (bad token, misconfiguration) will not go away by waiting.
      throw new Error(`coordinator refused the worker: ${res.status} ${body.error?.message ?? ""}`);
    } catch (error) {
      if ((error as Error).message.startsWith("coordinator refused")) throw error;
      if (attempt === 1 || attempt % 10 === 0) log(`waiting for the coordinator at ${opts.coordinator}…`);
      await sleep(Math.min(5_000, 250 * attempt));
    }
  }
}

/** Node has no global WebSocket before 22; `ws` also lets the token travel in a header rather than the URL. */
export const openSocket: OpenSocket = (url, token) =>
  new WebSocket(url, { headers: token ? { Authorization: `Bearer ${token}` } : {}, perMessageDeflate: false });

export async function runWorker(
  opts: WorkerOptions,
  loadModels: LoadModels,
  log = console.log,
  drills?: HealthSource["drills"],
): Promise<RunningWorker> {
  const registry = await fetchRegistry(opts, log);
  const wanted = opts.models ?? registry.filter((m) => m.files).map((m) => m.name);
  const unknown = wanted.filter((name) => !registry.some((m) => m.name === name));
  if (unknown.length > 0) {
    throw new Error(
      `the coordinator does not serve ${unknown.join(", ")}; it serves ${registry.map((m) => m.name).join(", ")}`,
    );
  }
  const configs = wanted.map((name) => registry.find((m) => m.name === name) as ModelConfig);
  const loaded = await loadModels(configs);
  const rowsOf = (name: string) => configs.find((c) => c.name === name)?.max_batch_size ?? opts.maxBatchSize;
  const { models } = loaded;
  const gpu = await loaded.gpu?.();
  const adapter = gpu && {
    vendor: gpu.adapter.vendor,
    architecture: gpu.adapter.architecture,
    device: gpu.adapter.device,
    description: gpu.adapter.description,
    backend: gpu.adapter.backend,
  };

  const metrics = new WorkerMetrics(loaded.gpu);
  const tracing = opts.tracing && startTracing(opts.tracing, opts.workerId, opts.pool);
  if (opts.tracing) log(`tracing: a span per item to ${opts.tracing.url}`);
  const connections = models.map(
    (model) =>
      new ShardedConnection({
        coordinator: opts.coordinator,
        token: () => opts.token,
        openSocket,
        model,
        hooks: {
          log,
          onConnected: (name, up) => metrics.connected.set({ model: name }, up ? 1 : 0),
          onBatch: (r) => metrics.recordBatch(r.model, r.device, r.ok, r.failed, r.ms),
          ...(tracing ? { traceItem: tracing.traceItem } : {}),
        },
        info: {
          worker_id: opts.workerId,
          pool: opts.pool,
          device: model.device,
          max_batch_size: opts.maxBatchSize,
          ...workAtOnce(model.task, rowsOf(model.name), opts, loaded),
          ...(adapter ? { gpu: adapter } : {}),
        },
      }),
  );
  for (const c of connections) c.start();

  let server: Server | undefined;
  if (opts.port > 0) {
    server = await startHealthServer(
      {
        metrics,
        drills,
        ready: () => ({
          ready: connections.every((c) => c.connected),
          detail: {
            models: Object.fromEntries(connections.map((c) => [c.model, c.connected ? "connected" : "connecting"])),
          },
        }),
      },
      opts.port,
      opts.host,
    );
  }

  const status = async () => {
    const s = metrics.takeStatus();
    const up = connections.filter((c) => c.connected).length;
    const g = await loaded.gpu?.().catch(() => undefined);
    log(
      `status: connected ${up}/${connections.length} · models ${models.map((m) => `${m.name}@${m.device}`).join(", ")} · batches ${s.batches} · items ${s.items} · ${s.itemsPerSecond.toFixed(1)} items/s${g ? ` · ${gpuStatus(g)}` : ""}`,
    );
  };
  const statusTimer = opts.statusIntervalMs > 0 ? setInterval(() => void status(), opts.statusIntervalMs) : undefined;

  let stopped: Promise<void> | undefined;
  const stop = (reason: string) => {
    stopped ??= (async () => {
      log(`stopping (${reason}): no new batches; finishing what is held (up to ${opts.drainTimeoutMs} ms)`);
      clearInterval(statusTimer);
      const outcomes = await Promise.all(connections.map((c) => c.drain(opts.drainTimeoutMs)));
      const finished = outcomes.reduce((n, o) => n + o.finished, 0);
      const released = outcomes.reduce((n, o) => n + o.released, 0);
      await status();
      log(`stopped: ${finished} held batches finished, ${released} released`);
      await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
      await Promise.all(models.map((m) => m.dispose()));
      await tracing?.shutdown().catch((error: Error) => log(`trace export at shutdown failed: ${error.message}`));
    })();
    return stopped;
  };
  return { models, connections, port: (server?.address() as AddressInfo | null)?.port, stop };
}

/**
 * The batches a model takes at once, and the items over them: --concurrency and --max-items-in-flight, else the
 * runtime's default. A text-generation model whose batches join one decode of `rows` rows (its registry entry's
 * max_batch_size) takes up to that many batches and items: a one-item lease per row, none waiting in the worker
 * (its items stay queued, for other workers and for scaling), and a reply that ends frees its row at once (its
 * result goes ahead of its batch's, Batch.item_results). Anything else: `loaded.concurrency` batches, no item cap.
 */
export function workAtOnce(
  task: string,
  rows: number,
  given: Pick<WorkerOptions, "concurrency" | "maxItemsInFlight">,
  loaded: Pick<LoadedModels, "concurrency" | "joinsDecode">,
): { max_concurrent_batches: number; max_items_in_flight?: number } {
  const joins = task === "text-generation" && loaded.joinsDecode === true;
  const items = given.maxItemsInFlight ?? (joins ? rows : undefined);
  return {
    max_concurrent_batches: given.concurrency ?? (joins ? Math.min(MAX_CONCURRENT_BATCHES, rows) : loaded.concurrency),
    ...(items === undefined ? {} : { max_items_in_flight: items }),
  };
}

/** "gpu google swiftshader (SwiftShader driver 5.0.0, vulkan, software) · gpu buffers 12.3 MB", and any loss. */
function gpuStatus(g: GpuReport): string {
  const lost = g.lost.length > 0 ? ` · device lost, on wasm: ${g.lost.join("; ")}` : "";
  return `gpu ${describeGpu(g.adapter)} · gpu buffers ${(g.bufferBytes / 1e6).toFixed(1)} MB${lost}`;
}
