// The Prometheus renderer is pure; checked here against the text exposition format 0.0.4.
import { describe, expect, it } from "vitest";
import { COUNTERS, HISTOGRAMS } from "../../edge/metrics/definitions.ts";
import { type ModelMetrics, renderPrometheus } from "../../edge/metrics/prometheus.ts";
import type { PoolSignal } from "../../edge/scaling/scaling-window.ts";
import type { Pool } from "../../shared/index.ts";

// --- A small checker for the text exposition format 0.0.4 ---------------------------------------

interface Sample {
  line: number;
  name: string;
  labels: Record<string, string>;
  value: number;
}
interface Family {
  name: string;
  type: string;
  help: string;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;

/** Parses `{a="x",b="y\"z"}` starting at `text[0] === "{"`; returns the labels and the rest of the line. */
function parseLabels(text: string): { labels: Record<string, string>; rest: string } {
  const labels: Record<string, string> = {};
  let i = 1;
  while (text[i] !== "}") {
    const name = LABEL_NAME.exec(text.slice(i))?.[0];
    if (!name) throw new Error(`bad label name at ${JSON.stringify(text.slice(i))}`);
    i += name.length;
    if (text.slice(i, i + 2) !== '="') throw new Error(`expected =" after ${name}`);
    i += 2;
    let value = "";
    for (;;) {
      const c = text[i];
      if (c === undefined) throw new Error("unterminated label value");
      if (c === '"') break;
      if (c === "\\") {
        const next = text[i + 1];
        if (next === "\\") value += "\\";
        else if (next === '"') value += '"';
        else if (next === "n") value += "\n";
        else throw new Error(`bad escape \\${next}`);
        i += 2;
      } else {
        value += c;
        i += 1;
      }
    }
    i += 1;
    if (name in labels) throw new Error(`label ${name} repeated`);
    labels[name] = value;
    if (text[i] === ",") i += 1;
    else if (text[i] !== "}") throw new Error(`expected , or } at ${JSON.stringify(text.slice(i))}`);
  }
  return { labels, rest: text.slice(i + 1) };
}

function parseValue(v: string): number {
  if (v === "+Inf") return Number.POSITIVE_INFINITY;
  if (v === "-Inf") return Number.NEGATIVE_INFINITY;
  if (v === "NaN") return Number.NaN;
  if (!/^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(v)) throw new Error(`bad value ${v}`);
  return Number(v);
}

/** The family a sample belongs to: histograms own their _bucket, _sum and _count series. */
function familyOf(sample: string, types: Map<string, string>): string {
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    const base = sample.slice(0, -suffix.length);
    if (sample.endsWith(suffix) && types.get(base) === "histogram") return base;
  }
  return sample;
}

/**
 * Parses exposition text and throws on anything the format forbids: a line that is not a comment or a
 * sample, HELP or TYPE given twice or after the family's samples, a family's samples split by another's.
 */
function parseExposition(text: string): Map<string, Family> {
  if (!text.endsWith("\n")) throw new Error("text must end with a newline");
  const families = new Map<string, Family>();
  const types = new Map<string, string>();
  const closed = new Set<string>();
  let current: string | null = null;
  const lines = text.slice(0, -1).split("\n");
  const family = (name: string): Family => {
    let f = families.get(name);
    if (!f) {
      f = { name, type: "untyped", help: "", samples: [] };
      families.set(name, f);
    }
    return f;
  };
  const enter = (name: string, lineNo: number): void => {
    if (current === name) return;
    if (current !== null) closed.add(current);
    if (closed.has(name)) throw new Error(`line ${lineNo}: lines of family ${name} are not contiguous`);
    current = name;
  };
  lines.forEach((line, index) => {
    const lineNo = index + 1;
    if (line === "") throw new Error(`line ${lineNo}: empty line`);
    const meta = /^# (HELP|TYPE) ([^ ]+) (.*)$/.exec(line);
    if (meta) {
      const [, kind, name = "", rest = ""] = meta;
      if (!NAME.test(name) || NAME.exec(name)?.[0] !== name) throw new Error(`line ${lineNo}: bad name ${name}`);
      enter(name, lineNo);
      const f = family(name);
      if (f.samples.length > 0) throw new Error(`line ${lineNo}: ${kind} for ${name} after its samples`);
      if (kind === "HELP") {
        if (f.help !== "") throw new Error(`line ${lineNo}: second HELP for ${name}`);
        if (rest === "") throw new Error(`line ${lineNo}: empty HELP for ${name}`);
        f.help = rest;
      } else {
        if (types.has(name)) throw new Error(`line ${lineNo}: second TYPE for ${name}`);
        if (!["counter", "gauge", "histogram", "summary", "untyped"].includes(rest)) {
          throw new Error(`line ${lineNo}: bad type ${rest}`);
        }
        types.set(name, rest);
        f.type = rest;
      }
      return;
    }
    if (line.startsWith("#")) return; // a plain comment
    const name = NAME.exec(line)?.[0];
    if (!name) throw new Error(`line ${lineNo}: not a sample: ${JSON.stringify(line)}`);
    let rest = line.slice(name.length);
    let labels: Record<string, string> = {};
    if (rest.startsWith("{")) ({ labels, rest } = parseLabels(rest));
    const value = /^ (\S+)$/.exec(rest)?.[1];
    if (value === undefined) throw new Error(`line ${lineNo}: bad value part ${JSON.stringify(rest)}`);
    const base = familyOf(name, types);
    if (!types.has(base)) throw new Error(`line ${lineNo}: sample of ${base} before its TYPE`);
    enter(base, lineNo);
    family(base).samples.push({ line: lineNo, name, labels, value: parseValue(value) });
  });
  return families;
}

