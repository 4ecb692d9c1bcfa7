// Open Inference Protocol v2 (KServe, Triton): health, model metadata and tensor inference over the same
// queues, batching and leases as /v1/infer.
import { Hono } from "hono";
import type { HonoEnv } from "../app-env.ts";

export const oipRoutes = new Hono<HonoEnv>();
