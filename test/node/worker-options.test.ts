// edgeswarm-worker's command line: defaults, environment fallbacks, and refusals that say what to fix; --threads
// reaching onnxruntime.
import { readdirSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { ModelConfig, ModelRegistry } from "../../shared/config/model-config.ts";
import { MAX_CONCURRENT_BATCHES } from "../../shared/protocol/worker.ts";
import { deviceCascade } from "../../worker-gpu/device-cascade.ts";
import { parseOptions, UsageError, type WorkerOptions } from "../../worker-gpu/options.ts";
import { workAtOnce } from "../../worker-gpu/worker.ts";

const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => parseOptions(argv, env) as WorkerOptions;

describe("edgeswarm-worker options", () => {
  it("has working defaults", () => {
    const o = parse([]);
    expect(o).toMatchObject({
      coordinator: "http://127.0.0.1:8787",
      pool: "gpu",
      device: "auto",
      maxBatchSize: 64,
      port: 9464,
      drainTimeoutMs: 25_000,
    });
    expect(o.models).toBeUndefined();
    expect(o.modelBase).toMatch(/^file:\/\/.*\/models\/$/);
  });

  it("takes flags over environment variables over defaults", () => {
    const env = { EDGESWARM_COORDINATOR: "http://env:1", EDGESWARM_WORKER_TOKEN: "t-env", EDGESWARM_MODELS: "a,b" };
    expect(parse([], env)).toMatchObject({ coordinator: "http://env:1", token: "t-env", models: ["a", "b"] });
    const o = parse(["--coordinator", "https://flag/", "--token", "t-flag", "--models", "sentiment"], env);
    expect(o).toMatchObject({ coordinator: "https://flag", token: "t-flag", models: ["sentiment"] });
  });

  it("runs onnxruntime-node by default; --runtime web joins the browser pool with a batch per thread", () => {
    expect(parse([])).toMatchObject({ runtime: "node", pool: "gpu", device: "auto" });
    // Threads and batches at once are left to the device chosen: cores on wasm, one on webgpu (worker-gpu/device-cascade.ts).
    expect(parse([])).toMatchObject({ threads: undefined, concurrency: undefined, maxItemsInFlight: undefined });
    expect(parse(["--max-items-in-flight", "16"]).maxItemsInFlight).toBe(16);
    expect(parse([], { EDGESWARM_MAX_ITEMS_IN_FLIGHT: "8" }).maxItemsInFlight).toBe(8);
    expect(parse(["--runtime", "web", "--threads", "3"])).toMatchObject({
      runtime: "web",
      pool: "browser",
      threads: 3,
      runTimeoutMs: 120_000,
    });
    expect(
      parse(["--runtime", "web", "--pool", "gpu", "--concurrency", "1"], { EDGESWARM_THREADS: "2" }),
    ).toMatchObject({ pool: "gpu", threads: 2, concurrency: 1 });
    expect(() => parse(["--runtime", "deno"])).toThrow(/--runtime must be node or web/);
    expect(() => parse(["--runtime", "web", "--threads", "0"])).toThrow(/--threads/);
  });

  it("takes a text-generation model's batches and items on onnxruntime-node up to its decode's rows", () => {
    const node = { concurrency: 1, joinsDecode: true };
    const none = { concurrency: undefined, maxItemsInFlight: undefined };
    // A one-item lease per row, and no item waiting in the worker beyond them.
    expect(workAtOnce("text-generation", 16, none, node)).toEqual({
      max_concurrent_batches: 16,
      max_items_in_flight: 16,
    });
    expect(workAtOnce("text-generation", 512, none, node)).toEqual({
      max_concurrent_batches: MAX_CONCURRENT_BATCHES,
      max_items_in_flight: 512,
    });
    expect(workAtOnce("text-classification", 16, none, node)).toEqual({ max_concurrent_batches: 1 });
    // The flags win; the web runtime's threads each run one batch (its runs do not join across threads).
    expect(workAtOnce("text-generation", 16, { concurrency: 1, maxItemsInFlight: 4 }, node)).toEqual({
      max_concurrent_batches: 1,
      max_items_in_flight: 4,
    });
    expect(workAtOnce("text-generation", 16, none, { concurrency: 3 })).toEqual({ max_concurrent_batches: 3 });
  });

  it("takes webgpu and wasm to the web runtime, cuda and cpu to the node one, and refuses a mismatch", () => {
    expect(parse(["--device", "webgpu"])).toMatchObject({ device: "webgpu", runtime: "web", pool: "browser" });
    expect(parse(["--device", "wasm"])).toMatchObject({ device: "wasm", runtime: "web" });
    expect(parse(["--device", "webgpu", "--pool", "gpu"])).toMatchObject({ runtime: "web", pool: "gpu" });
    expect(parse(["--device", "cuda"])).toMatchObject({ device: "cuda", runtime: "node" });
    expect(parse([], { EDGESWARM_DEVICE: "webgpu" })).toMatchObject({ runtime: "web" });
    expect(parse(["--runtime", "web"])).toMatchObject({ device: "auto", runtime: "web" });
    expect(() => parse(["--runtime", "node", "--device", "webgpu"])).toThrow(
      /--device webgpu runs with --runtime web, not --runtime node/,
    );
    expect(() => parse(["--runtime", "web", "--device", "cuda"])).toThrow(/--device cuda runs with --runtime node/);
  });

  it("offers the GPU drills only under EDGESWARM_GPU_DRILLS=1", () => {
    expect(parse([]).gpuDrills).toBe(false);
    expect(parse([], { EDGESWARM_GPU_DRILLS: "1" }).gpuDrills).toBe(true);
  });

  it("turns a model directory into a file URL ending in a slash", () => {
    expect(parse(["--model-base", "/srv/models"]).modelBase).toBe("file:///srv/models/");
    expect(parse(["--model-base", "https://cdn.example/m"]).modelBase).toBe("https://cdn.example/m/");
  });

  it("answers --help", () => {
    expect(parseOptions(["--help"], {})).toBe("help");
  });

  it("refuses bad values with a message naming the option", () => {
    expect(() => parse(["--pool", "laptop"])).toThrow(UsageError);
    expect(() => parse(["--pool", "laptop"])).toThrow(/--pool must be one of browser, gpu/);
    expect(() => parse(["--device", "tpu"])).toThrow(/--device must be one of auto, cuda, webgpu, cpu, wasm/);
    expect(() => parse(["--max-batch-size", "0"])).toThrow(/--max-batch-size must be an integer >= 1/);
    expect(() => parse(["--coordinator", "ftp://x"])).toThrow(/http\(s\) URL/);
    expect(() => parse(["--bogus"])).toThrow(/bogus/);
  });

  it("exports traces only when asked: --otlp-endpoint, else OpenTelemetry's own variables", () => {
    expect(parse([]).tracing).toBeNull();
    const otel = {
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://collector:4318/custom",
      OTEL_EXPORTER_OTLP_HEADERS: "api-key=s%3Dcret",
    };
    expect(parse([], otel).tracing).toEqual({
      url: "http://collector:4318/custom",
      headers: { "api-key": "s=cret" },
      serviceName: "edgeswarm-worker",
    });
    expect(parse(["--otlp-endpoint", "http://127.0.0.1:4318/"], otel).tracing).toMatchObject({
      url: "http://127.0.0.1:4318/v1/traces",
      headers: { "api-key": "s=cret" },
    });
    expect(parse([], { EDGESWARM_OTLP_ENDPOINT: "https://otel.example" }).tracing?.url).toBe(
      "https://otel.example/v1/traces",
    );
    expect(() => parse(["--otlp-endpoint", "collector:4318"])).toThrow(UsageError);
    expect(() => parse(["--otlp-endpoint", "collector:4318"])).toThrow(
      /OTEL_EXPORTER_OTLP_ENDPOINT must be an http\(s\) URL/,
    );
  });
});

describe("--threads on onnxruntime-node", () => {
  // Threads of this process (Linux): onnxruntime starts a model's intra-op pool, one thread fewer than asked
  // (the caller's thread is the other), when the session is made.
  const threadCount = () => readdirSync("/proc/self/task").length;
  const registry = new URL("../../models/registry.json", import.meta.url);
  const sentiment = async () =>
    ModelConfig.parse(
      ModelRegistry.parse(JSON.parse(await readFile(registry, "utf8"))).models.find((m) => m.name === "sentiment"),
    );

  // Counted from /proc (Linux, as CI), in this file's own process (vitest's forks pool).
  it.runIf(process.platform === "linux")(
    "sets onnxruntime's threads per model; one leaves no pool thread running",
    async () => {
      const config = await sentiment();
      const counts: Record<string, number> = {};
      // One load first, so the runtime's own threads (started once per process) are not counted against a setting.
      for (const threads of ["1", "1", "3"]) {
        const options = parse(["--device", "cpu", "--threads", threads]) as WorkerOptions;
        const before = threadCount();
        const { models } = await deviceCascade(options, registry, () => {}).load([config]);
        counts[threads] = threadCount() - before;
        await Promise.all(models.map((m) => m.dispose()));
      }
      expect(counts).toEqual({ "1": 0, "3": 2 });
    },
  );
});