const seriesKey = (labels: Record<string, string>): string =>
  JSON.stringify(
    Object.entries(labels)
      .filter(([k]) => k !== "le")
      .sort(([a], [b]) => a.localeCompare(b)),
  );

/** Checks every histogram family: per series, ascending cumulative buckets ending in +Inf == _count, and a _sum. */
function checkHistograms(families: Map<string, Family>): void {
  for (const f of families.values()) {
    if (f.type !== "histogram") continue;
    const series = new Map<string, { buckets: Sample[]; sum?: number; count?: number }>();
    for (const s of f.samples) {
      const key = seriesKey(s.labels);
      const entry = series.get(key) ?? { buckets: [] };
      series.set(key, entry);
      if (s.name === `${f.name}_bucket`) {
        if (s.labels.le === undefined) throw new Error(`${f.name}: bucket without le`);
        entry.buckets.push(s);
      } else if (s.name === `${f.name}_sum`) entry.sum = s.value;
      else if (s.name === `${f.name}_count`) entry.count = s.value;
      else throw new Error(`${f.name}: stray sample ${s.name}`);
    }
    for (const [key, { buckets, sum, count }] of series) {
      const where = `${f.name}${key}`;
      if (buckets.length === 0) throw new Error(`${where}: no buckets`);
      if (sum === undefined || count === undefined) throw new Error(`${where}: missing _sum or _count`);
      const les = buckets.map((b) => parseValue(b.labels.le ?? ""));
      for (let i = 1; i < les.length; i++) {
        if (!((les[i] ?? 0) > (les[i - 1] ?? 0))) throw new Error(`${where}: le not ascending at ${les[i]}`);
        if ((buckets[i]?.value ?? 0) < (buckets[i - 1]?.value ?? 0))
          throw new Error(`${where}: buckets not cumulative`);
      }
      const last = buckets[buckets.length - 1];
      if (last?.labels.le !== "+Inf") throw new Error(`${where}: last bucket is not le="+Inf"`);
      if (last.value !== count) throw new Error(`${where}: +Inf bucket ${last.value} != _count ${count}`);
    }
  }
}

function checkValid(text: string): Map<string, Family> {
  const families = parseExposition(text);
  checkHistograms(families);
  return families;
}

// --- Inputs -------------------------------------------------------------------------------------

const nBuckets = (name: keyof typeof HISTOGRAMS): number => HISTOGRAMS[name].buckets.length + 1;

function model(name: string, over: Partial<ModelMetrics["snapshot"]> = {}): ModelMetrics {
  return {
    stats: {
      model: name,
      shard: 0,
      queued: 7,
      eligible: { browser: 7, gpu: 7 },
      in_flight: { browser: 3, gpu: 64 },
      leases: { browser: 1, gpu: 2 },
      workers: { browser: 5, gpu: 1 },
      quarantined: 2,
      awaiting_verification: 4,
      breaker_open: { browser: 1, gpu: 0 },
    },
    snapshot: {
      counters: [
        { name: "completed", pool: "browser", value: 10 },
        { name: "completed", pool: "gpu", value: 90 },
        { name: "failed", pool: "none", value: 2 },
      ],
      histograms: [
        {
          name: "batch_size",
          pool: "gpu",
          // one batch of 1, two of 3..4, one of 1000 (beyond the last bound: the +Inf slot)
          buckets: [1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1],
          sum: 1 + 3 + 4 + 1000,
          count: 4,
        },
        {
          name: "queue_wait",
          pool: "browser",
          buckets: new Array(nBuckets("queue_wait")).fill(1),
          sum: 400,
          count: 17,
        },
      ],
      ...over,
    },
  };
}

