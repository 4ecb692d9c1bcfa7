// WebGPU for Node through Dawn (the `webgpu` package, Google's dawn.node): installs navigator.gpu and the
// GPU* globals onnxruntime-web's WebGPU build expects, works around one dawn.node quirk, counts the GPU
// memory our buffers hold, and probes for an adapter. cli.ts probes once; each --runtime web thread installs.
import { create, globals } from "webgpu";
import type { GpuAdapterInfo } from "../../shared/runner/ort-web-session.ts";

/** The Dawn backend per platform: named outright so the worker can say which one ran. */
const BACKENDS: Partial<Record<NodeJS.Platform, string>> = { linux: "vulkan", darwin: "metal", win32: "d3d12" };
export const DAWN_BACKEND = BACKENDS[process.platform] ?? "default";

export interface DawnAdapter extends GpuAdapterInfo {
  backend: string;
  /** Dawn picked a software adapter (SwiftShader): correct, but slow as a CPU. */
  software: boolean;
}

let installed: GPU | undefined;
let liveBytes = 0;
const sizes = new WeakMap<GPUBuffer, number>();

/**
 * dawn.node's GPUQueue.writeBuffer throws "Invalid argument" for a view on a SharedArrayBuffer, and
 * onnxruntime-web's threaded WASM memory is one: every upload of a weight or input is such a view.
 * A plain copy of the bytes asked for goes through; without it no model runs (one larger model
 * crashed the process). Offsets and sizes count elements for typed arrays, bytes otherwise (WebGPU spec).
 */
export function unsharedWrite(
  data: ArrayBufferView | ArrayBufferLike,
  dataOffset = 0,
  size?: number,
): [ArrayBufferView | ArrayBuffer, number, number | undefined] {
  const view = ArrayBuffer.isView(data) ? data : undefined;
  const backing = view ? view.buffer : data;
  if (!(backing instanceof SharedArrayBuffer)) return [data as ArrayBufferView | ArrayBuffer, dataOffset, size];
  const unit = view && "BYTES_PER_ELEMENT" in view ? (view.BYTES_PER_ELEMENT as number) : 1;
  const start = (view?.byteOffset ?? 0) + dataOffset * unit;
  const length = size !== undefined ? size * unit : (view?.byteLength ?? backing.byteLength) - dataOffset * unit;
  return [new Uint8Array(backing, start, length).slice(), 0, undefined];
}

/** Installs Dawn's WebGPU as this thread's navigator.gpu (once); onnxruntime-web/webgpu must load after it. */
export function installDawn(): GPU {
  if (installed) return installed;
  Object.assign(globalThis, globals);
  const queue = GPUQueue.prototype;
  const writeBuffer = queue.writeBuffer;
  queue.writeBuffer = function (this: GPUQueue, buffer, offset, data, dataOffset, size) {
    return writeBuffer.call(this, buffer, offset, ...unsharedWrite(data, dataOffset, size));
  } as GPUQueue["writeBuffer"];
  // WebGPU cannot say how much device memory is in use; the buffers onnxruntime made (weights,
  // activations, its buffer cache) are what grows toward an out-of-memory, so count those.
  const device = GPUDevice.prototype;
  const createBuffer = device.createBuffer;
  device.createBuffer = function (this: GPUDevice, descriptor: GPUBufferDescriptor) {
    const buffer = createBuffer.call(this, descriptor);
    sizes.set(buffer, descriptor.size);
    liveBytes += descriptor.size;
    return buffer;
  };
  const destroy = GPUBuffer.prototype.destroy;
  GPUBuffer.prototype.destroy = function (this: GPUBuffer) {
    liveBytes -= sizes.get(this) ?? 0;
    sizes.delete(this);
    return destroy.call(this);
  };
  installed = create(DAWN_BACKEND === "default" ? [] : [`backend=${DAWN_BACKEND}`]);
  // Node 20 has no navigator; 21+ has one without gpu.
  const host = globalThis as { navigator?: object };
  host.navigator ??= {};
  Object.defineProperty(host.navigator, "gpu", { value: installed, configurable: true });
  return installed;
}

/** Bytes in GPU buffers this thread created and has not destroyed. */
export function gpuBufferBytes(): number {
  return liveBytes;
}

/** The adapter Dawn offers here, or why there is none, in words an operator can act on. */
export async function probeDawn(): Promise<DawnAdapter | { reason: string }> {
  let adapter: GPUAdapter | null;
  try {
    adapter = await installDawn().requestAdapter({ powerPreference: "high-performance" });
  } catch (error) {
    return { reason: `Dawn could not start: ${(error as Error).message}` };
  }
  if (!adapter) {
    return {
      reason:
        `Dawn found no GPU adapter on its ${DAWN_BACKEND} backend: install the Vulkan loader (libvulkan1) and ` +
        "the GPU's Vulkan driver (in a container, NVIDIA's toolkit adds it when NVIDIA_DRIVER_CAPABILITIES includes graphics)",
    };
  }
  const { vendor, architecture, device, description, isFallbackAdapter } = adapter.info as GPUAdapterInfo & {
    isFallbackAdapter?: boolean;
  };
  return { vendor, architecture, device, description, backend: DAWN_BACKEND, software: isFallbackAdapter === true };
}
