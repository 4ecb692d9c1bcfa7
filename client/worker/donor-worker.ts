// The donor Web Worker's entry: exposes the donor API to the page through comlink. The embed script
// starts it (client/embed); onnxruntime-web, the model cache and the coordinator sockets live here.
import { expose } from "comlink";
import { createDonorApi } from "./donor-api.ts";

// onnxruntime-web starts its WASM threads from this same bundle, named "em-pthread": those run only
// onnxruntime's code, and must not answer the page as a second donor.
if (!self.name.startsWith("em-pthread")) expose(createDonorApi());
