// edgeswarm-worker's entry point: parse options, load the models on the device asked for (device-cascade.ts:
// onnxruntime-node on cuda or cpu, onnxruntime-web threads on webgpu or wasm), serve, and drain on
// SIGTERM/SIGINT. `worker-gpu/bin/edgeswarm-worker.mjs` runs this file.
import { deviceCascade } from "./device-cascade.ts";
import { PortInUseError } from "./health-server.ts";
import { HELP, parseOptions, UsageError } from "./options.ts";
import { runWorker } from "./worker.ts";

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
  const cascade = deviceCascade(options, registryUrl, log);
  const drills = options.gpuDrills
    ? { "lose-gpu-device": async () => ({ lost: await cascade.started()?.pool?.loseGpuDevices() }) }
    : undefined;
  const worker = await runWorker(options, cascade.load, log, drills);
  if (worker.port) log(`health and metrics on http://${options.host}:${worker.port}/healthz, /readyz, /metrics`);
  // A drill for the thread pool's recovery: SIGUSR2 ends a thread that is running a batch, as a crash would.
  process.on("SIGUSR2", () => {
    const pool = cascade.started()?.pool;
    if (!pool) return log("drill: no thread pool here (--runtime web has one)");
    void pool.killOne({ busyOnly: true }).then((killed) => {
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
    // A mistake in how it was started reads as one line to act on, not as a crash.
    const usage = error instanceof UsageError || error instanceof PortInUseError;
    console.error(`edgeswarm-worker: ${usage ? "" : "fatal: "}${error.message}`);
    process.exit(1);
  },
);
