//! The facade: routing, authentication, validation and the flows of
//! `docs/design.md`, sequenced around the ports. Decisions come from
//! `failsoft-shared`; this module only performs them.
//!
//! Along its seams: [`checks`] (pure request checks), `lookup`, `writes`
//! (writes and their results), `downstream` (the CRM call, the breaker's
//! permit and its sharing, forwarding) and `internal` (cache push, CRM
//! webhook, traffic reports).

mod checks;
mod downstream;
mod internal;
mod lookup;
mod writes;

use std::sync::Mutex;

use failsoft_shared::breaker::Breaker;
use failsoft_shared::cache::CustomerRecord;
use failsoft_shared::edge_stats::{self, Answer, Cadence, EdgeStats};
use failsoft_shared::envelope::Kind;
use failsoft_shared::signature::{DEFAULT_REPLAY_CAPACITY, ReplayCache};
use serde_json::json;

pub use self::downstream::BREAKER_KEY;
use self::downstream::BreakerCell;
pub use self::internal::DRAIN_AFTER_RESPONSE;
pub use self::writes::{RESULT_TTL_SECS, queue_refused, result_record};
use crate::asked::Asked;
use crate::coalesce::Inflight;
use crate::config::EdgeConfig;
use crate::http::{Request, Response};
use crate::ports::{Clock, Downstream, Forwarder, Kv, PortError, QueueMessage};
pub use failsoft_shared::breaker::BreakerSharing;
use failsoft_shared::keys::Phone;

