// `npm start`: runs the swarm locally on its embedded defaults — the coordinator in `wrangler dev`
// (AUTH=open, state under .state/coordinator) — prints its URL and a request that works, and stops
// everything cleanly on Ctrl-C.
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { startCoordinator } from "../test/support/wrangler-dev.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const port = Number(process.env.PORT ?? 8787);
const persistTo = `${ROOT}.state/coordinator`;
mkdirSync(persistTo, { recursive: true });

const coordinator = await startCoordinator({ persistTo, port, vars: { AUTH: "open" }, echo: true });
const models = (await (await fetch(`${coordinator.url}/v1/models`)).json()) as { models: { name: string }[] };

console.log(`
EdgeSwarm coordinator: ${coordinator.url}   (state: ${persistTo}; AUTH=open, local only)
Models: ${models.models.map((m) => m.name).join(", ")}

Queue a request (answers 202 with a job id until a worker serves the model):
  curl -s ${coordinator.url}/v1/infer -H 'Content-Type: application/json' \\
    -d '{"model":"${models.models[0]?.name}","inputs":["I love this"],"wait":false}'
Then: curl -s ${coordinator.url}/v1/jobs/<id>   ·   ${coordinator.url}/v1/scaling   ·   ${coordinator.url}/metrics
Ctrl-C stops it.
`);

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  console.log("\nstopping…");
  await coordinator.stop();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
