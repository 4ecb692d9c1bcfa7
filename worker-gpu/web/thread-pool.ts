// `--runtime web`: a pool of Node worker threads, each running the web runner the browser's donor worker
// runs too (shared/runner/web-runner.ts, onnxruntime-web on webgpu or wasm) behind comlink's Node adapter,
// every thread with every model loaded. A batch runs on whichever thread is free, so batches of one model, or of several, run in
// parallel. A thread that dies or hangs is replaced; the batch it held is run once more on another
// thread, and if that fails too the batch fails back to the coordinator as retryable: nothing is lost.
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { proxy, type Remote, wrap } from "comlink";
import nodeEndpoint from "comlink/dist/esm/node-adapter.mjs";
import type { ItemResult, ModelConfig } from "../../shared/index.ts";
import type { LoadedModel, RunOptions } from "../../shared/runner/model-runner.ts";
import type { GpuAdapterInfo } from "../../shared/runner/ort-web-session.ts";
import type { LoadedInfo } from "../../shared/runner/web-runner.ts";
import type { ThreadApi, ThreadData } from "./web-thread.ts";

export interface ThreadPoolOptions {
  /** Threads; default the machine's cores. */
  size?: number;
  /** A batch running longer than this is taken for hung: its thread is replaced. */
  runTimeoutMs: number;
  /** Where relative model paths resolve from (the registry file's URL). */
  registryUrl: string;
  /** What each thread runs on; default wasm. A lost WebGPU device moves that thread's models to wasm. */
  device?: ThreadData["device"];
  /** Thread drills (loseGpuDevice) for tests: EDGESWARM_GPU_DRILLS=1. */
  drills?: boolean;
  log: (line: string) => void;
}

/** The pool's WebGPU devices, one per thread, for the status line and /metrics. */
export interface PoolGpu {
  adapter: GpuAdapterInfo | undefined;
  /** Threads whose device was lost (they run on wasm now), with why. */
  lost: string[];
  /** Bytes in GPU buffers across the threads. */
  bufferBytes: number;
}

interface Thread {
  id: number;
  worker: Worker;
  api: Remote<ThreadApi>;
  /** Settles when the thread is gone (exited, crashed, or terminated here), with why. */
  gone: Promise<string>;
  /** The batch it runs now, for logs and the kill drill. */
  running: string | null;
  /** The kill drill is ending it. */
  ending?: boolean;
}

/** A batch runs on at most this many threads before it fails back to the coordinator. */
const TRIES = 2;
/** A thread that has not loaded the models in this long is given up on. */
const LOAD_TIMEOUT_MS = 120_000;
/** How long a closing thread may take to release its sessions and GPU device before it is ended anyway. */
const CLOSE_GRACE_MS = 10_000;

export function defaultThreads(): number {
  return availableParallelism();
}

export class WebThreadPool {
  private readonly threads = new Set<Thread>();
  private readonly idle: Thread[] = [];
  private readonly waiting: { give: (thread: Thread) => void; timer: ReturnType<typeof setTimeout> }[] = [];
  private readonly infos = new Map<string, LoadedInfo>();
  /** Each model's device in its latest batch: webgpu until a thread's device is lost, then wasm there. */
  private readonly lastDevice = new Map<string, string>();
  private nextId = 1;
  private nextRun = 1;
  private closing = false;
  private closed: Promise<void> | undefined;

  private constructor(
    private readonly opts: ThreadPoolOptions & { size: number },
    private readonly specs: readonly ModelConfig[],
  ) {}

  /** Starts the threads and loads every model in each; resolves once all are ready. */
  static async start(opts: ThreadPoolOptions, specs: readonly ModelConfig[]): Promise<WebThreadPool> {
    const pool = new WebThreadPool({ ...opts, size: opts.size ?? defaultThreads() }, specs);
    try {
      await Promise.all(Array.from({ length: pool.opts.size }, () => pool.spawn()));
    } catch (error) {
      await pool.close();
      throw error;
    }
    return pool;
  }

  get size(): number {
    return this.threads.size;
  }

  /** Threads running a batch now. */
  get busy(): number {
    return [...this.threads].filter((t) => t.running !== null).length;
  }

  /** One LoadedModel per model, whose runs go to the pool. */
  models(): LoadedModel[] {
    const lastDevice = this.lastDevice;
    return this.specs.map((spec) => {
      const info = this.infos.get(spec.name) as LoadedInfo;
      return {
        name: spec.name,
        task: info.task,
        get device() {
          return lastDevice.get(spec.name) ?? info.device;
        },
        runtime: `${info.runtime} (${this.opts.size} threads)`,
        run: (inputs: readonly unknown[], opts?: RunOptions) => this.run(spec.name, inputs, opts),
        // The models share the threads, so they end together: the worker disposes them all when it stops,
        // which ends the threads and their GPU devices before the process exits.
        dispose: () => this.close(),
      };
    });
  }

