//! The downstream call, classified and fed to the breaker; the breaker's
//! permit and its sharing through KV; forwarding to the queue.

use failsoft_shared::breaker::{Breaker, BreakerSharing, Permit};
use failsoft_shared::edge_stats::QueueSend;
use failsoft_shared::envelope::Kind;
use failsoft_shared::error_class::{Attempt, ErrorClass, Verdict};
use failsoft_shared::mapping::template::RenderError;
use failsoft_shared::mapping::{CrmRequest, Mapping, Op, Token};

use super::Facade;
use crate::ports::{Clock, Downstream, Forwarder, Kept, Kv, OutboundRequest, QueueMessage, TransportError};

/// KV key of the CRM's OAuth token, by mapping name (never a secret in a key).
fn token_key(mapping: &str) -> String {
    format!("crm-token:v1:{mapping}")
}

fn read_kept_token(text: &str) -> Option<Token> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    Some(Token {
        access_token: value.get("accessToken")?.as_str()?.to_owned(),
        expires_at_s: value.get("expiresAtS")?.as_u64()?,
    })
}

/// KV key of the breaker state shared between instances.
pub const BREAKER_KEY: &str = "breaker:v1";
/// The shared breaker state outlives any cool-down; KV needs at least 60 s.
const BREAKER_TTL_SECS: u64 = 3_600;

/// The instance's breaker and when it last read the shared copy.
pub(super) struct BreakerCell {
    pub(super) breaker: Breaker,
    pub(super) synced_at_ms: Option<u64>,
}

impl BreakerCell {
    pub(super) fn new() -> Self {
        Self { breaker: Breaker::default(), synced_at_ms: None }
    }
}

impl<K: Kv, D: Downstream, F: Forwarder, C: Clock> Facade<K, D, F, C> {
    /// Whether a CRM call may go now, after adopting the shared state when
    /// the host shares the breaker and its copy is due a re-read.
    pub(super) async fn permit(&self) -> Permit {
        let now = self.clock.now_ms();
        if self.sharing.should_sync(self.lock_breaker().synced_at_ms, now) {
            let shared = self.read_shared().await;
            let mut cell = self.lock_breaker();
            if let Some(shared) = shared {
                cell.breaker.adopt(&shared, now);
            }
            cell.synced_at_ms = Some(now);
        }
        let (permit, state) = {
            let mut cell = self.lock_breaker();
            (cell.breaker.permit(now, &self.config.policy.breaker), cell.breaker)
        };
        if permit == Permit::Rejected {
            metrics::counter!("failsoft_edge_breaker_rejections_total").increment(1);
        }
        // Instances that share every outcome (Spin: one per request) see the
        // probe taken, so one probe goes out per cool-down, not one each.
        if permit == Permit::Probe && self.sharing == BreakerSharing::EveryOutcome {
            let text = serde_json::to_string(&state).unwrap_or_default();
            if let Err(e) = self.put_on_answer_path(BREAKER_KEY, &text, BREAKER_TTL_SECS).await {
                tracing::warn!(error = %e, "publishing the probe failed");
            }
        }
        permit
    }

    pub(super) fn lock_breaker(&self) -> std::sync::MutexGuard<'_, BreakerCell> {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The breaker state peers published, if any.
    async fn read_shared(&self) -> Option<Breaker> {
        match self.kv.get(BREAKER_KEY).await {
            Ok(text) => text.and_then(|t| serde_json::from_str::<Breaker>(&t).ok()),
            Err(e) => {
                tracing::warn!(error = %e, "reading the shared breaker failed");
                None
            }
        }
    }

