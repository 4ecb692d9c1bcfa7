// Hono's type parameters for the edge app: its bindings and what middleware puts on the context.
import type { EdgeConfig } from "./config.ts";
import type { DonorClaims } from "./donor-token.ts";
import type { Env } from "./env.ts";
import type { HeldCallTrace } from "./telemetry/call-trace.ts";

export interface HonoEnv {
  Bindings: Env;
  /**
   * donor: set when a worker authenticated with a browser donor token (browser pool only). callTrace: a
   * streamed call's trace, open until its stream ends (edge/telemetry/call-trace.ts).
   */
  Variables: { config: EdgeConfig; donor?: DonorClaims; callTrace?: HeldCallTrace | undefined };
}
