//! The worker's calls to the downstream CRM (docs/design.md, "With the CRM"),
//! each classified by the shared [`classify`] so the retry decision, the
//! breaker and the pacing agree on what a response meant.

use std::time::Duration;

use failsoft_shared::cache::{CustomerAnswer, CustomerRecord};
use failsoft_shared::case::CaseSummary;
use failsoft_shared::error_class::{Attempt, ErrorClass, Operation, Verdict, classify};
use failsoft_shared::rate_limit::{self, Quota};
use serde::Deserialize;
use serde_json::Value;

/// The number the breaker's probe looks up: the lightest call of the two
/// every CRM must offer. No customer has it (no North American area code
/// starts with 0), so a healthy CRM answers 404 (or 400, if it checks
/// numbers), cheaply, and both count as healthy.
pub const PROBE_PHONE: &str = "+10000000000";
/// The probe's correlationId, so a CRM's logs show what it was.
pub const PROBE_ID: &str = "failsoft-breaker-probe";
/// Carries the correlationId on every call, as the edge does, so one id
/// follows a Data Action through the queue to the CRM's logs.
pub const CORRELATION_HEADER: &str = "x-correlation-id";
/// `customerId` of a number the CRM does not know (the edge's value).
pub const UNKNOWN_CUSTOMER: &str = "UNKNOWN";

/// The downstream's HTTP API.
#[derive(Clone)]
pub struct Crm {
    http: reqwest::Client,
    base: String,
}

/// What one call came to.
#[derive(Debug, Clone)]
pub struct Reply {
    pub verdict: Verdict,
    /// The HTTP status, when a response arrived.
    pub status: Option<u16>,
    pub body: Vec<u8>,
    /// False only when no connection was made, so the CRM cannot have acted
    /// on the request (what the write-once protocol needs to know).
    pub maybe_reached: bool,
    /// What the answer's rate-limit headers said of the CRM's limit.
    pub quota: Option<Quota>,
}

impl Reply {
    pub fn failure_class(&self) -> Option<ErrorClass> {
        match self.verdict {
            Verdict::Failed(class) => Some(class),
            _ => None,
        }
    }

    /// Whether the outcome says the downstream is healthy (for the breaker).
    pub fn healthy(&self) -> bool {
        self.verdict.is_healthy()
    }
}

impl Crm {
    pub fn new(http: reqwest::Client, base: &str) -> Self {
        Self { http, base: base.trim_end_matches('/').to_owned() }
    }

    /// `GET /customers?phone=` (404: no such customer, a real answer).
    pub async fn lookup(&self, phone: &str, correlation_id: &str, deadline: Duration) -> Reply {
        let request = self
            .http
            .get(format!("{}/customers", self.base))
            .query(&[("phone", phone)])
            .header(CORRELATION_HEADER, correlation_id);
        send(request.header("accept", "application/json"), Operation::Lookup, deadline).await
    }

    /// `GET /cases?externalRef=`: the cases a create with this reference made
    /// (an optional capability: see
    /// [`failsoft_shared::error_class::route_is_missing`]).
    pub async fn find_cases(&self, external_ref: &str, deadline: Duration) -> Reply {
        let request = self
            .http
            .get(format!("{}/cases", self.base))
            .query(&[("externalRef", external_ref)])
            .header(CORRELATION_HEADER, external_ref);
        send(request.header("accept", "application/json"), Operation::Write, deadline).await
    }

    /// `POST /cases` with `Idempotency-Key: <correlationId>`.
    pub async fn create_case(&self, correlation_id: &str, case: &Value, deadline: Duration) -> Reply {
        let request = self
            .http
            .post(format!("{}/cases", self.base))
            .header("accept", "application/json")
            .header("idempotency-key", correlation_id)
            .header(CORRELATION_HEADER, correlation_id)
            .json(case);
        send(request, Operation::Write, deadline).await
    }

    /// The breaker's probe: a lookup of [`PROBE_PHONE`].
    pub async fn probe(&self, deadline: Duration) -> Reply {
        self.lookup(PROBE_PHONE, PROBE_ID, deadline).await
    }
}

/// Sends one request with its deadline, classified as `op`, and times it.
pub(crate) async fn send(request: reqwest::RequestBuilder, op: Operation, deadline: Duration) -> Reply {
    let started = std::time::Instant::now();
    let reply = exchange(request, op, deadline).await;
    crate::telemetry::crm_call(op, started.elapsed());
    reply
}

