// The worker's own metrics (prom-client) and the figures its status line prints; on webgpu also the
// adapter and the GPU memory our buffers hold, read from the thread pool at each scrape.
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { GpuReport } from "./worker.ts";

export class WorkerMetrics {
  readonly registry = new Registry();
  private readonly batches = new Counter({
    name: "edgeswarm_worker_batches_total",
    help: "Batches completed by this worker.",
    labelNames: ["model", "device"],
    registers: [this.registry],
  });
  private readonly items = new Counter({
    name: "edgeswarm_worker_items_total",
    help: "Items answered by this worker, by outcome.",
    labelNames: ["model", "outcome"],
    registers: [this.registry],
  });
  private readonly seconds = new Histogram({
    name: "edgeswarm_worker_batch_seconds",
    help: "Time to run one batch (tokenise, one inference run, post-process).",
    labelNames: ["model", "device"],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly connected = new Gauge({
    name: "edgeswarm_worker_connected",
    help: "1 while the model's socket to the coordinator is open.",
    labelNames: ["model"],
    registers: [this.registry],
  });
  private batchCount = 0;
  private itemCount = 0;
  private windowStart = Date.now();
  private windowItems = 0;

  constructor(gpu?: () => Promise<GpuReport>) {
    collectDefaultMetrics({ register: this.registry });
    if (gpu) this.watchGpu(gpu);
  }

  private watchGpu(gpu: () => Promise<GpuReport>): void {
    const registers = [this.registry];
    // WebGPU cannot tell device memory in use; the bytes in the buffers onnxruntime made are what grows
    // toward an out-of-memory (weights, activations, its buffer cache), so that is the figure to watch.
    new Gauge({
      name: "edgeswarm_worker_gpu_buffer_bytes",
      help: "Bytes in WebGPU buffers the worker's threads hold (weights, activations, onnxruntime's buffer cache).",
      registers,
      async collect() {
        this.set((await gpu()).bufferBytes);
      },
    });
    new Gauge({
      name: "edgeswarm_worker_gpu_info",
      help: "The WebGPU adapter the worker runs on (1); software=true for SwiftShader.",
      labelNames: ["vendor", "architecture", "device", "description", "backend", "software"],
      registers,
      async collect() {
        const { adapter: a } = await gpu();
        this.reset();
        const labels = { vendor: a.vendor, architecture: a.architecture, device: a.device, description: a.description };
        this.set({ ...labels, backend: a.backend ?? "", software: String(a.software ?? false) }, 1);
      },
    });
    new Gauge({
      name: "edgeswarm_worker_gpu_devices_lost",
      help: "Threads whose WebGPU device was lost; their models run on wasm since.",
      registers,
      async collect() {
        this.set((await gpu()).lost.length);
      },
    });
  }

  recordBatch(model: string, device: string, ok: number, failed: number, ms: number): void {
    this.batches.inc({ model, device });
    this.items.inc({ model, outcome: "ok" }, ok);
    if (failed > 0) this.items.inc({ model, outcome: "error" }, failed);
    this.seconds.observe({ model, device }, ms / 1000);
    this.batchCount++;
    this.itemCount += ok + failed;
    this.windowItems += ok + failed;
  }

  /** Totals, and items/s since the previous call. */
  takeStatus(): { batches: number; items: number; itemsPerSecond: number } {
    const now = Date.now();
    const rate = this.windowItems / Math.max(0.001, (now - this.windowStart) / 1000);
    this.windowStart = now;
    this.windowItems = 0;
    return { batches: this.batchCount, items: this.itemCount, itemsPerSecond: rate };
  }
}
