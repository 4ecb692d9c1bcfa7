// `npm run bench:swarm -- --model bench`: what the swarm costs on a model that dominates the coordinator (issue
// 13): the benchmark-size encoder (models/bench, `npm run build:models -- --bench`; `--model NAME` another entry of
// that registry) straight in onnxruntime-node against the same model through the real coordinator (`wrangler dev`)
// and one real `edgeswarm-worker`. Direct and swarm windows alternate (ROUNDS of each), so drifting load on a
// shared machine falls on both. Writes bench/results/swarm-bench.md. Not a test.
import { fileURLToPath } from "node:url";
import { startWorker, type WorkerProcess } from "../scripts/lib/worker-process.ts";
import type { ModelConfig } from "../shared/index.ts";
import { loadModel } from "../shared/runner/load-model.ts";
import { nodeFetch } from "../worker-gpu/runner/file-fetch.ts";
import { createOrtNodeFactory } from "../worker-gpu/runner/ort-node-session.ts";
import {
  BenchSession,
  closedLoop,
  fmt,
  HttpClient,
  loadAverage,
  newestSourceMtime,
  percentile,
  processTree,
  readProcs,
} from "./bench-kit.ts";
import { benchModels } from "./bench-models.ts";
import { agreement } from "./runners-report.ts";

const BATCH = 32;
/** Callers of BATCH inputs each: two keep the worker's next batch queued while one runs. */
const CALLERS = 2;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 6);
const WINDOW = { warmupMs: 2_000, measureMs: Number(process.env.BENCH_MEASURE_MS ?? 8_000) };
/** Least cosine similarity of a swarm output to the direct run's for the same text. */
const MIN_COS = 0.9999;
const RESULTS_FILE = new URL("./results/swarm-bench.md", import.meta.url);
const BENCH_DIR = fileURLToPath(new URL("../models/bench/", import.meta.url));

/** A call or batch that ended inside the measured window: when, and the CPU used so far. */
interface Completion {
  at: number;
  cpu: ReturnType<typeof cpuSample>;
}

const completion = (): Completion => ({ at: performance.now(), cpu: cpuSample() });

/**
 * Items/s from completions inside a window: (completions - 1) × size from the first to the last, which does not
 * count the part-finished batch at either end (a window holds some ten batches of about a second).
 */
function rateOf(ends: Completion[], size: number): number {
  if (ends.length < 2) return Number.NaN;
  return ((ends.length - 1) * size) / (((ends.at(-1) as Completion).at - (ends[0] as Completion).at) / 1000);
}

/** CPU seconds per item over the same span as rateOf. */
function cpuPerItem(ends: Completion[], size: number): number {
  if (ends.length < 2) return Number.NaN;
  return cpuBetween((ends[0] as Completion).cpu, (ends.at(-1) as Completion).cpu) / ((ends.length - 1) * size);
}

/** This process's CPU seconds and its descendants' (the coordinator and the worker) ticks by pid, from /proc. */
function cpuSample(): { own: number; ticks: Map<number, number> } {
  const procs = readProcs();
  const tree = processTree(procs, process.pid);
  tree.delete(process.pid);
  const usage = process.cpuUsage();
  return {
    own: (usage.user + usage.system) / 1e6,
    ticks: new Map([...tree].map((pid) => [pid, procs.get(pid)?.ticks ?? 0])),
  };
}

/**
 * CPU seconds between two samples, pid by pid: a process that restarted in between (workerd, when wrangler dev
 * reloads on others' edits) counts from zero rather than making the sum go backwards.
 */
function cpuBetween(a: ReturnType<typeof cpuSample>, b: ReturnType<typeof cpuSample>): number {
  let ticks = 0;
  for (const [pid, t] of b.ticks) ticks += t - Math.min(t, a.ticks.get(pid) ?? 0);
  return b.own - a.own + ticks / 100;
}

interface Round {
  direct: number;
  swarm: number;
  /** CPU seconds per item, all our processes together (others' load moves these far less than items/s). */
  directCpu: number;
  swarmCpu: number;
  /** edge/ or shared/ changed during the round, so wrangler dev may have reloaded the coordinator in it. */
  reloaded: boolean;
}

