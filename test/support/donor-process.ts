// A donor as anyone on the internet could run one with a site key: a Node process that trades the key
// for a donor token (as the embed does), then serves one model in the browser pool over the real worker
// protocol from its own local address, honestly or in one of the hostile modes of donor-answers.ts.
// Run with `node --import tsx test/support/donor-process.ts --coordinator URL --model NAME --mode MODE`;
// tests and bench:donors start it through donor-launcher.ts. Prints `{"donor_report": …}` when it ends.
import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";
import type { Batch, CoordinatorFrame, DonorTokenResponse, ItemResult, ModelConfig } from "../../shared/index.ts";
import type { LoadedModel } from "../../shared/runner/model-runner.ts";
import { createWebRunner } from "../../shared/runner/web-runner.ts";
import { ModelConnection, type SocketLike } from "../../shared/worker-loop/model-connection.ts";
import {
  type Answered,
  type AnswerPolicy,
  answerBatch,
  CANARY_GUESSES,
  type CanaryGuess,
  DONOR_MODES,
  type DonorMode,
  emptyReport,
  substitutedItem,
  TODAYS_CANARY_GUESS,
} from "./donor-answers.ts";
import { hoardOverHttp } from "./donor-http-hoarder.ts";
import { boundFetch, boundSocket, requestDonorToken, TokenRefused } from "./donor-wire.ts";

const { values: args } = parseArgs({
  options: {
    coordinator: { type: "string" },
    model: { type: "string" },
    mode: { type: "string", default: "honest" },
    "site-key": { type: "string", default: "demo" },
    /** The page origin the donor claims; the site key must allow it. Default: the coordinator's own. */
    origin: { type: "string" },
    "local-address": { type: "string" },
    "worker-id": { type: "string" },
    "honest-batches": { type: "string", default: "3" },
    "canary-guess": { type: "string", default: TODAYS_CANARY_GUESS.join(",") },
    /** Defaults: 32 and 1 as a tab asks; a hoarder asks for all the protocol allows. */
    "max-batch-size": { type: "string" },
    concurrency: { type: "string" },
  },
});

function fail(message: string): never {
  console.error(message);
  process.exit(2);
}

const mode = args.mode as DonorMode;
if (!DONOR_MODES.includes(mode)) fail(`--mode must be one of ${DONOR_MODES.join(", ")}`);
if (!args.coordinator || !args.model) fail("--coordinator and --model are required");
const canaryGuess = (args["canary-guess"] ?? "").split(",").filter(Boolean) as CanaryGuess[];
const unknownGuess = canaryGuess.find((g) => !(g in CANARY_GUESSES));
if (unknownGuess) fail(`--canary-guess ${unknownGuess}: known rules are ${Object.keys(CANARY_GUESSES).join(", ")}`);

const hoarder = mode === "hoard-ws" || mode === "hoard-http";
const coordinator = args.coordinator.replace(/\/$/, "");
const origin = args.origin ?? new URL(coordinator).origin;
const localAddress = args["local-address"];
const modelName = args.model;
const workerId = args["worker-id"] ?? `${mode}-${randomUUID().slice(0, 8)}`;
const maxBatchSize = Number(args["max-batch-size"] ?? (hoarder ? 4096 : 32));
const concurrency = Number(args.concurrency ?? (hoarder ? 64 : 1));
const policy: AnswerPolicy = {
  mode,
  honestBatches: Number(args["honest-batches"]),
  canaryGuess,
  salt: randomUUID(),
};
const report = { ...emptyReport(mode, workerId), local_address: localAddress };

let reported = false;
function printReport(): void {
  if (reported) return;
  reported = true;
  process.stdout.write(`${JSON.stringify({ donor_report: report })}\n`);
}
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.once(signal, () => {
    printReport();
    process.exit(0);
  });
}
process.once("exit", printReport);

/** The current token, renewed a minute before it expires (as the embed does). */
let grant: DonorTokenResponse;
const newToken = () =>
  requestDonorToken({ coordinator, siteKey: args["site-key"], origin, models: [modelName], localAddress });
/** Whether the token in hand has opened a socket: one asked for again before that was refused, so get another. */
let tokenWorked = true;
async function token(): Promise<string> {
  if (!tokenWorked || grant.expires_at - Date.now() < 60_000) grant = await newToken();
  tokenWorked = mode === "hoard-http";
  return grant.token;
}

try {
  grant = await newToken();
} catch (error) {
  report.errors++;
  report.refused = (error as Error).message;
  console.log(report.refused);
  process.exit(error instanceof TokenRefused ? 3 : 2);
}
report.donor_id = grant.donor_id;
const spec = grant.models.find((m) => m.name === modelName);
if (!spec) fail(`the site key does not let this donor run ${modelName}`);

