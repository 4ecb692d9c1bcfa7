// `npm start`'s options, and how they merge with `.dev.vars` (wrangler's dotenv file) into the coordinator's
// variables: a flag typed now wins over `.dev.vars`, which wins over start's own defaults. scripts/start.ts
// calls it before starting anything; test/node/start-options.test.ts covers the merge.
import { randomBytes } from "node:crypto";
import { parseArgs, parseEnv } from "node:util";

export const HELP = `npm start [-- options] — the whole swarm locally: the coordinator (wrangler dev) and one worker

Options:
  --port N                  the coordinator's port (PORT, default 8787)
  --site-origin ORIGIN      also let pages on ORIGIN join as site key "demo", e.g. http://127.0.0.1:8099;
                            repeat for more (the coordinator's own origins are always allowed)
  --auth required|open      open (the default): no keys; required: callers need an API key, workers a
                            token, and donor tokens are signed with DONOR_TOKEN_SECRET — each read from
                            .dev.vars, or made up for this run, and printed
  --worker-port N           the local worker's /healthz and /metrics (default 9464)
  --state DIR               where the coordinator keeps its state (default .state/coordinator)
  -h, --help                this text

.dev.vars (beside wrangler.toml, KEY=VALUE lines) is read as wrangler dev reads it. For each variable a
flag given here wins, then .dev.vars, then npm start's default (AUTH=open, SITE_KEYS with site key
"demo" for the coordinator's own origins); --site-origin adds to the "demo" site of whichever SITE_KEYS
that gives. npm start passes only the variables .dev.vars leaves unset, or that a flag sets, as wrangler's
--var flags, because --var would override .dev.vars.

Embedding on your own page: npm start -- --site-origin http://127.0.0.1:8099, then serve a page with the
embed snippet on port 8099 (docs/embedding.md, "Trying the embed on your own page, locally").`;

export class UsageError extends Error {}

export interface StartOptions {
  port: number;
  workerPort: number;
  stateDir: string | undefined;
  auth: "open" | "required";
  /** What to pass to wrangler as --var: only what .dev.vars does not set, or a flag overrides. */
  vars: Record<string, string>;
  /** Variable names taken from .dev.vars, and lines saying which flag overrode which of them. */
  fromDevVars: string[];
  overridden: string[];
  /** With auth required: the first API key and worker token in force, for the printout and the local worker. */
  apiKey?: string;
  workerToken?: string;
  donorSecret?: string;
}

function port(name: string, raw: string, min: number): number {
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n < min || n > 65535) {
    throw new UsageError(`--${name} must be a port number from ${min} to 65535, got "${raw}"`);
  }
  return n;
}

/** The origin a browser would send for `raw`, or a usage error: the edge compares origins as strings. */
function siteOrigin(raw: string): string {
  let url: URL | undefined;
  try {
    url = new URL(raw);
  } catch {
    url = undefined;
  }
  const bare = url && (url.protocol === "http:" || url.protocol === "https:") && url.pathname === "/";
  if (!url || !bare || url.search || url.hash || url.username) {
    throw new UsageError(`--site-origin must be an origin such as http://127.0.0.1:8099 (no path), got "${raw}"`);
  }
  return url.origin;
}

const secret = (prefix: string) => `${prefix}-${randomBytes(16).toString("hex")}`;
const first = (list: string | undefined) => list?.split(",")[0]?.trim() || undefined;

/**
 * The options in `argv` merged with `.dev.vars` (its text, when the file exists). Throws UsageError for a
 * flag or value start cannot use; returns "help" for --help.
 */