export async function benchModelSwarm(model: string): Promise<number> {
  const name = model === "bench" ? "minilm-l6-h384" : model;
  const bench = benchModels("bench:swarm", ["--bench", "--model", name, "--batch", String(BATCH)]);
  const spec = bench.specs[0] as ModelConfig;
  const texts = bench.batches[0] as string[];
  const client = new HttpClient(120_000);
  let worker: WorkerProcess | undefined;
  const stopWorker = async () => {
    worker?.child.kill("SIGTERM");
    await worker?.exited;
  };
  const direct = await loadModel(spec, createOrtNodeFactory({ warn: () => {} }), {
    registryUrl: bench.registryUrl,
    fetch: nodeFetch,
    devices: ["cpu"],
  });
  const reference = (await direct.run(texts)).map((r) => ("output" in r ? r.output : undefined));
  const loadAtStart = loadAverage();
  return BenchSession.run("edgeswarm-bench-swarm-model-", client, stopWorker, async (session) => {
    const entry = { ...spec, max_batch_size: BATCH, max_inputs_per_request: BATCH, max_queue_size: 10_000 };
    const coordinator = await session.startCoordinator([entry], async (c) => {
      worker = startWorker([
        ...["--coordinator", c.url, "--models", name, "--model-base", BENCH_DIR, "--worker-id", "bench-model"],
        ...["--max-batch-size", String(BATCH), "--concurrency", "1", "--device", "cpu"],
        ...["--port", "0", "--status-interval-ms", "0"],
      ]);
      await worker.waitFor(new RegExp(`\\[${name}\\] connected`), 120_000);
    });
    if (!coordinator) return 1;
    const base = new URL(coordinator.url);
    const latencies: number[] = [];
    const errors = new Map<string, number>();
    let disagreements = 0;
    const rounds: Round[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const sourcesBefore = newestSourceMtime();
      console.error(`round ${r + 1} of ${ROUNDS}: direct…`);
      const directEnds: Completion[] = [];
      await closedLoop({
        callers: 1,
        ...WINDOW,
        call: () => direct.run(texts),
        record: () => directEnds.push(completion()),
      });
      console.error(`round ${r + 1} of ${ROUNDS}: swarm…`);
      const swarmEnds: Completion[] = [];
      await closedLoop({
        callers: CALLERS,
        ...WINDOW,
        call: () =>
          client.request(base, "POST", "/v1/infer", JSON.stringify({ model: name, inputs: texts, wait: true })),
        record: (answer, ms) => {
          if ("error" in answer || answer.status !== 200) {
            const kind = "error" in answer ? answer.error : `HTTP ${answer.status} ${answer.text.slice(0, 100)}`;
            errors.set(kind, (errors.get(kind) ?? 0) + 1);
            return;
          }
          const { outputs } = JSON.parse(answer.text) as { outputs: unknown[] };
          if (!(agreement(reference, outputs).minCos >= MIN_COS)) disagreements++;
          swarmEnds.push(completion());
          latencies.push(ms);
        },
      });
      rounds.push({
        direct: rateOf(directEnds, BATCH),
        swarm: rateOf(swarmEnds, BATCH),
        directCpu: cpuPerItem(directEnds, BATCH),
        swarmCpu: cpuPerItem(swarmEnds, BATCH),
        reloaded: newestSourceMtime() !== sourcesBefore,
      });
    }
    await direct.dispose();
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const d = mean(rounds.map((x) => x.direct));
    const s = mean(rounds.map((x) => x.swarm));
    const median = (xs: number[]) => percentile(xs, 50);
    const dCpu = mean(rounds.map((x) => x.directCpu));
    const sCpu = mean(rounds.map((x) => x.swarmCpu));
    const lines = [
      ...session.reportHeader(
        `Swarm on the benchmark-size model (${name})`,
        ", onnxruntime-node on cpu",
        `\`${bench.command.replace(/ -- .*/, " -- --model ")}${model}\``,
      ),
      `- Load average (1, 5, 15 min): ${loadAtStart} at the start, ${loadAverage()} at the end (others' work shares these 2 cores)`,
      `- Model: \`${name}\` from models/bench/registry.json, ${bench.seq} tokens an item; direct: batches of ${BATCH} back to back in this process; swarm: ${CALLERS} callers of ${BATCH} inputs (\`wait: true\`), one \`edgeswarm-worker --device cpu --max-batch-size ${BATCH} --concurrency 1\`; every swarm output checked against the direct run's (cosine ≥ ${MIN_COS})`,
      `- ${ROUNDS} rounds, each a direct then a swarm window of ${WINDOW.warmupMs / 1000} s warm-up and ${WINDOW.measureMs / 1000} s measured; items/s from the first to the last completion inside the window`,
      "",
      `| round | direct items/s | swarm items/s | swarm / direct | direct CPU ms/item | swarm CPU ms/item | direct / swarm CPU |`,
      "|---:|---:|---:|---:|---:|---:|---:|",
      ...rounds.map(
        (x, i) =>
          `| ${i + 1}${x.reloaded ? " †" : ""} | ${fmt(x.direct, 2)} | ${fmt(x.swarm, 2)} | ${fmt(x.swarm / x.direct, 3)}× | ${fmt(x.directCpu * 1000)} | ${fmt(x.swarmCpu * 1000)} | ${fmt(x.directCpu / x.swarmCpu, 3)}× |`,
      ),
      `| mean | ${fmt(d, 2)} | ${fmt(s, 2)} | **${fmt(s / d, 3)}×** | ${fmt(dCpu * 1000)} | ${fmt(sCpu * 1000)} | **${fmt(dCpu / sCpu, 3)}×** |`,
      `| median of rounds | | | ${fmt(median(rounds.map((x) => x.swarm / x.direct)), 3)}× | | | ${fmt(median(rounds.map((x) => x.directCpu / x.swarmCpu)), 3)}× |`,
      "",
      "CPU ms/item: CPU time of this process, the coordinator (wrangler, workerd) and the worker from the window's first",
      "completion to its last, per item completed in between; on a machine to itself the throughput ratio tends to the",
      "CPU ratio, which others' load moves far less. † edge/ or shared/ changed during the round (others editing):",
      "wrangler dev may have reloaded the coordinator in it.",
      "",
      `- Swarm calls: ${latencies.length} answered in the windows, p50 ${fmt(percentile(latencies, 50), 0)} ms, p99 ${fmt(percentile(latencies, 99), 0)} ms; outputs off the direct run's: ${disagreements}; errors: ${[...errors].map(([k, n]) => `${n} × ${k}`).join(", ") || "none"}`,
      "",
    ];
    await session.publish(lines.join("\n"), RESULTS_FILE);
    return 0;
  });
}
