//! Genesys-like Data Action traffic, open loop: each stream (lookups, case
//! creations, result polls) starts its requests on a fixed schedule, each in
//! its own task, whether or not earlier ones have been answered, as Genesys
//! does when calls keep arriving. A slow facade therefore shows up as
//! latency and timeouts, never as a politely slowed load.
//!
//! Every request is recorded: its phase, start, latency, HTTP status, the
//! answer's source (lookups) or status (writes, polls), and the tier.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use super::population::{Population, Rng, Tier};

/// The Data Action timeout in Genesys Cloud: an answer slower than this is
/// a failed interaction, so the drill gives up on a request after it.
pub const DATA_ACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the drill is in its story. Each request belongs to the phase it
/// started in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Filling the cache, CRM up; not part of the traffic.
    Warmup,
    Before,
    Outage,
    After,
    /// Traffic stopped; the backlog drains.
    Drain,
}

impl Phase {
    pub const TRAFFIC: [Phase; 3] = [Phase::Before, Phase::Outage, Phase::After];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warmup => "warm-up",
            Self::Before => "before",
            Self::Outage => "outage",
            Self::After => "after",
            Self::Drain => "drain",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Warmup,
            1 => Self::Before,
            2 => Self::Outage,
            3 => Self::After,
            _ => Self::Drain,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Self::Warmup => 0,
            Self::Before => 1,
            Self::Outage => 2,
            Self::After => 3,
            Self::Drain => 4,
        }
    }
}

/// What a request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `POST /v1/customer-lookup`.
    Lookup,
    /// `POST /v1/cases`.
    Case,
    /// `GET /v1/results/{correlationId}`.
    Poll,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Lookup, Kind::Case, Kind::Poll];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lookup => "lookup",
            Self::Case => "case",
            Self::Poll => "poll",
        }
    }
}

/// One request and what came of it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub kind: Kind,
    pub phase: Phase,
    /// Milliseconds since the drill started.
    pub start_ms: f64,
    pub latency_ms: f64,
    /// `None`: no answer (connection failed, or the Data Action timeout passed).
    pub status: Option<u16>,
    pub timed_out: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A lookup's `source`; a write's or a poll's `status`.
    pub answer: Option<String>,
    /// A lookup's `tier`.
    pub tier: Option<String>,
    /// The caller's tier in the CRM.
    pub expected_tier: Option<Tier>,
    /// Whether the caller was warmed into the cache.
    pub warm: bool,
    /// The caller (index in the population).
    pub customer: Option<u32>,
    pub correlation_id: String,
    /// What the edge's `SendMessage` of a queued write took, from the
    /// answer's `Server-Timing: queue;dur=N`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_ms: Option<f64>,
    /// A queued write the edge's outbox kept (`Server-Timing: …, outbox`):
    /// SQS did not take it in time.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub outboxed: bool,
}

impl Record {
    /// A failed interaction: anything but a 200 within the Data Action timeout.
    pub fn failed(&self) -> bool {
        self.status != Some(200) || self.latency_ms > DATA_ACTION_TIMEOUT.as_secs_f64() * 1000.0
    }

    /// A warm VIP answered with another tier: routed as an ordinary caller.
    pub fn misrouted_vip(&self) -> bool {
        self.kind == Kind::Lookup
            && self.warm
            && self.expected_tier == Some(Tier::Vip)
            && self.status == Some(200)
            && self.tier.as_deref() != Some(Tier::Vip.as_str())
    }
}

/// The drill's time base: offsets from its start, and the wall clock at it
/// (the CRM's ledger is stamped in Unix milliseconds).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    t0: Instant,
    pub unix0_ms: u64,
}

impl Clock {
    pub fn start() -> Self {
        let unix0_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        Self { t0: Instant::now(), unix0_ms }
    }

    /// Milliseconds since the start.
    pub fn now_ms(&self) -> f64 {
        self.t0.elapsed().as_secs_f64() * 1000.0
    }

    /// A Unix timestamp as an offset from the start.
    pub fn offset_of_unix_ms(&self, unix_ms: u64) -> f64 {
        unix_ms as f64 - self.unix0_ms as f64
    }
}

/// The facade under test.
#[derive(Clone)]
pub struct Edge {
    pub http: reqwest::Client,
    pub url: String,
    /// The full `Authorization` header value.
    pub auth: String,
}

/// Requests per second of each stream.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rates {
    pub lookups_per_sec: f64,
    pub cases_per_sec: f64,
    pub polls_per_sec: f64,
    /// Share of lookups for warmed customers.
    pub warm_share: f64,
}

