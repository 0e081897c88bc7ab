//! The request's path through the gateway, top to bottom. A host supplies the
//! I/O (clock, client address and location, region health, key store, quota
//! store, cache, upstream HTTP); every decision is made here.
//!
//! `admit`: endpoint → authenticate → IP policy → validate → model and route
//! → safety → token estimate and caps → version (split, pin) → fallback chain
//! → regions (geo, health, residency) → upstream bodies → cache decision →
//! quota reservation to make.
//! `settle`: the backend's real usage → what to charge.

use crate::admission::{GateKey, Priority};
use crate::auth::{self, ApiKeyRecord, AuthMethod, Principal};
use crate::cache::{self, CacheDecision};
use crate::config::{Config, ConfigError, Credential, Secrets, Timeouts};
use crate::directory::PresentedKey;
use crate::error::GatewayError;
use crate::geo::{ClientGeo, RegionStatus};
use crate::load::TargetLoad;
use crate::quota::{
    Amounts, Budget, QuotaKey, QuotaLimits, QuotaSnapshot, ReserveOutcome, placement,
};
use crate::request::{self, Endpoint, HttpRequest, ParsedBody};
use crate::response::{Metered, ResponseKind};
use crate::routing;
use crate::safety::{self, SafetyReport};
use crate::tokens;
use crate::trace_context::TraceContext;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::net::IpAddr;

/// Everything the host knows about a request besides the request itself.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// Unix time in milliseconds.
    pub now_ms: u64,
    /// Unique per request (the host's random id); also the reservation id.
    pub request_id: String,
    pub client_ip: Option<IpAddr>,
    pub client_geo: Option<ClientGeo>,
    /// The host's current view of region health (and of each replica's,
    /// for regions with several; see [`crate::config::Replica::target`]).
    pub regions: Vec<RegionStatus>,
    /// The host's load counters of every replica when there is a choice
    /// ([`Config::balanced_targets`]).
    pub loads: Vec<TargetLoad>,
    /// The key-store record for the presented API key, if the host has one
    /// (looked up by [`auth::presented_key_hash`]).
    pub provisioned_key: Option<ApiKeyRecord>,
}

/// A response the gateway gives without calling a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl LocalResponse {
    pub fn json(status: u16, body: String, request_id: &str) -> Self {
        LocalResponse {
            status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-request-id".into(), request_id.to_owned()),
            ],
            body,
        }
    }

    /// The OpenAI-shaped error response, with `Retry-After` when it helps.
    pub fn error(err: &GatewayError, request_id: &str) -> Self {
        let mut r = LocalResponse::json(err.status(), err.to_openai_json().to_string(), request_id);
        if let Some(secs) = err.retry_after_secs() {
            r.headers.push(("retry-after".into(), secs.to_string()));
        }
        if let GatewayError::RateLimited {
            retry_after_ms: Some(ms),
            ..
        }
        | GatewayError::Saturated { retry_after_ms: ms } = err
        {
            r.headers.push(("retry-after-ms".into(), ms.to_string()));
        }
        r
    }
}

/// The reservation the host makes in its quota store before forwarding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaRequest {
    /// Where the quota state is: the tenant's, or one shard of it.
    pub key: QuotaKey,
    pub limits: QuotaLimits,
    pub amounts: Amounts,
    /// An unsettled reservation expires after this long.
    pub ttl_ms: u64,
    /// A run-time API key, checked against its tenant's standing
    /// ([`crate::directory::Standing::check`]) before anything is reserved.
    pub presented: Option<PresentedKey>,
    /// Budgets inside the tenant's (its user's), reserved and settled in
    /// the same operation ([`crate::quota::Levels`]).
    pub budgets: Vec<Budget>,
}

impl QuotaRequest {
    /// Maps a store's answer to the headers to send, or the 429 to return.
    pub fn outcome(
        outcome: ReserveOutcome,
    ) -> Result<QuotaSnapshot, (GatewayError, Option<QuotaSnapshot>)> {
        match outcome {
            ReserveOutcome::Admit { snapshot } => Ok(snapshot),
            ReserveOutcome::Deny {
                level,
                limit,
                retry_after_ms,
                snapshot,
            } => Err((
                GatewayError::RateLimited {
                    limit,
                    retry_after_ms,
                    level,
                },
                Some(snapshot),
            )),
            ReserveOutcome::Refused { refusal } => Err((refusal.error(), None)),
        }
    }
}

