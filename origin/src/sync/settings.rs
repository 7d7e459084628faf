//! The sync's settings, read with the worker's (or alone by `failsoft
//! sync`) and validated before anything starts.

use std::time::Duration;

use failsoft_shared::config::{ConfigError, number};

use crate::config::Secret;

/// The worker's delta sync runs this often by default.
pub const DEFAULT_INTERVAL_SECS: u64 = 900;
/// Bounds of a non-zero interval: at most hourly-ish churn is worth a
/// minute's pause; more than a day apart leaves the store a day behind.
const INTERVAL_SECS: std::ops::RangeInclusive<u64> = 60..=86_400;
/// List pages asked of the CRM per second, by default: polite to a CRM
/// that serves Data Actions at the same time.
pub const DEFAULT_RATE: u32 = 20;
/// Records per list page asked for, by default, and the contract's bounds.
pub const DEFAULT_PAGE_SIZE: u32 = 500;
const PAGE_SIZE: std::ops::RangeInclusive<u32> = 1..=1_000;
/// How far before a pass's start the next delta reads, by default: clock
/// skew between the worker and the CRM. Records read twice cost nothing.
pub const DEFAULT_OVERLAP_SECS: u64 = 300;
/// How long a pass's lease lasts past its last page, by default. A worker
/// that dies mid-pass holds the sync up this long; another then resumes it.
pub const DEFAULT_LEASE_SECS: u64 = 60;

#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// `FAILSOFT_SYNC_INTERVAL_SECS`: a delta sync this often, after a full
    /// one at first start (default 900); `0`: the worker does not sync.
    pub interval: Duration,
    /// `FAILSOFT_SYNC_RATE`: most list pages asked of the CRM per second
    /// (default 20).
    pub rate: u32,
    /// `FAILSOFT_SYNC_PAGE_SIZE`: records asked for per page (1–1000,
    /// default 500).
    pub page_size: u32,
    /// `FAILSOFT_SYNC_OVERLAP_SECS`: how far before the last pass's start a
    /// delta reads (default 300).
    pub overlap: Duration,
    /// `FAILSOFT_SYNC_LEASE_SECS`: how long a pass's lease outlives its
    /// last page (5–3600, default 60).
    pub lease: Duration,
    /// `FAILSOFT_CACHE_KEY_SECRET`: the edge's key secret, trimmed as the
    /// edge trims it, so the worker derives the very keys the edge reads.
    /// Unset: no sync.
    pub cache_key_secret: Option<Secret>,
}

impl SyncSettings {
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let interval_secs = number(&lookup, "FAILSOFT_SYNC_INTERVAL_SECS", DEFAULT_INTERVAL_SECS)?;
        if interval_secs != 0 && !INTERVAL_SECS.contains(&interval_secs) {
            return Err(ConfigError::new("FAILSOFT_SYNC_INTERVAL_SECS", "must be 0 (off) or 60 to 86400 seconds"));
        }
        let rate = number(&lookup, "FAILSOFT_SYNC_RATE", DEFAULT_RATE)?;
        if !(1..=1_000).contains(&rate) {
            return Err(ConfigError::new("FAILSOFT_SYNC_RATE", "must be 1 to 1000 requests per second"));
        }
        let page_size = number(&lookup, "FAILSOFT_SYNC_PAGE_SIZE", DEFAULT_PAGE_SIZE)?;
        if !PAGE_SIZE.contains(&page_size) {
            return Err(ConfigError::new("FAILSOFT_SYNC_PAGE_SIZE", "must be 1 to 1000 (the list's limit)"));
        }
        let overlap_secs = number(&lookup, "FAILSOFT_SYNC_OVERLAP_SECS", DEFAULT_OVERLAP_SECS)?;
        if overlap_secs > 86_400 {
            return Err(ConfigError::new("FAILSOFT_SYNC_OVERLAP_SECS", "must be 0 to 86400 seconds"));
        }
        let lease_secs = number(&lookup, "FAILSOFT_SYNC_LEASE_SECS", DEFAULT_LEASE_SECS)?;
        if !(5..=3_600).contains(&lease_secs) {
            return Err(ConfigError::new("FAILSOFT_SYNC_LEASE_SECS", "must be 5 to 3600 seconds"));
        }
        // Trimmed and measured as the edge does it (`secret_from_setting`),
        // so the worker derives the very keys the edge reads.
        let cache_key_secret = match lookup("FAILSOFT_CACHE_KEY_SECRET").filter(|s| !s.trim().is_empty()) {
            None => None,
            Some(s) => match failsoft_shared::signature::secret_from_setting(&s) {
                Some(secret) => Some(Secret::new(secret)),
                None => return Err(ConfigError::new("FAILSOFT_CACHE_KEY_SECRET", "must be at least 16 bytes")),
            },
        };
        Ok(Self {
            interval: Duration::from_secs(interval_secs),
            rate,
            page_size,
            overlap: Duration::from_secs(overlap_secs),
            lease: Duration::from_secs(lease_secs),
            cache_key_secret,
        })
    }

    /// Whether the worker runs the sync on its schedule.
    pub fn scheduled(&self) -> bool {
        !self.interval.is_zero() && self.cache_key_secret.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<SyncSettings, ConfigError> {
        SyncSettings::from_lookup(&|n| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| (*v).to_owned()))
    }

    #[test]
    fn defaults_and_off_without_the_key_secret() {
        let s = read(&[]).unwrap();
        assert_eq!((s.interval.as_secs(), s.rate, s.page_size), (900, 20, 500));
        assert!(!s.scheduled());
        let on = read(&[("FAILSOFT_CACHE_KEY_SECRET", "0123456789abcdef")]).unwrap();
        assert!(on.scheduled());
        let padded = read(&[("FAILSOFT_CACHE_KEY_SECRET", " 0123456789abcdef\n")]).unwrap();
        assert_eq!(padded.cache_key_secret.unwrap().expose(), b"0123456789abcdef", "trimmed as the edge trims it");
        let off = read(&[("FAILSOFT_CACHE_KEY_SECRET", "0123456789abcdef"), ("FAILSOFT_SYNC_INTERVAL_SECS", "0")]);
        assert!(!off.unwrap().scheduled());
    }

    #[test]
    fn refuses_what_would_break_it_by_name() {
        for (name, value) in [
            ("FAILSOFT_SYNC_INTERVAL_SECS", "30"),
            ("FAILSOFT_SYNC_INTERVAL_SECS", "x"),
            ("FAILSOFT_SYNC_RATE", "0"),
            ("FAILSOFT_SYNC_PAGE_SIZE", "1001"),
            ("FAILSOFT_SYNC_OVERLAP_SECS", "86401"),
            ("FAILSOFT_SYNC_LEASE_SECS", "4"),
            ("FAILSOFT_CACHE_KEY_SECRET", "short"),
            ("FAILSOFT_CACHE_KEY_SECRET", " 0123456789abcde \n"),
        ] {
            let err = read(&[(name, value)]).expect_err(value);
            assert_eq!(err.setting, name);
        }
    }
}
