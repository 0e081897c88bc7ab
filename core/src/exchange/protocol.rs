//! What an exchange and its host say to each other: the actions it asks
//! for, the events it is told, and the values they carry.

use crate::admission::{Answer, Ask, GateKey};
use crate::error::GatewayError;
use crate::gateway::QuotaRequest;
use crate::health::{AttemptFailure, Observation};
use crate::ledger::LedgerEntry;
use crate::quota::{Amounts, ReserveOutcome};
use crate::telemetry::UsageRecord;

pub type HeaderList = Vec<(String, String)>;

/// A non-streamed answer larger than this is refused rather than buffered.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;
/// Upstream error bodies are read for their message, never more than this.
pub const MAX_ERROR_BODY_BYTES: usize = 64 << 10;

/// What the host does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Reserve in the quota store; answer with [`Event::Reserved`].
    Reserve { quota: QuotaRequest, id: String },
    /// Look the answer up in the response cache; answer with [`Event::Cached`].
    /// Comes with `Reserve`, and may run at the same time. On a miss with
    /// `coalesce_ms` > 0: if an identical request (the same key) is in
    /// flight, wait up to `coalesce_ms` for its answer and answer with
    /// [`Event::Shared`] (or `Cached(None)` if it ended without one);
    /// otherwise this request leads, and its `Store` of the key, or its
    /// end, answers those that wait.
    LookupCache { key: String, coalesce_ms: u64 },
    /// Ask `region`'s gate for a permit at one of `ask`'s replicas
    /// ([`crate::admission::Gate::acquire`]), waiting up to `ask.wait_ms`;
    /// answer with [`Event::Granted`] or [`Event::Full`]. Drop any permit
    /// held first. The host holds a granted permit until the attempt's
    /// connection is dropped (the next `Acquire` or `Send`, `EndStream`,
    /// or the end of the exchange) and then gives it back.
    Acquire { region: GateKey, ask: Ask },
    /// Send [`Exchange::upstream_request`]`(attempt)`, dropping any earlier
    /// attempt's connection; answer with [`Event::Head`] or [`Event::Failed`]
    /// (`Connect` if not connected within `connect_ms`, `Timeout` if no
    /// response head within `head_ms`). When `read` says so for the head's
    /// status, read the body at once and answer `Body` (or `Failed`) too.
    Send {
        attempt: usize,
        connect_ms: u64,
        head_ms: u64,
        read: BodyRead,
    },
    /// Read the current answer's whole body: [`Event::Body`], or `Failed`
    /// (`Timeout` after `within_ms`, `TooLarge` past `max_bytes`, `Broke`).
    ReadBody { max_bytes: usize, within_ms: u64 },
    /// Read the next piece of the current answer's stream: [`Event::Chunk`],
    /// [`Event::End`], or `Failed` (`Timeout` after `within_ms`, `Broke`).
    ReadChunk { within_ms: u64 },
    /// Answer the client (once per request).
    Respond(Head),
    /// Send these bytes on the streamed response; report [`Event::ClientGone`]
    /// if the client cannot take them.
    Write(Vec<u8>),
    /// Close the streamed response; drop the upstream connection.
    EndStream,
    /// Charge `actual` instead of the reservation, and add `ledger` to the
    /// usage ledger, in one store operation. Comes after the response.
    Settle {
        actual: Amounts,
        ledger: Box<LedgerEntry>,
    },
    /// Give the whole reservation back, and add `ledger` to the usage
    /// ledger (an error: no tokens, no cost), in one store operation.
    Release { ledger: Box<LedgerEntry> },
    /// Keep `body` in the response cache under `key`.
    Store {
        key: String,
        body: Vec<u8>,
        ttl_seconds: u64,
    },
    /// How an attempt at `region` went: feed the region's health and metrics.
    Observe {
        region: String,
        outcome: AttemptOutcome,
    },
    /// The request's one usage record; nothing follows it.
    Record(Box<UsageRecord>),
}

/// Which bodies the host reads as soon as the head is in, without being
/// asked again: an error's, and a non-streamed answer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyRead {
    pub success: Option<BodyLimit>,
    pub error: BodyLimit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit {
    pub max_bytes: usize,
    /// From the head's arrival.
    pub within_ms: u64,
}

impl BodyRead {
    /// The body to read right after a head with `status`, if any.
    pub fn for_status(self, status: u16) -> Option<BodyLimit> {
        if (200..300).contains(&status) {
            self.success
        } else {
            Some(self.error)
        }
    }
}

/// A response's status and headers, and whether its body follows as a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// A later pair never repeats an earlier name.
    pub headers: HeaderList,
    pub body: ResponseBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseBody {
    Full(Vec<u8>),
    /// Follows in [`Action::Write`]s, closed by [`Action::EndStream`].
    Stream,
}

