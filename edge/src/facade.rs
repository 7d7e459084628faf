//! The facade: routing, authentication, validation and the flows of
//! DESIGN.md, sequenced around the ports. Decisions come from
//! `failsoft-shared`; this module only performs them.

use std::sync::Mutex;

use base64::Engine as _;
use failsoft_shared::breaker::{Breaker, Permit};
use failsoft_shared::cache::{CacheEntry, CustomerRecord};
use failsoft_shared::edge_stats::{self, Answer, Cadence, EdgeStats, WriteOutcome};
use failsoft_shared::envelope::{Envelope, Kind, MAX_CORRELATION_ID, is_valid_correlation_id};
use failsoft_shared::error_class::{Attempt, ErrorClass, Operation, Verdict, classify};
use failsoft_shared::keys::{Phone, customer_kv_key, entity_key, normalize_phone};
use failsoft_shared::ladder::{Fallback, FirstStep, Source, fall_back, first_step};
use failsoft_shared::signature::{self, constant_time_eq};
use serde_json::{Map, Value, json};

use crate::config::EdgeConfig;
use crate::crm;
use crate::http::{MAX_BODY_BYTES, Request, Response, payload_too_large};
use crate::ports::{Clock, Downstream, Forwarder, Kv, OutboundRequest, QueueMessage, TransportError};
use crate::wire::{
    CrmChange, LookupAnswer, ROUTING_FIELDS, StoredResult, UNKNOWN_CUSTOMER, WARNING_NO_CACHE, WARNING_NOT_ACCEPTED,
    WARNING_STALE, WARNING_WRITE_QUEUED, WriteAnswer, WriteStatus,
};

/// How long a write's result is kept for polling (the results table's TTL).
pub const RESULT_TTL_SECS: u64 = 86_400;
const RESULT_KEY_PREFIX: &str = "res:v1:";
const MAX_SUBJECT: usize = 255;
const MAX_DESCRIPTION: usize = 4_000;

/// A handled request: the response, and the messages to forward once it
/// has been sent (a refresh never sits on the response path).
#[derive(Debug)]
pub struct Handled {
    pub response: Response,
    pub after: Vec<QueueMessage>,
    /// How the traffic counters count it (`None`: not a counted answer).
    answer: Option<Answer>,
    /// Whether a traffic report was due once this was counted.
    report_due: bool,
}

impl Handled {
    fn new(response: Response, after: Vec<QueueMessage>, answer: Option<Answer>) -> Self {
        Self { response, after, answer, report_due: false }
    }
}

impl From<Response> for Handled {
    fn from(response: Response) -> Self {
        Self::new(response, Vec::new(), None)
    }
}

/// A request refused as the caller's fault: always a 4xx with a code.
struct Refusal(Response);

impl Refusal {
    fn new(status: u16, code: &str, message: &str) -> Self {
        metrics::counter!("failsoft_edge_rejected_total", "code" => code.to_owned()).increment(1);
        Self(Response::error(status, code, message))
    }
}

type Checked<T> = Result<T, Refusal>;

/// KV key of the breaker state shared between instances.
pub const BREAKER_KEY: &str = "breaker:v1";
/// How long an instance trusts its copy of the shared breaker. Bounds both
/// the KV reads per request and how late an instance learns of a trip.
const BREAKER_SYNC_MS: u64 = 1_000;
/// The shared breaker state outlives any cool-down; KV needs at least 60 s.
const BREAKER_TTL_SECS: u64 = 3_600;

/// How a host's instances share the CRM breaker through KV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerSharing {
    /// One long-lived process: the breaker lives in memory only.
    Off,
    /// Many isolates (Workers): publish trips and recoveries, adopt a
    /// peer's trip. Rare writes respect KV's one write per key per second.
    Transitions,
    /// A fresh instance per request (Spin): the whole state, window
    /// included, lives in KV and is written after every outcome.
    EveryOutcome,
}

struct BreakerCell {
    breaker: Breaker,
    synced_at_ms: Option<u64>,
}

/// The Data Action facade over a host's ports.
pub struct Facade<K, D, F, C> {
    config: EdgeConfig,
    kv: K,
    downstream: D,
    forwarder: F,
    clock: C,
    breaker: Mutex<BreakerCell>,
    sharing: BreakerSharing,
    stats: Mutex<EdgeStats>,
}

