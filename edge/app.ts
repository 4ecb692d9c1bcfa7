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
import { hfError, hfRoutes } from "./routes/huggingface.ts";
import { oipError, oipHealthRoutes, oipRoutes } from "./routes/oip.ts";
import { openAiError, openAiRoutes } from "./routes/openai.ts";
import { healthRoutes, opsRoutes } from "./routes/ops.ts";
import { queueAdminRoutes } from "./routes/queue-admin.ts";
import { sessionRoutes } from "./routes/sessions.ts";
import { workerRoutes } from "./routes/workers.ts";

export const app = new Hono<HonoEnv>();

// The Open Inference Protocol, OpenAI and Hugging Face routes answer errors in their API's shape, whatever raised them.
// OpenAI's models.retrieve is one segment below /v1/models; the operator's routes below a name keep EdgeSwarm's.
const errorShapes = [
  [/^\/v2(\/|$)/, oipError],
  [/^\/v1\/(embeddings|chat\/completions|completions)(\/|$)/, openAiError],
  [/^\/v1\/models\/[^/]+$/, openAiError],
  [/^\/models\//, hfError],
] as const;
app.onError((error, c) => (errorShapes.find(([path]) => path.test(c.req.path))?.[1] ?? onError)(error, c));
app.notFound((c) =>
  c.json(
    errorBody(
      ErrorCode.notFound,
      `no route ${c.req.method} ${new URL(c.req.url).pathname}; see docs/api.md for the API`,
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
app.route("/", queueAdminRoutes);
app.route("/", workerRoutes);
app.route("/", donorRoutes);
app.route("/", sessionRoutes);
app.route("/", oipRoutes);
app.route("/", openAiRoutes);
app.route("/", hfRoutes);
