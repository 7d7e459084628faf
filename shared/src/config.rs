//! The policy settings, their defaults and their validation.
//!
//! Every host reads settings by name (environment variables natively,
//! `wrangler.toml` vars on Workers, Spin variables) through a lookup
//! function, so parsing, defaults and validation happen here once, and a
//! bad deployment is refused at start-up with the name of the setting.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;

use crate::backoff::Backoff;
use crate::breaker::{BreakerPolicy, MAX_WINDOW};
use crate::cache::Freshness;
use crate::retry::RetryPolicy;

/// SQS keeps a message at most 14 days; a longer budget would be a lie.
pub const SQS_MAX_RETENTION_SECS: u64 = 14 * 86_400;
/// SQS's largest visibility timeout, hence the largest backoff it can express.
pub const SQS_MAX_VISIBILITY_SECS: u64 = 43_200;
/// Genesys Cloud allows Data Action timeouts up to 60 s.
pub const MAX_DATA_ACTION_TIMEOUT_MS: u64 = 60_000;
/// The least room after the CRM's deadline: the write path's queue send and
/// the answer's KV write happen in it, and an SQS `SendMessage` from the
/// edge takes tens of milliseconds (at 0 every queued write would be
/// answered `NOT_ACCEPTED`).
pub const MIN_DEADLINE_MARGIN_MS: u64 = 250;

/// A setting that cannot be used, named as the operator wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub problem: String,
}

impl ConfigError {
    pub fn new(setting: &'static str, problem: impl Into<String>) -> Self {
        Self { setting, problem: problem.into() }
    }
}

/// Checks a full-jitter backoff read from the settings `[base, cap]`: a
/// positive base, and a cap of at least the base and at most `max_cap_ms`
/// (`max_cap_why` says what sets that bound). The error names the setting
/// at fault.
pub fn check_backoff(
    backoff: &Backoff,
    [base, cap]: [&'static str; 2],
    max_cap_ms: u64,
    max_cap_why: &str,
) -> Result<(), ConfigError> {
    if backoff.base_ms == 0 {
        return Err(ConfigError::new(base, "must be above 0"));
    }
    if backoff.cap_ms < backoff.base_ms {
        return Err(ConfigError::new(cap, format!("must be at least {base}")));
    }
    if backoff.cap_ms > max_cap_ms {
        return Err(ConfigError::new(cap, format!("must not exceed {max_cap_why}, {} s", max_cap_ms / 1000)));
    }
    Ok(())
}

/// The resilience policy shared by the edge and the origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// `FAILSOFT_CRM_DEADLINE_MS`: how long the Data Action path waits for the CRM.
    pub crm_deadline_ms: u64,
    /// `FAILSOFT_DATA_ACTION_TIMEOUT_MS`: the Data Action's own timeout in Genesys.
    pub data_action_timeout_ms: u64,
    /// `FAILSOFT_DEADLINE_MARGIN_MS`: room left for KV, queueing and the network.
    pub deadline_margin_ms: u64,
    /// `FAILSOFT_FRESHNESS_SECS`, `FAILSOFT_NOT_FOUND_FRESHNESS_SECS`, `FAILSOFT_LAST_KNOWN_HORIZON_SECS`.
    pub freshness: Freshness,
    /// `FAILSOFT_REFRESH_AHEAD_PERCENT`: a fresh record older than this
    /// share of its freshness window is answered from cache and refreshed
    /// after the response (stale-while-revalidate); 100 turns it off.
    pub refresh_ahead_percent: u64,
    /// `FAILSOFT_DEFAULT_TIER`: the tier of a `default` answer.
    pub default_tier: String,
    /// `FAILSOFT_BACKOFF_BASE_MS`, `FAILSOFT_BACKOFF_CAP_MS`, `FAILSOFT_RETRY_BUDGET_SECS`.
    pub retry: RetryPolicy,
    /// `FAILSOFT_PROCESSING_LIMIT_SECS`: the longest one delivery may take.
    pub processing_limit_secs: u64,
    /// `FAILSOFT_VISIBILITY_TIMEOUT_SECS`: the queue's visibility timeout.
    pub visibility_timeout_secs: u64,
    /// `FAILSOFT_BREAKER_WINDOW`, `_FAILURE_THRESHOLD`, `_COOL_DOWN_MS`, `_PROBE_TIMEOUT_MS`.
    pub breaker: BreakerPolicy,
    /// `FAILSOFT_SIGNATURE_TOLERANCE_SECS`: accepted age of a signed request.
    pub signature_tolerance_secs: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            crm_deadline_ms: 3_000,
            data_action_timeout_ms: 10_000,
            deadline_margin_ms: 1_000,
            freshness: Freshness {
                fresh_ms: 300_000,
                not_found_fresh_ms: 60_000,
                last_known_horizon_ms: 7 * 86_400_000,
            },
            refresh_ahead_percent: 80,
            default_tier: "standard".to_owned(),
            retry: RetryPolicy { backoff: Backoff { base_ms: 1_000, cap_ms: 300_000 }, budget_ms: 86_400_000 },
            processing_limit_secs: 20,
            visibility_timeout_secs: 120,
            breaker: BreakerPolicy { window: 20, failure_threshold: 5, cool_down_ms: 5_000, probe_timeout_ms: 10_000 },
            signature_tolerance_secs: 300,
        }
    }
}

