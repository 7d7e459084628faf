//! The downstream call, classified and fed to the breaker; the breaker's
//! permit and its sharing through KV; forwarding to the queue.

use failsoft_shared::breaker::{Breaker, BreakerSharing, Permit};
use failsoft_shared::edge_stats::QueueSend;
use failsoft_shared::envelope::Kind;
use failsoft_shared::error_class::{Attempt, Operation, Verdict, classify};

use super::Facade;
use crate::ports::{Clock, Downstream, Forwarder, Kept, Kv, OutboundRequest, QueueMessage, TransportError};

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

    /// One attempt with the deadline; returns the verdict and a 2xx body.
    pub(super) async fn call(&self, request: OutboundRequest, op: Operation) -> (Verdict, Option<Vec<u8>>) {
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
        let label = match verdict {
            Verdict::Success | Verdict::NotFound => "success",
            Verdict::Failed(class) => class.as_str(),
        };
        metrics::counter!("failsoft_edge_crm_calls_total", "outcome" => label).increment(1);
        self.record(verdict.is_healthy(), finished).await;
        (verdict, body)
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
