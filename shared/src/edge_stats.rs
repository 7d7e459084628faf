//! The edge's traffic counters and when to report them to the origin.
//!
//! The edge answers the Data Actions, so only it knows the cache hit rate
//! and the degraded share. An [`EdgeStats`] lives in each isolate (each
//! process on the native host); the facade [`EdgeStats::record`]s every
//! answer on the response path (a few integer additions), and after the
//! response asks [`EdgeStats::take_report`] whether a [`Report`] is due.
//!
//! Delivery is exactly-once by construction: every report carries the
//! isolate's random id and a sequence number, and the origin counts a given
//! `(isolate, seq)` once. A report whose send failed is handed back with
//! [`EdgeStats::failed`] and resent *unchanged* (same `seq`) until the
//! origin acknowledges it, so a resend after a timeout that did reach the
//! origin is recognised there instead of counted twice. Meanwhile new
//! answers keep accumulating into the next report: memory stays two fixed
//! sets of counters however long the origin is away, and nothing is lost.
//!
//! (Over 500 lines only with its unit tests, kept beside the code.)

use alloc::string::String;
use serde::{Deserialize, Serialize};

use crate::ladder::Source;

/// The origin's route that receives reports.
pub const REPORT_PATH: &str = "/v1/internal/edge-stats";
/// The wire format's version; the origin refuses any other.
pub const REPORT_VERSION: u32 = 1;

/// Upper bounds of the latency buckets, milliseconds; one more bucket holds
/// everything slower. The Data Action timeout (10 s) is the last bound, the
/// guide's 500 ms warning one of them.
pub const LATENCY_BOUNDS_MS: [u64; 10] = [10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];
/// Buckets in a report: the bounds plus the overflow.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// Default: a report covers at most this much time of traffic. Bounds how
/// stale the origin's view is (its health window is minutes long) while
/// keeping a busy isolate to six small POSTs a minute.
pub const DEFAULT_REPORT_EVERY_MS: u64 = 10_000;
/// Shortest accepted report interval (tests compress it; below this a busy
/// edge would spend more on reports than on answers).
pub const MIN_REPORT_EVERY_MS: u64 = 200;
/// Longest accepted report interval: past the origin's 5-minute window the
/// health signals would describe nothing.
pub const MAX_REPORT_EVERY_MS: u64 = 60_000;
/// A report is due early once this many answers have accumulated, so a
/// burst reaches the origin before the interval ends.
pub const REPORT_AT_ANSWERS: u64 = 1_000;
/// How long a host waits for the origin to take a report: it runs after
/// the response, but a hung origin must not keep a Worker's `wait_until`
/// or a Spin instance alive for long.
pub const SEND_DEADLINE_MS: u64 = 2_000;
/// A report handed out and neither acknowledged nor failed within this long
/// is treated as failed (its sender was cancelled, e.g. an isolate evicted
/// during `wait_until`); far above the send deadline, so a send still in
/// its deadline is never resent under it.
pub const IN_FLIGHT_LIMIT_MS: u64 = 30_000;
const _: () = assert!(IN_FLIGHT_LIMIT_MS >= 10 * SEND_DEADLINE_MS);
/// Longest isolate id the origin accepts.
pub const MAX_ISOLATE_LEN: usize = 64;

/// `a += b`, saturating: counts come from outside.
fn add(a: &mut u64, b: u64) {
    *a = a.saturating_add(b);
}

/// The saturating sum of `counts`.
fn sum(counts: &[u64]) -> u64 {
    counts.iter().fold(0, |total, &n| total.saturating_add(n))
}

/// Lookup answers by source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LookupCounts {
    pub cache: u64,
    pub live: u64,
    pub stale_cache: u64,
    pub default: u64,
}

impl LookupCounts {
    pub fn total(&self) -> u64 {
        sum(&[self.cache, self.live, self.stale_cache, self.default])
    }

    /// Answers Genesys received with a warning (stale or default).
    pub fn degraded(&self) -> u64 {
        self.stale_cache.saturating_add(self.default)
    }
}

/// How a write was answered (the facade's `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Complete,
    Pending,
    Failed,
    NotAccepted,
}

/// Write answers by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WriteCounts {
    pub complete: u64,
    pub pending: u64,
    pub failed: u64,
    pub not_accepted: u64,
}

