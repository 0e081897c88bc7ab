//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): a client's
//! `traceparent` is continued to the backend with the gateway's own span as
//! the parent (and its `tracestate` passed on unchanged); a request without
//! a valid one starts a trace whose id is the request id's 128 bits, so a
//! usage record and a backend's logs meet on one id. A trace the client
//! started keeps its sampled flag (parent-based sampling); one the gateway
//! starts is sampled when its id's rightmost 56 bits fall under the sample
//! ratio (OpenTelemetry's `TraceIdRatioBased`), and the backend is told
//! which. The gateway's span id,
//! and each upstream attempt's (the parent a backend is sent), are derived
//! from the request id: stable, and the same on every host.

use crate::routing::stable_hash;

/// The trace a request belongs to, and the gateway's span in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// The gateway's span: 16 lowercase hex digits.
    pub span_id: String,
    /// The client's span, when it sent a valid `traceparent`.
    pub parent_id: Option<String>,
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
    /// The client's `tracestate`, passed on as it came.
    pub tracestate: Option<String>,
}

/// `tracestate` longer than this is dropped (the spec's limit is 32
/// members of at most 256 characters; a header this long is not one).
const MAX_TRACESTATE: usize = 512;

impl TraceContext {
    /// The trace of a request with these headers' `traceparent` and
    /// `tracestate`, and id `request_id`; a new trace is sampled at
    /// `sample_ratio` (0 to 1).
    pub fn for_request(
        traceparent: Option<&str>,
        tracestate: Option<&str>,
        request_id: &str,
        sample_ratio: f64,
    ) -> TraceContext {
        let span = stable_hash(&["edgegate-span", request_id]);
        let span_id = format!("{:016x}", span.max(1));
        match traceparent.and_then(parse) {
            Some((trace_id, parent_id, flags)) => TraceContext {
                trace_id,
                span_id,
                parent_id: Some(parent_id),
                flags,
                tracestate: tracestate
                    .map(str::trim)
                    .filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE && s.is_ascii())
                    .map(str::to_owned),
            },
            None => {
                let trace_id = new_trace_id(request_id);
                let flags = u8::from(ratio_samples(&trace_id, sample_ratio));
                TraceContext {
                    trace_id,
                    span_id,
                    parent_id: None,
                    flags,
                    tracestate: None,
                }
            }
        }
    }

    /// Whether the trace is sampled (flags bit 0): only then are its
    /// spans exported.
    pub fn sampled(&self) -> bool {
        self.flags & 0x01 == 0x01
    }

    /// The span of upstream attempt `attempt` (its index in the plan),
    /// a child of the gateway's.
    pub fn attempt_span_id(&self, attempt: usize) -> String {
        let index = attempt.to_string();
        let span = stable_hash(&["edgegate-attempt", &self.span_id, &index]);
        format!("{:016x}", span.max(1))
    }

    /// The `traceparent` a backend gets: this trace, with `span_id` (an
    /// attempt's span) as its parent.
    pub fn traceparent(&self, span_id: &str) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, span_id, self.flags)
    }
}

/// Whether a new trace with `trace_id` (32 hex digits) is sampled at
/// `ratio`: its rightmost 56 bits, the random part, under `ratio` × 2⁵⁶.
fn ratio_samples(trace_id: &str, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let low = trace_id
        .get(18..32)
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .unwrap_or(0);
    (low as f64) < ratio * (1u64 << 56) as f64
}

/// The trace id, parent id and flags of a valid version-00 `traceparent`
/// (a later version is read by its first four fields, as the spec asks).
fn parse(header: &str) -> Option<(String, String, u8)> {
    let header = header.trim();
    let mut parts = header.split('-');
    let (version, trace_id, parent_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = lower_hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && lower_hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && lower_hex(parent_id, 16)
        && parent_id.bytes().any(|b| b != b'0')
        && lower_hex(flags, 2);
    if !valid {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace_id.to_owned(), parent_id.to_owned(), flags))
}

