// A newcomer's second worker, for real: `edgeswarm-worker` started as the README shows while another
// process holds its health port ends with one line that says to pass --port (exit 1, no stack trace),
// and a worker started with no --host serves its health port on loopback; with --device auto (the default)
// on a machine without CUDA or a GPU, each device it passes over is one line of its own, and no native
// library (onnxruntime's CUDA loader, Vulkan drivers) writes to its stderr.

import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorker, type WorkerProcess } from "../../scripts/lib/worker-process.ts";
import { type Coordinator, freePort, startCoordinator } from "../../scripts/lib/wrangler-dev.ts";

const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-e2e-first-run-"));
let coordinator: Coordinator;
const workers: WorkerProcess[] = [];

beforeAll(async () => {
  coordinator = await startCoordinator({ persistTo, vars: { AUTH: "open" } });
}, 180_000);

afterAll(async () => {
  for (const w of workers) w.child.kill("SIGKILL");
  await coordinator?.stop();
  rmSync(persistTo, { recursive: true, force: true });
});

const worker = (port: number, device = "cpu") => {
  const w = startWorker([
    ...["--coordinator", coordinator.url, "--models", "sentiment", "--device", device],
    ...["--port", String(port), "--status-interval-ms", "0"],
  ]);
  workers.push(w);
  return w;
};

describe("a worker's first run", () => {
  it("serves /healthz on 127.0.0.1 when no --host is given", async () => {
    const port = await freePort();
    const w = worker(port);
    await w.waitFor(/health and metrics on http:\/\/127\.0\.0\.1:\d+\/healthz/, 60_000);
    expect(await (await fetch(`http://127.0.0.1:${port}/healthz`)).json()).toEqual({ status: "ok" });
    w.child.kill("SIGTERM");
    expect(await w.exited).toBe(0);
  });

  it("says to pass --port when another process holds its health port", async () => {
    const blocker = createServer().listen(0, "127.0.0.1");
    await once(blocker, "listening");
    const port = (blocker.address() as AddressInfo).port;
    try {
      const w = worker(port);
      expect(await w.exited, w.output()).toBe(1);
      expect(w.output()).toContain(`edgeswarm-worker: port ${port} on 127.0.0.1 is already in use`);
      expect(w.output()).toContain("--port N");
      expect(w.output()).not.toMatch(/fatal|EADDRINUSE|\n\s+at /);
    } finally {
      blocker.close();
    }
  });

  it("with --device auto and no CUDA or GPU here, says why in a line per device and nothing on stderr", async () => {
    const w = worker(0, "auto");
    await w.waitFor(/\[sentiment\] connected/, 60_000);
    w.child.kill("SIGTERM");
    expect(await w.exited).toBe(0);
    const loaded = w.output().match(/loaded sentiment \(text-classification\) on (\w+)/)?.[1];
    if (loaded !== "cpu") return; // a machine with CUDA or a GPU: it ran there
    const passed = w
      .output()
      .split("\n")
      .filter((l) => l.includes("device auto:"));
    expect(passed.map((l) => l.match(/device auto: (\w+) could not start \(.+\); trying (\w+)$/)?.slice(1))).toEqual([
      ["cuda", "webgpu"],
      ["webgpu", "cpu"],
    ]);
    expect(w.stderr()).toBe("");
  });
});
