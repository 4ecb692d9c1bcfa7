// Command-line options of edgeswarm-worker, with their defaults and the --help text.
// Every option also reads an EDGESWARM_* environment variable, so a container sets them in its manifest.
import { availableParallelism, hostname } from "node:os";
import { parseArgs } from "node:util";
import { type OtlpExport, otlpExport, Pool } from "../shared/index.ts";

export interface WorkerOptions {
  coordinator: string;
  token: string | undefined;
  models: string[] | undefined;
  modelBase: string;
  pool: Pool;
  /** node: auto = cuda, then webgpu, then cpu. web: auto = webgpu, then wasm. A device named is that one only. */
  device: Device;
  /** "node": onnxruntime-node in this process; "web": onnxruntime-web in a pool of worker threads (the browser's runner). */
  runtime: "node" | "web";
  /**
   * Compute threads. Web runtime: its worker threads; undefined: the machine's cores on wasm, one on webgpu (the
   * GPU is the parallelism). Node runtime: onnxruntime's threads per model (intra-op); undefined: onnxruntime's own.
   */
  threads: number | undefined;
  /** A web-runtime batch running longer than this is taken for hung: its thread is replaced. */
  runTimeoutMs: number;
  maxBatchSize: number;
  /**
   * Batches at once per model; undefined: 1 on onnxruntime-node (for a text-generation model, the rows of its
   * decode, which the batches join: worker.ts workAtOnce), the thread count on the web runtime.
   */
  concurrency: number | undefined;
  /**
   * The most items held over all of a model's batches at once (the hello's max_items_in_flight); undefined: the
   * decode's rows for a text-generation model on onnxruntime-node, else no limit.
   */
  maxItemsInFlight: number | undefined;
  /** EDGESWARM_GPU_DRILLS=1: POST /drills/lose-gpu-device on the health port destroys the WebGPU devices (tests). */
  gpuDrills: boolean;
  port: number;
  host: string;
  workerId: string;
  drainTimeoutMs: number;
  statusIntervalMs: number;
  /** Where compute spans are exported (OTLP/HTTP); null: tracing off (worker-gpu/tracing.ts). */
  tracing: OtlpExport | null;
}

export const DEVICES = ["auto", "cuda", "webgpu", "cpu", "wasm"] as const;
export type Device = (typeof DEVICES)[number];
/** The devices each runtime runs; webgpu in Node exists only through onnxruntime-web on Dawn. */
const RUNTIME_OF: Record<Exclude<Device, "auto">, "node" | "web"> = {
  cuda: "node",
  cpu: "node",
  webgpu: "web",
  wasm: "web",
};

