// edgegate's dashboard: signs in with the admin key, then shows what the
// admin API says — the usage ledger's spend, tokens and rates over a range
// of UTC days, per tenant, key and model; latency percentiles per phase and
// the request rate per hour; a tenant's budget headroom; the regions' and
// replicas' health and load; and the tenants and keys.

import "./app.css";
import * as api from "./api.js";
import { draw, largest } from "./charts.js";
import { count, daysBetween, isoDay, share, usd } from "./format.js";
import * as tables from "./tables.js";

const $ = (id) => document.getElementById(id);

function show(signedIn) {
  $("sign-in").hidden = signedIn;
  $("board").hidden = !signedIn;
  $("signed-in").hidden = !signedIn;
}

function setTotals(total) {
  const requests = total.requests ?? 0;
  const out = (id, text) => {
    document.querySelector(`[data-testid="${id}"]`).textContent = text;
  };
  out("total-requests", count(requests));
  out("total-input-tokens", count(total.input_tokens));
  out("total-output-tokens", count(total.output_tokens));
  out("total-cost", usd(total.cost_usd));
  out("error-rate", share(total.errors, requests));
  out("cache-hit-rate", share(total.cache_hits, requests));
  out("degraded-rate", share(total.degraded, requests));
}

const unixDay = (day) => Date.parse(`${day}T00:00:00Z`) / 1000;

/** Rows of a report grouped by `day` and `by` as label → day (Unix s) → measure. */
function byGroup(rows, by, measure) {
  const groups = new Map();
  for (const row of rows) {
    const label = by === "model" ? row.model : row[by] ?? "(token)";
    const byDay = groups.get(label) ?? new Map();
    const x = unixDay(row.day);
    byDay.set(x, (byDay.get(x) ?? 0) + measure(row));
    groups.set(label, byDay);
  }
  return largest(groups);
}

/** The latency report's range: at most the 31 days the stores keep, ending at `to`. */
function latencyFrom(from, to) {
  const earliest = isoDay(new Date(`${to}T00:00:00Z`), -30);
  return from < earliest ? earliest : from;
}

/** Each phase's percentiles, and per hour the request rate and the p95s. */
function showLatency(report) {
  tables.latency(report.phases);
  const first = unixDay(report.from);
  const last = unixDay(report.to) + 23 * 3600;
  const xs = [];
  for (let t = first; t <= last; t += 3600) xs.push(t);
  const rate = new Map(report.hours.map((h) => [h.hour, h.requests / 60]));
  draw("chart-rate", xs, new Map([["requests / min", rate]]), { hours: true });
  const p95 = new Map();
  for (const phase of ["total", "time_to_first_token", "gateway", "queue"]) {
    p95.set(phase, new Map(report.hours.filter((h) => h.phases[phase]).map((h) => [h.hour, h.phases[phase].p95_ms])));
  }
  draw("chart-latency", xs, p95, { hours: true, gaps: true, unit: " ms" });
}

/** A tenant's budgets, or why none show (every tenant chosen; a refusal). */
function showBudgets(report) {
  const note = $("budgets-note");
  if (report === null) {
    note.textContent = "Choose a tenant to see what is left of its budgets and its keys'.";
    tables.budgets([]);
  } else if (report instanceof Error) {
    if (report instanceof api.ApiError && report.status === 401) throw report;
    note.textContent = report.message;
    tables.budgets([]);
  } else {
    note.textContent = "";
    tables.budgets(report.levels);
  }
}

async function load() {
  const tenant = $("tenant").value;
  const from = $("from").value;
  const to = $("to").value;
  const by = $("series-by").value;
  $("status").textContent = "loading…";
  $("error").textContent = "";
  try {
    const range = { tenant, from, to };
    const [daily, series, detail, latency, budgets, regions, keys, tenants] = await Promise.all([
      api.get("/admin/v1/usage", { ...range, group_by: "day" }),
      api.get("/admin/v1/usage", { ...range, group_by: `day,${by}` }),
      api.get("/admin/v1/usage", { ...range, group_by: "tenant,key,model" }),
      api.get("/admin/v1/latency", { tenant, from: latencyFrom(from, to), to }),
      tenant ? api.get("/admin/v1/budgets", { tenant }).catch((e) => e) : null,
      api.get("/admin/v1/regions"),
      api.get("/admin/v1/keys", { tenant }),
      api.get("/admin/v1/tenants"),
    ]);
    const days = daysBetween(daily.from, daily.to).map(unixDay);
    setTotals(daily.total);
    draw("chart-spend", days, byGroup(series.data, by, (r) => r.cost_usd), { money: true });
    draw("chart-tokens", days, byGroup(series.data, by, (r) => r.input_tokens + r.output_tokens));
    const perDay = (measure) => new Map(daily.data.map((r) => [unixDay(r.day), measure(r)]));
    const outcomes = new Map([
      ["requests", perDay((r) => r.requests)],
      ["errors", perDay((r) => r.errors)],
      ["cache hits", perDay((r) => r.cache_hits)],
      ["degraded", perDay((r) => r.degraded)],
    ]);
    draw("chart-requests", days, outcomes);
    showLatency(latency);
    showBudgets(budgets);
    tables.regions(regions.data);
    tables.usage(detail.data);
    tables.keys(keys.data, Date.now() / 1000);
    tables.tenants(tenant ? tenants.data.filter((t) => t.id === tenant) : tenants.data);
    $("status").textContent = `as of ${new Date().toISOString().slice(11, 19)} UTC`;
    document.body.dataset.loaded = "true";
  } catch (e) {
    if (e instanceof api.ApiError && e.status === 401) {
      api.forgetKey();
      show(false);
      $("sign-in-error").textContent = e.message;
      return;
    }
    $("status").textContent = "";
    $("error").textContent = e.message;
  }
}

async function start() {
  const tenants = await api.get("/admin/v1/tenants");
  const select = $("tenant");
  select.replaceChildren(select.options[0]);
  for (const t of tenants.data) {
    const option = document.createElement("option");
    option.value = option.textContent = t.id;
    select.append(option);
  }
  const fromUrl = new URLSearchParams(location.search).get("tenant");
  if (fromUrl) select.value = fromUrl;
  show(true);
  await load();
}

async function signIn(event) {
  event.preventDefault();
  $("sign-in-error").textContent = "";
  api.saveKey($("admin-key").value);
  $("admin-key").value = "";
  try {
    await start();
  } catch (e) {
    api.forgetKey();
    show(false);
    $("sign-in-error").textContent =
      e instanceof api.ApiError && e.status === 404 ? "The admin API is off on this gateway." : e.message;
  }
}

function init() {
  const today = new Date();
  $("to").value = isoDay(today);
  $("from").value = isoDay(today, -13);
  $("sign-in").addEventListener("submit", signIn);
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  $("sign-out").addEventListener("click", () => {
    api.forgetKey();
    document.body.dataset.loaded = "";
    show(false);
  });
  if (api.savedKey()) {
    start().catch(() => {
      api.forgetKey();
      show(false);
    });
  } else {
    show(false);
  }
}

init();
