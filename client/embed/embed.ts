// The script a page embeds: <script src="https://COORDINATOR/embed.js" data-site-key="..." async></script>.
// It starts the donor Web Worker and drives it through comlink; nothing heavier than a message runs on
// the page's thread. The page stays in charge through window.EdgeSwarm (start, stop, pause, resume,
// status, and "status" / "batch" / "log" events). By default the worker pauses while the tab is hidden
// and while the device runs on battery, keeps to a duty cycle, and stops when the page goes away.
import { proxy, type Remote, wrap } from "comlink";
import type { ItemResult, ModelConfig } from "../../shared/index.ts";
import type { DonorApi, DonorConfig, DonorEvent, DonorStatus, LoadedInfo } from "../worker/donor-api.ts";

export interface EmbedOptions extends DonorConfig {
  /** Keep working while the tab is hidden. Default false. */
  runWhenHidden: boolean;
  /** Keep working on battery power, where the browser says. Default false. */
  runOnBattery: boolean;
  /** Start as soon as the script loads; false waits for EdgeSwarm.start() (after consent, say). Default true. */
  autostart: boolean;
}

const flag = (value: string | undefined, fallback: boolean) =>
  value === undefined ? fallback : !["false", "0", "no", "off"].includes(value.toLowerCase());

const number = (value: string | undefined) => (value === undefined || value === "" ? undefined : Number(value));

/** Options from the script tag's data-* attributes; the coordinator defaults to where the script came from. */
export function optionsFromScript(script: HTMLScriptElement): EmbedOptions {
  const d = script.dataset;
  const coordinator = (d.coordinator ?? new URL(script.src, location.href).origin).replace(/\/+$/, "");
  const siteKey = d.siteKey ?? "";
  if (!siteKey) throw new Error('EdgeSwarm: the script tag needs data-site-key="..."');
  const duty = number(d.dutyCycle) ?? 0.5;
  if (!(duty > 0 && duty <= 1)) throw new Error("EdgeSwarm: data-duty-cycle must be in (0, 1]");
  return {
    coordinator,
    siteKey,
    models: d.models
      ? d.models
          .split(",")
          .map((m) => m.trim())
          .filter(Boolean)
      : undefined,
    devices: d.devices ? d.devices.split(",").map((m) => m.trim()) : undefined,
    maxBatchSize: number(d.maxBatchSize),
    dutyCycle: duty,
    wasmPaths: d.wasmPaths ?? `${coordinator}/ort/`,
    numThreads: number(d.threads),
    runWhenHidden: flag(d.runWhenHidden, false),
    runOnBattery: flag(d.runOnBattery, false),
    autostart: flag(d.autostart, true),
  };
}

/**
 * A dedicated worker must come from the page's origin; a page on another origin gets a one-line module
 * worker of its own that imports ours (served with CORS and CORP so that works under COEP too).
 */
function startWorker(url: string): Worker {
  if (new URL(url).origin === location.origin) return new Worker(url, { type: "module", name: "edgeswarm" });
  const shim = URL.createObjectURL(new Blob([`import ${JSON.stringify(url)};`], { type: "text/javascript" }));
  return new Worker(shim, { type: "module", name: "edgeswarm" });
}

interface BatteryLike extends EventTarget {
  charging: boolean;
}

/** How client/worker/donor-api.ts words the coordinator refusing this page a token: status, then its message. */
const REFUSED = /the coordinator refused a donor token: (401|403) (.*)$/s;

/** What a page's developer reads in the console when the coordinator will not take this site key from here. */
export function refusalMessage(options: EmbedOptions, pageOrigin: string, status: string, reason: string): string {
  const fix = reason.startsWith("unknown site key")
    ? "Check data-site-key against the coordinator's SITE_KEYS."
    : `Ask its operator to list ${pageOrigin} for this site key in SITE_KEYS; locally, start the coordinator ` +
      `with npm start -- --site-origin ${pageOrigin}.`;
  return (
    `EdgeSwarm: the coordinator at ${options.coordinator} refused site key "${options.siteKey}" on ${pageOrigin} ` +
    `(${status}: ${reason.trim() || "no reason given"}). ${fix} ` +
    "EdgeSwarm will not try again until EdgeSwarm.start() is called."
  );
}

export class EdgeSwarm extends EventTarget {
  private readonly worker: Worker;
  private readonly api: Remote<DonorApi>;
  private last: DonorStatus | undefined;
  /** Set once a refusal is in the console: one message per start(), however often the worker reports it. */
  private refusalReported = false;

