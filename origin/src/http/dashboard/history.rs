//! What the dashboard shows beyond `/v1/health`: the queue and DLQ depths of
//! the last hour, and the latest dead letters. Both are bounded in-memory
//! rings of this process, fed by one-line hooks in the depth sampler
//! ([`crate::telemetry::sample_depths`]) and in [`crate::dead_letter`]; a
//! restart starts them empty (the queues themselves are the record).
//!
//! Nothing here is personal: a dead letter is kept as its correlationId,
//! kind, error class, last status, reason code and attempts, never its body.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::clock;
use crate::deliver::delivery::DeadLetter;
use crate::telemetry::DEPTH_SAMPLE_EVERY;

/// How far back the depth chart looks.
pub const DEPTH_WINDOW: Duration = Duration::from_secs(3_600);
/// One hour of samples at the sampler's pace (720 at 5 s): the ring's bound,
/// so a process that runs for weeks holds the same few kilobytes.
pub const DEPTH_POINTS: usize = (DEPTH_WINDOW.as_secs() / DEPTH_SAMPLE_EVERY.as_secs()) as usize;
/// The dead letters kept for the table: enough for an incident's first
/// minutes; `failsoft dlq list` reads the queue itself for the rest.
pub const RECENT_DEAD_LETTERS: usize = 50;
/// A reason longer than this is cut: reasons are codes, and the bound keeps
/// an unexpected long text out of the page.
const REASON_CHARS: usize = 200;

static DEPTHS: Mutex<VecDeque<DepthPoint>> = Mutex::new(VecDeque::new());
static DEAD_LETTERS: Mutex<VecDeque<RecentDeadLetter>> = Mutex::new(VecDeque::new());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One sample of both depths; `None` where that queue's sample failed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DepthPoint {
    /// Unix milliseconds.
    pub at: u64,
    pub queue: Option<u64>,
    pub dlq: Option<u64>,
}

/// One dead letter, as the dashboard's table shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecentDeadLetter {
    pub correlation_id: Option<String>,
    pub kind: String,
    pub error_class: String,
    pub last_status: Option<u16>,
    pub reason: String,
    pub attempts: u32,
    /// Unix milliseconds.
    pub at: u64,
}

/// Records one depth sample taken now (the sampler's hook).
pub fn record_depths(queue: Option<u64>, dlq: Option<u64>) {
    push_depth(&mut lock(&DEPTHS), DepthPoint { at: clock::now_ms(), queue, dlq });
}

fn push_depth(ring: &mut VecDeque<DepthPoint>, point: DepthPoint) {
    ring.push_back(point);
    let oldest = point.at.saturating_sub(DEPTH_WINDOW.as_millis() as u64);
    while ring.len() > DEPTH_POINTS || ring.front().is_some_and(|p| p.at < oldest) {
        ring.pop_front();
    }
}

/// Records one dead letter after `attempts` receives, at `at_ms` (the
/// dead-lettering hook).
pub fn record_dead_letter(why: &DeadLetter, attempts: u32, at_ms: u64) {
    push_dead_letter(&mut lock(&DEAD_LETTERS), RecentDeadLetter::new(why, attempts, at_ms));
}

impl RecentDeadLetter {
    fn new(why: &DeadLetter, attempts: u32, at: u64) -> Self {
        let reason = if why.reason.chars().count() > REASON_CHARS {
            why.reason.chars().take(REASON_CHARS).chain(['…']).collect()
        } else {
            why.reason.clone()
        };
        Self {
            correlation_id: why.correlation_id.clone(),
            kind: why.kind.to_owned(),
            error_class: why.error_class.to_owned(),
            last_status: why.last_status,
            reason,
            attempts,
            at,
        }
    }
}

fn push_dead_letter(ring: &mut VecDeque<RecentDeadLetter>, entry: RecentDeadLetter) {
    ring.push_back(entry);
    while ring.len() > RECENT_DEAD_LETTERS {
        ring.pop_front();
    }
}

/// The depth samples of the last hour, oldest first.
pub fn depths() -> Vec<DepthPoint> {
    lock(&DEPTHS).iter().copied().collect()
}

/// The latest dead letters, newest first.
pub fn dead_letters() -> Vec<RecentDeadLetter> {
    lock(&DEAD_LETTERS).iter().rev().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(reason: &str) -> DeadLetter {
        DeadLetter {
            reason: reason.to_owned(),
            error_class: "permanent",
            last_status: Some(422),
            correlation_id: Some("c-1".to_owned()),
            kind: "write",
        }
    }

    fn letter(n: u64) -> RecentDeadLetter {
        RecentDeadLetter::new(&why("CRM_REJECTED"), 1, n)
    }

    #[test]
    fn an_hour_of_samples_is_720_points() {
        assert_eq!(DEPTH_POINTS, 720);
        let mut ring = VecDeque::new();
        for i in 0..1_000u64 {
            push_depth(&mut ring, DepthPoint { at: 1_000_000 + i * 5_000, queue: Some(i), dlq: None });
        }
        assert_eq!(ring.len(), DEPTH_POINTS);
        assert_eq!(ring.back().unwrap().queue, Some(999));
    }

    #[test]
    fn samples_older_than_an_hour_go_even_when_few() {
        let mut ring = VecDeque::new();
        push_depth(&mut ring, DepthPoint { at: 1_000, queue: Some(1), dlq: Some(0) });
        push_depth(&mut ring, DepthPoint { at: 1_000 + 3_600_001, queue: Some(2), dlq: Some(0) });
        assert_eq!(ring.iter().map(|p| p.queue).collect::<Vec<_>>(), [Some(2)]);
    }

    #[test]
    fn the_dead_letter_ring_keeps_the_latest_fifty() {
        let mut ring = VecDeque::new();
        for n in 0..60 {
            push_dead_letter(&mut ring, letter(n));
        }
        assert_eq!(ring.len(), RECENT_DEAD_LETTERS);
        assert_eq!(ring.front().unwrap().at, 10);
    }

    #[test]
    fn long_reasons_are_cut_and_the_json_is_camel_case() {
        record_dead_letter(&why(&"x".repeat(500)), 3, 7);
        let newest = dead_letters().into_iter().find(|d| d.at == 7).unwrap();
        assert_eq!((newest.reason.chars().count(), newest.attempts), (REASON_CHARS + 1, 3));
        let json = serde_json::to_value(&newest).unwrap();
        assert_eq!(
            (&json["correlationId"], &json["errorClass"], &json["lastStatus"]),
            (&serde_json::json!("c-1"), &serde_json::json!("permanent"), &serde_json::json!(422))
        );
    }
}
