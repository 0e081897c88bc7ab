//! Usage events: each request's `UsageRecord` as one JSON log line and one
//! Analytics Engine data point (binding `USAGE`). Records never hold keys,
//! tokens or prompt text.

use edgegate_core::telemetry::UsageRecord;
use worker::{AnalyticsEngineDataPointBuilder, Env, console_log, console_warn};

const BINDING: &str = "USAGE";

/// Data point layout, for queries:
/// - index: tenant;
/// - blobs: tenant, model, version, region, cache (HIT/MISS/BYPASS/OFF),
///   tier, endpoint, error label, request id;
/// - doubles: input tokens, output tokens, cost (USD), total latency (ms),
///   upstream first byte (ms), HTTP status, upstream attempts.
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
        ])
        .doubles([
            record.input_tokens as f64,
            record.output_tokens as f64,
            record.cost_usd,
            ms(record.latency.total_us),
            record.latency.upstream_first_byte_us.map_or(0.0, ms),
            f64::from(record.status),
            f64::from(record.attempts),
        ])
        .write_to(&dataset);
    if let Err(e) = written {
        console_warn!("edgegate: usage data point not written: {e}");
    }
}
