// The coordinator benchmark (`npm run bench:coordinator`): runs the real coordinator on loopback with echo
// workers that answer at once (bench/echo-worker.ts), drives one model queue with keep-alive callers, and prints
// calls/s, items/s, the added latency and the coordinator's CPU per item and per call (from /proc) as Markdown
// (also written to bench/results/coordinator.md). It does so on two paths, `wrangler dev` and workerd run through
// Miniflare's API without wrangler's dev proxy (scripts/lib/miniflare-server.ts), each next to the runtime's ceiling on
// that path (bench/ceiling-worker.js: one Durable Object, one SQLite write a call), and then BullMQ on Redis doing
// the same work in the same run (bench/bullmq-peer.ts). `-- --no-peer` leaves the peer out, `-- --no-miniflare`
// the Miniflare path; `-- --only TEXT` runs only the scenarios whose name holds TEXT ("single", "4 shards");
// `-- --profile FILE` writes the coordinator's CPU profile over EdgeSwarm's scenarios under wrangler dev
// (bench/cpu-profile.ts). Not a test.

import { writeFile } from "node:fs/promises";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";
import { unstable_readConfig } from "wrangler";
import { entryArg, startMiniflare } from "../scripts/lib/miniflare-server.ts";
import { type Server, type StartServer, startCoordinator, WRANGLER } from "../scripts/lib/wrangler-dev.ts";
import type { ModelConfig, Timings } from "../shared/index.ts";
import {
  BenchRow,
  BenchSession,
  closedLoop,
  commandLine,
  coordinatorVars,
  descendantCpuBy,
  fmt,
  fmtRate,
  HttpClient,
  packageVersion,
  percentile,
} from "./bench-kit.ts";
import { BULLMQ_CONCURRENCY, BULLMQ_WORKERS, BullmqPeer, type RedisServer, startRedis } from "./bullmq-peer.ts";
import { startCpuProfile, topSelfTime, writeCpuProfile } from "./cpu-profile.ts";
import { EchoWorker, WORKER_CONCURRENT_BATCHES, WORKER_MAX_BATCH, workerTotals } from "./echo-worker.ts";

const MODEL = {
  name: "echo",
  task: "tensor",
  max_batch_size: 64,
  max_queue_delay_ms: 2,
  max_queue_size: 100_000,
  max_inputs_per_request: 64,
} satisfies Partial<ModelConfig>;
/** The same queue spread over shards (docs/operations.md, "Sharded queues"), driven by the same scenarios. */
const SHARDS = 4;
const SHARDED = { ...MODEL, name: "echo-sharded", shards: SHARDS } satisfies Partial<ModelConfig>;
const WORKERS = 2;
/** Each closed loop: a warm-up, then the measured window. */
const WINDOW = { warmupMs: 2_000, measureMs: 8_000 };
const LOW_LOAD_WARMUP_CALLS = 20;
const LOW_LOAD_CALLS = 200;
/** A call unanswered this long counts as an error, so a stuck coordinator shows in the table, not as a hang. */
const CALL_TIMEOUT_MS = 10_000;
/** Low load (warm-up included) stops early past this, whatever the count. */
const LOW_LOAD_MAX_MS = 20_000;
const RESULTS_FILE = new URL("./results/coordinator.md", import.meta.url);
const CEILING_SCRIPT = fileURLToPath(new URL("./ceiling-worker.js", import.meta.url));
/** `-- --profile FILE`: a CPU profile of the coordinator over EdgeSwarm's scenarios (its hot spots printed). */
const argValue = (flag: string) => ((i) => (i >= 0 ? process.argv[i + 1] : undefined))(process.argv.indexOf(flag));
const PROFILE_FILE = argValue("--profile");
/** `-- --only TEXT`: only the scenarios whose name contains TEXT (e.g. "single"), to profile or compare one. */
const ONLY = argValue("--only");

type CallResult = { ok: true; queuedMs: number } | { ok: false; error: string };

