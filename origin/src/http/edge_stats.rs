//! The edge's traffic reports (`POST /v1/internal/edge-stats`, see
//! [`failsoft_shared::edge_stats`]): counted once per `(isolate, seq)`,
//! fed to Prometheus, and kept in a sliding window from which `/v1/health`
//! computes the cache hit rate and the degraded share of real edge traffic.
//!
//! Metric names (counters unless said): `failsoft_edge_answers_total{source}`
//! (lookups: `cache`, `live`, `stale_cache`, `default`),
//! `failsoft_edge_writes_total{status}`, `failsoft_edge_refusals_total`,
//! `failsoft_edge_forward_failures_total`, the answer latency as a
//! histogram's series (`failsoft_edge_latency_seconds_bucket{le}`
//! cumulative, `_count`, and `_sum` a gauge of seconds), the edge's
//! `SendMessage` time as the same series of
//! `failsoft_edge_queue_send_seconds`, `failsoft_edge_queue_sends_slow_total`
//! (sends that used up their share of the deadline), and
//! `failsoft_edge_reports_total{outcome}` (`counted`, `duplicate`), and
//! the gauges `failsoft_edge_outbox_entries` and `_bytes`: what the edges'
//! write outboxes hold together, as their latest reports said.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use failsoft_shared::edge_stats::{Counts, LATENCY_BOUNDS_MS, LatencyCounts, OutboxLevel, Report};
use serde_json::{Value, json};

pub const ANSWERS: &str = "failsoft_edge_answers_total";
pub const WRITES: &str = "failsoft_edge_writes_total";
pub const REFUSALS: &str = "failsoft_edge_refusals_total";
pub const FORWARD_FAILURES: &str = "failsoft_edge_forward_failures_total";
pub const LATENCY_BUCKET: &str = "failsoft_edge_latency_seconds_bucket";
pub const LATENCY_COUNT: &str = "failsoft_edge_latency_seconds_count";
pub const LATENCY_SUM: &str = "failsoft_edge_latency_seconds_sum";
pub const REPORTS: &str = "failsoft_edge_reports_total";
pub const QUEUE_SEND_BUCKET: &str = "failsoft_edge_queue_send_seconds_bucket";
pub const QUEUE_SEND_COUNT: &str = "failsoft_edge_queue_send_seconds_count";
pub const QUEUE_SEND_SUM: &str = "failsoft_edge_queue_send_seconds_sum";
pub const SLOW_QUEUE_SENDS: &str = "failsoft_edge_queue_sends_slow_total";

pub const OUTBOX_ENTRIES: &str = "failsoft_edge_outbox_entries";
pub const OUTBOX_BYTES: &str = "failsoft_edge_outbox_bytes";
/// Edges whose outbox is remembered at most (bounds memory however many
/// isolates report; a new one past it is not tracked until others age out).
pub const MAX_OUTBOX_EDGES: usize = 10_000;

/// Largest report body accepted. A report is about 400 bytes; the cap
/// bounds what an unauthenticated caller can make the origin buffer.
pub const MAX_REPORT_BYTES: usize = 16 * 1024;
/// The window `/v1/health`'s two edge signals describe (the guide's
/// dashboard looks at the last minutes, not the process's lifetime).
pub const WINDOW: Duration = Duration::from_secs(300);
/// At most this many reports are kept in the window (the oldest go first):
/// bounds memory however many isolates report.
pub const MAX_WINDOW_REPORTS: usize = 10_000;
/// A report id is remembered this long, far longer than an edge keeps
/// resending a report (every interval, ≤ 60 s, until acknowledged)…
pub const DEDUP_HORIZON: Duration = Duration::from_secs(3_600);
/// …and at most this many ids (the oldest are forgotten first).
pub const MAX_REMEMBERED: usize = 100_000;

/// Whether a report was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    Counted,
    /// Its `(isolate, seq)` was counted before: a resend.
    Duplicate,
}

