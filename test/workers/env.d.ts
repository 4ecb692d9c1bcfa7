// Gives `env` from cloudflare:test the edge's bindings.
import type { Env as EdgeEnv } from "../../edge/env.ts";

declare global {
  namespace Cloudflare {
    interface Env extends EdgeEnv {}
  }
}
