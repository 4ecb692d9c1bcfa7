// What bench/coordinator.ts and bench/swarm.ts share: a keep-alive HTTP client, a session that starts the
// coordinator, stops it after and writes the report's header and file, closed-loop callers over a warm-up
// and a measured window, and result rows with percentiles and number formats. Not a test.

import { readdirSync, readFileSync, statSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import os from "node:os";
import { performance } from "node:perf_hooks";
import {
  type Coordinator,
  type Server,
  type ServerOptions,
  type StartServer,
  startCoordinator,
} from "../scripts/lib/wrangler-dev.ts";

export type HttpAnswer = { status: number; text: string } | { error: string };

/**
 * Keep-alive sockets for the callers. node:http rather than fetch: on two cores the client shares the CPU
 * with workerd, and fetch's extra cost showed as a third fewer single-input calls/s (about 230 against 310).
 */
export class HttpClient {
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

  /** `timeoutMs`: a call unanswered this long ends as an error, so a stuck server shows in the table, not as a hang. */
  constructor(private readonly timeoutMs: number) {}

  /** One HTTP exchange (a JSON body when given); resolves with the status and body, or an error code. */
  request(base: URL, method: string, path: string, body?: string): Promise<HttpAnswer> {
    return new Promise((resolve) => {
      const req = http.request(
        {
          host: base.hostname,
          port: base.port,
          path,
          method,
          agent: this.agent,
          headers: body
            ? { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) }
            : { "Content-Length": 0 },
          timeout: this.timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (chunk: Buffer) => chunks.push(chunk));
          res.on("error", (error) => resolve({ error: `network: ${error.message}` }));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
        },
      );
      req.on("timeout", () => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)));
      req.on("error", (error: NodeJS.ErrnoException) => resolve({ error: error.code ?? error.message }));
      req.end(body);
    });
  }

  destroy(): void {
    this.agent.destroy();
  }
}

/**
 * One bench run: a temporary state folder and the servers it starts (`run` stops and removes them, Ctrl-C
 * included), with what the report says of the machine and where it is written.
 */
export class BenchSession {
  /** The stop of each server started and not stopped yet. */
  private readonly running = new Set<() => Promise<void>>();
  private constructor(
    readonly persistTo: string,
    readonly wranglerVersion: string,
  ) {}

  /**
   * Runs `body` in a fresh session; afterwards (or on SIGINT or SIGTERM) `stopFirst` (the bench's workers), then the
   * client's sockets, the servers still running and the state folder go. Resolves with `body`'s exit code.
   */
  static async run(
    tmpPrefix: string,
    client: HttpClient,
    stopFirst: () => unknown,
    body: (session: BenchSession) => Promise<number>,
  ): Promise<number> {
    const session = new BenchSession(await mkdtemp(`${os.tmpdir()}/${tmpPrefix}`), packageVersion("wrangler"));
    const cleanup = async () => {
      await stopFirst();
      client.destroy();
      for (const stop of [...session.running]) await stop();
      await rm(session.persistTo, { recursive: true, force: true });
    };
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      process.once(signal, () => void cleanup().finally(() => process.exit(signal === "SIGINT" ? 130 : 143)));
    }
    try {
      return await body(session);
    } finally {
      await cleanup();
    }
  }

  /**
   * Starts the coordinator under wrangler dev with open auth and `models` (and `vars`, SCALING say), then `ready`
   * (connecting workers, say). On a failure of either, says so on stderr and resolves undefined.
   */
  startCoordinator(
    models: readonly unknown[],
    ready?: (coordinator: Coordinator) => Promise<void>,
    vars: Record<string, string> = {},
  ): Promise<Coordinator | undefined> {
    return this.startServer(startCoordinator, { vars: { ...vars, ...coordinatorVars(models) } }, ready);
  }

  /**
   * Starts a Worker with `start` (wrangler dev, or workerd through Miniflare), its state in a folder of its own,
   * then `ready`; it stops with the session if it is still running. On a failure of either, says so on stderr
   * and resolves undefined.
   */
  async startServer<S extends Server>(
    start: StartServer<S>,
    opts: Omit<ServerOptions, "persistTo">,
    ready?: (server: S) => Promise<void>,
  ): Promise<S | undefined> {
    try {
      const server = await start({ ...opts, persistTo: await mkdtemp(`${this.persistTo}/server-`) });
      const stop = async () => {
        this.running.delete(stop);
        await server.stop();
      };
      this.running.add(stop);
      const tracked = { ...server, stop };
      await ready?.(tracked);
      return tracked;
    } catch (error) {
      console.error(
        `${opts.config ? `the Worker of ${opts.config}` : "the coordinator"} did not start: ${String(error)}`,
      );
      return undefined;
    }
  }

  /**
   * The report's title and the lines every bench opens with: machine, Node and wrangler (`runtime` adds to
   * that line), date and the command that made it (Markdown).
   */
  reportHeader(title: string, runtime: string, command: string): string[] {
    const cpus = os.cpus();
    return [
      `# ${title}`,
      "",
      `- Machine: ${cpus[0]?.model.trim() ?? "unknown CPU"} × ${cpus.length}, ${os.type()} ${os.release()}, ${Math.round(os.totalmem() / 2 ** 30)} GiB`,
      `- Node ${process.version}, wrangler ${this.wranglerVersion} (\`wrangler dev --local\`, loopback)${runtime}`,
      `- Date: ${new Date().toISOString()}`,
      `- Command: ${command}`,
    ];
  }

  /** Prints the report on stdout and writes it to `file` (bench/results/…), making its folder if need be. */
  async publish(text: string, file: URL): Promise<void> {
    process.stdout.write(text);
    await mkdir(new URL("./", file), { recursive: true });
    await writeFile(file, text);
  }
}

