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

/// Random bytes for a signature's nonce. A nonce needs uniqueness, not
/// secrecy: should the OS fail, [`random_u64`]'s fallback still differs
/// from call to call.
pub fn nonce_bytes() -> [u8; failsoft_shared::signature::NONCE_BYTES] {
    let mut bytes = [0u8; failsoft_shared::signature::NONCE_BYTES];
    if getrandom::fill(&mut bytes).is_err() {
        bytes[..8].copy_from_slice(&random_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&now_ms().to_le_bytes());
    }
    bytes
}

/// The longest wait [`capped`] lets through: a year. Every deadline a
/// peer's number sets (a token's `expires_in`, a channel's expiry) is
/// capped here, so `Instant::now() + capped(wait)` can never overflow
/// (which panics), whatever the peer sent.
pub const LONGEST_WAIT: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);

/// `wait`, at most [`LONGEST_WAIT`].
pub fn capped(wait: std::time::Duration) -> std::time::Duration {
    wait.min(LONGEST_WAIT)
}

/// Whole seconds covering `ms`, for SQS's second-granular visibility
/// timeouts: a delay is never shortened by rounding.
pub fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// A UTC calendar time, to read and write the RFC 3339 times of APIs
/// without a date crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: u64,
    pub minute: u64,
    pub second: u64,
    pub milli: u64,
}

impl UtcTime {
    /// The calendar time of Unix milliseconds (Howard Hinnant's
    /// `civil_from_days`).
    pub fn from_unix_ms(ms: u64) -> Self {
        let (days, rest) = ((ms / 86_400_000) as i64, ms % 86_400_000);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let (hour, minute, second, milli) = (rest / 3_600_000, rest / 60_000 % 60, rest / 1000 % 60, rest % 1000);
        Self { year, month, day, hour, minute, second, milli }
    }

    /// Unix milliseconds (`days_from_civil`); `None` before 1970.
    pub fn unix_ms(&self) -> Option<u64> {
        let y = if self.month <= 2 { self.year - 1 } else { self.year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * ((self.month + 9) % 12) + 2) / 5 + self.day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
        Some((((days * 24 + self.hour) * 60 + self.minute) * 60 + self.second) * 1000 + self.milli)
    }

    /// `2026-11-29T10:00:00.123Z`.
    pub fn rfc3339(&self) -> String {
        let Self { year, month, day, hour, minute, second, milli } = self;
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_wait_is_capped_so_a_deadline_never_overflows() {
        let huge = std::time::Duration::from_secs(u64::MAX);
        assert!(std::time::Instant::now().checked_add(huge).is_none(), "what would panic");
        assert_eq!(capped(huge), LONGEST_WAIT);
        let _ = std::time::Instant::now() + capped(huge);
        assert_eq!(capped(std::time::Duration::from_secs(5)), std::time::Duration::from_secs(5));
    }

    #[test]
    fn calendar_times_round_trip() {
        for ms in [0, 951_868_801_000, 1_795_946_400_123] {
            assert_eq!(UtcTime::from_unix_ms(ms).unix_ms(), Some(ms));
        }
        assert_eq!(UtcTime::from_unix_ms(1_795_946_400_123).rfc3339(), "2026-11-29T10:00:00.123Z");
        assert_eq!(UtcTime::from_unix_ms(951_868_801_000).rfc3339(), "2000-03-01T00:00:01.000Z");
    }

    #[test]
    fn rounding_never_shortens_a_delay() {
        assert_eq!(ceil_secs(0), 0);
        assert_eq!(ceil_secs(1), 1);
        assert_eq!(ceil_secs(5_000), 5);
        assert_eq!(ceil_secs(5_001), 6);
        assert_ne!(random_u64(), random_u64());
    }
}