/// Every policy setting: its name and its default, for documentation and
/// for hosts that must declare them (Spin variables, wrangler vars).
pub fn settings() -> [(&'static str, String); 18] {
    let d = Policy::default();
    [
        ("FAILSOFT_CRM_DEADLINE_MS", format!("{}", d.crm_deadline_ms)),
        ("FAILSOFT_DATA_ACTION_TIMEOUT_MS", format!("{}", d.data_action_timeout_ms)),
        ("FAILSOFT_DEADLINE_MARGIN_MS", format!("{}", d.deadline_margin_ms)),
        ("FAILSOFT_FRESHNESS_SECS", format!("{}", d.freshness.fresh_ms / 1000)),
        ("FAILSOFT_NOT_FOUND_FRESHNESS_SECS", format!("{}", d.freshness.not_found_fresh_ms / 1000)),
        ("FAILSOFT_LAST_KNOWN_HORIZON_SECS", format!("{}", d.freshness.last_known_horizon_ms / 1000)),
        ("FAILSOFT_REFRESH_AHEAD_PERCENT", format!("{}", d.refresh_ahead_percent)),
        ("FAILSOFT_DEFAULT_TIER", d.default_tier.clone()),
        ("FAILSOFT_BACKOFF_BASE_MS", format!("{}", d.retry.backoff.base_ms)),
        ("FAILSOFT_BACKOFF_CAP_MS", format!("{}", d.retry.backoff.cap_ms)),
        ("FAILSOFT_RETRY_BUDGET_SECS", format!("{}", d.retry.budget_ms / 1000)),
        ("FAILSOFT_PROCESSING_LIMIT_SECS", format!("{}", d.processing_limit_secs)),
        ("FAILSOFT_VISIBILITY_TIMEOUT_SECS", format!("{}", d.visibility_timeout_secs)),
        ("FAILSOFT_BREAKER_WINDOW", format!("{}", d.breaker.window)),
        ("FAILSOFT_BREAKER_FAILURE_THRESHOLD", format!("{}", d.breaker.failure_threshold)),
        ("FAILSOFT_BREAKER_COOL_DOWN_MS", format!("{}", d.breaker.cool_down_ms)),
        ("FAILSOFT_BREAKER_PROBE_TIMEOUT_MS", format!("{}", d.breaker.probe_timeout_ms)),
        ("FAILSOFT_SIGNATURE_TOLERANCE_SECS", format!("{}", d.signature_tolerance_secs)),
    ]
}

/// Reads a number setting, `default` when unset or empty.
pub fn number<T: core::str::FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    setting: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match lookup(setting) {
        Some(text) if !text.trim().is_empty() => text
            .trim()
            .parse()
            .map_err(|_| ConfigError::new(setting, format!("`{}` is not a valid number", text.trim()))),
        _ => Ok(default),
    }
}

