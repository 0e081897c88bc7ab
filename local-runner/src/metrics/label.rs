//! Label values as the text format needs them. Hand-written because
//! prometheus-client 0.24 writes label values verbatim: a model name with a
//! quote, a backslash or a newline would break the exposition.

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use std::fmt::{self, Write};

/// A label value, escaped when encoded (`\\`, `\"`, `\n`).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Text(pub String);

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text(s.to_owned())
    }
}

impl EncodeLabelValue for Text {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        let mut rest = self.0.as_str();
        while let Some(at) = rest.find(['\\', '"', '\n']) {
            encoder.write_str(&rest[..at])?;
            encoder.write_str(match rest.as_bytes()[at] {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                _ => "\\n",
            })?;
            rest = &rest[at + 1..];
        }
        encoder.write_str(rest)
    }
}
