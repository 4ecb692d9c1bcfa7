// The browser worker's SessionFactory: onnxruntime-web with devices tried in the frozen order webgpu, then
// wasm. Under Node, `onnxruntime-web` resolves to its Node build (wasm only), which is how the Node tests
// run this same file; a webgpu request there falls back to wasm with a warning.
import * as ort from "onnxruntime-web";
import type { InferenceSession, SessionFactory } from "../../shared/runner/model-runner.ts";
import { wrapOrtSession } from "../../shared/runner/ort-session.ts";

/** Preference order; wasm is the last resort and runs everywhere WebAssembly does. */
export const WEB_DEVICES = Object.freeze(["webgpu", "wasm"] as const);
export type WebDevice = (typeof WEB_DEVICES)[number];
const FALLBACK: WebDevice = "wasm";

export interface OrtWebOptions {
  /** WASM threads; default from defaultWasmThreads(). Read once, before the first session is created. */
  numThreads?: number;
  /** Where onnxruntime-web fetches its .wasm/.mjs files from, when the bundler does not serve them beside the script. */
  wasmPaths?: string;
  warn?: (message: string) => void;
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

export function webDeviceOrder(wanted: readonly string[], warn: (message: string) => void): WebDevice[] {
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
  if (!order.includes(FALLBACK)) order.push(FALLBACK);
  return order;
}

export function createOrtWebFactory(opts: OrtWebOptions = {}): SessionFactory {
  const warn = opts.warn ?? ((message: string) => console.warn(message));
  ort.env.wasm.numThreads = opts.numThreads ?? defaultWasmThreads();
  if (opts.wasmPaths !== undefined) ort.env.wasm.wasmPaths = opts.wasmPaths;
  return {
    runtime: "onnxruntime-web",
    devices: WEB_DEVICES,
    async create(model, devices): Promise<InferenceSession> {
      const failures: string[] = [];
      const order = webDeviceOrder(devices, warn);
      for (const [i, device] of order.entries()) {
        try {
          const session = await ort.InferenceSession.create(model, {
            executionProviders: [device],
            graphOptimizationLevel: "all",
          });
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
      throw new Error(`onnxruntime-web could not create a session on any device: ${failures.join("; ")}`);
    },
  };
}
