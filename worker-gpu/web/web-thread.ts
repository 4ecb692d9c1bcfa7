// One `--runtime web` thread: the web runner the browser's donor worker runs too (shared/runner/web-runner.ts,
// onnxruntime-web), exposed to the main thread through comlink's Node adapter. On webgpu the thread first
// installs Dawn's navigator.gpu and loads onnxruntime-web's WebGPU build; on wasm the package's Node build.
// Model files come from the registry's folder, which may be on disk, hence the Node fetch.
import { parentPort, workerData } from "node:worker_threads";
import { expose } from "comlink";
import nodeEndpoint from "comlink/dist/esm/node-adapter.mjs";
import type { ItemResult } from "../../shared/protocol/worker.ts";
import type { RunOptions, TokenDelta } from "../../shared/runner/model-runner.ts";
import { createWebRunner } from "../../shared/runner/web-runner.ts";
import { nodeFetch } from "../runner/file-fetch.ts";
import { gpuBufferBytes, installDawn } from "./dawn-gpu.ts";

/** What the pool tells each thread at its start. */
export interface ThreadData {
  device: "webgpu" | "wasm";
  /** Set only by tests and drills (EDGESWARM_GPU_DRILLS=1): the thread then also offers loseGpuDevice. */
  drills: boolean;
}

if (!parentPort) throw new Error("web-thread.ts runs as a worker thread of edgeswarm-worker --runtime web");
const data = workerData as ThreadData;
if (data.device === "webgpu") installDawn();
// Dawn first: the WebGPU build looks for navigator.gpu as it loads.
const ort = data.device === "webgpu" ? await import("onnxruntime-web/webgpu") : undefined;
let closing = false;
// Once closing, the device destroyed below is no loss to report.
const warn = (line: string) => {
  if (!closing) console.warn(line);
};
const runner = createWebRunner({ ort, fetch: nodeFetch, warn });
/** Runs the pool may cancel, by the id it gave them (its AbortSignal stays on the main thread). */
const cancellable = new Map<number, AbortController>();

export const threadApi = {
  load: runner.load,
  /** A batch's results, and the device that ran it (wasm once this thread's WebGPU device was lost). */
  async run(
    name: string,
    inputs: unknown[],
    onTokens?: (delta: TokenDelta) => unknown,
    runId?: number,
    onResult?: (pos: number, result: ItemResult) => unknown,
  ) {
    // onTokens and onResult are Comlink proxies of the main thread's callbacks: each call posts a message; all
    // of them are awaited before the answer, so none reaches the worker loop after its batch's completion.
    const sent: unknown[] = [];
    const abort = runId === undefined ? undefined : new AbortController();
    if (abort) cancellable.set(runId as number, abort);
    const opts: RunOptions = {
      ...(onTokens ? { onTokens: (d: TokenDelta) => void sent.push(onTokens(d)) } : {}),
      // Each proxy has a port of its own, and two ports keep no order between them: an item's result goes once
      // every delta before it has been taken, so its last tokens are never behind it.
      ...(onResult
        ? {
            onResult: (pos: number, r: ItemResult) =>
              void sent.push(Promise.allSettled(sent).then(() => onResult(pos, r))),
          }
        : {}),
      ...(abort ? { signal: abort.signal } : {}),
    };
    try {
      const results = await runner.run(name, inputs, opts);
      await Promise.all(sent);
      return { results, device: runner.models().get(name)?.device ?? data.device };
    } finally {
      if (runId !== undefined) cancellable.delete(runId);
    }
  },
  /** The pool's caller gave up on run `runId`: a generating run leaves its decode at the next step. */
  cancel(runId: number) {
    cancellable.get(runId)?.abort();
  },
  gpu: runner.gpu,
  gpuBufferBytes,
  /**
   * Destroys this thread's WebGPU device, as a driver reset would. Only under the drill flag: a worker in
   * service should not carry a way to break its own GPU, but the fallback to wasm needs a real loss to test.
   */
  loseGpuDevice: data.drills ? runner.loseGpuDevice : async () => false,
  /**
   * Before the pool ends this thread: releases every session, then destroys the WebGPU device, rather than
   * leaving a live Dawn device and its driver's threads to the thread's termination.
   */
  async close() {
    closing = true;
    for (const name of [...runner.models().keys()]) await runner.unload(name);
    await runner.loseGpuDevice();
  },
};
export type ThreadApi = typeof threadApi;

expose(threadApi, nodeEndpoint(parentPort));