/// `work`'s output, or `None` once `timer` ends first. `work` is polled
/// first, so a store that answers at once is never timed out.
async fn first_of<T>(
    mut work: core::pin::Pin<&mut impl core::future::Future<Output = T>>,
    timer: impl core::future::Future<Output = ()>,
) -> Option<T> {
    let mut timer = core::pin::pin!(timer);
    core::future::poll_fn(|cx| {
        if let core::task::Poll::Ready(out) = work.as_mut().poll(cx) {
            return core::task::Poll::Ready(Some(out));
        }
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// Work a request leaves for after its response.
#[derive(Debug)]
pub enum After {
    /// A message for the queue (a refresh).
    Forward(QueueMessage),
    /// The breaker's half-open probe, which this request was granted: a
    /// lookup of its number, made once the caller has been answered from
    /// the ladder, so no caller waits on a CRM that may still be down. Its
    /// outcome closes or re-opens the breaker; a record it gets is stored.
    Probe { phone: Phone, kv_key: String, correlation_id: String },
}

/// A handled request: the response, and the work for once it has been
/// sent (a refresh or a probe never sits on the response path).
#[derive(Debug)]
pub struct Handled {
    pub response: Response,
    pub after: Vec<After>,
    /// How the traffic counters count it (`None`: not a counted answer).
    answer: Option<Answer>,
    /// Whether a traffic report was due once this was counted.
    report_due: bool,
}

impl Handled {
    fn new(response: Response, after: Vec<After>, answer: Option<Answer>) -> Self {
        Self { response, after, answer, report_due: false }
    }
}

impl From<Response> for Handled {
    fn from(response: Response) -> Self {
        Self::new(response, Vec::new(), None)
    }
}

/// A request refused as the caller's fault: always a 4xx with a code.
#[derive(Debug)]
struct Refusal(Response);

impl Refusal {
    fn new(status: u16, code: &str, message: &str) -> Self {
        metrics::counter!("failsoft_edge_rejected_total", "code" => code.to_owned()).increment(1);
        Self(Response::error(status, code, message))
    }
}

type Checked<T> = Result<T, Refusal>;

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
    /// The CRM lookups out now, by cache key (request coalescing).
    inflight: Inflight<Option<CustomerRecord>>,
    /// The keys asked to refresh ahead in the current window.
    refreshes: Asked,
    /// Where the nonces of signed requests are remembered.
    nonces: NonceStore,
    /// The CRM's OAuth token as this instance last had it.
    crm_token: Mutex<Option<failsoft_shared::mapping::Token>>,
}

/// Where the facade remembers the nonces of the signed requests it accepted
/// (the internal routes and the CRM webhook), so each is accepted once.
#[derive(Debug)]
pub enum NonceStore {
    /// In this process or isolate, bounded ([`ReplayCache`]): the native
    /// host and Workers, whose isolates serve many requests. Another
    /// process or isolate does not see them.
    Memory(Mutex<ReplayCache>),
    /// In the KV store, one key per nonce kept for the tolerance window: for
    /// Spin, whose instances live for one request.
    Kv,
}

impl NonceStore {
    /// The in-memory store at its default capacity.
    pub fn memory() -> Self {
        Self::Memory(Mutex::new(ReplayCache::new(DEFAULT_REPLAY_CAPACITY)))
    }
}

impl<K: Kv, D: Downstream, F: Forwarder, C: Clock> Facade<K, D, F, C> {
    pub fn new(config: EdgeConfig, kv: K, downstream: D, forwarder: F, clock: C) -> Self {
        let breaker = Mutex::new(BreakerCell::new());
        // Random, so isolates that ever report never share an id at the origin.
        let isolate = format!("{:016x}{:016x}", clock.random_u64(), clock.random_u64());
        let cadence = Cadence::Batched { every_ms: config.stats_every_ms };
        let stats = Mutex::new(EdgeStats::new(isolate, cadence));
        let inflight = Inflight::default();
        let refreshes = Asked::default();
        let sharing = BreakerSharing::Off;
        let nonces = NonceStore::memory();
        let crm_token = Mutex::new(None);
        Self {
            config,
            kv,
            downstream,
            forwarder,
            clock,
            breaker,
            sharing,
            stats,
            inflight,
            refreshes,
            nonces,
            crm_token,
        }
    }

    /// Sets where the nonces of signed requests are remembered (Spin: KV).
    pub fn with_nonce_store(mut self, nonces: NonceStore) -> Self {
        self.nonces = nonces;
        self
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

    /// A KV write a caller's answer waits for (the cache entry of a live
    /// lookup, a write's result, the breaker a probe takes): it gets a
    /// quarter of the deadline margin, and past that the answer goes on
    /// without it (the write may still land; the answer never depended on
    /// it). Spin's key-value calls are synchronous and cannot be cut short.
    async fn put_on_answer_path(&self, key: &str, value: &str, ttl_secs: u64) -> Result<(), PortError> {
        let limit_ms = self.config.policy.deadline_margin_ms / 4;
        let put = core::pin::pin!(self.kv.put(key, value, ttl_secs));
        match first_of(put, self.clock.sleep_ms(limit_ms)).await {
            Some(done) => done,
            None => {
                metrics::counter!("failsoft_edge_kv_failures_total", "op" => "put_timeout").increment(1);
                Err(PortError(format!("no answer from the KV store within {limit_ms} ms")))
            }
        }
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
            "/healthz" => {
                checks::only(&req, "GET").map(|()| Handled::from(Response::json(200, &json!({"status": "ok"}))))
            }
            "/v1/customer-lookup" | "/crm/customer-lookup" => match checks::only(&req, "POST") {
                Ok(()) => self.lookup(&req).await,
                Err(e) => Err(e),
            },
            "/v1/cases" => match checks::only(&req, "POST") {
                Ok(()) => self.create_case(&req).await,
                Err(e) => Err(e),
            },
            "/v1/webhooks/crm-update" => match checks::only(&req, "POST") {
                Ok(()) => self.crm_update(&req).await.map(Handled::from),
                Err(e) => Err(e),
            },
            // Internal routes exist only with an internal secret.
            failsoft_shared::sync::OUTBOX_DRAIN_PATH => {
                match (self.config.internal_secret.as_deref(), checks::only(&req, "POST")) {
                    (None, _) => Err(Refusal::new(404, "NOT_FOUND", "no such route")),
                    (Some(_), Err(e)) => Err(e),
                    (Some(secret), Ok(())) => self.outbox_drain_call(&req, secret).await.map(Handled::from),
                }
            }
            failsoft_shared::sync::BULK_PATH => {
                match (self.config.internal_secret.as_deref(), checks::only(&req, "POST")) {
                    (None, _) => Err(Refusal::new(404, "NOT_FOUND", "no such route")),
                    (Some(_), Err(e)) => Err(e),
                    (Some(secret), Ok(())) => self.push_bulk(&req, secret).await.map(Handled::from),
                }
            }
            _ => {
                if let Some(id) = path.strip_prefix("/v1/results/") {
                    match checks::only(&req, "GET") {
                        Ok(()) => self.result(&req, id).await.map(Handled::from),
                        Err(e) => Err(e),
                    }
                } else if let (Some(entity), Some(secret)) =
                    (path.strip_prefix("/v1/internal/cache/"), self.config.internal_secret.as_deref())
                {
                    match checks::only(&req, "PUT") {
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

    /// Does what a handled request left for after its response (forwards
    /// its refresh, sends its probe), then sends the traffic report if one
    /// is due. A failure is logged and counted, never surfaced: the answer
    /// is gone.
    pub async fn run_after(&self, after: Vec<After>) {
        for work in after {
            match work {
                After::Forward(message) => {
                    self.forward(&message, Kind::Refresh, self.config.policy.crm_deadline_ms).await;
                }
                After::Probe { phone, kv_key, correlation_id } => self.probe(&phone, &kv_key, &correlation_id).await,
            }
        }
        self.report_stats().await;
    }

    /// The caller's `correlationId`, or a new random one when it gave none.
    fn correlation_id(&self, body: &serde_json::Map<String, serde_json::Value>) -> Checked<String> {
        Ok(checks::correlation_id(body)?.unwrap_or_else(|| self.new_correlation_id()))
    }

    fn new_correlation_id(&self) -> String {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.clock.random_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.clock.random_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
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