  constructor(readonly options: EmbedOptions) {
    super();
    this.worker = startWorker(`${options.coordinator}/edgeswarm/donor-worker.js`);
    this.api = wrap<DonorApi>(this.worker);
    void this.api.subscribe(
      proxy((event: DonorEvent) => {
        if (event.type === "status") this.last = event.status;
        this.noticeRefusal(event.type === "status" ? event.status.error : event.type === "log" ? event.line : "");
        this.dispatchEvent(new CustomEvent(event.type, { detail: event.type === "status" ? event.status : event }));
      }),
    );
    this.watchPage();
  }

  /** Loads the models and starts taking work. */
  start(): Promise<DonorStatus> {
    const { runWhenHidden: _h, runOnBattery: _b, autostart: _a, ...config } = this.options;
    this.refusalReported = false;
    return this.api.start(config);
  }

  /**
   * A refused site key will not be accepted by asking again: say so in the console once and stop (a refusal
   * at start already leaves the worker failed; one while renewing would otherwise reconnect with backoff).
   */
  private noticeRefusal(text: string | undefined): void {
    const refused = text?.match(REFUSED);
    if (!refused || this.refusalReported) return;
    this.refusalReported = true;
    console.error(refusalMessage(this.options, location.origin, refused[1] ?? "", refused[2] ?? ""));
    if (this.last?.state !== "failed") void this.api.stop().catch(() => undefined);
  }

  /** Stops taking work until resume(); what the worker holds is handed back. */
  pause(): Promise<DonorStatus> {
    return this.api.pause("page");
  }

  resume(): Promise<DonorStatus> {
    return this.api.resume("page");
  }

  /** Hands back all work and closes the connections; start() again to rejoin. */
  stop(): Promise<DonorStatus> {
    return this.api.stop();
  }

  status(): Promise<DonorStatus> {
    return this.api.status();
  }

  /** The last status the worker reported, without a round trip. */
  get lastStatus(): DonorStatus | undefined {
    return this.last;
  }

  /**
   * Loads a registry entry into this page's donor worker for the page's own use (the runner the swarm
   * uses, off the main thread); `registryUrl` is where its relative file paths resolve from.
   */
  loadModel(spec: ModelConfig, registryUrl: string): Promise<LoadedInfo> {
    const { devices, wasmPaths, numThreads } = this.options;
    return this.api.load(spec, { registryUrl, devices, wasmPaths, numThreads });
  }

  /** Runs inputs on a model loadModel() loaded: one result (output or error) per input. */
  runModel(name: string, inputs: unknown[]): Promise<ItemResult[]> {
    return this.api.run(name, inputs);
  }

  /** Destroys the worker's WebGPU device, as a driver reset would, to see the wasm fallback at work. */
  loseGpuDevice(): Promise<boolean> {
    return this.api.loseGpuDevice();
  }

  private watchPage(): void {
    if (!this.options.runWhenHidden) {
      const onVisibility = () => {
        if (document.visibilityState === "hidden") void this.api.pause("hidden");
        else void this.api.resume("hidden");
      };
      document.addEventListener("visibilitychange", onVisibility);
      onVisibility();
    }
    const nav = navigator as Navigator & { getBattery?: () => Promise<BatteryLike> };
    if (!this.options.runOnBattery && nav.getBattery) {
      void nav.getBattery().then((battery) => {
        const onCharging = () => void (battery.charging ? this.api.resume("battery") : this.api.pause("battery"));
        battery.addEventListener("chargingchange", onCharging);
        onCharging();
      });
    }
    // The page is going away: hand back held work now rather than waiting for leases to lapse.
    addEventListener("pagehide", () => {
      void this.api.stop();
    });
  }
}

declare global {
  interface Window {
    EdgeSwarm?: EdgeSwarm;
  }
}

// Nothing here throws into the host page: a mistake in the tag or a failed start is a console error.
const script = document.currentScript as HTMLScriptElement | null;
if (script && !window.EdgeSwarm) {
  try {
    const swarm = new EdgeSwarm(optionsFromScript(script));
    window.EdgeSwarm = swarm;
    if (swarm.options.autostart) {
      swarm.start().catch((error: Error) => console.error(`EdgeSwarm: could not start: ${error.message}`));
    }
  } catch (error) {
    console.error((error as Error).message);
  }
}
