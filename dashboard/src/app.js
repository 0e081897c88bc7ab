// edgegate's dashboard: signs in with the admin key, then shows what the
// admin API says — the usage ledger's spend, tokens and rates over a range
// of UTC days, per tenant, key and model, and the tenants and keys.

import "./app.css";
import * as api from "./api.js";
import { draw } from "./charts.js";
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

/** Rows of a report grouped by `day` and `by` as label → day → measure. */
function byGroup(rows, by, measure) {
  const groups = new Map();
  for (const row of rows) {
    const label = by === "model" ? row.model : row[by] ?? "(token)";
    const byDay = groups.get(label) ?? new Map();
    byDay.set(row.day, (byDay.get(row.day) ?? 0) + measure(row));
    groups.set(label, byDay);
  }
  return groups;
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
    const [daily, series, detail, keys, tenants] = await Promise.all([
      api.get("/admin/v1/usage", { ...range, group_by: "day" }),
      api.get("/admin/v1/usage", { ...range, group_by: `day,${by}` }),
      api.get("/admin/v1/usage", { ...range, group_by: "tenant,key,model" }),
      api.get("/admin/v1/keys", { tenant }),
      api.get("/admin/v1/tenants"),
    ]);
    const days = daysBetween(daily.from, daily.to);
    setTotals(daily.total);
    draw("chart-spend", days, byGroup(series.data, by, (r) => r.cost_usd), { money: true });
    draw("chart-tokens", days, byGroup(series.data, by, (r) => r.input_tokens + r.output_tokens));
    const outcomes = new Map([
      ["requests", new Map(daily.data.map((r) => [r.day, r.requests]))],
      ["errors", new Map(daily.data.map((r) => [r.day, r.errors]))],
      ["cache hits", new Map(daily.data.map((r) => [r.day, r.cache_hits]))],
      ["degraded", new Map(daily.data.map((r) => [r.day, r.degraded]))],
    ]);
    draw("chart-requests", days, outcomes, { bars: false });
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