export function parseStartOptions(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  devVarsText?: string,
): StartOptions | "help" {
  let values: ReturnType<typeof parse>["values"];
  try {
    values = parse(argv).values;
  } catch (error) {
    throw new UsageError(`${(error as Error).message.split(". ")[0]}; see npm start -- --help`);
  }
  if (values.help) return "help";
  const coordinatorPort = port("port", values.port ?? env.PORT ?? "8787", 1);
  const workerPort = port("worker-port", values["worker-port"] ?? "9464", 1);
  const auth = values.auth;
  if (auth !== undefined && auth !== "open" && auth !== "required") {
    throw new UsageError(`--auth must be required or open, got "${auth}"`);
  }
  const extraOrigins = (values["site-origin"] ?? []).map(siteOrigin);

  const devVars: Record<string, string | undefined> = devVarsText === undefined ? {} : parseEnv(devVarsText);
  const vars: Record<string, string> = {};
  const overridden: string[] = [];
  /** A flag's value: passed on, and noted when it replaces what .dev.vars says. */
  const fromFlag = (name: string, flag: string, value: string) => {
    if (devVars[name] !== undefined && devVars[name] !== value)
      overridden.push(`${flag} overrides ${name} in .dev.vars`);
    vars[name] = value;
  };
  /** .dev.vars's value if it has one (wrangler passes it itself), else start's default. */
  const orDefault = (name: string, fallback: () => string) => {
    const value = devVars[name] ?? fallback();
    if (devVars[name] === undefined) vars[name] = value;
    return value;
  };

  if (auth) fromFlag("AUTH", `--auth ${auth}`, auth);
  const effectiveAuth = (auth ?? orDefault("AUTH", () => "open")) as string;
  if (effectiveAuth !== "open" && effectiveAuth !== "required") {
    throw new UsageError(`AUTH in .dev.vars must be required or open, got "${effectiveAuth}"`);
  }

  const own = [`http://127.0.0.1:${coordinatorPort}`, `http://localhost:${coordinatorPort}`];
  const sites = siteKeys(devVars.SITE_KEYS) ?? {};
  if (devVars.SITE_KEYS === undefined) sites.demo = { origins: own };
  if (extraOrigins.length > 0) {
    const demo = sites.demo ?? { origins: [...own] };
    demo.origins = [...new Set([...demo.origins, ...extraOrigins])];
    sites.demo = demo;
    if (devVars.SITE_KEYS !== undefined) overridden.push("--site-origin adds to site key demo in .dev.vars' SITE_KEYS");
  }
  if (devVars.SITE_KEYS === undefined || extraOrigins.length > 0) vars.SITE_KEYS = JSON.stringify(sites);

  const options: StartOptions = {
    port: coordinatorPort,
    workerPort,
    stateDir: values.state,
    auth: effectiveAuth,
    vars,
    fromDevVars: Object.keys(devVars),
    overridden,
  };
  if (effectiveAuth === "required") {
    options.apiKey = first(orDefault("API_KEYS", () => secret("local-api-key")));
    options.workerToken = first(orDefault("WORKER_TOKENS", () => secret("local-worker-token")));
    options.donorSecret = orDefault("DONOR_TOKEN_SECRET", () => secret("local-donor-secret"));
  }
  return options;
}

function parse(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    options: {
      port: { type: "string" },
      "site-origin": { type: "string", multiple: true },
      auth: { type: "string" },
      "worker-port": { type: "string" },
      state: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
    allowPositionals: false,
  });
}

/** SITE_KEYS from .dev.vars as an object of sites (the edge checks it in full when it starts). */
function siteKeys(text: string | undefined): Record<string, { origins: string[]; models?: string[] }> | undefined {
  if (text === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const sites = parsed as Record<string, { origins?: unknown }> | undefined;
  if (!sites || typeof sites !== "object" || Array.isArray(sites)) {
    throw new UsageError('SITE_KEYS in .dev.vars must be a JSON object such as {"demo":{"origins":["http://…"]}}');
  }
  for (const [key, site] of Object.entries(sites)) {
    if (!Array.isArray(site?.origins))
      throw new UsageError(`SITE_KEYS in .dev.vars: site "${key}" needs an origins array`);
  }
  return sites as Record<string, { origins: string[]; models?: string[] }>;
}
