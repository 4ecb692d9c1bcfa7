// Entry of one `--runtime web` thread: registers tsx (as bin/edgeswarm-worker.mjs does for the main
// thread; Node does not hand module hooks to worker threads), then runs the TypeScript thread module.
import { register } from "tsx/esm/api";

register();
await import("./web-thread.ts");