const scaling: Record<Pool, PoolSignal> = {
  browser: { queue_length: 40, raw_replicas: 3, desired_replicas: 3, active: true },
  gpu: { queue_length: 0, raw_replicas: 1, desired_replicas: 2, active: false },
};

const find = (f: Family | undefined, labels: Record<string, string>, name = f?.name): Sample | undefined =>
  f?.samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));

// --- Tests --------------------------------------------------------------------------------------

describe("the line checker", () => {
  it("accepts valid text", () => {
    expect(() => checkValid('# HELP a A.\n# TYPE a gauge\na{x="1"} 1\na{x="2"} 2\n')).not.toThrow();
  });

  it.each([
    ["a missing final newline", "# TYPE a gauge\na 1"],
    ["a second TYPE", "# TYPE a gauge\na 1\n# TYPE a gauge\n"],
    ["a TYPE after samples", "# HELP a A.\na 1\n# TYPE a gauge\n"],
    ["interleaved families", '# TYPE a gauge\n# TYPE b gauge\na{p="1"} 1\nb 1\na{p="2"} 1\n'],
    ["a bad escape", '# TYPE a gauge\na{x="\\t"} 1\n'],
    ["a raw quote", '# TYPE a gauge\na{x="""} 1\n'],
    ["non-cumulative buckets", '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n'],
    ["+Inf != count", '# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 3\n'],
    ["no +Inf bucket", '# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n'],
  ])("rejects %s", (_label, text) => {
    expect(() => checkValid(text)).toThrow();
  });
});

