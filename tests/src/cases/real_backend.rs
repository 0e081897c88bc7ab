//! A real inference server behind the gateway: llama.cpp's OpenAI server
//! with SmolLM2-135M ([`crate::llama`]), routed as region `llama-local` for
//! model `smollm2`, with the simulated `llama-backup` region farther away.
//! The failover case kills the server, so it runs last.

use super::interop::charged_for;
use super::limits::SETTLE_WAIT;
use super::sdk::run_script;
use crate::client::{CHAT, content_of, region_of};
use crate::gateway::{LLAMA_BACKUP_REGION, METER_BURST, keys};
use crate::llama::MODEL;
use crate::suite::Outcome;
use crate::target::Target;
use crate::{ensure, ensure_eq};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn ask(content: &str, max_tokens: u64) -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

fn number(value: Option<&str>, what: &str) -> Result<u64, String> {
    value
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no {what}"))
}

pub async fn chat_settles_the_real_usage(t: &Target) -> Outcome {
    t.llama_url().await?;
    let body = ask("Name one colour of the sky.", 48);
    let started = Instant::now();
    let first = t.chat(keys::LLAMA_METER, &body).await?;
    let answer = first.expect(200)?;
    ensure!(
        !content_of(&answer).trim().is_empty(),
        "an empty answer: {answer}"
    );
    let usage = &answer["usage"];
    let (prompt, completion) = (
        usage["prompt_tokens"]
            .as_u64()
            .ok_or("no usage.prompt_tokens")?,
        usage["completion_tokens"]
            .as_u64()
            .ok_or("no usage.completion_tokens")?,
    );
    ensure!(prompt > 5 && completion > 0, "usage {usage}");
    let after_reserve = number(
        first.header("x-ratelimit-remaining-tokens"),
        "x-ratelimit-remaining-tokens",
    )?;
    let reserved = METER_BURST - after_reserve;
    tokio::time::sleep(SETTLE_WAIT).await;
    let second = t.chat(keys::LLAMA_METER, &body).await?;
    second.expect(200)?;
    let charged = after_reserve as i64
        - number(
            second.header("x-ratelimit-remaining-tokens"),
            "x-ratelimit-remaining-tokens",
        )? as i64;
    // The `meter` tier refills one token a second between the two
    // admissions, however long the model took.
    let refill = started.elapsed().as_secs() as i64 + 2;
    let used = (prompt + completion) as i64;
    ensure!(
        (used - refill..=used + 1).contains(&charged),
        "charged {charged} tokens; the model used {prompt} + {completion} ({reserved} reserved, \
         up to {refill} refilled meanwhile)"
    );
    Ok(())
}

pub async fn stream_relayed_and_charged_what_was_relayed(t: &Target) -> Outcome {
    t.llama_url().await?;
    let mut body = ask("Say hello in one short sentence.", 256);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (charged, reserved, first) = charged_for(t, keys::LLAMA_STREAM_METER, &body).await?;
    ensure!(
        first.ends_with_done(),
        "the stream does not end with [DONE]"
    );
    let content = first.content()?;
    let pieces = first.content_arrivals();
    ensure!(
        pieces.len() >= 3,
        "{} content chunks for {content:?}",
        pieces.len()
    );
    // Relayed as generated, not buffered to the end: the chunks arrive
    // over most of the generation, whatever the machine's speed.
    let (first_at, last_at) = (pieces[0], pieces[pieces.len() - 1]);
    let spread = last_at - first_at;
    ensure!(
        spread >= last_at.mul_f64(0.3),
        "{} chunks arrived within {spread:?} of a {last_at:?} answer: buffered",
        pieces.len()
    );
    let words = content.split_whitespace().count() as u64;
    ensure!(
        charged >= words && charged + 100 < reserved,
        "charged {charged} tokens for {words} words streamed ({reserved} reserved): the server \
         sends no usage, so the prompt estimate and the relayed tokens are charged"
    );
    Ok(())
}

