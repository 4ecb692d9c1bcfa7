// The demo page, as a site owner would show it to visitors: the embed snippet, this tab's donor worker
// (from window.EdgeSwarm's events), the swarm by pool (the coordinator's /v1/scaling and /metrics, polled)
// and answers in words. A key, where the coordinator needs one, comes from the page's #key=... fragment
// and is sent to the coordinator only.

import type { ScalingAnswer } from "../dashboard/metric-history.ts";
import { parsePrometheus } from "../dashboard/prometheus-text.ts";
import type { EdgeSwarm } from "../embed/embed.ts";
import type { DonorEvent, DonorStatus } from "../worker/donor-api.ts";
import { describeAnswer } from "./answer-text.ts";

const $ = (id: string) => document.getElementById(id) as HTMLElement;
const key = new URLSearchParams(location.hash.slice(1)).get("key");
const headers: Record<string, string> = key ? { Authorization: `Bearer ${key}` } : {};

function showStatus(s: DonorStatus) {
  $("state").textContent = s.state;
  $("paused").textContent = s.pausedFor.length ? `(paused: ${s.pausedFor.join(", ")})` : "";
  $("provider").textContent = s.models.map((m) => `${m.name}@${m.device}`).join(", ") || "–";
  $("batches").textContent = String(s.models.reduce((n, m) => n + m.batches, 0));
  $("items").textContent = String(s.models.reduce((n, m) => n + m.items, 0));
  $("cache").textContent = `${s.cache.hits} from IndexedDB, ${s.cache.misses} downloaded`;
  if (s.error) log(`error: ${s.error}`);
}

function log(line: string) {
  const el = $("log");
  el.textContent = `${el.textContent}${new Date().toLocaleTimeString()} ${line}\n`.split("\n").slice(-40).join("\n");
  el.scrollTop = el.scrollHeight;
}

function attach(swarm: EdgeSwarm) {
  swarm.addEventListener("status", (e) => showStatus((e as CustomEvent<DonorStatus>).detail));
  swarm.addEventListener("batch", (e) => {
    const b = (e as CustomEvent<Extract<DonorEvent, { type: "batch" }>>).detail;
    log(`${b.model}: ${b.items} items on ${b.device} in ${b.ms.toFixed(1)} ms`);
    void swarm.status().then(showStatus);
  });
  swarm.addEventListener("log", (e) => log((e as CustomEvent<{ line: string }>).detail.line));
  for (const action of ["pause", "resume", "stop", "start"] as const) {
    $(action).addEventListener("click", () => void swarm[action]().then(showStatus));
  }
}

/** Sums a Prometheus counter's samples per model label. */
function counterByModel(text: string, metric: string): Map<string, number> {
  const totals = new Map<string, number>();
  for (const { name, labels, value } of parsePrometheus(text)) {
    if (name === metric) totals.set(labels.model ?? "", (totals.get(labels.model ?? "") ?? 0) + value);
  }
  return totals;
}

/** A table row of text cells. */
function row(cells: readonly (string | number)[]): HTMLTableRowElement {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.insertCell().textContent = String(cell);
  return tr;
}

let previous: { at: number; done: Map<string, number> } | undefined;

/** The embed line for this coordinator and site key, as the page's own script tag has them. */
function showSnippet() {
  const tag = document.querySelector<HTMLScriptElement>('script[src$="/embed.js"]');
  const src = new URL(tag?.getAttribute("src") ?? "/embed.js", location.href).href;
  $("snippet").textContent =
    `<script src="${src}" data-site-key="${tag?.dataset.siteKey ?? "YOUR_SITE_KEY"}" async></script>`;
}

async function scalingView(): Promise<ScalingAnswer> {
  const res = await fetch("/v1/scaling", { headers });
  if (res.ok) return (await res.json()) as ScalingAnswer;
  const body = (await res.json().catch(() => undefined)) as { error?: { message?: string } } | undefined;
  throw new Error(body?.error?.message ?? `HTTP ${res.status}`);
}

async function pollSwarm() {
  try {
    const [scaling, metrics] = await Promise.all([
      scalingView(),
      fetch("/metrics", { headers }).then((r) => (r.ok ? r.text() : "")),
    ]);
    const done = counterByModel(metrics, "edgeswarm_items_completed_total");
    const now = Date.now();
    const rows = Object.entries(scaling.models).map(([name, m]) => {
      const rate = previous
        ? ((done.get(name) ?? 0) - (previous.done.get(name) ?? 0)) / ((now - previous.at) / 1000)
        : 0;
      const pools = (v: Record<string, number>) => `${v.browser ?? 0} / ${v.gpu ?? 0}`;
      return row([name, m.queued, pools(m.in_flight), pools(m.workers), rate.toFixed(1)]);
    });
    previous = { at: now, done };
    $("models").replaceChildren(...rows);
    $("desired-browser").textContent = String(scaling.pools.browser?.desired_replicas ?? "–");
    $("desired-gpu").textContent = String(scaling.pools.gpu?.desired_replicas ?? "–");
    $("swarm-error").textContent = "";
  } catch (error) {
    $("swarm-error").textContent =
      `(swarm view unavailable: ${(error as Error).message}; add #key=KEY to the URL, an operator key where OPERATOR_KEYS is set)`;
  }
}

$("ask").addEventListener("click", async () => {
  const text = ($("text") as HTMLInputElement).value;
  const res = await fetch("/v1/infer", {
    method: "POST",
    headers: { ...headers, "Content-Type": "application/json" },
    body: JSON.stringify({ model: "sentiment", inputs: [text] }),
  });
  $("answer").textContent = describeAnswer(res.status, await res.json().catch(() => undefined));
});

// The embed script loads async; it may come before or after this module.
const waitForSwarm = () => (window.EdgeSwarm ? attach(window.EdgeSwarm) : setTimeout(waitForSwarm, 20));
waitForSwarm();
showSnippet();
void pollSwarm();
setInterval(pollSwarm, 2_000);