impl<K: Kv, D: Downstream, F: Forwarder, C: Clock> Facade<K, D, F, C> {
    pub fn new(config: EdgeConfig, kv: K, downstream: D, forwarder: F, clock: C) -> Self {
        let breaker = Mutex::new(BreakerCell { breaker: Breaker::default(), synced_at_ms: None });
        // Random, so isolates that ever report never share an id at the origin.
        let isolate = format!("{:016x}{:016x}", clock.random_u64(), clock.random_u64());
        let cadence = Cadence::Batched { every_ms: config.stats_every_ms };
        let stats = Mutex::new(EdgeStats::new(isolate, cadence));
        Self { config, kv, downstream, forwarder, clock, breaker, sharing: BreakerSharing::Off, stats }
    }

    /// Sets when the traffic counters are reported (Spin: every instance).
    pub fn with_stats_cadence(self, cadence: Cadence) -> Self {
        let isolate = self.lock_stats().isolate().to_owned();
        *self.lock_stats() = EdgeStats::new(isolate, cadence);
        self
    }

    /// A copy of the traffic counters not yet reported.
    pub fn stats(&self) -> edge_stats::Counts {
        *self.lock_stats().current()
    }

    fn lock_stats(&self) -> std::sync::MutexGuard<'_, EdgeStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Shares the breaker through KV (for hosts with many instances).
    pub fn with_breaker_sharing(mut self, sharing: BreakerSharing) -> Self {
        self.sharing = sharing;
        self
    }

    pub fn config(&self) -> &EdgeConfig {
        &self.config
    }

