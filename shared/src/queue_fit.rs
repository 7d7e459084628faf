//! Whether the real work queue fits the worker's policy.
//!
//! The worker reads its queue's `RedrivePolicy`, `VisibilityTimeout` and
//! `MessageRetentionPeriod` at start-up and refuses to run on a queue that
//! would break a promise the settings make: SQS redriving a message to the
//! DLQ before the worker's retry budget ends, a second consumer picking up a
//! slow delivery, or SQS dropping a message the worker still retries. The
//! decision is here; the origin only fetches the attributes.
//!
//! # How soon SQS redrives a message that keeps failing
//!
//! SQS counts receives, not failures, and moves a message to the DLQ on the
//! receive after its `maxReceiveCount`-th. The worker dead-letters by age
//! (the retry budget). So the budget holds only if `maxReceiveCount`
//! receives take longer than the budget: `maxReceiveCount` × the time
//! between two receives of one message must exceed it.
//!
//! What sets that time, from the worker's receive loop (`origin/src/queue`)
//! and the retry policy ([`crate::retry`], [`crate::backoff`]):
//!
//! - **A failed attempt** hands the message back with a visibility of the
//!   full-jitter delay: uniform in `[0, min(cap, base · 2^attempt)]`, rounded
//!   up to a whole second and never under [`MIN_HAND_BACK_SECS`] (the
//!   hand-back floor, which keeps a group's head in flight so it stays
//!   first). After attempt `k` the wait is therefore at least
//!   `max(1 s, ceiling_k / 2)` on average; once the ceiling reaches the cap,
//!   `max(1 s, cap / 2)`. A single wait can be as short as the floor, but the
//!   redrive needs hundreds of receives, and their sum concentrates on its
//!   mean (the sum of 1000 waits uniform in `[0, cap]` falls 10 % short of
//!   `500 · cap` with a probability of about 2 × 10⁻⁸, by the normal
//!   approximation).
//! - **The visibility timeout** is not on this path: a message comes back
//!   after it only when its worker died holding it (the heartbeat extends
//!   every held message), and a message that keeps killing its worker is
//!   exactly what the redrive is there to end.
//! - **Hand-backs without an attempt** (the breaker open, a write settling,
//!   another worker's claim, messages behind a waiting head of their group)
//!   do not burn receives at a rate of their own: while the breaker is open
//!   the worker receives nothing, a write settles once, a claim is held for a
//!   bounded lease, and the messages behind a head are received only with
//!   it, at the head's own cadence.
//!
//! So the time SQS needs for `n` receives of a message that fails every
//! attempt is [`redrive_span_ms`]: `Σ_{k<n} max(floor, ceiling_k / 2)`,
//! which past the backoff's ramp is `n × max(1 s, cap / 2)`; the queue fits
//! when that exceeds the budget. With the defaults (base 1 s, cap 300 s,
//! budget 24 h) a message needs 584 receives (256 s of ramp, then 150 s each) to reach the end of its budget:
//! the template's `maxReceiveCount` of 1000 lasts about 41 hours.

use alloc::format;

use crate::backoff::Backoff;
use crate::config::{ConfigError, Policy};

/// The shortest visibility the worker ever hands a message back with: a
/// group's head waiting for its retry stays in flight at least this long,
/// so the group stays locked and the head comes back first.
pub const MIN_HAND_BACK_SECS: u64 = 1;

/// SQS's largest `maxReceiveCount`.
pub const SQS_MAX_RECEIVE_COUNT: u32 = 1_000;

/// The visibility timeout must be at least this many processing limits.
pub const VISIBILITY_PER_PROCESSING_LIMIT: u64 = 6;

/// The attributes of the work queue the policy depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueAttributes {
    /// `RedrivePolicy.maxReceiveCount`; `None`: the queue has no redrive.
    pub max_receive_count: Option<u32>,
    /// `VisibilityTimeout`, in seconds.
    pub visibility_timeout_secs: u64,
    /// `MessageRetentionPeriod`, in seconds.
    pub retention_secs: u64,
}

