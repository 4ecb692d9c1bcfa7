// The onnxruntime-web runner both web runtimes share: load registry entries (hash-checked, through the
// host's cache), run batches, and move a model to wasm when the WebGPU device under it is lost, redoing
// that batch. The browser's donor worker (client/worker/donor-api.ts) and each `--runtime web` thread of
// the Node worker (worker-gpu/web/web-thread.ts) expose it; only the host's fetch, cache and ORT build differ.
import type { ModelConfig } from "../config/model-config.ts";
import type { ItemResult } from "../protocol/worker.ts";
import { loadModel } from "./load-model.ts";
import type { FetchFn, ModelFileCache } from "./model-files.ts";
import type { LoadedModel, RunOptions } from "./model-runner.ts";
import {
  createOrtWebFactory,
  type GpuAdapterInfo,
  type OrtWebFactory,
  type OrtWebModule,
  WEB_DEVICES,
} from "./ort-web-session.ts";

/** How long a failed run waits to learn whether its GPU device was lost (then it is redone on wasm). */
const LOSS_GRACE_MS = 250;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export interface RunnerOptions {
  /** Where relative model paths resolve from (the registry file's URL). */
  registryUrl: string;
  /** Devices in order of preference; default webgpu then wasm. */
  devices?: readonly string[];
  /** Where onnxruntime-web's .wasm files are served. */
  wasmPaths?: string;
  /** WASM threads; default: one unless the context is cross-origin isolated. */
  numThreads?: number;
  /** False: a model starts on the devices asked for or not at all (a device lost later still moves to wasm). */
  fallback?: boolean;
}

export interface LoadedInfo {
  name: string;
  task: string;
  device: string;
  runtime: string;
}

/** The WebGPU device a runner works on, for status lines, hellos and metrics. */
export interface GpuStatus {
  adapter: GpuAdapterInfo | undefined;
  /** Why the device was lost, once it was (the models moved to wasm). */
  lost: string | undefined;
}

export interface WebRunnerHost {
  /** The onnxruntime-web build to run; default the package's own entry (Node threads on webgpu pass its WebGPU build). */
  ort?: OrtWebModule;
  /** Node threads pass a fetch that also reads file:// model folders. */
  fetch?: FetchFn;
  /** The browser keeps model files in IndexedDB. */
  cache?: ModelFileCache;
  warn?: (line: string) => void;
}

/** A loaded model that moves itself to wasm when the GPU device under it is lost, and redoes that batch. */
export class FallbackModel implements LoadedModel {
  constructor(
    private current: LoadedModel,
    private readonly reload: () => Promise<LoadedModel>,
    private readonly factory: OrtWebFactory,
  ) {}
  get name() {
    return this.current.name;
  }
  get task() {
    return this.current.task;
  }
  get device() {
    return this.current.device;
  }
  get runtime() {
    return this.current.runtime;
  }

  async run(inputs: readonly unknown[], opts?: RunOptions): Promise<ItemResult[]> {
    if (this.current.device === "webgpu" && this.factory.gpuDeviceLost) await this.moveToWasm();
    const model = this.current;
    if (model.device !== "webgpu") return model.run(inputs, opts);
    // A run on a device that goes away may never settle, or fail, and outputs computed meanwhile cannot be trusted.
    const lost = Symbol("lost");
    const outcome = await Promise.race([
      model.run(inputs, opts).catch(async (error: Error) => {
        // A run can fail on a lost device a moment before the device says it is lost.
        const settled = await Promise.race([this.factory.whenGpuDeviceLost.then(() => lost), sleep(LOSS_GRACE_MS)]);
        if (settled === lost) return lost;
        throw error;
      }),
      this.factory.whenGpuDeviceLost.then(() => lost),
    ]);
    if (outcome !== lost && !this.factory.gpuDeviceLost) return outcome as ItemResult[];
    await this.moveToWasm();
    // Deltas already sent are sent again from the start; the queue keeps each token once (by offset).
    return this.current.run(inputs, opts);
  }

  private moving: Promise<void> | undefined;
  private moveToWasm(): Promise<void> {
    this.moving ??= (async () => {
      const old = this.current;
      this.current = await this.reload();
      void old.dispose().catch(() => undefined);
    })();
    return this.moving;
  }

  dispose(): Promise<void> {
    return this.current.dispose();
  }
}

export function createWebRunner(host: WebRunnerHost) {
  let factory: OrtWebFactory | undefined;
  const loaded = new Map<string, FallbackModel>();

  function factoryFor(opts: RunnerOptions): OrtWebFactory {
    // WASM threads are started from this script's URL, which a worker may only do from its own origin.
    // (In a Node worker thread there is no location.)
    const here = (globalThis as { location?: { origin: string } }).location;
    const crossOrigin = here !== undefined && new URL(import.meta.url).origin !== here.origin;
    const numThreads = opts.numThreads ?? (crossOrigin ? 1 : undefined);
    factory ??= createOrtWebFactory({
      ort: host.ort,
      wasmPaths: opts.wasmPaths,
      numThreads,
      warn: host.warn,
      fallback: opts.fallback,
    });
    return factory;
  }

  function modelOrThrow(name: string): FallbackModel {
    const model = loaded.get(name);
    if (!model) throw new Error(`model ${name} is not loaded here; load it first`);
    return model;
  }

  return {
    async load(spec: ModelConfig, opts: RunnerOptions): Promise<LoadedInfo> {
      const f = factoryFor(opts);
      const base = { registryUrl: opts.registryUrl, cache: host.cache, fetch: host.fetch };
      const first = await loadModel(spec, f, { ...base, devices: opts.devices ?? WEB_DEVICES });
      const model = new FallbackModel(first, () => loadModel(spec, f, { ...base, devices: ["wasm"] }), f);
      await loaded.get(spec.name)?.dispose();
      loaded.set(spec.name, model);
      return { name: model.name, task: model.task, device: model.device, runtime: model.runtime ?? "onnxruntime-web" };
    },
    run(name: string, inputs: unknown[], opts?: RunOptions): Promise<ItemResult[]> {
      return modelOrThrow(name).run(inputs, opts);
    },
    async unload(name: string): Promise<void> {
      await loaded.get(name)?.dispose();
      loaded.delete(name);
    },
    /** Destroys the WebGPU device in use, as a driver reset would: a drill for the wasm fallback. */
    loseGpuDevice(): Promise<boolean> {
      return factory?.loseGpuDevice() ?? Promise.resolve(false);
    },
    gpu(): GpuStatus {
      return { adapter: factory?.gpuAdapter, lost: factory?.gpuDeviceLost };
    },
    /** The models loaded, by name, each as it runs now (its device changes after a device loss). */
    models(): ReadonlyMap<string, LoadedModel> {
      return loaded;
    },
  };
}

export type WebRunner = ReturnType<typeof createWebRunner>;