/// The reports seen and the window of recent counts.
#[derive(Debug, Default)]
pub struct Ledger {
    seen: HashSet<(String, u64)>,
    seen_order: VecDeque<(Instant, (String, u64))>,
    window: VecDeque<(Instant, Counts)>,
    /// Each edge's write outbox as its latest report said, with when.
    outboxes: HashMap<String, (Instant, OutboxLevel)>,
}

/// The edges' write outboxes: what those that reported within [`WINDOW`]
/// hold together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxSummary {
    /// Edges (isolates or processes) that reported an outbox.
    pub edges: usize,
    pub entries: u64,
    pub bytes: u64,
    /// When the oldest write any of them holds was kept, Unix milliseconds.
    pub oldest_at_ms: Option<u64>,
}

/// What the window holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowSummary {
    pub counts: Counts,
    pub reports: usize,
}

impl Ledger {
    /// Counts `report` unless its id was counted within the horizon.
    pub fn ingest(&mut self, report: &Report, now: Instant) -> Ingested {
        while self
            .seen_order
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > DEDUP_HORIZON || self.seen.len() >= MAX_REMEMBERED)
        {
            if let Some((_, id)) = self.seen_order.pop_front() {
                self.seen.remove(&id);
            }
        }
        if let Some(level) = report.outbox {
            // A resend carries the outbox as it is now: kept either way.
            if self.outboxes.len() < MAX_OUTBOX_EDGES || self.outboxes.contains_key(&report.isolate) {
                self.outboxes.insert(report.isolate.clone(), (now, level));
            }
        }
        let id = (report.isolate.clone(), report.seq);
        if !self.seen.insert(id.clone()) {
            return Ingested::Duplicate;
        }
        self.seen_order.push_back((now, id));
        self.window.push_back((now, report.counts));
        while self.window.len() > MAX_WINDOW_REPORTS {
            self.window.pop_front();
        }
        Ingested::Counted
    }

    /// The outboxes reported within [`WINDOW`] of `now`, together.
    pub fn outboxes(&mut self, now: Instant) -> OutboxSummary {
        self.outboxes.retain(|_, (at, _)| now.duration_since(*at) <= WINDOW);
        let mut summary = OutboxSummary { edges: self.outboxes.len(), ..OutboxSummary::default() };
        for (_, level) in self.outboxes.values() {
            summary.entries = summary.entries.saturating_add(level.entries);
            summary.bytes = summary.bytes.saturating_add(level.bytes);
            if let Some(at) = level.oldest_at_ms.filter(|_| level.entries > 0) {
                summary.oldest_at_ms = Some(summary.oldest_at_ms.map_or(at, |o| o.min(at)));
            }
        }
        summary
    }

    /// The sum of the reports received within [`WINDOW`] of `now`.
    pub fn summary(&mut self, now: Instant) -> WindowSummary {
        while self.window.front().is_some_and(|(at, _)| now.duration_since(*at) > WINDOW) {
            self.window.pop_front();
        }
        let mut counts = Counts::default();
        for (_, c) in &self.window {
            counts.merge(c);
        }
        WindowSummary { counts, reports: self.window.len() }
    }
}

static LEDGER: LazyLock<Mutex<Ledger>> = LazyLock::new(Mutex::default);

fn ledger() -> std::sync::MutexGuard<'static, Ledger> {
    LEDGER.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts a verified, validated report in the process's ledger and in
/// Prometheus (once per id).
pub fn ingest(report: &Report) -> Ingested {
    let outcome = ledger().ingest(report, Instant::now());
    if report.outbox.is_some() {
        let summary = outboxes();
        metrics::gauge!(OUTBOX_ENTRIES).set(summary.entries as f64);
        metrics::gauge!(OUTBOX_BYTES).set(summary.bytes as f64);
    }
    match outcome {
        Ingested::Counted => {
            record_metrics(&report.counts);
            metrics::counter!(REPORTS, "outcome" => "counted").increment(1);
        }
        Ingested::Duplicate => metrics::counter!(REPORTS, "outcome" => "duplicate").increment(1),
    }
    outcome
}

