use super::*;
use edgegate_core::error::GatewayError;
use edgegate_core::telemetry::Latency;

#[path = "../../tests/support/prometheus.rs"]
mod prometheus;

fn record(model: &str) -> UsageRecord {
    let mut r = UsageRecord::answered(
        "req-1",
        200,
        Latency {
            gateway_us: 300,
            queue_us: 50,
            upstream_first_byte_us: Some(15_000),
            first_token_us: Some(20_000),
            after_first_token_us: Some(100_000),
            total_us: 120_000,
        },
    );
    r.endpoint = Some("chat".into());
    r.model = Some(model.into());
    r.region = Some("eu-west".into());
    r.input_tokens = 12;
    r.output_tokens = 11;
    r.cost_usd = 0.000_25;
    r.cache = CacheStatus::Miss;
    r
}

#[test]
fn label_values_are_escaped() {
    let metrics = Metrics::new(&Observability::default());
    let odd = "a\"quoted\\slashed\nmodel";
    metrics.record(&record(odd));
    metrics.record(&record("plain"));
    metrics.upstream_failure("eu-west", "timeout");
    let text = metrics.render();
    assert!(
        text.contains(r#"model="a\"quoted\\slashed\nmodel""#),
        "the odd model's label, escaped:\n{text}"
    );
    assert!(
        !text.contains("slashed\nmodel"),
        "a raw newline in a label:\n{text}"
    );
}

#[test]
fn each_phase_is_a_histogram_by_endpoint_model_and_region() {
    let metrics = Metrics::new(&Observability::default());
    metrics.record(&record("m"));
    let text = metrics.render();
    let labels = r#"endpoint="chat",model="m",region="eu-west""#;
    for name in [
        "edgegate_request_duration_seconds",
        "edgegate_gateway_duration_seconds",
        "edgegate_queue_duration_seconds",
        "edgegate_time_to_first_token_seconds",
        "edgegate_time_per_output_token_seconds",
    ] {
        let count = format!("{name}_count{{{labels}}} 1");
        assert!(text.contains(&count), "no `{count}`:\n{text}");
    }
    // The first token's time, not the first byte's.
    assert!(
        text.contains(&format!(
            "edgegate_time_to_first_token_seconds_sum{{{labels}}} 0.02"
        )),
        "{text}"
    );
    // 100 ms after the first token over the 10 tokens after it: 10 ms each.
    assert!(
        text.contains(&format!(
            "edgegate_time_per_output_token_seconds_sum{{{labels}}} 0.01"
        )),
        "{text}"
    );
    assert!(text.contains(r#"edgegate_tokens_total{model="m",direction="output"} 11"#));
    assert!(text.contains(r#"edgegate_requests_total{endpoint="chat",status="2xx"} 1"#));
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn tenants_listed_have_series_of_their_own_and_the_rest_are_other() {
    let listed = Observability {
        metrics_tenants: ["acme".to_owned()].into(),
        otlp: None,
    };
    let metrics = Metrics::new(&listed);
    for tenant in ["acme", "initech", "globex"] {
        let mut r = record("m");
        r.tenant = Some(tenant.into());
        metrics.record(&r);
    }
    let text = metrics.render();
    assert!(
        text.contains(r#"edgegate_tenant_requests_total{tenant="acme",status="2xx"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"edgegate_tenant_requests_total{tenant="other",status="2xx"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"edgegate_tenant_tokens_total{tenant="other",direction="output"} 22"#),
        "{text}"
    );
    assert!(!text.contains("initech"), "{text}");
}

#[test]
fn fallbacks_and_safety_triggers_are_counted() {
    let metrics = Metrics::new(&Observability::default());
    let mut failed_over = record("m");
    failed_over.fallback = Some(edgegate_core::telemetry::Fallback::Region);
    metrics.record(&failed_over);
    let mut other_model = record("small");
    other_model.fallback = Some(edgegate_core::telemetry::Fallback::Model);
    other_model.safety.injection_rule = Some("ignore_previous".into());
    other_model.safety.redactions.emails = 2;
    metrics.record(&other_model);
    let mut blocked = record("m");
    blocked.status = 400;
    blocked.error = Some(GatewayError::CONTENT_BLOCKED.into());
    metrics.record(&blocked);
    let text = metrics.render();
    for line in [
        r#"edgegate_fallbacks_total{kind="region"} 1"#,
        r#"edgegate_fallbacks_total{kind="model"} 1"#,
        r#"edgegate_safety_triggers_total{action="flagged",kind="prompt_injection"} 1"#,
        r#"edgegate_safety_triggers_total{action="blocked",kind="prompt_injection"} 1"#,
        r#"edgegate_safety_triggers_total{action="redacted",kind="email"} 2"#,
    ] {
        assert!(text.contains(line), "no `{line}`:\n{text}");
    }
    assert!(
        !text.contains(r#"kind="phone""#),
        "no phone was redacted:\n{text}"
    );
}

#[test]
fn the_exposition_passes_prometheus_clients_parser() {
    let metrics = Metrics::new(&Observability::default());
    let odd = "a\"quoted\\slashed\nmodel";
    metrics.record(&record(odd));
    let mut failed = record("plain");
    failed.status = 503;
    failed.error = Some("upstream_unavailable".into());
    failed.fallback = Some(edgegate_core::telemetry::Fallback::Region);
    metrics.record(&failed);
    metrics.upstream_failure("eu-west", "timeout");
    let families = prometheus::parse(&metrics.render());
    // The odd label value reads back as it was.
    let tokens = prometheus::sample(
        &families,
        "edgegate_tokens",
        "edgegate_tokens_total",
        &[("model", odd), ("direction", "output")],
    );
    assert_eq!(tokens, Some(11.0), "{families}");
    for (name, kind) in [
        ("edgegate_requests", "counter"),
        ("edgegate_errors", "counter"),
        ("edgegate_fallbacks", "counter"),
        ("edgegate_upstream_failures", "counter"),
        ("edgegate_cost_usd", "counter"),
        ("edgegate_request_duration_seconds", "histogram"),
        ("edgegate_gateway_duration_seconds", "histogram"),
        ("edgegate_queue_duration_seconds", "histogram"),
        ("edgegate_time_to_first_token_seconds", "histogram"),
        ("edgegate_time_per_output_token_seconds", "histogram"),
    ] {
        assert_eq!(prometheus::family_type(&families, name), kind, "{name}");
    }
    let served = prometheus::sample(
        &families,
        "edgegate_request_duration_seconds",
        "edgegate_request_duration_seconds_count",
        &[("model", odd), ("region", "eu-west")],
    );
    assert_eq!(served, Some(1.0), "{families}");
    let failed = prometheus::sample(
        &families,
        "edgegate_requests",
        "edgegate_requests_total",
        &[("status", "5xx")],
    );
    assert_eq!(failed, Some(1.0), "{families}");
}
