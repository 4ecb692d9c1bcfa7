// Hono's type parameters for the edge app: its bindings and what middleware puts on the context.
import type { EdgeConfig } from "./config.ts";
import type { Env } from "./env.ts";

export interface HonoEnv {
  Bindings: Env;
  Variables: { config: EdgeConfig };
}