/// A new trace's id: the request id's 32 hex digits when it is one of ours
/// (`req_` + 32 hex), else a hash of it.
fn new_trace_id(request_id: &str) -> String {
    let ours = request_id
        .strip_prefix("req_")
        .filter(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
        .filter(|hex| hex.bytes().any(|b| b != b'0'));
    ours.unwrap_or_else(|| {
        let a = stable_hash(&["edgegate-trace", request_id]);
        let b = stable_hash(&["edgegate-trace-2", request_id]);
        format!("{a:016x}{b:016x}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "req_4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn a_clients_trace_is_continued_with_the_gateways_span() {
        let t = TraceContext::for_request(
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            Some("congo=t61rcWkgMzE"),
            ID,
            1.0,
        );
        assert_eq!(t.trace_id, "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(t.flags, 1);
        assert_eq!(t.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
        assert_eq!(t.parent_id.as_deref(), Some("b7ad6b7169203331"));
        let first = t.attempt_span_id(0);
        let sent = t.traceparent(&first);
        assert!(
            sent.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
            "{sent}"
        );
        assert_eq!(&sent[36..52], first, "the attempt is the parent");
        assert_ne!(first, t.span_id);
        assert_ne!(first, t.attempt_span_id(1), "each attempt its own span");
        assert_eq!(sent.len(), 55);
        // The same request id: the same span, on every host.
        assert_eq!(
            t,
            TraceContext::for_request(
                Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                Some("congo=t61rcWkgMzE"),
                ID,
                1.0,
            )
        );
    }

    #[test]
    fn an_invalid_or_missing_traceparent_starts_a_trace_named_by_the_request() {
        for bad in [
            None,
            Some(""),
            Some("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"),
            Some("00-00000000000000000000000000000000-b7ad6b7169203331-01"),
            Some("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"),
            Some("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra"),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033-01"),
        ] {
            let t = TraceContext::for_request(bad, Some("a=b"), ID, 1.0);
            assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", "{bad:?}");
            assert_eq!((t.flags, t.tracestate.as_deref()), (1, None), "{bad:?}");
            assert_eq!(t.parent_id, None, "{bad:?}");
        }
        // A later version is read by its first four fields.
        let later = "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-future";
        let t = TraceContext::for_request(Some(later), None, ID, 1.0);
        assert_eq!(
            (t.trace_id.as_str(), t.flags),
            ("0af7651916cd43dd8448eb211c80319c", 0)
        );
        assert!(!t.sampled());
        // An id that is not ours still gets a 128-bit trace id.
        let t = TraceContext::for_request(None, None, "req-1", 1.0);
        assert_eq!(t.trace_id.len(), 32);
        assert!(t.trace_id.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn a_new_trace_is_sampled_at_the_ratio_and_a_clients_keeps_its_flag() {
        let ids: Vec<String> = (0..2000).map(|i| format!("req-{i}")).collect();
        let sampled = |ratio: f64| {
            ids.iter()
                .filter(|id| TraceContext::for_request(None, None, id, ratio).sampled())
                .count()
        };
        assert_eq!(sampled(1.0), 2000);
        assert_eq!(sampled(0.0), 0);
        let tenth = sampled(0.1);
        assert!((150..=250).contains(&tenth), "{tenth} of 2000 at 0.1");
        // The same request id, the same decision, on every host; the flag
        // the backend is sent says it.
        let t = TraceContext::for_request(None, None, ID, 0.0);
        assert!(!t.sampled());
        assert!(t.traceparent(&t.attempt_span_id(0)).ends_with("-00"));
        // A client's trace keeps its own flag, whatever the ratio.
        let client = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert!(TraceContext::for_request(Some(client), None, ID, 0.0).sampled());
        let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
        assert!(!TraceContext::for_request(Some(unsampled), None, ID, 1.0).sampled());
    }
}
