// A small line-chart writer for the benchmark reports (bench/burst.ts): stacked panels over one x axis, each
// with a left and an optional right y axis, tick labels, a legend, shaded spans and marker lines. Plain SVG
// text, no dependency: a report figure, not a charting library.

export interface Series {
  name: string;
  color: string;
  /** [x, y] in data units, in x order; a null y breaks the line. */
  points: readonly (readonly [number, number | null])[];
  axis?: "left" | "right";
  dashed?: boolean;
}

export interface Panel {
  title: string;
  height: number;
  left: string;
  right?: string;
  /** Whole-number ticks on the right axis (counts such as replicas). */
  rightIntegers?: boolean;
  series: readonly Series[];
}

export interface Plot {
  title: string;
  width: number;
  xLabel: string;
  panels: readonly Panel[];
  /** Shaded x ranges drawn behind every panel (the burst window, say). */
  spans?: readonly { from: number; to: number; label: string }[];
  /** Vertical lines across every panel. */
  markers?: readonly { x: number; label: string }[];
}

/** Above each panel: its title, then a row for the legend. */
const MARGIN = { left: 72, right: 72, top: 66, panelGap: 80, bottom: 48 } as const;
const FONT = 'font-family="system-ui, sans-serif"';

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
const num = (n: number) => (Number.isInteger(n) ? String(n) : n.toFixed(2).replace(/\.?0+$/, ""));

/**
 * 0 to a round maximum at or above `peak` × `headroom` (so a peak does not hide under the frame), in about
 * `steps` steps of 1, 2, 2.5 or 5 × 10^k (whole numbers only with `integers`).
 */
export function niceTicks(peak: number, steps = 5, integers = false, headroom = 1.05): number[] {
  if (!(peak > 0)) return [0, 1];
  const max = peak * headroom;
  const raw = max / steps;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const fits = (m: number) => m * mag >= raw && (!integers || Number.isInteger(m * mag));
  const step = Math.max(integers ? 1 : 0, ([1, 2, 2.5, 5, 10].find(fits) ?? 10) * mag);
  const ticks: number[] = [];
  for (let v = 0; v < max + step / 2; v += step) ticks.push(Number(v.toPrecision(12)));
  if ((ticks.at(-1) ?? 0) < max) ticks.push(Number(((ticks.at(-1) ?? 0) + step).toPrecision(12)));
  return ticks;
}

function seriesMax(series: readonly Series[], axis: "left" | "right"): number {
  let max = 0;
  for (const s of series) {
    if ((s.axis ?? "left") !== axis) continue;
    for (const [, y] of s.points) if (y !== null && y > max) max = y;
  }
  return max;
}