  /**
   * Runs a batch on a free thread; on a thread that dies or hangs, once more on another. A generating batch's
   * deltas come back through a Comlink proxy; a retry sends them again (the queue keeps each once). An
   * AbortSignal cannot cross to the thread: its abort goes there as a cancel of the run by id.
   */
  async run(model: string, inputs: readonly unknown[], opts?: RunOptions): Promise<ItemResult[]> {
    const onTokens = opts?.onTokens ? proxy(opts.onTokens) : undefined;
    const onResult = opts?.onResult ? proxy(opts.onResult) : undefined;
    const signal = opts?.signal;
    for (let attempt = 1; ; attempt++) {
      const thread = await this.acquire(this.opts.runTimeoutMs);
      thread.running = `${model} (${inputs.length} inputs)`;
      const runId = this.nextRun++;
      const ran = thread.api.run(model, [...inputs], onTokens, signal ? runId : undefined, onResult);
      // Posted after the run, so the thread knows the id; a signal aborted while waiting for a thread, at once.
      const cancel = () => void thread.api.cancel(runId).catch(() => undefined);
      if (signal?.aborted) cancel();
      else signal?.addEventListener("abort", cancel, { once: true });
      let timer: ReturnType<typeof setTimeout> | undefined;
      const hung = new Promise<{ lost: string }>((resolve) => {
        timer = setTimeout(
          () => resolve({ lost: `no answer within ${this.opts.runTimeoutMs} ms` }),
          this.opts.runTimeoutMs,
        );
      });
      const outcome = await Promise.race([
        ran.then(
          ({ results, device }) => {
            this.lastDevice.set(model, device);
            return { results };
          },
          (error: Error) => ({ error }),
        ),
        thread.gone.then((why) => ({ lost: why })),
        hung,
      ]).finally(() => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", cancel);
      });
      if (!("lost" in outcome)) {
        this.release(thread);
        if ("error" in outcome) throw outcome.error;
        return outcome.results;
      }
      this.opts.log(`thread ${thread.id} lost while running ${thread.running}: ${outcome.lost}; replacing it`);
      this.retire(thread, outcome.lost);
      if (attempt >= TRIES) {
        throw new Error(`the batch was lost on ${TRIES} threads (last: ${outcome.lost})`);
      }
    }
  }

  /**
   * A drill for the recovery path: ends a thread abruptly, as a crash would, preferring one that is
   * running a batch (with `busyOnly`, only such a one). Answers what it ended, or null when none was.
   */
  async killOne(opts: { busyOnly?: boolean } = {}): Promise<{ thread: number; running: string | null } | null> {
    const threads = [...this.threads].filter((t) => !t.ending);
    const victim = threads.find((t) => t.running !== null) ?? (opts.busyOnly ? undefined : threads[0]);
    if (!victim) return null;
    victim.ending = true;
    const running = victim.running;
    await victim.worker.terminate();
    return { thread: victim.id, running };
  }

  /** The threads' WebGPU devices: the adapter, the losses, the memory in use (nothing on wasm). */
  async gpu(): Promise<PoolGpu> {
    const threads = [...this.threads];
    const states = await Promise.all(
      threads.map(async (t) => ({ ...(await t.api.gpu()), bytes: await t.api.gpuBufferBytes() })),
    );
    return {
      adapter: states.find((s) => s.adapter)?.adapter,
      lost: states.flatMap((s, i) => (s.lost ? [`thread ${threads[i]?.id}: ${s.lost}`] : [])),
      bufferBytes: states.reduce((n, s) => n + s.bytes, 0),
    };
  }

  /** A drill (EDGESWARM_GPU_DRILLS=1): destroys every thread's WebGPU device; answers how many were destroyed. */
  async loseGpuDevices(): Promise<number> {
    const lost = await Promise.all([...this.threads].map((t) => t.api.loseGpuDevice()));
    return lost.filter(Boolean).length;
  }

  /**
   * Ends every thread, each first releasing its sessions and destroying its WebGPU device (at most
   * CLOSE_GRACE_MS), so no GPU work outlives the pool. Safe to call more than once; the models' dispose
   * calls it. (The process may still take minutes to exit after a WebGPU pool: V8 goes on compiling
   * onnxruntime-web's WebGPU WASM with TurboFan in the background, and Node's exit waits for it.)
   */
  close(): Promise<void> {
    this.closed ??= (async () => {
      this.closing = true;
      // Forgotten first, so their exits below read as the end they are, not as threads to replace.
      const threads = [...this.threads];
      this.threads.clear();
      this.idle.length = 0;
      await Promise.all(
        threads.map(async (t) => {
          let timer: ReturnType<typeof setTimeout> | undefined;
          const grace = new Promise<void>((resolve) => {
            timer = setTimeout(resolve, CLOSE_GRACE_MS);
          });
          await Promise.race([t.api.close().catch(() => undefined), t.gone, grace]).finally(() => clearTimeout(timer));
          await t.worker.terminate();
        }),
      );
    })();
    return this.closed;
  }

  private async spawn(): Promise<void> {
    const device = this.opts.device ?? "wasm";
    const workerData: ThreadData = { device, drills: this.opts.drills ?? false };
    const worker = new Worker(new URL("./thread.mjs", import.meta.url), { workerData });
    const thread: Thread = {
      id: this.nextId++,
      worker,
      api: wrap<ThreadApi>(nodeEndpoint(worker)),
      gone: new Promise<string>((resolve) => {
        worker.once("error", (error) => resolve(`crashed: ${error.message}`));
        worker.once("exit", (code) => resolve(`exited with code ${code}`));
      }),
      running: null,
    };
    this.threads.add(thread);
    // A thread that goes away when no batch is watching it is replaced all the same.
    void thread.gone.then((why) => {
      if (this.threads.has(thread)) {
        this.opts.log(`thread ${thread.id} ${why}; replacing it`);
        this.retire(thread, why);
      }
    });
    try {
      for (const spec of this.specs) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const loaded = await Promise.race([
          // One WASM thread each: the pool's threads are the parallelism. No fallback: a thread that cannot
          // start on the device the worker chose fails its start, and the worker says why.
          thread.api.load(spec, {
            registryUrl: this.opts.registryUrl,
            devices: [device],
            numThreads: 1,
            fallback: false,
          }),
          thread.gone.then((why) => {
            throw new Error(`thread ${thread.id} ${why} while loading ${spec.name}`);
          }),
          new Promise<never>((_, reject) => {
            timer = setTimeout(
              () => reject(new Error(`loading ${spec.name} took over ${LOAD_TIMEOUT_MS} ms`)),
              LOAD_TIMEOUT_MS,
            );
          }),
        ]).finally(() => clearTimeout(timer));
        this.infos.set(spec.name, loaded);
      }
    } catch (error) {
      // A thread that cannot load the models takes no work: it goes, and the caller says what next.
      this.threads.delete(thread);
      void worker.terminate();
      throw error;
    }
    this.release(thread);
  }

  /** Forgets a thread, ends it, and starts another in its place. */
  private retire(thread: Thread, why: string): void {
    if (!this.threads.delete(thread)) return;
    const at = this.idle.indexOf(thread);
    if (at >= 0) this.idle.splice(at, 1);
    void thread.worker.terminate();
    this.replace(thread.id, why, 0);
  }

  /** Starts a thread in place of one that went; a start that fails is tried again, backing off to 30 s. */
  private replace(id: number, why: string, failures: number): void {
    if (this.closing) return;
    this.spawn().then(
      () => this.opts.log(`thread ${id} replaced (${why})`),
      (error: Error) => {
        const delay = Math.min(30_000, 1_000 * 2 ** failures);
        this.opts.log(`could not replace thread ${id}: ${error.message}; trying again in ${delay} ms`);
        setTimeout(() => this.replace(id, why, failures + 1), delay).unref();
      },
    );
  }

  /** A free thread; a batch that waits longer than `timeoutMs` for one fails back rather than waiting on. */
  private acquire(timeoutMs: number): Promise<Thread> {
    const free = this.idle.shift();
    if (free) return Promise.resolve(free);
    return new Promise((resolve, reject) => {
      const waiter = {
        give: (thread: Thread) => {
          clearTimeout(waiter.timer);
          resolve(thread);
        },
        timer: setTimeout(() => {
          this.waiting.splice(this.waiting.indexOf(waiter), 1);
          reject(new Error(`no thread was free within ${timeoutMs} ms (${this.threads.size} threads running)`));
        }, timeoutMs),
      };
      this.waiting.push(waiter);
    });
  }

  private release(thread: Thread): void {
    thread.running = null;
    if (!this.threads.has(thread)) return;
    const next = this.waiting.shift();
    if (next) next.give(thread);
    else this.idle.push(thread);
  }
}
