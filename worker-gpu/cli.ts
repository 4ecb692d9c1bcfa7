// edgeswarm-worker's entry point: parse options, load the models with onnxruntime-node, serve, and
// drain on SIGTERM/SIGINT. `worker-gpu/bin/edgeswarm-worker.mjs` runs this file.
import { loadModel } from "../shared/runner/load-model.ts";
import { HELP, parseOptions, UsageError } from "./options.ts";
import { nodeFetch } from "./runner/file-fetch.ts";
import { createOrtNodeFactory, DeviceUnavailableError, NODE_DEVICES } from "./runner/ort-node-session.ts";
import { WebThreadPool } from "./web/thread-pool.ts";
import { eachModel, type LoadModels, runWorker } from "./worker.ts";

const log = (line: string) => console.log(`${new Date().toISOString()} ${line}`);

async function main(): Promise<number> {
  let opts: ReturnType<typeof parseOptions>;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (error) {
    console.error(`edgeswarm-worker: ${(error as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (opts === "help") {
    console.log(HELP);
    return 0;
  }
  const options = opts;
  const registryUrl = new URL("registry.json", options.modelBase);
  let pool: WebThreadPool | undefined;
  let load: LoadModels;
  if (options.runtime === "web") {
    // The browser tab's runner (onnxruntime-web) in worker threads: every thread loads every model.
    load = async (configs) => {
      const started = performance.now();
      pool = await WebThreadPool.start(
        { size: options.threads, runTimeoutMs: options.runTimeoutMs, registryUrl: registryUrl.href, log },
        configs,
      );
      log(`started ${pool.size} onnxruntime-web threads in ${Math.round(performance.now() - started)} ms`);
      return pool.models();
    };
  } else {
    // auto: cuda where it starts, else cpu. A device named outright is the only one: a GPU pod whose CUDA
    // does not start exits saying why, rather than serve the gpu pool at CPU speed.
    const strict = options.device !== "auto";
    const factory = createOrtNodeFactory({ warn: (m) => log(`warning: ${m}`), fallback: !strict });
    const devices = strict ? [options.device] : NODE_DEVICES;
    load = eachModel(
      (config) =>
        loadModel(config, factory, { registryUrl, fetch: nodeFetch, devices }).catch((error: Error) => {
          if (!(strict && error instanceof DeviceUnavailableError)) throw error;
          throw new Error(`model ${config.name}: ${error.message}; --device auto would fall back to the cpu`);
        }),
      log,
    );
  }
  const worker = await runWorker(options, load, log);
  if (worker.port) log(`health and metrics on http://${options.host}:${worker.port}/healthz, /readyz, /metrics`);
  // A drill for the thread pool's recovery: SIGUSR2 ends a thread that is running a batch, as a crash would.
  process.on("SIGUSR2", () => {
    void pool?.killOne({ busyOnly: true }).then((killed) => {
      log(
        killed
          ? `drill: ended thread ${killed.thread} while it ran ${killed.running}`
          : "drill: no thread is running a batch",
      );
    });
  });
  await new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      worker.stop(signal).then(resolve, (error: Error) => {
        log(`stop failed: ${error.message}`);
        resolve();
      });
    };
    process.once("SIGTERM", onSignal);
    process.once("SIGINT", onSignal);
  });
  return 0;
}

main().then(
  (code) => process.exit(code),
  (error: Error) => {
    console.error(`edgeswarm-worker: ${error instanceof UsageError ? "" : "fatal: "}${error.message}`);
    process.exit(1);
  },
);