/**
 * Closed loop: `callers` callers each start a call as soon as their last one is answered. Calls that end
 * inside the measured window (after `warmupMs`, for `measureMs`) are recorded; the warm-up and calls still
 * open when it closes are not. `atStart` and `atEnd` run on timers as the window opens and closes.
 */
export async function closedLoop<T>(opts: {
  callers: number;
  warmupMs: number;
  measureMs: number;
  call: () => Promise<T>;
  record: (result: T, latencyMs: number) => void;
  atStart?: () => void;
  atEnd?: () => void;
}): Promise<void> {
  const measureFrom = performance.now() + opts.warmupMs;
  const measureTo = measureFrom + opts.measureMs;
  const marks = [
    setTimeout(() => opts.atStart?.(), opts.warmupMs),
    setTimeout(() => opts.atEnd?.(), opts.warmupMs + opts.measureMs),
  ];
  const caller = async () => {
    while (performance.now() < measureTo) {
      const started = performance.now();
      const result = await opts.call();
      const ended = performance.now();
      if (ended >= measureFrom && ended <= measureTo) opts.record(result, ended - started);
    }
  };
  await Promise.all(Array.from({ length: opts.callers }, caller));
  marks.forEach(clearTimeout);
}

/** One scenario's measurements; each bench extends it with its own. */
export class BenchRow {
  /** Round trip of each answered call, ms. */
  readonly latencies: number[] = [];
  /** The coordinator's `timings.queued_ms` of each answered call. */
  readonly queuedMs: number[] = [];
  /** Failed calls by kind. */
  readonly errors = new Map<string, number>();

  constructor(
    readonly scenario: string,
    readonly callers: number,
    /** Items per call: what a caller sends. */
    readonly inputsPerCall: number,
    public seconds: number,
  ) {}

  recordError(error: string): void {
    this.errors.set(error, (this.errors.get(error) ?? 0) + 1);
  }

  errorCount(): number {
    return [...this.errors.values()].reduce((a, b) => a + b, 0);
  }

  /** "3 × kind, 1 × other", or "" when there were none. */
  errorList(): string {
    return [...this.errors].map(([kind, n]) => `${n} × ${kind}`).join(", ");
  }

  itemsPerS(): number {
    return (this.latencies.length * this.inputsPerCall) / this.seconds;
  }
}

