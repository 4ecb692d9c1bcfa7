// Whether a Linux machine has a GPU for Dawn to find, read from its device nodes before Dawn is loaded:
// on a machine without one, starting Dawn still loads every Vulkan driver installed (Mesa's lavapipe among
// them), and they print their own complaints to stderr ("XDG_RUNTIME_DIR is invalid", Dawn refusing
// lavapipe) around the worker's one-line reason. Only --device auto asks (device-cascade.ts); a device named
// outright is tried as it is, so a software adapter such as SwiftShader stays reachable with --device webgpu.
import { readdirSync } from "node:fs";

export interface DeviceNodeHost {
  platform: string;
  /** The names in a folder; empty when it does not exist. */
  list(dir: string): string[];
}

/** DRM render nodes (Intel, AMD, any Mesa or NVIDIA open driver), NVIDIA's proprietary nodes, WSL's GPU. */
function gpuNodes(host: DeviceNodeHost): string[] {
  return [
    ...host
      .list("/dev/dri")
      .filter((n) => n.startsWith("renderD"))
      .map((n) => `/dev/dri/${n}`),
    ...host
      .list("/dev")
      .filter((n) => /^nvidia\d+$/.test(n) || n === "dxg")
      .map((n) => `/dev/${n}`),
  ];
}

/** null when a GPU may be there (or this is not Linux, where Dawn uses Metal or D3D12); otherwise why not. */
export function noGpuDevice(host: DeviceNodeHost = thisMachine): string | null {
  if (host.platform !== "linux" || gpuNodes(host).length > 0) return null;
  return "no GPU device here (no /dev/dri/renderD*, /dev/nvidia0 or /dev/dxg)";
}

const thisMachine: DeviceNodeHost = {
  platform: process.platform,
  list: (dir) => {
    try {
      return readdirSync(dir);
    } catch {
      return [];
    }
  },
};
