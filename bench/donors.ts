// `npm run bench:donors`: the swarm with donors of every kind beside one trusted gpu-pool worker. The real
// coordinator (`wrangler dev`), a real `edgeswarm-worker --pool gpu`, then per scenario real donor processes
// (test/support/donor-process.ts, each from its own loopback /24) or a Chromium tab on the demo page,
// under the same load; every answer is checked against the model run here in onnxruntime-node. Prints
// Markdown (also bench/results/donors.md). `--quick`: single-input callers only, shorter windows. Not a test.
import { readFile } from "node:fs/promises";
import { startWorker, type WorkerProcess } from "../scripts/lib/worker-process.ts";
import type { Coordinator } from "../scripts/lib/wrangler-dev.ts";
import { type DonorStatus, ModelRegistry } from "../shared/index.ts";
import { launchChromium } from "../test/support/chromium.ts";
import { type DonorMode, type DonorReport, emptyReport, sameOutput } from "../test/support/donor-answers.ts";
import { type DonorProcess, startDonor } from "../test/support/donor-launcher.ts";
import { loadReferenceModels } from "../test/support/reference-models.ts";
import {
  BenchRow,
  BenchSession,
  closedLoop,
  fmt,
  fmtRate,
  HttpClient,
  newestSourceMtime,
  percentile,
} from "./bench-kit.ts";
import { SCENARIOS, type Scenario, SENTENCES } from "./donor-scenarios.ts";

const QUICK = process.argv.includes("--quick");
const WINDOW = QUICK ? { warmupMs: 1_500, measureMs: 4_000 } : { warmupMs: 2_000, measureMs: 6_000 };
/** The loads each scenario runs: 20 routed single-input callers, and (not --quick) 4 callers with calls of 32. */
const LOADS = QUICK
  ? [{ callers: 20, perCall: 1 }]
  : [
      { callers: 20, perCall: 1 },
      { callers: 4, perCall: 32 },
    ];
/** A call's own deadline at the coordinator; the HTTP client gives up a little later. */
const CALL_TIMEOUT_MS = 10_000;
/** Donor (onnxruntime-web) and reference (onnxruntime-node) outputs agree this closely for an honest run. */
const TOLERANCE = 1e-3;
const MODEL = "sentiment";
const DONOR_ORIGIN = "https://donor-site.example";
const REGISTRY_URL = new URL("../models/registry.json", import.meta.url);
const RESULTS_FILE = new URL("./results/donors.md", import.meta.url);

class Row extends BenchRow {
  /** Items released over the window by the pool of the run that released them, and items in completed batches (every run). */
  completed = { browser: 0, gpu: 0 };
  ran = 0;
  wrong = 0;
  sourcesChanged = false;
  donorShare(): number {
    const all = this.completed.browser + this.completed.gpu;
    return all > 0 ? this.completed.browser / all : Number.NaN;
  }
  extraRuns(): number {
    const released = this.completed.browser + this.completed.gpu;
    return released > 0 ? (this.ran - released) / released : Number.NaN;
  }
}

const client = new HttpClient(CALL_TIMEOUT_MS + 5_000);
type Reference = Map<string, unknown>;

/** Items counted by `metric` for the model, by pool label, from Prometheus text. */
function byPool(text: string, metric: string): { browser: number; gpu: number; all: number } {
  const out = { browser: 0, gpu: 0, all: 0 };
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${metric}{`) || !line.includes(`model="${MODEL}"`)) continue;
    const value = Number(line.split(" ").pop());
    out.all += value;
    if (line.includes('pool="browser"')) out.browser += value;
    if (line.includes('pool="gpu"')) out.gpu += value;
  }
  return out;
}

async function counters(base: URL) {
  const res = await client.request(base, "GET", "/metrics");
  const text = "error" in res ? "" : res.text;
  return {
    completed: byPool(text, "edgeswarm_items_completed_total"),
    ran: byPool(text, "edgeswarm_batch_size_sum").all,
  };
}

let rotation = 0;
async function call(base: URL, perCall: number, reference: Reference, row: Row): Promise<string | undefined> {
  const inputs = Array.from({ length: perCall }, () => SENTENCES[rotation++ % SENTENCES.length] as string);
  const body = JSON.stringify({ model: MODEL, inputs, timeout_ms: CALL_TIMEOUT_MS });
  const res = await client.request(base, "POST", "/v1/infer", body);
  if ("error" in res) return res.error;
  // The error's code when it is the coordinator's JSON; else workerd's own page (a reload, say).
  if (res.status !== 200) return `HTTP ${res.status} ${/"code":"([^"]+)"/.exec(res.text)?.[1] ?? "(not JSON)"}`;
  const outputs = (JSON.parse(res.text) as { outputs: unknown[] }).outputs;
  outputs.forEach((o, i) => {
    if (!sameOutput(o, reference.get(inputs[i] as string), TOLERANCE)) row.wrong++;
  });
  return undefined;
}