/** How a Worker is run, and which workerd that /proc shows runs it (the path's other processes are its proxy). */
interface Path {
  name: "wrangler dev" | "workerd (Miniflare)";
  /** What it is, for the report. */
  about: string;
  start: StartServer<Server>;
  runsWorker(commandLine: string, port: number): boolean;
}

const PATHS: readonly Path[] = [
  {
    name: "wrangler dev",
    about:
      "`wrangler dev --local`, whose proxy (its own workerd and node) sits in front of the workerd running the Worker",
    start: startCoordinator,
    // wrangler dev runs two workerd: its proxy worker on the public port (the hop) and ours behind it.
    runsWorker: (commandLine, port) => !commandLine.includes(entryArg(port)),
  },
  {
    name: "workerd (Miniflare)",
    about:
      "the Worker bundled by `wrangler deploy --dry-run` and run by workerd through Miniflare's API with wrangler.toml's bindings: no proxy, as deployed",
    start: startMiniflare,
    runsWorker: (commandLine, port) => commandLine.includes(entryArg(port)),
  },
];

class Row extends BenchRow {
  /** Batches the echo workers got in the window, and the items in them. */
  batches = 0;
  batchItems = 0;
  /** CPU seconds the server used in the window: the workerd running the Worker, or redis-server. */
  serverCpuS = Number.NaN;
  /** CPU seconds of wrangler's dev proxy (its node and proxy workerd) in the window: a hop a deployed coordinator does not have. */
  proxyCpuS = Number.NaN;

  constructor(
    readonly system: "EdgeSwarm" | "DO ceiling" | "BullMQ",
    /** Where the calls go: a Path's name, or Redis. */
    readonly path: string,
    scenario: string,
    callers: number,
    inputsPerCall: number,
  ) {
    super(scenario, callers, inputsPerCall, 0);
  }

  callsPerS(): number {
    return this.latencies.length / this.seconds;
  }

  /** Server CPU µs per answered item and per answered call. */
  cpuPerItemUs(): number {
    return (this.serverCpuS * 1e6) / (this.latencies.length * this.inputsPerCall);
  }
  cpuPerCallUs(): number {
    return (this.serverCpuS * 1e6) / this.latencies.length;
  }
}

/** Where a row's calls go and how its batches and CPU are counted. */
interface System {
  call(inputs: unknown[]): Promise<CallResult>;
  batches(): { batches: number; items: number };
  /** The server's (and proxy's) CPU seconds so far. */
  cpu(): { server: number; proxy: number };
}

const client = new HttpClient(CALL_TIMEOUT_MS);

/** One `POST /v1/infer` with wait: true, checked: 200 and every output equal to its input. */
async function infer(base: URL, model: string, inputs: unknown[]): Promise<CallResult> {
  const res = await client.request(base, "POST", "/v1/infer", JSON.stringify({ model, inputs, wait: true }));
  return "error" in res ? { ok: false, error: res.error } : checkAnswer(res.status, res.text, inputs);
}

function checkAnswer(status: number, text: string, inputs: unknown[]): CallResult {
  if (status !== 200) {
    let code = "";
    try {
      code = (JSON.parse(text) as { error?: { code?: string } }).error?.code ?? "";
    } catch {
      // not our JSON error shape: the status says enough
    }
    return { ok: false, error: `HTTP ${status} ${code}`.trim() };
  }
  const body = JSON.parse(text) as { outputs?: unknown[]; timings?: Timings };
  if (!isDeepStrictEqual(body.outputs, inputs)) return { ok: false, error: "outputs differ from inputs" };
  return { ok: true, queuedMs: body.timings?.queued_ms ?? Number.NaN };
}

let callSeq = 0;
function makeInputs(n: number): unknown[] {
  const call = callSeq++;
  // Distinct values per call and item, so a result delivered to the wrong caller or slot is caught.
  return Array.from({ length: n }, (_, item) => ({ call, item, x: [0.25, 0.5, 0.75] }));
}

function record(row: Row, result: CallResult, latencyMs: number): void {
  if (result.ok) {
    row.latencies.push(latencyMs);
    row.queuedMs.push(result.queuedMs);
  } else row.recordError(result.error);
}

