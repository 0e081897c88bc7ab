//! edgegate beside the Rust routers, in front of one backend in one run:
//! closed-loop load at several concurrencies against an instant backend and
//! one that answers in 500 ms, non-streamed and streamed, then an open-loop
//! run at rising fixed rates.

use crate::load::{self, LoadResult, Target};
use crate::proc_stats;
use anyhow::Result;
use bytes::Bytes;
use edgegate_sim::Controls;
use std::sync::Arc;
use std::time::Duration;

/// One gateway under test; `pid` is `None` for the backend called directly.
pub struct Subject {
    pub name: &'static str,
    pub target: Target,
    pub pid: Option<u32>,
}

type BodyFn = Arc<dyn Fn(u64) -> Bytes + Send + Sync>;

pub struct Matrix<'a> {
    pub subjects: &'a [Subject],
    pub backend: &'a Controls,
    pub seconds: Duration,
    pub concurrencies: &'a [usize],
    pub body: BodyFn,
    pub stream_body: BodyFn,
}

/// What the summary lines need from the matrix.
#[derive(Default)]
pub struct Findings {
    /// (subject, backend, concurrency, streamed) → CPU µs per request.
    pub cpu_us: Vec<(&'static str, &'static str, usize, bool, f64)>,
    /// (subject, backend, concurrency, streamed) → requests/s, added p50, added p99 (ms).
    pub load: Vec<(&'static str, &'static str, usize, bool, f64, f64, f64)>,
}

impl Findings {
    pub fn cpu(&self, who: &str, backend: &str, c: usize, streamed: bool) -> Option<f64> {
        self.cpu_us
            .iter()
            .find(|r| r.0 == who && r.1 == backend && r.2 == c && r.3 == streamed)
            .map(|r| r.4)
    }

    pub fn load(
        &self,
        who: &str,
        backend: &str,
        c: usize,
        streamed: bool,
    ) -> Option<(f64, f64, f64)> {
        self.load
            .iter()
            .find(|r| r.0 == who && r.1 == backend && r.2 == c && r.3 == streamed)
            .map(|r| (r.4, r.5, r.6))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub async fn measure(
    subject: &Subject,
    run: impl Future<Output = Result<LoadResult>>,
) -> Result<(LoadResult, Option<f64>)> {
    let before = subject.pid.map(proc_stats::cpu_time).transpose()?;
    let result = run.await?;
    let cpu = match (subject.pid, before) {
        (Some(pid), Some(before)) if result.ok > 0 => {
            Some((proc_stats::cpu_time(pid)? - before).as_secs_f64() * 1e6 / result.ok as f64)
        }
        _ => None,
    };
    Ok((result, cpu))
}

impl Matrix<'_> {
    /// Closed loop; returns the table rows.
    pub async fn closed_loop(&self, findings: &mut Findings) -> Result<Vec<String>> {
        let mut rows = vec![
            "| backend | answer | connections | gateway | requests/s | p50 ms | p99 ms | added p50 / p99 ms | CPU per request | failed |".to_owned(),
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |".to_owned(),
        ];
        for (backend, latency_ms) in [("instant", 0u64), ("500 ms", 500)] {
            self.backend.set_latency(latency_ms, 0);
            for streamed in [false, true] {
                let body = if streamed {
                    &self.stream_body
                } else {
                    &self.body
                };
                for &c in self.concurrencies {
                    let mut direct: Option<LoadResult> = None;
                    for subject in self.subjects {
                        let (r, cpu) = measure(
                            subject,
                            load::run(&subject.target, c, self.seconds, body.clone()),
                        )
                        .await?;
                        let (p50, p99) = (r.percentile(0.5), r.percentile(0.99));
                        let added = match &direct {
                            Some(d) => {
                                let (a50, a99) = (
                                    ms(p50) - ms(d.percentile(0.5)),
                                    ms(p99) - ms(d.percentile(0.99)),
                                );
                                findings.load.push((
                                    subject.name,
                                    backend,
                                    c,
                                    streamed,
                                    r.rps(),
                                    a50,
                                    a99,
                                ));
                                format!("{a50:+.2} / {a99:+.2}")
                            }
                            None => String::new(),
                        };
                        if let Some(cpu) = cpu {
                            findings
                                .cpu_us
                                .push((subject.name, backend, c, streamed, cpu));
                        }
                        rows.push(format!(
                            "| {backend} | {} | {c} | {} | {:.0} | {:.2} | {:.2} | {added} | {} | {} |",
                            if streamed { "stream" } else { "JSON" },
                            subject.name,
                            r.rps(),
                            ms(p50),
                            ms(p99),
                            cpu.map(|c| format!("{c:.0} µs")).unwrap_or_default(),
                            r.errors,
                        ));
                        if subject.pid.is_none() {
                            direct = Some(r);
                        }
                    }
                }
            }
        }
        self.backend.set_latency(0, 0);
        Ok(rows)
    }

    /// Open loop against the instant backend at rising rates, until
    /// edgegate's p99 is more than `limit_ms` above the backend's own or a
    /// request fails. Returns the rows and the highest rate edgegate held.
    pub async fn open_loop(
        &self,
        rates: &[f64],
        limit_ms: f64,
    ) -> Result<(Vec<String>, Option<f64>)> {
        let mut rows = vec![
            "| offered requests/s | gateway | answered | p50 ms | p99 ms | added p99 ms | CPU per request |".to_owned(),
            "| --- | --- | --- | --- | --- | --- | --- |".to_owned(),
        ];
        let timeout = Duration::from_secs(10);
        let mut held = None;
        for &rate in rates {
            let mut direct_p99 = None;
            let mut edgegate_over = false;
            for subject in self.subjects {
                let (r, cpu) = measure(
                    subject,
                    load::open_loop(
                        &subject.target,
                        rate,
                        self.seconds,
                        timeout,
                        self.body.clone(),
                    ),
                )
                .await?;
                let p99 = ms(r.percentile(0.99));
                let added = direct_p99.map(|d: f64| p99 - d);
                if subject.pid.is_none() {
                    direct_p99 = Some(p99);
                } else if subject.name == "edgegate" {
                    edgegate_over = r.errors > 0 || added.is_some_and(|a| a > limit_ms);
                }
                rows.push(format!(
                    "| {rate:.0} | {} | {} of {} | {:.2} | {p99:.2} | {} | {} |",
                    subject.name,
                    r.ok,
                    r.ok + r.errors,
                    ms(r.percentile(0.5)),
                    added.map(|a| format!("{a:+.2}")).unwrap_or_default(),
                    cpu.map(|c| format!("{c:.0} µs")).unwrap_or_default(),
                ));
            }
            if edgegate_over {
                break;
            }
            held = Some(rate);
        }
        Ok((rows, held))
    }
}
