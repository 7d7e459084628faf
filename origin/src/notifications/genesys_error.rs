//! How a Genesys Cloud API call failed, in the terms the session loop acts
//! on: a 401 means a new token, a 404 a new channel, a 429 a wait of the
//! length Genesys asks for, anything else a retry after backoff.

use std::time::Duration;

use failsoft_shared::error_class::parse_retry_after;

/// Longest `Retry-After` honoured (five times the default backoff cap): a
/// bigger value is capped rather than leaving the consumer silent longer.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenesysError {
    #[error("unauthorized (401): the token is expired or revoked")]
    Unauthorized,
    #[error("not found (404): the channel is gone")]
    NotFound,
    #[error("throttled (429)")]
    Throttled(Option<Duration>),
    #[error("HTTP {status} ({code})")]
    Status { status: u16, code: String },
    #[error("transport: {0}")]
    Transport(String),
    #[error("unexpected reply: {0}")]
    Reply(String),
}

impl GenesysError {
    /// Reads a non-success response. Only Genesys's error `code` is kept:
    /// messages can echo request data.
    pub async fn from_response(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after)
            .map(|secs| Duration::from_secs(secs).min(RETRY_AFTER_MAX));
        match status {
            401 => Self::Unauthorized,
            404 => Self::NotFound,
            429 => Self::Throttled(retry_after),
            _ => {
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                let code = body.get("code").and_then(|c| c.as_str()).unwrap_or("none").chars().take(80).collect();
                Self::Status { status, code }
            }
        }
    }

    pub fn transport(e: reqwest::Error) -> Self {
        Self::Transport(if e.is_timeout() { "timed out".to_owned() } else { e.without_url().to_string() })
    }

    /// The wait Genesys asked for, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled(after) => *after,
            _ => None,
        }
    }

    /// The label of the reconnect metric for a failure of this kind.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "channel_gone",
            Self::Throttled(_) => "throttled",
            Self::Status { .. } | Self::Reply(_) => "api_error",
            Self::Transport(_) => "api_unreachable",
        }
    }
}