if (mode === "hoard-http") {
  console.log(`donor ready: ${workerId} hoards ${modelName} over HTTP from ${localAddress ?? "any address"}`);
  await hoardOverHttp({
    coordinator,
    model: modelName,
    workerId,
    origin,
    localAddress,
    token,
    report,
    concurrency,
    maxBatchSize,
  });
} else {
  serveOverSocket(mode === "hoard-ws" ? holdingModel(spec) : await loadWebModel(spec));
}

/** onnxruntime-web on wasm, one thread: the web runner a tab's donor worker and `--runtime web` run. */
async function loadWebModel(spec: ModelConfig): Promise<LoadedModel> {
  const runner = createWebRunner({
    ort: await import("onnxruntime-web"),
    fetch: boundFetch(localAddress),
    warn: (line) => console.log(line),
  });
  await runner.load(spec, { registryUrl: grant.registry_url, devices: ["wasm"], numThreads: 1 });
  return runner.models().get(spec.name) as LoadedModel;
}

/** substitute: each generated output rerun from a swapped middle token (donor-answers.ts substitutedItem). */
async function substitute(model: LoadedModel, inputs: readonly unknown[], honest: ItemResult[]): Promise<Answered> {
  const results = [...honest];
  let lies = 0;
  for (const [i, result] of honest.entries()) {
    const lie = "output" in result ? substitutedItem(inputs[i], result.output) : null;
    if (!lie) continue;
    const [rerun] = await model.run([lie.item]);
    if (rerun && "output" in rerun) {
      results[i] = rerun;
      lies++;
    }
  }
  return { results, lies, guessedCanaries: 0 };
}

/** A hoarder loads nothing: its runs never end on their own. */
function holdingModel(spec: ModelConfig): LoadedModel {
  return {
    name: spec.name,
    task: spec.task,
    device: "wasm",
    run: () => new Promise(() => {}),
    dispose: async () => {},
  };
}

function serveOverSocket(model: LoadedModel): void {
  /** The batch being handed to run(): ModelConnection calls run in the same turn as the frame arrives. */
  let current: Batch | undefined;
  let batchNumber = 0;
  /** Hoarded leases: a hold ends (its run fails) once the coordinator says the lease is no longer ours. */
  const holds = new Map<string, (error: Error) => void>();
  const lost = new Set<string>();
  const observe = (ws: SocketLike): SocketLike => ({
    get readyState() {
      return ws.readyState;
    },
    send(data) {
      const frame = JSON.parse(data) as { type: string };
      if (frame.type === "extend") report.extends++;
      ws.send(data);
    },
    close: (code, reason) => ws.close(code, reason),
    addEventListener(type: "message" | "open" | "close" | "error", listener: (event: any) => void) {
      if (type !== "message")
        return (ws.addEventListener as (t: string, l: (event: any) => void) => void)(type, listener);
      ws.addEventListener("message", (event) => {
        const frame = JSON.parse(String(event.data)) as CoordinatorFrame;
        if (frame.type === "batch") {
          current = frame;
          report.batches++;
          report.items += frame.items.length;
        } else if (frame.type === "ack" && (frame.status === "stale" || frame.status === "not_found")) {
          // Counted once per lease: a hoarder's pending extends and the failed run's completion are told too.
          if (!lost.has(frame.lease_id)) report.leases_lost++;
          lost.add(frame.lease_id);
          holds.get(frame.lease_id)?.(new Error(`lease ${frame.status}`));
          holds.delete(frame.lease_id);
        }
        listener(event);
      });
    },
  });
  const run = async (inputs: readonly unknown[]): Promise<ItemResult[]> => {
    const batch = current;
    if (!batch || batch.items.length !== inputs.length)
      throw new Error("run() was not called for the batch just received");
    if (mode === "hoard-ws") {
      return new Promise((_resolve, reject) => holds.set(batch.lease_id, reject));
    }
    const honest = await model.run(inputs);
    const answered =
      mode === "substitute"
        ? await substitute(model, inputs, honest)
        : answerBatch(policy, batch, honest, ++batchNumber);
    report.answered += answered.results.length;
    report.lies += answered.lies;
    report.honest += answered.results.length - answered.lies;
    report.guessed_canaries += answered.guessedCanaries;
    return answered.results;
  };
  let ready = false;
  const connection = new ModelConnection({
    coordinator,
    token,
    openSocket: (url, t) => observe(boundSocket(origin, localAddress)(url, t)),
    model,
    info: {
      worker_id: workerId,
      pool: "browser",
      device: model.device,
      max_batch_size: maxBatchSize,
      max_concurrent_batches: concurrency,
    },
    hooks: {
      log: (line) => console.log(line),
      onConnected: (_model, connected) => {
        tokenWorked ||= connected;
        if (connected && !ready)
          console.log(`donor ready: ${workerId} (${mode}) serves ${modelName} from ${localAddress ?? "any address"}`);
        ready ||= connected;
      },
    },
    run,
  });
  connection.start();
}
