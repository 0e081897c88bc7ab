//! Usage events: each request's `UsageRecord` as one JSON log line and one
//! Analytics Engine data point (binding `USAGE`). Records never hold keys,
//! tokens or prompt text.

use edgegate_core::telemetry::UsageRecord;
use worker::{AnalyticsEngineDataPointBuilder, Env, console_log, console_warn};

const BINDING: &str = "USAGE";

/// Data point layout, for queries (the README's Analytics Engine queries):
/// - index: tenant;
/// - blobs: 1 tenant, 2 model, 3 version, 4 region, 5 cache
///   (HIT/MISS/BYPASS/COALESCED/STALE/OFF), 6 tier, 7 endpoint, 8 error
///   label, 9 request id, 10 degraded reason, 11 fallback (`region`,
///   `model`), 12 flagged injection rule;
/// - doubles: 1 input tokens, 2 output tokens, 3 cost (USD), 4 total
///   latency (ms), 5 upstream first byte (ms), 6 HTTP status, 7 upstream
///   attempts, 8 the gateway's own work (ms), 9 queue (ms), 10 time to
///   first token (ms), 11 time per output token after the first (ms, streams),
///   12 PII redactions.
pub fn emit(env: &Env, record: &UsageRecord) {
    match serde_json::to_string(record) {
        Ok(line) => console_log!("{line}"),
        Err(e) => console_warn!("edgegate: usage record not serialisable: {e}"),
    }
    // Unbound (e.g. a local run without the dataset): the log line is all there is.
    let Ok(dataset) = env.analytics_engine(BINDING) else {
        return;
    };
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let tenant = text(&record.tenant);
    let ms = |us: u64| us as f64 / 1000.0;
    let written = AnalyticsEngineDataPointBuilder::new()
        .indexes([tenant.as_str()])
        .blobs([
            tenant.clone(),
            text(&record.model),
            text(&record.version),
            text(&record.region),
            record.cache.header_value().unwrap_or("OFF").to_owned(),
            text(&record.tier),
            text(&record.endpoint),
            text(&record.error),
            record.request_id.clone(),
            text(&record.degraded),
            record
                .fallback
                .map_or_else(String::new, |f| f.label().to_owned()),
            text(&record.safety.injection_rule),
        ])
        .doubles([
            record.input_tokens as f64,
            record.output_tokens as f64,
            record.cost_usd,
            ms(record.latency.total_us),
            record.latency.upstream_first_byte_us.map_or(0.0, ms),
            f64::from(record.status),
            f64::from(record.attempts),
            ms(record.latency.gateway_us),
            ms(record.latency.queue_us),
            record.latency.first_token_us.map_or(0.0, ms),
            record.time_per_output_token_s().map_or(0.0, |s| s * 1e3),
            f64::from(record.safety.redactions.total()),
        ])
        .write_to(&dataset);
    if let Err(e) = written {
        console_warn!("edgegate: usage data point not written: {e}");
    }
}
