//! The worker's calls to the downstream CRM (docs/design.md, "With the CRM"),
//! each classified by the shared [`classify`] so the retry decision, the
//! breaker and the pacing agree on what a response meant.

use std::sync::Arc;
use std::time::Duration;

use failsoft_shared::cache::CustomerRecord;
use failsoft_shared::error_class::{Attempt, ErrorClass, Operation, Verdict, classify};
use failsoft_shared::mapping::template::RenderError;
use failsoft_shared::mapping::{self, CrmRequest, ListPage, Mapping, Op, Token};
use failsoft_shared::rate_limit::{self, Quota};
use serde_json::Value;

/// The number the breaker's probe looks up when the mapping declares no
/// probe: no customer has it, so a healthy CRM answers "not found".
pub const PROBE_PHONE: &str = mapping::PROBE_PHONE;
/// Carries the correlationId on every call, as the edge does, so one id
/// follows a Data Action through the queue to the CRM's logs.
pub const CORRELATION_HEADER: &str = mapping::CORRELATION_HEADER;
/// `customerId` of a number the CRM does not know (the edge's value).
pub const UNKNOWN_CUSTOMER: &str = "UNKNOWN";

/// The downstream CRM, spoken to through its mapping (`deploy/crm/`).
#[derive(Clone)]
pub struct Crm {
    http: reqwest::Client,
    base: String,
    mapping: Arc<Mapping>,
    /// The OAuth 2.0 token, fetched by one call at a time.
    token: Arc<tokio::sync::Mutex<Option<Token>>>,
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

    fn failed(class: ErrorClass, maybe_reached: bool) -> Self {
        Self { verdict: Verdict::Failed(class), status: None, body: Vec::new(), maybe_reached, quota: None }
    }
}

impl Crm {
    pub fn new(http: reqwest::Client, base: &str, mapping: Arc<Mapping>) -> Self {
        Self { http, base: base.trim_end_matches('/').to_owned(), mapping, token: Arc::default() }
    }

    /// The mapping's lookup (for the generic contract, `GET /customers?phone=`).
    pub async fn lookup(&self, phone: &str, correlation_id: &str, deadline: Duration) -> Reply {
        self.call(Op::Lookup, deadline, |m, base, token| m.lookup(base, phone, correlation_id, token)).await
    }

    /// The mapping's case search by external reference, where it declares
    /// one (for the generic contract, `GET /cases?externalRef=`).
    pub async fn find_cases(&self, external_ref: &str, deadline: Duration) -> Reply {
        self.call(Op::FindCase, deadline, |m, base, token| {
            m.find_case(base, external_ref, token).unwrap_or(Err(RenderError::Missing("find_case".to_owned())))
        })
        .await
    }

    /// The mapping's case creation (for the generic contract, `POST /cases`
    /// with `Idempotency-Key: <correlationId>`).
    pub async fn create_case(&self, correlation_id: &str, case: &Value, deadline: Duration) -> Reply {
        self.call(Op::CreateCase, deadline, |m, base, token| m.create_case(base, correlation_id, case, token)).await
    }

    /// The breaker's probe: the mapping's, else a lookup of [`PROBE_PHONE`].
    pub async fn probe(&self, deadline: Duration) -> Reply {
        self.call(Op::Probe, deadline, |m, base, token| m.probe(base, token)).await
    }

    /// One page of the mapping's customer list (the pre-warm sync's).
    pub async fn list_page(
        &self,
        since_ms: Option<u64>,
        page_size: u32,
        page: ListPage<'_>,
        deadline: Duration,
    ) -> Reply {
        self.call(Op::ListCustomers, deadline, |m, base, token| {
            m.list_customers(base, since_ms, page_size, page, token)
                .unwrap_or(Err(RenderError::Missing("list_customers".to_owned())))
        })
        .await
    }

    /// The CRM's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A new token from the token endpoint (`failsoft crm check`); the
    /// failed call's reply when none came.
    pub async fn renew_token(&self, deadline: Duration) -> Result<(), Reply> {
        self.token(true, deadline).await.map(drop)
    }

    /// The mapping this CRM is spoken to through.
    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// One call of `op`: with a token when the mapping uses one, fetched
    /// anew once if the CRM refuses it.
    async fn call<F>(&self, op: Op, deadline: Duration, build: F) -> Reply
    where
        F: Fn(&Mapping, &str, Option<&str>) -> Result<CrmRequest, RenderError>,
    {
        let started = std::time::Instant::now();
        let mut refreshed = false;
        loop {
            let token = match self.mapping.uses_token() {
                true => match self.token(refreshed, deadline.saturating_sub(started.elapsed())).await {
                    Ok(token) => Some(token),
                    Err(reply) => return reply,
                },
                false => None,
            };
            let request = match build(&self.mapping, &self.base, token.as_deref()) {
                Ok(request) => request,
                Err(e) => {
                    // A value the CRM's language cannot hold: no call can
                    // carry it, now or later.
                    tracing::error!(operation = op.as_str(), error = %e, "the CRM mapping cannot express this call");
                    return Reply::failed(ErrorClass::Permanent { status: 400 }, false);
                }
            };
            let reply =
                send_mapped(&self.http, &self.mapping, op, request, deadline.saturating_sub(started.elapsed())).await;
            if !refreshed && reply.status.is_some_and(|s| self.mapping.token_refused(s)) {
                refreshed = true;
                continue;
            }
            crate::telemetry::crm_call(op_class(op), started.elapsed());
            return reply;
        }
    }

