//! `/metrics` read back by the official Prometheus Python client's
//! OpenMetrics parser (`prometheus_client`, in the tools venv that
//! scripts/setup.sh installs), so the exposition is checked by a parser
//! Prometheus users rely on rather than by string matching.

use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The families of `exposition`, as `parse_metrics.py` prints them; panics
/// with the parser's message when it refuses the text.
pub fn parse(exposition: &str) -> Value {
    let tools = std::env::var("EDGEGATE_TOOLS")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cache/edgegate-tools")))
        .expect("EDGEGATE_TOOLS or HOME");
    let python = tools.join("venv/bin/python");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/parse_metrics.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup.sh)", python.display()));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write the exposition");
    let out = child.wait_with_output().expect("the parser ran");
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition: {}\n{exposition}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the parser's JSON")
}

/// The family `name`'s type (`counter`, `gauge`, `histogram`).
pub fn family_type<'a>(families: &'a Value, name: &str) -> &'a str {
    families[name]["type"]
        .as_str()
        .unwrap_or_else(|| panic!("no family {name} in {families}"))
}

/// The value of the sample `sample` whose labels include `labels`.
pub fn sample(
    families: &Value,
    family: &str,
    sample: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    families[family]["samples"]
        .as_array()?
        .iter()
        .find_map(|s| {
            let matches =
                s[0] == sample && labels.iter().all(|(k, v)| s[1][*k].as_str() == Some(*v));
            matches.then(|| s[2].as_f64()).flatten()
        })
}
