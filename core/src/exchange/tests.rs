use super::*;
use crate::error::LimitKind;
use crate::gateway::RequestContext;
use crate::geo::ClientGeo;
use crate::quota::QuotaSnapshot;
use crate::request::Headers;
use crate::telemetry::Fallback;
use crate::testing::*;
use serde_json::{Value, json};

const T0: u64 = 5_000_000;

fn near_new_york() -> RequestContext {
    RequestContext {
        client_geo: Some(ClientGeo {
            latitude: Some(40.7),
            longitude: Some(-74.0),
            ..Default::default()
        }),
        ..ctx()
    }
}

fn exchange(g: &Gateway, body: &Value, headers: Headers) -> Exchange {
    let req = post("/v1/chat/completions", headers, body);
    Exchange::new(g.admit(&req, &near_new_york()), "req-1", T0)
}

fn chat(g: &Gateway, body: &Value) -> Exchange {
    exchange(g, body, headers_with_key("sk-acme-test-key-1"))
}

fn streamed(content: &str) -> Value {
    let mut body = chat_body(content);
    body["stream"] = json!(true);
    body
}

fn snapshot() -> QuotaSnapshot {
    QuotaSnapshot {
        limit_requests: 100,
        remaining_requests: 99,
        reset_requests_ms: 600,
        limit_tokens: 10_000,
        remaining_tokens: 9_000,
        reset_tokens_ms: 6_000,
    }
}

fn admitted() -> Event {
    Event::Reserved(Ok(ReserveOutcome::Admit {
        snapshot: snapshot(),
    }))
}

fn json_head() -> Event {
    Event::Head {
        status: 200,
        content_type: Some("application/json".into()),
    }
}

fn sse_head() -> Event {
    Event::Head {
        status: 200,
        content_type: Some("text/event-stream; charset=utf-8".into()),
    }
}

const ANSWER: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hi there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14}}"#;

/// `body` as the cache keeps it, stored `age_ms` before the request.
fn kept(age_ms: u64, body: &str) -> Vec<u8> {
    crate::cache::wrap_stored(crate::testing::NOW_MS - age_ms, body.as_bytes())
}

/// What a `Store` keeps, without its stored-at line.
fn unkept(kept: &[u8]) -> &[u8] {
    crate::cache::unwrap_stored(kept).expect("a kept answer").1
}

fn answer() -> Event {
    Event::Body(ANSWER.as_bytes().to_vec())
}

fn frame(delta: Value, finish: Value) -> Vec<u8> {
    let chunk = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {chunk}\n\n").into_bytes()
}

fn role_only() -> Vec<u8> {
    frame(json!({"role": "assistant", "content": ""}), Value::Null)
}

fn content(text: &str) -> Vec<u8> {
    frame(json!({"content": text}), Value::Null)
}

fn closing() -> Vec<u8> {
    let mut bytes = frame(json!({}), json!("stop"));
    let usage = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}});
    bytes.extend(format!("data: {usage}\n\ndata: [DONE]\n\n").into_bytes());
    bytes
}

/// Plays the host: answers every action that asks for one with the next
/// scripted event, 1 ms apart, and returns every action in order. Checks
/// the one invariant every path keeps: exactly one record, and it is last.
fn drive(g: &Gateway, ex: &mut Exchange, script: Vec<Event>) -> Vec<Action> {
    let mut script = script.into_iter();
    let mut now = T0;
    let mut log = Vec::new();
    while let Some(action) = ex.poll() {
        let asks = matches!(
            action,
            Action::Reserve { .. }
                | Action::Acquire { .. }
                | Action::LookupCache { .. }
                | Action::Send { .. }
                | Action::ReadBody { .. }
                | Action::ReadChunk { .. }
        );
        // After a head, the body `Send::read` names is read without asking.
        let read = match &action {
            Action::Send { read, .. } => Some(*read),
            _ => None,
        };
        log.push(action);
        if asks && let Some(event) = script.next() {
            let body_follows = match (&event, read) {
                (Event::Head { status, .. }, Some(read)) => read.for_status(*status).is_some(),
                _ => false,
            };
            now += 1_000;
            ex.handle(g, event, now);
            if body_follows && let Some(body) = script.next() {
                now += 1_000;
                ex.handle(g, body, now);
            }
        }
    }
    assert_eq!(script.next(), None, "every scripted event was asked for");
    let records = log
        .iter()
        .filter(|a| matches!(a, Action::Record(_)))
        .count();
    assert_eq!(records, 1, "{log:#?}");
    assert!(matches!(log.last(), Some(Action::Record(_))), "{log:#?}");
    assert!(ex.is_done());
    log
}

/// The settlement's amounts and ledger entry.
fn settled(log: &[Action]) -> (Amounts, &LedgerEntry) {
    log.iter()
        .find_map(|a| match a {
            Action::Settle { actual, ledger } => Some((*actual, &**ledger)),
            _ => None,
        })
        .expect("settled")
}

