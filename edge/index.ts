// The edge Worker's entry point: the Hono app and the Durable Object classes wrangler binds.
import { app } from "./app.ts";

export { ModelQueue } from "./model-queue/model-queue.ts";
export { ScalingWindow } from "./scaling/scaling-window.ts";
export { SessionObject } from "./sessions/session-object.ts";

export default app satisfies ExportedHandler<import("./env.ts").Env>;
