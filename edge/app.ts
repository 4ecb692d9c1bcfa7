// The edge's Hono app: configuration and body limits first, then the caller, worker and ops routes,
// with one error handler and one not-found answer, both in the JSON error shape.
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { ErrorCode, errorBody } from "../shared/index.ts";
import type { HonoEnv } from "./app-env.ts";
import { loadConfig } from "./config.ts";
import { ApiError, onError } from "./errors.ts";
import { callerRoutes } from "./routes/caller.ts";
import { donorRoutes } from "./routes/donors.ts";
import { oipError, oipHealthRoutes, oipRoutes } from "./routes/oip.ts";
import { healthRoutes, opsRoutes } from "./routes/ops.ts";
import { sessionRoutes } from "./routes/sessions.ts";
import { workerRoutes } from "./routes/workers.ts";

export const app = new Hono<HonoEnv>();

// Open Inference Protocol routes answer errors in that protocol's shape, whatever raised them.
app.onError((error, c) => (c.req.path.startsWith("/v2") ? oipError(error, c) : onError(error, c)));
app.notFound((c) =>
  c.json(
    errorBody(
      ErrorCode.notFound,
      `no route ${c.req.method} ${new URL(c.req.url).pathname}; see the README for the API`,
    ),
    404,
  ),
);

// Liveness and readiness answer before the configuration is read: a bad configuration makes the
// coordinator not ready (503), not dead.
app.route("/", healthRoutes);
app.route("/", oipHealthRoutes);
app.use(async (c, next) => {
  c.set("config", loadConfig(c.env));
  await next();
});
app.use("*", (c, next) => {
  const maxSize = c.get("config").maxBodyBytes;
  return bodyLimit({
    maxSize,
    onError: () => {
      throw new ApiError(
        413,
        ErrorCode.payloadTooLarge,
        `request body exceeds ${maxSize} bytes; send fewer or smaller inputs per call`,
      );
    },
  })(c, next);
});

app.route("/", opsRoutes);
app.route("/", callerRoutes);
app.route("/", workerRoutes);
app.route("/", donorRoutes);
app.route("/", sessionRoutes);
app.route("/", oipRoutes);