const DEFAULT_MODEL_BASE = new URL("../models/", import.meta.url).href;
export const HELP = `edgeswarm-worker — runs EdgeSwarm models for a coordinator: onnxruntime-node (cuda, cpu) or
onnxruntime-web (webgpu through Dawn on any vendor's GPU, wasm)

Usage: edgeswarm-worker [options]

  --coordinator URL      coordinator base URL            (EDGESWARM_COORDINATOR, default http://127.0.0.1:8787)
  --token T              worker token                    (EDGESWARM_WORKER_TOKEN; not needed when the coordinator runs AUTH=open)
  --models a,b           models to serve                 (EDGESWARM_MODELS, default: every model in the registry that has files)
  --model-base URL|DIR   where relative model folders are (EDGESWARM_MODEL_BASE, default the repo's models/)
  --pool gpu|browser     pool to join                    (EDGESWARM_POOL, default gpu)
  --device D             auto|cuda|webgpu|cpu|wasm. auto tries, in order, cuda, webgpu, cpu (--runtime node) or
                         webgpu, wasm (--runtime web), and logs why each one it passes over could not start;
                         a device named is that one only: the worker exits 1 saying why if it cannot start
                                                         (EDGESWARM_DEVICE, default auto)
  --runtime node|web     node: onnxruntime-node here; web: onnxruntime-web (the browser tab's runner) in a pool
                         of worker threads, joining the browser pool unless --pool says otherwise
                         (EDGESWARM_RUNTIME, default web for --device webgpu|wasm, else node)
  --threads N            compute threads (EDGESWARM_THREADS). --runtime web: its worker threads (default the
                         machine's cores on wasm, 1 on webgpu); --runtime node: onnxruntime's threads per model
                         (default onnxruntime's own, about one per core; fewer leave cores to other work on
                         the machine: docs/workers.md)
  --run-timeout-ms N     --runtime web: a batch running longer is taken for hung and its thread replaced
                                                         (EDGESWARM_RUN_TIMEOUT_MS, default 120000)
  --max-batch-size N     most items per batch            (EDGESWARM_MAX_BATCH_SIZE, default 64)
  --concurrency N        batches run at once per model   (EDGESWARM_CONCURRENCY, default 1; text-generation: the
                         model's max_batch_size, as a batch that comes while one generates joins its decode;
                         web: --threads)
  --max-items-in-flight N
                         most items held over all of a model's batches (EDGESWARM_MAX_ITEMS_IN_FLIGHT, default
                         no limit; text-generation: the decode's rows, so the rest stay queued for other
                         workers and scaling, and each reply that ends frees its row at once)
  --port N               /healthz, /readyz, /metrics; 0 = off (EDGESWARM_PORT, default 9464)
  --host H               address for that server         (EDGESWARM_HOST, default 127.0.0.1: this machine only;
                         0.0.0.0 to be reached from others, as the container image and k8s manifests set)
  --worker-id ID         name shown to the coordinator   (EDGESWARM_WORKER_ID, default <hostname>-<pid>)
  --drain-timeout-ms N   on SIGTERM, time to finish held batches before releasing them (default 25000)
  --status-interval-ms N status line period; 0 = off     (default 10000)
  --otlp-endpoint URL    export a span per item run to this OpenTelemetry collector (OTLP/HTTP protobuf,
                         to URL/v1/traces)                (EDGESWARM_OTLP_ENDPOINT, else OpenTelemetry's own
                         OTEL_EXPORTER_OTLP_ENDPOINT, _TRACES_ENDPOINT, _HEADERS; default off)
  -h, --help             this text
`;

export class UsageError extends Error {
  override name = "UsageError";
}

