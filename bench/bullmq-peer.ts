// The coordinator benchmark's peer: the same three shapes of work on BullMQ over Redis, in the same run, so
// every table carries its own ratio (issue 15). Redis runs with `appendonly yes` and `appendfsync everysec`
// (durability close to the queue object's SQLite), is Debian's `redis-server` (installed here when missing
// and we are root), and its CPU is read from /proc like workerd's. Workers answer at once with the input.
// Not a test.

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import { isDeepStrictEqual } from "node:util";
import { Queue, QueueEvents, Worker } from "bullmq";
import { freePort, stopProcess } from "../scripts/lib/wrangler-dev.ts";

const QUEUE = "echo";
/** Like the coordinator's two echo workers of 4 × 64 slots: two BullMQ workers, each taking 64 jobs at once. */
export const BULLMQ_WORKERS = 2;
export const BULLMQ_CONCURRENCY = 64;

export interface RedisServer {
  pid: number;
  port: number;
  version: string;
  stop(): Promise<void>;
}

/** `redis-server` on loopback with AOF every second, in a temporary folder; installs Debian's package if need be. */
export async function startRedis(): Promise<RedisServer> {
  ensureRedisInstalled();
  const dir = await mkdtemp(`${os.tmpdir()}/edgeswarm-bench-redis-`);
  const port = await freePort();
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", ""];
  const child: ChildProcess = spawn(
    "redis-server",
    [...args, "--appendonly", "yes", "--appendfsync", "everysec", "--daemonize", "no"],
    {
      stdio: ["ignore", "ignore", "inherit"],
      detached: true,
    },
  );
  const version = execFileSync("redis-server", ["--version"], { encoding: "utf8" }).match(/v=(\S+)/)?.[1] ?? "?";
  const queue = new Queue(QUEUE, { connection: { host: "127.0.0.1", port } });
  try {
    await queue.waitUntilReady();
  } finally {
    await queue.close();
  }
  return {
    pid: child.pid as number,
    port,
    version,
    async stop() {
      await stopProcess(child);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function ensureRedisInstalled(): void {
  try {
    execFileSync("redis-server", ["--version"], { stdio: "ignore" });
    return;
  } catch {
    // not installed
  }
  if (process.getuid?.() !== 0) {
    throw new Error("the BullMQ peer row needs redis-server: `sudo apt-get install -y redis-server`, then run again");
  }
  console.error("installing redis-server (apt-get) for the BullMQ peer row…");
  execFileSync("apt-get", ["install", "-y", "-qq", "redis-server"], { stdio: "inherit" });
}

/** Kept a minute after completing, as the coordinator keeps results: removed at once, a job can be gone before
 * `waitUntilFinished` looks ("Missing key for job"). */
const JOB_OPTS = { removeOnComplete: { age: 60 } };

export type PeerCall = { ok: true } | { ok: false; error: string };

/** A queue, its events and the echo workers on one Redis: what the peer rows call. */
export class BullmqPeer {
  private constructor(
    private readonly queue: Queue,
    private readonly events: QueueEvents,
    private readonly workers: Worker[],
    private readonly timeoutMs: number,
  ) {}

  static async start(redis: RedisServer, timeoutMs: number): Promise<BullmqPeer> {
    const connection = { host: "127.0.0.1", port: redis.port };
    const queue = new Queue(QUEUE, { connection });
    const events = new QueueEvents(QUEUE, { connection });
    const workers = Array.from(
      { length: BULLMQ_WORKERS },
      () => new Worker(QUEUE, async (job) => job.data, { connection, concurrency: BULLMQ_CONCURRENCY }),
    );
    // Every waiting call listens on both: hundreds at once are the point here, not a leak.
    queue.setMaxListeners(0);
    events.setMaxListeners(0);
    await Promise.all([queue.waitUntilReady(), events.waitUntilReady(), ...workers.map((w) => w.waitUntilReady())]);
    return new BullmqPeer(queue, events, workers, timeoutMs);
  }

  /** One job per input (addBulk when there are several), answered once every one has finished with its input. */
  async call(inputs: unknown[]): Promise<PeerCall> {
    try {
      const jobs =
        inputs.length === 1
          ? [await this.queue.add(QUEUE, inputs[0], JOB_OPTS)]
          : await this.queue.addBulk(inputs.map((data) => ({ name: QUEUE, data, opts: JOB_OPTS })));
      const outputs = await Promise.all(jobs.map((job) => job.waitUntilFinished(this.events, this.timeoutMs)));
      return isDeepStrictEqual(outputs, inputs) ? { ok: true } : { ok: false, error: "outputs differ from inputs" };
    } catch (error) {
      return { ok: false, error: ((error as Error).message.split("\n")[0] ?? "error").replace(/\d+/g, "N") };
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.close()));
    await this.events.close();
    await this.queue.obliterate({ force: true }).catch(() => {});
    await this.queue.close();
  }
}
