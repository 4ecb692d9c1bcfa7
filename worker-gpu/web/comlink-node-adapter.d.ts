// Types for comlink's Node adapter as an ES module: the package ships them beside the file as .d.ts,
// which TypeScript does not pair with .mjs.
declare module "comlink/dist/esm/node-adapter.mjs" {
  import type { MessagePort, Worker } from "node:worker_threads";
  import type { Endpoint } from "comlink";
  export default function nodeEndpoint(port: MessagePort | Worker): Endpoint;
}