pub async fn max_tokens_is_honoured(t: &Target) -> Outcome {
    t.llama_url().await?;
    let answer = t
        .chat(keys::LLAMA, &ask("Write a long story about the sea.", 5))
        .await?
        .expect(200)?;
    ensure_eq!(
        answer["usage"]["completion_tokens"].as_u64(),
        Some(5),
        "completion tokens"
    );
    ensure_eq!(
        answer["choices"][0]["finish_reason"].as_str(),
        Some("length"),
        "finish_reason"
    );
    Ok(())
}

/// The server generates one request at a time: while a cut-off generation
/// still ran, the next request would wait for it.
pub async fn client_disconnect_stops_the_generation(t: &Target) -> Outcome {
    t.llama_url().await?;
    let mut body = ask("Write a very long story about a lighthouse keeper.", 1024);
    body["stream"] = json!(true);
    let response = t.post(CHAT).key(keys::LLAMA).json(&body).unread().await?;
    ensure_eq!(response.status().as_u16(), 200, "status");
    let mut chunks = response.bytes_stream();
    let mut seen = String::new();
    while seen.matches("\"content\"").count() < 5 {
        match chunks.next().await {
            Some(Ok(bytes)) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            other => {
                return Err(format!(
                    "the stream ended ({:?}) before five content chunks: {seen}",
                    other.map(|r| r.map(|b| b.len()))
                ));
            }
        }
    }
    drop(chunks);
    // 1,024 tokens at ~40/s would hold the server for ~25 s.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let next = t.chat(keys::LLAMA, &ask("Say yes.", 4)).await?;
    next.expect(200)?;
    let waited = started.elapsed();
    ensure!(
        waited < Duration::from_secs(8),
        "the next request took {waited:?}: the abandoned generation kept running"
    );
    Ok(())
}

pub async fn upstream_id_and_sdk_against_the_real_model(t: &Target) -> Outcome {
    let llama = t.llama_url().await?;
    // Straight to the server: it refuses request ids that are not UUIDs.
    let http = reqwest::Client::new();
    let direct = |id: &'static str| {
        http.post(format!("{llama}/v1/chat/completions"))
            .header("x-request-id", id)
            .json(&ask("Hi", 1))
            .send()
    };
    let refused = direct("req_0123456789abcdef0123456789abcdef")
        .await
        .map_err(|e| e.to_string())?;
    ensure_eq!(refused.status().as_u16(), 400, "the server on a req_ id");
    let accepted = direct("0f8fad5b-d9cb-469f-a165-70867728950e")
        .await
        .map_err(|e| e.to_string())?;
    ensure_eq!(accepted.status().as_u16(), 200, "the server on a UUID");
    // Through the gateway the same server answers (it would refuse our old `req_` ids).
    t.chat(keys::LLAMA, &ask("Hi", 1)).await?.expect(200)?;
    let url = t.url("/v1");
    run_script(
        "real_model.py",
        &["--base-url", &url, "--key", keys::LLAMA, "--model", MODEL],
    )
    .await
}

pub async fn killed_server_fails_over_to_the_sim(t: &Target) -> Outcome {
    t.llama_url().await?;
    let before = t
        .chat(keys::LLAMA, &ask("Say one word.", 4))
        .await?
        .expect(200)?;
    ensure!(
        region_of(content_of(&before)).is_none(),
        "answered by a simulated region before the kill: {before}"
    );
    t.kill_llama().await;
    let backup = t.backend(LLAMA_BACKUP_REGION);
    let received = backup.requests_received();
    for i in 0..3 {
        let reply = t
            .chat(keys::LLAMA, &ask(&format!("After the kill {i}."), 4))
            .await?;
        let answer = reply.expect(200)?;
        ensure_eq!(
            region_of(content_of(&answer)),
            Some(LLAMA_BACKUP_REGION),
            "answered by"
        );
    }
    ensure!(
        backup.requests_received() >= received + 3,
        "the backup region was not called"
    );
    Ok(())
}