async fn exchange(request: reqwest::RequestBuilder, op: Operation, deadline: Duration) -> Reply {
    let failed = |attempt: Attempt<'_>, maybe_reached| Reply {
        verdict: classify(op, attempt),
        status: None,
        body: Vec::new(),
        maybe_reached,
        quota: None,
    };
    let response = match request.timeout(deadline).send().await {
        Ok(response) => response,
        Err(e) if e.is_connect() => return failed(Attempt::Connect, false),
        Err(e) if e.is_timeout() => return failed(Attempt::Timeout, true),
        Err(_) => return failed(Attempt::Connect, true),
    };
    let status = response.status().as_u16();
    let headers = response.headers();
    let retry_after = headers.get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let quota = rate_limit::read(|name| headers.get(name).and_then(|v| v.to_str().ok()), crate::clock::now_ms() / 1000);
    let body = match response.bytes().await {
        Ok(body) => body.to_vec(),
        Err(e) if e.is_timeout() => return failed(Attempt::Timeout, true),
        Err(_) => return failed(Attempt::Connect, true),
    };
    let verdict = classify(op, Attempt::Status { code: status, retry_after: retry_after.as_deref() });
    Reply { verdict, status: Some(status), body, maybe_reached: true, quota }
}

/// A found customer from a 2xx lookup body; `None` when the body is not the
/// contract's shape.
pub fn parse_customer(body: &[u8]) -> Option<CustomerRecord> {
    serde_json::from_slice::<CustomerAnswer>(body).ok()?.into_record()
}

/// The record kept for a number the CRM does not know.
pub fn not_found_record(default_tier: &str) -> CustomerRecord {
    CustomerRecord { found: false, customer_id: UNKNOWN_CUSTOMER.to_owned(), tier: default_tier.to_owned() }
}

/// What is kept of the created case in a 2xx create body (it must carry a
/// string `caseId`): its [`CaseSummary`], never the phone, subject or
/// description a CRM may echo.
pub fn parse_case(body: &[u8]) -> Option<CaseSummary> {
    serde_json::from_slice(body).ok()
}

/// A `GET /cases?externalRef=` body that is not a list of cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the CRM's case search did not answer a list of cases")]
pub struct NotACaseList;

/// What is kept of the oldest case in a `GET /cases?externalRef=` body
/// (its [`CaseSummary`]).
pub fn parse_found_case(body: &[u8]) -> Result<Option<CaseSummary>, NotACaseList> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(cases)) => Ok(cases.iter().find_map(|case| CaseSummary::deserialize(case).ok())),
        _ => Err(NotACaseList),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_contract_shaped_bodies_only() {
        let c = parse_customer(br#"{"customerId":"C-1","tier":"vip","phone":"+1"}"#).unwrap();
        assert_eq!((c.found, c.customer_id.as_str(), c.tier.as_str()), (true, "C-1", "vip"));
        assert!(parse_customer(br#"{"customerId":"","tier":"vip"}"#).is_none());
        assert!(parse_case(br#"{"caseId":"CASE-1"}"#).is_some());
        assert!(parse_case(br#"{"id":"CASE-1"}"#).is_none());
        assert_eq!(parse_found_case(b"[]"), Ok(None));
        let found = parse_found_case(br#"[{"id":"X"},{"caseId":"CASE-7","phone":"+13175550123"},{"caseId":"CASE-9"}]"#);
        assert_eq!(found.unwrap().unwrap().case_id, "CASE-7");
        assert_eq!(parse_found_case(b"{}"), Err(NotACaseList));
        assert_eq!(not_found_record("standard").customer_id, UNKNOWN_CUSTOMER);
    }

    #[test]
    fn a_case_is_kept_without_what_the_crm_echoed() {
        let body = br#"{"caseId":"CASE-1","status":"open","createdAt":5,"phone":"+13175550123","subject":"s","description":"d"}"#;
        let kept = serde_json::to_value(parse_case(body).unwrap()).unwrap();
        assert_eq!(kept, serde_json::json!({"caseId": "CASE-1", "status": "open", "createdAt": 5}));
    }

    #[test]
    fn health_follows_the_error_class() {
        let reply = |verdict| Reply { verdict, status: None, body: Vec::new(), maybe_reached: true, quota: None };
        assert!(reply(Verdict::NotFound).healthy());
        assert!(reply(Verdict::Failed(ErrorClass::Permanent { status: 422 })).healthy());
        assert!(!reply(Verdict::Failed(ErrorClass::Transient)).healthy());
    }
}
