//! Delivering one message: read the envelope, ask the breaker and the
//! pacer, call the CRM, and turn what happened into an [`Outcome`] the
//! consumer carries out on the queue. Every decision is the policy core's
//! (`classify`, `Breaker`, `RetryPolicy::after_failure`); this module only
//! sequences them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use failsoft_shared::breaker::{self, Breaker, Mode, Permit};
use failsoft_shared::cache::CacheEntry;
use failsoft_shared::envelope::{ENVELOPE_VERSION, Envelope, Kind, is_valid_correlation_id};
use failsoft_shared::error_class::{ErrorClass, Verdict};
use failsoft_shared::replay::ReplayRate;
use failsoft_shared::retry::{DeadLetterReason, RetryDecision};
use serde_json::Value;

use crate::config::WorkerConfig;
use crate::deliver::crm::{self, Reply};
use crate::deliver::edge_push::EdgePush;
use crate::deliver::event_sink::EventSink;
use crate::deliver::ports::{Clock, CrmCalls, Records, SystemClock};
use crate::deliver::{event as event_delivery, write_once};
use crate::genesys_events::{self, GenesysEvent};
use crate::queue::failures::Failures;
use crate::queue::received::Received;
use crate::store::results::{RefreshRecord, StoreError};
use failsoft_shared::mapping::LookupAnswer;

/// What the consumer does with a message after a delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Delivered now or before: delete it.
    Done,
    /// Failed attempt number `attempt` (0-based): make it visible again
    /// after the backoff.
    Retry { delay_ms: u64, attempt: u32, class: ErrorClass, status: Option<u16> },
    /// Not attempted (breaker open, another worker's claim, settling):
    /// make it visible again after `delay_ms`, attempts not counted.
    Defer { delay_ms: u64, why: &'static str },
    /// Cannot be delivered: to the dead-letter queue.
    DeadLetter(DeadLetter),
}

/// Why a message is dead-lettered, for the DLQ attributes and the alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub reason: String,
    /// `permanent`, `transient`, `throttled` or `invalid` (a bad message).
    pub error_class: &'static str,
    pub last_status: Option<u16>,
    pub correlation_id: Option<String>,
    pub kind: &'static str,
}

/// What one attempt at the CRM came to, before the retry decision.
#[derive(Debug)]
pub enum Attempted {
    /// Delivered and recorded.
    Delivered,
    /// Another attempt delivered or dead-lettered it already.
    AlreadyDone,
    /// Another attempt holds the write's claim.
    Busy { retry_in_ms: u64 },
    /// The CRM failed.
    Crm { class: ErrorClass, status: Option<u16> },
    /// Our own store failed (not the CRM's fault: the breaker is not told).
    Store(StoreError),
    /// The message can never be delivered (bad payload).
    Invalid(String),
}

/// Everything a delivery needs, shared by all of the worker's tasks.
pub struct Delivery {
    pub config: WorkerConfig,
    pub crm: Arc<dyn CrmCalls>,
    pub store: Arc<dyn Records>,
    /// Wall-clock time and randomness: the system's, or a test's.
    pub clock: Arc<dyn Clock>,
    pub edge: Option<EdgePush>,
    /// `FAILSOFT_EVENTS_URL`; `None`: events are dead-lettered.
    pub events: Option<EventSink>,
    /// This process, as the owner of write claims.
    pub owner: String,
    breaker: Mutex<Breaker>,
    rate: Mutex<ReplayRate>,
    /// Each message's failed attempts, which the backoff doubles on.
    failures: Failures,
    epoch: Instant,
}

/// Where the consumer's receive loop stands with the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Closed: receive.
    Receive,
    /// Open (or a probe is out): wait this long and ask again.
    Wait(Duration),
    /// The cool-down is over: send the one probe now.
    Probe,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// While a probe is out, how often the receive loop looks at the breaker.
const HALF_OPEN_POLL: Duration = Duration::from_millis(100);

