//! One error type for every way a request can fail, mapped once to an HTTP
//! status, an OpenAI error body, retryability and a low-cardinality metric label.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Which side of the gateway an error came from (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorSource {
    /// The client sent something we refuse.
    Client,
    /// The upstream backend failed or misbehaved.
    Upstream,
    /// The gateway itself failed.
    Internal,
}

/// Which limit a 429 is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    Requests,
    Tokens,
    TokensPerDay,
    Cost,
    Concurrency,
    TokensPerMonth,
    CostPerMonth,
}

impl LimitKind {
    fn describe(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests per minute",
            LimitKind::Tokens => "tokens per minute",
            LimitKind::TokensPerDay => "tokens per day",
            LimitKind::Cost => "daily cost budget",
            LimitKind::Concurrency => "concurrent requests",
            LimitKind::TokensPerMonth => "tokens per month",
            LimitKind::CostPerMonth => "monthly cost budget",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GatewayError {
    /// Malformed or invalid request body or parameters (400).
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    /// The prompt plus `max_tokens` does not fit the model (400).
    ContextLengthExceeded {
        message: String,
        param: Option<String>,
    },
    /// Body larger than the configured limit (413).
    PayloadTooLarge { limit_bytes: usize },
    /// Request headers, all together, larger than the configured limit (431).
    HeadersTooLarge { limit_bytes: usize },
    /// Missing or bad credentials (401). `reason` is safe to show: it never
    /// contains the credential.
    Unauthenticated { reason: String },
    /// Authenticated, but not allowed (403).
    PermissionDenied { reason: String },
    /// Safety screening blocked the prompt (400).
    ContentBlocked { reason: String },
    /// The model (or alias) is not configured or not allowed for the tenant (404).
    ModelNotFound { model: String },
    /// Unknown path (404).
    UnknownEndpoint { path: String },
    /// An admin object that does not exist (404), e.g. "tenant `acme`".
    NotFound { what: String },
    /// An admin change that clashes with what exists (409), e.g. a tenant
    /// id already taken, or an object the config defines.
    Conflict { message: String },
    /// Known path, wrong method (405).
    MethodNotAllowed { method: String, path: String },
    /// A quota is exhausted (429). `retry_after_ms` is `None` when waiting
    /// cannot help (the request alone is larger than the limit).
    RateLimited {
        limit: LimitKind,
        retry_after_ms: Option<u64>,
        /// Whose limit: the tenant's, its key's or its user's.
        #[serde(default)]
        level: crate::quota::LevelKind,
    },
    /// Every replica that could serve the request was full for as long as
    /// it could wait (429, with `Retry-After`).
    Saturated { retry_after_ms: u64 },
    /// No region can serve the request (503).
    NoUpstream { model: String },
    /// The upstream did not answer in time (504).
    UpstreamTimeout { phase: String },
    /// The upstream answered with an error status (502, or its own 4xx passed on).
    UpstreamStatus { status: u16, message: String },
    /// The upstream could not be reached (502).
    UpstreamUnavailable { message: String },
    /// The upstream's answer is not a valid OpenAI response (502).
    UpstreamInvalidResponse { message: String },
    /// A bug or a sandbox fault in the gateway (500).
    Internal { message: String },
}

impl GatewayError {
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        GatewayError::InvalidRequest {
            message: message.into(),
            param: param.map(str::to_owned),
        }
    }

    pub fn unauthenticated(reason: impl Into<String>) -> Self {
        GatewayError::Unauthenticated {
            reason: reason.into(),
        }
    }

    pub fn status(&self) -> u16 {
        use GatewayError::*;
        match self {
            InvalidRequest { .. } | ContextLengthExceeded { .. } | ContentBlocked { .. } => 400,
            PayloadTooLarge { .. } => 413,
            HeadersTooLarge { .. } => 431,
            Unauthenticated { .. } => 401,
            PermissionDenied { .. } => 403,
            ModelNotFound { .. } | UnknownEndpoint { .. } | NotFound { .. } => 404,
            MethodNotAllowed { .. } => 405,
            Conflict { .. } => 409,
            RateLimited { .. } | Saturated { .. } => 429,
            NoUpstream { .. } => 503,
            UpstreamTimeout { .. } => 504,
            UpstreamStatus { status, .. } if (400..500).contains(status) && *status != 429 => {
                *status
            }
            UpstreamStatus { .. } | UpstreamUnavailable { .. } | UpstreamInvalidResponse { .. } => {
                502
            }
            Internal { .. } => 500,
        }
    }

    /// OpenAI's `error.type`.
    pub fn error_type(&self) -> &'static str {
        use GatewayError::*;
        match self {
            InvalidRequest { .. }
            | ContextLengthExceeded { .. }
            | PayloadTooLarge { .. }
            | HeadersTooLarge { .. }
            | ContentBlocked { .. }
            | ModelNotFound { .. }
            | UnknownEndpoint { .. }
            | NotFound { .. }
            | Conflict { .. }
            | MethodNotAllowed { .. } => "invalid_request_error",
            Unauthenticated { .. } => "authentication_error",
            PermissionDenied { .. } => "permission_error",
            RateLimited {
                limit: LimitKind::Cost | LimitKind::CostPerMonth,
                ..
            } => "insufficient_quota",
            RateLimited { .. } | Saturated { .. } => "rate_limit_error",
            NoUpstream { .. }
            | UpstreamTimeout { .. }
            | UpstreamStatus { .. }
            | UpstreamUnavailable { .. }
            | UpstreamInvalidResponse { .. } => "upstream_error",
            Internal { .. } => "server_error",
        }
    }