    /// The cached token, or a new one when it is due, missing or `renew`.
    /// A token call that fails is a transient failure of the call that
    /// needed it (the breaker hears of it); refused credentials are a
    /// configuration fault as well.
    async fn token(&self, renew: bool, deadline: Duration) -> Result<String, Reply> {
        let mut cached = self.token.lock().await;
        let now_s = crate::clock::now_ms() / 1000;
        if let Some(token) = cached.as_ref().filter(|t| !renew && !t.is_due(now_s)) {
            return Ok(token.access_token.clone());
        }
        let Some(request) = self.mapping.token_request(&self.base) else {
            return Err(Reply::failed(ErrorClass::Transient, false));
        };
        // Whatever went wrong, the call that needed the token failed for a
        // reason time may fix (or an operator will: the fault below).
        let transient = &|_: Attempt<'_>, _: &[u8]| Verdict::Failed(ErrorClass::Transient);
        let reply = exchange(build(&self.http, request), deadline, transient).await;
        let Some(status) = reply.status else { return Err(reply) };
        let token = (200..300).contains(&status).then(|| self.mapping.read_token(&reply.body, now_s)).flatten();
        match token {
            Some(token) => {
                let access = token.access_token.clone();
                *cached = Some(token);
                Ok(access)
            }
            None => {
                let detail = format!("the CRM's token endpoint refused the client credentials (HTTP {status})");
                if (400..500).contains(&status)
                    && status != 429
                    && crate::telemetry::config_fault("crm.token", detail.clone())
                {
                    tracing::error!(status, "{detail}");
                }
                Err(Reply { body: Vec::new(), ..reply })
            }
        }
    }
}

fn op_class(op: Op) -> Operation {
    match op {
        Op::Lookup | Op::Probe | Op::ListCustomers => Operation::Lookup,
        Op::CreateCase | Op::FindCase => Operation::Write,
    }
}

fn build(http: &reqwest::Client, request: CrmRequest) -> reqwest::RequestBuilder {
    let method = reqwest::Method::from_bytes(request.method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut builder = http.request(method, request.url);
    for (name, value) in request.headers {
        builder = builder.header(name, value);
    }
    match request.body {
        Some(body) => builder.body(body),
        None => builder,
    }
}

/// Sends a mapped call and classifies it by the mapping's rules.
async fn send_mapped(
    http: &reqwest::Client,
    mapping: &Mapping,
    op: Op,
    request: CrmRequest,
    deadline: Duration,
) -> Reply {
    exchange(build(http, request), deadline, &|attempt, body| mapping.classify(op, attempt, body)).await
}

/// Sends one request with its deadline, classified as `op`, and times it
/// (a call outside the mapping: the events endpoint).
pub(crate) async fn send(request: reqwest::RequestBuilder, op: Operation, deadline: Duration) -> Reply {
    let started = std::time::Instant::now();
    let reply = exchange(request, deadline, &|attempt, _| classify(op, attempt)).await;
    crate::telemetry::crm_call(op, started.elapsed());
    reply
}

/// One exchange within `deadline`: the status, body and quota of the
/// answer, or how it failed, classified by `classify`.
async fn exchange(
    request: reqwest::RequestBuilder,
    deadline: Duration,
    classify: &(dyn Fn(Attempt<'_>, &[u8]) -> Verdict + Sync),
) -> Reply {
    let failed = |attempt: Attempt<'_>, maybe_reached| Reply {
        verdict: classify(attempt, b""),
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
    let verdict = classify(Attempt::Status { code: status, retry_after: retry_after.as_deref() }, &body);
    Reply { verdict, status: Some(status), body, maybe_reached: true, quota }
}

/// The record kept for a number the CRM does not know.
pub fn not_found_record(default_tier: &str) -> CustomerRecord {
    CustomerRecord { found: false, customer_id: UNKNOWN_CUSTOMER.to_owned(), tier: default_tier.to_owned() }
}

/// The generic contract with its optional case search: how a CRM port
/// that has no mapping of its own (a test's fake) reads answers.
pub fn generic() -> &'static Mapping {
    static GENERIC: std::sync::LazyLock<Mapping> = std::sync::LazyLock::new(|| {
        let from = mapping::Settings { can_find_cases: Some(true), ..Default::default() };
        mapping::load_text(from, &|_| None).expect("the generic profile binds")
    });
    &GENERIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_the_error_class() {
        let reply = |verdict| Reply { verdict, status: None, body: Vec::new(), maybe_reached: true, quota: None };
        assert!(reply(Verdict::NotFound).healthy());
        assert!(reply(Verdict::Failed(ErrorClass::Permanent { status: 422 })).healthy());
        assert!(!reply(Verdict::Failed(ErrorClass::Transient)).healthy());
    }

    #[test]
    fn the_generic_reading_is_the_contract() {
        let m = generic();
        assert!(m.can_find_cases());
        assert!(matches!(
            m.read_customer(br#"{"customerId":"C-1","tier":"vip"}"#, "standard"),
            mapping::LookupAnswer::Found(_)
        ));
        assert!(matches!(
            m.read_customer(br#"{"customerId":"","tier":"vip"}"#, "standard"),
            mapping::LookupAnswer::Unreadable
        ));
        let found =
            m.read_found_case(br#"[{"id":"X"},{"caseId":"CASE-7","phone":"+13175550123"},{"caseId":"CASE-9"}]"#);
        assert_eq!(found.unwrap().unwrap().case_id, "CASE-7");
        assert_eq!(m.read_found_case(b"{}"), Err(mapping::NotACaseList));
        assert_eq!(not_found_record("standard").customer_id, UNKNOWN_CUSTOMER);
    }
}
