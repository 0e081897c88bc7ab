//! The Rust routers edgegate is measured beside, started from the tools venv
//! (scripts/bench.sh installs them, pinned) in front of the same backend.

use anyhow::{Context, Result, bail};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A peer router process; killed on drop.
pub struct Peer {
    pub addr: SocketAddr,
    child: Child,
}

impl Peer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Both routers run their Rust server inside the Python process (pyo3), so
/// the process's CPU time is the router's. Retries and circuit breakers are
/// off (the backend never fails here), as are their request-count caps, so
/// they do the same work edgegate does.
pub fn start(name: &'static str, venv_bin: &Path, backend: &str) -> Result<Peer> {
    let port = free_port()?;
    let mut cmd = match name {
        "vllm-router" => {
            let mut c = Command::new(venv_bin.join("vllm-router"));
            c.args(["--policy", "round_robin", "--log-level", "error"]);
            c
        }
        "sglang-router" => {
            let mut c = Command::new(venv_bin.join("python"));
            c.args(["-m", "sglang_router.launch_router"]);
            c.args(["--policy", "round_robin", "--log-level", "error"]);
            c
        }
        other => bail!("unknown peer {other}"),
    };
    // Each its own metrics port (both default to 29000).
    let metrics_port = free_port()?.to_string();
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--prometheus-host",
            "127.0.0.1",
            "--prometheus-port",
            &metrics_port,
        ])
        .args(["--worker-urls", backend])
        .args(["--disable-retries", "--disable-circuit-breaker"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {name} from {}", venv_bin.display()))?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut peer = Peer { addr, child };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).is_err() {
        if let Some(status) = peer.child.try_wait()? {
            bail!("{name} exited with {status} before listening");
        }
        if Instant::now() > deadline {
            bail!("{name} did not listen on {addr} within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(peer)
}