impl WriteCounts {
    pub fn total(&self) -> u64 {
        sum(&[self.complete, self.pending, self.failed, self.not_accepted])
    }
}

/// Data Action answer latency: counts per bucket (not cumulative) of
/// [`LATENCY_BOUNDS_MS`] plus the overflow, and the sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LatencyCounts {
    pub buckets: [u64; LATENCY_BUCKETS],
    pub sum_ms: u64,
}

impl LatencyCounts {
    pub fn record(&mut self, ms: u64) {
        let slot = LATENCY_BOUNDS_MS.iter().position(|&bound| ms <= bound).unwrap_or(LATENCY_BOUNDS_MS.len());
        add(&mut self.buckets[slot], 1);
        self.sum_ms = self.sum_ms.saturating_add(ms);
    }

    pub fn count(&self) -> u64 {
        sum(&self.buckets)
    }

    fn merge(&mut self, other: &LatencyCounts) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            add(mine, theirs);
        }
        add(&mut self.sum_ms, other.sum_ms);
    }
}

/// Everything counted over a stretch of time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Counts {
    pub lookups: LookupCounts,
    pub writes: WriteCounts,
    /// Requests refused as the caller's fault (4xx).
    pub refusals: u64,
    /// Messages the queue did not take (refreshes and writes).
    pub forward_failures: u64,
    /// How long each `SendMessage` to the queue took, taken or not
    /// (refreshes and writes).
    #[serde(default)]
    pub queue_sends: LatencyCounts,
    /// Sends that ran out of their share of the deadline: a write's is the
    /// deadline margin, so each of these was a write answered
    /// `NOT_ACCEPTED` or a refresh dropped because the queue was slow, not
    /// down.
    #[serde(default)]
    pub slow_queue_sends: u64,
    /// Latency of lookup and write answers (refusals excluded: they say
    /// nothing about the CRM path and would flatter the distribution).
    pub latency: LatencyCounts,
}

impl Counts {
    /// Answers counted (lookups, writes, refusals).
    pub fn answers(&self) -> u64 {
        sum(&[self.lookups.total(), self.writes.total(), self.refusals])
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Adds `other` in (the origin sums reports into its window). Every
    /// count saturates: a report is an edge's word, and a hostile or broken
    /// one must not overflow the origin's window.
    pub fn merge(&mut self, other: &Counts) {
        let (l, o) = (&mut self.lookups, &other.lookups);
        for (mine, theirs) in [
            (&mut l.cache, o.cache),
            (&mut l.live, o.live),
            (&mut l.stale_cache, o.stale_cache),
            (&mut l.default, o.default),
        ] {
            add(mine, theirs);
        }
        let (w, o) = (&mut self.writes, &other.writes);
        for (mine, theirs) in [
            (&mut w.complete, o.complete),
            (&mut w.pending, o.pending),
            (&mut w.failed, o.failed),
            (&mut w.not_accepted, o.not_accepted),
        ] {
            add(mine, theirs);
        }
        add(&mut self.refusals, other.refusals);
        add(&mut self.forward_failures, other.forward_failures);
        add(&mut self.slow_queue_sends, other.slow_queue_sends);
        self.queue_sends.merge(&other.queue_sends);
        self.latency.merge(&other.latency);
    }
}

/// One answer, as the facade counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Lookup(Source),
    Write(WriteOutcome),
    /// A 4xx: the caller's fault.
    Refused,
}

/// One `SendMessage` to the queue, as the facade counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSend {
    /// How long it took, milliseconds.
    pub ms: u64,
    /// The share of the deadline it had.
    pub share_ms: u64,
    /// Whether the queue took the message.
    pub taken: bool,
}

/// What the edge POSTs to the origin (`/v1/internal/edge-stats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Report {
    /// [`REPORT_VERSION`].
    pub v: u32,
    /// The reporting isolate's random id.
    pub isolate: String,
    /// 0, 1, 2… per isolate; `(isolate, seq)` identifies the report.
    pub seq: u64,
    /// First and last moment covered, Unix milliseconds.
    pub from_ms: u64,
    pub to_ms: u64,
    pub counts: Counts,
    /// What the edge's write outbox held when the report was sent (absent:
    /// the edge has none). Sent only by an edge that has one, so an origin
    /// must be upgraded first (reports deny unknown fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<OutboxLevel>,
}

