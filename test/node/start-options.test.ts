// `npm start`'s options and their merge with .dev.vars: a flag wins over .dev.vars, .dev.vars over start's
// defaults, and nothing .dev.vars sets is passed to wrangler as --var unless a flag overrides it.
import { describe, expect, it } from "vitest";
import { parseStartOptions, type StartOptions, UsageError } from "../../scripts/lib/start-options.ts";

const parse = (argv: string[], devVars?: string) => parseStartOptions(argv, {}, devVars) as StartOptions;
const sites = (o: StartOptions) => JSON.parse(o.vars.SITE_KEYS ?? "null");
const usage = (argv: string[], devVars?: string) => {
  try {
    parseStartOptions(argv, {}, devVars);
  } catch (error) {
    expect(error).toBeInstanceOf(UsageError);
    return (error as Error).message;
  }
  throw new Error(`expected a usage error for ${argv.join(" ")}`);
};

describe("npm start options", () => {
  it("defaults to an open coordinator on 8787 whose demo site is its own origins", () => {
    const o = parse([]);
    expect(o).toMatchObject({ port: 8787, workerPort: 9464, auth: "open" });
    expect(o.apiKey).toBeUndefined();
    expect(o.vars.AUTH).toBe("open");
    expect(sites(o)).toEqual({ demo: { origins: ["http://127.0.0.1:8787", "http://localhost:8787"] } });
    expect(parseStartOptions([], { PORT: "9000" }, undefined)).toMatchObject({ port: 9000 });
  });

  it("adds each --site-origin to the demo site, as the browser would send it", () => {
    const o = parse([
      "--port",
      "8123",
      "--site-origin",
      "http://127.0.0.1:8099",
      "--site-origin",
      "https://b.example/",
    ]);
    expect(sites(o).demo.origins).toEqual([
      "http://127.0.0.1:8123",
      "http://localhost:8123",
      "http://127.0.0.1:8099",
      "https://b.example",
    ]);
  });

  it("with --auth required makes up an API key, a worker token and a donor secret, and passes them on", () => {
    const o = parse(["--auth", "required"]);
    expect(o.auth).toBe("required");
    expect(o.apiKey).toMatch(/^local-api-key-[0-9a-f]{32}$/);
    expect(o.vars).toMatchObject({
      AUTH: "required",
      API_KEYS: o.apiKey,
      WORKER_TOKENS: o.workerToken,
      DONOR_TOKEN_SECRET: o.donorSecret,
    });
    expect(parse(["--auth", "required"]).apiKey).not.toBe(o.apiKey);
  });

  it("leaves what .dev.vars sets to wrangler, and uses its keys", () => {
    const devVars = 'AUTH=required\nAPI_KEYS="key-1,key-2"\n# a comment\nWORKER_TOKENS=tok\nDONOR_TOKEN_SECRET=s3\n';
    const o = parse([], devVars);
    expect(o).toMatchObject({ auth: "required", apiKey: "key-1", workerToken: "tok", donorSecret: "s3" });
    expect(o.vars).toEqual({ SITE_KEYS: expect.any(String) });
    expect(o.fromDevVars.sort()).toEqual(["API_KEYS", "AUTH", "DONOR_TOKEN_SECRET", "WORKER_TOKENS"]);
    expect(o.overridden).toEqual([]);
  });

  it("lets a flag typed now override .dev.vars, and says so", () => {
    const o = parse(["--auth", "open"], "AUTH=required\n");
    expect(o.auth).toBe("open");
    expect(o.vars.AUTH).toBe("open");
    expect(o.overridden).toEqual(["--auth open overrides AUTH in .dev.vars"]);
  });

  it("keeps .dev.vars' SITE_KEYS, adding --site-origin to its demo site only when asked", () => {
    const devVars = `SITE_KEYS='{"demo":{"origins":["https://mine.example"]},"other":{"origins":["*"]}}'\n`;
    expect(parse([], devVars).vars.SITE_KEYS).toBeUndefined();
    const o = parse(["--site-origin", "http://127.0.0.1:8099"], devVars);
    expect(sites(o)).toEqual({
      demo: { origins: ["https://mine.example", "http://127.0.0.1:8099"] },
      other: { origins: ["*"] },
    });
    expect(o.overridden).toEqual(["--site-origin adds to site key demo in .dev.vars' SITE_KEYS"]);
  });

  it("returns help for --help and -h", () => {
    expect(parseStartOptions(["--help"], {})).toBe("help");
    expect(parseStartOptions(["-h", "--port", "1"], {})).toBe("help");
  });

  it("refuses unknown flags, stray arguments and bad values, saying what to fix", () => {
    expect(usage(["--prot", "1"])).toBe("Unknown option '--prot'; see npm start -- --help");
    expect(usage(["8787"])).toContain("see npm start -- --help");
    expect(usage(["--port"])).toContain("--port");
    expect(usage(["--port", "eighty"])).toBe('--port must be a port number from 1 to 65535, got "eighty"');
    expect(usage(["--port", "70000"])).toContain("from 1 to 65535");
    expect(usage(["--worker-port", "0"])).toContain("--worker-port must be a port number from 1");
    expect(usage(["--auth", "maybe"])).toBe('--auth must be required or open, got "maybe"');
    expect(usage(["--site-origin", "127.0.0.1:8099"])).toContain("--site-origin must be an origin such as");
    expect(usage(["--site-origin", "http://127.0.0.1:8099/page"])).toContain("(no path)");
    expect(usage([], "AUTH=sometimes\n")).toBe('AUTH in .dev.vars must be required or open, got "sometimes"');
    expect(usage([], "SITE_KEYS=[1]\n")).toContain("SITE_KEYS in .dev.vars must be a JSON object");
    expect(usage([], `SITE_KEYS='{"demo":{}}'\n`)).toBe('SITE_KEYS in .dev.vars: site "demo" needs an origins array');
  });
});
