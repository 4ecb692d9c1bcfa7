// A real edgeswarm-worker (worker-gpu/worker.ts runWorker: its options, device cascade, socket and lease loop)
// whose model lets a batch's first EDGESWARM_STALL_AFTER token deltas out and then holds the batch for ever,
// printing `stalled after N tokens`: a worker that is mid-stream for as long as a test needs, whatever the
// machine's speed, so the test can SIGKILL it there. Run with `node --import tsx test/support/stalling-worker.ts
// <edgeswarm-worker options>`; test/e2e/generation-kill.test.ts starts it.

import type { LoadedModel } from "../../shared/runner/model-runner.ts";
import { deviceCascade } from "../../worker-gpu/device-cascade.ts";
import { parseOptions } from "../../worker-gpu/options.ts";
import { type LoadModels, runWorker } from "../../worker-gpu/worker.ts";

const stallAfter = Number(process.env.EDGESWARM_STALL_AFTER ?? 2);
const options = parseOptions(process.argv.slice(2));
if (options === "help") throw new Error("no --help here: pass edgeswarm-worker's options");
const log = (line: string) => console.log(line);

/** The model, but each batch holds after `stallAfter` deltas: generated in full, never completed. */
function stalling(model: LoadedModel): LoadedModel {
  return Object.assign(Object.create(model) as LoadedModel, {
    run: async (...[inputs, opts]: Parameters<LoadedModel["run"]>) => {
      let sent = 0;
      await model.run(inputs, {
        ...opts,
        onTokens: (delta) => {
          if (sent >= stallAfter) return;
          opts?.onTokens?.(delta);
          if (++sent === stallAfter) log(`stalled after ${stallAfter} tokens`);
        },
      });
      return new Promise<never>(() => {});
    },
  });
}

const cascade = deviceCascade(options, new URL("registry.json", options.modelBase), log);
const load: LoadModels = async (configs) => {
  const loaded = await cascade.load(configs);
  return { ...loaded, models: loaded.models.map(stalling) };
};
await runWorker(options, load, log);