fn record_metrics(c: &Counts) {
    let l = &c.lookups;
    for (source, n) in [("cache", l.cache), ("live", l.live), ("stale_cache", l.stale_cache), ("default", l.default)] {
        metrics::counter!(ANSWERS, "source" => source).increment(n);
    }
    let w = &c.writes;
    for (status, n) in
        [("complete", w.complete), ("pending", w.pending), ("failed", w.failed), ("not_accepted", w.not_accepted)]
    {
        metrics::counter!(WRITES, "status" => status).increment(n);
    }
    metrics::counter!(REFUSALS).increment(c.refusals);
    metrics::counter!(FORWARD_FAILURES).increment(c.forward_failures);
    histogram([LATENCY_BUCKET, LATENCY_COUNT, LATENCY_SUM], &c.latency);
    histogram([QUEUE_SEND_BUCKET, QUEUE_SEND_COUNT, QUEUE_SEND_SUM], &c.queue_sends);
    metrics::counter!(SLOW_QUEUE_SENDS).increment(c.slow_queue_sends);
}

/// Adds `counts` to a histogram's series `[bucket, count, sum]`.
fn histogram([bucket, count, sum]: [&'static str; 3], counts: &LatencyCounts) {
    let mut cumulative: u64 = 0;
    for (i, n) in counts.buckets.iter().enumerate() {
        // Saturating: the counts are an edge's word.
        cumulative = cumulative.saturating_add(*n);
        let le = LATENCY_BOUNDS_MS.get(i).map_or_else(|| "+Inf".to_owned(), |ms| (*ms as f64 / 1000.0).to_string());
        metrics::counter!(bucket, "le" => le).increment(cumulative);
    }
    metrics::counter!(count).increment(counts.count());
    metrics::gauge!(sum).increment(counts.sum_ms as f64 / 1000.0);
}

/// The process's window now.
pub fn window() -> WindowSummary {
    ledger().summary(Instant::now())
}

/// The edges' write outboxes now.
pub fn outboxes() -> OutboxSummary {
    ledger().outboxes(Instant::now())
}

/// `/v1/health`'s `edgeOutbox`: its level (by the age of the oldest kept
/// write, [`failsoft_shared::health::outbox_level`]) and the document;
/// `None` when no edge with an outbox reported within the window.
pub fn outbox_health(now_ms: u64) -> Option<(failsoft_shared::health::Level, Value)> {
    let summary = outboxes();
    if summary.edges == 0 {
        return None;
    }
    let age_ms = summary.oldest_at_ms.map(|at| now_ms.saturating_sub(at));
    let level = failsoft_shared::health::outbox_level(age_ms);
    Some((
        level,
        json!({
            "level": level,
            "edges": summary.edges,
            "entries": summary.entries,
            "bytes": summary.bytes,
            "oldestAgeSeconds": age_ms.map(|ms| ms / 1000),
            "warningAfterSeconds": failsoft_shared::health::OUTBOX_WARNING_AGE_MS / 1000,
            "criticalAfterSeconds": failsoft_shared::health::OUTBOX_CRITICAL_AGE_MS / 1000,
        }),
    ))
}

/// A `/v1/health` entry's value, source and details for a share of the
/// window's lookups: `part` of them × 100.
pub fn lookup_share(summary: &WindowSummary, part: impl Fn(&Counts) -> u64) -> (Option<f64>, &'static str, Value) {
    if summary.reports == 0 {
        let note = format!("no edge report in the last {} s", WINDOW.as_secs());
        return (None, "not reported", json!({"note": note, "windowSeconds": WINDOW.as_secs()}));
    }
    let lookups = summary.counts.lookups.total();
    let value = (lookups > 0).then(|| part(&summary.counts) as f64 * 100.0 / lookups as f64);
    (value, "edge", json!({"samples": lookups, "reports": summary.reports, "windowSeconds": WINDOW.as_secs()}))
}

/// `cacheHitRate`: cache answers / lookup answers × 100.
pub fn cache_hit_rate(summary: &WindowSummary) -> (Option<f64>, &'static str, Value) {
    lookup_share(summary, |c| c.lookups.cache)
}

/// `degradedShare`: (stale_cache + default) / lookup answers × 100.
pub fn degraded_share(summary: &WindowSummary) -> (Option<f64>, &'static str, Value) {
    lookup_share(summary, |c| c.lookups.degraded())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(isolate: &str, seq: u64, cache: u64, stale: u64, default: u64, live: u64) -> Report {
        let mut counts = Counts::default();
        counts.lookups.cache = cache;
        counts.lookups.stale_cache = stale;
        counts.lookups.default = default;
        counts.lookups.live = live;
        Report { v: 1, isolate: isolate.to_owned(), seq, from_ms: 0, to_ms: 1, counts, outbox: None }
    }

    #[test]
    fn the_edges_outboxes_add_up_with_the_oldest_write_and_age_out_of_the_window() {
        let mut ledger = Ledger::default();
        let start = Instant::now();
        let with = |isolate: &str, seq: u64, entries: u64, oldest: Option<u64>| Report {
            outbox: Some(OutboxLevel { entries, bytes: entries * 100, oldest_at_ms: oldest }),
            ..report(isolate, seq, 0, 0, 0, 0)
        };
        ledger.ingest(&with("a", 0, 2, Some(5_000)), start);
        ledger.ingest(&with("b", 0, 3, Some(4_000)), start);
        ledger.ingest(&with("c", 0, 0, Some(1_000)), start);
        let summary = ledger.outboxes(start);
        assert_eq!(summary, OutboxSummary { edges: 3, entries: 5, bytes: 500, oldest_at_ms: Some(4_000) });
        // A resend says what the edge holds now: b has drained.
        ledger.ingest(&with("b", 0, 0, None), start);
        assert_eq!(ledger.outboxes(start).oldest_at_ms, Some(5_000));
        assert_eq!(ledger.outboxes(start + WINDOW + Duration::from_secs(1)).edges, 0, "silent edges age out");
    }

    #[test]
    fn a_resent_report_is_counted_once() {
        let (mut ledger, now) = (Ledger::default(), Instant::now());
        assert_eq!(ledger.ingest(&report("a", 0, 3, 0, 0, 1), now), Ingested::Counted);
        assert_eq!(ledger.ingest(&report("a", 0, 3, 0, 0, 1), now), Ingested::Duplicate);
        assert_eq!(ledger.ingest(&report("b", 0, 1, 0, 0, 0), now), Ingested::Counted, "another isolate");
        assert_eq!(ledger.ingest(&report("a", 1, 0, 1, 1, 0), now), Ingested::Counted, "the next report");
        let s = ledger.summary(now);
        assert_eq!((s.reports, s.counts.lookups.total(), s.counts.lookups.cache), (3, 7, 4));
    }

    #[test]
    fn the_window_forgets_old_reports() {
        let (mut ledger, start) = (Ledger::default(), Instant::now());
        ledger.ingest(&report("a", 0, 5, 0, 0, 0), start);
        ledger.ingest(&report("a", 1, 0, 1, 0, 0), start + Duration::from_secs(200));
        let s = ledger.summary(start + WINDOW + Duration::from_secs(1));
        assert_eq!((s.reports, s.counts.lookups.cache, s.counts.lookups.stale_cache), (1, 0, 1));
    }

    #[test]
    fn shares_are_of_lookups_and_null_without_reports() {
        let mut ledger = Ledger::default();
        let now = Instant::now();
        let (value, source, _) = cache_hit_rate(&ledger.summary(now));
        assert_eq!((value, source), (None, "not reported"));
        ledger.ingest(&report("a", 0, 6, 1, 1, 2), now);
        let s = ledger.summary(now);
        let (hit, source, extra) = cache_hit_rate(&s);
        assert_eq!((hit, source, &extra["samples"]), (Some(60.0), "edge", &json!(10)));
        assert_eq!(degraded_share(&s).0, Some(20.0));
        let mut writes_only = Ledger::default();
        let mut r = report("w", 0, 0, 0, 0, 0);
        r.counts.writes.pending = 3;
        writes_only.ingest(&r, now);
        assert_eq!(cache_hit_rate(&writes_only.summary(now)).0, None, "no lookups: no rate");
    }
}