function positiveInt(name: string, raw: string, min = 1): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got "${raw}"`);
  return n;
}

export function parseOptions(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): WorkerOptions | "help" {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      coordinator: { type: "string" },
      token: { type: "string" },
      models: { type: "string" },
      "model-base": { type: "string" },
      pool: { type: "string" },
      device: { type: "string" },
      runtime: { type: "string" },
      threads: { type: "string" },
      "run-timeout-ms": { type: "string" },
      "max-batch-size": { type: "string" },
      "max-items-in-flight": { type: "string" },
      concurrency: { type: "string" },
      port: { type: "string" },
      host: { type: "string" },
      "worker-id": { type: "string" },
      "drain-timeout-ms": { type: "string" },
      "status-interval-ms": { type: "string" },
      "otlp-endpoint": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) return "help";
  const pick = (name: keyof typeof values, envName: string, fallback: string): string =>
    (values[name] as string | undefined) ?? env[envName] ?? fallback;

  const device = pick("device", "EDGESWARM_DEVICE", "auto") as Device;
  if (!DEVICES.includes(device)) throw new UsageError(`--device must be one of ${DEVICES.join(", ")}, got "${device}"`);
  const runtime = pick("runtime", "EDGESWARM_RUNTIME", device === "auto" ? "node" : RUNTIME_OF[device]);
  if (runtime !== "node" && runtime !== "web") throw new UsageError(`--runtime must be node or web, got "${runtime}"`);
  if (device !== "auto" && RUNTIME_OF[device] !== runtime) {
    throw new UsageError(`--device ${device} runs with --runtime ${RUNTIME_OF[device]}, not --runtime ${runtime}`);
  }
  // Web-runtime workers are donor compute, checked like a browser tab, unless the operator says gpu.
  const pool = pick("pool", "EDGESWARM_POOL", runtime === "web" ? "browser" : "gpu");
  const threadsRaw = pick("threads", "EDGESWARM_THREADS", "");
  const threads = threadsRaw === "" ? undefined : positiveInt("threads", threadsRaw);
  if (!Pool.includes(pool as Pool)) throw new UsageError(`--pool must be one of ${Pool.join(", ")}, got "${pool}"`);
  const concurrencyRaw = pick("concurrency", "EDGESWARM_CONCURRENCY", "");
  const inFlightRaw = pick("max-items-in-flight", "EDGESWARM_MAX_ITEMS_IN_FLIGHT", "");
  const coordinator = pick("coordinator", "EDGESWARM_COORDINATOR", "http://127.0.0.1:8787").replace(/\/+$/, "");
  if (!/^https?:\/\//.test(coordinator))
    throw new UsageError(`--coordinator must be an http(s) URL, got "${coordinator}"`);
  const models = pick("models", "EDGESWARM_MODELS", "");
  let modelBase = pick("model-base", "EDGESWARM_MODEL_BASE", DEFAULT_MODEL_BASE);
  if (!/^[a-z]+:\/\//.test(modelBase))
    modelBase = new URL(`file://${modelBase.startsWith("/") ? "" : `${process.cwd()}/`}${modelBase}`).href;
  if (!modelBase.endsWith("/")) modelBase += "/";
  const otlpEndpoint = pick("otlp-endpoint", "EDGESWARM_OTLP_ENDPOINT", "");
  // The flag (or its EDGESWARM_ variable) wins over OpenTelemetry's variables, as every flag wins over the environment.
  const vars = otlpEndpoint
    ? { ...env, OTEL_EXPORTER_OTLP_ENDPOINT: otlpEndpoint, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: undefined }
    : env;
  let tracing: OtlpExport | null;
  try {
    tracing = otlpExport(vars, "edgeswarm-worker");
  } catch (error) {
    throw new UsageError((error as Error).message);
  }

  return {
    coordinator,
    token: (values.token as string | undefined) ?? env.EDGESWARM_WORKER_TOKEN,
    models: models
      ? models
          .split(",")
          .map((m) => m.trim())
          .filter(Boolean)
      : undefined,
    modelBase,
    pool: pool as Pool,
    device,
    runtime,
    threads,
    runTimeoutMs: positiveInt("run-timeout-ms", pick("run-timeout-ms", "EDGESWARM_RUN_TIMEOUT_MS", "120000")),
    maxBatchSize: positiveInt("max-batch-size", pick("max-batch-size", "EDGESWARM_MAX_BATCH_SIZE", "64")),
    concurrency: concurrencyRaw === "" ? undefined : positiveInt("concurrency", concurrencyRaw),
    maxItemsInFlight: inFlightRaw === "" ? undefined : positiveInt("max-items-in-flight", inFlightRaw),
    gpuDrills: env.EDGESWARM_GPU_DRILLS === "1",
    port: positiveInt("port", pick("port", "EDGESWARM_PORT", "9464"), 0),
    // Loopback unless told: /metrics and the drills are for this machine's operator, not its network.
    host: pick("host", "EDGESWARM_HOST", "127.0.0.1"),
    workerId: pick("worker-id", "EDGESWARM_WORKER_ID", `${hostname()}-${process.pid}`),
    drainTimeoutMs: positiveInt("drain-timeout-ms", pick("drain-timeout-ms", "EDGESWARM_DRAIN_TIMEOUT_MS", "25000"), 0),
    statusIntervalMs: positiveInt(
      "status-interval-ms",
      pick("status-interval-ms", "EDGESWARM_STATUS_INTERVAL_MS", "10000"),
      0,
    ),
    tracing,
  };
}

/** The web runtime's threads when --threads is not given: one on webgpu, where the GPU is the parallelism. */
export function defaultThreads(device: "webgpu" | "wasm"): number {
  return device === "webgpu" ? 1 : availableParallelism();
}
