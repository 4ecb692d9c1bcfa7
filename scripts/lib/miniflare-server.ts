// Runs a wrangler config's Worker on workerd through Miniflare's own API, without `wrangler dev` and the proxy
// it puts in front (its own workerd and node, a hop a deployed Worker does not have, and one that passes no
// client's hang-up on): the benches' second path (bench/coordinator.ts, bench/generate-swarm.ts) and the
// end-to-end test of hang-ups (test/e2e/hang-up.test.ts). The Worker is bundled as `wrangler deploy` bundles it,
// and gets the bindings, Durable Objects, SQLite classes and compatibility flags wrangler derives from the config.

import { execFile } from "node:child_process";
import { parse } from "node:path";
import type { Readable } from "node:stream";
import { promisify } from "node:util";
import { Miniflare } from "miniflare";
import { unstable_getMiniflareWorkerOptions } from "wrangler";
import { freePort, type Server, type ServerOptions, WRANGLER } from "./wrangler-dev.ts";

/** The command line argument by which /proc tells the workerd that serves `port`. */
export const entryArg = (port: number) => `--socket-addr=entry=127.0.0.1:${port} `;

/** Serves the Worker of `opts.config` (the coordinator's by default) on a loopback port; its state in `opts.persistTo`. */
export async function startMiniflare(opts: ServerOptions): Promise<Server> {
  const config = opts.config ?? WRANGLER.config;
  const outdir = `${opts.persistTo}/bundle`;
  await bundle(config, outdir);
  const { workerOptions, main } = unstable_getMiniflareWorkerOptions(config);
  // The bundle is named after the entry (edge/index.ts: index.js).
  const scriptPath = `${outdir}/${parse(main ?? "index").name}.js`;
  // A port found free can be taken before workerd binds it (wrangler dev's processes wind down meanwhile): try another.
  for (let attempt = 1; ; attempt++) {
    try {
      return await serve(opts, workerOptions, outdir, scriptPath, await freePort());
    } catch (error) {
      if (attempt >= 3 || (error as { code?: string }).code !== "ERR_ADDRESS_IN_USE") throw error;
    }
  }
}

async function serve(
  opts: ServerOptions,
  workerOptions: ReturnType<typeof unstable_getMiniflareWorkerOptions>["workerOptions"],
  outdir: string,
  scriptPath: string,
  port: number,
): Promise<Server> {
  const mf = new Miniflare({
    host: "127.0.0.1",
    port,
    defaultPersistRoot: `${opts.persistTo}/state`,
    // Runtime output goes to stderr: stdout carries the bench's report.
    handleRuntimeStdio(stdout: Readable, stderr: Readable) {
      stdout.pipe(process.stderr, { end: false });
      stderr.pipe(process.stderr, { end: false });
    },
    workers: [
      {
        ...workerOptions,
        modules: true,
        modulesRoot: outdir,
        scriptPath,
        bindings: { ...workerOptions.bindings, ...opts.vars },
      },
    ],
  });
  try {
    await mf.ready;
  } catch (error) {
    await mf.dispose();
    throw error;
  }
  let stopped: Promise<void> | undefined;
  return { url: `http://127.0.0.1:${port}`, port, stop: () => (stopped ??= mf.dispose()) };
}

/** `wrangler deploy --dry-run`: the Worker as it would be uploaded, in `outdir`. */
async function bundle(config: string, outdir: string): Promise<void> {
  const args = [WRANGLER.bin, "deploy", "--dry-run", "--config", config, "--outdir", outdir];
  try {
    await promisify(execFile)(process.execPath, args, { cwd: WRANGLER.cwd, env: WRANGLER.env });
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string };
    throw new Error(`wrangler deploy --dry-run --config ${config} failed:\n${stdout ?? ""}${stderr ?? ""}`);
  }
}