    /// A copy of the breaker's state.
    pub fn breaker(&self) -> Breaker {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner()).breaker
    }

    /// Handles one request. Never fails: every outcome is a response.
    pub async fn handle(&self, req: Request) -> Handled {
        let started = self.clock.now_ms();
        let mut handled = self.route(req).await;
        let reporting = self.config.origin_url.is_some();
        if handled.answer.is_some() || reporting {
            // One lock and one clock read: count it, and see whether the
            // report is due (any response may carry it, `/healthz` too).
            let now = self.clock.now_ms();
            let mut stats = self.lock_stats();
            if let Some(answer) = handled.answer {
                stats.record(answer, now.saturating_sub(started), now);
            }
            handled.report_due = reporting && stats.is_due(now);
        }
        handled
    }

    async fn route(&self, req: Request) -> Handled {
        let path = req.path.as_str();
        let result = match path {
            "/healthz" => self.only(&req, "GET").map(|()| Handled::from(Response::json(200, &json!({"status": "ok"})))),
            "/v1/customer-lookup" | "/crm/customer-lookup" => match self.only(&req, "POST") {
                Ok(()) => self.lookup(&req).await,
                Err(e) => Err(e),
            },
            "/v1/cases" => match self.only(&req, "POST") {
                Ok(()) => self.create_case(&req).await,
                Err(e) => Err(e),
            },
            "/v1/webhooks/crm-update" => match self.only(&req, "POST") {
                Ok(()) => self.crm_update(&req).await.map(Handled::from),
                Err(e) => Err(e),
            },
            _ => {
                if let Some(id) = path.strip_prefix("/v1/results/") {
                    match self.only(&req, "GET") {
                        Ok(()) => self.result(&req, id).await.map(Handled::from),
                        Err(e) => Err(e),
                    }
                } else if let (Some(entity), Some(secret)) =
                    (path.strip_prefix("/v1/internal/cache/"), self.config.internal_secret.as_deref())
                {
                    match self.only(&req, "PUT") {
                        Ok(()) => self.push_cache(&req, entity, secret).await.map(Handled::from),
                        Err(e) => Err(e),
                    }
                } else {
                    Err(Refusal::new(404, "NOT_FOUND", "no such route"))
                }
            }
        };
        result.unwrap_or_else(|Refusal(response)| Handled::new(response, Vec::new(), Some(Answer::Refused)))
    }

    /// Whether [`Self::run_after`] has anything to do for `handled` (hosts
    /// schedule work after a response only then).
    pub fn has_work_after(&self, handled: &Handled) -> bool {
        !handled.after.is_empty() || handled.report_due
    }

    /// Forwards the messages a handled request left for after its response,
    /// then sends the traffic report if one is due. A failure is logged and
    /// counted, never surfaced: the answer is gone.
    pub async fn run_after(&self, after: Vec<QueueMessage>) {
        for message in after {
            self.forward(&message, Kind::Refresh, self.config.policy.crm_deadline_ms).await.ok();
        }
        self.report_stats().await;
    }

    /// Whether a traffic report is due (never without an origin to send it to).
    pub fn stats_due(&self) -> bool {
        self.config.origin_url.is_some() && self.lock_stats().is_due(self.clock.now_ms())
    }

    /// Sends the due traffic report, if any, to the origin, signed like the
    /// result proxy's calls. Without `FAILSOFT_ORIGIN_URL` the counters only
    /// count. A failed send is handed back to be resent unchanged.
    pub async fn report_stats(&self) {
        let (Some(origin), Some(secret)) = (self.config.origin_url.as_deref(), self.config.internal_secret.as_deref())
        else {
            return;
        };
        let Some(report) = self.lock_stats().take_report(self.clock.now_ms()) else { return };
        let body = serde_json::to_vec(&report).unwrap_or_default();
        let mut headers = self.signed_headers(secret, &body);
        headers.push(("content-type", "application/json".to_owned()));
        let request = OutboundRequest {
            method: "POST",
            url: format!("{origin}{}", edge_stats::REPORT_PATH),
            headers,
            body: Some(body),
        };
        let seq = report.seq;
        let outcome = match self.downstream.send(request, edge_stats::SEND_DEADLINE_MS).await {
            Ok(resp) if (200..300).contains(&resp.status) => {
                self.lock_stats().delivered(seq);
                "delivered"
            }
            // Malformed or too large: resending the same bytes cannot succeed.
            Ok(resp) if matches!(resp.status, 400 | 413) => {
                tracing::warn!(status = resp.status, seq, "the origin refused a traffic report; dropped");
                self.lock_stats().delivered(seq);
                "refused"
            }
            outcome => {
                let why = outcome.map(|r| r.status.to_string()).unwrap_or_else(|e| format!("{e:?}"));
                tracing::warn!(why, seq, "sending a traffic report failed; it will be resent");
                self.lock_stats().failed(report, self.clock.now_ms());
                "failed"
            }
        };
        metrics::counter!("failsoft_edge_stats_reports_total", "outcome" => outcome).increment(1);
    }

    /// The internal signature headers for `body`, signed now.
    fn signed_headers(&self, secret: &[u8], body: &[u8]) -> Vec<(&'static str, String)> {
        let ts = self.clock.now_ms() / 1000;
        vec![
            (signature::TIMESTAMP_HEADER, ts.to_string()),
            (signature::SIGNATURE_HEADER, signature::sign(secret, ts, body)),
        ]
    }

    fn only(&self, req: &Request, method: &str) -> Checked<()> {
        if req.method == method {
            Ok(())
        } else {
            let mut refusal = Refusal::new(405, "METHOD_NOT_ALLOWED", &format!("use {method}"));
            refusal.0 = refusal.0.with_header("allow", method);
            Err(refusal)
        }
    }

    fn authorise(&self, req: &Request) -> Checked<()> {
        let creds = &self.config.credentials;
        let header = req.header_value("authorization").unwrap_or("").trim();
        let (scheme, value) = header.split_once(' ').unwrap_or((header, ""));
        let value = value.trim();
        let ok = if scheme.eq_ignore_ascii_case("bearer") {
            creds.bearer_token.as_deref().is_some_and(|t| constant_time_eq(t.as_bytes(), value.as_bytes()))
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD.decode(value).unwrap_or_default();
            creds.basic.as_ref().is_some_and(|(user, password)| {
                let expected = format!("{user}:{password}");
                constant_time_eq(expected.as_bytes(), &decoded)
            })
        } else {
            false
        };
        if ok {
            Ok(())
        } else {
            Err(Refusal::new(401, "UNAUTHORIZED", "missing or wrong credentials (Bearer token or Basic)")
                .with_challenge())
        }
    }

    /// The JSON object of a Data Action body, or the 4xx that says why not.
    fn json_body(&self, req: &Request) -> Checked<Map<String, Value>> {
        if req.body.len() > MAX_BODY_BYTES {
            return Err(Refusal(payload_too_large()).counted("PAYLOAD_TOO_LARGE"));
        }
        if req.header_value("content-type").is_some_and(|ct| !ct.to_ascii_lowercase().contains("json")) {
            return Err(Refusal::new(415, "UNSUPPORTED_MEDIA_TYPE", "send application/json"));
        }
        match serde_json::from_slice::<Value>(&req.body) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(Refusal::new(400, "INVALID_BODY", "the body must be a JSON object")),
            Err(_) => Err(Refusal::new(400, "INVALID_JSON", "the body is not valid JSON")),
        }
    }

    fn ani(&self, body: &Map<String, Value>) -> Checked<Phone> {
        match body.get("ani") {
            None | Some(Value::Null) => Err(Refusal::new(400, "MISSING_ANI", "`ani` is required")),
            Some(Value::String(raw)) => {
                normalize_phone(raw).map_err(|e| Refusal::new(400, "INVALID_ANI", &format!("`ani` is invalid: {e}")))
            }
            Some(_) => Err(Refusal::new(400, "INVALID_ANI", "`ani` must be a string")),
        }
    }

    fn correlation_id(&self, body: &Map<String, Value>) -> Checked<String> {
        match body.get("correlationId") {
            // A Data Action input left blank renders as "": absent, not invalid.
            None | Some(Value::Null) => Ok(self.new_correlation_id()),
            Some(Value::String(id)) if id.is_empty() => Ok(self.new_correlation_id()),
            Some(Value::String(id)) if is_valid_correlation_id(id) => Ok(id.clone()),
            Some(_) => Err(Refusal::new(
                400,
                "INVALID_CORRELATION_ID",
                "`correlationId` must be 1-64 letters, digits, '-' or '_'",
            )),
        }
    }

    fn new_correlation_id(&self) -> String {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.clock.random_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.clock.random_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
    }

    // ── lookup ────────────────────────────────────────────────────────────

    async fn lookup(&self, req: &Request) -> Checked<Handled> {
        self.authorise(req)?;
        let body = self.json_body(req)?;
        let phone = self.ani(&body)?;
        let correlation_id = self.correlation_id(&body)?;
        let policy = &self.config.policy;
        let entity = entity_key(&self.config.cache_key_secret, &phone);
        let kv_key = customer_kv_key(&entity);
        let entry = self.read_entry(&kv_key).await;

        // The breaker is asked only when the cache cannot answer: in half-open
        // state its permit is the single probe, and a cache hit would spend it
        // without calling the CRM, leaving the breaker stuck half-open.
        let now = self.clock.now_ms();
        let step = match first_step(entry.as_ref(), now, &policy.freshness, false) {
            FirstStep::AnswerFresh => FirstStep::AnswerFresh,
            _ => first_step(entry.as_ref(), now, &policy.freshness, self.permit().await.may_call()),
        };
        let fallback = match step {
            FirstStep::AnswerFresh => {
                let entry = entry.as_ref().expect("a fresh step has an entry");
                let age = entry.age_secs(now);
                let answer = self.answer(correlation_id, Source::Cache, &entry.record, Some(age), None);
                return Ok(lookup_answered(Response::json(200, &answer), Source::Cache, Vec::new()));
            }
            FirstStep::CallCrm => match self.call_crm_lookup(&phone, &correlation_id).await {
                Some(record) => {
                    self.store_entry(&kv_key, &record).await;
                    let answer = self.answer(correlation_id, Source::Live, &record, Some(0), None);
                    return Ok(lookup_answered(Response::json(200, &answer), Source::Live, Vec::new()));
                }
                None => fall_back(entry.as_ref(), self.clock.now_ms(), &policy.freshness),
            },
            FirstStep::FallBack(fallback) => fallback,
        };

        let refresh = self.refresh_message(&correlation_id, &entity, &phone);
        let response = match (fallback, entry) {
            (Fallback::Stale { age_secs }, Some(entry)) => {
                self.answer(correlation_id, Source::StaleCache, &entry.record, Some(age_secs), Some(WARNING_STALE))
            }
            _ => {
                let record = CustomerRecord {
                    found: false,
                    customer_id: UNKNOWN_CUSTOMER.to_owned(),
                    tier: policy.default_tier.clone(),
                };
                let mut response = self.answer(correlation_id, Source::Default, &record, None, Some(WARNING_NO_CACHE));
                // Nobody knows whether this number is a customer.
                response.found = None;
                response
            }
        };
        Ok(lookup_answered(Response::json(200, &response), response.source, vec![refresh]))
    }

    fn answer(
        &self,
        correlation_id: String,
        source: Source,
        record: &CustomerRecord,
        cache_age_seconds: Option<u64>,
        warning: Option<&str>,
    ) -> LookupAnswer {
        metrics::counter!("failsoft_edge_answers_total", "source" => source.as_str()).increment(1);
        tracing::info!(correlation_id = %correlation_id, source = source.as_str(), "lookup answered");
        LookupAnswer {
            correlation_id,
            source,
            found: Some(record.found),
            customer_id: record.customer_id.clone(),
            tier: record.tier.clone(),
            cache_age_seconds,
            warning: warning.map(str::to_owned),
        }
    }

    async fn read_entry(&self, kv_key: &str) -> Option<CacheEntry> {
        match self.kv.get(kv_key).await {
            Ok(Some(text)) => serde_json::from_str(&text).ok(),
            Ok(None) => None,
            Err(e) => {
                metrics::counter!("failsoft_edge_kv_failures_total", "op" => "get").increment(1);
                tracing::warn!(error = %e, "kv read failed; treating as a miss");
                None
            }
        }
    }

    async fn store_entry(&self, kv_key: &str, record: &CustomerRecord) {
        let entry = CacheEntry { record: record.clone(), fetched_at_ms: self.clock.now_ms() };
        let ttl = self.config.policy.freshness.last_known_horizon_ms / 1000;
        let text = serde_json::to_string(&entry).unwrap_or_default();
        if let Err(e) = self.kv.put(kv_key, &text, ttl).await {
            metrics::counter!("failsoft_edge_kv_failures_total", "op" => "put").increment(1);
            tracing::warn!(error = %e, "kv write failed; the answer stands");
        }
    }

    /// The CRM's record within the deadline, or `None` when it could not
    /// give one (the ladder then falls back).
    async fn call_crm_lookup(&self, phone: &Phone, correlation_id: &str) -> Option<CustomerRecord> {
        let request = crm::lookup_request(&self.config.crm_url, phone, correlation_id);
        let (verdict, body) = self.call(request, Operation::Lookup).await;
        match verdict {
            Verdict::Success => body.as_deref().and_then(crm::parse_customer),
            Verdict::NotFound => Some(crm::not_found_record(&self.config.policy.default_tier)),
            Verdict::Failed(_) => None,
        }
    }

    fn refresh_message(&self, correlation_id: &str, entity: &str, phone: &Phone) -> QueueMessage {
        let payload = json!({"phone": phone.as_str()});
        let envelope =
            Envelope::new(Kind::Refresh, correlation_id.to_owned(), entity.to_owned(), payload, self.clock.now_ms());
        self.message(&envelope)
    }

    fn message(&self, envelope: &Envelope<Value>) -> QueueMessage {
        QueueMessage {
            group_id: envelope.group_id().to_owned(),
            dedup_id: envelope.dedup_id(self.config.policy.freshness.fresh_ms),
            body: serde_json::to_string(envelope).unwrap_or_default(),
        }
    }

    // ── the downstream call, classified and fed to the breaker ───────────

    async fn permit(&self) -> Permit {
        let now = self.clock.now_ms();
        if self.sharing != BreakerSharing::Off {
            let stale = self.lock_breaker().synced_at_ms.is_none_or(|at| now.saturating_sub(at) >= BREAKER_SYNC_MS);
            if stale {
                let shared = match self.kv.get(BREAKER_KEY).await {
                    Ok(text) => text.and_then(|t| serde_json::from_str::<Breaker>(&t).ok()),
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the shared breaker failed");
                        None
                    }
                };
                let mut cell = self.lock_breaker();
                if let Some(shared) = shared {
                    cell.breaker.adopt(&shared, now);
                }
                cell.synced_at_ms = Some(now);
            }
        }
        let permit = self.lock_breaker().breaker.permit(now, &self.config.policy.breaker);
        if permit == Permit::Rejected {
            metrics::counter!("failsoft_edge_breaker_rejections_total").increment(1);
        }
        permit
    }

    fn lock_breaker(&self) -> std::sync::MutexGuard<'_, BreakerCell> {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an outcome, and publishes the state when the host shares it.
    async fn record(&self, healthy: bool, now: u64) {
        let (before, after) = {
            let mut cell = self.lock_breaker();
            let before = cell.breaker;
            cell.breaker.record(healthy, now, &self.config.policy.breaker);
            (before, cell.breaker)
        };
        let publish = match self.sharing {
            BreakerSharing::Off => false,
            BreakerSharing::Transitions => before.mode != after.mode,
            // A healthy call on a healthy breaker changes nothing a peer
            // needs: skipping it keeps the normal case free of KV writes.
            BreakerSharing::EveryOutcome => before.mode != after.mode || before.failures() + after.failures() > 0,
        };
        let before = before.mode;
        if before != after.mode {
            tracing::info!(from = before.as_str(), to = after.mode.as_str(), "CRM breaker changed");
        }
        if publish {
            let text = serde_json::to_string(&after).unwrap_or_default();
            if let Err(e) = self.kv.put(BREAKER_KEY, &text, BREAKER_TTL_SECS).await {
                tracing::warn!(error = %e, "publishing the breaker failed");
            }
        }
    }

    /// One attempt with the deadline; returns the verdict and a 2xx body.
    async fn call(&self, request: OutboundRequest, op: Operation) -> (Verdict, Option<Vec<u8>>) {
        let started = self.clock.now_ms();
        let outcome = self.downstream.send(request, self.config.policy.crm_deadline_ms).await;
        let finished = self.clock.now_ms();
        metrics::histogram!("failsoft_edge_crm_latency_seconds").record((finished - started) as f64 / 1000.0);
        let (verdict, body) = match &outcome {
            Ok(resp) => {
                let attempt = Attempt::Status { code: resp.status, retry_after: resp.retry_after.as_deref() };
                (classify(op, attempt), Some(resp.body.clone()))
            }
            Err(TransportError::Timeout) => (classify(op, Attempt::Timeout), None),
            Err(TransportError::Connect) => (classify(op, Attempt::Connect), None),
        };
        let healthy = match verdict {
            Verdict::Success | Verdict::NotFound => true,
            Verdict::Failed(class) => !class.counts_against_downstream(),
        };
        let label = match verdict {
            Verdict::Success | Verdict::NotFound => "success",
            Verdict::Failed(class) => class.as_str(),
        };
        metrics::counter!("failsoft_edge_crm_calls_total", "outcome" => label).increment(1);
        self.record(healthy, finished).await;
        (verdict, body)
    }

    async fn forward(&self, message: &QueueMessage, kind: Kind, deadline_ms: u64) -> Result<(), ()> {
        match self.forwarder.forward(message, deadline_ms).await {
            Ok(()) => {
                metrics::counter!("failsoft_edge_forwarded_total", "kind" => kind.as_str()).increment(1);
                Ok(())
            }
            Err(e) => {
                metrics::counter!("failsoft_edge_forward_failures_total", "kind" => kind.as_str()).increment(1);
                self.lock_stats().record_forward_failure(self.clock.now_ms());
                tracing::warn!(error = %e, kind = kind.as_str(), "forwarding to the queue failed");
                Err(())
            }
        }
    }

    // ── writes ────────────────────────────────────────────────────────────

    async fn create_case(&self, req: &Request) -> Checked<Handled> {
        self.authorise(req)?;
        let body = self.json_body(req)?;
        let phone = self.ani(&body)?;
        let correlation_id = self.correlation_id(&body)?;
        let subject = text_field(&body, "subject", MAX_SUBJECT, true)?;
        let description = text_field(&body, "description", MAX_DESCRIPTION, false)?;
        let conversation_id = text_field(&body, "conversationId", MAX_CORRELATION_ID, false)?;
        let case = json!({
            "phone": phone.as_str(),
            "subject": subject,
            "description": description,
            "conversationId": conversation_id,
            "externalRef": correlation_id,
        });

        let permit = self.permit().await;
        if permit.may_call() {
            let request = crm::create_case_request(&self.config.crm_url, &correlation_id, &case);
            let (verdict, resp_body) = self.call(request, Operation::Write).await;
            match verdict {
                Verdict::Success | Verdict::NotFound => {
                    if let Some(result) = resp_body.as_deref().and_then(crm::parse_case) {
                        return Ok(self
                            .write_answer(&correlation_id, WriteStatus::Complete, Some(result), None, None)
                            .await);
                    }
                    // A 2xx without a case id: the CRM may have created it;
                    // the queued replay with the same key settles which.
                }
                Verdict::Failed(ErrorClass::Permanent { status }) => {
                    let reason = format!("CRM_REJECTED_{status}");
                    return Ok(self.write_answer(&correlation_id, WriteStatus::Failed, None, Some(reason), None).await);
                }
                Verdict::Failed(_) => {}
            }
        }

        let entity = entity_key(&self.config.cache_key_secret, &phone);
        let payload = json!({"operation": "create_case", "case": case});
        let envelope = Envelope::new(Kind::Write, correlation_id.clone(), entity, payload, self.clock.now_ms());
        let message = self.message(&envelope);
        // Write-ahead: PENDING only once the queue has acknowledged it.
        match self.forward(&message, Kind::Write, self.config.policy.deadline_margin_ms).await {
            Ok(()) => Ok(self
                .write_answer(&correlation_id, WriteStatus::Pending, None, None, Some(WARNING_WRITE_QUEUED))
                .await),
            Err(()) => {
                let answer = WriteAnswer {
                    correlation_id,
                    status: WriteStatus::NotAccepted,
                    case_id: None,
                    result: None,
                    reason: Some("CRM_AND_QUEUE_UNAVAILABLE".to_owned()),
                    warning: Some(WARNING_NOT_ACCEPTED.to_owned()),
                };
                Ok(write_answered(Response::json(200, &answer), WriteStatus::NotAccepted))
            }
        }
    }

    /// Records a write's status for polling and answers it.
    async fn write_answer(
        &self,
        correlation_id: &str,
        status: WriteStatus,
        result: Option<Value>,
        reason: Option<String>,
        warning: Option<&str>,
    ) -> Handled {
        let stored =
            StoredResult { status, result: result.clone(), reason: reason.clone(), updated_at: self.clock.now_ms() };
        let key = format!("{RESULT_KEY_PREFIX}{correlation_id}");
        if let Err(e) = self.kv.put(&key, &serde_json::to_string(&stored).unwrap_or_default(), RESULT_TTL_SECS).await {
            tracing::warn!(error = %e, correlation_id, "storing the write's result failed");
        }
        metrics::counter!("failsoft_edge_writes_total", "status" => status_label(status)).increment(1);
        tracing::info!(correlation_id, status = status_label(status), "case answered");
        let case_id = result.as_ref().and_then(|r| r.get("caseId")).and_then(Value::as_str).map(str::to_owned);
        let answer = WriteAnswer {
            correlation_id: correlation_id.to_owned(),
            status,
            case_id,
            result,
            reason,
            warning: warning.map(str::to_owned),
        };
        write_answered(Response::json(200, &answer), status)
    }

    async fn result(&self, req: &Request, id: &str) -> Checked<Response> {
        self.authorise(req)?;
        if !is_valid_correlation_id(id) {
            return Err(Refusal::new(400, "INVALID_CORRELATION_ID", "not a correlationId"));
        }
        if let Some(answer) = self.origin_result(id).await {
            return Ok(answer);
        }
        let key = format!("{RESULT_KEY_PREFIX}{id}");
        let stored = match self.kv.get(&key).await {
            Ok(found) => found.and_then(|text| serde_json::from_str::<StoredResult>(&text).ok()),
            Err(e) => {
                tracing::warn!(error = %e, "result read failed");
                return Ok(Response::error(503, "RESULT_STORE_UNAVAILABLE", "try again shortly"));
            }
        };
        let Some(stored) = stored else {
            return Err(Refusal::new(404, "RESULT_NOT_FOUND", "no write with this correlationId"));
        };
        let case_id = stored.result.as_ref().and_then(|r| r.get("caseId")).and_then(Value::as_str).map(str::to_owned);
        Ok(Response::json(
            200,
            &WriteAnswer {
                correlation_id: id.to_owned(),
                status: stored.status,
                case_id,
                result: stored.result,
                reason: stored.reason,
                warning: (stored.status == WriteStatus::Pending).then(|| WARNING_WRITE_QUEUED.to_owned()),
            },
        ))
    }

    /// The origin's answer for a write, when an origin is configured and
    /// knows the id. Anything else (404, unreachable) falls back to the
    /// edge's own record: a write the origin has not seen yet is `PENDING`.
    async fn origin_result(&self, id: &str) -> Option<Response> {
        let (origin, secret) = (self.config.origin_url.as_deref()?, self.config.internal_secret.as_deref()?);
        let request = OutboundRequest {
            method: "GET",
            url: format!("{origin}/v1/results/{id}"),
            headers: self.signed_headers(secret, b""),
            body: None,
        };
        match self.downstream.send(request, self.config.policy.deadline_margin_ms).await {
            Ok(resp) if resp.status == 200 => {
                let answer: WriteAnswer = serde_json::from_slice(&resp.body).ok()?;
                Some(Response::json(200, &answer))
            }
            Ok(resp) if resp.status == 404 => None,
            Ok(resp) => {
                tracing::warn!(status = resp.status, "origin results API failed; answering from the edge");
                None
            }
            Err(e) => {
                tracing::warn!(error = ?e, "origin results API unreachable; answering from the edge");
                None
            }
        }
    }

    // ── the origin's cache push ──────────────────────────────────────────

    /// `PUT /v1/internal/cache/{entityKey}`: the origin pushes a record it
    /// refreshed. Signed with the internal secret; an older record never
    /// replaces a newer one.
    async fn push_cache(&self, req: &Request, entity: &str, secret: &[u8]) -> Checked<Response> {
        if req.body.len() > MAX_BODY_BYTES {
            return Err(Refusal(payload_too_large()).counted("PAYLOAD_TOO_LARGE"));
        }
        signature::verify(
            secret,
            req.header_value(signature::SIGNATURE_HEADER),
            req.header_value(signature::TIMESTAMP_HEADER),
            &req.body,
            self.clock.now_ms() / 1000,
            self.config.policy.signature_tolerance_secs,
        )
        .map_err(|e| Refusal::new(401, e.code(), "the internal signature is missing, wrong or expired"))?;
        if entity.len() != 64 || !entity.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Refusal::new(400, "INVALID_ENTITY_KEY", "the key must be 64 hex characters"));
        }
        let pushed: CacheEntry = serde_json::from_slice(&req.body)
            .map_err(|_| Refusal::new(400, "INVALID_BODY", "the body must be a cache entry"))?;
        let kv_key = customer_kv_key(entity);
        if let Some(current) = self.read_entry(&kv_key).await
            && current.fetched_at_ms >= pushed.fetched_at_ms
        {
            return Ok(Response::json(200, &json!({"stored": false, "reason": "newer record cached"})));
        }
        let ttl = self.config.policy.freshness.last_known_horizon_ms / 1000;
        let text = serde_json::to_string(&pushed).unwrap_or_default();
        match self.kv.put(&kv_key, &text, ttl).await {
            Ok(()) => Ok(Response::json(200, &json!({"stored": true}))),
            Err(e) => {
                tracing::warn!(error = %e, "storing a pushed record failed");
                Ok(Response::error(503, "KV_UNAVAILABLE", "the record could not be stored; retry"))
            }
        }
    }

    // ── the CRM's change webhook ─────────────────────────────────────────

    async fn crm_update(&self, req: &Request) -> Checked<Response> {
        if req.body.len() > MAX_BODY_BYTES {
            return Err(Refusal(payload_too_large()).counted("PAYLOAD_TOO_LARGE"));
        }
        let now_secs = self.clock.now_ms() / 1000;
        signature::verify(
            &self.config.webhook_secret,
            req.header_value(signature::SIGNATURE_HEADER),
            req.header_value(signature::TIMESTAMP_HEADER),
            &req.body,
            now_secs,
            self.config.policy.signature_tolerance_secs,
        )
        .map_err(|e| Refusal::new(401, e.code(), "the webhook signature is missing, wrong or expired"))?;
        let change: CrmChange = serde_json::from_slice(&req.body)
            .map_err(|_| Refusal::new(400, "INVALID_JSON", "the body is not a change event"))?;
        let phone = match change.phone {
            Some(Value::String(raw)) => normalize_phone(&raw)
                .map_err(|e| Refusal::new(400, "INVALID_PHONE", &format!("`phone` is invalid: {e}")))?,
            _ => return Err(Refusal::new(400, "MISSING_PHONE", "`phone` is required")),
        };
        let Some(field) = change.field_changed else {
            return Err(Refusal::new(400, "MISSING_FIELD_CHANGED", "`fieldChanged` is required"));
        };
        if !ROUTING_FIELDS.contains(&field.as_str()) {
            return Ok(Response::json(200, &json!({"invalidated": false})));
        }
        let kv_key = customer_kv_key(&entity_key(&self.config.cache_key_secret, &phone));
        match self.kv.delete(&kv_key).await {
            Ok(()) => {
                metrics::counter!("failsoft_edge_invalidations_total").increment(1);
                tracing::info!(field = field.as_str(), "cached record invalidated");
                Ok(Response::json(200, &json!({"invalidated": true})))
            }
            // The CRM retries a 5xx, which is what we want: the record must go.
            Err(e) => {
                tracing::warn!(error = %e, "invalidation failed");
                Ok(Response::error(503, "KV_UNAVAILABLE", "the cache could not be invalidated; retry"))
            }
        }
    }
}

