// Sessions: a JSON state document per session in its own Durable Object, with a sliding expiry.
import { Hono } from "hono";
import type { HonoEnv } from "../app-env.ts";

export const sessionRoutes = new Hono<HonoEnv>();