/** What a row measures over its window: batches handed out (and their items), server and proxy CPU seconds. */
type WindowTotals = { batches: number; items: number; cpu: number; proxy: number };

function windowEnd(system: System): () => WindowTotals {
  const batches = system.batches();
  const cpu = system.cpu();
  return () => {
    const b = system.batches();
    const c = system.cpu();
    return {
      batches: b.batches - batches.batches,
      items: b.items - batches.items,
      cpu: c.server - cpu.server,
      proxy: c.proxy - cpu.proxy,
    };
  };
}

/** `row.callers` callers in a closed loop (see closedLoop), with batches and CPU counted over the window. */
async function loaded(system: System, row: Row): Promise<Row> {
  let end: (() => WindowTotals) | undefined;
  let measured: WindowTotals = { batches: 0, items: 0, cpu: Number.NaN, proxy: Number.NaN };
  await closedLoop({
    callers: row.callers,
    ...WINDOW,
    call: () => system.call(makeInputs(row.inputsPerCall)),
    record: (result, latencyMs) => record(row, result, latencyMs),
    atStart: () => {
      end = windowEnd(system);
    },
    atEnd: () => {
      if (end) measured = end();
    },
  });
  row.seconds = WINDOW.measureMs / 1000;
  fill(row, measured);
  return row;
}

/** One caller, one call at a time: with workers that compute nothing, the round trip is the server's cost. */
async function lowLoad(system: System, row: Row): Promise<Row> {
  const deadline = performance.now() + LOW_LOAD_MAX_MS;
  for (let i = 0; i < LOW_LOAD_WARMUP_CALLS && performance.now() < deadline; i++) {
    await system.call(makeInputs(1));
  }
  const end = windowEnd(system);
  const started = performance.now();
  for (let i = 0; i < LOW_LOAD_CALLS && performance.now() < deadline; i++) {
    const t0 = performance.now();
    const result = await system.call(makeInputs(1));
    record(row, result, performance.now() - t0);
  }
  row.seconds = (performance.now() - started) / 1000;
  fill(row, end());
  return row;
}

function fill(row: Row, m: WindowTotals): void {
  row.batches = m.batches;
  row.batchItems = m.items;
  row.serverCpuS = m.cpu;
  row.proxyCpuS = m.proxy;
}

