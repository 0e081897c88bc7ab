// The page's tables, filled with text nodes only (names and ids come from
// API callers and are never parsed as HTML).

import { count, usd, when } from "./format.js";

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text ?? "";
  if (className) td.className = className;
  return td;
}

function fill(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren(
    ...rows.map(({ cells, testid }) => {
      const tr = document.createElement("tr");
      if (testid) tr.dataset.testid = testid;
      tr.append(...cells);
      return tr;
    }),
  );
}

/** A key's standing now: revoked, expired, rotated (its old secret in grace) or active. */
export function keyStatus(key, nowSeconds) {
  if (key.revoked_at != null) return "revoked";
  if (key.expires_at != null && key.expires_at <= nowSeconds) return "expired";
  return "active";
}

export function usage(rows) {
  const sorted = [...rows].sort((a, b) => b.cost_micros - a.cost_micros || b.requests - a.requests);
  fill(
    "usage-table",
    sorted.map((r) => ({
      cells: [
        cell(r.tenant),
        cell(r.key ?? "(token)"),
        cell(r.model),
        cell(r.version ?? "(cache)"),
        cell(count(r.requests), "n"),
        cell(count(r.input_tokens), "n"),
        cell(count(r.output_tokens), "n"),
        cell(usd(r.cost_usd), "n"),
        cell(count(r.errors), "n"),
        cell(count(r.cache_hits), "n"),
        cell(count(r.degraded), "n"),
      ],
    })),
  );
}

export function keys(list, nowSeconds) {
  fill(
    "keys-table",
    list.map((k) => {
      const status = keyStatus(k, nowSeconds);
      return {
        testid: `key-${k.id}`,
        cells: [
          cell(k.id),
          cell(k.tenant),
          cell(k.name),
          cell(k.prefix),
          cell(status, `status ${status}`),
          cell(when(k.last_used_at)),
          cell(when(k.expires_at, "")),
          cell(k.source),
        ],
      };
    }),
  );
}

export function tenants(list) {
  fill(
    "tenants-table",
    list.map((t) => ({
      testid: `tenant-${t.id}`,
      cells: [
        cell(t.id),
        cell(t.tier),
        cell(Array.isArray(t.models) ? t.models.join(", ") : t.models),
        cell(t.residency ?? "any"),
        cell(t.disabled ? "disabled" : "active", t.disabled ? "status revoked" : "status active"),
        cell(t.source),
      ],
    })),
  );
}

const PHASES = {
  gateway: "gateway (its own work)",
  queue: "queue (sandbox, quota store, replica gate)",
  time_to_first_token: "upstream time to first token",
  time_per_output_token: "time per output token",
  total: "total",
};

const ms = (v) => (v == null ? "–" : `${v.toLocaleString("en-US", { maximumFractionDigits: 3 })} ms`);

export function latency(phases) {
  fill(
    "latency-table",
    phases.map((p) => ({
      testid: `latency-${p.phase}`,
      cells: [
        cell(PHASES[p.phase] ?? p.phase),
        cell(count(p.count), "n"),
        cell(ms(p.p50_ms), "n"),
        cell(ms(p.p90_ms), "n"),
        cell(ms(p.p95_ms), "n"),
        cell(ms(p.p99_ms), "n"),
      ],
    })),
  );
}

/** "left of limit" for a rate, "used of limit" for a window; "–" without a limit. */
const rate = (r) => (r == null ? "–" : `${count(r.remaining)} of ${count(r.burst)}`);
const window_ = (w, money) =>
  w == null ? "–" : money ? `${usd(w.used)} of ${usd(w.limit)}` : `${count(w.used)} of ${count(w.limit)}`;

export function budgets(levels) {
  fill(
    "budgets-table",
    levels.map((l) => ({
      testid: `budget-${l.level}${l.id ? `-${l.id}` : ""}`,
      cells: [
        cell(l.level),
        cell(l.id ?? ""),
        cell(rate(l.requests_per_minute), "n requests"),
        cell(rate(l.tokens_per_minute), "n"),
        cell(window_(l.tokens_per_day), "n"),
        cell(window_(l.cost_per_day_usd, true), "n"),
        cell(window_(l.tokens_per_month), "n"),
        cell(window_(l.cost_per_month_usd, true), "n"),
        cell(l.max_concurrent == null ? "–" : `${l.max_concurrent.in_flight} of ${l.max_concurrent.limit}`, "n"),
      ],
    })),
  );
}

const or = (v, suffix = "") => (v == null ? "–" : `${v}${suffix}`);

export function regions(list) {
  fill(
    "regions-table",
    list.flatMap((region) =>
      region.replicas.map((r) => ({
        testid: `replica-${r.target}`,
        cells: [
          cell(region.name),
          cell(r.name),
          cell(r.health, `status ${r.health === "up" ? "active" : "revoked"}`),
          cell(or(r.latency_ms, " ms"), "n"),
          cell(or(r.capacity), "n"),
          cell(or(r.running), "n"),
          cell(or(r.waiting), "n"),
          cell(r.kv_cache_usage == null ? "–" : `${(100 * r.kv_cache_usage).toFixed(0)}%`, "n"),
          cell(or(r.in_flight), "n"),
          cell(r.ttft_ewma_ms == null ? "–" : `${r.ttft_ewma_ms.toFixed(1)} ms`, "n"),
        ],
      })),
    ),
  );
}