/// An edge's write outbox, as its report says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboxLevel {
    pub entries: u64,
    pub bytes: u64,
    /// When the oldest waiting write was kept, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_at_ms: Option<u64>,
}

/// Why the origin refuses a report's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("unsupported report version")]
    Version,
    #[error("the isolate id must be 1-64 letters, digits, '-' or '_'")]
    Isolate,
    #[error("toMs is before fromMs")]
    Interval,
}

impl ReportError {
    pub fn code(self) -> &'static str {
        match self {
            Self::Version => "UNSUPPORTED_VERSION",
            Self::Isolate => "INVALID_ISOLATE",
            Self::Interval => "INVALID_INTERVAL",
        }
    }
}

impl Report {
    /// Checks what serde cannot (the counts' shape is checked by parsing).
    pub fn validate(&self) -> Result<(), ReportError> {
        if self.v != REPORT_VERSION {
            return Err(ReportError::Version);
        }
        let id_ok = (1..=MAX_ISOLATE_LEN).contains(&self.isolate.len())
            && self.isolate.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !id_ok {
            return Err(ReportError::Isolate);
        }
        if self.to_ms < self.from_ms {
            return Err(ReportError::Interval);
        }
        Ok(())
    }
}

/// When an isolate reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    /// A long-lived isolate or process: every `every_ms` of traffic, or
    /// sooner at [`REPORT_AT_ANSWERS`].
    Batched { every_ms: u64 },
    /// An instance that serves one request (Spin): whatever it counted,
    /// at once, since nothing in its memory survives the request.
    EveryInstance,
}

impl Default for Cadence {
    fn default() -> Self {
        Self::Batched { every_ms: DEFAULT_REPORT_EVERY_MS }
    }
}

#[derive(Debug, Clone)]
enum Unsent {
    /// Handed to a sender at `since_ms`.
    InFlight { report: Report, since_ms: u64 },
    /// Its send failed; resent unchanged from `retry_at_ms`.
    Failed { report: Report, retry_at_ms: u64 },
}

/// One isolate's accumulator (see the module's doc).
#[derive(Debug, Clone)]
pub struct EdgeStats {
    isolate: String,
    cadence: Cadence,
    next_seq: u64,
    current: Counts,
    current_from_ms: Option<u64>,
    unsent: Option<Unsent>,
}

impl EdgeStats {
    /// `isolate` should be random (e.g. 128 bits in hex): ids of isolates
    /// that ran at different times must not collide at the origin.
    pub fn new(isolate: String, cadence: Cadence) -> Self {
        Self { isolate, cadence, next_seq: 0, current: Counts::default(), current_from_ms: None, unsent: None }
    }

    pub fn isolate(&self) -> &str {
        &self.isolate
    }

    /// Counts one answer that took `latency_ms`.
    pub fn record(&mut self, answer: Answer, latency_ms: u64, now_ms: u64) {
        self.current_from_ms.get_or_insert(now_ms);
        let c = &mut self.current;
        match answer {
            Answer::Lookup(source) => {
                match source {
                    Source::Cache => c.lookups.cache += 1,
                    Source::Live => c.lookups.live += 1,
                    Source::StaleCache => c.lookups.stale_cache += 1,
                    Source::Default => c.lookups.default += 1,
                }
                c.latency.record(latency_ms);
            }
            Answer::Write(outcome) => {
                match outcome {
                    WriteOutcome::Complete => c.writes.complete += 1,
                    WriteOutcome::Pending => c.writes.pending += 1,
                    WriteOutcome::Failed => c.writes.failed += 1,
                    WriteOutcome::NotAccepted => c.writes.not_accepted += 1,
                }
                c.latency.record(latency_ms);
            }
            Answer::Refused => c.refusals += 1,
        }
    }

    /// Counts one `SendMessage` that took `ms` of a share of `share_ms`:
    /// whether the queue took the message, and whether the send ran out of
    /// its share.
    pub fn record_queue_send(&mut self, send: QueueSend, now_ms: u64) {
        self.current_from_ms.get_or_insert(now_ms);
        let c = &mut self.current;
        c.queue_sends.record(send.ms);
        if !send.taken {
            c.forward_failures += 1;
        }
        if send.ms >= send.share_ms {
            c.slow_queue_sends += 1;
        }
    }

    /// What has been counted and not yet handed out in a report.
    pub fn current(&self) -> &Counts {
        &self.current
    }

