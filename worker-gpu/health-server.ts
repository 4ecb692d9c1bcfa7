// The worker's small HTTP server for its operators: /healthz (alive), /readyz (models loaded and
// every socket connected), /metrics (Prometheus text from prom-client); with EDGESWARM_GPU_DRILLS=1 also
// POST /drills/<name> (lose-gpu-device), which tests use to break the worker's GPU on purpose.
import { createServer, type Server } from "node:http";
import type { WorkerMetrics } from "./worker-metrics.ts";

export interface HealthSource {
  ready(): { ready: boolean; detail: Record<string, unknown> };
  metrics: WorkerMetrics;
  /** Only when the operator (or a test) set EDGESWARM_GPU_DRILLS=1: a worker in service has none. */
  drills?: Record<string, () => Promise<unknown>>;
}

export async function startHealthServer(source: HealthSource, port: number, host: string): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { "Content-Type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (path === "/healthz") return json(200, { status: "ok" });
    if (path === "/readyz") {
      const { ready, detail } = source.ready();
      return json(ready ? 200 : 503, { status: ready ? "ready" : "not_ready", ...detail });
    }
    if (path === "/metrics") {
      source.metrics.registry.metrics().then(
        (text) => {
          res.writeHead(200, { "Content-Type": source.metrics.registry.contentType });
          res.end(text);
        },
        (error: Error) => json(500, { error: { code: "internal_error", message: error.message } }),
      );
      return;
    }
    const drill = path?.startsWith("/drills/") ? source.drills?.[path.slice("/drills/".length)] : undefined;
    if (drill && req.method === "POST") {
      drill().then(
        (outcome) => json(200, outcome),
        (error: Error) => json(500, { error: { code: "internal_error", message: error.message } }),
      );
      return;
    }
    json(404, { error: { code: "not_found", message: `no route ${path}; try /healthz, /readyz or /metrics` } });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error: NodeJS.ErrnoException) =>
      reject(error.code === "EADDRINUSE" ? new PortInUseError(port, host) : error),
    );
    server.listen(port, host, () => resolve());
  });
  return server;
}

/** The health port is taken, most often by a worker already running here: the message says what to pass. */
export class PortInUseError extends Error {
  override name = "PortInUseError";
  constructor(port: number, host: string) {
    super(
      `port ${port} on ${host} is already in use (another edgeswarm-worker?): give this worker its own health port with --port N (or EDGESWARM_PORT), or --port 0 for none`,
    );
  }
}