/// One upstream try: a model version at a replica of a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The replica's target: the region's name, or `region/replica` for a
    /// region with several replicas (what health, load, metrics and the
    /// usage record name).
    pub region: String,
    pub url: String,
    pub model: String,
    pub version: String,
    /// Index into `ForwardPlan::bodies`.
    pub body: usize,
    /// Why this attempt answers in place of the route's model (its
    /// degradation policy), if it does: `x-edgegate-degraded`.
    pub degraded: Option<String>,
    /// When its replica has a capacity: it is sent only with a permit from
    /// its region's gate ([`crate::admission`]).
    pub gate: Option<AttemptGate>,
    /// Its span in the request's trace, and the `traceparent` naming it
    /// that its replica is sent.
    pub span_id: String,
    pub traceparent: String,
    /// What its replica is sent as `Authorization` (never serialised).
    pub authorization: Option<Credential>,
}

/// What an attempt's region gate needs to know about its replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptGate {
    /// The gate: the replica's region's (one shard of it when it is sharded).
    pub region: GateKey,
    /// Its configured capacity, less the queue its metrics last reported
    /// (at least 1).
    pub capacity: u32,
    /// How long a request to it takes (its latency estimate, else 1 s).
    pub service_ms: u64,
}

impl Attempt {
    pub fn version_label(&self) -> String {
        format!("{}@{}", self.model, self.version)
    }
}

/// What to do with an admitted request.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardPlan {
    pub request_id: String,
    /// The host's wall clock at admission (ms): the age of cached answers.
    pub now_ms: u64,
    /// The same id as backends get it in `x-request-id` (a UUID; see
    /// [`crate::request_id`]).
    pub upstream_request_id: String,
    pub tenant_id: String,
    pub tier: String,
    pub user: Option<String>,
    pub auth: AuthMethod,
    /// The API key's id, for the usage record and the ledger.
    pub key_id: Option<String>,
    pub endpoint: Endpoint,
    /// The model as configured (aliases resolved).
    pub model: String,
    pub stream: bool,
    /// The gateway asked the backend for a usage chunk the client did not ask for.
    pub strip_usage_chunk: bool,
    pub client_wants_usage: bool,
    pub prompt_tokens_estimate: u64,
    pub max_output_tokens: u64,
    pub quota: QuotaRequest,
    pub cache: CacheDecision,
    /// In order: try the next only on connect errors, timeouts before the
    /// first byte, and retryable statuses.
    pub attempts: Vec<Attempt>,
    /// Upstream JSON bodies, one per model version in `attempts`.
    pub bodies: Vec<String>,
    pub timeouts: Timeouts,
    /// The W3C trace the request belongs to (its `traceparent`, continued,
    /// or one it starts), the gateway's span in it, and the client's span
    /// it continues.
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub tracestate: Option<String>,
    /// Export the request's spans: `observability.otlp_endpoint` is set
    /// and the trace is sampled.
    pub export_trace: bool,
    /// The tier's priority at replica gates, and how long it may wait there.
    pub priority: Priority,
    pub max_wait_ms: u64,
    /// How full a replica may be for it to be let in, in % of its capacity.
    pub fill_percent: u64,
    pub safety: SafetyReport,
    /// Headers to add to the client's response.
    pub response_headers: Vec<(String, String)>,
}

/// What settling needs to know about a plan answered by one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The model of the version that answered.
    pub model: String,
    pub reserved: Amounts,
    pub prompt_tokens_estimate: u64,
    pub max_output_tokens: u64,
}

impl ForwardPlan {
    pub fn reservation(&self, attempt: usize) -> Reservation {
        Reservation {
            model: self
                .attempts
                .get(attempt)
                .map_or_else(|| self.model.clone(), |a| a.model.clone()),
            reserved: self.quota.amounts,
            prompt_tokens_estimate: self.prompt_tokens_estimate,
            max_output_tokens: self.max_output_tokens,
        }
    }

