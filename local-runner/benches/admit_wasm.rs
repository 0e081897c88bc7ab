//! `admit` through the wasmtime component on a warm instance: the same
//! request and config as the core's native bench (core/benches/admit.rs).
//! Measured as the exchange's first crossing (`start`: the typed request
//! in, admission, the first actions out) plus dropping the exchange.

use criterion::{Criterion, criterion_group, criterion_main};
use edgegate_core::gateway::RequestContext;
use edgegate_core::geo::ClientGeo;
use edgegate_core::request::{Headers, HttpRequest};
use edgegate_local_runner::sandbox::{Sandbox, SandboxLimits, guest};
use std::hint::black_box;
use std::sync::Arc;

const CONFIG: &str = include_str!("../../core/fixtures/gateway.json");
const BODY: &str = include_str!("../../core/fixtures/bench-chat-2kb.json");
const JWT: &str = include_str!("../../core/fixtures/bench-hs256.jwt");
const SECRET: (&str, &str) = (
    "JWT_HS256_SECRET",
    "test-hs256-secret-of-at-least-32-bytes!!",
);

fn bench_admit(c: &mut Criterion) {
    let limits = SandboxLimits {
        instances: 1,
        ..SandboxLimits::default()
    };
    let secrets = vec![(SECRET.0.to_owned(), SECRET.1.to_owned())];
    let sandbox = Arc::new(Sandbox::new(CONFIG.into(), secrets, limits).expect("sandbox"));
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
    let (_exchange, actions) = sandbox.start(&request, &ctx, 0).expect("start");
    assert!(
        matches!(actions.first(), Some(guest::Action::Reserve(_))),
        "admitted: {actions:?}"
    );
    let mut group = c.benchmark_group("admit");
    group.throughput(criterion::Throughput::Bytes(BODY.len() as u64));
    group.bench_function("wasm_chat_2kb_hs256_jwt", |b| {
        b.iter(|| black_box(sandbox.start(black_box(&request), black_box(&ctx), 0)))
    });
    group.finish();
}

criterion_group!(benches, bench_admit);
criterion_main!(benches);
