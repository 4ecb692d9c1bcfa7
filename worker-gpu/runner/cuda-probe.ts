// Whether onnxruntime-node's CUDA provider can start here, answered without asking onnxruntime: asked for
// cuda on a machine without it, onnxruntime's native loader prints a red error of its own to stderr before
// the session fails, which every CPU-only `npm start` showed ahead of the worker's one-line reason (issue 17).
// The provider is two libraries beside onnxruntime-node's binding, which npm install does not fetch, and they
// load only where the dynamic loader finds the NVIDIA driver and the CUDA 12 / cuDNN 9 libraries.
// ort-node-session.ts asks before every cuda attempt; where this says yes, onnxruntime is tried for real.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { delimiter, dirname, join } from "node:path";

/** What the probe reads of the machine; tests pass their own. */
export interface CudaHost {
  platform: string;
  arch: string;
  /** The folder of onnxruntime-node's native binding, where its provider libraries are installed. */
  bindingDir: string;
  exists(path: string): boolean;
  /** Library file names the dynamic loader finds by name (its cache and LD_LIBRARY_PATH); undefined: unknown. */
  loadable(): ReadonlySet<string> | undefined;
}

/** The provider libraries onnxruntime-node's install script puts beside its binding (ONNXRUNTIME_NODE_INSTALL=cuda12). */
const PROVIDER_FILES: Record<string, readonly string[]> = {
  "linux/x64": ["libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so"],
  "win32/x64": ["onnxruntime_providers_shared.dll", "onnxruntime_providers_cuda.dll"],
};
/** What the CUDA provider links against on Linux: the driver, then the CUDA 12 runtime, cuBLAS and cuDNN 9. */
const LINUX_LIBRARIES = ["libcuda.so.1", "libcudart.so.12", "libcublas.so.12", "libcublasLt.so.12", "libcudnn.so.9"];
const DEFAULT_DIRS = ["/lib", "/usr/lib", "/lib64", "/usr/lib64", "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"];

const INSTALL_HINT =
  "npm install skips its download; with an NVIDIA GPU: ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install";

/** null when the CUDA provider can be tried; otherwise why not, in one line. */
export function cudaUnavailable(host: CudaHost = thisMachine()): string | null {
  const files = PROVIDER_FILES[`${host.platform}/${host.arch}`];
  if (!files) return `onnxruntime-node ships no CUDA provider for ${host.platform}/${host.arch}`;
  const missing = files.filter((f) => !host.exists(join(host.bindingDir, f)));
  if (missing.length === files.length) return `onnxruntime-node's CUDA provider is not installed (${INSTALL_HINT})`;
  if (missing.length > 0)
    return `onnxruntime-node's CUDA provider is incomplete (${missing.join(", ")} missing; ${INSTALL_HINT})`;
  if (host.platform !== "linux") return null;
  const found = host.loadable();
  if (!found) return null; // the loader's view is unknown: let onnxruntime try
  const absent = LINUX_LIBRARIES.filter((l) => !found.has(l) && !host.exists(join(host.bindingDir, l)));
  if (absent.includes("libcuda.so.1")) return "no NVIDIA driver here (libcuda.so.1 is not found)";
  if (absent.length > 0)
    return `the CUDA provider needs CUDA 12 and cuDNN 9, and ${absent.join(", ")} ${absent.length > 1 ? "are" : "is"} not found (ldconfig -p, LD_LIBRARY_PATH)`;
  return null;
}

/** The dynamic loader's cache as `ldconfig -p` lists it, the LD_LIBRARY_PATH folders' files, and the default folders. */
function loaderView(exists: (path: string) => boolean): ReadonlySet<string> | undefined {
  let cache: string | undefined;
  for (const ldconfig of ["ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"]) {
    try {
      cache = execFileSync(ldconfig, ["-p"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
      break;
    } catch {
      // not on PATH, or not this one
    }
  }
  if (cache === undefined) return undefined;
  const names = new Set(cache.split("\n").map((line) => line.trim().split(" ")[0] ?? ""));
  const dirs = [...(process.env.LD_LIBRARY_PATH ?? "").split(delimiter).filter(Boolean), ...DEFAULT_DIRS];
  for (const library of LINUX_LIBRARIES) if (dirs.some((d) => exists(join(d, library)))) names.add(library);
  return names;
}

function thisMachine(): CudaHost {
  const require = createRequire(import.meta.url);
  const root = dirname(require.resolve("onnxruntime-node/package.json"));
  return {
    platform: process.platform,
    arch: process.arch,
    // Where onnxruntime-node's dist/binding.js loads its addon from.
    bindingDir: join(root, "bin", "napi-v6", process.platform, process.arch),
    exists: existsSync,
    loadable: () => loaderView(existsSync),
  };
}