    /// Where to keep the answer of `attempt` in the response cache. The key
    /// names the primary version, so only its answers are stored: a
    /// fallback's answer served later for the primary would be wrong.
    /// The TTL is the host's: the answer's own plus the stale-if-error window.
    pub fn cache_store(&self, attempt: usize) -> Option<(&str, u64)> {
        let CacheDecision::Lookup {
            key,
            ttl_seconds,
            stale_seconds,
            ..
        } = &self.cache
        else {
            return None;
        };
        let (primary, answered) = (self.attempts.first()?, self.attempts.get(attempt)?);
        (answered.model == primary.model && answered.version == primary.version)
            .then_some((key.as_str(), ttl_seconds.saturating_add(*stale_seconds)))
    }

    pub fn response_kind(&self) -> ResponseKind {
        match self.endpoint {
            Endpoint::Completions => ResponseKind::Completion,
            Endpoint::Embeddings => ResponseKind::Embedding,
            Endpoint::ChatCompletions | Endpoint::Models => ResponseKind::Chat,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Respond(LocalResponse),
    Forward(Box<ForwardPlan>),
}

/// What to charge once the backend answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    pub actual: Amounts,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub usage: UsageSource,
}

/// Where a settlement's token counts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UsageSource {
    /// The backend's `usage` (or a cache hit, which uses no tokens).
    Reported,
    /// The prompt estimate and the tokens counted in the relayed answer.
    Estimated,
    /// Nothing was known: the whole reservation.
    Reserved,
}