impl Delivery {
    pub fn new(
        config: WorkerConfig,
        crm: impl CrmCalls + 'static,
        store: impl Records + 'static,
        edge: Option<EdgePush>,
        owner: String,
    ) -> Self {
        let rate = ReplayRate::new(config.replay_rate_max).with_known_limit(config.crm_rate_limit);
        Self {
            config,
            crm: Arc::new(crm),
            store: Arc::new(store),
            clock: Arc::new(SystemClock),
            edge,
            events: None,
            owner,
            breaker: Mutex::new(Breaker::default()),
            rate: Mutex::new(rate),
            failures: Failures::default(),
            epoch: Instant::now(),
        }
    }

    /// Delivers events to `sink` (`FAILSOFT_EVENTS_URL`). They share the
    /// breaker and the replay pacing with the CRM's calls.
    pub fn with_events(mut self, sink: Option<EventSink>) -> Self {
        self.events = sink;
        self
    }

    /// Takes time and randomness from `clock` (tests move it by hand).
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Milliseconds since the Unix epoch, by this delivery's clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub fn breaker_mode(&self) -> Mode {
        lock(&self.breaker).mode
    }

    pub fn rate(&self) -> f64 {
        lock(&self.rate).rate()
    }

    /// The replay's rate now and the ceiling it ramps to.
    pub fn pace(&self) -> (f64, f64) {
        let rate = lock(&self.rate);
        (rate.rate(), rate.ceiling())
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Whether the receive loop may receive, must wait, or must probe.
    pub fn gate(&self) -> Gate {
        match lock(&self.breaker).gate(self.now_ms(), &self.config.breaker) {
            breaker::Gate::Proceed => Gate::Receive,
            breaker::Gate::Wait { ms } => Gate::Wait(Duration::from_millis(ms)),
            breaker::Gate::Probe => Gate::Probe,
            breaker::Gate::ProbeOutstanding => Gate::Wait(HALF_OPEN_POLL),
        }
    }

    /// Sends the breaker's probe (a cheap read, with a read's deadline: a
    /// CRM slower than that is not back) and records its outcome as of when
    /// it was sent: probes start one cool-down apart, so a probe that hung
    /// for longer is followed at once. When a hang ends, the probe it held
    /// comes back failed, and the next one finds the CRM back without
    /// waiting a whole cool-down more.
    pub async fn probe(&self) {
        let sent_ms = self.now_ms();
        let reply = self.crm.probe(Duration::from_millis(self.config.policy.crm_deadline_ms)).await;
        tracing::info!(healthy = reply.healthy(), status = reply.status, "breaker probe");
        self.observe_at(&reply, sent_ms);
    }

    fn processing_limit(&self) -> Duration {
        Duration::from_secs(self.config.policy.processing_limit_secs)
    }

    /// Feeds one CRM reply to the breaker and the pacer.
    pub fn observe(&self, reply: &Reply) {
        self.observe_at(reply, self.now_ms());
    }

    /// [`Delivery::observe`] as of `now` (ms since the epoch).
    fn observe_at(&self, reply: &Reply, now: u64) {
        let transition = lock(&self.breaker).record(reply.healthy(), now, &self.config.breaker);
        let mut rate = lock(&self.rate);
        match transition.map(|t| t.to) {
            Some(Mode::Closed) => {
                tracing::info!("breaker closed: the CRM is back; replay restarts slowly");
                rate.on_recovery(self.now_us());
            }
            Some(Mode::Open { until_ms }) => {
                let wait_ms = until_ms.saturating_sub(self.now_ms());
                tracing::warn!(next_probe_in_ms = wait_ms, "breaker open: deliveries paused");
            }
            Some(Mode::HalfOpen { .. }) | None => {}
        }
        let now_us = self.now_us();
        if let Some(quota) = &reply.quota {
            rate.on_quota(quota, now_us);
        }
        match reply.verdict {
            Verdict::Success | Verdict::NotFound => rate.on_success(),
            Verdict::Failed(ErrorClass::Throttled { retry_after_secs }) => {
                crate::telemetry::crm_throttled();
                rate.on_throttled(retry_after_secs.map(|s| s.saturating_mul(1000)), now_us);
            }
            Verdict::Failed(class) if class.counts_against_downstream() => rate.on_overload(),
            Verdict::Failed(_) => {}
        }
    }

    /// Waits for the replay pacer's slots for `calls` CRM calls made back
    /// to back: a write that looks before it creates spends two of the
    /// CRM's limit.
    pub(crate) async fn paced(&self, calls: u32) {
        loop {
            let reserved = lock(&self.rate).reserve_calls(self.now_us(), calls);
            match reserved {
                Ok(wait) => {
                    if wait > 0 {
                        tokio::time::sleep(Duration::from_micros(wait)).await;
                    }
                    return;
                }
                Err(retry) => tokio::time::sleep(Duration::from_micros(retry)).await,
            }
        }
    }

    /// Delivers one message and says what to do with it.
    pub async fn deliver(&self, message: &Received) -> Outcome {
        let outcome = self.try_deliver(message).await;
        if matches!(outcome, Outcome::Done | Outcome::DeadLetter(_)) {
            self.failures.forget(&message.message_id);
        }
        outcome
    }

    async fn try_deliver(&self, message: &Received) -> Outcome {
        let envelope = match read(message, self.now_ms()) {
            Ok(envelope) => envelope,
            Err(reason) => {
                let correlation_id = serde_json::from_str::<Value>(&message.body)
                    .ok()
                    .and_then(|v| v.get("correlationId").and_then(Value::as_str).map(str::to_owned))
                    .filter(|id| is_valid_correlation_id(id));
                return Outcome::DeadLetter(DeadLetter {
                    reason: reason.to_owned(),
                    error_class: "invalid",
                    last_status: None,
                    correlation_id,
                    kind: "unknown",
                });
            }
        };
        let kind = envelope.kind.as_str();
        tracing::debug!(
            message_id = %message.message_id,
            correlation_id = %envelope.correlation_id,
            kind,
            receives = message.receive_count,
            "delivering"
        );
        let dead = |reason: String, error_class, last_status| {
            Outcome::DeadLetter(DeadLetter {
                reason,
                error_class,
                last_status,
                correlation_id: Some(envelope.correlation_id.clone()),
                kind,
            })
        };
        if envelope.kind == Kind::Event && self.events.is_none() {
            // Nowhere to deliver it: an operator decides, with the message
            // kept in the DLQ (replayable once FAILSOFT_EVENTS_URL is set).
            return dead("EVENTS_NOT_CONFIGURED".to_owned(), "permanent", None);
        }

        let now = self.now_ms();
        if envelope.kind == Kind::Write {
            // SQS's own send time: the edge's clock may be skewed.
            let enqueued_at = message.sent_ms.unwrap_or(envelope.submitted_at);
            let settled_at = enqueued_at.saturating_add(self.config.write_settle_ms);
            if now < settled_at {
                return Outcome::Defer { delay_ms: settled_at - now, why: "settling" };
            }
        }

        let permit = lock(&self.breaker).permit(now, &self.config.breaker);
        if permit == Permit::Rejected {
            let delay_ms = match self.breaker_mode() {
                Mode::Open { until_ms } => until_ms.saturating_sub(now),
                _ => self.config.breaker.cool_down_ms,
            };
            return Outcome::Defer { delay_ms, why: "breaker_open" };
        }
        // A write that may look before it creates makes two calls.
        let calls = if envelope.kind == Kind::Write && self.config.can_find_cases { 2 } else { 1 };
        self.paced(calls).await;

        let deadline = Instant::now() + self.processing_limit();
        let attempted = match (envelope.kind, &self.events) {
            (Kind::Refresh, _) => self.refresh(&envelope, deadline).await,
            (Kind::Write, _) => write_once::deliver(self, &envelope, deadline).await,
            (Kind::Event, Some(sink)) => event_delivery::deliver(self, sink, &envelope, deadline).await,
            (Kind::Event, None) => unreachable!("dead-lettered EVENTS_NOT_CONFIGURED above"),
        };
        let now = self.now_ms();
        match attempted {
            Attempted::Delivered | Attempted::AlreadyDone => Outcome::Done,
            Attempted::Busy { retry_in_ms } => Outcome::Defer { delay_ms: retry_in_ms, why: "claimed_elsewhere" },
            Attempted::Invalid(reason) => dead(reason, "invalid", None),
            Attempted::Store(e) if e.denied => {
                // A configuration error (crate::access logged and alerted it):
                // handed back, no attempt counted, never dead-lettered for it.
                tracing::debug!(error = %e, correlation_id = %envelope.correlation_id, "store denied; handed back");
                Outcome::Defer { delay_ms: crate::access::DENIED_RETRY_MS, why: "access_denied" }
            }
            Attempted::Store(e) => {
                tracing::warn!(error = %e, correlation_id = %envelope.correlation_id, "store failed; retrying later");
                self.retry(ErrorClass::Transient, None, message, &envelope, now, dead)
            }
            Attempted::Crm { class, status } => self.retry(class, status, message, &envelope, now, dead),
        }
    }

    fn retry(
        &self,
        class: ErrorClass,
        status: Option<u16>,
        message: &Received,
        envelope: &Envelope<Value>,
        now: u64,
        dead: impl Fn(String, &'static str, Option<u16>) -> Outcome,
    ) -> Outcome {
        // Failed attempts, not receives: see `failures`.
        let attempt = self.failures.record(&message.message_id);
        let decision =
            self.config.policy.retry.after_failure(class, attempt, envelope.submitted_at, now, self.clock.random_u64());
        match decision {
            RetryDecision::RetryAfter { delay_ms } => Outcome::Retry { delay_ms, attempt, class, status },
            RetryDecision::DeadLetter(DeadLetterReason::Permanent { status }) => {
                let downstream = if envelope.kind == Kind::Event { "EVENTS" } else { "CRM" };
                dead(format!("{downstream}_REJECTED_{status}"), class.as_str(), Some(status))
            }
            RetryDecision::DeadLetter(DeadLetterReason::BudgetExhausted) => {
                dead("RETRY_BUDGET_EXHAUSTED".to_owned(), class.as_str(), status)
            }
        }
    }

    /// The time left before `deadline`, at least a millisecond.
    pub fn remaining(deadline: Instant) -> Duration {
        deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))
    }

    /// A refresh: fetch the record, keep it as last-known, record the
    /// result, push it to the edge.
    async fn refresh(&self, envelope: &Envelope<Value>, deadline: Instant) -> Attempted {
        let Some(phone) = envelope.payload.get("phone").and_then(Value::as_str) else {
            return Attempted::Invalid("MISSING_PHONE".to_owned());
        };
        let reply = self.crm.lookup(phone, &envelope.correlation_id, Self::remaining(deadline)).await;
        self.observe(&reply);
        let record = match reply.verdict {
            Verdict::Success => match self.crm.read_customer(&reply.body, &self.config.policy.default_tier) {
                LookupAnswer::Found(record) => record,
                LookupAnswer::NotFound => crm::not_found_record(&self.config.policy.default_tier),
                LookupAnswer::Unreadable => {
                    return Attempted::Crm { class: ErrorClass::Transient, status: reply.status };
                }
            },
            Verdict::NotFound => crm::not_found_record(&self.config.policy.default_tier),
            Verdict::Failed(class) => return Attempted::Crm { class, status: reply.status },
        };
        let now = self.now_ms();
        let entry = CacheEntry { record, fetched_at_ms: now };
        let horizon = self.config.policy.freshness.last_known_horizon_ms;
        // With the message's stamp: its deduplication window, for the drill.
        let refresh = RefreshRecord {
            entity_key: &envelope.entity_key,
            correlation_id: &envelope.correlation_id,
            submitted_at_ms: envelope.submitted_at,
        };
        if let Err(e) = self.store.record_refresh(&refresh, &entry, horizon, now).await {
            return Attempted::Store(e);
        }
        if let Some(edge) = &self.edge {
            edge.push_later(&envelope.entity_key, &entry).await;
        }
        tracing::info!(correlation_id = %envelope.correlation_id, kind = "refresh", "delivered");
        Attempted::Delivered
    }
}

