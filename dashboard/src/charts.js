// The page's charts, drawn by uPlot: x values are Unix seconds (a UTC day's
// or hour's start), one series per label.

import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

const COLORS = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#4d7c0f", "#be185d"];
const charts = new Map();

/**
 * The largest few of `groups` (label → Map of x → value) by their sum, the
 * rest summed as "other (n)", so a chart stays readable.
 */
export function largest(groups, keep = COLORS.length - 1) {
  const ranked = [...groups.entries()]
    .map(([label, values]) => [label, values, [...values.values()].reduce((a, b) => a + b, 0)])
    .sort((a, b) => b[2] - a[2] || String(a[0]).localeCompare(String(b[0])));
  const shown = new Map(ranked.slice(0, keep).map(([label, values]) => [label, values]));
  const rest = ranked.slice(keep);
  if (rest.length) {
    const other = new Map();
    for (const [, values] of rest) {
      for (const [x, v] of values) other.set(x, (other.get(x) ?? 0) + v);
    }
    shown.set(`other (${rest.length})`, other);
  }
  return shown;
}

const dayLabel = (t) => new Date(t * 1000).toISOString().slice(0, 10);
const hourLabel = (t) => new Date(t * 1000).toISOString().slice(0, 13).replace("T", " ") + ":00";

/**
 * Draws `id`'s chart over `xs`: `series` a Map of label → Map of x → value
 * (missing values are 0, or gaps with `gaps`). `unit` formats the y values.
 */
export function draw(id, xs, series, { unit = "", money = false, hours = false, gaps = false } = {}) {
  const fmt = (v) => (v == null ? "" : money ? `$${v.toFixed(6)}` : `${+v.toFixed(3)}${unit}`);
  const data = [xs, ...[...series.values()].map((values) => xs.map((x) => values.get(x) ?? (gaps ? null : 0)))];
  const lines = [
    { label: hours ? "hour (UTC)" : "day", value: (_, t) => (t == null ? "" : hours ? hourLabel(t) : dayLabel(t)) },
    ...[...series.keys()].map((label, k) => ({
      label: label === null ? "(none)" : String(label),
      stroke: COLORS[k % COLORS.length],
      width: 2,
      spanGaps: false,
      points: { show: gaps || xs.length < 40, size: gaps ? 5 : undefined },
      value: (_, v) => fmt(v),
    })),
  ];
  const host = document.getElementById(id);
  charts.get(id)?.destroy();
  host.replaceChildren();
  const opts = {
    width: Math.max(320, host.clientWidth || 480),
    height: 220,
    series: lines,
    scales: { x: { time: true }, y: { range: (_, lo, hi) => [0, hi > 0 ? hi * 1.1 : 1] } },
    axes: [{}, { size: money ? 90 : 60, values: (_, ticks) => ticks.map((t) => (money ? `$${t}` : `${t}${unit}`)) }],
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
  };
  charts.set(id, new uPlot(opts, data, host));
}
