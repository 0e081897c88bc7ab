use super::*;
use crate::config::RequestLimits;
use serde_json::json;

fn limits() -> RequestLimits {
    RequestLimits {
        max_body_bytes: 4096,
        max_messages: 4,
        max_json_depth: 8,
        ..RequestLimits::default()
    }
}

fn parse(endpoint: Endpoint, body: &str) -> Result<ParsedBody, GatewayError> {
    parse_body(endpoint, body.as_bytes(), &limits())
}

fn param_of(endpoint: Endpoint, body: serde_json::Value) -> Option<String> {
    match parse(endpoint, &body.to_string()) {
        Err(e) => {
            assert_eq!(e.status(), 400, "{e:?}");
            e.param().map(str::to_owned)
        }
        Ok(p) => panic!("expected an error, parsed {p:?}"),
    }
}

#[test]
fn endpoints_and_methods() {
    assert_eq!(
        Endpoint::resolve("POST", "/v1/chat/completions/"),
        Ok(Endpoint::ChatCompletions)
    );
    assert_eq!(Endpoint::resolve("GET", "/v1/models"), Ok(Endpoint::Models));
    assert_eq!(
        Endpoint::resolve("GET", "/v1/embeddings").map_err(|e| e.status()),
        Err(405)
    );
    assert_eq!(
        Endpoint::resolve("POST", "/v2/whatever").map_err(|e| e.status()),
        Err(404)
    );
}

#[test]
fn a_valid_chat_request_keeps_unknown_fields() {
    let p = parse(
        Endpoint::ChatCompletions,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"vendor_knob":{"x":1},"stream":true,"stream_options":{"include_usage":true}}"#,
    )
    .expect("valid");
    assert_eq!(p.model, "m");
    assert_eq!(p.max_tokens, Some(5));
    assert!(p.stream && p.client_wants_usage);
    assert_eq!(p.body["vendor_knob"], json!({"x": 1}));
}

#[test]
fn size_encoding_depth_and_syntax() {
    let big = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "a".repeat(5000)
    );
    assert_eq!(
        parse(Endpoint::ChatCompletions, &big)
            .map_err(|e| e.status())
            .err(),
        Some(413)
    );

    let err = parse_body(
        Endpoint::ChatCompletions,
        b"{\"model\":\"\xff\"}",
        &limits(),
    )
    .expect_err("utf8");
    assert!(
        err.message()
            .contains("not valid UTF-8 (invalid byte at offset 10)"),
        "{}",
        err.message()
    );

    let deep = format!("{}{}", "[".repeat(20), "]".repeat(20));
    let err = parse(Endpoint::ChatCompletions, &deep).expect_err("depth");
    assert!(
        err.message().contains("nested more than 8"),
        "{}",
        err.message()
    );
    // Brackets inside strings do not count.
    let ok = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "[[[[[[[[[["
    );
    assert!(parse(Endpoint::ChatCompletions, &ok).is_ok());

    let err = parse(
        Endpoint::ChatCompletions,
        r#"{"model": "m", "messages": [}"#,
    )
    .expect_err("syntax");
    assert!(err.message().contains("line 1 column"), "{}", err.message());
    assert!(parse(Endpoint::ChatCompletions, "[1,2]").is_err());
    assert!(parse(Endpoint::ChatCompletions, "   ").is_err());
}

#[test]
fn each_bad_field_is_named() {
    let chat = Endpoint::ChatCompletions;
    let msg = json!([{"role": "user", "content": "hi"}]);
    assert_eq!(
        param_of(chat, json!({"messages": msg})),
        Some("model".into())
    );
    assert_eq!(
        param_of(chat, json!({"model": 5, "messages": msg})),
        Some("model".into())
    );
    assert_eq!(
        param_of(chat, json!({"model": "m"})),
        Some("messages".into())
    );
    assert_eq!(
        param_of(chat, json!({"model": "m", "messages": "hi"})),
        Some("messages".into())
    );
    assert_eq!(
        param_of(chat, json!({"model": "m", "messages": []})),
        Some("messages".into())
    );
    assert_eq!(
        param_of(
            chat,
            json!({"model": "m", "messages": [msg[0], msg[0], msg[0], msg[0], msg[0]]})
        ),
        Some("messages".into())
    );
    assert_eq!(
        param_of(
            chat,
            json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]})
        ),
        Some("messages[0].role".into())
    );
    assert_eq!(
        param_of(
            chat,
            json!({"model": "m", "messages": [msg[0], {"role": "user"}]})
        ),
        Some("messages[1].content".into())
    );
    assert_eq!(
        param_of(
            chat,
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]})
        ),
        Some("messages[0].content[0].text".into())
    );
    for (field, bad) in [
        ("max_tokens", json!("many")),
        ("max_tokens", json!(0)),
        ("max_tokens", json!(-3)),
        ("max_tokens", json!(1.5)),
        ("temperature", json!(3)),
        ("temperature", json!("hot")),
        ("top_p", json!(1.5)),
        ("n", json!(0)),
        ("stream", json!("yes")),
        ("seed", json!(1.5)),
        ("stop", json!(7)),
        ("tools", json!({})),
    ] {
        let mut body = json!({"model": "m", "messages": msg});
        body[field] = bad.clone();
        assert_eq!(
            param_of(chat, body),
            Some(field.to_owned()),
            "{field} = {bad}"
        );
    }
    let mut body = json!({"model": "m", "messages": msg, "stop": ["a", 1]});
    assert_eq!(param_of(chat, body.clone()), Some("stop[1]".into()));
    body = json!({"model": "m", "messages": msg, "stream_options": {"include_usage": true}});
    assert_eq!(param_of(chat, body), Some("stream_options".into()));
}

#[test]
fn completions_and_embeddings_inputs() {
    assert!(
        parse(
            Endpoint::Completions,
            r#"{"model":"m","prompt":"once upon"}"#
        )
        .is_ok()
    );
    assert!(
        parse(
            Endpoint::Completions,
            r#"{"model":"m","prompt":[[1,2,3],[4]]}"#
        )
        .is_ok()
    );
    assert_eq!(
        param_of(Endpoint::Completions, json!({"model": "m"})),
        Some("prompt".into())
    );
    assert_eq!(
        param_of(Endpoint::Completions, json!({"model": "m", "prompt": [{}]})),
        Some("prompt[0]".into())
    );
    assert!(parse(Endpoint::Embeddings, r#"{"model":"m","input":["a","b"]}"#).is_ok());
    assert_eq!(
        param_of(Endpoint::Embeddings, json!({"model": "m", "input": []})),
        Some("input".into())
    );
    assert_eq!(
        param_of(
            Endpoint::Embeddings,
            json!({"model": "m", "input": "x", "encoding_format": "hex"})
        ),
        Some("encoding_format".into())
    );
    assert_eq!(
        param_of(
            Endpoint::Embeddings,
            json!({"model": "m", "input": "x", "stream": true})
        ),
        Some("stream".into())
    );
}

#[test]
fn determinism() {
    let p = |extra: serde_json::Value| {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        parse(Endpoint::ChatCompletions, &body.to_string())
            .expect("valid")
            .is_deterministic()
    };
    assert!(p(json!({"temperature": 0})));
    assert!(p(json!({"seed": 7, "temperature": 0.9})));
    assert!(!p(json!({})));
    assert!(!p(json!({"temperature": 0.2})));
}