async function measure(base: URL, scenario: string, load: (typeof LOADS)[number], reference: Reference) {
  const row = new Row(scenario, load.callers, load.perCall, WINDOW.measureMs / 1000);
  const sources = newestSourceMtime();
  let from: ReturnType<typeof counters> | undefined;
  let to: ReturnType<typeof counters> | undefined;
  await closedLoop({
    callers: load.callers,
    ...WINDOW,
    call: async () => call(base, load.perCall, reference, row),
    record: (error, ms) => (error ? row.recordError(error) : row.latencies.push(ms)),
    atStart: () => {
      from = counters(base);
    },
    atEnd: () => {
      to = counters(base);
    },
  });
  const [a, b] = await Promise.all([from, to]);
  if (a && b) {
    row.completed = { browser: b.completed.browser - a.completed.browser, gpu: b.completed.gpu - a.completed.gpu };
    row.ran = b.ran - a.ran;
  }
  row.sourcesChanged = newestSourceMtime() !== sources;
  return row;
}

/** Starts a scenario's donors (and tab), resolves with a stop that gives their reports. */
async function join(coordinator: Coordinator, scenario: Scenario): Promise<() => Promise<DonorReport[]>> {
  const donors: DonorProcess[] = scenario.donors.map(([mode, address]: [DonorMode, string]) =>
    startDonor({ coordinator: coordinator.url, model: MODEL, mode, localAddress: address, origin: DONOR_ORIGIN }),
  );
  live.push(...donors);
  const tab = scenario.tab ? await openTab(coordinator) : undefined;
  await Promise.all(donors.map((d) => d.ready(120_000)));
  return async () => {
    const reports = await Promise.all(live.splice(0).map((d) => d.stop()));
    return tab ? [...reports, await tab()] : reports;
  };
}