    /// Whether [`Self::take_report`] would return a report now (cheap: for
    /// hosts deciding whether to schedule work after a response).
    pub fn is_due(&self, now_ms: u64) -> bool {
        match &self.unsent {
            Some(Unsent::InFlight { since_ms, .. }) => now_ms.saturating_sub(*since_ms) >= IN_FLIGHT_LIMIT_MS,
            Some(Unsent::Failed { retry_at_ms, .. }) => now_ms >= *retry_at_ms,
            None => self.current_is_due(now_ms),
        }
    }

    fn current_is_due(&self, now_ms: u64) -> bool {
        let Some(from) = self.current_from_ms else { return false };
        match self.cadence {
            Cadence::EveryInstance => true,
            Cadence::Batched { every_ms } => {
                now_ms.saturating_sub(from) >= every_ms || self.current.answers() >= REPORT_AT_ANSWERS
            }
        }
    }

    /// The report to send now, if one is due. One report is out at a time:
    /// an unacknowledged one is resent (same `seq`) before a new one is cut.
    /// The caller must follow up with [`Self::delivered`] or [`Self::failed`].
    pub fn take_report(&mut self, now_ms: u64) -> Option<Report> {
        if !self.is_due(now_ms) {
            return None;
        }
        let report = match self.unsent.take() {
            Some(Unsent::InFlight { report, .. } | Unsent::Failed { report, .. }) => report,
            None => {
                let from_ms = self.current_from_ms.take().unwrap_or(now_ms);
                let report = Report {
                    v: REPORT_VERSION,
                    isolate: self.isolate.clone(),
                    seq: self.next_seq,
                    from_ms,
                    to_ms: now_ms.max(from_ms),
                    counts: core::mem::take(&mut self.current),
                    outbox: None,
                };
                self.next_seq += 1;
                report
            }
        };
        self.unsent = Some(Unsent::InFlight { report: report.clone(), since_ms: now_ms });
        Some(report)
    }

    /// The origin acknowledged report `seq` (or refused it for good: a
    /// malformed report would never be accepted, so it is not resent).
    pub fn delivered(&mut self, seq: u64) {
        if matches!(&self.unsent, Some(Unsent::InFlight { report, .. } | Unsent::Failed { report, .. }) if report.seq == seq)
        {
            self.unsent = None;
        }
    }