impl Settlement {
    /// A request answered from the response cache: it counts as a request,
    /// but the backend did no work, so it uses no tokens and costs nothing.
    pub fn cache_hit() -> Settlement {
        Settlement {
            actual: Amounts {
                requests: 1,
                ..Amounts::default()
            },
            input_tokens: 0,
            output_tokens: 0,
            usage: UsageSource::Reported,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Gateway {
    config: Config,
}

impl Gateway {
    pub fn new(config: Config) -> Self {
        Gateway { config }
    }

    /// Parses and validates the `[vars.gateway]` JSON with the given secrets.
    pub fn from_json(json: &str, secrets: &Secrets) -> Result<Self, ConfigError> {
        Config::from_json(json, secrets).map(Gateway::new)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn admit(&self, req: &HttpRequest, ctx: &RequestContext) -> Result<Decision, GatewayError> {
        let config = &self.config;
        request::check_header_size(&req.headers, &config.limits)?;
        let endpoint = Endpoint::resolve(&req.method, &req.path)?;
        let principal = auth::authenticate(
            config,
            &req.headers,
            ctx.now_ms,
            ctx.provisioned_key.as_ref(),
        )?;
        let tenant = principal.tenant(config);
        auth::check_ip(tenant, ctx.client_ip)?;
        if endpoint == Endpoint::Models {
            return Ok(Decision::Respond(self.models_response(&principal, ctx)));
        }

        let mut parsed = request::parse_body(endpoint, &req.body, &config.limits)?;
        let model_index = config
            .model(&parsed.model)
            .filter(|m| {
                tenant
                    .and_then(|t| t.models.as_ref())
                    .is_none_or(|allowed| allowed.contains(m))
            })
            .filter(|m| {
                principal
                    .key_models
                    .as_ref()
                    .is_none_or(|allowed| allowed.iter().any(|name| config.model(name) == Some(*m)))
            })
            .ok_or_else(|| GatewayError::ModelNotFound {
                model: parsed.model.chars().take(100).collect(),
            })?;
        let model = &config.models[model_index];
        if !model.endpoints.contains(&endpoint) {
            return Err(GatewayError::invalid(
                format!(
                    "The model `{}` does not support {}.",
                    model.name,
                    endpoint.path()
                ),
                Some("model"),
            ));
        }
        let route = config.route_for(model_index, endpoint);
        let safety = safety::apply(&route.settings.safety, &mut parsed)?;

        let prompt_tokens = u64::from(tokens::scaled(
            tokens::estimate_request(&parsed),
            model.prompt_estimate_factor,
        ));
        let max_output_tokens =
            self.output_budget(&principal, model_index, &parsed, prompt_tokens)?;

        Self::normalise_for_upstream(&mut parsed, max_output_tokens);
        let user = principal.user.as_deref().or_else(|| parsed.user());
        let chosen =
            routing::choose_version(config, &route, &req.headers, &principal.tenant_id, user)?;
        let chain = routing::version_chain(&route, chosen);
        let residency = tenant.and_then(|t| t.residency.as_deref());
        let (attempts, bodies) = self.plan_attempts(&route, &chain, &parsed, ctx, residency)?;

        let primary = &attempts[0];
        let cache = cache::decide(
            &route.settings.cache,
            &req.headers,
            &parsed,
            &principal.tenant_id,
            &primary.version_label(),
        );

        let tier = &config.tiers[principal.tier];
        let budgets = placement::budgets(config, &principal, user);
        let shards = tenant.map_or(1, |t| t.quota_shards);
        let key = placement::store(&principal.tenant_id, shards, &budgets, &ctx.request_id);
        let quota = QuotaRequest {
            key,
            limits: tier.limits.shard(shards),
            amounts: Amounts {
                requests: 1,
                tokens: prompt_tokens + max_output_tokens,
                cost_micros: model.cost_micros(prompt_tokens, max_output_tokens),
            },
            ttl_ms: config.limits.reservation_ttl_ms,
            presented: principal.presented.clone(),
            budgets,
        };

        let mut response_headers = vec![("x-request-id".to_owned(), ctx.request_id.clone())];
        if let Some(rule) = &safety.injection_rule {
            response_headers.push(("x-edgegate-safety".into(), format!("flagged; rule={rule}")));
        }

        let otlp = config.observability.otlp.as_ref();
        let trace = TraceContext::for_request(
            req.headers.get("traceparent"),
            req.headers.get("tracestate"),
            &ctx.request_id,
            otlp.map_or(1.0, |o| o.sample_ratio),
        );
        let mut attempts = attempts;
        for (i, attempt) in attempts.iter_mut().enumerate() {
            attempt.span_id = trace.attempt_span_id(i);
            attempt.traceparent = trace.traceparent(&attempt.span_id);
        }
        Ok(Decision::Forward(Box::new(ForwardPlan {
            export_trace: otlp.is_some() && trace.sampled(),
            trace_id: trace.trace_id,
            span_id: trace.span_id,
            parent_span_id: trace.parent_id,
            tracestate: trace.tracestate,
            request_id: ctx.request_id.clone(),
            now_ms: ctx.now_ms,
            upstream_request_id: crate::request_id::upstream_form(&ctx.request_id),
            tenant_id: principal.tenant_id.clone(),
            tier: tier.name.clone(),
            user: user.map(str::to_owned),
            auth: principal.method,
            key_id: principal.key_id.clone(),
            endpoint,
            model: model.name.clone(),
            stream: parsed.stream,
            strip_usage_chunk: parsed.stream && !parsed.client_wants_usage,
            client_wants_usage: parsed.client_wants_usage,
            prompt_tokens_estimate: prompt_tokens,
            max_output_tokens,
            quota,
            cache,
            attempts,
            bodies,
            timeouts: route.settings.timeouts,
            priority: tier.priority,
            max_wait_ms: config.admission.max_wait_ms(tier.priority),
            fill_percent: config.admission.fill_percent(tier.priority),
            safety,
            response_headers,
        })))
    }

    /// The most output tokens the request may produce (all `n` choices),
    /// checked against the tier's cap and the model's context window.
    fn output_budget(
        &self,
        principal: &Principal,
        model: usize,
        parsed: &ParsedBody,
        prompt_tokens: u64,
    ) -> Result<u64, GatewayError> {
        if parsed.endpoint == Endpoint::Embeddings {
            let window = u64::from(self.config.models[model].context_window);
            if prompt_tokens > window {
                return Err(GatewayError::ContextLengthExceeded {
                    message: format!(
                        "This model's maximum context length is {window} tokens, but the input is about {prompt_tokens} tokens."
                    ),
                    param: Some("input".into()),
                });
            }
            return Ok(0);
        }
        let cap = self.config.tiers[principal.tier].max_tokens_cap;
        let window = u64::from(self.config.models[model].context_window);
        let param = if parsed.body.contains_key("max_completion_tokens") {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        let prompt_param = match parsed.endpoint {
            Endpoint::Completions => "prompt",
            _ => "messages",
        };
        let requested = match (parsed.max_tokens, cap) {
            (Some(m), Some(cap)) if m > cap => {
                return Err(GatewayError::invalid(
                    format!("`{param}` is too large: {m}. This tier allows at most {cap}."),
                    Some(param),
                ));
            }
            (Some(m), _) => u64::from(m),
            (None, cap) => {
                let room = window.saturating_sub(prompt_tokens);
                cap.map_or(room, |c| room.min(u64::from(c)))
            }
        };
        if requested == 0 || prompt_tokens + requested > window {
            return Err(GatewayError::ContextLengthExceeded {
                message: format!(
                    "This model's maximum context length is {window} tokens. However, you requested about {} tokens ({prompt_tokens} in the prompt, {requested} for the completion). Please reduce the prompt or `{param}`.",
                    prompt_tokens + requested
                ),
                param: Some(prompt_param.into()),
            });
        }
        let n = parsed
            .body
            .get("n")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .max(1);
        Ok(requested * n)
    }

    /// What every backend gets besides its model name: an explicit output
    /// cap (so the reservation is an upper bound) and usage in streams.
    fn normalise_for_upstream(parsed: &mut ParsedBody, max_output_tokens: u64) {
        let body = &mut parsed.body;
        if parsed.endpoint != Endpoint::Embeddings && parsed.max_tokens.is_none() {
            let n = body.get("n").and_then(Value::as_u64).unwrap_or(1).max(1);
            body.insert("max_tokens".into(), json!(max_output_tokens / n));
        }
        if parsed.stream {
            let options = body.entry("stream_options").or_insert_with(|| json!({}));
            if let Value::Object(o) = options {
                o.insert("include_usage".into(), Value::Bool(true));
            }
        }
    }

    fn models_response(&self, principal: &Principal, ctx: &RequestContext) -> LocalResponse {
        let allowed = principal
            .tenant(&self.config)
            .and_then(|t| t.models.as_ref());
        let data: Vec<Value> = self
            .config
            .models
            .iter()
            .enumerate()
            .filter(|(i, _)| allowed.is_none_or(|a| a.contains(i)))
            .flat_map(|(_, m)| std::iter::once(&m.name).chain(&m.aliases))
            .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "edgegate"}))
            .collect();
        LocalResponse::json(
            200,
            json!({"object": "list", "data": data}).to_string(),
            &ctx.request_id,
        )
    }

    /// What to charge for an answered request, priced at the version that
    /// answered: the backend's usage; when it reported none, the prompt
    /// estimate and the output tokens counted in what was relayed (at most
    /// what was reserved); when nothing is known, the whole reservation.
    pub fn settle(&self, plan: &ForwardPlan, attempt: usize, metered: Metered) -> Settlement {
        self.settle_reservation(&plan.reservation(attempt), metered)
    }

    /// [`Gateway::settle`] from the few facts it needs.
    pub fn settle_reservation(&self, r: &Reservation, metered: Metered) -> Settlement {
        let model = self.config.model(&r.model).map(|m| &self.config.models[m]);
        let counted = match metered {
            Metered::Reported(u) => {
                Some((u.prompt_tokens, u.completion_tokens, UsageSource::Reported))
            }
            // Counted like the prompt: in the model's own tokens.
            Metered::Relayed { completion_tokens } => Some((
                r.prompt_tokens_estimate,
                scale_output(completion_tokens, model).min(r.max_output_tokens),
                UsageSource::Estimated,
            )),
            Metered::Unknown => None,
        };
        match (counted, model) {
            (Some((input, output, usage)), Some(model)) => Settlement {
                actual: Amounts {
                    requests: 1,
                    tokens: input.saturating_add(output),
                    cost_micros: model.cost_micros(input, output),
                },
                input_tokens: input,
                output_tokens: output,
                usage,
            },
            _ => Settlement {
                actual: r.reserved,
                input_tokens: r.prompt_tokens_estimate,
                output_tokens: r.max_output_tokens,
                usage: UsageSource::Reserved,
            },
        }
    }
}

mod attempts;
pub use attempts::{PRIMARY_UNAVAILABLE, SATURATED, STALE};
#[cfg(test)]
mod tests;

/// Output tokens counted in what was relayed, in `model`'s own tokens (its
/// `prompt_estimate_factor`, as for the prompt).
fn scale_output(counted: u64, model: Option<&crate::config::Model>) -> u64 {
    let factor = model.map_or(1.0, |m| m.prompt_estimate_factor);
    let counted32 = u32::try_from(counted).unwrap_or(u32::MAX);
    u64::from(tokens::scaled(counted32, factor))
}
