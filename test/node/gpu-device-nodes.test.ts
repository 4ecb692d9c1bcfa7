// Whether Linux has a GPU device for Dawn (worker-gpu/web/gpu-device-nodes.ts), read from /dev before Dawn loads.
import { describe, expect, it } from "vitest";
import { noGpuDevice } from "../../worker-gpu/web/gpu-device-nodes.ts";

const host = (dev: Record<string, string[]>, platform = "linux") => ({
  platform,
  list: (dir: string) => dev[dir] ?? [],
});

describe("GPU device nodes", () => {
  it("finds a DRM render node, an NVIDIA device or WSL's GPU", () => {
    expect(noGpuDevice(host({ "/dev/dri": ["card0", "renderD128"] }))).toBeNull();
    expect(noGpuDevice(host({ "/dev": ["null", "nvidiactl", "nvidia0"] }))).toBeNull();
    expect(noGpuDevice(host({ "/dev": ["dxg"] }))).toBeNull();
  });

  it("says there is none where only control nodes or nothing are there", () => {
    expect(noGpuDevice(host({ "/dev": ["null", "nvidiactl", "nvidia-uvm"], "/dev/dri": ["card0"] }))).toBe(
      "no GPU device here (no /dev/dri/renderD*, /dev/nvidia0 or /dev/dxg)",
    );
    expect(noGpuDevice(host({}))).not.toBeNull();
  });

  it("leaves other systems to Dawn (Metal, D3D12)", () => {
    expect(noGpuDevice(host({}, "darwin"))).toBeNull();
    expect(noGpuDevice(host({}, "win32"))).toBeNull();
  });
});
