//! `admit` on a ~2 KB chat request with HS256 JWT auth: the gateway's whole
//! per-request decision (auth, validation, safety, token estimate, routing,
//! geo, cache key, quota request).

use criterion::{Criterion, criterion_group, criterion_main};
use edgegate_core::gateway::{Decision, Gateway, RequestContext};
use edgegate_core::geo::ClientGeo;
use edgegate_core::request::{Headers, HttpRequest};
use std::hint::black_box;

const CONFIG: &str = include_str!("../fixtures/gateway.json");
const SECRET: &str = "test-hs256-secret-of-at-least-32-bytes!!";
const NOW_MS: u64 = 1_795_305_600_000;

/// A realistic ~2 KB chat request: a system prompt and a short conversation.
pub fn chat_request_body() -> Vec<u8> {
    let system = "You are a careful assistant for an online bookshop. Answer questions about orders, \
        shipping and returns. Be concise, cite the order number when you refer to one, and never \
        invent tracking numbers. If a customer asks for a refund, explain the 30-day policy and \
        ask for the order number if it is missing.";
    let turns = [
        (
            "user",
            "Hi! I ordered three books last week (order 48213) and only two have arrived. The \
            missing one is a hardcover edition of a cookbook. Can you check what happened?",
        ),
        (
            "assistant",
            "I'm sorry about the missing book. Order 48213 shipped in two parcels; the \
            second parcel with the hardcover cookbook left our warehouse on Thursday and should \
            arrive within three to five working days.",
        ),
        (
            "user",
            "Thanks. If it doesn't arrive by Friday, can I get a refund for just that book, \
            or do I have to return the whole order? Also, is there any way to change the delivery \
            address for the second parcel, since I'll be away next week and would prefer it to go \
            to my office instead of my home address?",
        ),
        (
            "assistant",
            "If it has not arrived by Friday you can ask for a refund for that book \
            alone; the other two are unaffected. Address changes are possible while a parcel is \
            still with the carrier's sorting centre.",
        ),
        (
            "user",
            "Great, please change it to my office: 12 Harbour Street, third floor. And \
            remind me: how long do refunds take to show up on my card once approved? I paid with \
            the same card I always use for this shop, the one ending in the last four digits I \
            gave you before.",
        ),
    ];
    let mut messages = vec![serde_json::json!({"role": "system", "content": system})];
    messages.extend(
        turns
            .iter()
            .map(|(role, content)| serde_json::json!({"role": role, "content": content})),
    );
    serde_json::to_vec(&serde_json::json!({
        "model": "llama-3.1-8b",
        "messages": messages,
        "max_tokens": 256,
        "temperature": 0.7,
        "user": "customer-1842",
    }))
    .expect("serialise")
}

fn hs256_token() -> String {
    let claims = serde_json::json!({
        "iss": "https://auth.example.test",
        "aud": "edgegate",
        "org": "acme",
        "sub": "customer-1842",
        "exp": NOW_MS / 1000 + 3600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

fn bench_admit(c: &mut Criterion) {
    let secrets = [("JWT_HS256_SECRET".to_owned(), SECRET.to_owned())].into();
    let gateway = Gateway::from_json(CONFIG, &secrets).expect("config");
    let body = chat_request_body();
    let request = HttpRequest {
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        headers: Headers::new([
            ("authorization", format!("Bearer {}", hs256_token())),
            ("content-type", "application/json".into()),
        ]),
        body: body.clone(),
    };
    let ctx = RequestContext {
        now_ms: NOW_MS,
        request_id: "req-bench".into(),
        client_ip: Some("203.0.113.9".parse().expect("ip")),
        client_geo: Some(ClientGeo {
            latitude: Some(48.85),
            longitude: Some(2.35),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(matches!(
        gateway.admit(&request, &ctx),
        Ok(Decision::Forward(_))
    ));
    let mut group = c.benchmark_group("admit");
    group.throughput(criterion::Throughput::Bytes(body.len() as u64));
    group.bench_function("chat_2kb_hs256_jwt", |b| {
        b.iter(|| black_box(gateway.admit(black_box(&request), black_box(&ctx))))
    });
    let api_key_request = HttpRequest {
        headers: Headers::new([("authorization", "Bearer sk-acme-test-key-1")]),
        ..request.clone()
    };
    group.bench_function("chat_2kb_api_key", |b| {
        b.iter(|| black_box(gateway.admit(black_box(&api_key_request), black_box(&ctx))))
    });
    group.finish();
}

criterion_group!(benches, bench_admit);
criterion_main!(benches);
