//! What to do after a failed delivery: retry later, or dead-letter.
//!
//! The budget is an age, not an attempt count. Five attempts of 2^n seconds
//! last 30 seconds, so an 8-minute CRM outage would dead-letter every write;
//! a budget of 24 hours outlasts any deployment and still ends a message
//! that cannot be delivered.

use crate::backoff::Backoff;
use crate::error_class::ErrorClass;

/// Retry parameters for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub backoff: Backoff,
    /// How long after submission a message may still be retried.
    pub budget_ms: u64,
}

/// Why a message goes to the dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// The downstream refused it for good (e.g. 422).
    Permanent { status: u16 },
    /// The next retry would fall outside the retry budget.
    BudgetExhausted,
}

impl DeadLetterReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permanent { .. } => "permanent_error",
            Self::BudgetExhausted => "retry_budget_exhausted",
        }
    }
}

/// The decision after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Make the message visible again after this many milliseconds.
    RetryAfter { delay_ms: u64 },
    /// Move it to the dead-letter queue.
    DeadLetter(DeadLetterReason),
}

impl RetryPolicy {
    /// Decides after the failed attempt number `attempt` (0-based) of a
    /// message submitted at `submitted_at_ms`. A throttled failure waits at
    /// least as long as the downstream asked.
    pub fn after_failure(
        &self,
        class: ErrorClass,
        attempt: u32,
        submitted_at_ms: u64,
        now_ms: u64,
        random: u64,
    ) -> RetryDecision {
        let jittered = self.backoff.delay_ms(attempt, random);
        let delay_ms = match class {
            ErrorClass::Permanent { status } => {
                return RetryDecision::DeadLetter(DeadLetterReason::Permanent { status });
            }
            ErrorClass::Transient => jittered,
            ErrorClass::Throttled { retry_after_secs } => {
                jittered.max(retry_after_secs.unwrap_or(0).saturating_mul(1000))
            }
        };
        let deadline = submitted_at_ms.saturating_add(self.budget_ms);
        if now_ms.saturating_add(delay_ms) > deadline {
            RetryDecision::DeadLetter(DeadLetterReason::BudgetExhausted)
        } else {
            RetryDecision::RetryAfter { delay_ms }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: RetryPolicy = RetryPolicy { backoff: Backoff { base_ms: 1_000, cap_ms: 300_000 }, budget_ms: 86_400_000 };

    #[test]
    fn an_eight_minute_outage_is_far_inside_the_budget() {
        // Fifty failed attempts across 8 minutes never dead-letter.
        let submitted = 1_000_000;
        for attempt in 0..50 {
            let now = submitted + u64::from(attempt) * 10_000;
            assert!(matches!(
                P.after_failure(ErrorClass::Transient, attempt, submitted, now, u64::MAX),
                RetryDecision::RetryAfter { .. }
            ));
        }
    }

    #[test]
    fn permanent_failures_dead_letter_at_once() {
        assert_eq!(
            P.after_failure(ErrorClass::Permanent { status: 422 }, 0, 0, 0, 0),
            RetryDecision::DeadLetter(DeadLetterReason::Permanent { status: 422 })
        );
    }

    #[test]
    fn throttled_waits_at_least_retry_after() {
        let class = ErrorClass::Throttled { retry_after_secs: Some(5) };
        assert_eq!(P.after_failure(class, 0, 0, 0, 0), RetryDecision::RetryAfter { delay_ms: 5_000 });
    }

    #[test]
    fn budget_expiry_dead_letters() {
        let submitted = 0;
        let now = P.budget_ms - 10;
        assert_eq!(
            P.after_failure(ErrorClass::Transient, 20, submitted, now, u64::MAX),
            RetryDecision::DeadLetter(DeadLetterReason::BudgetExhausted)
        );
        assert_eq!(
            P.after_failure(ErrorClass::Transient, 20, submitted, now, 0),
            RetryDecision::RetryAfter { delay_ms: 0 }
        );
    }

    proptest! {
        #[test]
        fn retries_never_land_past_the_budget(attempt in 0u32..64, age in 0u64..100_000_000, r in any::<u64>(), ra in proptest::option::of(0u64..100_000)) {
            let submitted = 1_000_000_000;
            let now = submitted + age;
            let class = ErrorClass::Throttled { retry_after_secs: ra };
            if let RetryDecision::RetryAfter { delay_ms } = P.after_failure(class, attempt, submitted, now, r) {
                prop_assert!(now + delay_ms <= submitted + P.budget_ms);
                prop_assert!(delay_ms >= ra.unwrap_or(0) * 1000);
            }
        }
    }
}
