// The demo page's live view: this tab's donor worker (from window.EdgeSwarm's events) and the swarm
// (the coordinator's /v1/scaling and /metrics, polled). An API key, where the coordinator needs one,
// comes from the page's #key=... fragment and is sent to the coordinator only.
import type { EdgeSwarm } from "../embed/embed.ts";
import type { DonorEvent, DonorStatus } from "../worker/donor-api.ts";

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
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${metric}{`)) continue;
    const model = /model="([^"]*)"/.exec(line)?.[1] ?? "";
    totals.set(model, (totals.get(model) ?? 0) + Number(line.slice(line.lastIndexOf(" ") + 1)));
  }
  return totals;
}

let previous: { at: number; done: Map<string, number> } | undefined;

async function pollSwarm() {
  try {
    const [scaling, metrics] = await Promise.all([
      fetch("/v1/scaling", { headers }).then((r) => (r.ok ? r.json() : Promise.reject(new Error(`HTTP ${r.status}`)))),
      fetch("/metrics", { headers }).then((r) => (r.ok ? r.text() : "")),
    ]);
    const done = counterByModel(metrics, "edgeswarm_items_completed_total");
    const now = Date.now();
    const rows = Object.entries(
      scaling.models as Record<
        string,
        { queued: number; in_flight: Record<string, number>; workers: Record<string, number> }
      >,
    ).map(([name, m]) => {
      const rate = previous
        ? ((done.get(name) ?? 0) - (previous.done.get(name) ?? 0)) / ((now - previous.at) / 1000)
        : 0;
      return `<tr><td>${name}</td><td>${m.queued}</td><td>${m.in_flight.browser} / ${m.in_flight.gpu}</td><td>${m.workers.browser} / ${m.workers.gpu}</td><td>${rate.toFixed(1)}</td></tr>`;
    });
    previous = { at: now, done };
    $("models").innerHTML = rows.join("");
    $("desired-browser").textContent = String(scaling.pools.browser.desired_replicas);
    $("desired-gpu").textContent = String(scaling.pools.gpu.desired_replicas);
    $("swarm-error").textContent = "";
  } catch (error) {
    $("swarm-error").textContent =
      `(swarm view unavailable: ${(error as Error).message}; add #key=YOUR_API_KEY to the URL)`;
  }
}

$("ask").addEventListener("click", async () => {
  const text = ($("text") as HTMLInputElement).value;
  const res = await fetch("/v1/infer", {
    method: "POST",
    headers: { ...headers, "Content-Type": "application/json" },
    body: JSON.stringify({ model: "sentiment", inputs: [text] }),
  });
  $("answer").textContent = JSON.stringify(await res.json(), null, 2);
});

// The embed script loads async; it may come before or after this module.
const waitForSwarm = () => (window.EdgeSwarm ? attach(window.EdgeSwarm) : setTimeout(waitForSwarm, 20));
waitForSwarm();
void pollSwarm();
setInterval(pollSwarm, 2_000);
