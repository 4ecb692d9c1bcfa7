// WebGPU in Node through Dawn (worker-gpu/web/dawn-gpu.ts), on SwiftShader's software Vulkan where no GPU
// is at hand: the adapter probe, and the one dawn.node quirk we work around — GPUQueue.writeBuffer refuses
// views on a SharedArrayBuffer, which is what onnxruntime-web's threaded WASM memory hands it.

import { spawnSync } from "node:child_process";
import { beforeAll, describe, expect, it } from "vitest";
import { gpuBufferBytes, installDawn, probeDawn, unsharedWrite } from "../../worker-gpu/web/dawn-gpu.ts";
import { useSoftwareVulkan } from "../support/runner-cases.ts";

/** A shared view written with dawn.node's own writeBuffer; prints "wrote" if that works. */
const RAW_WRITE = `
import { create, globals } from "webgpu";
Object.assign(globalThis, globals);
const device = await (await create([]).requestAdapter()).requestDevice();
const buffer = device.createBuffer({ size: 8, usage: GPUBufferUsage.COPY_DST });
device.queue.writeBuffer(buffer, 0, new Float32Array(new SharedArrayBuffer(16), 8, 2));
await device.queue.onSubmittedWorkDone();
console.log("wrote");
process.exit(0);
`;

/** Writes `data` (a view on shared memory) into a fresh buffer and reads the buffer back. */
async function roundTrip(device: GPUDevice, data: Float32Array, dataOffset: number, size: number) {
  const bytes = size * 4;
  const target = device.createBuffer({ size: bytes, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
  const readback = device.createBuffer({ size: bytes, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ });
  device.queue.writeBuffer(target, 0, data, dataOffset, size);
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(target, 0, readback, 0, bytes);
  device.queue.submit([encoder.finish()]);
  await readback.mapAsync(GPUMapMode.READ);
  const out = [...new Float32Array(readback.getMappedRange().slice(0))];
  readback.unmap();
  target.destroy();
  readback.destroy();
  return out;
}

function sharedFloats(values: number[]): Float32Array {
  const view = new Float32Array(new SharedArrayBuffer(4 * (values.length + 2)), 8, values.length);
  view.set(values);
  return view;
}

describe("WebGPU through Dawn", () => {
  beforeAll(() => useSoftwareVulkan());

  it("copies a shared view's bytes, counting offsets and sizes in elements, and passes others through", () => {
    const view = sharedFloats([1, 2, 3, 4]);
    const [copy, offset, size] = unsharedWrite(view, 1, 2);
    expect(copy).toBeInstanceOf(Uint8Array);
    expect((copy as Uint8Array).buffer).toBeInstanceOf(ArrayBuffer);
    expect([...new Float32Array((copy as Uint8Array).slice().buffer)]).toEqual([2, 3]);
    expect([offset, size]).toEqual([0, undefined]);
    const [rest] = unsharedWrite(view, 3);
    expect([...new Float32Array((rest as Uint8Array).slice().buffer)]).toEqual([4]);
    const plain = new Float32Array([1, 2]);
    expect(unsharedWrite(plain, 1, 1)).toEqual([plain, 1, 1]);
  });

  it("writes views on shared memory to the GPU, which dawn.node alone refuses", async () => {
    // dawn.node as it ships, in a process of its own: it throws "Invalid argument" or, as here, crashes.
    // That is why unsharedWrite exists; if a release of the webgpu package writes shared views, this
    // fails and the copy can go.
    const raw = spawnSync(process.execPath, ["--input-type=module", "-e", RAW_WRITE], {
      encoding: "utf8",
      timeout: 60_000,
    });
    expect(raw.stdout).not.toContain("wrote");
    expect(raw.status).not.toBe(0);

    const adapter = await installDawn().requestAdapter();
    const device = await adapter?.requestDevice();
    if (!device) throw new Error("no WebGPU adapter: install libvulkan1 and chromium (SwiftShader)");
    expect(await roundTrip(device, sharedFloats([1.5, -2, 3.25, 8]), 1, 3)).toEqual([-2, 3.25, 8]);
    device.destroy();
  });

  it("finds the adapter, names its backend and says when it is software", async () => {
    const probed = await probeDawn();
    if ("reason" in probed) throw new Error(probed.reason);
    expect(probed.backend).toBe("vulkan");
    // SwiftShader here; on a machine whose Vulkan driver is a real GPU's, this names that GPU.
    if (process.env.VK_ICD_FILENAMES?.includes("swiftshader")) {
      expect(probed).toMatchObject({ vendor: "google", architecture: "swiftshader", software: true });
    }
    expect(probed.description.length).toBeGreaterThan(0);
  });

  it("counts the bytes in GPU buffers until they are destroyed", async () => {
    const device = await (await installDawn().requestAdapter())?.requestDevice();
    if (!device) throw new Error("no WebGPU adapter");
    const before = gpuBufferBytes();
    const buffer = device.createBuffer({ size: 1 << 20, usage: GPUBufferUsage.STORAGE });
    expect(gpuBufferBytes() - before).toBe(1 << 20);
    buffer.destroy();
    expect(gpuBufferBytes()).toBe(before);
    device.destroy();
  });
});