/**
 * wrangler dev reloads the coordinator when a file it bundles changes, dropping sockets and calls mid-run
 * (others may be editing the repo while a bench runs). The newest mtime under these folders tells afterwards.
 */
const SOURCE_DIRS = ["../edge/", "../shared/"].map((dir) => new URL(dir, import.meta.url));

export function newestSourceMtime(dirs: readonly URL[] = SOURCE_DIRS): number {
  let newest = 0;
  for (const dir of dirs) {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const url = new URL(entry.isDirectory() ? `${entry.name}/` : entry.name, dir);
      newest = Math.max(newest, entry.isDirectory() ? newestSourceMtime([url]) : statSync(url).mtimeMs);
    }
  }
  return newest;
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number;
}

export const fmt = (n: number | undefined, digits = 1) =>
  n !== undefined && Number.isFinite(n) ? n.toFixed(digits) : "n/a";
export const fmtRate = (n: number) => Math.round(n).toLocaleString("en-US");

/** The coordinator's vars for a bench: open auth and these models. */
export function coordinatorVars(models: readonly unknown[]): Record<string, string> {
  return { AUTH: "open", MODELS: JSON.stringify({ models }) };
}

/** The version of a package installed in node_modules ("4.86.0"), for the reports' headers. */
export function packageVersion(name: string): string {
  const file = new URL(`../node_modules/${name}/package.json`, import.meta.url);
  return (JSON.parse(readFileSync(file, "utf8")) as { version: string }).version;
}

/** "1.23, 1.10, 0.98": the 1, 5 and 15 minute load averages, for the reports of a shared machine. */
export const loadAverage = () =>
  os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(", ");

// Processes from /proc (Linux; elsewhere empty), for the benches' CPU shares.

/** /proc counts CPU time in USER_HZ ticks, 100 on every Linux build Node supports. */
export const TICKS_PER_S = 100;

export interface ProcStat {
  ppid: number;
  ticks: number;
  /** User+system ticks of its children that exited and were waited for (a fork like Redis's AOF rewrite). */
  reapedTicks: number;
  /** The command name, as /proc/<pid>/stat gives it ("workerd", "node", "redis-server"). */
  name: string;
}

/** ppid and user+system ticks of every process /proc shows now. */
export function readProcs(): Map<number, ProcStat> {
  const procs = new Map<number, ProcStat>();
  let names: string[] = [];
  try {
    names = readdirSync("/proc");
  } catch {
    return procs;
  }
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      // The command name may hold spaces and parentheses: fields start after the last ")".
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const command = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      procs.set(Number(name), {
        ppid: Number(fields[1]),
        ticks: Number(fields[11]) + Number(fields[12]),
        reapedTicks: Number(fields[13]) + Number(fields[14]),
        name: command,
      });
    } catch {
      // exited while we looked
    }
  }
  return procs;
}

/** `root` and every process below it. */
export function processTree(procs: Map<number, ProcStat>, root: number): Set<number> {
  const out = new Set<number>([root]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, p] of procs) {
      if (!out.has(pid) && out.has(p.ppid)) {
        out.add(pid);
        grew = true;
      }
    }
  }
  return out;
}

/** CPU seconds used so far by this process's descendants, summed by `group` (given each one's pid and command
 * name, e.g. "workerd", "redis-server"). A descendant's children that exited count with it, so a fork that ends
 * inside a window does not take its time out of the window's difference. */
export function descendantCpuBy(group: (pid: number, name: string) => string): Map<string, number> {
  const procs = readProcs();
  const tree = processTree(procs, process.pid);
  tree.delete(process.pid);
  const sums = new Map<string, number>();
  for (const pid of tree) {
    const p = procs.get(pid);
    if (!p) continue;
    const key = group(pid, p.name);
    sums.set(key, (sums.get(key) ?? 0) + (p.ticks + p.reapedTicks) / TICKS_PER_S);
  }
  return sums;
}

/** A process's command line, arguments joined by spaces ("" once it has exited). */
export function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
  } catch {
    return "";
  }
}
