use super::*;
use crate::config::{CachePolicy, CacheScope};
use crate::request::{Headers, ParsedBody, parse_body};
use proptest::prelude::*;
use serde_json::json;

fn parsed(body: &str) -> ParsedBody {
    parse_body(
        Endpoint::ChatCompletions,
        body.as_bytes(),
        &Default::default(),
    )
    .expect("valid")
}

fn key_of(body: &str) -> String {
    let p = parsed(body);
    cache_key("acme", p.endpoint, "m@v1", &p.body)
}

const POLICY: CachePolicy = CachePolicy {
    enabled: true,
    ttl_seconds: 60,
    scope: CacheScope::Tenant,
    coalesce: true,
    stale_if_error_seconds: 0,
};

#[test]
fn key_ignores_order_whitespace_stream_and_model_alias() {
    let a = key_of(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}"#);
    let b = key_of(
        "{ \"temperature\" : 0,\n \"messages\" : [ { \"content\":\"hi\", \"role\":\"user\" } ], \"model\":\"alias\", \"stream\": true }",
    );
    assert_eq!(a, b);
}

#[test]
fn scope_endpoint_and_version_separate_keys() {
    let p = parsed(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}"#);
    let base = cache_key("acme", p.endpoint, "m@v1", &p.body);
    assert_ne!(base, cache_key("other", p.endpoint, "m@v1", &p.body));
    assert_ne!(base, cache_key("acme", p.endpoint, "m@v2", &p.body));
    assert_ne!(
        base,
        cache_key("acme", Endpoint::Completions, "m@v1", &p.body)
    );
    assert_ne!(base, cache_key("", p.endpoint, "m@v1", &p.body));
}

#[test]
fn decisions() {
    let h = Headers::default();
    let det =
        parsed(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}"#);
    let sampled =
        parsed(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.7}"#);
    assert!(matches!(
        decide(&POLICY, &h, &det, "acme", "m@v1"),
        CacheDecision::Lookup {
            ttl_seconds: 60,
            ..
        }
    ));
    assert!(matches!(
        decide(&POLICY, &h, &sampled, "acme", "m@v1"),
        CacheDecision::Bypass { .. }
    ));
    let off = CachePolicy {
        enabled: false,
        ..POLICY
    };
    assert_eq!(
        decide(&off, &h, &det, "acme", "m@v1"),
        CacheDecision::Disabled
    );
    for (name, value) in [
        ("x-edgegate-cache", "BYPASS"),
        ("cache-control", "max-age=0, no-store"),
    ] {
        let h = Headers::new([(name, value)]);
        assert!(matches!(
            decide(&POLICY, &h, &det, "acme", "m@v1"),
            CacheDecision::Bypass { .. }
        ));
    }
    let CacheDecision::Lookup { key: t1, .. } = decide(&POLICY, &h, &det, "acme", "m@v1") else {
        panic!()
    };
    let CacheDecision::Lookup { key: t2, .. } = decide(&POLICY, &h, &det, "other", "m@v1") else {
        panic!()
    };
    assert_ne!(t1, t2, "tenant scope");
    let global = CachePolicy {
        scope: CacheScope::Global,
        ..POLICY
    };
    let CacheDecision::Lookup { key: g1, .. } = decide(&global, &h, &det, "acme", "m@v1") else {
        panic!()
    };
    let CacheDecision::Lookup { key: g2, .. } = decide(&global, &h, &det, "other", "m@v1") else {
        panic!()
    };
    assert_eq!(g1, g2, "global scope is shared");
}

/// Arbitrary JSON values, a few levels deep.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i32>().prop_map(serde_json::Value::from),
        (-1e6f64..1e6).prop_map(serde_json::Value::from),
        "[a-z \\n\"]{0,8}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Serialises with object keys in reverse order and random spacing.
fn scramble(v: &serde_json::Value, spaces: &mut impl Iterator<Item = usize>) -> String {
    fn pad(spaces: &mut impl Iterator<Item = usize>) -> String {
        " ".repeat(spaces.next().unwrap_or(0))
    }
    match v {
        serde_json::Value::Object(m) => {
            let items: Vec<String> = m
                .iter()
                .rev()
                .map(|(k, v)| {
                    let (a, b) = (pad(spaces), pad(spaces));
                    format!(
                        "{a}{}{b}:{}",
                        serde_json::Value::from(k.as_str()),
                        scramble(v, spaces)
                    )
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
        serde_json::Value::Array(a) => {
            let items: Vec<String> = a.iter().map(|v| scramble(v, spaces)).collect();
            format!("[{}\n]", items.join(" ,"))
        }
        other => other.to_string(),
    }
}

proptest! {
    #[test]
    fn key_is_invariant_under_key_order_and_whitespace(
        params in prop::collection::btree_map("[a-z_]{1,8}", json_value(), 0..6),
        spaces in prop::collection::vec(0usize..3, 64),
    ) {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in &params {
            if !["model", "messages", "stream", "stream_options"].contains(&k.as_str()) {
                body[k] = v.clone();
            }
        }
        let canonical = body.to_string();
        let scrambled = scramble(&body, &mut spaces.into_iter().cycle());
        let a: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&canonical).unwrap();
        let b: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&scrambled).unwrap();
        prop_assert_eq!(
            cache_key("t", Endpoint::ChatCompletions, "m@v", &a),
            cache_key("t", Endpoint::ChatCompletions, "m@v", &b)
        );
    }

    #[test]
    fn key_changes_with_every_parameter(
        params in prop::collection::btree_map("[a-z_]{1,8}", json_value(), 1..6),
        which in any::<prop::sample::Index>(),
        replacement in json_value(),
    ) {
        let params: serde_json::Map<String, serde_json::Value> = params
            .into_iter()
            .filter(|(k, _)| !["model", "stream", "stream_options"].contains(&k.as_str()))
            .collect();
        prop_assume!(!params.is_empty());
        let field = params.keys().nth(which.index(params.len())).unwrap().clone();
        prop_assume!(params[&field] != replacement);
        let mut changed = params.clone();
        changed.insert(field, replacement);
        prop_assert_ne!(
            cache_key("t", Endpoint::ChatCompletions, "m@v", &params),
            cache_key("t", Endpoint::ChatCompletions, "m@v", &changed)
        );
        // Adding a parameter changes it too.
        let mut added = params.clone();
        added.insert("zz_new_param".into(), json!(1));
        prop_assert_ne!(
            cache_key("t", Endpoint::ChatCompletions, "m@v", &params),
            cache_key("t", Endpoint::ChatCompletions, "m@v", &added)
        );
    }
}

#[test]
fn a_kept_answer_carries_when_it_was_stored() {
    let kept = wrap_stored(1_795_305_600_123, b"{\"id\":1}\n");
    assert_eq!(
        unwrap_stored(&kept),
        Some((1_795_305_600_123, &b"{\"id\":1}\n"[..]))
    );
    // A body kept by an earlier version, or anything else, is no answer.
    assert_eq!(unwrap_stored(b"{\"id\":1}"), None);
    assert_eq!(unwrap_stored(b"12x\n{}"), None);
    assert_eq!(unwrap_stored(b""), None);
}