/** The plot as an SVG document. */
export function svgPlot(plot: Plot): string {
  const all = plot.panels.flatMap((p) => p.series.flatMap((s) => s.points.map(([x]) => x)));
  const xMin = Math.min(0, ...all);
  const xTicks = niceTicks(Math.max(...all, 1) - xMin, 10, false, 1).map((t) => t + xMin);
  const xMax = xTicks.at(-1) as number;
  const innerW = plot.width - MARGIN.left - MARGIN.right;
  const sx = (x: number) => MARGIN.left + ((x - xMin) / (xMax - xMin)) * innerW;
  const height =
    MARGIN.top + plot.panels.reduce((h, p) => h + p.height + MARGIN.panelGap, 0) - MARGIN.panelGap + MARGIN.bottom;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${plot.width}" height="${height}" viewBox="0 0 ${plot.width} ${height}" ${FONT} font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${plot.width / 2}" y="22" text-anchor="middle" font-size="16" font-weight="600">${esc(plot.title)}</text>`,
  ];
  let top = MARGIN.top;
  for (const [i, panel] of plot.panels.entries()) {
    const bottom = top + panel.height;
    const leftTicks = niceTicks(seriesMax(panel.series, "left"));
    const rightTicks = panel.right ? niceTicks(seriesMax(panel.series, "right"), 6, panel.rightIntegers) : [];
    const sy = (ticks: number[]) => (y: number) => bottom - (y / (ticks.at(-1) as number)) * panel.height;
    const syL = sy(leftTicks);
    const syR = sy(rightTicks);
    for (const span of plot.spans ?? []) {
      const x0 = sx(Math.max(xMin, span.from));
      const x1 = sx(Math.min(xMax, span.to));
      out.push(`<rect x="${x0}" y="${top}" width="${x1 - x0}" height="${panel.height}" fill="#f2f2f2"/>`);
      if (i === 0)
        out.push(
          `<text x="${(x0 + x1) / 2}" y="${top + 14}" text-anchor="middle" fill="#777">${esc(span.label)}</text>`,
        );
    }
    for (const t of leftTicks) {
      const y = syL(t);
      out.push(
        `<line x1="${MARGIN.left}" x2="${MARGIN.left + innerW}" y1="${y}" y2="${y}" stroke="#e4e4e4"/>`,
        `<text x="${MARGIN.left - 6}" y="${y + 4}" text-anchor="end">${num(t)}</text>`,
      );
    }
    for (const t of rightTicks) out.push(`<text x="${MARGIN.left + innerW + 6}" y="${syR(t) + 4}">${num(t)}</text>`);
    for (const t of xTicks) {
      out.push(
        `<line x1="${sx(t)}" x2="${sx(t)}" y1="${bottom}" y2="${bottom + 4}" stroke="#333"/>`,
        `<text x="${sx(t)}" y="${bottom + 16}" text-anchor="middle">${num(t)}</text>`,
      );
    }
    for (const [j, m] of (plot.markers ?? []).entries()) {
      out.push(
        `<line x1="${sx(m.x)}" x2="${sx(m.x)}" y1="${top}" y2="${bottom}" stroke="#999" stroke-dasharray="2 3"/>`,
      );
      // One line lower per marker, so the labels of markers close together do not overprint; a label that
      // would run past the frame goes to the left of its line.
      const flip = sx(m.x) + 3 + m.label.length * 6.2 > MARGIN.left + innerW;
      const at = flip ? `x="${sx(m.x) - 3}" text-anchor="end"` : `x="${sx(m.x) + 3}"`;
      if (i === 0) out.push(`<text ${at} y="${top + 28 + 14 * j}" fill="#555" font-size="11">${esc(m.label)}</text>`);
    }
    out.push(
      `<rect x="${MARGIN.left}" y="${top}" width="${innerW}" height="${panel.height}" fill="none" stroke="#333"/>`,
      `<text x="${MARGIN.left}" y="${top - 26}" font-weight="600">${esc(panel.title)}</text>`,
      axisLabel(18, (top + bottom) / 2, panel.left),
    );
    if (panel.right) out.push(axisLabel(plot.width - 14, (top + bottom) / 2, panel.right));
    for (const s of panel.series) {
      const scale = (s.axis ?? "left") === "right" ? syR : syL;
      for (const run of segments(s.points)) {
        const pts = run.map(([x, y]) => `${sx(x).toFixed(1)},${scale(y).toFixed(1)}`).join(" ");
        out.push(
          `<polyline points="${pts}" fill="none" stroke="${s.color}" stroke-width="1.8"${s.dashed ? ' stroke-dasharray="6 3"' : ""}/>`,
        );
      }
    }
    out.push(legend(panel.series, MARGIN.left, top - 8));
    top = bottom + MARGIN.panelGap;
  }
  const last = top - MARGIN.panelGap;
  out.push(`<text x="${MARGIN.left + innerW / 2}" y="${last + 36}" text-anchor="middle">${esc(plot.xLabel)}</text>`);
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}

function axisLabel(x: number, y: number, text: string): string {
  return `<text x="${x}" y="${y}" text-anchor="middle" transform="rotate(-90 ${x} ${y})">${esc(text)}</text>`;
}

/** Runs of consecutive points with a y, so a missing sample shows as a gap rather than a false line. */
function segments(points: Series["points"]): [number, number][][] {
  const runs: [number, number][][] = [[]];
  for (const [x, y] of points) {
    if (y === null) runs.push([]);
    else runs.at(-1)?.push([x, y]);
  }
  return runs.filter((r) => r.length > 0);
}

/** One row of swatches and names from `left` (character widths estimated: no text metrics here). */
function legend(series: readonly Series[], left: number, baseline: number): string {
  const items = series.map((s) => ({ s, width: 36 + s.name.length * 7 + (s.axis === "right" ? 70 : 0) }));
  let x = left;
  return items
    .map(({ s, width }) => {
      const at = x;
      x += width;
      const label = s.axis === "right" ? `${s.name} (right axis)` : s.name;
      return `<line x1="${at}" x2="${at + 18}" y1="${baseline - 4}" y2="${baseline - 4}" stroke="${s.color}" stroke-width="2.5"${s.dashed ? ' stroke-dasharray="6 3"' : ""}/><text x="${at + 22}" y="${baseline}">${esc(label)}</text>`;
    })
    .join("\n");
}