/// The envelope of a received message, or why it has none. A raw
/// EventBridge event (an EventBridge rule with the queue as its target puts
/// the event itself on the queue) becomes the same `kind: event` envelope
/// as one `POST /v1/events` queued, submitted when SQS took it (or `now_ms`
/// when SQS did not say).
pub fn read(message: &Received, now_ms: u64) -> Result<Envelope<Value>, &'static str> {
    let body: Value = serde_json::from_str(&message.body).map_err(|_| "MALFORMED_ENVELOPE")?;
    if genesys_events::is_eventbridge_event(&body) {
        let event = GenesysEvent::from_eventbridge(&body).map_err(|_| "INVALID_EVENT")?;
        return check(event.envelope(message.sent_ms.unwrap_or(now_ms)));
    }
    check(serde_json::from_value(body).map_err(|_| "MALFORMED_ENVELOPE")?)
}

/// The envelope of a message body, or why it is not one.
pub fn parse(body: &str) -> Result<Envelope<Value>, &'static str> {
    check(serde_json::from_str(body).map_err(|_| "MALFORMED_ENVELOPE")?)
}

/// An envelope this build can deliver, or why not.
fn check(envelope: Envelope<Value>) -> Result<Envelope<Value>, &'static str> {
    if envelope.v != ENVELOPE_VERSION {
        return Err("UNSUPPORTED_ENVELOPE_VERSION");
    }
    if !is_valid_correlation_id(&envelope.correlation_id) {
        return Err("INVALID_CORRELATION_ID");
    }
    if envelope.entity_key.is_empty() || envelope.entity_key.len() > 128 {
        return Err("INVALID_ENTITY_KEY");
    }
    Ok(envelope)
}