impl Refusal {
    fn with_challenge(mut self) -> Self {
        self.0 = self.0.with_header("www-authenticate", "Bearer, Basic realm=\"failsoft\"");
        self
    }

    fn counted(self, code: &str) -> Self {
        metrics::counter!("failsoft_edge_rejected_total", "code" => code.to_owned()).increment(1);
        self
    }
}

fn lookup_answered(response: Response, source: Source, after: Vec<QueueMessage>) -> Handled {
    Handled::new(response, after, Some(Answer::Lookup(source)))
}

fn write_answered(response: Response, status: WriteStatus) -> Handled {
    let outcome = match status {
        WriteStatus::Complete => WriteOutcome::Complete,
        WriteStatus::Pending => WriteOutcome::Pending,
        WriteStatus::Failed => WriteOutcome::Failed,
        WriteStatus::NotAccepted => WriteOutcome::NotAccepted,
    };
    Handled::new(response, Vec::new(), Some(Answer::Write(outcome)))
}

fn text_field(body: &Map<String, Value>, name: &str, max: usize, required: bool) -> Checked<Option<String>> {
    let code = |prefix: &str| format!("{prefix}_{}", to_screaming(name));
    match body.get(name) {
        None | Some(Value::Null) if required => {
            Err(Refusal::new(400, &code("MISSING"), &format!("`{name}` is required")))
        }
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if required && s.trim().is_empty() => {
            Err(Refusal::new(400, &code("MISSING"), &format!("`{name}` must not be empty")))
        }
        Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s.clone())),
        Some(_) => {
            Err(Refusal::new(400, &code("INVALID"), &format!("`{name}` must be a string of at most {max} characters")))
        }
    }
}

fn to_screaming(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn status_label(status: WriteStatus) -> &'static str {
    match status {
        WriteStatus::Complete => "complete",
        WriteStatus::Pending => "pending",
        WriteStatus::Failed => "failed",
        WriteStatus::NotAccepted => "not_accepted",
    }
}