function report(
  rows: Row[],
  notes: string[],
  session: BenchSession,
  paths: readonly Path[],
  redis: RedisServer | undefined,
): string {
  const miniflare = paths.some((p) => p.name === "workerd (Miniflare)");
  const lines = [
    ...session.reportHeader(
      "Coordinator benchmark",
      (miniflare ? `, Miniflare ${packageVersion("miniflare")} (workerd ${packageVersion("workerd")})` : "") +
        (redis ? `, Redis ${redis.version} + bullmq ${packageVersion("bullmq")}` : ""),
      "`npm run bench:coordinator` (`node --import tsx bench/coordinator.ts`)",
    ),
    `- Model: \`${JSON.stringify(MODEL)}\``,
    `- Sharded rows: the same model as \`${SHARDED.name}\` with \`shards: ${SHARDS}\`, each echo worker connected to every shard (a socket each); all shards run in the one local workerd process`,
    `- EdgeSwarm: ${WORKERS} echo workers in the bench process (WebSocket, pool gpu, max_batch_size ${WORKER_MAX_BATCH}, max_concurrent_batches ${WORKER_CONCURRENT_BATCHES}), answering at once`,
    `- Paths: ${paths.map((p) => `\`${p.name}\`, ${p.about}`).join("; ")}`,
    "- DO ceiling: `bench/ceiling-worker.js`, a Worker answering `POST /v1/infer` after one RPC to one Durable Object doing one SQLite insert: what one object's calls can reach on that path",
    redis
      ? `- BullMQ: one job per input (\`add\`, or \`addBulk\` for a call of several), ${BULLMQ_WORKERS} workers in the bench process with concurrency ${BULLMQ_CONCURRENCY} answering at once, each call awaiting its jobs (\`waitUntilFinished\`); Redis with \`appendonly yes\`, \`appendfsync everysec\``
      : "- BullMQ peer: not run (`--no-peer`)",
    `- Callers: keep-alive, waiting for the answer; ${WINDOW.warmupMs / 1000} s warm-up then ${WINDOW.measureMs / 1000} s measured (low load: ${LOW_LOAD_CALLS} sequential calls)`,
    "- Server CPU: from /proc over each measured window, the workerd running the Worker (wrangler dev's proxy apart) and redis-server for BullMQ",
    "",
    "| system | path | scenario | concurrency | calls/s | items/s | p50 ms | p99 ms | server CPU µs/item | µs/call | errors |",
    "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.system} | ${r.path} | ${r.scenario} | ${r.callers} | ${fmtRate(r.callsPerS())} | ${fmtRate(r.itemsPerS())} | ${fmt(percentile(r.latencies, 50))} | ${fmt(percentile(r.latencies, 99))} | ${fmt(r.cpuPerItemUs(), 0)} | ${fmt(r.cpuPerCallUs(), 0)} | ${r.errorCount()} |`,
    );
  }
  lines.push("");
  const edgeswarm = rows.filter((r) => r.system === "EdgeSwarm");
  for (const r of edgeswarm) {
    const ceiling = rows.find((c) => c.system === "DO ceiling" && c.path === r.path && c.scenario === r.scenario);
    if (ceiling) {
      lines.push(
        `- ${r.path}, ${r.scenario}: EdgeSwarm / DO ceiling calls/s ${fmt(r.callsPerS() / ceiling.callsPerS(), 2)}×, p50 ${fmt(percentile(r.latencies, 50) / percentile(ceiling.latencies, 50), 2)}×, server CPU per call ${fmt(r.cpuPerCallUs() / ceiling.cpuPerCallUs(), 2)}×`,
      );
    }
  }
  for (const r of edgeswarm) {
    const one = rows.find(
      (o) => o.system === "EdgeSwarm" && o.path === r.path && `${o.scenario}, ${SHARDS} shards` === r.scenario,
    );
    if (one) {
      lines.push(
        `- ${r.path}, ${r.scenario}: ${SHARDS} shards / 1 shard items/s ${fmt(r.itemsPerS() / one.itemsPerS(), 2)}×, p50 ${fmt(percentile(r.latencies, 50) / percentile(one.latencies, 50), 2)}×, server CPU per item ${fmt(r.cpuPerItemUs() / one.cpuPerItemUs(), 2)}×`,
      );
    }
  }
  for (const r of edgeswarm) {
    const peer = rows.find((p) => p.system === "BullMQ" && p.scenario === r.scenario);
    if (peer) {
      lines.push(
        `- ${r.path}, ${r.scenario}: EdgeSwarm / BullMQ items/s ${fmt(r.itemsPerS() / peer.itemsPerS(), 2)}×, p50 ${fmt(percentile(r.latencies, 50) / percentile(peer.latencies, 50), 2)}×, server CPU per item ${fmt(r.cpuPerItemUs() / peer.cpuPerItemUs(), 2)}×`,
      );
    }
  }
  for (const r of rows) {
    const details = [`${r.latencies.length} calls answered in ${fmt(r.seconds)} s`];
    if (r.system === "EdgeSwarm") {
      const meanBatch = r.batches > 0 ? r.batchItems / r.batches : Number.NaN;
      details.push(`median \`timings.queued_ms\` ${fmt(percentile(r.queuedMs, 50))} ms`);
      details.push(`${r.batches} batches, mean ${fmt(meanBatch)} items`);
    }
    if (r.path === "wrangler dev")
      details.push(`dev proxy CPU ${fmt((r.proxyCpuS * 1e6) / r.latencies.length, 0)} µs/call`);
    if (r.errorCount() > 0) details.push(`errors: ${r.errorList()}`);
    lines.push(`- ${r.system}, ${r.path}, ${r.scenario}: ${details.join("; ")}`);
  }
  for (const low of edgeswarm.filter((r) => r.scenario === LOW_LOAD.scenario)) {
    lines.push(
      `- Added latency at low load, ${low.path} (round trip; the workers compute nothing): p50 ${fmt(percentile(low.latencies, 50))} ms, p99 ${fmt(percentile(low.latencies, 99))} ms, of which max_queue_delay_ms is ${MODEL.max_queue_delay_ms} ms by configuration`,
    );
  }
  const grouped = new Map<string, number>();
  for (const n of notes) grouped.set(n, (grouped.get(n) ?? 0) + 1);
  for (const [note, n] of grouped) lines.push(`- ${n} × ${note}`);
  return `${lines.join("\n")}\n`;
}

