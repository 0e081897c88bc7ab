//! `admit` on arbitrary bytes: the body, and (split off the front) the
//! method, path and headers. Nothing may panic, hang or grow without bound;
//! every rejection must be an OpenAI-shaped error.

#![no_main]

use edgegate_core::gateway::{Decision, Gateway, RequestContext};
use edgegate_core::request::{Headers, HttpRequest};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const CONFIG: &str = include_str!("../../fixtures/gateway.json");
const SECRET: &str = "test-hs256-secret-of-at-least-32-bytes!!";

fn gateway() -> &'static Gateway {
    static GATEWAY: OnceLock<Gateway> = OnceLock::new();
    GATEWAY.get_or_init(|| {
        let secrets = [("JWT_HS256_SECRET".to_owned(), SECRET.to_owned())].into();
        Gateway::from_json(CONFIG, &secrets).expect("fixture config")
    })
}

fuzz_target!(|data: &[u8]| {
    // First byte picks the endpoint and credential; a NUL-separated header
    // block may follow; the rest is the body.
    let (selector, rest) = data.split_first().unwrap_or((&0, &[]));
    let paths = [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
    ];
    let path = paths[(*selector as usize) % paths.len()];
    let method = if path == "/v1/models" { "GET" } else { "POST" };
    let key = match selector / 4 % 3 {
        0 => "Bearer sk-acme-test-key-1",
        1 => "Bearer sk-free-key",
        _ => "Bearer sk-eu-corp-key",
    };
    let (header_block, body) = match rest.iter().position(|b| *b == 0) {
        Some(i) if selector & 0x80 != 0 => (&rest[..i], &rest[i + 1..]),
        _ => (&[][..], rest),
    };
    let mut headers = vec![("authorization".to_owned(), key.to_owned())];
    for line in String::from_utf8_lossy(header_block).lines() {
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.to_owned(), v.to_owned()));
        }
    }
    let request = HttpRequest {
        method: method.into(),
        path: path.into(),
        headers: Headers::new(headers),
        body: body.to_vec(),
    };
    let ctx = RequestContext {
        now_ms: 1_795_305_600_000,
        request_id: "fuzz".into(),
        client_ip: Some("203.0.113.9".parse().expect("ip")),
        ..Default::default()
    };
    match gateway().admit(&request, &ctx) {
        Ok(Decision::Forward(plan)) => {
            assert!(!plan.attempts.is_empty());
            for b in &plan.bodies {
                serde_json::from_str::<serde_json::Value>(b).expect("upstream bodies are JSON");
            }
        }
        Ok(Decision::Respond(r)) => assert!(r.status < 500),
        Err(e) => {
            let v = e.to_openai_json();
            assert!(v["error"]["message"].is_string());
            assert!(e.status() >= 400);
        }
    }
});