/** The demo page in a headless Chromium, once its donor is running and connected; closing it tells what it ran. */
async function openTab(coordinator: Coordinator): Promise<() => Promise<DonorReport>> {
  const chromium = await launchChromium();
  const page = await chromium.context.newPage();
  await page.goto(`${coordinator.url}/demo/`);
  const status = async () => (await page.evaluate("window.EdgeSwarm?.status()")) as DonorStatus | undefined;
  for (let i = 0; i < 600; i++) {
    const s = await status();
    if (s?.state === "failed") {
      await chromium.close();
      throw new Error(`the demo tab's donor failed: ${s.error}`);
    }
    if (s?.state === "running" && s.models.every((m) => m.connected)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  return async () => {
    const ran = (await status())?.models.find((m) => m.name === MODEL);
    await chromium.close();
    const items = ran?.items ?? 0;
    return {
      ...emptyReport("honest", "demo tab"),
      local_address: "127.0.0.1",
      batches: ran?.batches ?? 0,
      items,
      answered: items,
      honest: items,
    };
  };
}

/** Donors (and the gpu worker) not yet stopped, so Ctrl-C or a failure does not leave one running. */
const live: DonorProcess[] = [];
let gpuWorker: WorkerProcess | undefined;

function report(rows: Row[], notes: string[], session: BenchSession): string {
  const lines = [
    ...session.reportHeader("Donor benchmark", "", `\`npm run bench:donors${QUICK ? " -- --quick" : ""}\``),
    `- Model: the bundled \`${MODEL}\` classifier with the registry's verification settings; one trusted \`edgeswarm-worker --pool gpu --device cpu\``,
    `- Donors: \`test/support/donor-process.ts\` processes (onnxruntime-web, wasm, 1 thread; site key, Origin, WebSocket or HTTP lease protocol), each from its own 127.0.X.1, so each is on its own /24; the tab is the demo page in headless Chromium`,
    `- Load: routed callers (no pool pinned), calls with timeout_ms ${CALL_TIMEOUT_MS}; ${WINDOW.warmupMs / 1000} s warm-up then ${WINDOW.measureMs / 1000} s measured per row; every output checked against onnxruntime-node here (within ${TOLERANCE})`,
    "",
    "| scenario | callers × inputs | items/s | p50 ms | p99 ms | donor share | extra runs / item | wrong answers | errors |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ...rows.map(
      (r) =>
        `| ${r.scenario}${r.sourcesChanged ? " †" : ""} | ${r.callers} × ${r.inputsPerCall} | ${fmtRate(r.itemsPerS())} | ${fmt(percentile(r.latencies, 50))} | ${fmt(percentile(r.latencies, 99))} | ${fmt(r.donorShare() * 100, 0)}% | ${fmt(r.extraRuns(), 2)} | ${r.wrong} | ${r.errorCount()} |`,
    ),
    "",
    "Donor share: items completed by the browser pool over all completed, from the coordinator's `/metrics`",
    "(`edgeswarm_items_completed_total` by pool) over the measured window. Extra runs per item: items in completed",
    "batches (`edgeswarm_batch_size_sum`, any pool: verification runs, canaries and re-runs included) less items",
    "released, per item released; batches a hoarder never completes are not in it (see its line below). Wrong",
    "answers: outputs delivered with status 200 that differ from the reference.",
    ...(rows.some((r) => r.sourcesChanged)
      ? ["† edge/ or shared/ changed during the row: wrangler dev reloaded; discard it."]
      : []),
    "",
    ...rows
      .filter((r) => r.errorCount() > 0)
      .map((r) => `- ${r.scenario}, ${r.callers} × ${r.inputsPerCall}: errors ${r.errorList()}`),
    ...notes,
  ];
  return `${lines.join("\n")}\n`;
}

async function main(): Promise<number> {
  const bundled = ModelRegistry.parse(JSON.parse(await readFile(REGISTRY_URL, "utf8")));
  const spec = bundled.models.find((m) => m.name === MODEL);
  if (!spec) throw new Error(`models/registry.json has no ${MODEL}`);
  const stopAll = async () => {
    await Promise.all(live.map((d) => d.stop().catch(() => undefined)));
    gpuWorker?.child.kill("SIGTERM");
  };
  return BenchSession.run("edgeswarm-bench-donors-", client, stopAll, async (session) => {
    console.error("reference answers (onnxruntime-node)…");
    const models = await loadReferenceModels({ models: [spec] });
    const model = models.get(MODEL);
    const results = (await model?.run(SENTENCES)) ?? [];
    const reference: Reference = new Map(SENTENCES.map((s, i) => [s, (results[i] as { output?: unknown }).output]));
    await model?.dispose();
    const registry = [{ ...spec, max_queue_size: 100_000 }];
    const coordinator = await session.startCoordinator(
      registry,
      async (c) => {
        gpuWorker = startWorker([
          ...["--coordinator", c.url, "--worker-id", "bench-gpu", "--pool", "gpu", "--device", "cpu"],
          ...["--models", MODEL, "--max-batch-size", "32", "--port", "0", "--status-interval-ms", "0"],
        ]);
        await gpuWorker.waitFor(new RegExp(`\\[${MODEL}\\] connected`), 90_000);
      },
      // Any origin may use the demo key here: the tab's page is the coordinator's own, the donors claim another.
      // A secret of its own, so tokens outlive a reload of the coordinator (others may be editing edge/).
      { SITE_KEYS: JSON.stringify({ demo: { origins: ["*"] } }), DONOR_TOKEN_SECRET: "bench-donors-secret" },
    );
    if (!coordinator) return 1;
    const base = new URL(coordinator.url);
    const rows: Row[] = [];
    const notes: string[] = [];
    for (const scenario of SCENARIOS.filter((s) => !QUICK || s.quick)) {
      console.error(`${scenario.name}…`);
      let stop: () => Promise<DonorReport[]>;
      try {
        stop = await join(coordinator, scenario);
      } catch (error) {
        notes.push(`- ${scenario.name}: not measured, a donor did not join: ${String(error).split("\n")[0]}`);
        await Promise.all(live.splice(0).map((d) => d.stop().catch(() => undefined)));
        continue;
      }
      for (const load of LOADS) rows.push(await measure(base, scenario.name, load, reference));
      const reports = await stop();
      for (const r of reports) {
        notes.push(
          `- ${scenario.name}: ${r.worker_id === "demo tab" ? "the demo tab" : `${r.mode} donor`} on ${r.local_address}: ${r.batches} batches, ${r.items} items taken, ${r.answered} answered (${r.lies} lies), ${r.extends} extensions, ${r.leases_lost} leases lost`,
        );
      }
    }
    await session.publish(report(rows, notes, session), RESULTS_FILE);
    return 0;
  });
}

process.exitCode = await main();
