// The operator's live dashboard (/dashboard): reads the coordinator's /metrics and /v1/scaling every few
// seconds and draws each panel of metric-history.ts as a uPlot chart, with tables of the queues and the
// workers now (worker-table.ts).
// The operator key comes from the #key=... fragment (never sent in a URL) or the form, and is kept for
// the tab's session only; #every=MS changes the refresh period.
import uPlot from "uplot";
import { History, PANELS, type PanelSpec, type Reading, type ScalingAnswer } from "./metric-history.ts";
import { parsePrometheus } from "./prometheus-text.ts";
import { showWorkers } from "./worker-table.ts";

const $ = (id: string) => document.getElementById(id) as HTMLElement;
const fragment = new URLSearchParams(location.hash.slice(1));
const KEY_STORE = "edgeswarm-operator-key";
let key = fragment.get("key") ?? sessionStorage.getItem(KEY_STORE) ?? "";
const every = Math.max(250, Number(fragment.get("every")) || 2_000);
/** Ten minutes at the default period. */
const POINTS = 300;
const COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#1b7c83", "#d1242f", "#57606a"];

interface Chart {
  spec: PanelSpec;
  history: History;
  plot?: uPlot;
  keys: string;
}

const charts: Chart[] = PANELS.map((spec) => ({ spec, history: new History(POINTS), keys: "" }));

function panelElement(spec: PanelSpec): HTMLElement {
  let el = document.getElementById(`panel-${spec.id}`);
  if (!el) {
    el = document.createElement("section");
    el.id = `panel-${spec.id}`;
    el.className = "panel";
    el.innerHTML = `<h2></h2><div class="chart"></div>`;
    (el.querySelector("h2") as HTMLElement).textContent = `${spec.title} (${spec.unit})`;
    $("panels").append(el);
  }
  return el.querySelector(".chart") as HTMLElement;
}

function draw(chart: Chart): void {
  const { history, spec } = chart;
  const keys = [...history.series.keys()].sort();
  const data = [history.times, ...keys.map((k) => history.series.get(k) ?? [])] as uPlot.AlignedData;
  const target = panelElement(spec);
  // uPlot's series are fixed at creation: a new model or pool makes the chart again.
  if (!chart.plot || chart.keys !== keys.join("\n")) {
    chart.plot?.destroy();
    chart.keys = keys.join("\n");
    chart.plot = new uPlot(
      {
        width: Math.max(280, target.clientWidth),
        height: 200,
        series: [
          {},
          ...keys.map((label, i) => ({ label, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true })),
        ],
        axes: [{}, { size: 56 }],
        scales: { y: { range: (_u, min, max) => [Math.min(0, min), Math.max(1, max * 1.1)] } },
      },
      data,
      target,
    );
    return;
  }
  chart.plot.setData(data);
}

async function read(path: string): Promise<Response> {
  const res = await fetch(path, { headers: key ? { Authorization: `Bearer ${key}` } : {} });
  if (res.ok) return res;
  const body = (await res.json().catch(() => undefined)) as { error?: { message?: string } } | undefined;
  throw Object.assign(new Error(body?.error?.message ?? `${path}: HTTP ${res.status}`), { status: res.status });
}

function showQueues(scaling: ScalingAnswer): void {
  const rows = Object.entries(scaling.models).map(([name, m]) => {
    const tr = document.createElement("tr");
    for (const cell of [
      name,
      m.queued,
      `${m.in_flight.browser ?? 0} / ${m.in_flight.gpu ?? 0}`,
      `${m.workers.browser ?? 0} / ${m.workers.gpu ?? 0}`,
    ]) {
      const td = document.createElement("td");
      td.textContent = String(cell);
      tr.append(td);
    }
    return tr;
  });
  $("queues").replaceChildren(...rows);
}

let previous: Reading | undefined;
let readings = 0;

async function poll(): Promise<void> {
  try {
    const [metrics, scaling] = await Promise.all([
      read("/metrics").then((r) => r.text()),
      read("/v1/scaling").then((r) => r.json() as Promise<ScalingAnswer>),
    ]);
    const reading: Reading = { at: Date.now(), samples: parsePrometheus(metrics), scaling };
    for (const chart of charts) {
      chart.history.push(reading.at, chart.spec.compute(previous, reading));
      draw(chart);
    }
    previous = reading;
    readings += 1;
    showQueues(scaling);
    // Its own errors stay in its own section: without OPERATOR_KEYS the roster is closed while charts are not.
    void showWorkers(Object.keys(scaling.models), read);
    $("status").textContent = `updated ${new Date(reading.at).toLocaleTimeString()} · every ${every / 1000} s`;
    $("problem").textContent = "";
    $("key-form").hidden = true;
  } catch (error) {
    const status = (error as { status?: number }).status;
    $("problem").textContent = (error as Error).message;
    // 401 or 403: this page needs an operator key (an OPERATOR_KEYS entry).
    if (status === 401 || status === 403) $("key-form").hidden = false;
  }
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  key = ($("key") as HTMLInputElement).value.trim();
  sessionStorage.setItem(KEY_STORE, key);
  void poll();
});
window.addEventListener("resize", () => {
  for (const chart of charts)
    chart.plot?.setSize({ width: Math.max(280, panelElement(chart.spec).clientWidth), height: 200 });
});

// For whoever inspects the page (and the browser suite): the charts and how many readings they hold.
Object.assign(window, {
  edgeswarmDashboard: {
    get readings() {
      return readings;
    },
    /** Each chart's series names, in the order of its data columns after the time axis. */
    charts: () => charts.map((c) => ({ id: c.spec.id, keys: c.keys ? c.keys.split("\n") : [], data: c.plot?.data })),
  },
});

void poll();
setInterval(poll, every);
