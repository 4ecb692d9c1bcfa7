// onnxruntime-web as a SessionFactory, with devices tried in the frozen order webgpu, then wasm. Runtime
// neutral: the browser's donor worker (client/worker) and the Node worker's --runtime web threads
// (worker-gpu/web) both build it through web-runner.ts; a Node thread on webgpu passes the build it loaded
// (in Node the package's plain entry is wasm only; `onnxruntime-web/webgpu` runs on Dawn's navigator.gpu).
import * as OrtWeb from "onnxruntime-web";
import type { InferenceSession, SessionFactory } from "./model-runner.ts";
import { wrapOrtSession } from "./ort-session.ts";

/** Preference order; wasm is the last resort and runs everywhere WebAssembly does. */
export const WEB_DEVICES = Object.freeze(["webgpu", "wasm"] as const);
export type WebDevice = (typeof WEB_DEVICES)[number];
const FALLBACK: WebDevice = "wasm";
/**
 * A WebGPU start that has not finished by now will not: a GPU process that hung or restarts under load
 * leaves requestAdapter unanswered, and the donor would sit in "starting" for good. Generous, since a
 * software adapter compiles its shaders slowly.
 */
export const GPU_START_MS = 30_000;

/** The onnxruntime-web module the host loaded: `import * as ort from "onnxruntime-web"` or its webgpu build. */
export type OrtWebModule = Pick<typeof OrtWeb, "env" | "InferenceSession" | "Tensor">;

export interface OrtWebOptions {
  /** Default the package's own entry: in browsers webgpu and wasm, in Node wasm only. */
  ort?: OrtWebModule;
  /** WASM threads; default from defaultWasmThreads(). Read once, before the first session is created. */
  numThreads?: number;
  /** Where onnxruntime-web fetches its .wasm/.mjs files from, when the bundler does not serve them beside the script. */
  wasmPaths?: string;
  warn?: (message: string) => void;
  /** How long a WebGPU session may take to start before wasm is tried instead (default GPU_START_MS). */
  gpuStartMs?: number;
  /**
   * Whether wasm is tried after the devices asked for (default true). Off, a device that cannot start fails
   * the session with the reason (edgeswarm-worker --device webgpu); asking for wasm itself still works.
   */
  fallback?: boolean;
}

interface BrowserGlobals {
  crossOriginIsolated?: boolean;
  navigator?: { hardwareConcurrency?: number; gpu?: unknown };
}
const env = globalThis as BrowserGlobals;

/**
 * Threads need SharedArrayBuffer, which a page has only when cross-origin isolated (COOP/COEP); without it
 * onnxruntime-web warns and drops to one thread, so ask for one. With it, use half the cores: the page we
 * are a guest on keeps the rest. 0 lets onnxruntime choose (Node, where neither is known).
 */
export function defaultWasmThreads(): number {
  if (env.crossOriginIsolated === false) return 1;
  const cores = env.navigator?.hardwareConcurrency;
  return cores ? Math.max(1, Math.min(4, Math.floor(cores / 2))) : 0;
}

export function webDeviceOrder(
  wanted: readonly string[],
  warn: (message: string) => void,
  fallback = true,
): WebDevice[] {
  const order: WebDevice[] = [];
  for (const device of wanted) {
    if (!(WEB_DEVICES as readonly string[]).includes(device)) {
      warn(`onnxruntime-web has no device "${device}" (it runs ${WEB_DEVICES.join(", ")}); skipping it`);
    } else if (device === "webgpu" && env.navigator?.gpu === undefined) {
      warn("WebGPU is not available here (no navigator.gpu); skipping webgpu");
    } else if (!order.includes(device as WebDevice)) {
      order.push(device as WebDevice);
    }
  }
  if (fallback && !order.includes(FALLBACK)) order.push(FALLBACK);
  return order;
}

/** The GPU under the WebGPU device, as GPUAdapterInfo reports it (empty strings where the browser hides them). */
export interface GpuAdapterInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
}

/** One line for logs: "google swiftshader (SwiftShader driver 5.0.0, vulkan, software)". */
export function describeGpu(a: GpuAdapterInfo & { backend?: string; software?: boolean }): string {
  const name = [a.vendor, a.architecture].filter(Boolean).join(" ") || "unknown GPU";
  const detail = [a.description || a.device, a.backend, a.software ? "software" : ""].filter(Boolean).join(", ");
  return detail ? `${name} (${detail})` : name;
}