/// How long, on average, SQS takes to count `receives` receives of a
/// message that fails every attempt: after failed attempt `k` it waits
/// `max(MIN_HAND_BACK_SECS, ceiling_k / 2)` (module docs).
pub fn redrive_span_ms(backoff: &Backoff, receives: u32) -> u64 {
    let floor = MIN_HAND_BACK_SECS * 1000;
    let mut span: u64 = 0;
    for attempt in 0..receives {
        let wait = (backoff.ceiling_ms(attempt) / 2).max(floor);
        if wait >= backoff.cap_ms / 2 && wait >= floor {
            // Past the ramp every wait is the same.
            let left = u64::from(receives - attempt);
            return span.saturating_add(wait.saturating_mul(left));
        }
        span = span.saturating_add(wait);
    }
    span
}

/// The fewest receives whose [`redrive_span_ms`] exceeds `budget_ms`, if
/// SQS allows that many.
pub fn receives_needed(backoff: &Backoff, budget_ms: u64) -> Option<u32> {
    (1..=SQS_MAX_RECEIVE_COUNT).find(|&n| redrive_span_ms(backoff, n) > budget_ms)
}

/// Refuses a queue that does not fit `policy`, naming the queue attribute
/// and the settings it conflicts with, with the numbers.
pub fn check(policy: &Policy, queue: &QueueAttributes) -> Result<(), ConfigError> {
    let budget_secs = policy.retry.budget_ms / 1000;
    let needed_visibility = policy.processing_limit_secs.saturating_mul(VISIBILITY_PER_PROCESSING_LIMIT);
    if queue.visibility_timeout_secs < needed_visibility {
        return Err(ConfigError::new(
            "VisibilityTimeout",
            format!(
                "the work queue's visibility timeout of {} s is under {VISIBILITY_PER_PROCESSING_LIMIT} × \
                 FAILSOFT_PROCESSING_LIMIT_SECS ({} s) = {needed_visibility} s: a slow delivery could be \
                 handed to a second consumer; raise the queue's VisibilityTimeout to at least {needed_visibility} s",
                queue.visibility_timeout_secs, policy.processing_limit_secs
            ),
        ));
    }
    if queue.retention_secs.saturating_mul(1000) < policy.retry.budget_ms {
        return Err(ConfigError::new(
            "MessageRetentionPeriod",
            format!(
                "the work queue keeps a message {} s, under FAILSOFT_RETRY_BUDGET_SECS ({budget_secs} s): SQS \
                 would delete messages the worker still retries; raise the queue's MessageRetentionPeriod to at \
                 least {budget_secs} s or lower the budget",
                queue.retention_secs
            ),
        ));
    }
    if let Some(count) = queue.max_receive_count {
        let backoff = &policy.retry.backoff;
        let span_ms = redrive_span_ms(backoff, count);
        if span_ms <= policy.retry.budget_ms {
            let remedy = match receives_needed(backoff, policy.retry.budget_ms) {
                Some(n) => format!("raise maxReceiveCount to at least {n}, raise the cap or lower the budget"),
                None => format!(
                    "no maxReceiveCount SQS allows (at most {SQS_MAX_RECEIVE_COUNT}) is enough: raise the cap or \
                     lower the budget"
                ),
            };
            let at_cap_ms = (backoff.cap_ms / 2).max(MIN_HAND_BACK_SECS * 1000);
            return Err(ConfigError::new(
                "maxReceiveCount",
                format!(
                    "the work queue's redrive policy dead-letters a message after {count} receives, about {} s \
                     for a message that keeps failing (one receive every {} ms on average at \
                     FAILSOFT_BACKOFF_CAP_MS {} with FAILSOFT_BACKOFF_BASE_MS {}: full jitter, never under the \
                     {MIN_HAND_BACK_SECS} s hand-back), which is not longer than FAILSOFT_RETRY_BUDGET_SECS \
                     ({budget_secs} s): SQS would redrive before the worker's budget ends; {remedy}",
                    span_ms / 1000,
                    at_cap_ms,
                    backoff.cap_ms,
                    backoff.base_ms
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn policy(cap_ms: u64, budget_secs: u64) -> Policy {
        let mut p = Policy::default();
        p.retry.backoff.cap_ms = cap_ms;
        p.retry.budget_ms = budget_secs * 1000;
        p
    }

    /// What `deploy/aws/failsoft.yaml` makes by default (and `init-local`).
    const TEMPLATE: QueueAttributes =
        QueueAttributes { max_receive_count: Some(1_000), visibility_timeout_secs: 120, retention_secs: 1_209_600 };

    #[test]
    fn the_defaults_fit_the_templates_queue() {
        assert_eq!(check(&Policy::default(), &TEMPLATE), Ok(()));
        // About 41 hours of receives for a 24-hour budget.
        let span = redrive_span_ms(&Policy::default().retry.backoff, 1_000);
        assert!((40 * 3_600_000..42 * 3_600_000).contains(&span), "{span}");
        assert_eq!(receives_needed(&Policy::default().retry.backoff, 86_400_000), Some(584));
    }

    #[test]
    fn the_span_ramps_then_grows_by_half_the_cap_per_receive() {
        let b = Backoff { base_ms: 1_000, cap_ms: 300_000 };
        // Ceilings 1, 2, 4 s: waits max(1 s, ceiling / 2) = 1, 1, 2 s.
        assert_eq!(redrive_span_ms(&b, 3), 4_000);
        // Past the ramp (ceiling 300 s from attempt 9) each receive adds 150 s.
        assert_eq!(redrive_span_ms(&b, 101) - redrive_span_ms(&b, 100), 150_000);
        // The hand-back floor: a tiny cap still costs a second per receive.
        let tiny = Backoff { base_ms: 200, cap_ms: 400 };
        assert_eq!(redrive_span_ms(&tiny, 1_000), 1_000_000);
        assert_eq!(redrive_span_ms(&b, 0), 0);
    }

    #[test]
    fn a_small_receive_count_is_refused_with_the_numbers() {
        let err = check(&Policy::default(), &QueueAttributes { max_receive_count: Some(100), ..TEMPLATE }).unwrap_err();
        assert_eq!(err.setting, "maxReceiveCount");
        let text = err.to_string();
        for number in ["after 100 receives", "150000 ms", "86400 s", "at least 584"] {
            assert!(text.contains(number), "{number} in {text}");
        }
        // 584 receives are enough, 583 are not.
        assert!(check(&Policy::default(), &QueueAttributes { max_receive_count: Some(584), ..TEMPLATE }).is_ok());
        assert!(check(&Policy::default(), &QueueAttributes { max_receive_count: Some(583), ..TEMPLATE }).is_err());
    }

    #[test]
    fn a_short_cap_needs_a_short_budget() {
        // Backoff capped at 2 s: one receive a second, 1000 receives in ~17 minutes.
        let short = policy(2_000, 86_400);
        let err = check(&short, &TEMPLATE).unwrap_err();
        assert_eq!(err.setting, "maxReceiveCount");
        assert!(err.to_string().contains("no maxReceiveCount SQS allows"), "{err}");
        assert_eq!(check(&policy(2_000, 900), &TEMPLATE), Ok(()));
    }

    #[test]
    fn no_redrive_policy_means_no_redrive_to_fit() {
        assert_eq!(check(&policy(2_000, 86_400), &QueueAttributes { max_receive_count: None, ..TEMPLATE }), Ok(()));
    }

    #[test]
    fn visibility_under_six_processing_limits_is_refused() {
        let err = check(&Policy::default(), &QueueAttributes { visibility_timeout_secs: 30, ..TEMPLATE }).unwrap_err();
        assert_eq!(err.setting, "VisibilityTimeout");
        assert!(err.to_string().contains("30 s is under 6 × FAILSOFT_PROCESSING_LIMIT_SECS (20 s) = 120 s"), "{err}");
        assert!(check(&Policy::default(), &QueueAttributes { visibility_timeout_secs: 119, ..TEMPLATE }).is_err());
    }

    #[test]
    fn retention_under_the_budget_is_refused() {
        let err = check(&Policy::default(), &QueueAttributes { retention_secs: 3_600, ..TEMPLATE }).unwrap_err();
        assert_eq!(err.setting, "MessageRetentionPeriod");
        assert!(err.to_string().contains("3600 s, under FAILSOFT_RETRY_BUDGET_SECS (86400 s)"), "{err}");
        assert!(check(&Policy::default(), &QueueAttributes { retention_secs: 86_400, ..TEMPLATE }).is_ok());
    }
}
