//! Exponential backoff with full jitter.
//!
//! Full jitter (a uniform delay in `[0, min(cap, base · 2^attempt)]`, from
//! AWS's "Exponential Backoff and Jitter") spreads the retries of many
//! messages that failed together, so a recovering CRM is not hit by a
//! synchronised wave each time the exponent steps.

/// Backoff parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base_ms: u64,
    pub cap_ms: u64,
}

impl Backoff {
    /// The ceiling of the delay before retry number `attempt` (0-based):
    /// `min(cap, base · 2^attempt)`, without overflow.
    pub fn ceiling_ms(&self, attempt: u32) -> u64 {
        let factor = 1u64.checked_shl(attempt.min(63)).unwrap_or(u64::MAX);
        self.base_ms.saturating_mul(factor).min(self.cap_ms)
    }

    /// The delay before retry number `attempt`, drawn uniformly from
    /// `[0, ceiling]` using `random`, a uniformly distributed `u64`.
    pub fn delay_ms(&self, attempt: u32, random: u64) -> u64 {
        uniform_inclusive(random, self.ceiling_ms(attempt))
    }
}

/// Maps a uniform `u64` onto `[0, max]` by multiply-and-shift (Lemire), which
/// avoids the modulo's bias toward small values.
pub fn uniform_inclusive(random: u64, max: u64) -> u64 {
    if max == u64::MAX {
        return random;
    }
    ((u128::from(random) * (u128::from(max) + 1)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const B: Backoff = Backoff { base_ms: 1_000, cap_ms: 300_000 };

    #[test]
    fn ceiling_doubles_then_caps() {
        assert_eq!(B.ceiling_ms(0), 1_000);
        assert_eq!(B.ceiling_ms(1), 2_000);
        assert_eq!(B.ceiling_ms(8), 256_000);
        assert_eq!(B.ceiling_ms(9), 300_000);
        assert_eq!(B.ceiling_ms(200), 300_000);
    }

    #[test]
    fn extremes_of_the_random_source_reach_both_ends() {
        assert_eq!(B.delay_ms(3, 0), 0);
        assert_eq!(B.delay_ms(3, u64::MAX), 8_000);
        assert_eq!(uniform_inclusive(u64::MAX, u64::MAX), u64::MAX);
    }

    proptest! {
        #[test]
        fn delay_is_within_zero_and_cap(base in 1u64..100_000, cap in 1u64..10_000_000, attempt in any::<u32>(), r in any::<u64>()) {
            let b = Backoff { base_ms: base, cap_ms: cap };
            let d = b.delay_ms(attempt, r);
            prop_assert!(d <= cap);
            prop_assert!(d <= b.ceiling_ms(attempt));
        }

        #[test]
        fn ceiling_never_decreases(attempt in 0u32..100) {
            prop_assert!(B.ceiling_ms(attempt) <= B.ceiling_ms(attempt + 1));
        }
    }
}