    /// The send of `report` failed: it is kept, unchanged, and resent once
    /// the cadence's interval has passed (at once for [`Cadence::EveryInstance`],
    /// whose instance has no later).
    pub fn failed(&mut self, report: Report, now_ms: u64) {
        let retry_in = match self.cadence {
            Cadence::Batched { every_ms } => every_ms,
            Cadence::EveryInstance => 0,
        };
        self.unsent = Some(Unsent::Failed { report, retry_at_ms: now_ms + retry_in });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    const EVERY: u64 = 10_000;

    fn stats() -> EdgeStats {
        EdgeStats::new("iso-1".to_string(), Cadence::Batched { every_ms: EVERY })
    }

    #[test]
    fn latency_lands_in_the_first_bucket_that_holds_it() {
        let mut l = LatencyCounts::default();
        for ms in [0, 10, 11, 500, 10_000, 10_001, 60_000] {
            l.record(ms);
        }
        assert_eq!(l.buckets, [2, 1, 0, 0, 0, 1, 0, 0, 0, 1, 2]);
        assert_eq!((l.count(), l.sum_ms), (7, 80_522));
    }

    #[test]
    fn a_report_of_huge_counts_saturates_instead_of_overflowing() {
        let mut huge = Counts::default();
        huge.lookups.cache = u64::MAX;
        huge.lookups.default = 7;
        huge.writes.pending = u64::MAX - 1;
        huge.refusals = u64::MAX;
        huge.latency.buckets[0] = u64::MAX;
        huge.latency.buckets[1] = 3;
        huge.latency.sum_ms = u64::MAX;
        let mut window = Counts::default();
        window.merge(&huge);
        window.merge(&huge);
        assert_eq!(window.lookups.cache, u64::MAX);
        assert_eq!(window.lookups.default, 14);
        assert_eq!(window.writes.pending, u64::MAX);
        assert_eq!((window.lookups.total(), window.writes.total(), window.answers()), (u64::MAX, u64::MAX, u64::MAX));
        assert_eq!((window.latency.count(), window.latency.sum_ms), (u64::MAX, u64::MAX));
        assert_eq!(window.latency.buckets[1], 6);
    }

    #[test]
    fn nothing_is_due_without_traffic() {
        let mut s = stats();
        assert!(!s.is_due(1_000_000));
        assert_eq!(s.take_report(1_000_000), None);
    }

    #[test]
    fn a_report_is_due_after_the_interval_of_traffic() {
        let mut s = stats();
        s.record(Answer::Lookup(Source::Cache), 3, 1_000);
        s.record(Answer::Lookup(Source::Default), 40, 5_000);
        s.record(Answer::Refused, 0, 6_000);
        assert_eq!(s.take_report(10_999), None, "the interval counts from the first answer");
        let r = s.take_report(11_000).expect("due");
        assert_eq!((r.v, r.isolate.as_str(), r.seq, r.from_ms, r.to_ms), (1, "iso-1", 0, 1_000, 11_000));
        assert_eq!((r.counts.lookups.cache, r.counts.lookups.default, r.counts.refusals), (1, 1, 1));
        assert_eq!(r.counts.latency.count(), 2, "refusals carry no latency");
        assert!(s.current().is_empty());
    }

    #[test]
    fn a_burst_is_reported_before_the_interval() {
        let mut s = stats();
        for _ in 0..REPORT_AT_ANSWERS {
            s.record(Answer::Write(WriteOutcome::Pending), 100, 1_000);
        }
        assert_eq!(s.take_report(1_001).expect("due by count").counts.writes.pending, REPORT_AT_ANSWERS);
    }

    #[test]
    fn a_failed_report_is_resent_unchanged_while_new_answers_wait() {
        let mut s = stats();
        s.record(Answer::Lookup(Source::Live), 200, 0);
        let first = s.take_report(EVERY).unwrap();
        s.record(Answer::Lookup(Source::StaleCache), 5, EVERY + 1);
        assert_eq!(s.take_report(3 * EVERY), None, "one report out at a time");
        s.failed(first.clone(), EVERY + 100);
        assert_eq!(s.take_report(2 * EVERY), None, "not before the retry interval");
        let again = s.take_report(2 * EVERY + 100).unwrap();
        assert_eq!(again, first, "same seq, same counts: the origin's dedup makes the resend safe");
        s.delivered(again.seq);
        let next = s.take_report(3 * EVERY).unwrap();
        assert_eq!((next.seq, next.counts.lookups.stale_cache, next.counts.lookups.live), (1, 1, 0));
        assert_eq!(next.from_ms, EVERY + 1);
    }

    #[test]
    fn nothing_is_lost_or_counted_twice_across_failures() {
        let mut s = stats();
        let mut origin: alloc::vec::Vec<(String, u64)> = alloc::vec::Vec::new();
        let mut counted = Counts::default();
        let mut now = 0;
        for i in 0..200u64 {
            now += 700;
            s.record(Answer::Lookup(if i % 3 == 0 { Source::Cache } else { Source::Live }), i, now);
            if let Some(report) = s.take_report(now) {
                // Every third send is lost; every fifth arrives but its reply is lost.
                match i % 15 {
                    0 | 3 | 6 | 9 | 12 => s.failed(report, now),
                    5 | 10 => {
                        if !origin.contains(&(report.isolate.clone(), report.seq)) {
                            origin.push((report.isolate.clone(), report.seq));
                            counted.merge(&report.counts);
                        }
                        s.failed(report, now);
                    }
                    _ => {
                        if !origin.contains(&(report.isolate.clone(), report.seq)) {
                            origin.push((report.isolate.clone(), report.seq));
                            counted.merge(&report.counts);
                        }
                        s.delivered(report.seq);
                    }
                }
            }
        }
        // Drain what is left.
        for _ in 0..10 {
            now += EVERY;
            if let Some(report) = s.take_report(now) {
                if !origin.contains(&(report.isolate.clone(), report.seq)) {
                    origin.push((report.isolate.clone(), report.seq));
                    counted.merge(&report.counts);
                }
                s.delivered(report.seq);
            }
        }
        assert_eq!(counted.lookups.total(), 200);
        assert_eq!(counted.lookups.cache, 67);
        assert_eq!(counted.latency.sum_ms, (0..200).sum::<u64>());
    }

    #[test]
    fn a_lost_sender_does_not_block_reports_forever() {
        let mut s = stats();
        s.record(Answer::Lookup(Source::Cache), 1, 0);
        let r = s.take_report(EVERY).unwrap();
        assert_eq!(s.take_report(EVERY + IN_FLIGHT_LIMIT_MS - 1), None);
        assert_eq!(s.take_report(EVERY + IN_FLIGHT_LIMIT_MS), Some(r));
    }

    #[test]
    fn an_instance_reports_whatever_it_counted() {
        let mut s = EdgeStats::new("spin-1".to_string(), Cadence::EveryInstance);
        assert!(!s.is_due(5));
        s.record(Answer::Lookup(Source::Cache), 1, 5);
        s.record_queue_send(QueueSend { ms: 3, share_ms: 1_000, taken: false }, 5);
        let r = s.take_report(5).unwrap();
        assert_eq!((r.counts.lookups.cache, r.counts.forward_failures), (1, 1));
    }

    #[test]
    fn a_send_that_uses_up_its_share_is_slow_whether_or_not_it_was_taken() {
        let mut s = stats();
        let send = |ms, taken| QueueSend { ms, share_ms: 1_000, taken };
        s.record_queue_send(send(12, true), 1);
        s.record_queue_send(send(999, true), 2);
        s.record_queue_send(send(1_000, false), 3);
        s.record_queue_send(send(1_400, true), 4);
        let c = s.current();
        assert_eq!((c.queue_sends.count(), c.slow_queue_sends, c.forward_failures), (4, 2, 1));
        assert_eq!(c.queue_sends.buckets[1], 1, "12 ms is in the 25 ms bucket");
    }

    #[test]
    fn a_report_without_the_queue_sends_of_later_edges_is_still_read() {
        let mut s = stats();
        s.record(Answer::Lookup(Source::Cache), 1, 1);
        let text = serde_json::to_string(&s.take_report(EVERY + 1).unwrap()).unwrap();
        let (start, end) = (text.find(",\"queueSends\"").unwrap(), text.find(",\"latency\"").unwrap());
        let older = [&text[..start], &text[end..]].concat();
        assert!(!older.contains("queueSends") && !older.contains("slowQueueSends"), "{older}");
        assert!(serde_json::from_str::<Report>(&older).is_ok(), "{older}");
    }

    #[test]
    fn the_wire_format_round_trips_and_refuses_what_it_does_not_know() {
        let mut s = stats();
        s.record(Answer::Lookup(Source::StaleCache), 120, 1);
        s.record(Answer::Write(WriteOutcome::NotAccepted), 2_600, 2);
        let r = s.take_report(EVERY + 1).unwrap();
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"staleCache\":1") && text.contains("\"notAccepted\":1"), "{text}");
        assert!(text.contains("\"fromMs\":1") && text.contains("\"forwardFailures\":0"), "{text}");
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!((back.validate(), &back), (Ok(()), &r));

