// Starts test/support/donor-process.ts as a real child process (node --import tsx) for the end-to-end
// tests and bench:donors, waits until it serves, and stops it with SIGTERM to read what it did.
import { fileURLToPath } from "node:url";
import { startNodeProcess, type WorkerProcess } from "../../scripts/lib/worker-process.ts";
import type { CanaryGuess, DonorMode, DonorReport } from "./donor-answers.ts";

const ENTRY = fileURLToPath(new URL("./donor-process.ts", import.meta.url));

/** The page origin the e2e suites' donors claim, for the site key "site". */
export const DONOR_ORIGIN = "https://donor-site.example";

/** A coordinator's variables for the donor suites: caller key "k", worker token "w", site "site" on DONOR_ORIGIN. */
export function donorCoordinatorVars(registry: unknown): Record<string, string> {
  return {
    API_KEYS: "k",
    WORKER_TOKENS: "w",
    DONOR_TOKEN_SECRET: "e2e-donor-secret",
    SITE_KEYS: JSON.stringify({ site: { origins: [DONOR_ORIGIN] } }),
    MODELS: JSON.stringify(registry),
  };
}

export interface DonorOptions {
  coordinator: string;
  model: string;
  mode: DonorMode;
  siteKey?: string;
  /** The page origin claimed; default the coordinator's own. */
  origin?: string;
  /** Where its connections leave from, e.g. "127.0.5.9": each donor its own client network. */
  localAddress?: string;
  workerId?: string;
  honestBatches?: number;
  canaryGuess?: readonly CanaryGuess[];
  maxBatchSize?: number;
  concurrency?: number;
}

export interface DonorProcess {
  readonly options: DonorOptions;
  readonly process: WorkerProcess;
  /** Resolves once the donor has joined (its socket welcomed, or its HTTP hoarding begun). */
  ready(timeoutMs?: number): Promise<void>;
  /** Ends it (SIGTERM, then SIGKILL after 10 s) and resolves with its report. */
  stop(): Promise<DonorReport>;
  /** The report of a donor that has already ended (one refused a token, say). */
  reportOf(): DonorReport | undefined;
}

export function donorArgs(opts: DonorOptions): string[] {
  const flag = (name: string, value: string | number | undefined) => (value === undefined ? [] : [name, String(value)]);
  return [
    ...flag("--coordinator", opts.coordinator),
    ...flag("--model", opts.model),
    ...flag("--mode", opts.mode),
    ...flag("--site-key", opts.siteKey),
    ...flag("--origin", opts.origin),
    ...flag("--local-address", opts.localAddress),
    ...flag("--worker-id", opts.workerId),
    ...flag("--honest-batches", opts.honestBatches),
    ...flag("--canary-guess", opts.canaryGuess?.join(",")),
    ...flag("--max-batch-size", opts.maxBatchSize),
    ...flag("--concurrency", opts.concurrency),
  ];
}

/** The last `{"donor_report": …}` line in a donor's output. */
export function parseDonorReport(output: string): DonorReport | undefined {
  const line = output
    .split("\n")
    .reverse()
    .find((l) => l.startsWith('{"donor_report":'));
  return line ? (JSON.parse(line) as { donor_report: DonorReport }).donor_report : undefined;
}

export function startDonor(opts: DonorOptions): DonorProcess {
  const child = startNodeProcess(["--import", "tsx", ENTRY, ...donorArgs(opts)]);
  return {
    options: opts,
    process: child,
    ready: (timeoutMs = 90_000) => child.waitFor(/^donor ready:/m, timeoutMs),
    reportOf: () => parseDonorReport(child.output()),
    async stop() {
      if (child.child.exitCode === null && child.child.signalCode === null) {
        child.child.kill("SIGTERM");
        const timer = setTimeout(() => child.child.kill("SIGKILL"), 10_000);
        await child.exited;
        clearTimeout(timer);
      }
      const report = parseDonorReport(child.output());
      if (!report) throw new Error(`donor ${opts.mode} ended without a report:\n${child.output()}`);
      return report;
    },
  };
}