    /// OpenAI's `error.code`.
    pub fn code(&self) -> Option<&'static str> {
        use GatewayError::*;
        Some(match self {
            InvalidRequest { .. } => "invalid_request",
            ContextLengthExceeded { .. } => "context_length_exceeded",
            PayloadTooLarge { .. } => "request_too_large",
            HeadersTooLarge { .. } => "request_header_fields_too_large",
            Unauthenticated { .. } => "invalid_api_key",
            PermissionDenied { .. } => "permission_denied",
            ContentBlocked { .. } => "content_policy_violation",
            ModelNotFound { .. } => "model_not_found",
            UnknownEndpoint { .. } => "unknown_url",
            NotFound { .. } => "not_found",
            Conflict { .. } => "conflict",
            MethodNotAllowed { .. } => "method_not_allowed",
            RateLimited {
                limit: LimitKind::Cost | LimitKind::CostPerMonth,
                ..
            } => "insufficient_quota",
            RateLimited { .. } => "rate_limit_exceeded",
            Saturated { .. } => "capacity_exceeded",
            NoUpstream { .. } => "no_upstream_available",
            UpstreamTimeout { .. } => "upstream_timeout",
            UpstreamStatus { .. } => "upstream_error",
            UpstreamUnavailable { .. } => "upstream_unavailable",
            UpstreamInvalidResponse { .. } => "upstream_invalid_response",
            Internal { .. } => "internal_error",
        })
    }

    /// OpenAI's `error.param`: the request field at fault.
    pub fn param(&self) -> Option<&str> {
        use GatewayError::*;
        match self {
            InvalidRequest { param, .. } | ContextLengthExceeded { param, .. } => param.as_deref(),
            ModelNotFound { .. } => Some("model"),
            _ => None,
        }
    }

    /// Whether the same request may succeed if tried again (later or elsewhere).
    pub fn retryable(&self) -> bool {
        use GatewayError::*;
        match self {
            RateLimited { retry_after_ms, .. } => retry_after_ms.is_some(),
            NoUpstream { .. }
            | Saturated { .. }
            | UpstreamTimeout { .. }
            | UpstreamUnavailable { .. }
            | UpstreamInvalidResponse { .. }
            | Internal { .. } => true,
            UpstreamStatus { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    pub fn source(&self) -> ErrorSource {
        use GatewayError::*;
        match self {
            NoUpstream { .. }
            | Saturated { .. }
            | UpstreamTimeout { .. }
            | UpstreamStatus { .. }
            | UpstreamUnavailable { .. }
            | UpstreamInvalidResponse { .. } => ErrorSource::Upstream,
            Internal { .. } => ErrorSource::Internal,
            _ => ErrorSource::Client,
        }
    }

    /// [`GatewayError::metric_label`] of a blocked prompt.
    pub const CONTENT_BLOCKED: &'static str = "content_blocked";

    /// A fixed, low-cardinality label for metrics (never contains user data).
    pub fn metric_label(&self) -> &'static str {
        use GatewayError::*;
        match self {
            InvalidRequest { .. } => "invalid_request",
            ContextLengthExceeded { .. } => "context_length",
            PayloadTooLarge { .. } => "payload_too_large",
            HeadersTooLarge { .. } => "headers_too_large",
            Unauthenticated { .. } => "unauthenticated",
            PermissionDenied { .. } => "permission_denied",
            ContentBlocked { .. } => Self::CONTENT_BLOCKED,
            ModelNotFound { .. } => "model_not_found",
            UnknownEndpoint { .. } => "unknown_endpoint",
            NotFound { .. } => "not_found",
            Conflict { .. } => "conflict",
            MethodNotAllowed { .. } => "method_not_allowed",
            RateLimited { limit, .. } => match limit {
                LimitKind::Requests => "rate_limited_requests",
                LimitKind::Tokens => "rate_limited_tokens",
                LimitKind::TokensPerDay => "rate_limited_tokens_per_day",
                LimitKind::Cost => "rate_limited_cost",
                LimitKind::Concurrency => "rate_limited_concurrency",
                LimitKind::TokensPerMonth => "rate_limited_tokens_per_month",
                LimitKind::CostPerMonth => "rate_limited_cost_per_month",
            },
            Saturated { .. } => "saturated",
            NoUpstream { .. } => "no_upstream",
            UpstreamTimeout { .. } => "upstream_timeout",
            UpstreamStatus { .. } => "upstream_status",
            UpstreamUnavailable { .. } => "upstream_unavailable",
            UpstreamInvalidResponse { .. } => "upstream_invalid_response",
            Internal { .. } => "internal",
        }
    }

    /// Seconds for the `Retry-After` header, rounded up.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            GatewayError::RateLimited {
                retry_after_ms: Some(ms),
                ..
            }
            | GatewayError::Saturated { retry_after_ms: ms } => Some(ms.div_ceil(1000).max(1)),
            _ => None,
        }
    }

    pub fn message(&self) -> String {
        use GatewayError::*;
        match self {
            InvalidRequest { message, .. }
            | ContextLengthExceeded { message, .. }
            | UpstreamInvalidResponse { message } => message.clone(),
            PayloadTooLarge { limit_bytes } => {
                format!("Request body is larger than the limit of {limit_bytes} bytes.")
            }
            HeadersTooLarge { limit_bytes } => {
                format!("Request headers are larger than the limit of {limit_bytes} bytes.")
            }
            Unauthenticated { reason } => format!("Authentication failed: {reason}."),
            PermissionDenied { reason } => format!("Permission denied: {reason}."),
            ContentBlocked { reason } => {
                format!("The prompt was blocked by safety screening: {reason}.")
            }
            ModelNotFound { model } => {
                format!("The model `{model}` does not exist or you do not have access to it.")
            }
            UnknownEndpoint { path } => format!("Unknown request URL: {path}."),
            NotFound { what } => format!("No {what}."),
            Conflict { message } => message.clone(),
            MethodNotAllowed { method, path } => {
                format!("Method {method} is not allowed for {path}.")
            }
            RateLimited {
                limit,
                retry_after_ms: Some(ms),
                level,
            } => format!(
                "Rate limit reached for {}{}. Please try again in {}.",
                level.owner(),
                limit.describe(),
                crate::quota::format_duration_ms(*ms)
            ),
            RateLimited {
                limit,
                retry_after_ms: None,
                level,
            } => format!(
                "Request too large for {}{}: it can never fit the limit.",
                level.owner(),
                limit.describe()
            ),
            Saturated { retry_after_ms } => format!(
                "Every backend for this model is at capacity. Please try again in {}.",
                crate::quota::format_duration_ms(*retry_after_ms)
            ),
            NoUpstream { model } => format!("No healthy backend can serve `{model}` right now."),
            UpstreamTimeout { phase } => format!("The upstream backend timed out ({phase})."),
            UpstreamStatus { status, message } => {
                format!("The upstream backend returned status {status}: {message}")
            }
            UpstreamUnavailable { message } => {
                format!("The upstream backend could not be reached: {message}")
            }
            Internal { message } => format!("Internal gateway error: {message}"),
        }
    }

    /// The OpenAI-shaped body: `{"error":{"message","type","param","code"}}`.
    pub fn to_openai_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message(),
                "type": self.error_type(),
                "param": self.param(),
                "code": self.code(),
            }
        })
    }

    pub fn to_openai_body(&self) -> Vec<u8> {
        self.to_openai_json().to_string().into_bytes()
    }

    /// An SSE event carrying the error, for failures after a stream started.
    pub fn to_sse_event(&self) -> Vec<u8> {
        format!("data: {}\n\n", self.to_openai_json()).into_bytes()
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for GatewayError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_openai_shaped() {
        let e = GatewayError::invalid("`messages` must be an array", Some("messages"));
        let v = e.to_openai_json();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "messages");
        assert_eq!(v["error"]["code"], "invalid_request");
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn rate_limits_round_retry_after_up() {
        let e = GatewayError::RateLimited {
            limit: LimitKind::Requests,
            retry_after_ms: Some(1_001),
            level: crate::quota::LevelKind::Tenant,
        };
        assert_eq!(e.status(), 429);
        assert_eq!(e.retry_after_secs(), Some(2));
        assert!(e.retryable());
        let never = GatewayError::RateLimited {
            limit: LimitKind::Tokens,
            retry_after_ms: None,
            level: crate::quota::LevelKind::Tenant,
        };
        assert!(!never.retryable());
        assert_eq!(never.retry_after_secs(), None);
    }

    #[test]
    fn cost_budget_is_insufficient_quota() {
        let e = GatewayError::RateLimited {
            limit: LimitKind::Cost,
            retry_after_ms: Some(5),
            level: crate::quota::LevelKind::Tenant,
        };
        assert_eq!(e.code(), Some("insufficient_quota"));
        assert_eq!(e.metric_label(), "rate_limited_cost");
    }

    #[test]
    fn upstream_client_errors_pass_through_server_errors_become_502() {
        let e = GatewayError::UpstreamStatus {
            status: 422,
            message: "bad".into(),
        };
        assert_eq!(e.status(), 422);
        let e = GatewayError::UpstreamStatus {
            status: 503,
            message: "busy".into(),
        };
        assert_eq!(e.status(), 502);
        assert!(e.retryable());
    }
}
