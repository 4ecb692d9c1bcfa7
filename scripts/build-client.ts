// `npm run build:client`: everything the edge serves as static assets, into dist/public:
//   embed.js                      the script a page embeds (classic script, runs on the page's thread)
//   edgeswarm/donor-worker.js     the donor Web Worker (ES module: onnxruntime-web, tokenizers, comlink)
//   ort/*.wasm.gz, ort/*.mjs      onnxruntime-web's WASM (gzipped: the raw file is over Workers' 25 MiB
//                                 asset limit, so the edge serves it with Content-Encoding: gzip) and loader
//   models/                       the bundled registry and model folders
//   demo/                         the demo page
//   dashboard/                    the operator's dashboard (uPlot charts; edge/routes/ops.ts serves /dashboard)
//   _headers                      CORS, CORP and cross-origin isolation headers for all of it
// npm start, npm test (vitest's global setup) and npm run deploy run it first.
// It builds into a staging folder and then copies only the files whose bytes changed: every `wrangler dev`
// watching dist/public reloads its worker on a change, and a reload answers the POSTs in flight with
// 503 "Your worker restarted mid-request" (npm start's build, run again by a test beside running
// coordinators, did just that).
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const OUT = join(ROOT, "dist/public");
/** Staging folders go beside OUT: outside it, so writing them disturbs no watcher; at its depth, so sourcemaps'
 * relative paths hold. One each build, so two builds at once do not write into each other's. */
const STAGE_PREFIX = join(ROOT, "dist/.public-staging-");
const ortDist = join(ROOT, "node_modules/onnxruntime-web/dist");

/** The one onnxruntime-web both our runner and transformers.js's tokenizer code import (else two copies ship). */
const ORT_WASM = "ort-wasm-simd-threaded.jsep.wasm";

/** Builds dist/public; returns how many of its files were written or removed (0 when nothing changed). */
export async function buildClient(): Promise<number> {
  mkdirSync(dirname(STAGE_PREFIX), { recursive: true });
  const stage = mkdtempSync(STAGE_PREFIX);
  try {
    return await buildInto(stage);
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

async function buildInto(stage: string): Promise<number> {
  mkdirSync(join(stage, "ort"), { recursive: true });
  const ortBundle = join(ortDist, "ort.bundle.min.mjs");
  const common = {
    bundle: true,
    minify: true,
    sourcemap: true,
    target: "es2022",
    logLevel: "warning" as const,
    legalComments: "none" as const,
    absWorkingDir: ROOT,
  };
  await build({
    ...common,
    entryPoints: { embed: "client/embed/embed.ts" },
    format: "iife",
    platform: "browser",
    outdir: stage,
  });
  await build({
    ...common,
    entryPoints: {
      "edgeswarm/donor-worker": "client/worker/donor-worker.ts",
      "demo/demo": "client/demo/demo.ts",
      "dashboard/dashboard": "client/dashboard/dashboard.ts",
    },
    format: "esm",
    platform: "browser",
    outdir: stage,
    // transformers.js brings its own onnxruntime-web build; point it at ours so one runtime (and one WASM) ships.
    alias: {
      "onnxruntime-web/webgpu": ortBundle,
      "onnxruntime-web": ortBundle,
      "onnxruntime-common": join(ROOT, "node_modules/onnxruntime-common"),
    },
  });
  // Its loader too: given a wasmPaths prefix, onnxruntime-web imports the .mjs from there as well.
  cpSync(join(ortDist, ORT_WASM.replace(/\.wasm$/, ".mjs")), join(stage, "ort", ORT_WASM.replace(/\.wasm$/, ".mjs")));
  cpSync(join(ROOT, "client/demo/index.html"), join(stage, "demo/index.html"));
  cpSync(join(ROOT, "client/dashboard/index.html"), join(stage, "dashboard/index.html"));
  cpSync(join(ROOT, "node_modules/uplot/dist/uPlot.min.css"), join(stage, "dashboard/uPlot.min.css"));
  mkdirSync(join(stage, "models"), { recursive: true });
  const registry = JSON.parse(readFileSync(join(ROOT, "models/registry.json"), "utf8")) as {
    models: { name: string; files?: { base_url?: string } }[];
  };
  cpSync(join(ROOT, "models/registry.json"), join(stage, "models/registry.json"));
  for (const model of registry.models) {
    if (!model.files || model.files.base_url) continue;
    cpSync(join(ROOT, "models", model.name), join(stage, "models", model.name), { recursive: true });
  }
  writeFileSync(join(stage, "_headers"), HEADERS);
  // Compressing 28 MB takes seconds: straight into OUT, and only when onnxruntime-web's file is newer than ours.
  const wasmGzPath = `ort/${ORT_WASM}.gz`;
  const wasmGz = join(OUT, wasmGzPath);
  let changed = 0;
  if (!existsSync(wasmGz) || statSync(wasmGz).mtimeMs < statSync(join(ortDist, ORT_WASM)).mtimeMs) {
    mkdirSync(dirname(wasmGz), { recursive: true });
    writeFileSync(wasmGz, gzipSync(readFileSync(join(ortDist, ORT_WASM)), { level: 9 }));
    changed++;
  }
  return changed + syncTree(stage, OUT, new Set([wasmGzPath]));
}

/** Files under `dir`, as paths relative to it. */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)));
}

/** Makes `to` hold exactly `from`'s files (and those in `keep`), writing only the ones whose bytes differ. */
export function syncTree(from: string, to: string, keep: ReadonlySet<string> = new Set()): number {
  let changed = 0;
  const wanted = new Set(filesUnder(from));
  for (const file of wanted) {
    const src = join(from, file);
    const dest = join(to, file);
    if (existsSync(dest) && readFileSync(dest).equals(readFileSync(src))) continue;
    mkdirSync(dirname(dest), { recursive: true });
    copyFileSync(src, dest);
    changed++;
  }
  for (const file of filesUnder(to)) {
    if (wanted.has(file) || keep.has(file)) continue;
    rmSync(join(to, file));
    changed++;
  }
  return changed;
}

// Any page may embed the script and load the worker, models and WASM (CORS + CORP cross-origin, so a
// cross-origin-isolated page can too). The demo page is itself cross-origin isolated, for WASM threads.
const HEADERS = `/*
  Access-Control-Allow-Origin: *
  Cross-Origin-Resource-Policy: cross-origin
  Cross-Origin-Embedder-Policy: require-corp
  X-Content-Type-Options: nosniff

/demo/*
  Cross-Origin-Opener-Policy: same-origin
`;

if (import.meta.url === `file://${process.argv[1]}`) {
  const started = performance.now();
  const changed = await buildClient();
  console.log(
    `client built into dist/public in ${Math.round(performance.now() - started)} ms (${changed} files changed)`,
  );
}