describe("renderPrometheus", () => {
  it("renders valid exposition text for several models, without scaling", () => {
    const text = renderPrometheus([model("alpha"), model("bravo")], null);
    const families = checkValid(text);
    expect(families.has("edgeswarm_desired_replicas")).toBe(false);
  });

  it("declares every family once, with HELP then TYPE, even with no models", () => {
    const text = renderPrometheus([], null);
    checkValid(text);
    const expected = [
      "edgeswarm_queue_depth",
      "edgeswarm_in_flight_items",
      "edgeswarm_active_leases",
      "edgeswarm_workers",
      ...Object.values(COUNTERS).map((c) => c.metric),
      ...Object.values(HISTOGRAMS).map((h) => h.metric),
    ];
    for (const name of expected) {
      const help = text.indexOf(`# HELP ${name} `);
      const type = text.indexOf(`# TYPE ${name} `);
      expect(help, name).toBeGreaterThanOrEqual(0);
      expect(type, name).toBeGreaterThan(help);
      expect(text.split(`# TYPE ${name} `)).toHaveLength(2);
    }
  });

  it("gives counters and histograms their types", () => {
    const families = checkValid(renderPrometheus([model("alpha")], null));
    expect(families.get("edgeswarm_items_completed_total")?.type).toBe("counter");
    expect(families.get("edgeswarm_batch_size")?.type).toBe("histogram");
    expect(families.get("edgeswarm_queue_depth")?.type).toBe("gauge");
  });

  it("reports the queue gauges per model and pool", () => {
    const families = checkValid(renderPrometheus([model("alpha")], null));
    expect(find(families.get("edgeswarm_queue_depth"), { model: "alpha" })?.value).toBe(7);
    expect(find(families.get("edgeswarm_in_flight_items"), { model: "alpha", pool: "gpu" })?.value).toBe(64);
    expect(find(families.get("edgeswarm_active_leases"), { model: "alpha", pool: "browser" })?.value).toBe(1);
    expect(find(families.get("edgeswarm_workers"), { model: "alpha", pool: "browser" })?.value).toBe(5);
  });

  it("reports counters with their pool, and only the counters that exist", () => {
    const families = checkValid(renderPrometheus([model("alpha")], null));
    const completed = families.get("edgeswarm_items_completed_total");
    expect(find(completed, { model: "alpha", pool: "gpu" })?.value).toBe(90);
    expect(completed?.samples).toHaveLength(2);
    expect(find(families.get("edgeswarm_items_failed_total"), { pool: "none" })?.value).toBe(2);
    expect(families.get("edgeswarm_leases_total")?.samples).toHaveLength(0);
  });

  it("renders histogram buckets cumulatively, with +Inf equal to _count", () => {
    const families = checkValid(renderPrometheus([model("alpha")], null));
    const h = families.get("edgeswarm_batch_size");
    const labels = { model: "alpha", pool: "gpu" };
    const bucket = (le: string) => find(h, { ...labels, le }, "edgeswarm_batch_size_bucket")?.value;
    expect(bucket("1")).toBe(1);
    expect(bucket("2")).toBe(1);
    expect(bucket("4")).toBe(3);
    expect(bucket("512")).toBe(3);
    expect(bucket("+Inf")).toBe(4);
    expect(find(h, labels, "edgeswarm_batch_size_count")?.value).toBe(4);
    expect(find(h, labels, "edgeswarm_batch_size_sum")?.value).toBe(1008);
    const les = h?.samples.filter((s) => s.name.endsWith("_bucket")).map((s) => s.labels.le);
    expect(les).toEqual([...HISTOGRAMS.batch_size.buckets.map(String), "+Inf"]);
  });

  it("writes small bucket bounds in plain decimal", () => {
    const text = renderPrometheus([model("alpha")], null);
    expect(text).toContain('edgeswarm_queue_wait_seconds_bucket{model="alpha",pool="browser",le="0.001"} 1\n');
    expect(text).toContain('edgeswarm_queue_wait_seconds_bucket{model="alpha",pool="browser",le="0.0025"} 2\n');
  });

  it("escapes backslash, double quote and newline in label values", () => {
    const pool = 'we"ird\\pool\nname';
    const m = model("alpha", { counters: [{ name: "leases", pool, value: 3 }], histograms: [] });
    const text = renderPrometheus([m], null);
    expect(text).toContain('edgeswarm_leases_total{model="alpha",pool="we\\"ird\\\\pool\\nname"} 3\n');
    const families = checkValid(text);
    expect(find(families.get("edgeswarm_leases_total"), { pool })?.value).toBe(3);
  });

  it("renders non-finite values in the format's spelling", () => {
    const m = model("alpha", {
      counters: [],
      histograms: [
        { name: "compute", pool: "gpu", buckets: new Array(nBuckets("compute")).fill(0), sum: Infinity, count: 0 },
      ],
    });
    const families = checkValid(renderPrometheus([m], null));
    expect(find(families.get("edgeswarm_compute_seconds"), {}, "edgeswarm_compute_seconds_sum")?.value).toBe(Infinity);
  });

  it("reports the pool scaling signals", () => {
    const text = renderPrometheus([model("alpha")], scaling);
    expect(text).toContain('edgeswarm_pool_queue_length{pool="browser"} 40\n');
    expect(text).toContain('edgeswarm_desired_replicas{pool="gpu"} 2\n');
    expect(text).toMatch(/# TYPE edgeswarm_desired_replicas gauge\n/);
  });

  it("is valid apart from the scaling families' order", () => {
    const text = renderPrometheus([model("alpha")], scaling);
    const rest = text
      .split("\n")
      .filter((l) => !/edgeswarm_(pool_queue_length|desired_replicas)\b/.test(l))
      .join("\n");
    expect(() => checkValid(rest)).not.toThrow();
    expect(rest).not.toBe(text);
  });

  // Known bug (reported, not fixed here): fmtNumber renders NaN as "-Inf"; the format spells it "NaN".
  it("renders NaN as NaN", () => {
    const m = model("alpha", { counters: [{ name: "leases", pool: "gpu", value: Number.NaN }], histograms: [] });
    expect(renderPrometheus([m], null)).toContain('edgeswarm_leases_total{model="alpha",pool="gpu"} NaN\n');
  });

  // Known bug (reported, not fixed here: edge/ is someone else's): the two scaling families are both
  // declared first and their samples then alternate pool by pool, so neither family's lines are one
  // group, as the exposition format requires. Drop `.fails` once prometheus.ts emits them one family
  // at a time.
  it("keeps the scaling families' lines contiguous", () => {
    checkValid(renderPrometheus([model("alpha")], scaling));
  });
});
