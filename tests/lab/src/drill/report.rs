//! From what the drill recorded to what it reports: per phase and request
//! kind, the count, failures, latency percentiles and answers; every write
//! matched against the CRM's ledger; the dead-letter queue; the drain; the
//! refreshes queued per customer per freshness window; the promises (which
//! decide the exit status) and the latency targets. Rendered as a summary
//! table here, as JSON by serde, as HTML in `html.rs`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use failsoft_shared::envelope::refresh_window;
use serde::Serialize;

use super::logscan::LogScan;
use super::observe::{LedgerCase, RefreshDelivery, Sample};
use super::population::Population;
use super::trace::Traced;
use super::traffic::{Clock, DATA_ACTION_TIMEOUT, Kind, Phase, Rates, Record};

/// The latency targets, on the default load in `hang` mode: with the
/// half-open probe after the response, only the lookups before the breaker
/// first opens wait the deadline, under 1 % of an 8-minute outage's.
pub const TARGET_OUTAGE_P99_MS: f64 = 50.0;
pub const TARGET_BREAKER_OPEN_P99_MS: f64 = 100.0;
pub const TARGET_DRAIN_SECS: f64 = 20.0;

/// What the drill was asked to do, and where it ran.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub edge: String,
    pub mode: String,
    pub recover_mode: String,
    pub outage_secs: f64,
    pub before_secs: f64,
    pub after_secs: f64,
    pub rates: Rates,
    pub warm_customers: usize,
    pub cold_numbers: usize,
    pub drain_limit_secs: f64,
    pub drain_timeout_secs: f64,
    pub freshness_secs: u64,
    pub crm_deadline_ms: u64,
    /// A queued write's share of the deadline: its `SendMessage` must end
    /// within it, else the write is answered `NOT_ACCEPTED`.
    pub deadline_margin_ms: u64,
    /// Lookups this long after the outage began count as "breaker open".
    pub breaker_settle_secs: f64,
    /// `own` (the drill started it) or the `stack.env` it used.
    pub stack: String,
    pub seed: u64,
    pub enforce_targets: bool,
    pub started_at: String,
    pub machine: Machine,
}

impl Settings {
    /// Whether the outage holds callers until their deadline (`hang`, and
    /// `late`, whose answers come after it): the modes whose lookups the
    /// breaker must stop waiting.
    pub fn callers_wait(&self) -> bool {
        matches!(self.mode.as_str(), "hang" | "late")
    }
}

/// The machine the drill ran on.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
}

impl Machine {
    pub fn this() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
        Self { cpu, cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1), kernel }
    }
}

/// When things happened, in milliseconds since the drill started.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    pub traffic_start_ms: f64,
    pub outage_start_ms: f64,
    pub recovery_ms: f64,
    pub traffic_end_ms: f64,
    pub drain_end_ms: f64,
    /// Whether every write reached the CRM before the drill stopped waiting.
    pub drain_complete: bool,
    /// When the edge's path to SQS was cut and when it came back
    /// (`--queue-outage`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_outage: Option<QueueOutageSpan>,
}

/// The edge's path to SQS cut, from `start_ms` to `back_ms` (`mode`: hang or refuse).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueOutageSpan {
    pub mode: &'static str,
    pub start_ms: f64,
    pub back_ms: f64,
}

/// What the edge's write outbox did in a queue outage.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outbox {
    /// Writes the outbox kept (SQS did not take them in time).
    pub kept: u64,
    /// Of them, written while the path to SQS was cut.
    pub kept_in_queue_outage: u64,
    /// Writes answered `NOT_ACCEPTED` while the path to SQS was cut.
    pub not_accepted_in_queue_outage: u64,
    /// Writes made while the path to SQS was cut and answered before the
    /// CRM's outage began (`--queue-outage-from before`): the queue out of
    /// reach on its own.
    pub written_in_queue_outage_crm_up: u64,
    /// Of them, those the CRM created at once (`COMPLETE`).
    pub complete_in_queue_outage_crm_up: u64,
    /// The last kept write's delivery to the CRM, after both SQS and the
    /// CRM were back (`None`: none kept, or none delivered).
    pub last_kept_delivery_after_back_secs: Option<f64>,
}

/// One phase and request kind.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KindStats {
    pub phase: Phase,
    pub kind: Kind,
    pub count: u64,
    /// Non-200, no answer, or slower than the Data Action timeout.
    pub failed: u64,
    /// Answered with a status other than 200, or not at all (connection failed).
    pub non_200: u64,
    /// No answer within the Data Action timeout (10 s).
    pub slower_than_timeout: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Lookups by `source`; writes and polls by `status`.
    pub answers: BTreeMap<String, u64>,
    /// Lookups of warmed VIP customers, and those answered with another tier.
    pub warm_vip: u64,
    pub warm_vip_misrouted: u64,
}

/// Every write, matched by correlationId in the CRM's ledger.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Writes {
    pub issued: u64,
    /// By the facade's `status` (`COMPLETE`, `PENDING`, …; `no answer`).
    pub answered: BTreeMap<String, u64>,
    pub delivered_once: u64,
    pub delivered_more_than_once: u64,
    pub never_delivered: u64,
    /// Up to ten of each, to look up in the logs.
    pub never_examples: Vec<String>,
    pub duplicated_examples: Vec<String>,
    /// Writes answered `PENDING` (or not answered), and when the last of
    /// them reached the CRM, in seconds after the CRM came back.
    pub queued: u64,
    pub last_queued_delivery_after_recovery_secs: Option<f64>,
    /// Every delivery, in seconds since the start (for the charts).
    #[serde(skip)]
    pub deliveries_s: Vec<f64>,
}

