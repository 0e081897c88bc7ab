// The page's charts, drawn by uPlot: one x value per UTC day of the range,
// one series per group (the largest few by the chart's measure, the rest
// summed as "other").

import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

const COLORS = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#4d7c0f", "#be185d"];
const MAX_SERIES = COLORS.length - 1;
const charts = new Map();

/**
 * Draws `id`'s chart: `days` (YYYY-MM-DD), `groups` a Map of label → Map of
 * day → value. `bars` draws one series as bars.
 */
export function draw(id, days, groups, { bars = false, money = false } = {}) {
  const ranked = [...groups.entries()]
    .map(([label, byDay]) => [label, byDay, [...byDay.values()].reduce((a, b) => a + b, 0)])
    .sort((a, b) => b[2] - a[2] || String(a[0]).localeCompare(String(b[0])));
  const shown = ranked.slice(0, MAX_SERIES);
  const rest = ranked.slice(MAX_SERIES);
  if (rest.length) {
    const other = new Map();
    for (const [, byDay] of rest) {
      for (const [day, v] of byDay) other.set(day, (other.get(day) ?? 0) + v);
    }
    shown.push([`other (${rest.length})`, other, 0]);
  }
  const xs = days.map((d) => Date.parse(`${d}T00:00:00Z`) / 1000);
  const data = [xs, ...shown.map(([, byDay]) => days.map((d) => byDay.get(d) ?? 0))];
  const value = money ? (_, v) => (v == null ? "" : `$${v.toFixed(4)}`) : (_, v) => (v == null ? "" : String(v));
  const series = [
    { label: "day", value: (_, t) => (t == null ? "" : new Date(t * 1000).toISOString().slice(0, 10)) },
    ...shown.map(([label], k) => ({
      label: label === null ? "(none)" : String(label),
      stroke: COLORS[k % COLORS.length],
      fill: bars ? `${COLORS[k % COLORS.length]}66` : undefined,
      width: 2,
      paths: bars ? uPlot.paths.bars({ size: [0.6, 48] }) : undefined,
      points: { show: days.length < 40 },
      value,
    })),
  ];
  const host = document.getElementById(id);
  charts.get(id)?.destroy();
  host.replaceChildren();
  const opts = {
    width: Math.max(320, host.clientWidth || 480),
    height: 220,
    series,
    scales: { x: { time: true }, y: { range: (_, lo, hi) => [0, hi > 0 ? hi * 1.1 : 1] } },
    axes: [{}, { size: money ? 90 : 60, values: (_, ticks) => ticks.map((t) => (money ? `$${t}` : String(t))) }],
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
  };
  charts.set(id, new uPlot(opts, data, host));
}
