//! Classifying a downstream attempt: succeeded, or failed how.
//!
//! Retrying is only useful for failures that time can fix. Each attempt is
//! classified explicitly (after Vector's `RetryLogic`), so the retry loop,
//! the breaker and the metrics all agree on what a response meant.

use serde::{Deserialize, Serialize};

/// What kind of call was made; a 404 means different things for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A read (`GET /customers`): 404 is the answer "no such customer".
    Lookup,
    /// A create or update: 404 means the endpoint or parent is gone.
    Write,
}

/// What happened to one attempt, as the host observed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt<'a> {
    /// A response arrived; `retry_after` is the raw `Retry-After` header.
    Status { code: u16, retry_after: Option<&'a str> },
    /// No response within the deadline.
    Timeout,
    /// No connection (refused, reset, DNS).
    Connect,
}

/// The verdict on an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The call did what was asked.
    Success,
    /// A lookup for a customer the CRM does not know: a real answer.
    NotFound,
    /// It failed; see the class.
    Failed(ErrorClass),
}

impl Verdict {
    /// Whether the attempt says the downstream is healthy: what the breaker
    /// records. A success, a "no such customer", and a permanent refusal of
    /// one request (a 422 for one bad record says nothing about the CRM)
    /// are healthy.
    pub fn is_healthy(self) -> bool {
        match self {
            Self::Success | Self::NotFound => true,
            Self::Failed(class) => !class.counts_against_downstream(),
        }
    }
}

/// How a failure should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum ErrorClass {
    /// Time may fix it (5xx, timeout, connection): retry with backoff.
    Transient,
    /// The CRM asked us to slow down: retry no sooner than asked.
    Throttled { retry_after_secs: Option<u64> },
    /// Retrying cannot fix it: dead-letter with the status as the reason.
    Permanent { status: u16 },
}

impl ErrorClass {
    /// Label for metrics and dead-letter attributes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Throttled { .. } => "throttled",
            Self::Permanent { .. } => "permanent",
        }
    }

    /// Whether the failure says the downstream is unhealthy (feeds the
    /// breaker). A 422 for one bad record says nothing about the CRM.
    pub fn counts_against_downstream(self) -> bool {
        !matches!(self, Self::Permanent { .. })
    }
}

/// Whether a status from an optional route (a capability the settings
/// declare, such as the case search) says the CRM does not have the route:
/// 404 Not Found, 405 Method Not Allowed or 501 Not Implemented. A fact of
/// the CRM's configuration, never the failure of the write that asked.
pub fn route_is_missing(status: Option<u16>) -> bool {
    matches!(status, Some(404 | 405 | 501))
}

/// Classifies one attempt per the downstream contract in docs/design.md.
pub fn classify(op: Operation, attempt: Attempt<'_>) -> Verdict {
    let (code, retry_after) = match attempt {
        Attempt::Timeout | Attempt::Connect => return Verdict::Failed(ErrorClass::Transient),
        Attempt::Status { code, retry_after } => (code, retry_after),
    };
    match code {
        200..=299 => Verdict::Success,
        404 if op == Operation::Lookup => Verdict::NotFound,
        429 => Verdict::Failed(ErrorClass::Throttled { retry_after_secs: retry_after.and_then(parse_retry_after) }),
        // Request Timeout and Too Early are the server asking for a retry.
        408 | 425 => Verdict::Failed(ErrorClass::Transient),
        500..=599 => Verdict::Failed(ErrorClass::Transient),
        // 4xx (400, 401, 403, 404 on a write, 409, 422, …), and 1xx/3xx that
        // a REST API should never send: no retry will change them.
        _ => Verdict::Failed(ErrorClass::Permanent { status: code }),
    }
}

/// `Retry-After` in delta-seconds. The HTTP-date form is not accepted: a
/// clock-skewed date would be worse than the caller's own backoff.
pub fn parse_retry_after(value: &str) -> Option<u64> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_404_405_and_501_say_an_optional_route_is_missing() {
        for status in [404, 405, 501] {
            assert!(route_is_missing(Some(status)), "{status}");
        }
        for status in [None, Some(200), Some(400), Some(422), Some(500), Some(503)] {
            assert!(!route_is_missing(status), "{status:?}");
        }
    }

    fn status(code: u16) -> Attempt<'static> {
        Attempt::Status { code, retry_after: None }
    }

    #[test]
    fn follows_the_contract_table() {
        use ErrorClass::*;
        assert_eq!(classify(Operation::Lookup, status(200)), Verdict::Success);
        assert_eq!(classify(Operation::Write, status(201)), Verdict::Success);
        assert_eq!(classify(Operation::Lookup, status(404)), Verdict::NotFound);
        assert_eq!(classify(Operation::Write, status(404)), Verdict::Failed(Permanent { status: 404 }));
        for code in [500, 502, 503, 504, 408] {
            assert_eq!(classify(Operation::Write, status(code)), Verdict::Failed(Transient), "{code}");
        }
        for code in [400, 401, 403, 409, 422] {
            assert_eq!(
                classify(Operation::Lookup, status(code)),
                Verdict::Failed(Permanent { status: code }),
                "{code}"
            );
        }
        assert_eq!(classify(Operation::Lookup, Attempt::Timeout), Verdict::Failed(Transient));
        assert_eq!(classify(Operation::Write, Attempt::Connect), Verdict::Failed(Transient));
    }

    #[test]
    fn throttling_carries_the_delay_asked_for() {
        let a = Attempt::Status { code: 429, retry_after: Some(" 5 ") };
        assert_eq!(classify(Operation::Write, a), Verdict::Failed(ErrorClass::Throttled { retry_after_secs: Some(5) }));
        let b = Attempt::Status { code: 429, retry_after: Some("Wed, 21 Oct 2015 07:28:00 GMT") };
        assert_eq!(classify(Operation::Write, b), Verdict::Failed(ErrorClass::Throttled { retry_after_secs: None }));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after(""), None);
    }

    #[test]
    fn only_health_failures_count_against_the_downstream() {
        assert!(ErrorClass::Transient.counts_against_downstream());
        assert!(ErrorClass::Throttled { retry_after_secs: None }.counts_against_downstream());
        assert!(!ErrorClass::Permanent { status: 422 }.counts_against_downstream());
        assert_eq!(ErrorClass::Permanent { status: 422 }.as_str(), "permanent");
    }

    #[test]
    fn a_verdict_is_healthy_unless_it_counts_against_the_downstream() {
        assert!(Verdict::Success.is_healthy());
        assert!(Verdict::NotFound.is_healthy());
        assert!(Verdict::Failed(ErrorClass::Permanent { status: 422 }).is_healthy());
        assert!(!Verdict::Failed(ErrorClass::Transient).is_healthy());
        assert!(!Verdict::Failed(ErrorClass::Throttled { retry_after_secs: Some(5) }).is_healthy());
    }
}
