// Loads the models on the device --device asks for. auto walks the runtime's order — node: cuda, then
// webgpu (onnxruntime-web on Dawn, in the web runtime's threads), then cpu; web: webgpu, then wasm —
// trying each for real and logging why it passed one over; a device named is that one only. cli.ts calls it.
import { loadModel } from "../shared/runner/load-model.ts";
import type { LoadedModel } from "../shared/runner/model-runner.ts";
import { describeGpu } from "../shared/runner/ort-web-session.ts";
import { defaultThreads, type WorkerOptions } from "./options.ts";
import { cudaUnavailable } from "./runner/cuda-probe.ts";
import { nodeFetch } from "./runner/file-fetch.ts";
import { createOrtNodeFactory, DeviceUnavailableError } from "./runner/ort-node-session.ts";
import type { DawnAdapter } from "./web/dawn-gpu.ts";
import { noGpuDevice } from "./web/gpu-device-nodes.ts";
import { WebThreadPool } from "./web/thread-pool.ts";
import type { LoadedModels, LoadModels } from "./worker.ts";

type Concrete = Exclude<WorkerOptions["device"], "auto">;
const AUTO_ORDER: Record<WorkerOptions["runtime"], Concrete[]> = {
  node: ["cuda", "webgpu", "cpu"],
  web: ["webgpu", "wasm"],
};

/** A device that could not start; any other error (a model file missing, say) ends the walk at once. */
class Unavailable extends Error {}

export interface Started extends LoadedModels {
  /** The web runtime's thread pool, for the drills and the GPU report. */
  pool?: WebThreadPool;
}

export function deviceCascade(options: WorkerOptions, registryUrl: URL, log: (line: string) => void) {
  const auto = options.device === "auto";
  const order = auto ? AUTO_ORDER[options.runtime] : [options.device as Concrete];
  let started: Started | undefined;
  const fallsBackTo = `; --device auto would fall back to ${AUTO_ORDER.node.slice(1).join(", then ")}`;

  const onNode = async (configs: Parameters<LoadModels>[0], device: "cuda" | "cpu"): Promise<Started> => {
    // Said in one line before any model loads, rather than by onnxruntime's native loader on stderr.
    const noCuda = device === "cuda" ? cudaUnavailable() : null;
    if (noCuda !== null) throw new Unavailable(auto ? noCuda : `${noCuda}${fallsBackTo}`);
    // One provider, no fallback inside: the walk here decides what comes next, and says so.
    const factory = createOrtNodeFactory({
      warn: (m) => log(`warning: ${m}`),
      fallback: false,
      ...(options.threads === undefined ? {} : { intraOpNumThreads: options.threads }),
    });
    const models: LoadedModel[] = [];
    try {
      for (const config of configs) {
        const began = performance.now();
        const model = await loadModel(config, factory, { registryUrl, fetch: nodeFetch, devices: [device] }).catch(
          (error: Error) => {
            if (!(error instanceof DeviceUnavailableError)) throw error;
            throw new Unavailable(`model ${config.name}: ${error.message}${auto ? "" : fallsBackTo}`);
          },
        );
        log(`loaded ${config.name} (${config.task}) on ${model.device} in ${Math.round(performance.now() - began)} ms`);
        models.push(model);
      }
    } catch (error) {
      await Promise.all(models.map((m) => m.dispose()));
      throw error;
    }
    return { models, concurrency: 1, joinsDecode: true };
  };

  const onWeb = async (configs: Parameters<LoadModels>[0], device: "webgpu" | "wasm"): Promise<Started> => {
    let adapter: DawnAdapter | undefined;
    if (device === "webgpu") {
      // With no GPU device, Dawn would find only software drivers, which print their own complaints.
      const noGpu = auto ? noGpuDevice() : null;
      if (noGpu !== null) throw new Unavailable(noGpu);
      // Loaded only here: a cuda or cpu worker never maps Dawn's 21 MB library.
      const { probeDawn } = await import("./web/dawn-gpu.ts");
      const probed = await probeDawn();
      if ("reason" in probed) throw new Unavailable(probed.reason);
      // A software adapter (SwiftShader) is correct but slower than the CPU: only when asked for by name.
      if (auto && probed.software) {
        throw new Unavailable(`the only adapter is ${describeGpu(probed)}; --device webgpu uses it anyway`);
      }
      adapter = probed;
      log(`webgpu adapter: ${describeGpu(adapter)}`);
    }
    // Under --runtime node (--device auto landing here) --threads is onnxruntime's, not this pool's.
    const size = (options.runtime === "web" ? options.threads : undefined) ?? defaultThreads(device);
    const began = performance.now();
    const pool = await WebThreadPool.start(
      {
        size,
        device,
        drills: options.gpuDrills,
        runTimeoutMs: options.runTimeoutMs,
        registryUrl: registryUrl.href,
        log,
      },
      configs,
    ).catch((error: Error) => {
      throw device === "webgpu" ? new Unavailable(error.message) : error;
    });
    log(`started ${pool.size} onnxruntime-web threads on ${device} in ${Math.round(performance.now() - began)} ms`);
    return {
      models: pool.models(),
      concurrency: size,
      pool,
      gpu: adapter && (async () => ({ ...(await pool.gpu()), adapter: adapter as DawnAdapter })),
    };
  };

  const load: LoadModels = async (configs) => {
    for (const [i, device] of order.entries()) {
      try {
        started = device === "cuda" || device === "cpu" ? await onNode(configs, device) : await onWeb(configs, device);
        return started;
      } catch (error) {
        const next = order[i + 1];
        if (!(error instanceof Unavailable)) throw error;
        if (!next) throw new Error(auto ? `no device could start; ${device}: ${error.message}` : error.message);
        log(`device auto: ${device} could not start (${error.message}); trying ${next}`);
      }
    }
    throw new Error("no device to try");
  };
  return { load, started: () => started };
}
