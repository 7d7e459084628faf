//! Wall-clock time and randomness for the policy core, which takes both as
//! inputs.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A uniformly random `u64` from the operating system. Should that fail, the
/// clock's nanoseconds still spread retries (jitter needs no secrecy).
pub fn random_u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
    })
}

/// Whole seconds covering `ms`, for SQS's second-granular visibility
/// timeouts: a delay is never shortened by rounding.
pub fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_never_shortens_a_delay() {
        assert_eq!(ceil_secs(0), 0);
        assert_eq!(ceil_secs(1), 1);
        assert_eq!(ceil_secs(5_000), 5);
        assert_eq!(ceil_secs(5_001), 6);
        assert_ne!(random_u64(), random_u64());
    }
}