/// What the streams share with the drill: the phase, the records, counters.
pub struct Shared {
    phase: AtomicU8,
    pub records: Mutex<Vec<Record>>,
    pub started: AtomicU64,
    pub failed: AtomicU64,
    /// Requests not started because too many were in flight (never expected:
    /// each ends within the Data Action timeout).
    pub skipped: AtomicU64,
    /// Writes answered `PENDING`, for the polls.
    pending: Mutex<Vec<String>>,
    in_flight: Arc<Semaphore>,
    max_in_flight: u32,
}

impl Shared {
    pub fn new(max_in_flight: u32) -> Self {
        Self {
            phase: AtomicU8::new(Phase::Warmup.to_u8()),
            records: Mutex::new(Vec::new()),
            started: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            pending: Mutex::new(Vec::new()),
            in_flight: Arc::new(Semaphore::new(max_in_flight as usize)),
            max_in_flight,
        }
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::SeqCst))
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase.to_u8(), Ordering::SeqCst);
    }

    fn push(&self, record: Record) {
        if record.failed() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        lock(&self.records).push(record);
    }

    /// Waits (at most `within`) until no request is in flight.
    pub async fn settle(&self, within: Duration) -> bool {
        tokio::time::timeout(within, self.in_flight.acquire_many(self.max_in_flight)).await.is_ok_and(|p| p.is_ok())
    }

    pub fn take_records(&self) -> Vec<Record> {
        std::mem::take(&mut *lock(&self.records))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The traffic generator.
pub struct Driver {
    pub edge: Edge,
    pub clock: Clock,
    pub population: Arc<Population>,
    pub shared: Arc<Shared>,
    /// Prefix of every correlationId of this drill.
    pub tag: String,
}

impl Driver {
    /// Starts the three streams; they run until `stop` turns true.
    pub fn start(self: &Arc<Self>, rates: Rates, seed: u64, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        Kind::ALL
            .iter()
            .map(|&kind| {
                let rate = match kind {
                    Kind::Lookup => rates.lookups_per_sec,
                    Kind::Case => rates.cases_per_sec,
                    Kind::Poll => rates.polls_per_sec,
                };
                let this = Arc::clone(self);
                let stop = stop.clone();
                let rng = Rng::new(seed ^ (kind as u64 + 1).wrapping_mul(0x5851_F42D_4C95_7F2D));
                tokio::spawn(async move { this.stream(kind, rate, rates.warm_share, rng, stop).await })
            })
            .collect()
    }

    /// One stream: request `n` starts at `n / rate` seconds, late or not.
    async fn stream(
        self: Arc<Self>,
        kind: Kind,
        rate: f64,
        warm_share: f64,
        mut rng: Rng,
        mut stop: watch::Receiver<bool>,
    ) {
        if rate <= 0.0 {
            return;
        }
        let period = Duration::from_secs_f64(1.0 / rate);
        let begin = tokio::time::Instant::now();
        for n in 0u64.. {
            let due = begin + period.mul_f64(n as f64);
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if *stop.borrow() {
                return;
            }
            let Ok(permit) = Arc::clone(&self.shared.in_flight).try_acquire_owned() else {
                self.shared.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let request = match kind {
                Kind::Lookup => {
                    let customer = if rng.chance(warm_share) {
                        let warm = self.population.warm();
                        (!warm.is_empty()).then(|| warm[rng.below(warm.len())])
                    } else {
                        self.population.next_cold()
                    };
                    customer.map(|c| Request::Lookup { customer: c, id: format!("{}-l{n:07}", self.tag) })
                }
                Kind::Case => {
                    let warm = self.population.warm();
                    (!warm.is_empty()).then(|| Request::Case {
                        customer: warm[rng.below(warm.len())],
                        id: format!("{}-c{n:06}", self.tag),
                    })
                }
                Kind::Poll => {
                    let pending = lock(&self.shared.pending);
                    (!pending.is_empty()).then(|| Request::Poll { id: pending[rng.below(pending.len())].clone() })
                }
            };
            let Some(request) = request else { continue };
            self.shared.started.fetch_add(1, Ordering::Relaxed);
            let this = Arc::clone(&self);
            tokio::spawn(async move {
                let record = this.send(request).await;
                this.shared.push(record);
                drop(permit);
            });
        }
    }

    /// Looks every warm customer up once (CRM up), `parallel` at a time, so
    /// the edge has their records. Returns the records.
    pub async fn warm_up(self: &Arc<Self>, parallel: usize) -> Vec<Record> {
        let gate = Arc::new(Semaphore::new(parallel.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for (n, &customer) in self.population.warm().iter().enumerate() {
            let permit = Arc::clone(&gate).acquire_owned().await.expect("the gate stays open");
            let this = Arc::clone(self);
            tasks.spawn(async move {
                let record = this.send(Request::Lookup { customer, id: format!("{}-w{n:05}", this.tag) }).await;
                drop(permit);
                record
            });
        }
        let mut records = Vec::new();
        while let Some(done) = tasks.join_next().await {
            if let Ok(record) = done {
                records.push(record);
            }
        }
        records
    }

    async fn send(&self, request: Request) -> Record {
        let phase = self.shared.phase();
        let (kind, customer, id, builder) = match &request {
            Request::Lookup { customer, id } => {
                let phone = &self.population.get(*customer).phone;
                let body = json!({"ani": phone, "correlationId": id});
                (
                    Kind::Lookup,
                    Some(*customer),
                    id.clone(),
                    self.edge.http.post(format!("{}/v1/customer-lookup", self.edge.url)).json(&body),
                )
            }
            Request::Case { customer, id } => {
                let phone = &self.population.get(*customer).phone;
                let body = json!({
                    "ani": phone,
                    "correlationId": id,
                    "conversationId": id,
                    "subject": "Callback requested",
                    "description": "failsoft drill",
                });
                (
                    Kind::Case,
                    Some(*customer),
                    id.clone(),
                    self.edge.http.post(format!("{}/v1/cases", self.edge.url)).json(&body),
                )
            }
            Request::Poll { id } => {
                (Kind::Poll, None, id.clone(), self.edge.http.get(format!("{}/v1/results/{id}", self.edge.url)))
            }
        };
        let start_ms = self.clock.now_ms();
        let started = Instant::now();
        let outcome = async {
            let response = builder.header("authorization", &self.edge.auth).send().await?;
            let status = response.status().as_u16();
            let timings: Vec<String> = response
                .headers()
                .get_all("server-timing")
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_owned))
                .collect();
            let queue_ms = timings.iter().find_map(|v| server_timing(v, "queue"));
            let outboxed = timings.iter().any(|v| server_timing_names(v).any(|name| name == "outbox"));
            let bytes = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, bytes, queue_ms, outboxed))
        }
        .await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let who = customer.map(|c| self.population.get(c));
        let mut record = Record {
            kind,
            phase,
            start_ms,
            latency_ms,
            status: None,
            timed_out: false,
            error: None,
            answer: None,
            tier: None,
            expected_tier: who.filter(|c| c.in_crm).map(|c| c.tier),
            warm: who.is_some_and(|c| c.warm),
            customer,
            correlation_id: id,
            queue_ms: None,
            outboxed: false,
        };
        match outcome {
            Ok((status, bytes, queue_ms, outboxed)) => {
                record.status = Some(status);
                record.queue_ms = queue_ms;
                record.outboxed = outboxed;
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
                match kind {
                    Kind::Lookup => {
                        record.answer = text("source");
                        record.tier = text("tier");
                    }
                    Kind::Case | Kind::Poll => record.answer = text("status"),
                }
                if status != 200 {
                    record.error = Some(
                        body.pointer("/error/code")
                            .and_then(Value::as_str)
                            .map_or(format!("HTTP {status}"), str::to_owned),
                    );
                }
                if kind == Kind::Case && record.answer.as_deref() == Some("PENDING") {
                    lock(&self.shared.pending).push(record.correlation_id.clone());
                }
            }
            Err(e) => {
                record.timed_out = e.is_timeout();
                record.error = Some(if e.is_timeout() {
                    "no answer within the Data Action timeout (10 s)".to_owned()
                } else if e.is_connect() {
                    "connection failed".to_owned()
                } else {
                    e.to_string()
                });
            }
        }
        record
    }
}

