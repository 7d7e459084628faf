//! What the edge keeps about a customer, and how old is too old.

use alloc::string::String;
use serde::{Deserialize, Serialize};

/// A CRM's answer to a lookup, as the contract gives it: the edge and the
/// origin both read a lookup's body as this (`serde_json::from_slice`), so
/// they never disagree on what a customer is (a duplicate field, a
/// non-object body: neither takes it).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerAnswer {
    pub customer_id: String,
    pub tier: String,
}

impl CustomerAnswer {
    /// The found customer, or `None` when an id or the tier is empty.
    pub fn into_record(self) -> Option<CustomerRecord> {
        if self.customer_id.is_empty() || self.tier.is_empty() {
            return None;
        }
        Some(CustomerRecord { found: true, customer_id: self.customer_id, tier: self.tier })
    }
}

/// The part of a CRM record that routing needs. A number the CRM does not
/// know is a record too (`found: false`): it is a real answer and is cached,
/// for a shorter window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerRecord {
    pub found: bool,
    pub customer_id: String,
    pub tier: String,
}

/// A record and when it was fetched from the CRM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    pub record: CustomerRecord,
    /// Milliseconds since the Unix epoch.
    pub fetched_at_ms: u64,
}

/// How long records stay useful.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// A found record younger than this is served without asking the CRM.
    pub fresh_ms: u64,
    /// A not-found answer younger than this is served without asking; shorter,
    /// because a new customer should be found soon after the CRM learns them.
    pub not_found_fresh_ms: u64,
    /// Older than this, a record is not served even during an outage. It must
    /// outlive any outage worth surviving: days, not an hour.
    pub last_known_horizon_ms: u64,
}

impl CacheEntry {
    /// Age at `now_ms`; an entry from the future (clock skew between hosts)
    /// counts as age zero.
    pub fn age_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.fetched_at_ms)
    }

    /// Whole seconds of age, as reported to Genesys in `cacheAgeSeconds`.
    pub fn age_secs(&self, now_ms: u64) -> u64 {
        self.age_ms(now_ms) / 1000
    }

    /// Young enough to answer without asking the CRM.
    pub fn is_fresh(&self, now_ms: u64, freshness: &Freshness) -> bool {
        let window = if self.record.found { freshness.fresh_ms } else { freshness.not_found_fresh_ms };
        self.age_ms(now_ms) < window
    }

    /// Fresh, but past `percent` of its window: answer it, and refresh it
    /// after the response so the next caller finds it fresh again
    /// (stale-while-revalidate). 100 never asks.
    pub fn wants_refresh_ahead(&self, now_ms: u64, freshness: &Freshness, percent: u64) -> bool {
        let window = if self.record.found { freshness.fresh_ms } else { freshness.not_found_fresh_ms };
        let ahead_at = window / 100 * percent.min(100) + window % 100 * percent.min(100) / 100;
        percent < 100 && self.is_fresh(now_ms, freshness) && self.age_ms(now_ms) >= ahead_at
    }

    /// Young enough to answer when the CRM cannot.
    pub fn is_last_known(&self, now_ms: u64, freshness: &Freshness) -> bool {
        self.age_ms(now_ms) < freshness.last_known_horizon_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Freshness =
        Freshness { fresh_ms: 300_000, not_found_fresh_ms: 60_000, last_known_horizon_ms: 7 * 86_400_000 };

    fn entry(found: bool, at: u64) -> CacheEntry {
        CacheEntry {
            record: CustomerRecord { found, customer_id: "C-1".into(), tier: "gold".into() },
            fetched_at_ms: at,
        }
    }

    #[test]
    fn found_records_stay_fresh_for_the_window() {
        let e = entry(true, 1_000_000);
        assert!(e.is_fresh(1_000_000 + 299_999, &F));
        assert!(!e.is_fresh(1_000_000 + 300_000, &F));
        assert_eq!(e.age_secs(1_000_000 + 12_500), 12);
    }

    #[test]
    fn not_found_answers_have_a_shorter_window() {
        let e = entry(false, 0);
        assert!(e.is_fresh(59_999, &F));
        assert!(!e.is_fresh(60_000, &F));
    }

    #[test]
    fn refresh_ahead_in_the_last_share_of_the_window_only() {
        let e = entry(true, 0);
        assert!(!e.wants_refresh_ahead(239_999, &F, 80));
        assert!(e.wants_refresh_ahead(240_000, &F, 80));
        assert!(e.wants_refresh_ahead(299_999, &F, 80));
        assert!(!e.wants_refresh_ahead(300_000, &F, 80), "stale: the lookup calls the CRM itself");
        assert!(!e.wants_refresh_ahead(299_999, &F, 100), "100 is off");
        assert!(entry(false, 0).wants_refresh_ahead(48_000, &F, 80), "a not-found has its own window");
    }

    #[test]
    fn last_known_until_the_horizon_and_skew_is_age_zero() {
        let e = entry(true, 10_000);
        assert!(e.is_last_known(10_000 + 7 * 86_400_000 - 1, &F));
        assert!(!e.is_last_known(10_000 + 7 * 86_400_000, &F));
        assert_eq!(e.age_ms(5_000), 0);
        assert!(e.is_fresh(5_000, &F));
    }

    #[test]
    fn serialises_in_camel_case() {
        let json = serde_json::to_string(&entry(true, 7)).unwrap();
        assert_eq!(json, r#"{"record":{"found":true,"customerId":"C-1","tier":"gold"},"fetchedAtMs":7}"#);
    }
}