/// The release's ledger entry, if the reservation was given back.
fn released(log: &[Action]) -> Option<&LedgerEntry> {
    log.iter().find_map(|a| match a {
        Action::Release { ledger } => Some(&**ledger),
        _ => None,
    })
}

fn record(log: &[Action]) -> &UsageRecord {
    match log.last() {
        Some(Action::Record(r)) => r,
        other => panic!("no record: {other:?}"),
    }
}

fn responses(log: &[Action]) -> Vec<&Head> {
    log.iter()
        .filter_map(|a| match a {
            Action::Respond(head) => Some(head),
            _ => None,
        })
        .collect()
}

fn the_response(log: &[Action]) -> &Head {
    let heads = responses(log);
    assert_eq!(heads.len(), 1, "{log:#?}");
    heads[0]
}

/// Admitted, not cached; the first attempt 503, the second answers.
fn busy_then_answered() -> Vec<Event> {
    let unavailable = Event::Head {
        status: 503,
        content_type: None,
    };
    vec![
        admitted(),
        Event::Cached(None),
        unavailable,
        Event::Body(br#"{"error":{"message":"busy"}}"#.to_vec()),
        json_head(),
        answer(),
    ]
}

/// The `traceparent` attempt `attempt` is sent.
fn sent_traceparent(ex: &Exchange, attempt: usize) -> String {
    ex.upstream_request(attempt)
        .expect("the attempt")
        .header_pairs()
        .find(|(n, _)| *n == "traceparent")
        .map(|(_, v)| v.to_owned())
        .expect("a traceparent")
}

/// Headers with the test key and a client's sampled `traceparent`.
fn traced_headers() -> Headers {
    Headers::new([
        ("authorization", "Bearer sk-acme-test-key-1"),
        ("content-type", "application/json"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
    ])
}

fn header<'a>(head: &'a Head, name: &str) -> Option<&'a str> {
    head.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn sends(log: &[Action]) -> Vec<usize> {
    log.iter()
        .filter_map(|a| match a {
            Action::Send { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect()
}

fn written(log: &[Action]) -> String {
    log.iter()
        .filter_map(|a| match a {
            Action::Write(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        })
        .collect()
}

fn position(log: &[Action], pred: impl Fn(&Action) -> bool) -> usize {
    log.iter().position(pred).expect("action present")
}

#[test]
fn a_cache_miss_is_answered_then_charged_stored_and_recorded() {
    let g = gateway();
    let mut ex = chat(&g, &chat_body("hello"));
    let log = drive(
        &g,
        &mut ex,
        vec![admitted(), Event::Cached(None), json_head(), answer()],
    );
    let head = the_response(&log);
    assert_eq!(head.status, 200);
    assert_eq!(head.body, ResponseBody::Full(ANSWER.as_bytes().to_vec()));
    assert_eq!(header(head, "content-type"), Some("application/json"));
    assert_eq!(header(head, "x-edgegate-cache"), Some("MISS"));
    assert_eq!(header(head, "x-ratelimit-remaining-requests"), Some("99"));
    assert_eq!(header(head, "x-request-id"), Some("req-1"));
    // Respond comes before settling, so a host may settle after the response.
    let responded = position(&log, |a| matches!(a, Action::Respond(_)));
    let settled = position(&log, |a| matches!(a, Action::Settle { .. }));
    assert!(responded < settled);
    assert!(
        log.iter()
            .any(|a| matches!(a, Action::Store { body, .. } if unkept(body) == ANSWER.as_bytes()))
    );
    let r = record(&log);
    assert_eq!((r.status, r.attempts, r.cache), (200, 1, CacheStatus::Miss));
    assert_eq!((r.input_tokens, r.output_tokens), (11, 3));
    assert_eq!(r.latency.total_us, 4_000);
    assert_eq!(r.latency.upstream_first_byte_us, Some(1_000));
    let req = ex.upstream_request(0).expect("attempt 0");
    assert!(req.url.ends_with("/v1/chat/completions"));
    assert!(
        req.headers
            .iter()
            .any(|(n, v)| *n == "x-request-id" && v.len() == 36)
    );
    // Without a client trace the request starts one; the record names it.
    let parent = sent_traceparent(&ex, 0);
    let trace_id = r.trace_id.as_deref().expect("the record's trace id");
    assert_eq!(parent.len(), 55);
    assert_eq!(&parent[3..35], trace_id);
}

#[test]
fn a_clients_trace_is_continued_to_the_backend_with_its_tracestate() {
    let g = gateway();
    let headers = Headers::new([
        ("authorization", "Bearer sk-acme-test-key-1"),
        ("content-type", "application/json"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("tracestate", "congo=t61rcWkgMzE"),
    ]);
    let ex = exchange(&g, &chat_body("hello"), headers);
    let req = ex.upstream_request(0).expect("attempt 0");
    let sent: Vec<(&str, &str)> = req.header_pairs().collect();
    let parent = sent
        .iter()
        .find(|(n, _)| *n == "traceparent")
        .expect("traceparent")
        .1;
    assert!(
        parent.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
        "{parent}"
    );
    assert!(parent.ends_with("-01"), "{parent}");
    assert!(
        !parent.contains("b7ad6b7169203331"),
        "the gateway's span is the parent"
    );
    assert!(sent.contains(&("tracestate", "congo=t61rcWkgMzE")));
}

#[test]
fn a_retryable_status_fails_over_and_a_client_error_does_not() {
    let g = gateway();
    let mut ex = chat(&g, &chat_body("over"));
    let log = drive(&g, &mut ex, busy_then_answered());
    assert_eq!(sends(&log), [0, 1]);
    assert!(log.iter().any(|a| matches!(
        a,
        Action::Observe {
            outcome: AttemptOutcome::Failed(AttemptFailure::Status { status: 503 }),
            ..
        }
    )));
    assert_eq!(the_response(&log).status, 200);
    assert_eq!(record(&log).attempts, 2);
    assert_eq!(record(&log).fallback, Some(Fallback::Region));

    let mut ex = chat(&g, &chat_body("bad"));
    let bad = Event::Head {
        status: 400,
        content_type: None,
    };
    let log = drive(
        &g,
        &mut ex,
        vec![
            admitted(),
            Event::Cached(None),
            bad,
            Event::Body(br#"{"error":{"message":"no such parameter"}}"#.to_vec()),
        ],
    );
    assert_eq!(sends(&log), [0]);
    assert_eq!(record(&log).fallback, None);
    let head = the_response(&log);
    assert_eq!(head.status, 400);
    let ResponseBody::Full(body) = &head.body else {
        panic!("a full body")
    };
    assert!(String::from_utf8_lossy(body).contains("no such parameter"));
    assert_eq!(header(head, "x-ratelimit-remaining-requests"), Some("99"));
    // Ledgered as an error that cost nothing, after the response.
    let ledger = released(&log).expect("released");
    assert_eq!(
        (
            ledger.counts.requests,
            ledger.counts.errors,
            ledger.counts.cost_micros
        ),
        (1, 1, 0)
    );
    let responded = position(&log, |a| matches!(a, Action::Respond(_)));
    let released_at = position(&log, |a| matches!(a, Action::Release { .. }));
    assert!(responded < released_at);
    assert!(!log.iter().any(|a| matches!(a, Action::Settle { .. })));
    assert_eq!(record(&log).status, 400);
}

#[test]
fn every_attempt_is_tried_in_order_and_the_last_error_answers() {
    let g = gateway();
    let mut ex = chat(&g, &chat_body("down"));
    let attempts = ex.plan().expect("plan").attempts.len();
    let mut script = vec![admitted(), Event::Cached(None)];
    script.extend((0..attempts).map(|_| Event::Failed(Transport::Connect)));
    let log = drive(&g, &mut ex, script);
    assert_eq!(sends(&log), (0..attempts).collect::<Vec<_>>());
    let head = the_response(&log);
    assert_eq!(head.status, 502);
    let r = record(&log);
    assert_eq!(r.attempts as usize, attempts);
    assert_eq!(r.error.as_deref(), Some("upstream_unavailable"));
    assert!(released(&log).is_some());
}

#[test]
fn attempts_stop_at_the_routes_total_time() {
    let g = gateway();
    let mut ex = chat(&g, &chat_body("slow"));
    let total_ms = ex.plan().expect("plan").timeouts.total_ms;
    for event in [admitted(), Event::Cached(None)] {
        ex.poll();
        ex.handle(&g, event, T0);
    }
    let Some(Action::Send { head_ms, .. }) = ex.poll() else {
        panic!("a send")
    };
    assert!(head_ms <= total_ms);
    // The first attempt times out just before the total runs out: no room
    // for another.
    let late = T0 + total_ms * 1000 - 500;
    ex.handle(&g, Event::Failed(Transport::Timeout), late);
    let mut log: Vec<Action> = std::iter::from_fn(|| ex.poll()).collect();
    assert_eq!(sends(&log), Vec::<usize>::new());
    let head = the_response(&log);
    assert_eq!(head.status, 504);
    assert_eq!(record(&log).attempts, 1);
    log.clear();
}

#[test]
fn a_rate_limited_request_is_429_with_its_headers_and_holds_nothing() {
    let g = gateway();
    let mut ex = chat(&g, &chat_body("limited"));
    let denied = Event::Reserved(Ok(ReserveOutcome::Deny {
        level: crate::quota::LevelKind::Tenant,
        limit: LimitKind::Requests,
        retry_after_ms: Some(1_500),
        snapshot: snapshot(),
    }));
    let log = drive(&g, &mut ex, vec![denied, Event::Cached(None)]);
    let head = the_response(&log);
    assert_eq!(head.status, 429);
    assert_eq!(header(head, "retry-after"), Some("2"));
    assert_eq!(header(head, "x-ratelimit-limit-requests"), Some("100"));
    assert_eq!(header(head, "x-request-id"), Some("req-1"));
    assert!(
        !log.iter()
            .any(|a| matches!(a, Action::Release { .. } | Action::Settle { .. }))
    );
    assert_eq!(record(&log).status, 429);
}

#[test]
fn a_quota_store_failure_is_a_500_and_a_refusal_is_one_record() {
    let g = gateway();
    let mut ex = chat(&g, &chat_body("store down"));
    let failed = Event::Reserved(Err(GatewayError::Internal {
        message: "the quota store is unavailable".into(),
    }));
    let log = drive(&g, &mut ex, vec![failed, Event::Cached(None)]);
    assert_eq!(the_response(&log).status, 500);

    let mut ex = exchange(&g, &chat_body("who?"), headers_with_key("sk-nobody"));
    let log = drive(&g, &mut ex, vec![]);
    assert_eq!(the_response(&log).status, 401);
    assert_eq!(record(&log).error.as_deref(), Some("unauthenticated"));
}

#[test]
fn a_cache_hit_is_charged_as_one_request_and_replays_as_a_stream() {
    let g = gateway();
    let mut ex = chat(&g, &chat_body("cached"));
    let log = drive(
        &g,
        &mut ex,
        vec![admitted(), Event::Cached(Some(kept(0, ANSWER)))],
    );
    let head = the_response(&log);
    assert_eq!(header(head, "x-edgegate-cache"), Some("HIT"));
    assert_eq!(settled(&log).0, Settlement::cache_hit().actual);
    let r = record(&log);
    assert_eq!((r.cache, r.attempts, r.status), (CacheStatus::Hit, 0, 200));

    let mut ex = chat(&g, &streamed("cached"));
    let log = drive(
        &g,
        &mut ex,
        vec![admitted(), Event::Cached(Some(kept(0, ANSWER)))],
    );
    let head = the_response(&log);
    assert_eq!(header(head, "content-type"), Some("text/event-stream"));
    let ResponseBody::Full(sse) = &head.body else {
        panic!("a replayed stream is one body")
    };
    let sse = String::from_utf8_lossy(sse);
    assert!(
        sse.contains("Hi there") && sse.ends_with("data: [DONE]\n\n"),
        "{sse}"
    );
}

#[test]
fn a_break_before_any_content_fails_over_invisibly() {
    let g = gateway();
    let mut ex = chat(&g, &streamed("stream"));
    let log = drive(
        &g,
        &mut ex,
        vec![
            admitted(),
            Event::Cached(None),
            sse_head(),
            Event::Chunk(role_only()),
            Event::Failed(Transport::Broke),
            sse_head(),
            Event::Chunk(role_only()),
            Event::Chunk(content("Hel")),
            Event::Chunk(content("lo")),
            Event::Chunk(closing()),
            Event::End,
        ],
    );
    assert_eq!(sends(&log), [0, 1]);
    let head = the_response(&log);
    assert_eq!((head.status, &head.body), (200, &ResponseBody::Stream));
    assert_eq!(header(head, "content-type"), Some("text/event-stream"));
    let text = written(&log);
    // The second attempt's opening frame, once; nothing of the first.
    assert_eq!(text.matches("\"role\":\"assistant\"").count(), 1, "{text}");
    assert!(
        text.contains("Hel") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    assert!(
        !text.contains("\"usage\""),
        "the gateway's usage chunk is stripped"
    );
    assert!(log.contains(&Action::EndStream));
    let r = record(&log);
    assert_eq!((r.status, r.attempts, r.output_tokens), (200, 2, 2));
    // A clean stream from the primary version is kept, as a whole answer.
    let stored = log.iter().find_map(|a| match a {
        Action::Store { body, .. } => Some(unkept(body).to_vec()),
        _ => None,
    });
    let stored: Value = serde_json::from_slice(&stored.expect("stored")).expect("json");
    assert_eq!(stored["choices"][0]["message"]["content"], "Hello");
}

#[test]
fn an_upstream_error_event_before_content_fails_over_too() {
    let g = gateway();
    let mut ex = chat(&g, &streamed("error first"));
    let log = drive(
        &g,
        &mut ex,
        vec![
            admitted(),
            Event::Cached(None),
            sse_head(),
            Event::Chunk(b"data: {\"error\":{\"message\":\"overloaded\"}}\n\n".to_vec()),
            sse_head(),
            Event::Chunk(content("fine")),
            Event::Chunk(closing()),
            Event::End,
        ],
    );
    assert_eq!(sends(&log), [0, 1]);
    assert!(!written(&log).contains("overloaded"));
    assert_eq!(record(&log).status, 200);
}

#[test]
fn a_break_after_content_ends_with_an_error_event_and_a_502_record() {
    let g = gateway();
    let mut ex = chat(&g, &streamed("break"));
    let log = drive(
        &g,
        &mut ex,
        vec![
            admitted(),
            Event::Cached(None),
            sse_head(),
            Event::Chunk(content("partial answer")),
            Event::Failed(Transport::Broke),
        ],
    );
    assert_eq!(sends(&log), [0]);
    let text = written(&log);
    assert!(text.contains("partial answer"));
    let last_event = text.trim_end().rsplit("\n\n").next().expect("an event");
    let error: Value =
        serde_json::from_str(last_event.trim_start_matches("data: ")).expect("error json");
    assert_eq!(error["error"]["code"], "upstream_unavailable", "{text}");
    assert!(log.contains(&Action::EndStream));
    assert!(!log.iter().any(|a| matches!(a, Action::Store { .. })));
    let r = record(&log);
    assert_eq!(
        (r.status, r.error.as_deref()),
        (502, Some("upstream_unavailable"))
    );
    assert!(r.output_tokens > 0, "what was relayed is charged");
}

#[test]
fn a_stalled_stream_times_out_with_a_504_record() {
    let g = gateway();
    let mut ex = chat(&g, &streamed("stall"));
    let log = drive(
        &g,
        &mut ex,
        vec![
            admitted(),
            Event::Cached(None),
            sse_head(),
            Event::Chunk(content("so far")),
            Event::Failed(Transport::Timeout),
        ],
    );
    let text = written(&log);
    assert!(
        text.contains("upstream_timeout") && text.contains("stream idle"),
        "{text}"
    );
    assert_eq!(record(&log).status, 504);
}

#[test]
fn a_client_that_leaves_is_charged_for_what_was_relayed_and_logged_499() {
    let g = gateway();
    let mut ex = chat(&g, &streamed("leave"));
    let log = drive(
        &g,
        &mut ex,
        vec![
            admitted(),
            Event::Cached(None),
            sse_head(),
            Event::Chunk(content("some words here")),
            Event::ClientGone,
        ],
    );
    assert!(!log.contains(&Action::EndStream));
    let (actual, _) = settled(&log);
    let reserved = ex.plan().expect("plan").quota.amounts;
    assert!(
        actual.tokens < reserved.tokens,
        "{actual:?} of {reserved:?}"
    );
    assert_eq!(record(&log).status, 499);
}

#[test]
fn a_stream_request_answered_with_json_is_replayed_as_sse() {
    let g = gateway();
    let mut ex = chat(&g, &streamed("json"));
    let log = drive(
        &g,
        &mut ex,
        vec![admitted(), Event::Cached(None), json_head(), answer()],
    );
    let head = the_response(&log);
    assert_eq!(header(head, "content-type"), Some("text/event-stream"));
    let ResponseBody::Full(sse) = &head.body else {
        panic!("full")
    };
    assert!(String::from_utf8_lossy(sse).starts_with("data: {"));
    // What is cached is the JSON answer, replayable either way.
    assert!(
        log.iter()
            .any(|a| matches!(a, Action::Store { body, .. } if unkept(body) == ANSWER.as_bytes()))
    );
}

#[test]
fn a_fallback_versions_answer_is_never_stored() {
    let g = gateway();
    let pinned = Headers::new([
        ("authorization", "Bearer sk-acme-test-key-1"),
        ("x-edgegate-version", "v2"),
    ]);
    let mut ex = exchange(&g, &chat_body("fallback"), pinned);
    let plan = ex.plan().expect("plan");
    let fallback = plan
        .attempts
        .iter()
        .position(|a| a.model == "small")
        .expect("a fallback attempt");
    let mut script = vec![admitted(), Event::Cached(None)];
    script.extend((0..fallback).map(|_| Event::Failed(Transport::Connect)));
    script.extend([json_head(), answer()]);
    let log = drive(&g, &mut ex, script);
    assert_eq!(the_response(&log).status, 200);
    assert!(
        !log.iter().any(|a| matches!(a, Action::Store { .. })),
        "{log:#?}"
    );
    let answered = &ex.plan().expect("plan").attempts[fallback];
    let r = record(&log);
    assert_eq!(r.version.as_deref(), Some(answered.version.as_str()));
    // Recorded, priced and ledgered under the model that answered.
    assert_eq!(r.model.as_deref(), Some("small"));
    assert_eq!(r.fallback, Some(Fallback::Model));
    let (actual, ledger) = settled(&log);
    assert_eq!(ledger.key.model, "small");
    assert_eq!(
        ledger.key.version.as_deref(),
        Some(answered.version.as_str())
    );
    assert_eq!(ledger.key.tenant, "acme");
    assert_eq!(ledger.counts.cost_micros, actual.cost_micros);
    assert_eq!(
        (ledger.counts.input_tokens, ledger.counts.output_tokens),
        (r.input_tokens, r.output_tokens)
    );
    assert_eq!((ledger.counts.requests, ledger.counts.errors), (1, 0));
}

#[test]
fn a_body_past_the_cap_is_refused_and_events_after_the_end_change_nothing() {
    let g = gateway();
    let mut ex = chat(&g, &chat_body("huge"));
    let log = drive(
        &g,
        &mut ex,
        vec![
            admitted(),
            Event::Cached(None),
            json_head(),
            Event::Failed(Transport::TooLarge),
        ],
    );
    assert_eq!(sends(&log), [0]);
    assert_eq!(the_response(&log).status, 502);
    ex.handle(&g, Event::End, T0 + 10_000_000);
    ex.handle(&g, Event::ClientGone, T0 + 10_000_000);
    assert_eq!(ex.poll(), None);
}

#[test]
fn a_body_is_collected_up_to_its_cap() {
    let mut body = BodyCollector::new(5);
    assert_eq!(body.add::<()>(Some(Ok(b"abc"))), None);
    assert_eq!(body.add::<()>(Some(Ok(b"de"))), None);
    assert_eq!(body.add::<()>(None), Some(Ok(b"abcde".to_vec())));
    let mut body = BodyCollector::new(5);
    assert_eq!(body.add::<()>(Some(Ok(b"abc"))), None);
    assert_eq!(
        body.add::<()>(Some(Ok(b"def"))),
        Some(Err(Transport::TooLarge))
    );
    assert_eq!(
        BodyCollector::new(5).add(Some(Err("reset"))),
        Some(Err(Transport::Broke))
    );
    assert_eq!(
        Event::of_body(Err(Transport::TooLarge)),
        Event::Failed(Transport::TooLarge)
    );
}

fn first_tokens(log: &[Action]) -> Vec<(&str, u32)> {
    log.iter()
        .filter_map(|a| match a {
            Action::Observe {
                region,
                outcome: AttemptOutcome::FirstToken { latency_ms },
            } => Some((region.as_str(), *latency_ms)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_time_to_first_token_is_observed_once_per_answering_attempt() {
    let g = gateway();
    // Not streamed: the whole answer's time, at its head.
    let mut ex = chat(&g, &chat_body("hello"));
    let log = drive(
        &g,
        &mut ex,
        vec![admitted(), Event::Cached(None), json_head(), answer()],
    );
    let region = ex.plan().expect("plan").attempts[0].region.clone();
    assert_eq!(first_tokens(&log), [(region.as_str(), 1)]);
    // The record's: when the whole answer came (2 ms after the send).
    let l = record(&log).latency;
    assert_eq!(
        (l.first_token_us, l.after_first_token_us),
        (Some(2_000), None)
    );
    // Streamed: at the first content, not at the head or the role-only
    // frame (each event is 1 ms after the one before); a failed attempt
    // has none.
    let mut ex = chat(&g, &streamed("stream"));
    let log = drive(
        &g,
        &mut ex,
        vec![
            admitted(),
            Event::Cached(None),
            sse_head(),
            Event::Failed(Transport::Broke),
            sse_head(),
            Event::Chunk(role_only()),
            Event::Chunk(content("Hel")),
            Event::Chunk(closing()),
            Event::End,
        ],
    );
    let second = ex.plan().expect("plan").attempts[1].region.clone();
    assert_eq!(first_tokens(&log), [(second.as_str(), 3)]);
    // The record's: 3 ms after the second send, and 2 ms from it to the end.
    let l = record(&log).latency;
    assert_eq!(
        (l.first_token_us, l.after_first_token_us),
        (Some(3_000), Some(2_000))
    );
}

#[test]
fn an_identical_requests_answer_is_served_as_coalesced_without_a_send() {
    let g = gateway();
    // The lookup may wait for an identical request for the route's total time.
    let mut ex = chat(&g, &chat_body("cached"));
    let total_ms = ex.plan().expect("plan").timeouts.total_ms;
    assert!(matches!(ex.poll(), Some(Action::Reserve { .. })));
    assert!(matches!(
        ex.poll(),
        Some(Action::LookupCache { coalesce_ms, .. }) if coalesce_ms == total_ms
    ));
    let mut ex = chat(&g, &chat_body("cached"));
    let log = drive(
        &g,
        &mut ex,
        vec![admitted(), Event::Shared(kept(0, ANSWER))],
    );
    assert!(sends(&log).is_empty(), "{log:#?}");
    let head = the_response(&log);
    assert_eq!(header(head, "x-edgegate-cache"), Some("COALESCED"));
    assert_eq!(settled(&log).0, Settlement::cache_hit().actual);
    let r = record(&log);
    assert_eq!((r.cache, r.attempts), (CacheStatus::Coalesced, 0));
}

/// The fixture with a capacity at every region (and, optionally, the
/// first route's degradation policy).
fn gated(degrade: bool) -> Gateway {
    let mut v = crate::testing::config_value();
    for r in v["regions"].as_array_mut().expect("regions") {
        r["capacity"] = json!(4);
    }
    if degrade {
        v["routes"][0]["degrade"] = json!({"model": "small", "max_tokens": 16});
    }
    v["routes"][0]["cache"] = json!({"enabled": false});
    Gateway::from_json(&v.to_string(), &crate::testing::secrets()).expect("valid")
}

fn acquires(log: &[Action]) -> Vec<(String, u64, Vec<usize>)> {
    log.iter()
        .filter_map(|a| match a {
            Action::Acquire { region, ask } => Some((
                region.to_string(),
                ask.wait_ms,
                ask.candidates.iter().map(|c| c.attempt as usize).collect(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn a_gated_attempt_is_sent_with_the_permit_its_gate_granted() {
    let g = gated(false);
    let mut ex = chat(&g, &chat_body("hello"));
    let log = drive(
        &g,
        &mut ex,
        vec![
            admitted(),
            Event::Granted { attempt: 0 },
            json_head(),
            answer(),
        ],
    );
    let asked = acquires(&log);
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].0, "us-east");
    assert_eq!(asked[0].1, 0, "the first pass does not wait");
    let capacity = log.iter().find_map(|a| match a {
        Action::Acquire { ask, .. } => Some(ask.candidates[0].capacity),
        _ => None,
    });
    assert_eq!(capacity, Some(3), "a normal request may fill 90% of 4");
    // The wait for the permit (1 ms in `drive`) is the record's queue time.
    assert_eq!(record(&log).latency.queue_us, 1_000);
    assert_eq!(sends(&log), [0]);
    assert!(
        position(&log, |a| matches!(a, Action::Acquire { .. }))
            < position(&log, |a| matches!(a, Action::Send { .. }))
    );
    assert_eq!(the_response(&log).status, 200);
    assert_eq!(header(the_response(&log), "x-edgegate-degraded"), None);
}

#[test]
fn full_gates_are_tried_region_by_region_then_waited_at_then_429() {
    let g = gated(false);
    let mut ex = chat(&g, &chat_body("hello"));
    let attempts = ex.plan().expect("plan").attempts.len();
    let full = || Event::Full {
        retry_after_ms: 3_500,
    };
    let mut script = vec![admitted()];
    script.extend((0..attempts + 1).map(|_| full()));
    // More scripted answers than asked for are left over; count first.
    let mut probe = chat(&g, &chat_body("hello"));
    let asked = acquires(&drive_lenient(&g, &mut probe, script.clone())).len();
    script.truncate(1 + asked);
    let log = drive(&g, &mut ex, script);
    let asked = acquires(&log);
    // Every attempt once without waiting, then the nearest, waiting.
    let (last, spill) = asked.split_last().expect("asked");
    let covered: Vec<usize> = spill.iter().flat_map(|a| a.2.clone()).collect();
    assert_eq!(covered, (0..attempts).collect::<Vec<_>>());
    assert!(spill.iter().all(|a| a.1 == 0));
    assert_eq!(
        (last.0.as_str(), last.1),
        ("us-east", 2_000),
        "normal priority waits 2 s"
    );
    assert_eq!(last.2, spill[0].2);
    assert!(sends(&log).is_empty());
    let head = the_response(&log);
    assert_eq!(head.status, 429);
    assert_eq!(header(head, "retry-after"), Some("4"));
    assert!(!log.iter().any(|a| matches!(a, Action::Settle { .. })));
    assert!(released(&log).is_some(), "the reservation goes back");
    assert_eq!(record(&log).error.as_deref(), Some("saturated"));
}

#[test]
fn a_saturated_primary_degrades_marked_saturated() {
    let g = gated(true);
    let mut ex = chat(&g, &chat_body("hello"));
    let plan = ex.plan().expect("plan");
    let degraded_from = plan
        .attempts
        .iter()
        .position(|a| a.degraded.is_some())
        .expect("degraded");
    let mut probe = chat(&g, &chat_body("hello"));
    let mut script = vec![admitted()];
    script.extend((0..64).map(|_| Event::Full {
        retry_after_ms: 1_000,
    }));
    let primary_asks = acquires(&drive_lenient(&g, &mut probe, script))
        .iter()
        .filter(|a| a.2[0] < degraded_from)
        .count();
    let mut script = vec![admitted()];
    script.extend((0..primary_asks).map(|_| Event::Full {
        retry_after_ms: 1_000,
    }));
    script.extend([
        Event::Granted {
            attempt: degraded_from,
        },
        json_head(),
        answer(),
    ]);
    let log = drive(&g, &mut ex, script);
    assert_eq!(sends(&log), [degraded_from]);
    let degraded_ask = acquires(&log).pop().expect("asked");
    assert_eq!(degraded_ask.1, 0, "a degraded attempt does not wait");
    let head = the_response(&log);
    assert_eq!(head.status, 200);
    assert_eq!(header(head, "x-edgegate-degraded"), Some("saturated"));
    assert_eq!(record(&log).degraded.as_deref(), Some("saturated"));
}

/// [`drive`] without its checks, for counting what a script leads to.
fn drive_lenient(g: &Gateway, ex: &mut Exchange, script: Vec<Event>) -> Vec<Action> {
    let mut script = script.into_iter();
    let mut now = T0;
    let mut log = Vec::new();
    while let Some(action) = ex.poll() {
        let asks = matches!(action, Action::Reserve { .. } | Action::Acquire { .. });
        log.push(action);
        if asks && let Some(event) = script.next() {
            now += 1_000;
            ex.handle(g, event, now);
        }
    }
    log
}

fn with_stale_window() -> Gateway {
    let mut v = crate::testing::config_value();
    v["routes"][0]["cache"] = json!({"ttl_seconds": 60, "stale_if_error_seconds": 600});
    Gateway::from_json(&v.to_string(), &crate::testing::secrets()).expect("valid")
}

#[test]
fn an_answer_past_its_ttl_answers_only_when_every_attempt_failed() {
    let g = with_stale_window();
    // Two minutes old: past the TTL, within the window. Every attempt fails.
    let mut ex = chat(&g, &chat_body("hello"));
    let attempts = ex.plan().expect("plan").attempts.len();
    let mut script = vec![admitted(), Event::Cached(Some(kept(120_000, ANSWER)))];
    script.extend((0..attempts).map(|_| Event::Failed(Transport::Connect)));
    let log = drive(&g, &mut ex, script);
    assert_eq!(sends(&log).len(), attempts, "the backends are tried first");
    let head = the_response(&log);
    assert_eq!(head.status, 200);
    assert_eq!(head.body, ResponseBody::Full(ANSWER.as_bytes().to_vec()));
    assert_eq!(header(head, "x-edgegate-cache"), Some("STALE"));
    assert_eq!(header(head, "x-edgegate-degraded"), Some("stale"));
    let r = record(&log);
    assert_eq!(
        (r.cache, r.degraded.as_deref()),
        (CacheStatus::Stale, Some("stale"))
    );
    assert!(released(&log).is_none(), "charged as a hit");
    // The same answer, when a backend answers: the fresh one, kept anew.
    let mut ex = chat(&g, &chat_body("hello"));
    let script = vec![
        admitted(),
        Event::Cached(Some(kept(120_000, ANSWER))),
        json_head(),
        answer(),
    ];
    let log = drive(&g, &mut ex, script);
    assert_eq!(header(the_response(&log), "x-edgegate-cache"), Some("MISS"));
    assert!(log.iter().any(|a| matches!(a, Action::Store { .. })));
    // Past the window it is no answer at all.
    let mut ex = chat(&g, &chat_body("hello"));
    let mut script = vec![admitted(), Event::Cached(Some(kept(700_000, ANSWER)))];
    script.extend((0..attempts).map(|_| Event::Failed(Transport::Connect)));
    let log = drive(&g, &mut ex, script);
    assert_eq!(the_response(&log).status, 502);
    // Without a window, a stale answer is a miss (the default route).
    let plain = gateway();
    let mut ex = chat(&plain, &chat_body("hello"));
    let mut script = vec![admitted(), Event::Cached(Some(kept(120_000, ANSWER)))];
    script.extend((0..attempts).map(|_| Event::Failed(Transport::Connect)));
    let log = drive(&plain, &mut ex, script);
    assert_eq!(the_response(&log).status, 502);
}

#[test]
fn an_exported_trace_has_a_server_span_and_a_child_per_attempt() {
    use crate::telemetry::trace::{SpanKind, Value, spans};
    let g = gateway();
    let mut ex = exchange(&g, &chat_body("traced"), traced_headers());
    // As with `observability.otlp_endpoint` set.
    ex.plan.as_mut().expect("plan").export_trace = true;
    let log = drive(&g, &mut ex, busy_then_answered());
    let r = record(&log);
    let spans = spans(r);
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let (server, tries) = (&spans[0], &spans[1..]);
    assert_eq!(server.kind, SpanKind::Server);
    assert_eq!(server.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(server.parent_span_id.as_deref(), Some("b7ad6b7169203331"));
    assert!(server.parent_is_remote);
    assert_eq!(server.name, "chat llama-3.1-8b");
    assert_eq!(server.error, None);
    let attr = |span: &crate::telemetry::trace::Span, key: &str| {
        span.attributes
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        attr(server, "gen_ai.usage.output_tokens"),
        Some(Value::Int(3))
    );
    assert_eq!(
        attr(server, "gen_ai.operation.name"),
        Some(Value::Str("chat".into()))
    );
    for (i, t) in tries.iter().enumerate() {
        assert_eq!(t.kind, SpanKind::Client);
        assert_eq!(t.parent_span_id.as_deref(), Some(server.span_id.as_str()));
        // Each attempt's span is the parent its backend was sent.
        assert_eq!(&sent_traceparent(&ex, i)[36..52], t.span_id, "attempt {i}");
        assert!(t.start_unix_ns >= server.start_unix_ns);
        assert!(t.end_unix_ns <= server.end_unix_ns && t.end_unix_ns > t.start_unix_ns);
    }
    assert_eq!(
        attr(&tries[0], "http.response.status_code"),
        Some(Value::Int(503))
    );
    assert_eq!(tries[0].error.as_deref(), Some("upstream_status"));
    assert_eq!(attr(&tries[0], "gen_ai.usage.output_tokens"), None);
    assert_eq!(
        attr(&tries[1], "gen_ai.usage.output_tokens"),
        Some(Value::Int(3))
    );
    assert_eq!(
        attr(&tries[1], "edgegate.fallback"),
        Some(Value::Str("region".into()))
    );
    assert_eq!(tries[1].error, None);
}

#[test]
fn no_trace_is_kept_unless_it_is_exported() {
    let g = gateway();
    let mut ex = chat(&g, &chat_body("untraced"));
    let log = drive(
        &g,
        &mut ex,
        vec![admitted(), Event::Cached(None), json_head(), answer()],
    );
    assert_eq!(record(&log).trace, None);
    assert!(crate::telemetry::trace::spans(record(&log)).is_empty());
}
