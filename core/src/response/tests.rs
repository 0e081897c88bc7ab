// A panic is how a test reports a broken expectation.
#![allow(clippy::unwrap_used)]

use super::replay::REPLAY_PIECE_CHARS;
use super::*;
use proptest::prelude::*;

fn message(e: GatewayError) -> String {
    match e {
        GatewayError::UpstreamInvalidResponse { message } => message,
        other => panic!("unexpected {other:?}"),
    }
}

fn parse_err(kind: ResponseKind, body: &str) -> String {
    message(parse_upstream_body(kind, body.as_bytes()).expect_err(body))
}

// ---- parse_upstream_body ----

#[test]
fn valid_bodies_and_usage() {
    let chat = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m",
        "choices":[{"index":0,"message":{"role":"assistant","content":"hi","tool_calls":[]},"finish_reason":"stop"}],
        "usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13}}"#;
    let u = parse_upstream_body(ResponseKind::Chat, chat.as_bytes()).unwrap();
    let usage = Usage {
        prompt_tokens: 10,
        completion_tokens: 3,
    };
    assert_eq!(u, Metered::Reported(usage));
    assert_eq!(usage.total(), 13);

    let tool_only = r#"{"choices":[{"message":{"role":"assistant","content":null}}]}"#;
    assert_eq!(
        parse_upstream_body(ResponseKind::Chat, tool_only.as_bytes()),
        Ok(Metered::Relayed {
            completion_tokens: 0
        })
    );

    let completion = r#"{"object":"text_completion","choices":[{"index":0,"text":"x","finish_reason":"length"}],
        "usage":{"prompt_tokens":1,"completion_tokens":16,"total_tokens":17}}"#;
    assert_eq!(
        parse_upstream_body(ResponseKind::Completion, completion.as_bytes()),
        Ok(Metered::Reported(Usage {
            prompt_tokens: 1,
            completion_tokens: 16
        }))
    );

    let emb = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-2,3e-5]},
        {"object":"embedding","index":1,"embedding":"AAAAAA=="}],"model":"e","usage":{"prompt_tokens":5,"total_tokens":5}}"#;
    assert_eq!(
        parse_upstream_body(ResponseKind::Embedding, emb.as_bytes()),
        Ok(Metered::Reported(Usage {
            prompt_tokens: 5,
            completion_tokens: 0
        }))
    );
    let no_usage = r#"{"data":[], "usage": null}"#;
    assert_eq!(
        parse_upstream_body(ResponseKind::Embedding, no_usage.as_bytes()),
        Ok(Metered::Relayed {
            completion_tokens: 0
        })
    );
}

#[test]
fn answers_without_usage_are_counted_from_their_content() {
    let text = "The capital of France is Paris, and it has been for a long time.";
    let expected = u64::from(estimate_text(&format!("{text}\n")));
    assert!(expected >= 14, "{expected}");
    let chat =
        json!({"choices": [{"message": {"role": "assistant", "content": text}}]}).to_string();
    assert_eq!(
        parse_upstream_body(ResponseKind::Chat, chat.as_bytes()),
        Ok(Metered::Relayed {
            completion_tokens: expected
        })
    );
    // Every choice counts, and tool calls are generated text too.
    let two = json!({"choices": [
        {"message": {"role": "assistant", "content": text}},
        {"message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{\"city\":\"Paris\"}"}}]}}
    ]})
    .to_string();
    let Ok(Metered::Relayed { completion_tokens }) =
        parse_upstream_body(ResponseKind::Chat, two.as_bytes())
    else {
        panic!("expected an estimate");
    };
    assert!(completion_tokens > expected + 3, "{completion_tokens}");
    let completion = json!({"choices": [{"text": text}]}).to_string();
    assert_eq!(
        parse_upstream_body(ResponseKind::Completion, completion.as_bytes()),
        Ok(Metered::Relayed {
            completion_tokens: expected
        })
    );
}

