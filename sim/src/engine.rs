//! The batch a vLLM or SGLang server runs: at most `max_running` sequences
//! generate at once and the others wait in a queue behind them (so time to
//! first token grows with the queue), and the gauges such a server exports
//! at `GET /metrics` under vLLM's names.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Counts {
    running: usize,
    waiting: usize,
}

/// The running batch and its waiting queue.
#[derive(Debug, Default)]
pub(crate) struct Engine {
    counts: Mutex<Counts>,
    freed: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A sequence's place in the running batch, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    engine: Arc<Engine>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.engine.counts).running -= 1;
        self.engine.freed.notify_waiters();
    }
}

/// A request in the waiting queue; leaves it when dropped (its client went
/// away) or when it gets a slot.
struct Queued<'a> {
    engine: &'a Engine,
    queued: bool,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.queued {
            lock(&self.engine.counts).waiting -= 1;
        }
    }
}

impl Engine {
    /// Waits for a place in the batch (`max_running` read on each try, so
    /// a changed limit applies to those already waiting).
    pub(crate) async fn slot(self: &Arc<Self>, max_running: impl Fn() -> Option<usize>) -> Slot {
        let mut place = Queued {
            engine: self,
            queued: false,
        };
        loop {
            // Created before the check, so a slot freed in between still wakes it.
            let freed = self.freed.notified();
            {
                let mut c = lock(&self.counts);
                if max_running().is_none_or(|max| c.running < max) {
                    c.running += 1;
                    if place.queued {
                        c.waiting -= 1;
                        place.queued = false;
                    }
                    return Slot {
                        engine: self.clone(),
                    };
                }
                if !place.queued {
                    c.waiting += 1;
                    place.queued = true;
                }
            }
            freed.await;
        }
    }

    /// Sequences generating and waiting now.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let c = lock(&self.counts);
        (c.running, c.waiting)
    }

    /// A limit was raised or lifted: waiters try again.
    pub(crate) fn wake(&self) {
        self.freed.notify_waiters();
    }

    /// `GET /metrics`: vLLM's gauges, labelled with the model name the way
    /// vLLM labels them. KV-cache use is the batch's share of `max_running`
    /// (0 without a limit).
    pub(crate) fn metrics(&self, model: &str, max_running: Option<usize>) -> String {
        let (running, waiting) = self.counts();
        let usage = max_running.map_or(0.0, |max| running as f64 / max.max(1) as f64);
        let label = model.replace(['\\', '"'], "_");
        let mut out = String::new();
        for (name, help, value) in [
            (
                "vllm:num_requests_running",
                "Number of requests in model execution batches.",
                running as f64,
            ),
            (
                "vllm:num_requests_waiting",
                "Number of requests waiting to be processed.",
                waiting as f64,
            ),
            (
                "vllm:kv_cache_usage_perc",
                "KV-cache usage. 1 means 100 percent usage.",
                usage.min(1.0),
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{engine=\"0\",model_name=\"{label}\"}} {value:?}\n"
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_full_batch_queues_and_a_cancelled_waiter_leaves() {
        let engine = Arc::new(Engine::default());
        let max = || Some(1);
        let first = engine.slot(max).await;
        let waiter = tokio::spawn({
            let engine = engine.clone();
            async move {
                let _slot = engine.slot(max).await;
            }
        });
        let cancelled = tokio::spawn({
            let engine = engine.clone();
            async move {
                let _slot = engine.slot(max).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(engine.counts(), (1, 2));
        cancelled.abort();
        let _ = cancelled.await;
        assert_eq!(engine.counts(), (1, 1));
        assert!(
            engine
                .metrics("m", Some(1))
                .contains("vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 1.0\n")
        );
        drop(first);
        waiter.await.expect("the waiter ran");
        assert_eq!(engine.counts(), (0, 0));
    }
}
