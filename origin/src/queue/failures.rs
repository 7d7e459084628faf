//! How many times each message's delivery has failed: the attempt number
//! the backoff doubles on.
//!
//! SQS's `ApproximateReceiveCount` counts receives, and most receives are
//! not failed attempts: a write settling, a message handed back behind its
//! group's head, a breaker that opened mid-batch, a crashed worker's lease
//! running out. A write received six times that then failed once would wait
//! up to 64 s (base 1 s · 2^6) for its second attempt, and the drain after
//! an outage would wait with it. So the worker counts the failures it saw.
//!
//! The counts live in this process: a restarted worker, or another one,
//! starts a message again at zero, which only shortens its next backoff (the
//! breaker still guards the CRM, and the budget is an age, not a count).

use std::collections::HashMap;
use std::sync::Mutex;

/// More messages than this failing at once is not a backoff problem: the
/// breaker is open. Past it the counts start again rather than grow.
const MAX_TRACKED: usize = 100_000;

/// Failed attempts per SQS message id.
#[derive(Debug, Default)]
pub struct Failures {
    counts: Mutex<HashMap<String, u32>>,
}

impl Failures {
    /// Counts a failed attempt at `message_id` and returns its 0-based
    /// number: the failures before this one.
    pub fn record(&self, message_id: &str) -> u32 {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.len() >= MAX_TRACKED && !counts.contains_key(message_id) {
            counts.clear();
        }
        let count = counts.entry(message_id.to_owned()).or_insert(0);
        let before = *count;
        *count = count.saturating_add(1);
        before
    }

    /// The message is delivered or dead-lettered: nothing more to count.
    pub fn forget(&self, message_id: &str) {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).remove(message_id);
    }

    /// Messages with a failure counted and no outcome yet.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_messages_failures_from_zero_until_forgotten() {
        let f = Failures::default();
        assert_eq!((f.record("a"), f.record("a"), f.record("b"), f.record("a")), (0, 1, 0, 2));
        f.forget("a");
        assert_eq!(f.record("a"), 0, "a message delivered and seen again starts over");
        assert_eq!(f.record("b"), 1, "forgetting one leaves the others");
        assert_eq!(f.tracked(), 2);
    }

    #[test]
    fn past_the_bound_the_counts_start_again_instead_of_growing() {
        let f = Failures::default();
        for i in 0..MAX_TRACKED {
            f.record(&i.to_string());
        }
        assert_eq!(f.record("0"), 1, "a message already counted is counted on");
        assert_eq!(f.tracked(), MAX_TRACKED);
        assert_eq!(f.record("new"), 0);
        assert_eq!(f.tracked(), 1, "cleared, then the new one");
    }
}