/// What happened, as the host saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The quota store's answer, or why it had none.
    Reserved(Result<ReserveOutcome, GatewayError>),
    /// The cached answer, or `None` on a miss.
    Cached(Option<Vec<u8>>),
    /// The answer of an identical request this one waited for.
    Shared(Vec<u8>),
    /// The gate's permit, for this attempt.
    Granted {
        attempt: usize,
    },
    /// The gate had no permit in time.
    Full {
        retry_after_ms: u64,
    },
    /// The attempt's response head.
    Head {
        status: u16,
        content_type: Option<String>,
    },
    Body(Vec<u8>),
    /// Stream bytes split anywhere: one HTTP frame, or several that had
    /// already arrived (fewer crossings for a host that batches).
    Chunk(Vec<u8>),
    End,
    Failed(Transport),
    /// The client went away (a write failed, the connection closed).
    ClientGone,
}

/// How reading from the upstream failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Connect,
    Timeout,
    /// The connection broke while reading.
    Broke,
    /// The body passed `ReadBody::max_bytes`.
    TooLarge,
}

/// How one attempt went, for region health, load and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The response head came (health).
    Answered {
        latency_ms: u32,
    },
    /// The first token came, this long after the attempt was sent: a
    /// stream's first content, or a whole answer (the replica's latency
    /// estimate, [`crate::load::LoadBoard::sample`]).
    FirstToken {
        latency_ms: u32,
    },
    Failed(AttemptFailure),
}

impl AttemptOutcome {
    /// What the region's breaker learns, if anything (a 4xx is the client's fault).
    pub fn observation(self) -> Option<Observation> {
        match self {
            AttemptOutcome::Answered { latency_ms } => Some(Observation::Success { latency_ms }),
            AttemptOutcome::FirstToken { .. } => None,
            AttemptOutcome::Failed(f) => f.region_fault().then_some(Observation::Failure),
        }
    }

    /// The latency sample for the replica's load estimate, if any.
    pub fn first_token_ms(self) -> Option<u32> {
        match self {
            AttemptOutcome::FirstToken { latency_ms } => Some(latency_ms),
            _ => None,
        }
    }

    /// The metric label of a failure.
    pub fn failure_label(self) -> Option<&'static str> {
        match self {
            AttemptOutcome::Answered { .. } | AttemptOutcome::FirstToken { .. } => None,
            AttemptOutcome::Failed(f) => Some(f.label()),
        }
    }
}

/// The upstream call for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamRequest<'a> {
    /// The replica's target (its load counters' key).
    pub target: &'a str,
    pub url: &'a str,
    pub body: &'a str,
    pub headers: [(&'static str, &'a str); 4],
    /// The client's `tracestate`, passed on.
    pub tracestate: Option<&'a str>,
    /// The replica's credential, when it has one.
    pub authorization: Option<&'a str>,
}

impl<'a> UpstreamRequest<'a> {
    /// Every header to send, the credential included.
    pub fn header_pairs(&self) -> impl Iterator<Item = (&'static str, &'a str)> + '_ {
        let state = self.tracestate.map(|v| ("tracestate", v));
        let auth = self.authorization.map(|v| ("authorization", v));
        self.headers.iter().copied().chain(state).chain(auth)
    }
}

/// A body the host reads piece by piece for [`Action::ReadBody`] (or the
/// head's [`BodyRead`]): the pieces up to the cap, and how the read ended.
#[derive(Debug)]
pub struct BodyCollector {
    bytes: Vec<u8>,
    max_bytes: usize,
}

impl BodyCollector {
    pub fn new(max_bytes: usize) -> Self {
        BodyCollector {
            bytes: Vec::new(),
            max_bytes,
        }
    }

    /// Takes the next piece (`None`: the body ended; `Some(Err)`: the
    /// connection broke); `Some` once the read is over: the body, or why not.
    pub fn add<E>(
        &mut self,
        piece: Option<Result<&[u8], E>>,
    ) -> Option<Result<Vec<u8>, Transport>> {
        match piece {
            None => Some(Ok(self.finish())),
            Some(Err(_)) => Some(Err(Transport::Broke)),
            Some(Ok(p)) if self.bytes.len() + p.len() > self.max_bytes => {
                Some(Err(Transport::TooLarge))
            }
            Some(Ok(p)) => {
                self.bytes.extend_from_slice(p);
                None
            }
        }
    }

    /// The body read so far.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }
}

impl Event {
    /// The gate's answer, as the exchange hears it (`Queued` is no answer).
    pub fn of_gate(answer: Answer) -> Option<Event> {
        match answer {
            Answer::Granted { attempt, .. } => Some(Event::Granted {
                attempt: attempt as usize,
            }),
            Answer::Full { retry_after_ms } => Some(Event::Full { retry_after_ms }),
            Answer::Queued => None,
        }
    }

    /// How a body read ended, as the exchange hears it.
    pub fn of_body(read: Result<Vec<u8>, Transport>) -> Event {
        read.map_or_else(Event::Failed, Event::Body)
    }
}
