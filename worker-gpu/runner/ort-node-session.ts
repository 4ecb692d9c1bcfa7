// The Node worker's SessionFactory: onnxruntime-node with devices tried in the frozen order cuda, then cpu.
// A device that cannot start (no CUDA provider library, no GPU) is skipped with a warning, never a crash,
// unless fallback is off (the worker's --device cuda), and the session reports the provider it was created with.
import * as ort from "onnxruntime-node";
import type { InferenceSession, SessionFactory } from "../../shared/runner/model-runner.ts";
import { wrapOrtSession } from "../../shared/runner/ort-session.ts";
import { cudaUnavailable } from "./cuda-probe.ts";

/** Preference order; cpu is always the last resort and is always bundled with onnxruntime-node. */
export const NODE_DEVICES = Object.freeze(["cuda", "cpu"] as const);
export type NodeDevice = (typeof NODE_DEVICES)[number];
const FALLBACK: NodeDevice = "cpu";

/** No session could be made on the devices allowed: what each one answered is in the message. */
export class DeviceUnavailableError extends Error {
  override name = "DeviceUnavailableError";
}

export interface OrtNodeOptions {
  /** Threads per session for operators; onnxruntime's default is one per core. */
  intraOpNumThreads?: number;
  /** Where fallback warnings go; console.warn by default. */
  warn?: (message: string) => void;
  /**
   * Whether cpu is tried after the devices asked for (default true). Off, a device that cannot start fails
   * the session with the reason: a worker told to use the GPU stops rather than serve on the CPU.
   */
  fallback?: boolean;
  /** Why cuda cannot start here, or null to try it (default: cuda-probe.ts, asked once per factory). */
  probeCuda?: () => string | null;
}

/** The devices to try for `wanted`: known ones in the caller's order, then cpu if the caller left it out. */
export function nodeDeviceOrder(
  wanted: readonly string[],
  warn: (message: string) => void,
  fallback = true,
): NodeDevice[] {
  const order: NodeDevice[] = [];
  for (const device of wanted) {
    if (!(NODE_DEVICES as readonly string[]).includes(device)) {
      warn(`onnxruntime-node has no device "${device}" (it runs ${NODE_DEVICES.join(", ")}); skipping it`);
    } else if (!order.includes(device as NodeDevice)) {
      order.push(device as NodeDevice);
    }
  }
  if (fallback && !order.includes(FALLBACK)) order.push(FALLBACK);
  return order;
}

export function createOrtNodeFactory(opts: OrtNodeOptions = {}): SessionFactory {
  const warn = opts.warn ?? ((message: string) => console.warn(message));
  // A provider that failed to start (its library missing, no GPU) fails the same way for the next model:
  // remember why and skip it, rather than have onnxruntime log the same native error once per model.
  const unavailable = new Map<NodeDevice, string>();
  // Asked before onnxruntime is: where its CUDA provider cannot load, onnxruntime's own attempt prints a
  // native error to stderr; the probe's reason is the one line said instead.
  let probed = false;
  const probeCuda = opts.probeCuda ?? (() => cudaUnavailable());
  return {
    runtime: "onnxruntime-node",
    devices: NODE_DEVICES,
    async create(model, devices): Promise<InferenceSession> {
      const failures: string[] = [];
      const fallback = opts.fallback ?? true;
      const order = nodeDeviceOrder(devices, warn, fallback);
      for (const [i, device] of order.entries()) {
        const next = order[i + 1];
        if (device === "cuda" && !probed) {
          probed = true;
          const reason = probeCuda();
          if (reason !== null) unavailable.set(device, reason);
        }
        const known = unavailable.get(device);
        if (known !== undefined) {
          failures.push(`${device}: ${known}`);
          if (next) warn(`onnxruntime-node: ${device} is unavailable (${known}); using ${next}`);
          continue;
        }
        try {
          // One provider per attempt: given ["cuda", "cpu"], onnxruntime would place nodes on cpu
          // silently, and we could not say what ran.
          const session = await ort.InferenceSession.create(model, {
            executionProviders: [device],
            graphOptimizationLevel: "all",
            ...(opts.intraOpNumThreads !== undefined ? { intraOpNumThreads: opts.intraOpNumThreads } : {}),
            // A worker waits between batches; spinning intra-op threads would burn the cores the
            // coordinator and the page's other work need (measured: ~0.9 cores idle-spinning vs 0.09).
            extra: { session: { intra_op: { allow_spinning: "0" } } },
          });
          return wrapOrtSession(session, {
            device,
            makeTensor: (type, data, dims) => new ort.Tensor(type, data, dims),
            serialize: false,
          });
        } catch (error) {
          const reason = (error as Error).message.split("\n")[0] ?? "unknown error";
          failures.push(`${device}: ${reason}`);
          if (device !== FALLBACK) unavailable.set(device, reason);
          if (next) warn(`onnxruntime-node could not use ${device} (${reason}); falling back to ${next}`);
        }
      }
      if (order.length === 0)
        throw new DeviceUnavailableError(`onnxruntime-node runs none of the devices ${devices.join(", ")}`);
      const only = fallback ? "" : ` (no fallback to ${FALLBACK} was allowed)`;
      throw new DeviceUnavailableError(
        `onnxruntime-node could not create a session on ${order.join(" or ")}${only}: ${failures.join("; ")}`,
      );
    },
  };
}