/// The dead-letter queue and the work queue.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Queues {
    pub dlq_at_start: u64,
    pub dlq_at_end: u64,
    /// Dead letters added while the drill ran.
    pub dead_lettered: u64,
    pub depth_at_end: u64,
    pub max_depth: u64,
}

/// Refresh messages queued during the outage, per customer per window.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Refreshes {
    pub window_secs: u64,
    /// Outage lookups answered `stale_cache` or `default`: each asked for a refresh.
    pub fallback_lookups: u64,
    /// Refresh messages of those lookups that the worker delivered (one per
    /// message: its correlationId is the lookup's).
    pub messages: u64,
    pub customers: u64,
    pub max_per_customer_window: u64,
    /// (customer, window) pairs with more than one.
    pub over_one: u64,
    /// Whether the queue still held messages when counted (then the count
    /// may be short).
    pub counted_before_queue_empty: bool,
    /// Refreshes delivered, in seconds since the start (for the charts).
    #[serde(skip)]
    pub deliveries_s: Vec<f64>,
}

/// Lookup latency over the outage.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutageLatency {
    pub lookups: u64,
    pub p99_ms: f64,
    /// From `breaker_settle_secs` after the outage began until the recovery.
    pub breaker_open_lookups: u64,
    pub breaker_open_p99_ms: f64,
    pub breaker_open_p999_ms: f64,
    /// Breaker-open lookups that waited out the CRM deadline: the half-open
    /// probes, one per cool-down, that ride on a caller's request.
    pub breaker_open_waited_deadline: u64,
}

/// The edge's `SendMessage` of queued writes in one phase, as each
/// answer's `Server-Timing` told it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueSends {
    pub phase: Phase,
    pub sends: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Sends that used up the write's share of the deadline
    /// (`deadline_margin_ms`): each such write was answered `NOT_ACCEPTED`.
    pub slow: u64,
    /// Writes answered `NOT_ACCEPTED` in the phase, slow sends or not.
    pub not_accepted: u64,
}

impl QueueSends {
    fn of<'a>(phase: Phase, margin_ms: u64, records: impl Iterator<Item = &'a Record>) -> Self {
        let (mut sends, mut not_accepted) = (Vec::new(), 0);
        for r in records.filter(|r| r.phase == phase && r.kind == Kind::Case) {
            sends.extend(r.queue_ms);
            if r.answer.as_deref() == Some("NOT_ACCEPTED") {
                not_accepted += 1;
            }
        }
        sends.sort_by(f64::total_cmp);
        Self {
            phase,
            sends: sends.len() as u64,
            p50_ms: percentile(&sends, 0.50),
            p99_ms: percentile(&sends, 0.99),
            max_ms: sends.last().copied().unwrap_or(0.0),
            slow: sends.iter().filter(|&&ms| ms >= margin_ms as f64).count() as u64,
            not_accepted,
        }
    }
}

/// What the pre-warm sync before the traffic did (`failsoft sync --once`'s report).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Synced {
    pub kind: String,
    pub records: u64,
    pub seconds: f64,
}

/// Who got `default` during the outage: customers the CRM knows (the sync's
/// to prevent) and numbers it does not (rightly `default`).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Coverage {
    /// The pre-warm sync (`None`: the drill ran with `--no-sync`).
    pub synced: Option<Synced>,
    pub known_lookups: u64,
    pub known_default: u64,
    pub unknown_lookups: u64,
    pub unknown_default: u64,
}

/// The steady state, before the outage (CRM up): what lookups cost the CRM
/// and whether repeat callers waited on it.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Steady {
    /// `GET /customers?phone=` the CRM received (edge lookups and refreshes).
    pub crm_lookups: Option<u64>,
    /// Distinct (number, freshness window) pairs the traffic looked up.
    pub key_windows: u64,
    pub calls_per_key_window: Option<f64>,
    /// Lookups of warm customers (repeat callers), and those answered `live`.
    pub repeat_lookups: u64,
    pub repeat_live: u64,
}

/// A promise or a target, and whether it held.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub name: String,
    /// `None`: not applicable to this drill (shown, not judged).
    pub kept: Option<bool>,
    pub measured: String,
    pub limit: String,
}

/// The edge's outbox must have sent on every kept write within this long
/// of both SQS and the CRM being back (issue #13's promise).
pub const OUTBOX_DRAIN_SECS: f64 = 30.0;

/// What the outbox did: the writes it kept (from their answers), and when
/// the last of them reached the CRM.
fn outbox_of(cases: &[&Record], created: &HashMap<&str, Vec<u64>>, clock: Clock, timeline: &Timeline) -> Outbox {
    let mut outbox = Outbox::default();
    let cut = timeline.queue_outage.as_ref().map(|q| (q.start_ms, q.back_ms));
    let in_cut = |r: &Record| cut.is_some_and(|(from, to)| r.start_ms >= from && r.start_ms < to);
    let back_ms = cut.map_or(timeline.recovery_ms, |(_, back)| back.max(timeline.recovery_ms));
    // Answered before the CRM's outage began (after it, the breaker may
    // still be open for a moment).
    let crm_up = |r: &Record| r.start_ms + r.latency_ms < timeline.outage_start_ms;
    for r in cases {
        if in_cut(r) && r.answer.as_deref() == Some("NOT_ACCEPTED") {
            outbox.not_accepted_in_queue_outage += 1;
        }
        if in_cut(r) && crm_up(r) {
            outbox.written_in_queue_outage_crm_up += 1;
            if r.answer.as_deref() == Some("COMPLETE") {
                outbox.complete_in_queue_outage_crm_up += 1;
            }
        }
        if !r.outboxed {
            continue;
        }
        outbox.kept += 1;
        if in_cut(r) {
            outbox.kept_in_queue_outage += 1;
        }
        if let Some(&first) = created.get(r.correlation_id.as_str()).and_then(|t| t.iter().min()) {
            let after = (clock.offset_of_unix_ms(first) - back_ms) / 1000.0;
            let last = outbox.last_kept_delivery_after_back_secs.get_or_insert(after);
            *last = last.max(after);
        }
    }
    outbox
}

