// `npm start`: the whole swarm locally on its embedded defaults — the coordinator in `wrangler dev`
// (AUTH=open, state under .state/coordinator) and one local worker serving the bundled models —
// prints the URL and a request that works, and stops both cleanly on Ctrl-C.
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { buildClient } from "./build-client.ts";
import { startWorker } from "./lib/worker-process.ts";
import { startCoordinator } from "./lib/wrangler-dev.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const port = Number(process.env.PORT ?? 8787);
const persistTo = `${ROOT}.state/coordinator`;
mkdirSync(persistTo, { recursive: true });

await buildClient();
// The demo page, served by the coordinator itself, joins as site "demo".
const origins = [`http://127.0.0.1:${port}`, `http://localhost:${port}`];
const coordinator = await startCoordinator({
  persistTo,
  port,
  vars: { AUTH: "open", SITE_KEYS: JSON.stringify({ demo: { origins } }) },
  echo: true,
});
const worker = startWorker(["--coordinator", coordinator.url, "--worker-id", "local-worker"]);
worker.child.stdout?.pipe(process.stdout);
worker.child.stderr?.pipe(process.stderr);
await worker.waitFor(/health and metrics on/, 120_000);

const models = (await (await fetch(`${coordinator.url}/v1/models`)).json()) as { models: { name: string }[] };
console.log(`
EdgeSwarm is running (AUTH=open: local only)
  coordinator  ${coordinator.url}        state in ${persistTo}
  worker       local-worker, metrics on http://127.0.0.1:9464/metrics
  models       ${models.models.map((m) => m.name).join(", ")}

Try:
  curl -s ${coordinator.url}/v1/infer -H 'Content-Type: application/json' \\
    -d '{"model":"sentiment","inputs":["I love this","this is terrible"]}'
Open ${coordinator.url}/demo/ and this browser tab joins the swarm too (WebGPU, else WASM).
Then ${coordinator.url}/v1/models · /v1/scaling · /metrics.  Ctrl-C stops everything.
`);

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  console.log("\nstopping the worker (drains what it holds), then the coordinator…");
  worker.child.kill("SIGTERM");
  await worker.exited;
  await coordinator.stop();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
