// Whether onnxruntime-node's CUDA provider can start, asked before onnxruntime is (worker-gpu/runner/cuda-probe.ts):
// a machine without it gets the probe's one line, and onnxruntime's native loader never prints its own error.
import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { type CudaHost, cudaUnavailable } from "../../worker-gpu/runner/cuda-probe.ts";
import { createOrtNodeFactory } from "../../worker-gpu/runner/ort-node-session.ts";

const BIN = "/ort/bin/napi-v6/linux/x64";
const PROVIDER = [`${BIN}/libonnxruntime_providers_shared.so`, `${BIN}/libonnxruntime_providers_cuda.so`];
const CUDA = ["libcuda.so.1", "libcudart.so.12", "libcublas.so.12", "libcublasLt.so.12", "libcudnn.so.9"];

function host(files: string[], loadable: string[] | undefined, platform = "linux"): CudaHost {
  return {
    platform,
    arch: "x64",
    bindingDir: BIN,
    exists: (path) => files.includes(path),
    loadable: () => (loadable ? new Set(loadable) : undefined),
  };
}

describe("the CUDA probe", () => {
  it("says the provider is not installed, or which of its files are missing, and how to fetch it", () => {
    expect(cudaUnavailable(host([], CUDA))).toMatch(
      /^onnxruntime-node's CUDA provider is not installed \(.*ONNXRUNTIME_NODE_INSTALL=cuda12/,
    );
    expect(cudaUnavailable(host(PROVIDER.slice(0, 1), CUDA))).toMatch(
      /CUDA provider is incomplete \(libonnxruntime_providers_cuda\.so missing; .*ONNXRUNTIME_NODE_INSTALL=cuda12/,
    );
    expect(cudaUnavailable(host([], CUDA, "darwin"))).toBe("onnxruntime-node ships no CUDA provider for darwin/x64");
  });

  it("with the provider installed, needs the NVIDIA driver and the CUDA 12 / cuDNN 9 libraries the loader can find", () => {
    expect(cudaUnavailable(host(PROVIDER, CUDA.slice(1)))).toBe("no NVIDIA driver here (libcuda.so.1 is not found)");
    expect(cudaUnavailable(host(PROVIDER, ["libcuda.so.1", "libcudart.so.12", "libcublas.so.12"]))).toMatch(
      /needs CUDA 12 and cuDNN 9, and libcublasLt\.so\.12, libcudnn\.so\.9 are not found/,
    );
    // A library beside the binding loads too (the provider's rpath is its own folder).
    expect(cudaUnavailable(host([...PROVIDER, `${BIN}/libcudnn.so.9`], CUDA.slice(0, 4)))).toBeNull();
    expect(cudaUnavailable(host(PROVIDER, CUDA))).toBeNull();
    // Where the loader's view cannot be read, onnxruntime is left to try.
    expect(cudaUnavailable(host(PROVIDER, undefined))).toBeNull();
  });

  it("keeps the factory from asking onnxruntime for cuda where the probe says no, once per factory", async () => {
    const { readFileSync } = await import("node:fs");
    const model = readFileSync(new URL("../../models/sentiment/onnx/model.onnx", import.meta.url));
    const warnings: string[] = [];
    let probes = 0;
    const probeCuda = () => {
      probes++;
      return "no NVIDIA driver here (libcuda.so.1 is not found)";
    };
    const factory = createOrtNodeFactory({ warn: (m) => warnings.push(m), probeCuda });
    for (let i = 0; i < 2; i++) {
      const session = await factory.create(model, ["cuda"]);
      expect(session.device).toBe("cpu");
      await session.release();
    }
    expect(probes).toBe(1);
    expect(warnings[0]).toBe(
      "onnxruntime-node: cuda is unavailable (no NVIDIA driver here (libcuda.so.1 is not found)); using cpu",
    );
    const strict = createOrtNodeFactory({ warn: () => {}, fallback: false, probeCuda });
    await expect(strict.create(model, ["cuda"])).rejects.toThrow(
      /on cuda \(no fallback to cpu was allowed\): cuda: no NVIDIA driver/,
    );
  });

  it("leaves stderr free of onnxruntime's native error on this machine when cuda is asked for", () => {
    // A child process, since onnxruntime writes to the process's stderr directly.
    const script = `
      import { readFileSync } from "node:fs";
      import { createOrtNodeFactory } from "./worker-gpu/runner/ort-node-session.ts";
      import { cudaUnavailable } from "./worker-gpu/runner/cuda-probe.ts";
      const session = await createOrtNodeFactory({ warn: (m) => console.log("warn:", m) })
        .create(readFileSync("models/sentiment/onnx/model.onnx"), ["cuda", "cpu"]);
      console.log(JSON.stringify({ device: session.device, probe: cudaUnavailable() }));`;
    const run = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      cwd: new URL("../../", import.meta.url).pathname,
      encoding: "utf8",
    });
    expect(run.status, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout.trim().split("\n").at(-1) as string) as {
      device: string;
      probe: string | null;
    };
    if (result.probe === null) return; // a machine where CUDA can start: onnxruntime was asked, as it should be
    expect(result.device).toBe("cpu");
    expect(run.stdout).toContain(`warn: onnxruntime-node: cuda is unavailable (${result.probe}); using cpu`);
    expect(run.stderr).not.toMatch(/onnxruntime|providers_shared|\[E:/);
  });
});
