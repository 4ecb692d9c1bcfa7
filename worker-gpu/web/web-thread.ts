// One `--runtime web` thread: the browser donor's own API (client/worker/donor-api.ts: onnxruntime-web,
// loaded and run exactly as in a tab's Web Worker) exposed to the main thread through comlink's Node
// adapter. Model files come from the registry's folder, which may be on disk, hence the Node fetch.
import { parentPort } from "node:worker_threads";
import { expose } from "comlink";
import nodeEndpoint from "comlink/dist/esm/node-adapter.mjs";
import { createDonorApi } from "../../client/worker/donor-api.ts";
import { nodeFetch } from "../runner/file-fetch.ts";

if (!parentPort) throw new Error("web-thread.ts runs as a worker thread of edgeswarm-worker --runtime web");
expose(createDonorApi({ fetch: nodeFetch }), nodeEndpoint(parentPort));