        let short = text.replace("[0,0,0,0,1,0,0,0,1,0,0]", "[0,0,1]");
        assert!(serde_json::from_str::<Report>(&short).is_err(), "the bucket count is fixed");
        let unknown = text.replacen('{', "{\"extra\":1,", 1);
        assert!(serde_json::from_str::<Report>(&unknown).is_err());
        let mut bad = back.clone();
        bad.v = 2;
        assert_eq!(bad.validate(), Err(ReportError::Version));
        bad = back.clone();
        bad.isolate = "a b".to_string();
        assert_eq!(bad.validate(), Err(ReportError::Isolate));
        bad = back;
        bad.to_ms = 0;
        assert_eq!(bad.validate(), Err(ReportError::Interval));
    }

    #[test]
    fn merge_adds_every_count() {
        let mut a = Counts::default();
        let mut b = Counts::default();
        b.lookups.cache = 2;
        b.writes.failed = 1;
        b.refusals = 3;
        b.forward_failures = 4;
        b.latency.record(30);
        b.queue_sends.record(7);
        b.slow_queue_sends = 5;
        a.merge(&b);
        a.merge(&b);
        assert_eq!((a.queue_sends.buckets[0], a.queue_sends.sum_ms, a.slow_queue_sends), (2, 14, 10));
        assert_eq!((a.lookups.cache, a.writes.failed, a.refusals, a.forward_failures), (4, 2, 6, 8));
        assert_eq!((a.latency.buckets[2], a.latency.sum_ms), (2, 60));
    }
}
