//! The `edgegate-sim` binary: READY lines, serving, and exit on SIGTERM.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn sim(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_edgegate-sim"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A bare HTTP/1.1 GET, enough for a health check.
fn get(base_url: &str, path: &str) -> String {
    let host = base_url.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(host).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn wait_for_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "edgegate-sim did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn spec_starts_every_region_and_sigterm_stops_them() {
    let mut child = sim(&[
        "--spec",
        "us-east=127.0.0.1:0, eu-west=127.0.0.1:0",
        "--latency-ms",
        "0",
    ]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut urls = Vec::new();
    for region in ["us-east", "eu-west"] {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let rest = line.strip_prefix(&format!("READY {region} ")).unwrap();
        let url = rest.trim_end().to_owned();
        assert!(url.starts_with("http://127.0.0.1:"), "{line}");
        urls.push((region, url));
    }
    for (region, url) in &urls {
        let response = get(url, "/health");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response.contains(&format!("x-sim-region: {region}")),
            "{response}"
        );
        let body = response.split("\r\n\r\n").nth(1).unwrap();
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body, serde_json::json!({"status": "ok", "region": region}));
    }

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(wait_for_exit(&mut child).success());
}

#[test]
fn bad_arguments_fail_fast() {
    for args in [
        &["--spec", "us-east"][..],
        &["--spec", "a=127.0.0.1:0,a=127.0.0.1:0"],
        &["--region", "x", "--listen", "0.0.0.0:0"],
        &["--region", "two words"],
        &[],
    ] {
        let mut child = sim(args);
        let status = wait_for_exit(&mut child);
        assert!(!status.success(), "{args:?}");
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(!stderr.is_empty(), "{args:?}");
    }
}
