//! The simulated CRM's rate limit: `limit` API calls in each fixed window
//! of `window_secs`, counted across every route as an account-wide API
//! allocation is; a call over it is answered 429 with `Retry-After` (whole
//! seconds to the window's end, at least 1), as Zendesk, HubSpot and
//! Salesforce's REST API document theirs.
//!
//! Every answer, admitted or not, states the quota in one header family:
//! `ietf` (`RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` in
//! seconds, `RateLimit-Policy: <limit>;w=<window>`, as
//! draft-ietf-httpapi-ratelimit-headers up to draft 07 and Zendesk send
//! them), `x` (`X-RateLimit-Limit`, `-Remaining`, `-Reset` in seconds: no
//! window stated), or `none` (only the 429 and its `Retry-After`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

/// Longest window accepted (a day).
pub const MAX_WINDOW_SECS: u64 = 86_400;

/// The header family a limited answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HeaderStyle {
    #[default]
    Ietf,
    X,
    None,
}

/// A configured limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Calls per window (≥ 1).
    pub limit: u64,
    /// The window, seconds (1 to a day).
    pub window_secs: u64,
    #[serde(default)]
    pub headers: HeaderStyle,
}

impl RateLimit {
    pub fn validate(self) -> Result<Self, String> {
        if self.limit == 0 {
            return Err("limit must be at least 1 call per window".into());
        }
        if !(1..=MAX_WINDOW_SECS).contains(&self.window_secs) {
            return Err(format!("windowSecs must be between 1 and {MAX_WINDOW_SECS}"));
        }
        Ok(self)
    }
}

/// What the limiter decided for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub admitted: bool,
    limit: RateLimit,
    remaining: u64,
    /// Whole seconds until the window resets (at least 1 while it runs).
    reset_secs: u64,
}

impl Admission {
    /// The limit this call was counted against.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Calls left in the window after this one.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Whole seconds until the window resets.
    pub fn reset_secs(&self) -> u64 {
        self.reset_secs
    }

    /// The quota headers of `limit.headers`' family, and `Retry-After` on a
    /// refusal.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let mut put = |name: &'static str, value: u64| {
            headers.insert(name, HeaderValue::from(value));
        };
        match self.limit.headers {
            HeaderStyle::Ietf => {
                put("ratelimit-limit", self.limit.limit);
                put("ratelimit-remaining", self.remaining);
                put("ratelimit-reset", self.reset_secs);
                let policy = format!("{};w={}", self.limit.limit, self.limit.window_secs);
                headers.insert("ratelimit-policy", HeaderValue::from_str(&policy).expect("digits and ;w="));
            }
            HeaderStyle::X => {
                put("x-ratelimit-limit", self.limit.limit);
                put("x-ratelimit-remaining", self.remaining);
                put("x-ratelimit-reset", self.reset_secs);
            }
            HeaderStyle::None => {}
        }
        if !self.admitted {
            headers.insert("retry-after", HeaderValue::from(self.reset_secs.max(1)));
        }
    }
}

/// Fixed windows from the limiter's start.
#[derive(Debug)]
pub struct Limiter {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    limit: Option<RateLimit>,
    window_start: Instant,
    used: u64,
}

impl Limiter {
    pub fn new(limit: Option<RateLimit>) -> Self {
        Self { state: Mutex::new(State { limit, window_start: Instant::now(), used: 0 }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets or lifts the limit; a new window starts now.
    pub fn set(&self, limit: Option<RateLimit>) {
        let mut state = self.lock();
        state.limit = limit;
        state.window_start = Instant::now();
        state.used = 0;
    }

    pub fn limit(&self) -> Option<RateLimit> {
        self.lock().limit
    }

    /// Counts one call at `now`: `None` without a limit.
    pub fn admit(&self, now: Instant) -> Option<Admission> {
        let mut state = self.lock();
        let limit = state.limit?;
        let window = Duration::from_secs(limit.window_secs);
        let elapsed = now.saturating_duration_since(state.window_start);
        if elapsed >= window {
            // Windows stay aligned to the start: skip the whole ones passed.
            let whole = elapsed.as_nanos() / window.as_nanos();
            state.window_start += window * u32::try_from(whole).unwrap_or(u32::MAX);
            state.used = 0;
        }
        let left = window.saturating_sub(now.saturating_duration_since(state.window_start));
        let reset_secs = left.as_millis().div_ceil(1000) as u64;
        let admitted = state.used < limit.limit;
        if admitted {
            state.used += 1;
        }
        Some(Admission { admitted, limit, remaining: limit.limit - state.used, reset_secs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_the_limit_per_window_then_refuses_until_it_resets() {
        let limiter = Limiter::new(Some(RateLimit { limit: 3, window_secs: 2, headers: HeaderStyle::Ietf }));
        let start = limiter.lock().window_start;
        let at = |ms| start + Duration::from_millis(ms);
        for used in 1..=3 {
            let a = limiter.admit(at(100)).unwrap();
            assert!(a.admitted);
            assert_eq!((a.remaining, a.reset_secs), (3 - used, 2));
        }
        let refused = limiter.admit(at(1_500)).unwrap();
        assert!(!refused.admitted);
        let mut headers = HeaderMap::new();
        refused.write_headers(&mut headers);
        assert_eq!(headers["retry-after"], "1");
        assert_eq!(headers["ratelimit-remaining"], "0");
        assert_eq!(headers["ratelimit-policy"], "3;w=2");
        // The next window, and the one after an idle stretch, start full.
        assert!(limiter.admit(at(2_000)).unwrap().admitted);
        let later = limiter.admit(at(9_500)).unwrap();
        assert_eq!((later.remaining, later.reset_secs), (2, 1), "window 8–10 s");
    }

    #[test]
    fn header_families() {
        let admission = |headers| Admission {
            admitted: true,
            limit: RateLimit { limit: 10, window_secs: 1, headers },
            remaining: 4,
            reset_secs: 1,
        };
        let mut x = HeaderMap::new();
        admission(HeaderStyle::X).write_headers(&mut x);
        assert_eq!((x.len(), &x["x-ratelimit-remaining"]), (3, &HeaderValue::from(4)));
        let mut none = HeaderMap::new();
        admission(HeaderStyle::None).write_headers(&mut none);
        assert!(none.is_empty());
        assert!(Limiter::new(None).admit(Instant::now()).is_none());
    }

    #[test]
    fn refuses_a_senseless_limit() {
        let limit = |limit, window_secs| RateLimit { limit, window_secs, headers: HeaderStyle::Ietf }.validate();
        assert!(limit(0, 1).is_err());
        assert!(limit(1, 0).is_err());
        assert!(limit(1, MAX_WINDOW_SECS + 1).is_err());
        assert!(limit(50, 1).is_ok());
    }
}
