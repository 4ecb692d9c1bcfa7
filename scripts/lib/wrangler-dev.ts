// Starts the real coordinator (`wrangler dev --local`, workerd with SQLite-backed Durable Objects) on a
// loopback port for `npm start`, the end-to-end tests and the benchmarks, and stops it. State persists
// in `persistTo`, so a test can stop and start it again and find what was accepted.
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** How these scripts run wrangler: its CLI from node_modules, in the repo, without metrics, prompts or `cf` fetches. */
export const WRANGLER = {
  bin: `${ROOT}/node_modules/wrangler/bin/wrangler.js`,
  cwd: ROOT,
  /** The coordinator's config; a bench's own Worker (bench/ceiling-worker.js) comes with a config of its own. */
  config: `${ROOT}wrangler.toml`,
  env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false", CI: "true" },
};

/** A Worker serving on a loopback port: the coordinator, or a bench's own Worker. */
export interface Server {
  url: string;
  port: number;
  /** A DevTools inspector for the Worker (CPU profiles: bench/cpu-profile.ts), where it runs with one. */
  inspectorPort?: number;
  stop(): Promise<void>;
}

export interface Coordinator extends Server {
  /** wrangler's DevTools inspector for the coordinator's worker. */
  inspectorPort: number;
}

export interface ServerOptions {
  /** State persists here (Durable Objects' SQLite). */
  persistTo: string;
  vars?: Record<string, string>;
  /** A wrangler config other than the coordinator's (WRANGLER.config). */
  config?: string;
}

/** Starts a Worker as the benches and tests do: this file's wrangler dev, or scripts/lib/miniflare-server.ts. */
export type StartServer<S extends Server> = (opts: ServerOptions) => Promise<S>;

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

export async function startCoordinator(
  opts: ServerOptions & {
    port?: number;
    timeoutMs?: number;
    /** Print wrangler's own output as it comes (npm start), instead of keeping it for error reports. */
    echo?: boolean;
  },
): Promise<Coordinator> {
  if (opts.port !== undefined && !(await portIsFree(opts.port))) {
    throw new Error(
      `port ${opts.port} is already in use (another coordinator running?); stop it or choose another port`,
    );
  }
  // A port found free can be taken before wrangler binds it (other tests start servers beside this one): with
  // no port asked for, try others.
  for (let attempt = 1; ; attempt++) {
    try {
      return await launch(opts, opts.port ?? (await freePort()), await freePort());
    } catch (error) {
      if (attempt >= 3 || opts.port !== undefined || !(error instanceof PortTaken)) throw error;
    }
  }
}

/** wrangler dev could not bind a port it was given. */
class PortTaken extends Error {}

async function launch(
  opts: Parameters<typeof startCoordinator>[0],
  port: number,
  inspector: number,
): Promise<Coordinator> {
  const vars = Object.entries(opts.vars ?? {}).flatMap(([k, v]) => ["--var", `${k}:${v}`]);
  const child = spawn(
    process.execPath,
    [
      WRANGLER.bin,
      "dev",
      ...(opts.config ? ["--config", opts.config] : []),
      "--local",
      "--ip",
      "127.0.0.1",
      "--port",
      String(port),
      "--inspector-port",
      String(inspector),
      "--persist-to",
      opts.persistTo,
      "--show-interactive-dev-session=false",
      "--log-level",
      opts.echo ? "info" : "warn",
      ...vars,
    ],
    {
      cwd: WRANGLER.cwd,
      env: WRANGLER.env,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    },
  );
  let output = "";
  const collect = (d: Buffer) => {
    if (opts.echo) process.stdout.write(d);
    else output += d;
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + (opts.timeoutMs ?? 45_000);
  while (Date.now() < deadline) {
    if (child.exitCode !== null) {
      const message = `wrangler dev exited (${child.exitCode}):\n${output}`;
      throw /Address already in use/.test(output) ? new PortTaken(message) : new Error(message);
    }
    try {
      const res = await fetch(`${url}/healthz`);
      if (res.ok) return { url, port, inspectorPort: inspector, stop: () => stopProcess(child) };
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  await stopProcess(child);
  throw new Error(`wrangler dev did not answer /healthz within the timeout:\n${output}`);
}

/** Stops the process group (wrangler and its workerd child), SIGTERM then SIGKILL. */
export async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const signal = (sig: NodeJS.Signals) => {
    try {
      process.kill(-(child.pid as number), sig);
    } catch {
      // already gone
    }
  };
  signal("SIGTERM");
  const timer = setTimeout(() => signal("SIGKILL"), 5_000);
  await exited;
  clearTimeout(timer);
}
