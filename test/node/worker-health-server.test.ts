// The worker's health server on a first run: it listens on loopback unless told otherwise, and a port
// already taken (a second worker started as the README shows) is an error that names --port
// (test/e2e/worker-first-run.test.ts runs the worker command into one).
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { createServer, type Server } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { PortInUseError, startHealthServer } from "../../worker-gpu/health-server.ts";
import { parseOptions, type WorkerOptions } from "../../worker-gpu/options.ts";
import { WorkerMetrics } from "../../worker-gpu/worker-metrics.ts";

const opened: Server[] = [];
const closeAll = () => Promise.all(opened.splice(0).map((s) => new Promise((r) => s.close(r))));
afterEach(closeAll);

/** A port some other process holds, as a first worker would. */
async function takenPort(): Promise<number> {
  const blocker = createServer();
  opened.push(blocker);
  blocker.listen(0, "127.0.0.1");
  await once(blocker, "listening");
  return (blocker.address() as AddressInfo).port;
}

const source = { metrics: new WorkerMetrics(), ready: () => ({ ready: true, detail: {} }) };

describe("the worker's health server", () => {
  it("listens on 127.0.0.1 unless --host or EDGESWARM_HOST says otherwise", async () => {
    const options = parseOptions([], {}) as WorkerOptions;
    expect(options.host).toBe("127.0.0.1");
    expect((parseOptions(["--host", "0.0.0.0"], {}) as WorkerOptions).host).toBe("0.0.0.0");
    expect((parseOptions([], { EDGESWARM_HOST: "::" }) as WorkerOptions).host).toBe("::");
    const server = await startHealthServer(source, 0, options.host);
    opened.push(server as unknown as Server);
    expect((server.address() as AddressInfo).address).toBe("127.0.0.1");
    const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/healthz`);
    expect(await res.json()).toEqual({ status: "ok" });
  });

  it("turns a taken port into an error that says to pass --port", async () => {
    const port = await takenPort();
    const failure = await startHealthServer(source, port, "127.0.0.1").catch((e: Error) => e);
    expect(failure).toBeInstanceOf(PortInUseError);
    expect((failure as Error).message).toBe(
      `port ${port} on 127.0.0.1 is already in use (another edgeswarm-worker?): give this worker its own health port with --port N (or EDGESWARM_PORT), or --port 0 for none`,
    );
  });
});