/// The whole report (`report.json`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub settings: Settings,
    pub timeline: Timeline,
    pub phases: Vec<KindStats>,
    /// The edge's `SendMessage` of queued writes, per traffic phase.
    pub queue_sends: Vec<QueueSends>,
    pub warm_up: KindStats,
    pub writes: Writes,
    pub queues: Queues,
    pub warm_vip_lookups: u64,
    pub warm_vip_misrouted: u64,
    pub skipped_requests: u64,
    /// Phone numbers found in the stack's logs, tables and dead letters
    /// (`None`: the logs were not scanned).
    pub log_scan: Option<LogScan>,
    /// Queued writes and refreshes the CRM saw under their correlationId
    /// (`None`: the simulator could not say).
    pub traced: Option<Traced>,
    pub refreshes: Refreshes,
    pub outage_latency: OutageLatency,
    pub coverage: Coverage,
    pub steady: Steady,
    /// The CRM's calls from its recovery to the drain's end.
    pub drain_pace: Option<DrainPace>,
    pub outbox: Outbox,
    pub promises: Vec<Check>,
    pub targets: Vec<Check>,
    /// Every promise kept (and every applicable target met, with `--enforce-targets`).
    pub kept: bool,
    pub samples: Vec<Sample>,
}

/// Everything the report is computed from.
pub struct Inputs<'a> {
    pub settings: Settings,
    pub timeline: Timeline,
    pub clock: Clock,
    pub records: &'a [Record],
    pub samples: Vec<Sample>,
    pub ledger: &'a [LedgerCase],
    pub refreshes: &'a [RefreshDelivery],
    pub population: &'a Population,
    pub tag: &'a str,
    pub dlq_at_start: u64,
    pub dlq_at_end: u64,
    pub depth_at_end: u64,
    pub skipped: u64,
    /// The stack's logs, tables and dead letters scanned for the
    /// population's phone numbers.
    pub log_scan: Option<LogScan>,
    /// Queued writes and refreshes the CRM saw under their correlationId.
    pub traced: Option<Traced>,
    /// The pre-warm sync before the traffic (`None`: `--no-sync`).
    pub synced: Option<Synced>,
    /// CRM lookups during the phase before the outage.
    pub crm_lookups_before: Option<u64>,
    pub drain_pace: Option<DrainPace>,
}

/// How hard the CRM was driven from its recovery to the drain's end (every
/// call: the replay's, the probes', the edge's live lookups), beside its
/// rate limit when the drill set one (`--crm-rate-limit`).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainPace {
    pub limit_per_sec: Option<u64>,
    pub calls: u64,
    pub throttled: u64,
    pub secs: f64,
}

impl DrainPace {
    /// From the simulator's (requests, throttled) at recovery and at the end.
    pub fn between(limit_per_sec: Option<u64>, start: (u64, u64), end: (u64, u64), secs: f64) -> Self {
        Self {
            limit_per_sec,
            calls: end.0.saturating_sub(start.0),
            throttled: end.1.saturating_sub(start.1),
            secs: secs.max(0.001),
        }
    }

    pub fn calls_per_sec(&self) -> f64 {
        self.calls as f64 / self.secs
    }

    pub fn text(&self) -> String {
        let limit = match self.limit_per_sec {
            Some(limit) => format!(", {:.0} % of its {limit}/s limit", self.calls_per_sec() * 100.0 / limit as f64),
            None => String::new(),
        };
        let share = if self.calls == 0 { 0.0 } else { self.throttled as f64 * 100.0 / self.calls as f64 };
        format!(
            "{} CRM calls in {:.1} s ({:.1}/s{limit}); throttled {} ({share:.1} %)",
            self.calls,
            self.secs,
            self.calls_per_sec(),
            self.throttled
        )
    }
}

/// Nearest-rank percentile of sorted values (0 for none).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted_latencies<'a>(records: impl Iterator<Item = &'a Record>) -> Vec<f64> {
    let mut v: Vec<f64> = records.map(|r| r.latency_ms).collect();
    v.sort_by(f64::total_cmp);
    v
}

fn stats<'a>(phase: Phase, kind: Kind, records: impl Iterator<Item = &'a Record> + Clone) -> KindStats {
    let timeout_ms = DATA_ACTION_TIMEOUT.as_secs_f64() * 1000.0;
    let latencies = sorted_latencies(records.clone());
    let mut answers = BTreeMap::new();
    let (mut failed, mut non_200, mut slow, mut vip, mut misrouted) = (0, 0, 0, 0, 0);
    for r in records {
        let slower = r.timed_out || r.latency_ms > timeout_ms;
        if slower {
            slow += 1;
        } else if r.status != Some(200) {
            non_200 += 1;
        }
        if r.failed() {
            failed += 1;
        }
        let answer = match (&r.answer, r.status) {
            (Some(a), Some(200)) => a.clone(),
            (_, Some(status)) => format!("HTTP {status}"),
            (_, None) => "no answer".to_owned(),
        };
        *answers.entry(answer).or_insert(0) += 1;
        if r.kind == Kind::Lookup && r.warm && r.expected_tier == Some(super::population::Tier::Vip) {
            vip += 1;
            if r.misrouted_vip() {
                misrouted += 1;
            }
        }
    }
    KindStats {
        phase,
        kind,
        count: latencies.len() as u64,
        failed,
        non_200,
        slower_than_timeout: slow,
        p50_ms: percentile(&latencies, 0.50),
        p95_ms: percentile(&latencies, 0.95),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        answers,
        warm_vip: vip,
        warm_vip_misrouted: misrouted,
    }
}