/** The web factory also tells when the GPU device it ran on was lost, so callers redo that work on wasm. */
export interface OrtWebFactory extends SessionFactory {
  /** Why the WebGPU device was lost, once it has been; webgpu is not tried again after that. */
  readonly gpuDeviceLost: string | undefined;
  /** Settles with the reason when the WebGPU device is lost (a run on it may then never finish). */
  readonly whenGpuDeviceLost: Promise<string>;
  /** The adapter of the WebGPU device in use; undefined until a webgpu session was made. */
  readonly gpuAdapter: GpuAdapterInfo | undefined;
  /** Destroys the WebGPU device in use, as a driver reset would: a drill for the fallback path. False when none is in use. */
  loseGpuDevice(): Promise<boolean>;
}

interface GpuDeviceLike {
  lost: Promise<{ reason?: string; message?: string }>;
  adapterInfo?: Partial<GpuAdapterInfo>;
  destroy(): void;
}

export function createOrtWebFactory(opts: OrtWebOptions = {}): OrtWebFactory {
  const ort = opts.ort ?? OrtWeb;
  const warn = opts.warn ?? ((message: string) => console.warn(message));
  ort.env.wasm.numThreads = opts.numThreads ?? defaultWasmThreads();
  if (opts.wasmPaths !== undefined) ort.env.wasm.wasmPaths = opts.wasmPaths;
  let gpuDevice: GpuDeviceLike | undefined;
  let gpuDeviceLost: string | undefined;
  let gpuAdapter: GpuAdapterInfo | undefined;
  let onLost: (reason: string) => void = () => {};
  const whenGpuDeviceLost = new Promise<string>((resolve) => {
    onLost = resolve;
  });
  const watchGpuDevice = async () => {
    if (gpuDevice) return;
    gpuDevice = (await ort.env.webgpu.device) as unknown as GpuDeviceLike;
    const info = gpuDevice.adapterInfo ?? {};
    gpuAdapter = {
      vendor: info.vendor ?? "",
      architecture: info.architecture ?? "",
      device: info.device ?? "",
      description: info.description ?? "",
    };
    void gpuDevice.lost.then((lost) => {
      gpuDeviceLost = lost.message || lost.reason || "device lost";
      warn(`the WebGPU device was lost (${gpuDeviceLost}); models move to wasm`);
      onLost(gpuDeviceLost);
    });
  };
  return {
    runtime: "onnxruntime-web",
    devices: WEB_DEVICES,
    get gpuDeviceLost() {
      return gpuDeviceLost;
    },
    whenGpuDeviceLost,
    get gpuAdapter() {
      return gpuAdapter;
    },
    async loseGpuDevice() {
      if (!gpuDevice || gpuDeviceLost) return false;
      gpuDevice.destroy();
      await gpuDevice.lost;
      return true;
    },
    async create(model, devices): Promise<InferenceSession> {
      const failures: string[] = [];
      const wanted = gpuDeviceLost ? devices.filter((d) => d !== "webgpu") : devices;
      const order = webDeviceOrder(wanted, warn, opts.fallback ?? true);
      for (const [i, device] of order.entries()) {
        try {
          const creating = ort.InferenceSession.create(model, {
            executionProviders: [device],
            graphOptimizationLevel: "all",
          });
          const session =
            device === "webgpu" ? await withinTime(creating, opts.gpuStartMs ?? GPU_START_MS) : await creating;
          if (device === "webgpu") await watchGpuDevice();
          return wrapOrtSession(session, {
            device,
            makeTensor: (type, data, dims) => new ort.Tensor(type, data, dims),
            // onnxruntime-web's WebGPU backend throws "Session already started" on overlapping runs of one
            // session (huggingface/transformers.js#909); queueing costs nothing on wasm, which runs one at a time anyway.
            serialize: true,
          });
        } catch (error) {
          const reason = (error as Error).message.split("\n")[0] ?? "unknown error";
          failures.push(`${device}: ${reason}`);
          const next = order[i + 1];
          if (next) warn(`onnxruntime-web could not use ${device} (${reason}); falling back to ${next}`);
        }
      }
      const tried = order.length > 0 ? order.join(" or ") : `any of ${devices.join(", ")}`;
      throw new Error(
        `onnxruntime-web could not create a session on ${tried}: ${failures.join("; ") || "none runs here"}`,
      );
    },
  };
}

/** The session `creating` gives, unless it takes over `ms`: then an error, and a late session is released. */
async function withinTime<S extends { release(): Promise<void> }>(creating: Promise<S>, ms: number): Promise<S> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`no session after ${ms / 1000} s`));
      void creating.then((s) => s.release()).catch(() => {});
    }, ms);
  });
  try {
    return await Promise.race([creating, late]);
  } finally {
    clearTimeout(timer);
  }
}
