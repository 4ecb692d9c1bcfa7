// The conformance cases (test/support/runner-cases.ts) on the runners that run in Node: onnxruntime-node
// here, and onnxruntime-web in worker threads behind comlink (edgeswarm-worker --runtime web, the browser
// tab's own runner), on wasm and on WebGPU through Dawn (SwiftShader's software Vulkan here: slow to
// compile its shaders, about a minute, then correct). test/browser/runner-conformance.test.ts runs them in
// Chromium's Web Worker. Then how the thread pool copes with a thread that dies or hangs.
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { loadModel } from "../../shared/runner/load-model.ts";
import type { LoadedModel } from "../../shared/runner/model-runner.ts";
import { nodeFetch } from "../../worker-gpu/runner/file-fetch.ts";
import { createOrtNodeFactory } from "../../worker-gpu/runner/ort-node-session.ts";
import { WebThreadPool } from "../../worker-gpu/web/thread-pool.ts";
import { BUNDLED_REGISTRY_URL } from "../support/reference-models.ts";
import { bundledSpec, describeRunner, type Runnable, useSoftwareVulkan } from "../support/runner-cases.ts";

const byName = (models: LoadedModel[]) => new Map<string, Runnable>(models.map((m) => [m.name, m]));

describeRunner("onnxruntime-node in this process", async () => {
  const factory = createOrtNodeFactory({ warn: () => {} });
  const loaded: LoadedModel[] = [];
  return {
    device: "cpu",
    async loadAll(specs) {
      for (const spec of specs) {
        loaded.push(
          await loadModel(spec, factory, { registryUrl: BUNDLED_REGISTRY_URL, fetch: nodeFetch, devices: ["cpu"] }),
        );
      }
      return byName(loaded);
    },
    async close() {
      for (const m of loaded) await m.dispose();
    },
  };
});

describeRunner("onnxruntime-web in a Node worker thread (--runtime web)", async () => {
  let pool: WebThreadPool | undefined;
  return {
    device: "wasm",
    async loadAll(specs) {
      pool = await WebThreadPool.start(
        { size: 1, runTimeoutMs: 60_000, registryUrl: BUNDLED_REGISTRY_URL.href, log: () => {} },
        specs,
      );
      return byName(pool.models());
    },
    close: async () => pool?.close(),
  };
});

describeRunner(
  "onnxruntime-web on Dawn's WebGPU in a Node worker thread (--device webgpu)",
  async () => {
    useSoftwareVulkan();
    let pool: WebThreadPool | undefined;
    return {
      device: "webgpu",
      async loadAll(specs) {
        pool = await WebThreadPool.start(
          { size: 1, device: "webgpu", runTimeoutMs: 600_000, registryUrl: BUNDLED_REGISTRY_URL.href, log: () => {} },
          specs,
        );
        return byName(pool.models());
      },
      close: async () => pool?.close(),
    };
  },
  900_000,
);

// Generous waits: starting a thread loads onnxruntime-web's wasm, which takes tens of seconds on a loaded machine.
describe("the web runtime's thread pool", () => {
  const specs = [bundledSpec("sentiment")];

  it("runs a batch again on another thread when its thread dies, and replaces the thread", async () => {
    const lines: string[] = [];
    const pool = await WebThreadPool.start(
      { size: 2, runTimeoutMs: 60_000, registryUrl: BUNDLED_REGISTRY_URL.href, log: (l) => lines.push(l) },
      specs,
    );
    try {
      const [model] = pool.models() as [LoadedModel];
      const want = await model.run(["I love this"]);
      const long = Array.from({ length: 32 }, () => `I love this ${"and the crust was perfect ".repeat(20)}`);
      const running = model.run(long);
      await expect.poll(() => pool.busy, { interval: 5 }).toBe(1);
      const killed = await pool.killOne();
      expect(killed?.running).toBe("sentiment (32 inputs)");
      const results = await running;
      expect(results).toHaveLength(32);
      expect(lines.some((l) => /lost while running sentiment \(32 inputs\)/.test(l))).toBe(true);
      await expect.poll(() => lines.some((l) => /replaced/.test(l)), { timeout: 120_000 }).toBe(true);
      expect(pool.size).toBe(2);
      expect(await model.run(["I love this"])).toEqual(want);
    } finally {
      await pool.close();
    }
  }, 240_000);

  it("fails a batch back, rather than holding it, while no thread can be started, and keeps trying to start one", async () => {
    // The models' folder goes away after the first start: a replacement thread cannot load them.
    const base = mkdtempSync(join(tmpdir(), "edgeswarm-pool-"));
    cpSync(new URL("sentiment/", BUNDLED_REGISTRY_URL), join(base, "sentiment"), { recursive: true });
    const lines: string[] = [];
    const pool = await WebThreadPool.start(
      {
        size: 1,
        runTimeoutMs: 2_000,
        registryUrl: pathToFileURL(join(base, "registry.json")).href,
        log: (l) => lines.push(l),
      },
      specs,
    );
    try {
      const [model] = pool.models() as [LoadedModel];
      expect(await model.run(["I love this"])).toHaveLength(1);
      rmSync(base, { recursive: true, force: true });
      await pool.killOne();
      await expect
        .poll(() => lines.some((l) => /could not replace thread 1: .*; trying again in 1000 ms/.test(l)), {
          timeout: 120_000,
        })
        .toBe(true);
      await expect(model.run(["I love this"])).rejects.toThrow(/no thread was free within 2000 ms/);
    } finally {
      await pool.close();
      rmSync(base, { recursive: true, force: true });
    }
  }, 240_000);

  it("takes a batch with no answer within run_timeout for hung: it replaces the thread and, after two, fails the batch", async () => {
    const lines: string[] = [];
    // No batch answers in 1 ms: every run looks hung.
    const pool = await WebThreadPool.start(
      { size: 2, runTimeoutMs: 1, registryUrl: BUNDLED_REGISTRY_URL.href, log: (l) => lines.push(l) },
      specs,
    );
    try {
      const [model] = pool.models() as [LoadedModel];
      await expect(model.run(["I love this"])).rejects.toThrow(/lost on 2 threads \(last: no answer within 1 ms\)/);
      expect(lines.filter((l) => /lost while running sentiment/.test(l))).toHaveLength(2);
      await expect.poll(() => lines.filter((l) => /replaced/.test(l)).length, { timeout: 120_000 }).toBe(2);
      expect(pool.size).toBe(2);
    } finally {
      await pool.close();
    }
  }, 240_000);
});