fn secs(ms: f64) -> String {
    if ms.abs() >= 10_000.0 { format!("{:.1} s", ms / 1000.0) } else { format!("{:.2} s", ms / 1000.0) }
}

fn ms(ms: f64) -> String {
    if ms >= 1000.0 { secs(ms) } else { format!("{ms:.1} ms") }
}

impl Report {
    pub fn compute(inputs: Inputs<'_>) -> Self {
        let Inputs { settings, timeline, clock, records, samples, ledger, refreshes, population, tag, .. } = inputs;
        let phases: Vec<KindStats> = Phase::TRAFFIC
            .iter()
            .flat_map(|&phase| Kind::ALL.iter().map(move |&kind| (phase, kind)).collect::<Vec<_>>())
            .map(|(phase, kind)| stats(phase, kind, records.iter().filter(move |r| r.phase == phase && r.kind == kind)))
            .collect();
        let warm_up = stats(Phase::Warmup, Kind::Lookup, records.iter().filter(|r| r.phase == Phase::Warmup));
        let queue_sends: Vec<QueueSends> = Phase::TRAFFIC
            .iter()
            .map(|&phase| QueueSends::of(phase, settings.deadline_margin_ms, records.iter()))
            .collect();

        // Writes against the ledger.
        let mut created: HashMap<&str, Vec<u64>> = HashMap::new();
        for case in ledger {
            if let Some(id) = case.correlation_id.as_deref().filter(|id| id.starts_with(tag)) {
                created.entry(id).or_default().push(case.created_at_ms);
            }
        }
        let cases: Vec<&Record> = records.iter().filter(|r| r.kind == Kind::Case).collect();
        let mut writes = Writes {
            issued: cases.len() as u64,
            answered: BTreeMap::new(),
            delivered_once: 0,
            delivered_more_than_once: 0,
            never_delivered: 0,
            never_examples: Vec::new(),
            duplicated_examples: Vec::new(),
            queued: 0,
            last_queued_delivery_after_recovery_secs: None,
            deliveries_s: Vec::new(),
        };
        let mut last_queued: Option<f64> = None;
        for r in &cases {
            let answer = match (&r.answer, r.status) {
                (Some(a), Some(200)) => a.clone(),
                (_, Some(status)) => format!("HTTP {status}"),
                (_, None) => "no answer".to_owned(),
            };
            // Queued: answered PENDING, or not answered (it may be queued).
            let queued = answer == "PENDING" || r.status != Some(200);
            *writes.answered.entry(answer).or_insert(0) += 1;
            let times = created.get(r.correlation_id.as_str()).map(Vec::as_slice).unwrap_or(&[]);
            match times.len() {
                0 => {
                    writes.never_delivered += 1;
                    if writes.never_examples.len() < 10 {
                        writes.never_examples.push(r.correlation_id.clone());
                    }
                }
                1 => writes.delivered_once += 1,
                _ => {
                    writes.delivered_more_than_once += 1;
                    if writes.duplicated_examples.len() < 10 {
                        writes.duplicated_examples.push(r.correlation_id.clone());
                    }
                }
            }
            if let Some(&first) = times.iter().min() {
                let at = clock.offset_of_unix_ms(first);
                writes.deliveries_s.push(at / 1000.0);
                if queued {
                    last_queued = Some(last_queued.map_or(at, |l: f64| l.max(at)));
                }
            }
            if queued {
                writes.queued += 1;
            }
        }
        writes.last_queued_delivery_after_recovery_secs = last_queued.map(|at| (at - timeline.recovery_ms) / 1000.0);
        let outbox = outbox_of(&cases, &created, clock, &timeline);

        let queues = Queues {
            dlq_at_start: inputs.dlq_at_start,
            dlq_at_end: inputs.dlq_at_end,
            dead_lettered: inputs.dlq_at_end.saturating_sub(inputs.dlq_at_start),
            depth_at_end: inputs.depth_at_end,
            max_depth: samples.iter().map(|s| s.queue_visible + s.queue_in_flight).max().unwrap_or(0),
        };

        // Refreshes: the worker records each under the lookup's correlationId.
        let window_ms = settings.freshness_secs.max(1) * 1000;
        let outage_lookups: HashMap<&str, &Record> = records
            .iter()
            .filter(|r| r.kind == Kind::Lookup && r.phase == Phase::Outage)
            .map(|r| (r.correlation_id.as_str(), r))
            .collect();
        let fallback_lookups =
            outage_lookups.values().filter(|r| matches!(r.answer.as_deref(), Some("stale_cache" | "default"))).count()
                as u64;
        let mut per_window: HashMap<(u32, u64), u64> = HashMap::new();
        let mut refresh_deliveries = Vec::new();
        for refresh in refreshes {
            refresh_deliveries.push(clock.offset_of_unix_ms(refresh.delivered_at_ms) / 1000.0);
            let Some(r) = outage_lookups.get(refresh.correlation_id.as_str()) else { continue };
            let Some(customer) = r.customer else { continue };
            // The window the edge deduplicated on: that of the message's
            // own stamp. The answer's time (the fallback when the worker
            // did not record the stamp) can fall a few milliseconds into the
            // next window, more on a Worker, whose clock stands still
            // between I/O.
            let stamped_unix = match refresh.submitted_at_ms {
                Some(at) => at,
                None => (clock.unix0_ms as f64 + r.start_ms + r.latency_ms) as u64,
            };
            *per_window.entry((customer, refresh_window(stamped_unix, window_ms))).or_insert(0) += 1;
        }
        let refreshes_report = Refreshes {
            window_secs: settings.freshness_secs,
            fallback_lookups,
            messages: per_window.values().sum(),
            customers: per_window.keys().map(|(c, _)| *c).collect::<std::collections::HashSet<_>>().len() as u64,
            max_per_customer_window: per_window.values().copied().max().unwrap_or(0),
            over_one: per_window.values().filter(|&&n| n > 1).count() as u64,
            counted_before_queue_empty: inputs.depth_at_end > 0,
            deliveries_s: refresh_deliveries,
        };

        // Lookup latency over the outage, and once the breaker is open.
        let outage: Vec<&Record> =
            records.iter().filter(|r| r.kind == Kind::Lookup && r.phase == Phase::Outage).collect();
        let open_from = timeline.outage_start_ms + settings.breaker_settle_secs * 1000.0;
        let open: Vec<&Record> =
            outage.iter().copied().filter(|r| r.start_ms >= open_from && r.start_ms < timeline.recovery_ms).collect();
        let open_sorted = sorted_latencies(open.iter().copied());
        let outage_latency = OutageLatency {
            lookups: outage.len() as u64,
            p99_ms: percentile(&sorted_latencies(outage.iter().copied()), 0.99),
            breaker_open_lookups: open.len() as u64,
            breaker_open_p99_ms: percentile(&open_sorted, 0.99),
            breaker_open_p999_ms: percentile(&open_sorted, 0.999),
            breaker_open_waited_deadline: open
                .iter()
                .filter(|r| r.latency_ms >= settings.crm_deadline_ms as f64 * 0.9)
                .count() as u64,
        };

        // Coverage: who was answered `default` while the CRM was out.
        let mut coverage = Coverage { synced: inputs.synced.clone(), ..Coverage::default() };
        for r in &outage {
            let Some(customer) = r.customer else { continue };
            let is_default = r.answer.as_deref() == Some("default");
            if population.get(customer).in_crm {
                coverage.known_lookups += 1;
                coverage.known_default += u64::from(is_default);
            } else {
                coverage.unknown_lookups += 1;
                coverage.unknown_default += u64::from(is_default);
            }
        }
        // The steady state before the outage.
        let before: Vec<&Record> =
            records.iter().filter(|r| r.kind == Kind::Lookup && r.phase == Phase::Before).collect();
        let key_windows: std::collections::HashSet<(u32, u64)> = before
            .iter()
            .filter_map(|r| {
                let at = (clock.unix0_ms as f64 + r.start_ms) as u64;
                r.customer.map(|c| (c, at / window_ms))
            })
            .collect();
        let repeat: Vec<&&Record> = before.iter().filter(|r| r.warm).collect();
        let steady = Steady {
            crm_lookups: inputs.crm_lookups_before,
            key_windows: key_windows.len() as u64,
            calls_per_key_window: inputs
                .crm_lookups_before
                .filter(|_| !key_windows.is_empty())
                .map(|calls| calls as f64 / key_windows.len() as f64),
            repeat_lookups: repeat.len() as u64,
            repeat_live: repeat.iter().filter(|r| r.answer.as_deref() == Some("live")).count() as u64,
        };

        let failed: u64 = records.iter().filter(|r| r.failed()).count() as u64;
        let total = records.len() as u64;
        let warm_vip_lookups: u64 = phases.iter().map(|s| s.warm_vip).sum::<u64>() + warm_up.warm_vip;
        let warm_vip_misrouted: u64 =
            phases.iter().map(|s| s.warm_vip_misrouted).sum::<u64>() + warm_up.warm_vip_misrouted;
        let drain_limit_ms = settings.drain_limit_secs * 1000.0;
        let drain_ms = last_queued.map(|at| at - timeline.recovery_ms);
        let drain_kept = if writes.never_delivered > 0 { false } else { drain_ms.is_none_or(|d| d <= drain_limit_ms) };
        let drain_measured = match (drain_ms, writes.never_delivered) {
            (_, n) if n > 0 => format!("{n} write(s) never delivered"),
            (Some(d), _) => format!("last queued write {} after recovery", secs(d)),
            (None, _) => "no write was queued".to_owned(),
        };
        let not_accepted: u64 = queue_sends.iter().map(|q| q.not_accepted).sum();
        let mut promises = vec![
            Check {
                name: "no failed interaction (non-200 or slower than 10 s)".into(),
                kept: Some(failed == 0 && inputs.skipped == 0),
                measured: if inputs.skipped > 0 {
                    format!("{failed} failed of {total}; {} not sent (driver saturated)", inputs.skipped)
                } else {
                    format!("{failed} failed of {total}")
                },
                limit: "0".into(),
            },
            Check {
                name: "no warm VIP answered with another tier".into(),
                kept: Some(warm_vip_misrouted == 0),
                measured: format!("{warm_vip_misrouted} of {warm_vip_lookups}"),
                limit: "0".into(),
            },
            Check {
                name: "no customer the CRM knows answered default during the outage".into(),
                kept: coverage.synced.as_ref().map(|_| coverage.known_default == 0),
                measured: format!(
                    "{} of {} ({} of {} unknown numbers answered default)",
                    coverage.known_default, coverage.known_lookups, coverage.unknown_default, coverage.unknown_lookups
                ),
                limit: if coverage.synced.is_some() { "0".into() } else { "0 (not judged: --no-sync)".into() },
            },
            Check {
                name: format!(
                    "no lookup waited the CRM deadline once the breaker was open (outage + {:.0} s → recovery, hang)",
                    settings.breaker_settle_secs
                ),
                kept: settings.callers_wait().then_some(outage_latency.breaker_open_waited_deadline == 0),
                measured: format!(
                    "{} of {}",
                    outage_latency.breaker_open_waited_deadline, outage_latency.breaker_open_lookups
                ),
                limit: "0 (the half-open probe goes after the response)".into(),
            },
            Check {
                name: "no lost write".into(),
                kept: Some(writes.never_delivered == 0),
                measured: format!("{} never delivered of {}", writes.never_delivered, writes.issued),
                limit: "0".into(),
            },
            Check {
                name: "no duplicated write".into(),
                kept: Some(writes.delivered_more_than_once == 0),
                measured: format!("{} delivered more than once", writes.delivered_more_than_once),
                limit: "0".into(),
            },
            Check {
                name: "nothing in the dead-letter queue".into(),
                kept: Some(queues.dead_lettered == 0),
                measured: format!("{} dead-lettered during the drill", queues.dead_lettered),
                limit: "0".into(),
            },
            Check {
                name: "the backlog drains in time".into(),
                kept: Some(drain_kept),
                measured: drain_measured.clone(),
                limit: format!("≤ {} after recovery", secs(drain_limit_ms)),
            },
            Check {
                name: "one correlationId from the Data Action to the CRM".into(),
                kept: inputs.traced.as_ref().map(Traced::complete),
                measured: match &inputs.traced {
                    Some(t) => format!(
                        "{} of {} queued writes, {} of {} refreshes",
                        t.queued_writes_traced, t.queued_writes, t.refreshes_traced, t.refreshes
                    ),
                    None => "not traced".to_owned(),
                },
                limit: "all".into(),
            },
            Check {
                name: "no phone number in the logs, tables or dead letters".into(),
                kept: inputs.log_scan.as_ref().map(|scan| scan.total_hits() == 0),
                measured: match &inputs.log_scan {
                    Some(scan) if scan.hits.is_empty() => {
                        let counted = |n: Option<u64>| n.map_or("unread".to_owned(), |n| n.to_string());
                        format!(
                            "0 in {} log files ({} KiB), {} items, {} dead letters",
                            scan.files,
                            scan.bytes / 1024,
                            counted(scan.items),
                            counted(scan.dead_letters)
                        )
                    }
                    Some(scan) => {
                        let files: Vec<String> = scan.hits.iter().map(|(f, n)| format!("{f} {n}")).collect();
                        format!("{} found: {}", scan.total_hits(), files.join(", "))
                    }
                    None => "logs not scanned".to_owned(),
                },
                limit: "0".into(),
            },
        ];
        promises.push(Check {
            name: "no write answered NOT_ACCEPTED".into(),
            kept: Some(not_accepted == 0),
            measured: match &timeline.queue_outage {
                Some(_) => format!(
                    "{not_accepted} ({} while the edge's path to SQS was cut; the outbox kept {})",
                    outbox.not_accepted_in_queue_outage, outbox.kept_in_queue_outage
                ),
                None => not_accepted.to_string(),
            },
            limit: "0 (the queue or the edge's outbox takes every write the CRM does not)".into(),
        });
        if let Some(cut) = &timeline.queue_outage {
            let cut_overlaps_outage = cut.start_ms < timeline.recovery_ms && cut.back_ms > timeline.outage_start_ms;
            let drained = outbox.last_kept_delivery_after_back_secs;
            promises.push(Check {
                name: "the edge's outbox drains once SQS and the CRM are back".into(),
                // A cut that overlaps the CRM's outage must have kept
                // writes; one on its own (the CRM up throughout) keeps none.
                kept: Some(
                    (outbox.kept_in_queue_outage > 0 || !cut_overlaps_outage)
                        && drained.is_none_or(|d| d <= OUTBOX_DRAIN_SECS),
                ),
                measured: match drained {
                    Some(d) => format!("{} writes kept; the last delivered {} after", outbox.kept, secs(d * 1000.0)),
                    None => format!("{} writes kept; none delivered", outbox.kept),
                },
                limit: format!(
                    "≥ 1 kept (a cut that meets the CRM's outage), the last delivered ≤ {OUTBOX_DRAIN_SECS:.0} s after"
                ),
            });
        }
        if outbox.written_in_queue_outage_crm_up > 0 {
            let (made, created) = (outbox.written_in_queue_outage_crm_up, outbox.complete_in_queue_outage_crm_up);
            promises.push(Check {
                name: "with only SQS out of reach, writes are created at once".into(),
                kept: Some(created == made),
                measured: format!("{created} of {made}"),
                limit: "all (the CRM is up: nothing needs the queue)".into(),
            });
        }
        let hang = settings.callers_wait();
        let targets = vec![
            Check {
                name: "lookup p99 over the outage (hang)".into(),
                kept: hang.then_some(outage_latency.p99_ms <= TARGET_OUTAGE_P99_MS),
                measured: ms(outage_latency.p99_ms),
                limit: format!("≤ {}", ms(TARGET_OUTAGE_P99_MS)),
            },
            Check {
                name: format!(
                    "lookup p99 once the breaker is open (outage + {:.0} s → recovery, hang)",
                    settings.breaker_settle_secs
                ),
                kept: hang.then_some(outage_latency.breaker_open_p99_ms < TARGET_BREAKER_OPEN_P99_MS),
                measured: format!(
                    "{} ({} of {} waited the deadline)",
                    ms(outage_latency.breaker_open_p99_ms),
                    outage_latency.breaker_open_waited_deadline,
                    outage_latency.breaker_open_lookups
                ),
                limit: format!("< {}", ms(TARGET_BREAKER_OPEN_P99_MS)),
            },
            Check {
                name: "last write delivered after recovery".into(),
                kept: Some(writes.never_delivered == 0 && drain_ms.is_none_or(|d| d <= TARGET_DRAIN_SECS * 1000.0)),
                measured: drain_measured,
                limit: format!("≤ {TARGET_DRAIN_SECS:.0} s"),
            },
            Check {
                name: "refresh messages per customer per freshness window (outage)".into(),
                kept: Some(refreshes_report.max_per_customer_window <= 1),
                measured: format!(
                    "at most {} ({} messages for {} fallback answers, {} customers)",
                    refreshes_report.max_per_customer_window,
                    refreshes_report.messages,
                    refreshes_report.fallback_lookups,
                    refreshes_report.customers
                ),
                limit: format!("≤ 1 per {} s", settings.freshness_secs),
            },
        ];
        let mut targets = targets;
        targets.push(Check {
            name: "CRM lookups per number per freshness window (before the outage)".into(),
            kept: steady.calls_per_key_window.map(|r| r <= 1.0),
            measured: match (steady.crm_lookups, steady.calls_per_key_window) {
                (Some(calls), Some(ratio)) => format!("{ratio:.2} ({calls} for {} number-windows)", steady.key_windows),
                _ => "not measured".into(),
            },
            limit: "≤ 1".into(),
        });
        targets.push(Check {
            name: "repeat callers answered live (before the outage)".into(),
            kept: Some(steady.repeat_live == 0),
            measured: format!("{} of {}", steady.repeat_live, steady.repeat_lookups),
            limit: "0".into(),
        });
        let promises_kept = promises.iter().all(|c| c.kept != Some(false));
        let targets_met = targets.iter().all(|c| c.kept != Some(false));
        let kept = promises_kept && (!settings.enforce_targets || targets_met);
        let _ = population;
        Self {
            settings,
            timeline,
            phases,
            queue_sends,
            warm_up,
            writes,
            queues,
            warm_vip_lookups,
            warm_vip_misrouted,
            skipped_requests: inputs.skipped,
            log_scan: inputs.log_scan.clone(),
            traced: inputs.traced.clone(),
            refreshes: refreshes_report,
            outage_latency,
            coverage,
            steady,
            drain_pace: inputs.drain_pace,
            outbox,
            promises,
            targets,
            kept,
            samples,
        }
    }

