//! Every case, in one table. Each runs against every runner; a case that
//! passes on one and fails on the other is a bug in the shared code.

mod admission;
mod auth;
mod balancing;
mod cache;
mod dashboard;
mod directory;
mod errors;
mod geo;
mod interop;
mod ledger;
mod lifecycle;
mod limits;
mod real_backend;
mod routing;
mod sdk;
mod streaming;
mod trace_context;
mod upstream_auth;
mod validation;

use crate::case;
use crate::suite::Case;

pub const ALL: &[Case] = &[
    case!("auth: a valid API key is served", auth::api_key),
    case!("auth: an unknown key or none is 401", auth::unknown_key),
    case!("auth: a valid HS256 JWT is served", auth::hs256_jwt),
    case!("auth: a valid RS256 JWT is served", auth::rs256_jwt),
    case!("auth: an expired JWT is 401", auth::expired_jwt),
    case!("auth: a not-yet-valid JWT is 401", auth::not_yet_valid_jwt),
    case!(
        "auth: a JWT for another audience is 401",
        auth::wrong_audience_jwt
    ),
    case!(
        "auth: a JWT from an unknown issuer is 401",
        auth::wrong_issuer_jwt
    ),
    case!("auth: an alg:none JWT is 401", auth::alg_none_jwt),
    case!(
        "auth: HS/RS algorithm confusion is 401",
        auth::hs_rs_confusion_jwt
    ),
    case!("auth: a denied client address is 403", auth::ip_deny),
    case!(
        "auth: a 200 KB signed JWT is 431",
        auth::oversized_jwt_is_431
    ),
    case!(
        "validation: malformed JSON is 400",
        validation::malformed_json
    ),
    case!(
        "validation: wrong field types are 400 naming the field",
        validation::wrong_field_types
    ),
    case!(
        "validation: a body over the size limit is 413",
        validation::body_too_large
    ),
    case!(
        "validation: max_tokens over the tier cap is 400",
        validation::max_tokens_over_tier_cap
    ),
    case!(
        "validation: max_tokens past the context window is 400",
        validation::max_tokens_over_context_window
    ),
    case!(
        "validation: an unknown model is 404",
        validation::unknown_model
    ),
    case!(
        "limits: an exhausted tier gets 429 with Retry-After and x-ratelimit-*",
        limits::exhausted_tier_gets_429
    ),
    case!(
        "limits: a monthly token budget is 429 naming it until the next month",
        limits::a_monthly_budget_is_429_until_the_next_month
    ),
    case!(
        "limits: exact admission under 200 concurrent requests",
        limits::exact_admission_under_200_concurrent
    ),
    case!(
        "limits: one user's budget admits exactly its burst of 200 concurrent requests; the 429s name the user",
        limits::a_users_budget_admits_exactly_its_burst_inside_the_tenants
    ),
    case!(
        "limits: tokens are settled with the backend's real usage",
        limits::tokens_settled_with_real_usage
    ),
    case!(
        "routing: a 90/10 canary split over 2,000 users lands within 3 points",
        routing::canary_split_90_10
    ),
    case!(
        "routing: the same user always gets the same version",
        routing::same_user_same_version
    ),
    case!(
        "routing: the pin header chooses the version",
        routing::pin_header_overrides_split
    ),
    case!(
        "routing: the fallback chain serves when a version's backend is down",
        routing::fallback_when_version_is_down
    ),
    case!(
        "routing: a degraded answer, marked, when the primary cannot serve",
        routing::a_degraded_answer_when_the_primary_cannot_serve
    ),
    case!(
        "geo: clients on three continents reach their nearest region",
        geo::nearest_region_on_three_continents
    ),
    case!(
        "geo: an EU-resident tenant stays in the EU when it is slower",
        geo::eu_resident_tenant_stays_in_eu
    ),
    case!(
        "geo: failover when the nearest region is down",
        geo::failover_when_nearest_region_is_down
    ),
    case!(
        "geo: a region whose health probe answers past 2 s is passed over",
        geo::a_probe_past_its_timeout_takes_the_region_down
    ),
    case!(
        "cache: MISS then HIT for a deterministic request",
        cache::miss_then_hit_when_deterministic
    ),
    case!(
        "cache: BYPASS for a sampled request",
        cache::bypass_when_sampled
    ),
    case!(
        "cache: no hit across tenants when scoped per tenant",
        cache::no_hit_across_tenants
    ),
    case!(
        "cache: a fallback's answer is never served for the primary model",
        cache::fallback_answer_not_cached_for_primary
    ),
    case!(
        "streaming: chunks keep the backend's pacing",
        streaming::chunks_keep_the_backend_pacing
    ),
    case!(
        "streaming: a stall past the inactivity timeout ends with an SSE error event",
        streaming::stall_ends_with_an_error_event
    ),
    case!(
        "streaming: usage is settled after the stream",
        streaming::usage_settled_after_the_stream
    ),
    case!(
        "lifecycle: a break after content is an SSE error event and a 502 record",
        lifecycle::a_break_after_content_is_an_error_event_and_a_502_record
    ),
    // Leaves us-east degraded (one failure) until its next probe.
    case!(
        "lifecycle: a stream that breaks before any content fails over invisibly",
        lifecycle::a_break_before_content_fails_over_invisibly
    ),
    case!(
        "lifecycle: attempts stop at the route's total time",
        lifecycle::attempts_stop_at_the_routes_total_time
    ),
    case!(
        "lifecycle: a stream ends at the route's total time with an SSE error and a 504 record",
        lifecycle::a_stream_ends_at_the_routes_total_time
    ),
    case!(
        "lifecycle: an event past 1 MiB ends the stream with an SSE error and a 502 record",
        lifecycle::an_endless_event_ends_the_stream_at_its_cap
    ),
    case!(
        "lifecycle: an answer past 64 MiB is refused with a 502",
        lifecycle::an_answer_past_the_cap_is_refused
    ),
    case!(
        "lifecycle: a streamed answer is cached",
        lifecycle::a_streamed_answer_is_cached
    ),
    case!(
        "lifecycle: a JSON answer to a stream request is replayed as SSE",
        lifecycle::a_json_answer_to_a_stream_request_is_replayed_as_sse
    ),
    case!(
        "lifecycle: one usage record per request: a hit, a 429, a stream, a client that leaves",
        lifecycle::one_record_per_request_on_every_path
    ),
    case!(
        "errors: every error is OpenAI-shaped",
        errors::every_error_is_openai_shaped
    ),
    case!(
        "errors: a request id on every response",
        errors::request_id_on_every_response
    ),
    case!(
        "sdk: the official openai Python SDK session",
        sdk::openai_python_sdk_session
    ),
    case!(
        "sdk: the official openai Node SDK session",
        sdk::openai_node_sdk_session
    ),
    case!(
        "interop: backends get the request id as a UUID",
        interop::upstream_request_id_is_a_uuid
    ),
    case!(
        "interop: a stream without usage is charged what was relayed",
        interop::stream_without_usage_is_charged_what_was_relayed
    ),
    case!(
        "interop: an answer without usage is charged what was relayed",
        interop::answer_without_usage_is_charged_what_was_relayed
    ),
    case!(
        "interop: a stream that breaks off is charged what was relayed",
        interop::broken_stream_is_charged_what_was_relayed
    ),
    case!(
        "cache: identical requests in flight share one backend call",
        cache::identical_requests_in_flight_share_one_backend_call
    ),
    case!(
        "balancing: a replica 4x slower gets at most a quarter of the traffic",
        balancing::a_slow_replica_gets_a_quarter_or_less
    ),
    case!(
        "balancing: a replica reporting a waiting queue gets none until it drains",
        balancing::a_queued_replica_gets_no_traffic_until_it_drains
    ),
    case!(
        "balancing: conversations stay on their replica, and spill when it is full",
        balancing::conversations_stay_on_their_replica_and_spill_when_it_is_full
    ),
    case!(
        "routing: a stale cached answer, marked, when every attempt fails",
        routing::a_stale_answer_when_every_attempt_fails
    ),
    case!(
        "tracing: a traceparent reaches the backend with the gateway as parent, and the record",
        trace_context::a_trace_reaches_the_backend_and_the_record
    ),
    case!(
        "tracing: a failed-over request's spans reach the OTLP collector, and with it down they are dropped and counted",
        trace_context::spans_of_a_failed_over_request_reach_the_collector
    ),
    case!(
        "credentials: a keyed backend gets its region's secret, which never shows",
        upstream_auth::a_keyed_backend_gets_its_secret_which_never_shows
    ),
    case!(
        "ledger: what each request was charged, under the model that answered; JSON = CSV",
        ledger::the_ledger_equals_what_was_charged
    ),
    case!(
        "admin: only the admin key reads usage; bad parameters are 400 naming them",
        ledger::only_the_admin_key_reads_usage
    ),
    case!(
        "admin: the config's tenants are listed and read, never their keys",
        ledger::the_configs_tenants_are_listed
    ),
    case!(
        "admin: a key made at run time is served; revoked, expired or its tenant disabled, refused at once",
        directory::keys_made_at_run_time_are_served_and_refused_at_once
    ),
    case!(
        "admin: a rotated key works beside the new one for its grace period, then only the new one",
        directory::a_rotated_key_works_beside_the_new_one_for_its_grace_period
    ),
    case!(
        "admin: bad tenant and key fields are 400 naming them; the config's objects are read-only",
        directory::the_admin_api_refuses_bad_input_naming_the_field
    ),
    case!(
        "admin: a key's burst of 20 admits exactly 20 of 200 concurrent requests in a roomy tenant, a user inside it 10; each 429 names its level",
        directory::a_keys_budget_admits_exactly_its_burst_inside_the_tenants
    ),
    case!(
        "usage: a key holder reads its own usage and remaining budgets at /v1/usage, never another key's; keys show when they were last used",
        directory::a_key_holder_reads_its_own_usage_only
    ),
    case!(
        "dashboard: in headless Chromium, signed in with the admin key, the page shows the ledger's totals, each phase's latency, the budgets' headroom, the replicas' health and a revoked key as revoked, with no console error",
        dashboard::the_dashboard_shows_what_the_ledger_says
    ),
    case!(
        "admission: a full replica serves its waiting requests in priority order",
        admission::waiting_requests_are_served_in_priority_order
    ),
    case!(
        "admission: what cannot wait is degraded, or refused with 429 and Retry-After",
        admission::what_cannot_wait_is_degraded_or_refused_with_retry_after
    ),
    case!(
        "llama: a chat completion settles the model's real usage",
        real_backend::chat_settles_the_real_usage
    ),
    case!(
        "llama: a stream is relayed as generated and charged what was relayed",
        real_backend::stream_relayed_and_charged_what_was_relayed
    ),
    case!(
        "llama: max_tokens is honoured",
        real_backend::max_tokens_is_honoured
    ),
    case!(
        "llama: a client that hangs up stops the generation",
        real_backend::client_disconnect_stops_the_generation
    ),
    case!(
        "llama: UUID request ids; the openai SDK against the real model",
        real_backend::upstream_id_and_sdk_against_the_real_model
    ),
    // Kills the server: last.
    case!(
        "llama: a killed server fails over to a simulated region",
        real_backend::killed_server_fails_over_to_the_sim
    ),
];