/// The `dur` of the `name` entry of a `Server-Timing` header value
/// (`queue;dur=12, db;dur=3`), milliseconds.
pub fn server_timing(value: &str, name: &str) -> Option<f64> {
    value.split(',').find_map(|entry| {
        let mut parts = entry.split(';').map(str::trim);
        (parts.next()? == name).then_some(())?;
        parts.find_map(|p| p.strip_prefix("dur=")).and_then(|d| d.trim_matches('"').parse().ok())
    })
}

/// The names of a `Server-Timing` header value's entries.
pub fn server_timing_names(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').filter_map(|entry| entry.split(';').next().map(str::trim))
}

enum Request {
    Lookup { customer: u32, id: String },
    Case { customer: u32, id: String },
    Poll { id: String },
}

#[cfg(test)]
mod tests {
    use super::{server_timing, server_timing_names};

    #[test]
    fn server_timing_reads_the_named_entry_s_duration() {
        assert_eq!(server_timing("queue;dur=12", "queue"), Some(12.0));
        assert_eq!(server_timing("db;dur=3, queue;desc=\"sqs\";dur=4.5", "queue"), Some(4.5));
        assert_eq!(server_timing("queue", "queue"), None);
        assert_eq!(server_timing("queued;dur=1", "queue"), None);
        assert_eq!(server_timing("queue;dur=x", "queue"), None);
        assert_eq!(server_timing("queue;dur=312, outbox", "queue"), Some(312.0));
        assert_eq!(server_timing_names("queue;dur=312, outbox").collect::<Vec<_>>(), ["queue", "outbox"]);
    }
}