    /// Records an outcome, and publishes the state when the host shares it.
    /// Instances that share every outcome (Spin) apply it to the freshest
    /// shared state: a call may take the whole deadline, in which time peers
    /// may have tripped the breaker, and the copy read before the call must
    /// not overwrite that trip (a call that began before the breaker opened
    /// is then ignored, as the breaker ignores such outcomes).
    async fn record(&self, healthy: bool, now: u64) {
        if self.sharing == BreakerSharing::EveryOutcome
            && let Some(shared) = self.read_shared().await
        {
            self.lock_breaker().breaker = shared;
        }
        let (transition, failures_before, after) = {
            let mut cell = self.lock_breaker();
            let failures_before = cell.breaker.failures();
            let transition = cell.breaker.record(healthy, now, &self.config.policy.breaker);
            (transition, failures_before, cell.breaker)
        };
        if let Some(t) = transition {
            tracing::info!(from = t.from.as_str(), to = t.to.as_str(), "CRM breaker changed");
        }
        if self.sharing.should_publish(transition, failures_before, after.failures()) {
            let text = serde_json::to_string(&after).unwrap_or_default();
            if let Err(e) = self.kv.put(BREAKER_KEY, &text, BREAKER_TTL_SECS).await {
                tracing::warn!(error = %e, "publishing the breaker failed");
            }
        }
    }

    /// One call of `op` through the CRM's mapping within the CRM deadline
    /// (a token fetch included: it shares the deadline); returns the
    /// verdict and the answer's body. A token the CRM refuses is fetched
    /// anew once.
    pub(super) async fn call(
        &self,
        op: Op,
        build: impl Fn(&Mapping, &str, Option<&str>) -> Result<CrmRequest, RenderError>,
    ) -> (Verdict, Option<Vec<u8>>) {
        let started = self.clock.now_ms();
        let deadline = self.config.policy.crm_deadline_ms;
        let mapping = &self.config.crm_mapping;
        let mut renewed = false;
        let (verdict, body) = loop {
            let left = deadline.saturating_sub(self.clock.now_ms().saturating_sub(started));
            let token = match mapping.uses_token() {
                true => match self.crm_token(renewed, left).await {
                    Some(token) => Some(token),
                    None => break (Verdict::Failed(ErrorClass::Transient), None),
                },
                false => None,
            };
            let request = match build(mapping, &self.config.crm_url, token.as_deref()) {
                Ok(request) => request,
                Err(e) => {
                    tracing::error!(operation = op.as_str(), error = %e, "the CRM mapping cannot express this call");
                    // Nothing was sent: says nothing of the CRM's health.
                    return (Verdict::Failed(ErrorClass::Permanent { status: 400 }), None);
                }
            };
            let left = deadline.saturating_sub(self.clock.now_ms().saturating_sub(started));
            let outcome = self.downstream.send(outbound(request), left).await;
            match &outcome {
                Ok(resp) if !renewed && mapping.token_refused(resp.status) => renewed = true,
                Ok(resp) => {
                    let attempt = Attempt::Status { code: resp.status, retry_after: resp.retry_after.as_deref() };
                    break (mapping.classify(op, attempt, &resp.body), Some(resp.body.clone()));
                }
                Err(TransportError::Timeout) => break (mapping.classify(op, Attempt::Timeout, b""), None),
                Err(TransportError::Connect) => break (mapping.classify(op, Attempt::Connect, b""), None),
            }
        };
        let finished = self.clock.now_ms();
        metrics::histogram!("failsoft_edge_crm_latency_seconds").record((finished - started) as f64 / 1000.0);
        let label = match verdict {
            Verdict::Success | Verdict::NotFound => "success",
            Verdict::Failed(class) => class.as_str(),
        };
        metrics::counter!("failsoft_edge_crm_calls_total", "outcome" => label).increment(1);
        self.record(verdict.is_healthy(), finished).await;
        (verdict, body)
    }

