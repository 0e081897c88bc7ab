//! What the admin commands print: aligned columns, or one object's fields
//! a line each.

use serde_json::Value;

/// A cell: `-` for nothing, strings bare, lists comma-separated.
fn cell(value: &Value, name: &str) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Number(n) if name == "cost_usd" => format!("{:.6}", n.as_f64().unwrap_or(0.0)),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::Array(items) => items
            .iter()
            .map(|v| cell(v, name))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// Rows of cells under their column names: the first `dimensions` columns
/// left-aligned, the rest (counts) right-aligned.
fn aligned(columns: &[&str], rows: Vec<Vec<String>>, dimensions: usize) -> String {
    let mut rows = rows;
    rows.insert(0, columns.iter().map(|c| (*c).to_owned()).collect());
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (v, w))| {
                if i < dimensions {
                    format!("{v:<w$}")
                } else {
                    format!("{v:>w$}")
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A list answer's `data` as columns, all left-aligned.
pub fn list(answer: &Value, columns: &[&str]) -> String {
    let rows = answer["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| columns.iter().map(|c| cell(&row[*c], c)).collect())
        .collect();
    aligned(columns, rows, columns.len())
}

/// One object's fields, a line each.
pub fn object(answer: &Value) -> String {
    let Some(fields) = answer.as_object() else {
        return format!("{answer}\n");
    };
    let width = fields.keys().map(String::len).max().unwrap_or(0);
    fields
        .iter()
        .map(|(name, value)| format!("{name:<width$}  {}\n", cell(value, name)))
        .collect()
}

/// A usage report as aligned columns: its groups, then the counts; a total last.
pub fn usage(report: &Value) -> String {
    let mut columns: Vec<&str> = Vec::new();
    for by in report["group_by"].as_array().into_iter().flatten() {
        match by.as_str() {
            Some("model") => columns.extend(["model", "version"]),
            Some(other) => columns.push(other),
            None => {}
        }
    }
    let dimensions = columns.len();
    columns.extend([
        "requests",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "errors",
        "cache_hits",
        "degraded",
    ]);
    let mut rows: Vec<Vec<String>> = report["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| columns.iter().map(|c| cell(&row[*c], c)).collect())
        .collect();
    let total = &report["total"];
    rows.push(
        columns
            .iter()
            .enumerate()
            .map(|(i, c)| match i {
                0 => "total".to_owned(),
                i if i < dimensions => String::new(),
                _ => cell(&total[*c], c),
            })
            .collect(),
    );
    aligned(&columns, rows, dimensions)
}

/// A latency report's phases: requests and percentiles (ms), a line each.
pub fn latency(report: &Value) -> String {
    let columns = ["phase", "requests", "p50_ms", "p90_ms", "p95_ms", "p99_ms"];
    let rows = report["phases"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            columns
                .iter()
                .map(|c| match *c {
                    "requests" => cell(&row["count"], c),
                    c => cell(&row[c], c),
                })
                .collect()
        })
        .collect();
    aligned(&columns, rows, 1)
}

/// "left/burst" of a rate, "used/limit" of a window, "-" without one.
fn headroom(v: &Value, rate: bool) -> String {
    let n = |name: &str| match &v[name] {
        Value::Number(n) => n.to_string(),
        _ => "?".to_owned(),
    };
    match (v, rate) {
        (Value::Null, _) => "-".to_owned(),
        (_, true) => format!("{}/{}", n("remaining"), n("burst")),
        (_, false) => format!("{}/{}", n("used"), n("limit")),
    }
}

/// A budget report: a level a line, with what is left.
pub fn budgets(report: &Value) -> String {
    let columns = [
        "level",
        "id",
        "requests_left",
        "tokens_left",
        "tokens_today",
        "usd_today",
        "tokens_month",
        "usd_month",
    ];
    let rows = report["levels"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            vec![
                cell(&l["level"], "level"),
                cell(&l["id"], "id"),
                headroom(&l["requests_per_minute"], true),
                headroom(&l["tokens_per_minute"], true),
                headroom(&l["tokens_per_day"], false),
                headroom(&l["cost_per_day_usd"], false),
                headroom(&l["tokens_per_month"], false),
                headroom(&l["cost_per_month_usd"], false),
            ]
        })
        .collect();
    aligned(&columns, rows, 2)
}

/// The regions: a replica a line.
pub fn regions(answer: &Value) -> String {
    let fields = [
        "health",
        "latency_ms",
        "capacity",
        "running",
        "waiting",
        "in_flight",
        "ttft_ewma_ms",
    ];
    let rows = answer["data"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|region| {
            region["replicas"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |r| {
                    let mut row = vec![cell(&region["name"], "region"), cell(&r["name"], "name")];
                    row.extend(fields.iter().map(|f| cell(&r[*f], f)));
                    row
                })
        })
        .collect();
    let mut columns = vec!["region", "replica"];
    columns.extend(fields);
    aligned(&columns, rows, 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_report_prints_as_aligned_columns_with_a_total() {
        let report = json!({
            "group_by": ["model"],
            "data": [
                {"model": "chat", "version": "v1", "requests": 2, "input_tokens": 20,
                 "output_tokens": 6, "cost_usd": 0.000032, "errors": 0, "cache_hits": 0, "degraded": 0},
                {"model": "chat", "version": null, "requests": 1, "input_tokens": 0,
                 "output_tokens": 0, "cost_usd": 0.0, "errors": 0, "cache_hits": 1, "degraded": 0},
            ],
            "total": {"requests": 3, "input_tokens": 20, "output_tokens": 6, "cost_usd": 0.000032,
                      "errors": 0, "cache_hits": 1, "degraded": 0},
        });
        let table = usage(&report);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("model  version  requests"), "{table}");
        assert!(lines[1].contains("0.000032"), "{table}");
        assert!(lines[2].starts_with("chat   -"), "{table}");
        assert!(lines[3].starts_with("total"), "{table}");
        assert!(lines[3].contains(" 3 "), "{table}");
    }

    #[test]
    fn a_latency_report_prints_a_phase_a_line() {
        let report = json!({"phases": [
            {"phase": "gateway", "count": 4, "p50_ms": 0.3, "p90_ms": 0.6, "p95_ms": 0.7, "p99_ms": 0.74},
            {"phase": "time_per_output_token", "count": 0, "p50_ms": null, "p90_ms": null,
             "p95_ms": null, "p99_ms": null},
        ]});
        let table = latency(&report);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("phase"), "{table}");
        assert!(
            lines[1].starts_with("gateway") && lines[1].contains(" 4 "),
            "{table}"
        );
        assert!(lines[1].trim_end().ends_with("0.74"), "{table}");
        assert!(lines[2].trim_end().ends_with('-'), "{table}");
    }

    #[test]
    fn budgets_and_regions_print_a_line_each() {
        let report = json!({"levels": [
            {"level": "tenant", "requests_per_minute": {"remaining": 97, "burst": 100},
             "tokens_per_minute": null, "tokens_per_day": {"used": 87, "limit": 1000},
             "cost_per_day_usd": null, "tokens_per_month": null, "cost_per_month_usd": null},
            {"level": "key", "id": "key_1", "requests_per_minute": {"remaining": 17, "burst": 20},
             "tokens_per_minute": null, "tokens_per_day": null,
             "cost_per_day_usd": {"used": 0.5, "limit": 5.0}, "tokens_per_month": null,
             "cost_per_month_usd": null},
        ]});
        let table = budgets(&report);
        let cells: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            cells[1],
            ["tenant", "-", "97/100", "-", "87/1000", "-", "-", "-"],
            "{table}"
        );
        assert_eq!(
            cells[2],
            ["key", "key_1", "17/20", "-", "-", "0.5/5.0", "-", "-"],
            "{table}"
        );
        let answer = json!({"data": [{"name": "eu", "replicas": [
            {"name": "a", "health": "up", "latency_ms": 22, "capacity": null, "running": 3,
             "waiting": 0, "in_flight": 1, "ttft_ewma_ms": 21.5},
            {"name": "b", "health": "down", "latency_ms": null, "capacity": 8, "running": null,
             "waiting": null, "in_flight": 0, "ttft_ewma_ms": null},
        ]}]});
        let table = regions(&answer);
        let cells: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(cells.len(), 3, "{table}");
        assert_eq!(
            cells[1],
            ["eu", "a", "up", "22", "-", "3", "0", "1", "21.5"],
            "{table}"
        );
        assert_eq!(
            cells[2],
            ["eu", "b", "down", "-", "8", "-", "-", "0", "-"],
            "{table}"
        );
    }

    #[test]
    fn a_list_and_an_object_print_their_fields() {
        let answer = json!({"data": [
            {"id": "acme", "tier": "pro", "ip_allow": ["10.0.0.0/8", "::1/128"], "residency": null},
            {"id": "b", "tier": "free", "ip_allow": [], "residency": "eu"},
        ]});
        let table = list(&answer, &["id", "tier", "ip_allow", "residency"]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "id    tier  ip_allow            residency");
        assert_eq!(lines[1], "acme  pro   10.0.0.0/8,::1/128  -");
        assert_eq!(lines[2], "b     free  -                   eu");
        let one = object(&json!({"id": "key_1", "key": "sk-eg-x"}));
        assert_eq!(one, "id   key_1\nkey  sk-eg-x\n");
    }
}
