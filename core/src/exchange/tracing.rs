//! What the exchange notes for a request's trace when it is exported
//! (`ForwardPlan::export_trace`): each attempt's send, end and failure; the
//! record carries them as a [`Trace`] for `telemetry::trace::spans`.

use super::Exchange;
use crate::error::GatewayError;
use crate::telemetry::{Trace, Try};

impl Exchange {
    /// The attempt just sent, for the trace.
    pub(super) fn note_sent(&mut self, now_us: u64) {
        let plan = self.plan_ref();
        let Some(a) = plan
            .attempts
            .get(self.attempt)
            .filter(|_| plan.export_trace)
        else {
            return;
        };
        let sent = Try {
            span_id: a.span_id.clone(),
            target: a.region.clone(),
            model: a.model.clone(),
            version: a.version.clone(),
            sent_us: now_us.saturating_sub(self.started_us),
            ..Try::default()
        };
        self.tries.push(sent);
    }

    /// The attempt in flight ended (`error`: how it failed), for the trace.
    pub(super) fn note_ended(&mut self, error: Option<&GatewayError>, now_us: u64) {
        let end_us = now_us.saturating_sub(self.started_us);
        if let Some(t) = self.tries.last_mut().filter(|t| t.end_us == 0) {
            t.end_us = end_us.max(1);
            t.error = error.map(|e| e.metric_label().to_owned());
        }
    }

    /// The trace the record carries, when it is exported.
    pub(super) fn trace(&mut self) -> Option<Box<Trace>> {
        let tries = std::mem::take(&mut self.tries);
        let plan = self.plan_ref();
        plan.export_trace.then(|| {
            Box::new(Trace {
                span_id: plan.span_id.clone(),
                parent_span_id: plan.parent_span_id.clone(),
                start_unix_us: plan.now_ms.saturating_mul(1000),
                request_model: plan.model.clone(),
                tries,
            })
        })
    }
}