    /// The summary table printed at the end.
    pub fn summary(&self) -> String {
        let s = &self.settings;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "failsoft drill · {} edge · CRM {} for {} · {}/s lookups, {}/s cases, {}/s polls · {}",
            s.edge,
            s.mode,
            duration_text(s.outage_secs),
            s.rates.lookups_per_sec,
            s.rates.cases_per_sec,
            s.rates.polls_per_sec,
            s.started_at
        );
        let _ = writeln!(
            out,
            "before {} · outage {} · after {} · freshness {} s · CRM deadline {} ms · {} warm customers · {} ({} cores)\n",
            duration_text(s.before_secs),
            duration_text(s.outage_secs),
            duration_text(s.after_secs),
            s.freshness_secs,
            s.crm_deadline_ms,
            s.warm_customers,
            s.machine.cpu,
            s.machine.cores
        );
        let _ = writeln!(
            out,
            "{:<7} {:<7} {:>6} {:>7} {:>5} {:>9} {:>9} {:>9}  answers",
            "phase", "kind", "count", "non-200", ">10s", "p50", "p95", "p99"
        );
        for k in &self.phases {
            if k.count == 0 {
                continue;
            }
            let answers: Vec<String> = k.answers.iter().map(|(a, n)| format!("{a} {n}")).collect();
            let _ = writeln!(
                out,
                "{:<7} {:<7} {:>6} {:>7} {:>5} {:>9} {:>9} {:>9}  {}",
                k.phase.as_str(),
                k.kind.as_str(),
                k.count,
                k.non_200,
                k.slower_than_timeout,
                ms(k.p50_ms),
                ms(k.p95_ms),
                ms(k.p99_ms),
                answers.join(" · ")
            );
        }
        let _ = writeln!(
            out,
            "\nqueued writes' SendMessage (Server-Timing), against their {} ms share of the deadline",
            s.deadline_margin_ms
        );
        for q in self.queue_sends.iter().filter(|q| q.sends > 0 || q.not_accepted > 0) {
            let _ = writeln!(
                out,
                "  {:<7} {:>5} sends · p50 {} · p99 {} · max {} · {} used up their share · {} NOT_ACCEPTED",
                q.phase.as_str(),
                q.sends,
                ms(q.p50_ms),
                ms(q.p99_ms),
                ms(q.max_ms),
                q.slow,
                q.not_accepted
            );
        }
        if let Some(cut) = &self.timeline.queue_outage {
            let o = &self.outbox;
            let _ = writeln!(
                out,
                "  the edge's path to SQS {} for {}: the outbox kept {} writes ({} in the cut), {} NOT_ACCEPTED in it{}",
                cut.mode,
                secs(cut.back_ms - cut.start_ms),
                o.kept,
                o.kept_in_queue_outage,
                o.not_accepted_in_queue_outage,
                o.last_kept_delivery_after_back_secs
                    .map(|d| format!("; the last delivered {} after SQS and the CRM were back", secs(d * 1000.0)))
                    .unwrap_or_default()
            );
            if o.written_in_queue_outage_crm_up > 0 {
                let _ = writeln!(
                    out,
                    "  with the CRM up and SQS out of reach: {} writes, {} created at once",
                    o.written_in_queue_outage_crm_up, o.complete_in_queue_outage_crm_up
                );
            }
        }
        let w = &self.writes;
        let answered: Vec<String> = w.answered.iter().map(|(a, n)| format!("{a} {n}")).collect();
        let _ = writeln!(
            out,
            "\nwrites: {} issued ({}) · delivered once {} · more than once {} · never {}",
            w.issued,
            answered.join(", "),
            w.delivered_once,
            w.delivered_more_than_once,
            w.never_delivered
        );
        let _ = writeln!(
            out,
            "queue: deepest {} · at the end {} · dead letters added {} (DLQ {} → {})",
            self.queues.max_depth,
            self.queues.depth_at_end,
            self.queues.dead_lettered,
            self.queues.dlq_at_start,
            self.queues.dlq_at_end
        );
        let drain = match (w.last_queued_delivery_after_recovery_secs, w.queued) {
            (_, 0) => "no write was queued".to_owned(),
            (Some(d), q) if w.never_delivered == 0 => {
                format!("the last of {q} queued writes reached the CRM {d:.1} s after it came back")
            }
            (Some(d), q) => format!(
                "{} of {q} queued writes reached the CRM, the last {d:.1} s after it came back; {} writes never did",
                q.saturating_sub(w.never_delivered),
                w.never_delivered
            ),
            (None, q) => format!("none of the {q} queued writes reached the CRM"),
        };
        let _ = writeln!(out, "drain: {drain}");
        if let Some(pace) = &self.drain_pace {
            let _ = writeln!(out, "CRM pace from its recovery to the drain's end: {}", pace.text());
        }
        let _ = writeln!(
            out,
            "warm VIP lookups answered with another tier: {} of {}",
            self.warm_vip_misrouted, self.warm_vip_lookups
        );
        let c = &self.coverage;
        let synced = match &c.synced {
            Some(sync) => {
                format!("pre-warmed by a {} sync of {} customers in {:.1} s", sync.kind, sync.records, sync.seconds)
            }
            None => "no pre-warm sync".to_owned(),
        };
        let _ = writeln!(
            out,
            "outage coverage ({synced}): customers the CRM knows answered default {} of {}; unknown numbers {} of {}",
            c.known_default, c.known_lookups, c.unknown_default, c.unknown_lookups
        );
        let st = &self.steady;
        let _ = writeln!(
            out,
            "steady state (before the outage): {} CRM lookups for {} number-windows{}; repeat callers answered live {} of {}",
            st.crm_lookups.map_or("?".to_owned(), |n| n.to_string()),
            st.key_windows,
            st.calls_per_key_window.map_or(String::new(), |r| format!(" ({r:.2} each)")),
            st.repeat_live,
            st.repeat_lookups
        );
        let r = &self.refreshes;
        let _ = writeln!(
            out,
            "refreshes during the outage: {} messages for {} fallback answers, {} customers, at most {} per customer per {} s window{}",
            r.messages,
            r.fallback_lookups,
            r.customers,
            r.max_per_customer_window,
            r.window_secs,
            if r.counted_before_queue_empty { " (queue not empty when counted)" } else { "" }
        );
        let _ = writeln!(out, "\npromises");
        for c in &self.promises {
            let _ = writeln!(out, "  {} {:<52} {} (limit {})", mark(c.kept), c.name, c.measured, c.limit);
        }
        let _ = writeln!(out, "targets{}", if s.enforce_targets { " (enforced)" } else { " (measured)" });
        for c in &self.targets {
            let _ = writeln!(out, "  {} {:<52} {} (target {})", mark(c.kept), c.name, c.measured, c.limit);
        }
        let _ = writeln!(out, "\n{}", if self.kept { "PROMISES KEPT" } else { "PROMISE BROKEN" });
        out
    }
}

fn mark(kept: Option<bool>) -> &'static str {
    match kept {
        Some(true) => "✓",
        Some(false) => "✗",
        None => "·",
    }
}

/// `8m`, `2m30s`, `45s`.
pub fn duration_text(secs: f64) -> String {
    let total = secs.round() as u64;
    match (total / 60, total % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

/// A Unix time in milliseconds as `2026-11-28 21:03:04 UTC`.
pub fn utc_text(unix_ms: u64) -> String {
    let t = failsoft_origin::clock::UtcTime::from_unix_ms(unix_ms);
    format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC", t.year, t.month, t.day, t.hour, t.minute, t.second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.50), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.99), 0.0);
    }

    #[test]
    fn times_print_plainly() {
        assert_eq!(utc_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_text(1_795_900_000_000), "2026-11-28 21:06:40 UTC");
        assert_eq!(duration_text(480.0), "8m");
        assert_eq!(duration_text(30.0), "30s");
        assert_eq!(duration_text(150.0), "2m30s");
    }
}