#[test]
fn a_stream_without_usage_is_metered_by_what_it_relayed() {
    let mut obs = StreamObserver::new(ResponseKind::Chat, false);
    for piece in ["The capital", " of France", " is Paris."] {
        let chunk = json!({"choices": [{"index": 0, "delta": {"content": piece}}]});
        obs.feed(format!("data: {chunk}\n\n").as_bytes());
    }
    let relayed = u64::from(estimate_text("The capital of France is Paris."));
    assert_eq!(
        obs.metered(),
        Metered::Relayed {
            completion_tokens: relayed
        }
    );
    // Broken off here (no [DONE]): still what was relayed, not the reservation.
    obs.feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" It\"}}]}\n\n");
    let Metered::Relayed { completion_tokens } = obs.metered() else {
        panic!("expected an estimate");
    };
    assert!(completion_tokens > relayed);
    // A usage chunk wins over the estimate.
    obs.feed(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":9}}\n\n");
    assert_eq!(
        obs.metered(),
        Metered::Reported(Usage {
            prompt_tokens: 7,
            completion_tokens: 9
        })
    );
}

#[test]
fn wrong_shapes_get_precise_messages() {
    use ResponseKind::*;
    let e = parse_err(Chat, "{\"choices\": [");
    assert!(
        e.starts_with("upstream chat completion response is not valid JSON: EOF"),
        "{e}"
    );
    assert_eq!(
        parse_err(Chat, "[1]"),
        "upstream chat completion response is an array, expected a JSON object"
    );
    assert_eq!(
        parse_err(Chat, r#"{"object":"text_completion","choices":[]}"#),
        "upstream chat completion response has `object` \"text_completion\", expected \"chat.completion\""
    );
    assert_eq!(
        parse_err(Chat, r#"{"object":"chat.completion"}"#),
        "upstream chat completion response has no `choices` array"
    );
    assert_eq!(
        parse_err(Chat, r#"{"choices":{}}"#),
        "upstream chat completion response `choices` is an object, expected an array"
    );
    assert_eq!(
        parse_err(Chat, r#"{"choices":[{"message":{}}, {"text":"x"}]}"#),
        "upstream chat completion response `choices[1]` has no `message`"
    );
    assert_eq!(
        parse_err(Chat, r#"{"choices":[{"message":{"content":5}}]}"#),
        "upstream chat completion response `choices[0].message.content` is a number, expected a string or null"
    );
    assert_eq!(
        parse_err(Completion, r#"{"choices":[{"text":null}]}"#),
        "upstream completion response `choices[0].text` is null, expected a string"
    );
    assert_eq!(
        parse_err(Embedding, r#"{"data":[{"embedding":[1,"2"]}]}"#),
        "upstream embedding response `data[0].embedding[1]` is a string, expected a number"
    );
    assert_eq!(
        parse_err(Embedding, r#"{"data":[7]}"#),
        "upstream embedding response `data[0]` is a number, expected an object"
    );
    assert_eq!(
        parse_err(
            Completion,
            r#"{"choices":[],"usage":{"prompt_tokens":-1,"completion_tokens":0}}"#
        ),
        "upstream completion response `usage.prompt_tokens` is a number, expected a non-negative integer"
    );
    assert_eq!(
        parse_err(Chat, r#"{"choices":[],"usage":{"prompt_tokens":3}}"#),
        "upstream chat completion response `usage.completion_tokens` is missing"
    );
    assert_eq!(
        parse_err(Chat, r#"{"choices":[],"usage":"lots"}"#),
        "upstream chat completion response `usage` is a string, expected an object"
    );
    assert_eq!(
        parse_err(
            Chat,
            r#"{"error":{"message":"CUDA out of memory","type":"server_error"}}"#
        ),
        "upstream returned an error in a successful chat completion response: CUDA out of memory"
    );
}

// ---- upstream_error ----

fn status_message(status: u16, body: &[u8]) -> String {
    match upstream_error(status, body) {
        GatewayError::UpstreamStatus { status: s, message } => {
            assert_eq!(s, status);
            message
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn upstream_error_messages() {
    let openai = br#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
    assert_eq!(
        status_message(400, openai),
        "This model's maximum context length is 8192 tokens."
    );
    let tgi = br#"{"error":"Input validation error: `inputs` must have less than 4096 tokens","error_type":"validation"}"#;
    assert!(status_message(422, tgi).starts_with("Input validation error"));
    let old_vllm = br#"{"object":"error","message":"The model `x` does not exist.","type":"NotFoundError","param":null,"code":404}"#;
    assert_eq!(
        status_message(404, old_vllm),
        "The model `x` does not exist."
    );
    assert_eq!(
        status_message(503, b"<html><body>secret stack trace</body></html>"),
        "upstream returned HTTP 503 (service unavailable)"
    );
    assert_eq!(status_message(599, b""), "upstream returned HTTP 599");
    assert_eq!(
        status_message(500, br#"{"error":{"message":"  \n "}}"#),
        "upstream returned HTTP 500 (internal server error)"
    );
    // The upstream's credential problem is not the client's business.
    let key = br#"{"error":{"message":"Incorrect API key provided: sk-proj-****abcd."}}"#;
    assert_eq!(
        status_message(401, key),
        "upstream returned HTTP 401 (unauthorized)"
    );
}

#[test]
fn upstream_error_message_is_one_line_and_truncated() {
    let long = format!(
        r#"{{"error":{{"message":"line1\nline2 {}"}}}}"#,
        "é".repeat(500)
    );
    let m = status_message(429, long.as_bytes());
    assert_eq!(m.chars().count(), 200);
    assert!(m.starts_with("line1 line2 éé"));
    assert!(m.ends_with('…'));
}

// ---- StreamObserver ----

fn observe_all(obs: &mut StreamObserver, chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        out.extend(obs.feed(c));
    }
    out.extend(obs.finish());
    out
}

const OPENAI_HEAD: &str = r#""id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1727000000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_1bb46167f9""#;

fn openai_stream() -> (String, String) {
    let h = OPENAI_HEAD;
    let body = [
        format!(r#"data: {{{h},"choices":[{{"index":0,"delta":{{"role":"assistant","content":"","refusal":null}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#),
        format!(r#"data: {{{h},"choices":[{{"index":0,"delta":{{"content":"Hello"}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#),
        format!(r#"data: {{{h},"choices":[{{"index":0,"delta":{{"content":" there, ünïcode ✓"}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#),
        format!(r#"data: {{{h},"choices":[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"stop"}}],"usage":null}}"#),
    ]
    .map(|l| l + "\n\n")
    .concat();
    let usage = format!(
        r#"data: {{{h},"choices":[],"usage":{{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14,"prompt_tokens_details":{{"cached_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0}}}}}}"#
    ) + "\n\n";
    (body, usage)
}

#[test]
fn openai_chat_stream_strips_added_usage_chunk_and_assembles() {
    let (body, usage) = openai_stream();
    let input = format!("{body}: keep-alive\n\n{usage}data: [DONE]\n\n");
    for strip in [false, true] {
        let mut obs = StreamObserver::new(ResponseKind::Chat, strip);
        let out = observe_all(&mut obs, &input.as_bytes().chunks(7).collect::<Vec<_>>());
        let expected = if strip {
            input.replace(&usage, "")
        } else {
            input.clone()
        };
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        assert!(obs.saw_done());
        assert_eq!(obs.upstream_error(), None);
        assert_eq!(
            obs.usage(),
            Some(Usage {
                prompt_tokens: 9,
                completion_tokens: 5
            })
        );
        assert_eq!(
            obs.assembled().unwrap(),
            json!({
                "id": "chatcmpl-AbC123",
                "object": "chat.completion",
                "created": 1727000000,
                "model": "gpt-4o-mini-2024-07-18",
                "system_fingerprint": "fp_1bb46167f9",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there, ünïcode ✓"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
            })
        );
    }
}

#[test]
fn vllm_chat_stream_with_crlf_and_stop_reason() {
    let h = r#""id":"chatcmpl-8f1c2d","object":"chat.completion.chunk","created":1727000001,"model":"meta-llama/Llama-3.1-8B-Instruct""#;
    let input = [
        format!(r#"data: {{{h},"choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},"logprobs":null,"finish_reason":null}}]}}"#),
        format!(r#"data: {{{h},"choices":[{{"index":0,"delta":{{"content":"Hi"}},"logprobs":null,"finish_reason":null}}]}}"#),
        format!(r#"data: {{{h},"choices":[{{"index":0,"delta":{{"content":"!"}},"logprobs":null,"finish_reason":"stop","stop_reason":128009}}]}}"#),
        format!(r#"data: {{{h},"choices":[],"usage":{{"prompt_tokens":12,"total_tokens":14,"completion_tokens":2}}}}"#),
        "data: [DONE]".to_owned(),
    ]
    .map(|l| l + "\r\n\r\n")
    .concat();
    let mut obs = StreamObserver::new(ResponseKind::Chat, true);
    // Split every chunk between \r and \n.
    let pieces: Vec<&[u8]> = input.as_bytes().split_inclusive(|&b| b == b'\r').collect();
    let out = observe_all(&mut obs, &pieces);
    assert_eq!(
        out.len(),
        input.len() - input.split("\r\n\r\n").nth(3).unwrap().len() - 4
    );
    assert!(!String::from_utf8(out).unwrap().contains("usage"));
    assert_eq!(obs.usage().map(|u| u.total()), Some(14));
    let a = obs.assembled().unwrap();
    assert_eq!(a["choices"][0]["message"]["content"], "Hi!");
    assert_eq!(a["model"], "meta-llama/Llama-3.1-8B-Instruct");
    assert_eq!(a["usage"]["total_tokens"], 14);
}

#[test]
fn usage_on_last_content_chunk_is_recorded_and_forwarded() {
    let input = concat!(
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"ok\"}}]}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1,\"total_tokens\":5}}\n\n",
        "data: [DONE]\n\n",
    );
    let mut obs = StreamObserver::new(ResponseKind::Chat, true);
    let out = observe_all(&mut obs, &[input.as_bytes()]);
    assert_eq!(
        out,
        input.as_bytes(),
        "not usage-only: must not be stripped"
    );
    assert_eq!(
        obs.usage(),
        Some(Usage {
            prompt_tokens: 4,
            completion_tokens: 1
        })
    );
    assert_eq!(
        obs.assembled().unwrap()["choices"][0]["message"]["content"],
        "ok"
    );
}

#[test]
fn in_stream_error_events() {
    let input = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"pa\"}}]}\n\n",
        "data: {\"error\":{\"message\":\"backend overloaded\",\"type\":\"server_error\",\"code\":503}}\n\n",
        "data: [DONE]\n\n",
    );
    let mut obs = StreamObserver::new(ResponseKind::Chat, false);
    assert_eq!(observe_all(&mut obs, &[input.as_bytes()]), input.as_bytes());
    assert_eq!(obs.upstream_error(), Some("backend overloaded"));
    assert!(obs.saw_done());
    assert_eq!(obs.assembled(), None);

    let mut obs = StreamObserver::new(ResponseKind::Chat, false);
    observe_all(&mut obs, &[b"event: error\ndata: not json at all\n\n"]);
    assert_eq!(
        obs.upstream_error(),
        Some("upstream reported an error mid-stream")
    );

    let mut obs = StreamObserver::new(ResponseKind::Completion, false);
    observe_all(
        &mut obs,
        &[br#"data: {"object":"error","message":"prompt too long","code":400}"#],
    );
    assert_eq!(obs.upstream_error(), Some("prompt too long"));
}

#[test]
fn assembled_needs_done_and_refuses_what_it_cannot_rebuild() {
    let start = "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"a\"}}]}\n\n";
    let end = "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
    let cases = [
        // No [DONE]: truncated.
        (format!("{start}{end}"), false),
        (format!("{start}{end}data: [DONE]\n\n"), true),
        // Trailing [DONE] without its blank line still counts.
        (format!("{start}{end}data: [DONE]"), true),
        // Tool calls, logprobs, reasoning, broken JSON.
        (
            format!(
                "{start}data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":0,\"id\":\"call_1\",\"function\":{{\"name\":\"f\",\"arguments\":\"\"}}}}]}}}}]}}\n\n{end}data: [DONE]\n\n"
            ),
            false,
        ),
        (
            format!(
                "{start}data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"b\"}},\"logprobs\":{{\"content\":[]}}}}]}}\n\n{end}data: [DONE]\n\n"
            ),
            false,
        ),
        (
            format!(
                "{start}data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"reasoning_content\":\"hmm\"}}}}]}}\n\n{end}data: [DONE]\n\n"
            ),
            false,
        ),
        (
            format!("{start}data: {{\"choices\":[{{\"index\n\n{end}data: [DONE]\n\n"),
            false,
        ),
        // Empty or null extras are fine (vLLM sends `"tool_calls": []`).
        (
            format!(
                "{start}data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[],\"reasoning_content\":null}}}}]}}\n\n{end}data: [DONE]\n\n"
            ),
            true,
        ),
        // No finish_reason.
        (format!("{start}data: [DONE]\n\n"), false),
        // Only [DONE].
        ("data: [DONE]\n\n".to_owned(), false),
    ];
    for (input, assembles) in cases {
        let mut obs = StreamObserver::new(ResponseKind::Chat, false);
        observe_all(&mut obs, &[input.as_bytes()]);
        assert_eq!(obs.assembled().is_some(), assembles, "{input}");
    }
}

#[test]
fn completion_stream_with_several_choices() {
    let input = concat!(
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":1,\"text\":\"B\",\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\"A\",\"logprobs\":null,\"finish_reason\":\"length\"}]}\n\n",
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":1,\"text\":\"b\",\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n",
    );
    let mut obs = StreamObserver::new(ResponseKind::Completion, true);
    observe_all(&mut obs, &[input.as_bytes()]);
    assert_eq!(obs.usage(), None);
    assert_eq!(
        obs.assembled().unwrap(),
        json!({
            "id": "cmpl-1", "object": "text_completion", "created": 7, "model": "m",
            "choices": [
                {"index": 0, "text": "A", "logprobs": null, "finish_reason": "length"},
                {"index": 1, "text": "Bb", "logprobs": null, "finish_reason": "stop"},
            ],
        })
    );
}

#[test]
fn trailing_partial_event_is_flushed_by_finish() {
    let mut obs = StreamObserver::new(ResponseKind::Chat, true);
    assert!(obs.feed(b"data: {\"choices\":[],\"usage\"").is_empty());
    assert!(obs.buffered_len() > 0);
    // A complete-looking usage-only chunk without its blank line is still stripped.
    assert!(
        obs.feed(b":{\"prompt_tokens\":1,\"completion_tokens\":2}}")
            .is_empty()
    );
    assert_eq!(obs.finish(), b"");
    assert_eq!(obs.usage().map(|u| u.total()), Some(3));

    let mut obs = StreamObserver::new(ResponseKind::Chat, true);
    assert!(obs.feed(b"data: {\"choices\":[{\"ind").is_empty());
    assert_eq!(obs.finish(), b"data: {\"choices\":[{\"ind");
}

// ---- replay_as_sse ----

fn events_of(sse: &[u8]) -> Vec<String> {
    let mut p = SseParser::new();
    let mut evs = p.feed(sse);
    assert_eq!(p.finish(), None, "replay ends with a blank line");
    evs.drain(..).map(|e| e.data).collect()
}

#[test]
fn replay_chat_shape() {
    let content = "Hello, world! This is a longer answer — with ünïcode 🎉 to split.";
    let resp = json!({
        "id": "chatcmpl-9", "object": "chat.completion", "created": 42, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 20, "total_tokens": 23},
    });
    let sse = replay_as_sse(ResponseKind::Chat, &resp, true).unwrap();
    let datas = events_of(&sse);
    assert_eq!(
        datas[0],
        r#"{"id":"chatcmpl-9","object":"chat.completion.chunk","created":42,"model":"m","choices":[{"index":0,"delta":{"content":"","role":"assistant"},"logprobs":null,"finish_reason":null}],"usage":null}"#
    );
    let chunks: Vec<Value> = datas[..datas.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let pieces: Vec<&str> = chunks[1..chunks.len() - 2]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert!(pieces.len() > 3);
    assert!(
        pieces
            .iter()
            .all(|p| p.chars().count() <= REPLAY_PIECE_CHARS)
    );
    assert_eq!(pieces.concat(), content);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["total_tokens"], 23);
    assert!(chunks.iter().all(|c| c["id"] == "chatcmpl-9"
        && c["created"] == 42
        && c["model"] == "m"
        && c["object"] == "chat.completion.chunk"));
    assert_eq!(datas.last().unwrap(), "[DONE]");
    assert!(sse.ends_with(b"\n\ndata: [DONE]\n\n"));

    // Without include_usage: no usage chunk and no `usage` keys at all.
    let sse = replay_as_sse(ResponseKind::Chat, &resp, false).unwrap();
    assert!(!String::from_utf8(sse).unwrap().contains("usage"));
}

#[test]
fn replay_completion_and_empty_text() {
    let resp = json!({"id": "c", "object": "text_completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "text": "", "logprobs": null, "finish_reason": "length"}]});
    let datas = events_of(&replay_as_sse(ResponseKind::Completion, &resp, false).unwrap());
    assert_eq!(
        datas,
        [
            r#"{"id":"c","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":"","logprobs":null,"finish_reason":"length"}]}"#,
            "[DONE]"
        ]
    );
}

#[test]
fn replay_tool_calls_and_reasoning() {
    let resp = json!({"id": "t", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null, "reasoning_content": "think first",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}]});
    let datas = events_of(&replay_as_sse(ResponseKind::Chat, &resp, false).unwrap());
    let deltas: Vec<Value> = datas[..datas.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap()["choices"][0]["delta"].clone())
        .collect();
    assert_eq!(
        deltas,
        [
            json!({"role": "assistant", "content": null}),
            json!({"reasoning_content": "think first"}),
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}),
            json!({}),
        ]
    );
    // The observer will not cache what it cannot rebuild.
    let mut obs = StreamObserver::new(ResponseKind::Chat, false);
    obs.feed(&replay_as_sse(ResponseKind::Chat, &resp, false).unwrap());
    assert!(obs.saw_done());
    assert_eq!(obs.assembled(), None);
}

#[test]
fn replay_refuses_what_it_cannot_stream() {
    let ok = json!({"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}]});
    let cases = [
        (
            ResponseKind::Embedding,
            ok.clone(),
            false,
            "embedding responses cannot be streamed",
        ),
        (
            ResponseKind::Chat,
            ok.clone(),
            true,
            "cached chat completion response has no `usage` to send for include_usage",
        ),
        (
            ResponseKind::Chat,
            json!({"object": "text_completion", "choices": []}),
            false,
            "cached chat completion response has the wrong `object`, expected \"chat.completion\"",
        ),
        (
            ResponseKind::Chat,
            json!([]),
            false,
            "cached chat completion response is an array, expected an object",
        ),
        (
            ResponseKind::Completion,
            ok.clone(),
            false,
            "cached completion response `choices[0].text` is not a string",
        ),
        (
            ResponseKind::Chat,
            json!({"choices": [{"message": {"content": "x"}, "logprobs": {"content": [1]}}]}),
            false,
            "cached chat completion response `choices[0]` has logprobs, which are not replayed",
        ),
        (
            ResponseKind::Chat,
            json!({"choices": [{"message": {"audio": {"id": "a"}}}]}),
            false,
            "cached chat completion response `choices[0].message.audio` cannot be replayed",
        ),
    ];
    for (kind, resp, usage, expected) in cases {
        assert_eq!(
            message(replay_as_sse(kind, &resp, usage).unwrap_err()),
            expected
        );
    }
    // Missing id/model/created are simply left out of the chunks.
    let datas = events_of(&replay_as_sse(ResponseKind::Chat, &ok, false).unwrap());
    assert!(datas[0].starts_with(r#"{"object":"chat.completion.chunk","choices":[{"index":0,"#));
}

// ---- properties ----

fn cut(input: &[u8], mut cuts: Vec<usize>) -> Vec<&[u8]> {
    cuts.iter_mut().for_each(|c| *c %= input.len() + 1);
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut prev = 0;
    for c in cuts.into_iter().chain([input.len()]) {
        pieces.push(&input[prev..c]);
        prev = c;
    }
    pieces
}

/// One event of a plausible stream, and whether it is a usage-only chunk.
fn arb_stream_event() -> impl Strategy<Value = (String, bool)> {
    let text = "[a-z é✓\"\\\\]{0,10}";
    let eol = prop::sample::select(vec!["\n", "\r\n", "\r"]);
    prop_oneof![
        (text, eol.clone()).prop_map(|(t, eol)| {
            let chunk = json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": t}}]});
            (format!("data: {chunk}{eol}{eol}"), false)
        }),
        (0u64..1000, 0u64..1000, eol.clone(), any::<bool>()).prop_map(|(p, c, eol, on_content)| {
            let choices = if on_content { json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]) } else { json!([]) };
            let chunk = json!({"object": "chat.completion.chunk", "choices": choices, "usage": {"prompt_tokens": p, "completion_tokens": c}});
            (format!("data: {chunk}{eol}{eol}"), !on_content)
        }),
        eol.clone().prop_map(|eol| (format!(": keep-alive{eol}{eol}"), false)),
        eol.clone().prop_map(|eol| (format!("data: [DONE]{eol}{eol}"), false)),
        "[^\r\n]{0,20}".prop_map(|garbage| (format!("data: {garbage}\n\n"), false)),
    ]
}

proptest! {
    #[test]
    fn observer_forwards_everything_but_stripped_usage_chunks(
        events in prop::collection::vec(arb_stream_event(), 0..10),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        strip in any::<bool>(),
    ) {
        // A lone-\r event followed by a \n-starting one would merge their line
        // endings; keep the generated boundaries unambiguous.
        let input: String = events.iter().map(|(e, _)| e.as_str()).collect();
        prop_assume!(!input.contains("\r\r\n") && !events.windows(2).any(|w| w[0].0.ends_with('\r') && w[1].0.starts_with('\n')));
        let expected: String = events
            .iter()
            .filter(|(_, usage_only)| !(strip && *usage_only))
            .map(|(e, _)| e.as_str())
            .collect();
        let mut obs = StreamObserver::new(ResponseKind::Chat, strip);
        let out = observe_all(&mut obs, &cut(input.as_bytes(), cuts));
        prop_assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn observer_never_panics_and_forwards_garbage(
        input in prop::collection::vec(any::<u8>(), 0..300),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut obs = StreamObserver::new(ResponseKind::Chat, false);
        let out = observe_all(&mut obs, &cut(&input, cuts));
        prop_assert_eq!(out, input);
        let _ = obs.assembled();
    }

    #[test]
    fn replay_then_observe_round_trips(
        contents in prop::collection::vec(".{0,60}", 1..3),
        chat in any::<bool>(),
        usage in prop::option::of((0u64..100_000, 0u64..100_000)),
        include_usage in any::<bool>(),
        strip in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let (kind, object) = if chat {
            (ResponseKind::Chat, "chat.completion")
        } else {
            (ResponseKind::Completion, "text_completion")
        };
        let choices: Vec<Value> = contents.iter().enumerate().map(|(i, c)| if chat {
            json!({"index": i, "message": {"role": "assistant", "content": c}, "finish_reason": "stop"})
        } else {
            json!({"index": i, "text": c, "logprobs": null, "finish_reason": "length"})
        }).collect();
        let mut resp = json!({"id": "id-1", "object": object, "created": 1_700_000_000, "model": "m", "choices": choices});
        if let Some((p, c)) = usage {
            resp["usage"] = Usage { prompt_tokens: p, completion_tokens: c }.to_json();
        }
        let sse = match replay_as_sse(kind, &resp, include_usage) {
            Ok(sse) => sse,
            Err(e) => {
                prop_assert!(include_usage && usage.is_none(), "{:?}", e);
                return Ok(());
            }
        };
        let mut obs = StreamObserver::new(kind, strip);
        let out = observe_all(&mut obs, &cut(&sse, cuts));
        prop_assert!(obs.saw_done());
        if include_usage {
            let u = usage.map(|(p, c)| Usage { prompt_tokens: p, completion_tokens: c });
            prop_assert_eq!(obs.usage(), u);
            prop_assert_eq!(out.len() < sse.len(), strip);
        } else {
            prop_assert_eq!(obs.usage(), None);
            resp.as_object_mut().unwrap().remove("usage");
            prop_assert_eq!(&out, &sse);
        }
        prop_assert_eq!(obs.assembled(), Some(resp));
    }
}
