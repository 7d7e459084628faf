//! The read ladder: fresh → live → stale → default.
//!
//! A lookup climbs down the ladder until a rung can answer. The decision is
//! made here, in two steps, because the host performs the CRM call between
//! them: [`first_step`] before any I/O, [`fall_back`] when the CRM could not
//! answer (failed, timed out, or the breaker would not let the call go).

use serde::{Deserialize, Serialize};

use crate::cache::{CacheEntry, Freshness};

/// Where an answer came from, as reported in the `source` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A fresh KV entry; the CRM was not asked.
    Cache,
    /// The CRM answered within the deadline.
    Live,
    /// The CRM could not answer; the last-known record was served.
    StaleCache,
    /// The CRM could not answer and nothing was known: the default.
    Default,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cache => "cache",
            Self::Live => "live",
            Self::StaleCache => "stale_cache",
            Self::Default => "default",
        }
    }

    /// Degraded answers are the ones Genesys receives a warning with.
    pub fn is_degraded(self) -> bool {
        matches!(self, Self::StaleCache | Self::Default)
    }
}

/// What to do before any I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstStep {
    /// Answer from the entry, `source: cache`.
    AnswerFresh,
    /// Ask the CRM within the deadline.
    CallCrm,
    /// Do not ask the CRM (its breaker is open): fall back at once.
    FallBack(Fallback),
}

/// What to answer when the CRM cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Serve the last-known entry, `source: stale_cache`.
    Stale { age_secs: u64 },
    /// Serve the configured default, `source: default`.
    Default,
}

impl Fallback {
    pub fn source(self) -> Source {
        match self {
            Self::Stale { .. } => Source::StaleCache,
            Self::Default => Source::Default,
        }
    }
}

/// The first decision of a lookup. `crm_permitted` is the breaker's verdict;
/// ask the breaker only when the entry is not fresh (call with `false`
/// first): a half-open breaker's permit is its single probe.
pub fn first_step(entry: Option<&CacheEntry>, now_ms: u64, freshness: &Freshness, crm_permitted: bool) -> FirstStep {
    match entry {
        Some(e) if e.is_fresh(now_ms, freshness) => FirstStep::AnswerFresh,
        _ if crm_permitted => FirstStep::CallCrm,
        _ => FirstStep::FallBack(fall_back(entry, now_ms, freshness)),
    }
}

/// The answer when the CRM did not give one: the last-known record while it
/// is within the horizon, the default only when nothing is known.
pub fn fall_back(entry: Option<&CacheEntry>, now_ms: u64, freshness: &Freshness) -> Fallback {
    match entry {
        Some(e) if e.is_last_known(now_ms, freshness) => Fallback::Stale { age_secs: e.age_secs(now_ms) },
        _ => Fallback::Default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CustomerRecord;
    use proptest::prelude::*;

    const F: Freshness =
        Freshness { fresh_ms: 300_000, not_found_fresh_ms: 60_000, last_known_horizon_ms: 604_800_000 };

    fn entry(found: bool, at: u64) -> CacheEntry {
        CacheEntry {
            record: CustomerRecord { found, customer_id: "C-9".into(), tier: "vip".into() },
            fetched_at_ms: at,
        }
    }

    #[test]
    fn climbs_down_in_order() {
        let now = 1_000_000_000;
        let fresh = entry(true, now - 1_000);
        let stale = entry(true, now - 400_000);
        let ancient = entry(true, now - 604_800_000);
        assert_eq!(first_step(Some(&fresh), now, &F, false), FirstStep::AnswerFresh);
        assert_eq!(first_step(Some(&stale), now, &F, true), FirstStep::CallCrm);
        assert_eq!(first_step(None, now, &F, true), FirstStep::CallCrm);
        assert_eq!(first_step(Some(&stale), now, &F, false), FirstStep::FallBack(Fallback::Stale { age_secs: 400 }));
        assert_eq!(first_step(None, now, &F, false), FirstStep::FallBack(Fallback::Default));
        assert_eq!(fall_back(Some(&ancient), now, &F), Fallback::Default);
        assert_eq!(Fallback::Default.source().as_str(), "default");
        assert!(Source::StaleCache.is_degraded() && !Source::Live.is_degraded());
    }

    proptest! {
        #[test]
        fn never_default_while_a_last_known_record_exists(
            found in any::<bool>(),
            age in 0u64..604_800_000,
            now in 604_800_000u64..4_000_000_000_000,
            permitted in any::<bool>(),
        ) {
            let e = entry(found, now - age);
            prop_assert_ne!(fall_back(Some(&e), now, &F), Fallback::Default);
            prop_assert_ne!(first_step(Some(&e), now, &F, permitted), FirstStep::FallBack(Fallback::Default));
        }

        #[test]
        fn never_calls_the_crm_when_not_permitted(age in 0u64..1_000_000_000, now in 1_000_000_000u64..2_000_000_000) {
            let e = entry(true, now - age);
            prop_assert_ne!(first_step(Some(&e), now, &F, false), FirstStep::CallCrm);
            prop_assert_ne!(first_step(None, now, &F, false), FirstStep::CallCrm);
        }
    }
}