/** A Worker on `path` as a System: `POST /v1/infer` calls of `model`, the batches `workers` got, and its workerd's CPU. */
function workerSystem(server: Server, path: Path, model: string, workers: readonly EchoWorker[] = []): System {
  const base = new URL(server.url);
  return {
    call: (inputs) => infer(base, model, inputs),
    batches: () => workerTotals([...workers]),
    cpu: () => {
      const sums = descendantCpuBy((pid, name) =>
        name === "workerd" && path.runsWorker(`${commandLine(pid)} `, server.port) ? "server" : "proxy",
      );
      return { server: sums.get("server") ?? 0, proxy: sums.get("proxy") ?? 0 };
    },
  };
}

interface Scenario {
  scenario: string;
  callers: number;
  inputs: number;
}
const SINGLE: Scenario = { scenario: "single-input calls", callers: 32, inputs: 1 };
const BATCHED: Scenario = { scenario: "batched calls of 64", callers: 8, inputs: 64 };
/** One caller, one call at a time (lowLoad), not a closed loop. */
const LOW_LOAD: Scenario = { scenario: "low load, sequential single-input", callers: 1, inputs: 1 };

/** `system`'s rows, one per scenario (its name followed by `suffix`). */
async function measure(
  system: System,
  name: Row["system"],
  path: string,
  scenarios: Scenario[],
  suffix = "",
): Promise<Row[]> {
  const rows: Row[] = [];
  for (const s of scenarios) {
    if (ONLY !== undefined && !`${s.scenario}${suffix}`.includes(ONLY)) continue;
    console.error(`${name}, ${path}: ${s.scenario}${suffix}…`);
    const row = new Row(name, path, `${s.scenario}${suffix}`, s.callers, s.inputs);
    rows.push(await (s === LOW_LOAD ? lowLoad(system, row) : loaded(system, row)));
  }
  return rows;
}

/** The ceiling worker's wrangler config, written in `dir`: one SQLite-backed Durable Object, wrangler.toml's
 * compatibility date and flags. */
async function writeCeilingConfig(dir: string): Promise<string> {
  const { compatibility_date, compatibility_flags } = unstable_readConfig({ config: WRANGLER.config });
  const config = {
    name: "edgeswarm-bench-ceiling",
    main: CEILING_SCRIPT,
    compatibility_date,
    compatibility_flags,
    durable_objects: { bindings: [{ name: "CEILING", class_name: "CeilingObject" }] },
    migrations: [{ tag: "v1", new_sqlite_classes: ["CeilingObject"] }],
  };
  const file = `${dir}/ceiling-wrangler.json`;
  await writeFile(file, JSON.stringify(config, null, 2));
  return file;
}

/** The echo workers connected now (stopped with the session) and what went wrong on every path so far. */
interface Echo {
  workers: EchoWorker[];
  notes: string[];
}

/**
 * EdgeSwarm's rows on `path`, then the ceiling's. Each server stops before the next starts, so none idles beside
 * another's window. A server that does not start leaves a note (its error is on stderr) and fewer rows.
 */