impl Policy {
    /// Reads every setting through `lookup` (unset means default) and
    /// validates the result.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let secs = |name, default_ms: u64| number(&lookup, name, default_ms / 1000).map(|s| s.saturating_mul(1000));
        let policy = Self {
            crm_deadline_ms: number(&lookup, "FAILSOFT_CRM_DEADLINE_MS", d.crm_deadline_ms)?,
            data_action_timeout_ms: number(&lookup, "FAILSOFT_DATA_ACTION_TIMEOUT_MS", d.data_action_timeout_ms)?,
            deadline_margin_ms: number(&lookup, "FAILSOFT_DEADLINE_MARGIN_MS", d.deadline_margin_ms)?,
            freshness: Freshness {
                fresh_ms: secs("FAILSOFT_FRESHNESS_SECS", d.freshness.fresh_ms)?,
                not_found_fresh_ms: secs("FAILSOFT_NOT_FOUND_FRESHNESS_SECS", d.freshness.not_found_fresh_ms)?,
                last_known_horizon_ms: secs("FAILSOFT_LAST_KNOWN_HORIZON_SECS", d.freshness.last_known_horizon_ms)?,
            },
            refresh_ahead_percent: number(&lookup, "FAILSOFT_REFRESH_AHEAD_PERCENT", d.refresh_ahead_percent)?,
            default_tier: lookup("FAILSOFT_DEFAULT_TIER")
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .unwrap_or(d.default_tier),
            retry: RetryPolicy {
                backoff: Backoff {
                    base_ms: number(&lookup, "FAILSOFT_BACKOFF_BASE_MS", d.retry.backoff.base_ms)?,
                    cap_ms: number(&lookup, "FAILSOFT_BACKOFF_CAP_MS", d.retry.backoff.cap_ms)?,
                },
                budget_ms: secs("FAILSOFT_RETRY_BUDGET_SECS", d.retry.budget_ms)?,
            },
            processing_limit_secs: number(&lookup, "FAILSOFT_PROCESSING_LIMIT_SECS", d.processing_limit_secs)?,
            visibility_timeout_secs: number(&lookup, "FAILSOFT_VISIBILITY_TIMEOUT_SECS", d.visibility_timeout_secs)?,
            breaker: BreakerPolicy {
                window: number(&lookup, "FAILSOFT_BREAKER_WINDOW", d.breaker.window)?,
                failure_threshold: number(&lookup, "FAILSOFT_BREAKER_FAILURE_THRESHOLD", d.breaker.failure_threshold)?,
                cool_down_ms: number(&lookup, "FAILSOFT_BREAKER_COOL_DOWN_MS", d.breaker.cool_down_ms)?,
                probe_timeout_ms: number(&lookup, "FAILSOFT_BREAKER_PROBE_TIMEOUT_MS", d.breaker.probe_timeout_ms)?,
            },
            signature_tolerance_secs: number(&lookup, "FAILSOFT_SIGNATURE_TOLERANCE_SECS", d.signature_tolerance_secs)?,
        };
        policy.validate()?;
        Ok(policy)
    }

    /// Refuses combinations that would break a promise.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |setting, problem: String| Err(ConfigError::new(setting, problem));
        if self.data_action_timeout_ms == 0 || self.data_action_timeout_ms > MAX_DATA_ACTION_TIMEOUT_MS {
            return fail(
                "FAILSOFT_DATA_ACTION_TIMEOUT_MS",
                format!("must be between 1 and {MAX_DATA_ACTION_TIMEOUT_MS} ms (Genesys' limit)"),
            );
        }
        if self.crm_deadline_ms == 0 {
            return fail("FAILSOFT_CRM_DEADLINE_MS", "must be above 0".into());
        }
        if self.deadline_margin_ms < MIN_DEADLINE_MARGIN_MS {
            return fail(
                "FAILSOFT_DEADLINE_MARGIN_MS",
                format!("must be at least {MIN_DEADLINE_MARGIN_MS} ms: the queue send of a write happens in it"),
            );
        }
        if self.crm_deadline_ms.saturating_add(self.deadline_margin_ms) >= self.data_action_timeout_ms {
            return fail(
                "FAILSOFT_CRM_DEADLINE_MS",
                format!(
                    "{} ms plus the margin of {} ms must stay below the Data Action timeout of {} ms, or Genesys gives up before the fallback answers",
                    self.crm_deadline_ms, self.deadline_margin_ms, self.data_action_timeout_ms
                ),
            );
        }
        let f = &self.freshness;
        if f.fresh_ms == 0 {
            return fail("FAILSOFT_FRESHNESS_SECS", "must be above 0".into());
        }
        if f.not_found_fresh_ms > f.fresh_ms {
            return fail("FAILSOFT_NOT_FOUND_FRESHNESS_SECS", "must not exceed FAILSOFT_FRESHNESS_SECS".into());
        }
        if f.fresh_ms >= f.last_known_horizon_ms {
            return fail(
                "FAILSOFT_LAST_KNOWN_HORIZON_SECS",
                format!(
                    "must exceed the freshness window ({} s), or stale data never outlives fresh data",
                    f.fresh_ms / 1000
                ),
            );
        }
        if !(1..=100).contains(&self.refresh_ahead_percent) {
            return fail("FAILSOFT_REFRESH_AHEAD_PERCENT", "must be between 1 and 100 (100: off)".into());
        }
        check_backoff(
            &self.retry.backoff,
            ["FAILSOFT_BACKOFF_BASE_MS", "FAILSOFT_BACKOFF_CAP_MS"],
            SQS_MAX_VISIBILITY_SECS * 1000,
            "SQS's largest visibility timeout",
        )?;
        if self.retry.budget_ms == 0 || self.retry.budget_ms > SQS_MAX_RETENTION_SECS * 1000 {
            return fail(
                "FAILSOFT_RETRY_BUDGET_SECS",
                format!("must be between 1 and {SQS_MAX_RETENTION_SECS} s (SQS's longest retention)"),
            );
        }
        if self.processing_limit_secs == 0 {
            return fail("FAILSOFT_PROCESSING_LIMIT_SECS", "must be above 0".into());
        }
        if self.visibility_timeout_secs < self.processing_limit_secs.saturating_mul(6) {
            return fail(
                "FAILSOFT_VISIBILITY_TIMEOUT_SECS",
                format!(
                    "{} s is below 6 × the processing limit ({} s): a slow delivery would be picked up twice",
                    self.visibility_timeout_secs, self.processing_limit_secs
                ),
            );
        }
        if self.visibility_timeout_secs > SQS_MAX_VISIBILITY_SECS {
            return fail("FAILSOFT_VISIBILITY_TIMEOUT_SECS", format!("must not exceed {SQS_MAX_VISIBILITY_SECS} s"));
        }
        let br = &self.breaker;
        if br.window == 0 || br.window > MAX_WINDOW {
            return fail("FAILSOFT_BREAKER_WINDOW", format!("must be between 1 and {MAX_WINDOW}"));
        }
        if br.failure_threshold == 0 || br.failure_threshold > br.window {
            return fail("FAILSOFT_BREAKER_FAILURE_THRESHOLD", "must be between 1 and FAILSOFT_BREAKER_WINDOW".into());
        }
        if br.cool_down_ms == 0 {
            return fail("FAILSOFT_BREAKER_COOL_DOWN_MS", "must be above 0".into());
        }
        if br.probe_timeout_ms < self.crm_deadline_ms {
            return fail(
                "FAILSOFT_BREAKER_PROBE_TIMEOUT_MS",
                "must be at least FAILSOFT_CRM_DEADLINE_MS, or a slow probe is presumed lost".into(),
            );
        }
        if self.signature_tolerance_secs == 0 {
            return fail("FAILSOFT_SIGNATURE_TOLERANCE_SECS", "must be above 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn with(pairs: &'static [(&'static str, &'static str)]) -> Result<Policy, ConfigError> {
        Policy::from_lookup(|name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn defaults_are_valid_and_match_the_design() {
        let p = with(&[]).unwrap();
        assert_eq!(p, Policy::default());
        assert_eq!(p.crm_deadline_ms, 3_000);
        assert_eq!(p.freshness.last_known_horizon_ms, 604_800_000);
        assert_eq!(p.retry.budget_ms, 86_400_000);
        assert_eq!(settings().len(), 18);
    }

    #[test]
    fn reads_overrides() {
        let p = with(&[
            ("FAILSOFT_CRM_DEADLINE_MS", " 1500 "),
            ("FAILSOFT_FRESHNESS_SECS", "120"),
            ("FAILSOFT_DEFAULT_TIER", "bronze"),
        ])
        .unwrap();
        assert_eq!(p.crm_deadline_ms, 1_500);
        assert_eq!(p.freshness.fresh_ms, 120_000);
        assert_eq!(p.default_tier, "bronze");
    }

    #[test]
    fn names_the_setting_that_breaks_a_promise() {
        let cases: [(&'static [(&str, &str)], &str); 12] = [
            (&[("FAILSOFT_CRM_DEADLINE_MS", "9500")], "FAILSOFT_CRM_DEADLINE_MS"),
            (&[("FAILSOFT_DEADLINE_MARGIN_MS", "0")], "FAILSOFT_DEADLINE_MARGIN_MS"),
            (&[("FAILSOFT_DEADLINE_MARGIN_MS", "249")], "FAILSOFT_DEADLINE_MARGIN_MS"),
            (&[("FAILSOFT_CRM_DEADLINE_MS", "soon")], "FAILSOFT_CRM_DEADLINE_MS"),
            (&[("FAILSOFT_DATA_ACTION_TIMEOUT_MS", "90000")], "FAILSOFT_DATA_ACTION_TIMEOUT_MS"),
            (
                &[("FAILSOFT_VISIBILITY_TIMEOUT_SECS", "60"), ("FAILSOFT_PROCESSING_LIMIT_SECS", "30")],
                "FAILSOFT_VISIBILITY_TIMEOUT_SECS",
            ),
            (&[("FAILSOFT_LAST_KNOWN_HORIZON_SECS", "300")], "FAILSOFT_LAST_KNOWN_HORIZON_SECS"),
            (&[("FAILSOFT_BACKOFF_CAP_MS", "500")], "FAILSOFT_BACKOFF_CAP_MS"),
            (&[("FAILSOFT_BACKOFF_CAP_MS", "43200001")], "FAILSOFT_BACKOFF_CAP_MS"),
            (&[("FAILSOFT_BACKOFF_BASE_MS", "0")], "FAILSOFT_BACKOFF_BASE_MS"),
            (&[("FAILSOFT_RETRY_BUDGET_SECS", "2000000")], "FAILSOFT_RETRY_BUDGET_SECS"),
            (&[("FAILSOFT_BREAKER_FAILURE_THRESHOLD", "30")], "FAILSOFT_BREAKER_FAILURE_THRESHOLD"),
        ];
        for (pairs, setting) in cases {
            let err = with(pairs).unwrap_err();
            assert_eq!(err.setting, setting, "{err}");
            assert!(err.to_string().starts_with(setting));
        }
    }
}