/// The edge's rule for a correlationId: 1-64 letters, digits, '-' or '_'.
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_edges_envelopes_and_refuses_the_rest() {
        let ok = r#"{"v":1,"kind":"write","correlationId":"c-1","entityKey":"ab","payload":{},"submittedAt":9}"#;
        assert_eq!(parse(ok).unwrap().kind, Kind::Write);
        assert_eq!(parse("not json").unwrap_err(), "MALFORMED_ENVELOPE");
        let v2 = ok.replace(r#""v":1"#, r#""v":2"#);
        assert_eq!(parse(&v2).unwrap_err(), "UNSUPPORTED_ENVELOPE_VERSION");
        let bad_id = ok.replace("c-1", "c 1");
        assert_eq!(parse(&bad_id).unwrap_err(), "INVALID_CORRELATION_ID");
        let kind = ok.replace("write", "launch");
        assert_eq!(parse(&kind).unwrap_err(), "MALFORMED_ENVELOPE");
    }

    fn received(body: String) -> Received {
        Received {
            message_id: "m-1".into(),
            receipt: "r-1".into(),
            body,
            group_id: "genesys-events".into(),
            receive_count: 1,
            first_received_ms: None,
            sent_ms: Some(77),
        }
    }

    #[test]
    fn a_raw_eventbridge_event_reads_as_an_event_envelope() {
        let event = json!({
            "version": "0", "id": "3f1e2d4c-0000-4000-8000-00000000abcd",
            "detail-type": "v2.detail.events.conversation.6c8b3a1e-52b4-4b8e-9c61-0f2a7d4e9b10.customer.start",
            "source": "aws.partner/genesys.com/cloud/9f8e7d6c-1234-4abc-9def-0123456789ab/failsoft",
            "account": "123456789012", "time": "2026-11-28T10:00:00Z", "region": "eu-west-1", "resources": [],
            "detail": {"topicName": "v2.detail.events.conversation.6c8b3a1e-52b4-4b8e-9c61-0f2a7d4e9b10.customer.start",
                       "version": "2", "eventBody": {"conversationId": "6c8b3a1e-52b4-4b8e-9c61-0f2a7d4e9b10"},
                       "metadata": {}}
        });
        let envelope = read(&received(event.to_string()), 0).unwrap();
        assert_eq!(envelope.kind, Kind::Event);
        assert_eq!(envelope.correlation_id, "3f1e2d4c-0000-4000-8000-00000000abcd");
        assert_eq!(envelope.entity_key, "6c8b3a1e-52b4-4b8e-9c61-0f2a7d4e9b10");
        assert_eq!(envelope.submitted_at, 77, "the budget counts from SQS's send time");

        let mut bad_id = event.clone();
        bad_id["id"] = json!("has spaces in it");
        assert_eq!(read(&received(bad_id.to_string()), 0).unwrap_err(), "INVALID_EVENT");
        let mut odd_id = event;
        odd_id["id"] = json!("x:y");
        assert_eq!(read(&received(odd_id.to_string()), 0).unwrap_err(), "INVALID_EVENT");
        assert_eq!(read(&received(r#"{"hello":1}"#.into()), 0).unwrap_err(), "MALFORMED_ENVELOPE");
    }
}
