// Starts the real worker command (`edgeswarm-worker`) as a child process for `npm start`, the
// end-to-end tests and the benchmarks, waits until every model's socket is connected, and stops or kills it.
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const BIN = fileURLToPath(new URL("../../worker-gpu/bin/edgeswarm-worker.mjs", import.meta.url));

export interface WorkerProcess {
  child: ChildProcess;
  output(): string;
  /** What it wrote to stderr alone (a native library's complaints land there). */
  stderr(): string;
  /** Resolves when the process has printed a line matching `pattern`. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<void>;
  exited: Promise<number | null>;
}

export function startWorker(args: readonly string[], env: Record<string, string> = {}): WorkerProcess {
  return startNodeProcess([BIN, ...args], env);
}

/** Any Node command line (a script and its arguments) as a child process whose output can be waited on. */
export function startNodeProcess(nodeArgs: readonly string[], env: Record<string, string> = {}): WorkerProcess {
  const child = spawn(process.execPath, nodeArgs, {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  let stderr = "";
  const listeners = new Set<() => void>();
  const collect = (d: Buffer) => {
    output += d;
    for (const l of listeners) l();
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", (d: Buffer) => {
    stderr += d;
    collect(d);
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const waitFor = (pattern: RegExp, timeoutMs = 30_000) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (pattern.test(output)) {
          listeners.delete(check);
          clearTimeout(timer);
          resolve();
        }
      };
      const timer = setTimeout(() => {
        listeners.delete(check);
        reject(new Error(`${nodeArgs.join(" ")} did not print ${pattern} within ${timeoutMs} ms:\n${output}`));
      }, timeoutMs);
      listeners.add(check);
      child.once("exit", (code) => {
        if (!pattern.test(output))
          reject(new Error(`${nodeArgs.join(" ")} exited (${code}) before printing ${pattern}:\n${output}`));
      });
      check();
    });
  return { child, output: () => output, stderr: () => stderr, waitFor, exited };
}

/** Ends each process still running (SIGTERM) and waits until all have exited. */
export async function stopAll(processes: readonly WorkerProcess[]): Promise<void> {
  for (const p of processes) {
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGTERM");
  }
  await Promise.all(processes.map((p) => p.exited));
}