    /// The CRM's OAuth token: this instance's, else the one peers keep in
    /// KV, else a new one from the token endpoint (kept in KV until a
    /// minute before it expires). `None` when none could be had in time.
    async fn crm_token(&self, renew: bool, deadline_ms: u64) -> Option<String> {
        let now_s = self.clock.now_ms() / 1000;
        let key = token_key(self.config.crm_mapping.name());
        if !renew {
            if let Some(token) = self.lock_token().clone().filter(|t| !t.is_due(now_s)) {
                return Some(token.access_token);
            }
            let kept = self.kv.get(&key).await.ok().flatten().and_then(|text| read_kept_token(&text));
            if let Some(token) = kept.filter(|t| !t.is_due(now_s)) {
                *self.lock_token() = Some(token.clone());
                return Some(token.access_token);
            }
        }
        let request = self.config.crm_mapping.token_request(&self.config.crm_url)?;
        let fetched = match self.downstream.send(outbound(request), deadline_ms).await {
            Ok(resp) if (200..300).contains(&resp.status) => self.config.crm_mapping.read_token(&resp.body, now_s),
            Ok(resp) => {
                tracing::error!(status = resp.status, "the CRM's token endpoint refused the client credentials");
                None
            }
            Err(_) => None,
        };
        let Some(token) = fetched else {
            metrics::counter!("failsoft_edge_crm_token_failures_total").increment(1);
            return None;
        };
        let ttl = token.expires_at_s.saturating_sub(now_s + 60).max(60);
        let text = serde_json::json!({"accessToken": token.access_token, "expiresAtS": token.expires_at_s}).to_string();
        if let Err(e) = self.kv.put(&key, &text, ttl).await {
            tracing::warn!(error = %e, "keeping the CRM token failed");
        }
        *self.lock_token() = Some(token.clone());
        Some(token.access_token)
    }

    fn lock_token(&self) -> std::sync::MutexGuard<'_, Option<Token>> {
        self.crm_token.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forwards one message to the queue within `deadline_ms`, its share
    /// of the deadline; a write may be kept in the host's outbox instead.
    /// The send is timed and counted here (a failure logged), and the
    /// caller decides what it means.
    pub(super) async fn forward(&self, message: &QueueMessage, kind: Kind, deadline_ms: u64) -> Sent {
        let started = self.clock.now_ms();
        let outcome = match kind {
            Kind::Write => self.forwarder.forward_write(message, deadline_ms).await,
            _ => self.forwarder.forward(message, deadline_ms).await.map(|()| Kept::Queue),
        };
        let finished = self.clock.now_ms();
        let sent =
            Sent { taken: outcome.is_ok(), outbox: outcome == Ok(Kept::Outbox), ms: finished.saturating_sub(started) };
        metrics::histogram!("failsoft_edge_queue_send_seconds", "kind" => kind.as_str())
            .record(sent.ms as f64 / 1000.0);
        let send = QueueSend { ms: sent.ms, share_ms: deadline_ms, taken: sent.taken };
        self.lock_stats().record_queue_send(send, finished);
        match outcome {
            Ok(_) => metrics::counter!("failsoft_edge_forwarded_total", "kind" => kind.as_str()).increment(1),
            Err(e) => {
                metrics::counter!("failsoft_edge_forward_failures_total", "kind" => kind.as_str()).increment(1);
                let slow = sent.ms >= deadline_ms;
                tracing::warn!(error = %e, kind = kind.as_str(), ms = sent.ms, slow, "forwarding to the queue failed");
            }
        }
        sent
    }
}

/// A mapped call as the host's HTTP port takes it.
fn outbound(request: CrmRequest) -> OutboundRequest {
    OutboundRequest { method: request.method, url: request.url, headers: request.headers, body: request.body }
}

/// How one `SendMessage` went.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sent {
    /// Whether the queue took the message, or the outbox kept it.
    pub taken: bool,
    /// Whether it is the outbox that kept it.
    pub outbox: bool,
    /// How long the send took, milliseconds.
    pub ms: u64,
}

impl Sent {
    /// The `Server-Timing` entry a write's answer carries
    /// (`queue;dur=12`): what its `SendMessage` took, for the drill and
    /// anyone watching a slow queue from the caller's side.
    /// An outboxed write says so (`queue;dur=500, outbox`).
    pub(super) fn server_timing(self) -> String {
        match self.outbox {
            true => format!("queue;dur={}, outbox", self.ms),
            false => format!("queue;dur={}", self.ms),
        }
    }
}
