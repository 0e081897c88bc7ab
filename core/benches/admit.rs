//! `admit` on a ~2 KB chat request (a 1.7 KB body plus an HS256 JWT): the
//! gateway's whole per-request decision (auth, validation, safety, token
//! estimate, routing, geo, cache key, quota request), native. The local
//! runner's bench runs the same request through the wasmtime component.

use criterion::{Criterion, criterion_group, criterion_main};
use edgegate_core::gateway::{Decision, Gateway, RequestContext};
use edgegate_core::geo::ClientGeo;
use edgegate_core::request::{Headers, HttpRequest};
use std::hint::black_box;

const CONFIG: &str = include_str!("../fixtures/gateway.json");
const BODY: &str = include_str!("../fixtures/bench-chat-2kb.json");
/// Signed with the fixture issuer's secret; expires in 2100.
const JWT: &str = include_str!("../fixtures/bench-hs256.jwt");
const SECRET: &str = "test-hs256-secret-of-at-least-32-bytes!!";

fn bench_admit(c: &mut Criterion) {
    let secrets = [("JWT_HS256_SECRET".to_owned(), SECRET.to_owned())].into();
    let gateway = Gateway::from_json(CONFIG, &secrets).expect("config");
    let request = HttpRequest {
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        headers: Headers::new([
            ("authorization", format!("Bearer {}", JWT.trim())),
            ("content-type", "application/json".into()),
        ]),
        body: BODY.as_bytes().to_vec(),
    };
    let ctx = RequestContext {
        now_ms: 1_795_305_600_000,
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
    group.throughput(criterion::Throughput::Bytes(BODY.len() as u64));
    group.bench_function("native_chat_2kb_hs256_jwt", |b| {
        b.iter(|| black_box(gateway.admit(black_box(&request), black_box(&ctx))))
    });
    let api_key_request = HttpRequest {
        headers: Headers::new([("authorization", "Bearer sk-acme-test-key-1")]),
        ..request.clone()
    };
    group.bench_function("native_chat_2kb_api_key", |b| {
        b.iter(|| black_box(gateway.admit(black_box(&api_key_request), black_box(&ctx))))
    });
    group.finish();
}

criterion_group!(benches, bench_admit);
criterion_main!(benches);
