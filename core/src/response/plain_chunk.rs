//! The common stream chunk — text deltas, a role, a finish reason — read
//! into borrowed fields instead of a JSON map (the stream's hot path: every
//! token passes here). Anything else fails to match and goes the general
//! way (`StreamObserver::observe`): usage, an error, tool calls, logprobs,
//! an unknown delta field, a field of another type, a duplicate key.

use super::{Assembly, ResponseKind};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

#[derive(Deserialize)]
pub(super) struct PlainChunk<'a> {
    #[serde(borrow)]
    id: Option<Text<'a>>,
    #[serde(borrow)]
    object: Option<Text<'a>>,
    created: Option<u64>,
    #[serde(borrow)]
    model: Option<Text<'a>>,
    #[serde(borrow)]
    system_fingerprint: Option<Text<'a>>,
    #[serde(borrow)]
    choices: Option<Vec<PlainChoice<'a>>>,
    usage: Option<IgnoredAny>,
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct PlainChoice<'a> {
    /// Absent: the choice's position. (`null` is not an index: no match.)
    #[serde(default, deserialize_with = "present")]
    index: Option<u64>,
    #[serde(borrow)]
    delta: Option<PlainDelta<'a>>,
    #[serde(borrow)]
    text: Option<Text<'a>>,
    logprobs: Option<IgnoredAny>,
    #[serde(borrow)]
    finish_reason: Option<Text<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainDelta<'a> {
    #[serde(borrow)]
    role: Option<Text<'a>>,
    #[serde(borrow)]
    content: Option<Text<'a>>,
}

impl<'a> PlainChunk<'a> {
    /// The chunk, when it has the plain shape (for chat and completions).
    pub(super) fn parse(kind: ResponseKind, data: &'a str) -> Option<Self> {
        if kind == ResponseKind::Embedding {
            return None;
        }
        let chunk: PlainChunk<'a> = serde_json::from_str(data).ok()?;
        let plain = chunk.usage.is_none()
            && chunk.error.is_none()
            && chunk.object.as_ref().is_none_or(|o| o.0 != "error")
            && chunk.choices.iter().flatten().all(|c| c.logprobs.is_none());
        plain.then_some(chunk)
    }

    /// What `Assembly::absorb` does with the same chunk as a JSON map.
    pub(super) fn absorb(self, kind: ResponseKind, into: &mut Assembly) {
        let text = |t: Text<'_>| Value::String(t.0.into_owned());
        fill(&mut into.id, self.id.map(text));
        fill(&mut into.created, self.created.map(Value::from));
        fill(&mut into.model, self.model.map(text));
        fill(
            &mut into.system_fingerprint,
            self.system_fingerprint.map(text),
        );
        for (pos, choice) in self.choices.into_iter().flatten().enumerate() {
            let acc = into
                .choices
                .entry(choice.index.unwrap_or(pos as u64))
                .or_default();
            if let Some(reason) = choice.finish_reason {
                acc.finish_reason = Some(text(reason));
            }
            match kind {
                ResponseKind::Chat => {
                    if let Some(delta) = choice.delta {
                        if let Some(role) = delta.role {
                            acc.role = Some(role.0.into_owned());
                        }
                        if let Some(content) = delta.content {
                            acc.content.push_str(&content.0);
                        }
                    }
                }
                ResponseKind::Completion => {
                    if let Some(t) = choice.text {
                        acc.content.push_str(&t.0);
                    }
                }
                ResponseKind::Embedding => {}
            }
        }
    }
}

fn fill(slot: &mut Option<Value>, value: Option<Value>) {
    if slot.is_none() {
        *slot = value;
    }
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    u64::deserialize(d).map(Some)
}