async function onPath(session: BenchSession, path: Path, ceilingConfig: string, echo: Echo): Promise<Row[]> {
  let plain: EchoWorker[] = [];
  let sharded: EchoWorker[] = [];
  const coordinator = await session.startServer(path.start, { vars: coordinatorVars([MODEL, SHARDED]) }, async (c) => {
    plain = await Promise.all(
      Array.from({ length: WORKERS }, (_, i) => EchoWorker.connect(c.url, MODEL.name, `bench-echo-${i}`)),
    );
    // Each worker on every shard, a socket each, as a real worker serves a sharded model.
    sharded = await Promise.all(
      Array.from({ length: WORKERS * SHARDS }, (_, i) =>
        EchoWorker.connect(c.url, SHARDED.name, `bench-echo-${i % WORKERS}`, Math.floor(i / WORKERS)),
      ),
    );
    echo.workers = [...plain, ...sharded];
  });
  if (!coordinator) {
    echo.notes.push(`${path.name}: the coordinator did not start (the error is on stderr)`);
    return [];
  }
  console.error(`${path.name}: coordinator at ${coordinator.url}; ${WORKERS} echo workers connected`);
  // Only wrangler dev's coordinator has an inspector: the Miniflare path runs without one, as deployed.
  const profiling =
    PROFILE_FILE && coordinator.inspectorPort !== undefined
      ? await startCpuProfile(coordinator.inspectorPort)
      : undefined;
  const rows = await measure(workerSystem(coordinator, path, MODEL.name, plain), "EdgeSwarm", path.name, [
    SINGLE,
    BATCHED,
    LOW_LOAD,
  ]);
  rows.push(
    ...(await measure(
      workerSystem(coordinator, path, SHARDED.name, sharded),
      "EdgeSwarm",
      path.name,
      [SINGLE, BATCHED],
      `, ${SHARDS} shards`,
    )),
  );
  if (profiling && PROFILE_FILE) {
    const profile = await profiling();
    await writeCpuProfile(PROFILE_FILE, profile);
    console.error([`coordinator CPU profile: ${PROFILE_FILE}; most self time:`, ...topSelfTime(profile)].join("\n"));
  }
  for (const w of echo.workers) {
    w.close();
    echo.notes.push(...w.problems.map((p) => `${path.name}, worker side: ${p}`));
  }
  echo.workers = [];
  await coordinator.stop();
  const ceiling = await session.startServer(path.start, { config: ceilingConfig });
  if (!ceiling) {
    echo.notes.push(`${path.name}: the ceiling worker did not start (the error is on stderr)`);
    return rows;
  }
  rows.push(...(await measure(workerSystem(ceiling, path, MODEL.name), "DO ceiling", path.name, [SINGLE, LOW_LOAD])));
  await ceiling.stop();
  return rows;
}

async function main(): Promise<number> {
  const withPeer = !process.argv.includes("--no-peer");
  const paths = PATHS.filter((p) => p.name !== "workerd (Miniflare)" || !process.argv.includes("--no-miniflare"));
  const echo: Echo = { workers: [], notes: [] };
  let redis: RedisServer | undefined;
  let peer: BullmqPeer | undefined;
  const stopAll = async () => {
    for (const w of echo.workers) w.close();
    await peer?.close();
    await redis?.stop();
  };
  return BenchSession.run("edgeswarm-bench-", client, stopAll, async (session) => {
    const ceilingConfig = await writeCeilingConfig(session.persistTo);
    const rows: Row[] = [];
    for (const path of paths) rows.push(...(await onPath(session, path, ceilingConfig, echo)));
    if (!rows.some((r) => r.system === "EdgeSwarm")) return 1;
    if (withPeer) {
      redis = await startRedis();
      peer = await BullmqPeer.start(redis, CALL_TIMEOUT_MS);
      const bullmq: System = {
        call: (inputs) =>
          (peer as BullmqPeer).call(inputs).then((r) => (r.ok ? { ok: true, queuedMs: Number.NaN } : r)),
        batches: () => ({ batches: 0, items: 0 }),
        cpu: () => ({
          server: descendantCpuBy((_pid, name) => name).get("redis-server") ?? 0,
          proxy: Number.NaN,
        }),
      };
      rows.push(...(await measure(bullmq, "BullMQ", "Redis", [SINGLE, BATCHED, LOW_LOAD])));
    }
    const text = report(rows, echo.notes, session, paths, redis);
    await session.publish(text, RESULTS_FILE);
    return 0;
  });
}

process.exitCode = await main();
