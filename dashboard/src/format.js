// How numbers, dates and shares are shown.

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const dollars = new Intl.NumberFormat("en-US", {
  style: "currency",
  currency: "USD",
  minimumFractionDigits: 2,
  maximumFractionDigits: 6,
});

export const count = (n) => integer.format(n ?? 0);
export const usd = (n) => dollars.format(n ?? 0);

/** `part` of `whole` as a percentage with one decimal ("–" of nothing). */
export function share(part, whole) {
  return whole ? `${((100 * part) / whole).toFixed(1)}%` : "–";
}

/** Unix seconds as a UTC date and time, or "never". */
export function when(seconds, never = "never") {
  if (seconds === null || seconds === undefined) return never;
  return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

/** A `YYYY-MM-DD` UTC date `days` after `day` (a Date). */
export function isoDay(day, days = 0) {
  const d = new Date(Date.UTC(day.getUTCFullYear(), day.getUTCMonth(), day.getUTCDate() + days));
  return d.toISOString().slice(0, 10);
}

/** Every UTC day from `from` to `to` (inclusive), as `YYYY-MM-DD`. */
export function daysBetween(from, to) {
  const days = [];
  for (let d = new Date(`${from}T00:00:00Z`); isoDay(d) <= to; d = new Date(d.getTime() + 86400000)) {
    days.push(isoDay(d));
    if (days.length > 366) break;
  }
  return days;
}