/// A JSON string, borrowed from the event when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Str;
        impl<'de> Visitor<'de> for Str {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s)))
            }
        }
        d.deserialize_str(Str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::select;
    use serde_json::{Map, json};

    /// A field's candidates: `None` leaves it out.
    fn field(values: Vec<Option<Value>>) -> impl Strategy<Value = Option<Value>> {
        select(values)
    }

    fn choice() -> impl Strategy<Value = Value> {
        (
            field(vec![
                None,
                Some(json!(null)),
                Some(json!(0)),
                Some(json!(2)),
                Some(json!(-1)),
                Some(json!("a")),
            ]),
            field(vec![
                None,
                Some(json!(null)),
                Some(json!({})),
                Some(json!({"role": "assistant", "content": ""})),
                Some(json!({"content": "plain"})),
                Some(json!({"content": "esc\"aped\n\u{e9}"})),
                Some(json!({"content": null})),
                Some(json!({"role": 1})),
                Some(json!({"tool_calls": [{"function": {"arguments": "{}"}}]})),
                Some(json!({"refusal": "no", "content": null})),
                Some(json!("delta")),
            ]),
            field(vec![
                None,
                Some(json!(null)),
                Some(json!("text")),
                Some(json!(5)),
            ]),
            field(vec![
                None,
                Some(json!(null)),
                Some(json!({})),
                Some(json!({"content": [1]})),
            ]),
            field(vec![
                None,
                Some(json!(null)),
                Some(json!("stop")),
                Some(json!(1)),
            ]),
            field(vec![None, Some(json!(null)), Some(json!("x"))]),
        )
            .prop_map(
                |(index, delta, text, logprobs, finish_reason, stop_reason)| {
                    object([
                        ("index", index),
                        ("delta", delta),
                        ("text", text),
                        ("logprobs", logprobs),
                        ("finish_reason", finish_reason),
                        ("stop_reason", stop_reason),
                    ])
                },
            )
    }

    fn object<const N: usize>(fields: [(&str, Option<Value>); N]) -> Value {
        let map: Map<String, Value> = fields
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
            .collect();
        Value::Object(map)
    }

    fn chunk() -> impl Strategy<Value = Value> {
        (
            field(vec![
                None,
                Some(json!(null)),
                Some(json!("chatcmpl-1")),
                Some(json!(5)),
            ]),
            field(vec![
                None,
                Some(json!("chat.completion.chunk")),
                Some(json!("error")),
                Some(json!(3)),
            ]),
            field(vec![
                None,
                Some(json!(1_700_000_000)),
                Some(json!(-1)),
                Some(json!(1.5)),
                Some(json!("t")),
            ]),
            field(vec![None, Some(json!(null)), Some(json!("m"))]),
            field(vec![
                None,
                Some(json!(null)),
                Some(json!({"prompt_tokens": 1, "completion_tokens": 2})),
            ]),
            field(vec![None, Some(json!(null)), Some(json!({"message": "x"}))]),
            prop_oneof![
                Just(None),
                Just(Some(json!(null))),
                Just(Some(json!("x"))),
                proptest::collection::vec(choice(), 0..3).prop_map(|c| Some(Value::Array(c))),
            ],
        )
            .prop_map(|(id, object_, created, model, usage, error, choices)| {
                object([
                    ("id", id),
                    ("object", object_),
                    ("created", created),
                    ("model", model),
                    ("usage", usage),
                    ("error", error),
                    ("choices", choices),
                ])
            })
    }

    proptest! {
        /// Wherever the plain reading applies, it rebuilds exactly what the
        /// general one does, and the general one would have found no usage
        /// and no error in it.
        #[test]
        fn the_plain_reading_agrees_with_the_general_one(chunks in proptest::collection::vec(chunk(), 1..4)) {
            for kind in [ResponseKind::Chat, ResponseKind::Completion] {
                let (mut plain, mut general) = (Assembly::default(), Assembly::default());
                for chunk in &chunks {
                    let data = chunk.to_string();
                    let map = chunk.as_object().expect("an object");
                    match PlainChunk::parse(kind, &data) {
                        Some(c) => {
                            prop_assert!(map.get("usage").is_none_or(Value::is_null));
                            prop_assert!(map.get("error").is_none_or(Value::is_null));
                            prop_assert_ne!(map.get("object"), Some(&json!("error")));
                            c.absorb(kind, &mut plain);
                        }
                        None => plain.absorb(kind, map),
                    }
                    general.absorb(kind, map);
                }
                prop_assert_eq!(format!("{plain:?}"), format!("{general:?}"));
            }
        }
    }

    #[test]
    fn a_token_chunk_is_plain_and_borrows_its_text() {
        let data = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"logprobs":null,"finish_reason":null,"stop_reason":null}]}"#;
        let chunk = PlainChunk::parse(ResponseKind::Chat, data).expect("plain");
        let delta = chunk
            .choices
            .as_ref()
            .and_then(|c| c[0].delta.as_ref())
            .expect("a delta");
        assert!(matches!(
            delta.content.as_ref().map(|t| &t.0),
            Some(Cow::Borrowed("hi"))
        ));
        let usage = r#"{"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#;
        assert!(PlainChunk::parse(ResponseKind::Chat, usage).is_none());
    }
}
