// `npm start`: the whole swarm locally — the coordinator in `wrangler dev` (AUTH=open unless told otherwise,
// state under .state/coordinator) and one local worker serving the bundled models — prints the URL and a
// request that works, and stops both cleanly on Ctrl-C. Options and .dev.vars: scripts/lib/start-options.ts.
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { buildClient } from "./build-client.ts";
import { HELP, parseStartOptions, type StartOptions, UsageError } from "./lib/start-options.ts";
import { startWorker } from "./lib/worker-process.ts";
import { type Coordinator, startCoordinator } from "./lib/wrangler-dev.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const DEV_VARS = `${ROOT}.dev.vars`;

function readOptions(): StartOptions {
  try {
    const devVars = existsSync(DEV_VARS) ? readFileSync(DEV_VARS, "utf8") : undefined;
    const options = parseStartOptions(process.argv.slice(2), process.env, devVars);
    if (options !== "help") return options;
    console.log(HELP);
    process.exit(0);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`npm start: ${error.message}`);
    process.exit(2);
  }
}

const options = readOptions();
const persistTo = options.stateDir ? resolve(options.stateDir) : `${ROOT}.state/coordinator`;
mkdirSync(persistTo, { recursive: true });
if (options.fromDevVars.length > 0) console.log(`.dev.vars sets ${options.fromDevVars.join(", ")}`);
for (const line of options.overridden) console.log(line);

await buildClient();
let coordinator: Coordinator | undefined;
let worker: ReturnType<typeof startWorker> | undefined;
let stopping = false;
const stop = async (code: number) => {
  if (stopping) return;
  stopping = true;
  console.log("\nstopping the worker (drains what it holds), then the coordinator…");
  worker?.child.kill("SIGTERM");
  await worker?.exited;
  await coordinator?.stop();
  process.exit(code);
};
process.on("SIGINT", () => stop(0));
process.on("SIGTERM", () => stop(0));

try {
  coordinator = await startCoordinator({
    persistTo,
    port: options.port,
    vars: options.vars,
    echo: true,
    timeoutMs: 120_000,
  });
  worker = startWorker(
    ["--coordinator", coordinator.url, "--worker-id", "local-worker", "--port", String(options.workerPort)],
    options.workerToken ? { EDGESWARM_WORKER_TOKEN: options.workerToken } : {},
  );
  worker.child.stdout?.pipe(process.stdout);
  worker.child.stderr?.pipe(process.stderr);
  await worker.waitFor(/health and metrics on/, 120_000);
} catch (error) {
  console.error(`npm start: ${(error as Error).message}`);
  await stop(1);
}
const url = coordinator?.url as string;
const auth = options.apiKey ? ` -H 'Authorization: Bearer ${options.apiKey}'` : "";
// Only for the printout: a coordinator that cannot list its models still runs, and says why on its own.
const models = (await fetch(`${url}/v1/models`, {
  headers: options.apiKey ? { Authorization: `Bearer ${options.apiKey}` } : {},
})
  .then((res) => res.json())
  .catch(() => ({}))) as { models?: { name: string }[] };
const keys = options.apiKey
  ? `
  API key      ${options.apiKey}
  worker token ${options.workerToken}
  donor secret ${options.donorSecret}
  (made-up ones change on every start: put API_KEYS, WORKER_TOKENS, DONOR_TOKEN_SECRET in .dev.vars to keep them)`
  : "";
const siteOrigins = (JSON.parse(options.vars.SITE_KEYS ?? "{}") as { demo?: { origins: string[] } }).demo?.origins;
console.log(`
EdgeSwarm is running (AUTH=${options.auth}${options.auth === "open" ? ": local only" : ""})
  coordinator  ${url}        state in ${persistTo}
  worker       local-worker, metrics on http://127.0.0.1:${options.workerPort}/metrics
  models       ${models.models?.map((m) => m.name).join(", ") ?? "(could not list them)"}${keys}
  site "demo"  ${siteOrigins ? `pages on ${siteOrigins.join(", ")} may join` : "as SITE_KEYS in .dev.vars says"}

Try:
  curl -s ${url}/v1/infer${auth} -H 'Content-Type: application/json' \\
    -d '{"model":"sentiment","inputs":["I love this","this is terrible"]}'
Open ${url}/demo/${options.apiKey ? `#key=${options.apiKey}` : ""} and this browser tab joins the swarm too (WebGPU, else WASM).
Charts of it all: ${url}/dashboard${options.apiKey ? `#key=${options.apiKey}` : ""}
Then ${url}/v1/models · /v1/scaling · /metrics.  Ctrl-C stops everything.
`);
