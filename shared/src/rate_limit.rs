//! What a downstream says about its rate limit, read from its answer's
//! headers, so the replay can go as fast as the CRM allows and no faster
//! ([`crate::replay::ReplayRate::on_quota`]).
//!
//! The header families read, first match wins:
//!
//! | family | limit | remaining | reset | window |
//! |---|---|---|---|---|
//! | IETF draft, structured (`draft-ietf-httpapi-ratelimit-headers` ≥ 08) | `RateLimit-Policy: "p";q=100;w=10` | `RateLimit: "p";r=50;t=3` | `t=` (seconds) | `w=` |
//! | IETF draft, earlier (≤ 07; Zendesk's `ratelimit-*`) | `RateLimit-Limit` | `RateLimit-Remaining` | `RateLimit-Reset` (seconds) | `RateLimit-Policy: 100;w=10` |
//! | HubSpot | `X-HubSpot-RateLimit-Max` | `X-HubSpot-RateLimit-Remaining` | — | `X-HubSpot-RateLimit-Interval-Milliseconds` |
//! | common `X-` | `X-RateLimit-Limit` | `X-RateLimit-Remaining` | `X-RateLimit-Reset` (seconds, or a Unix time) | — |
//! | Zendesk account limit | `X-Rate-Limit` | `X-Rate-Limit-Remaining` | — | 60 s (documented per minute) |
//!
//! Sans-IO: the caller passes a header getter and the Unix time.

/// A reset larger than this is a Unix time (GitHub's `X-RateLimit-Reset`),
/// not a number of seconds to wait (no window is 30 years long).
const UNIX_TIME_FROM: u64 = 1_000_000_000;

/// The longest window believed, ms (a day: daily API allocations say
/// nothing about the pace of the next second).
const MAX_WINDOW_MS: u64 = 86_400_000;

/// A downstream's rate limit as one answer states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quota {
    /// Calls allowed per window.
    pub limit: Option<u64>,
    /// Calls left in the current window.
    pub remaining: Option<u64>,
    /// Until the current window ends, ms.
    pub reset_ms: Option<u64>,
    /// The window's length, ms, where the answer says it.
    pub window_ms: Option<u64>,
}

impl Quota {
    /// The sustained rate the limit allows, calls per second, when both
    /// the limit and its window are known.
    pub fn calls_per_sec(&self) -> Option<f64> {
        match (self.limit, self.window_ms) {
            (Some(limit), Some(window)) if limit > 0 && window > 0 => Some(limit as f64 * 1000.0 / window as f64),
            _ => None,
        }
    }
}

/// Reads the rate-limit headers of one answer; `None` when it has none.
/// `header` returns a header's value by its lower-case name.
pub fn read<'a>(header: impl Fn(&str) -> Option<&'a str>, now_unix_secs: u64) -> Option<Quota> {
    let number = |name: &str| header(name).and_then(leading_number);
    let quota = if let Some(policy) = header("ratelimit-policy").filter(|p| p.contains("q=")) {
        let state = header("ratelimit").unwrap_or("");
        Quota {
            limit: parameter(policy, "q"),
            remaining: parameter(state, "r"),
            reset_ms: parameter(state, "t").map(secs_to_ms),
            window_ms: parameter(policy, "w").map(secs_to_ms),
        }
    } else if header("ratelimit-limit").is_some() || header("ratelimit-remaining").is_some() {
        Quota {
            limit: number("ratelimit-limit"),
            remaining: number("ratelimit-remaining"),
            reset_ms: number("ratelimit-reset").map(|s| reset_ms(s, now_unix_secs)),
            window_ms: header("ratelimit-policy")
                .and_then(|p| parameter(p, "w"))
                .or_else(|| header("ratelimit-limit").and_then(|l| parameter(l, "w")))
                .map(secs_to_ms),
        }
    } else if header("x-hubspot-ratelimit-max").is_some() {
        Quota {
            limit: number("x-hubspot-ratelimit-max"),
            remaining: number("x-hubspot-ratelimit-remaining"),
            reset_ms: None,
            window_ms: number("x-hubspot-ratelimit-interval-milliseconds"),
        }
    } else if header("x-ratelimit-limit").is_some() || header("x-ratelimit-remaining").is_some() {
        Quota {
            limit: number("x-ratelimit-limit"),
            remaining: number("x-ratelimit-remaining"),
            reset_ms: number("x-ratelimit-reset").map(|s| reset_ms(s, now_unix_secs)),
            window_ms: None,
        }
    } else if header("x-rate-limit").is_some() {
        Quota {
            limit: number("x-rate-limit"),
            remaining: number("x-rate-limit-remaining"),
            reset_ms: None,
            window_ms: Some(60_000),
        }
    } else {
        return None;
    };
    let window_ms = quota.window_ms.filter(|w| (1..=MAX_WINDOW_MS).contains(w));
    Some(Quota { window_ms, ..quota })
}

/// A reset in seconds, or a Unix time, as ms from now.
fn reset_ms(value: u64, now_unix_secs: u64) -> u64 {
    let secs = if value >= UNIX_TIME_FROM { value.saturating_sub(now_unix_secs) } else { value };
    secs_to_ms(secs)
}

fn secs_to_ms(secs: u64) -> u64 {
    secs.saturating_mul(1000)
}

/// The digits a value starts with (`100`, `100, 100;w=60`), at most 18 of
/// them (no overflow).
fn leading_number(value: &str) -> Option<u64> {
    let value = value.trim_start();
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 18 {
        return None;
    }
    value[..digits].parse().ok()
}

/// `key=<digits>` among a structured field's `;`- and `,`-separated
/// parameters: `"default";q=100;w=10` → `q` = 100.
fn parameter(value: &str, key: &str) -> Option<u64> {
    value.split([';', ',']).find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        if k.trim().eq_ignore_ascii_case(key) { leading_number(v) } else { None }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_from(headers: &[(&'static str, &'static str)]) -> Option<Quota> {
        read(|name| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v), 1_800_000_000)
    }

    #[test]
    fn no_headers_no_quota() {
        assert_eq!(read_from(&[("retry-after", "3")]), None);
    }

    #[test]
    fn reads_the_structured_ietf_fields() {
        let q = read_from(&[("ratelimit-policy", "\"default\";q=100;w=10"), ("ratelimit", "\"default\";r=42;t=3")])
            .unwrap();
        assert_eq!(q, Quota { limit: Some(100), remaining: Some(42), reset_ms: Some(3_000), window_ms: Some(10_000) });
        assert_eq!(q.calls_per_sec(), Some(10.0));
    }

    #[test]
    fn reads_the_earlier_ietf_fields_with_and_without_a_policy() {
        let q = read_from(&[
            ("ratelimit-limit", "50"),
            ("ratelimit-remaining", "7"),
            ("ratelimit-reset", "1"),
            ("ratelimit-policy", "50;w=1"),
        ])
        .unwrap();
        assert_eq!(q, Quota { limit: Some(50), remaining: Some(7), reset_ms: Some(1_000), window_ms: Some(1_000) });
        assert_eq!(q.calls_per_sec(), Some(50.0));
        // A quota comment in the limit itself (draft 03).
        let q = read_from(&[("ratelimit-limit", "100, 100;w=60"), ("ratelimit-remaining", "0")]).unwrap();
        assert_eq!((q.window_ms, q.remaining, q.reset_ms), (Some(60_000), Some(0), None));
        // No window: no sustained rate, only the budget.
        let q = read_from(&[("ratelimit-limit", "100"), ("ratelimit-remaining", "3"), ("ratelimit-reset", "2")]);
        assert_eq!(q.unwrap().calls_per_sec(), None);
    }

    #[test]
    fn reads_hubspot_and_zendesk() {
        let q = read_from(&[
            ("x-hubspot-ratelimit-max", "190"),
            ("x-hubspot-ratelimit-remaining", "189"),
            ("x-hubspot-ratelimit-interval-milliseconds", "10000"),
        ])
        .unwrap();
        assert_eq!(q.calls_per_sec(), Some(19.0));
        assert_eq!(q.remaining, Some(189));
        let q = read_from(&[("x-rate-limit", "700"), ("x-rate-limit-remaining", "699")]).unwrap();
        assert_eq!(q.window_ms, Some(60_000));
        assert!((q.calls_per_sec().unwrap() - 700.0 / 60.0).abs() < 1e-9);
    }

    #[test]
    fn an_x_reset_may_be_a_unix_time() {
        let q = read_from(&[("x-ratelimit-limit", "5000"), ("x-ratelimit-reset", "1800000030")]).unwrap();
        assert_eq!(q.reset_ms, Some(30_000));
        let past = read_from(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1700000000")]).unwrap();
        assert_eq!(past.reset_ms, Some(0), "a reset in the past is now");
        let q = read_from(&[("x-ratelimit-limit", "60"), ("x-ratelimit-reset", "12")]).unwrap();
        assert_eq!(q.reset_ms, Some(12_000));
    }

    #[test]
    fn hostile_values_are_ignored_not_trusted() {
        let q = read_from(&[
            ("ratelimit-limit", "99999999999999999999999"),
            ("ratelimit-remaining", "-1"),
            ("ratelimit-reset", "abc"),
            ("ratelimit-policy", "10;w=0"),
        ])
        .unwrap();
        assert_eq!(q, Quota::default());
        let q = read_from(&[("ratelimit-limit", "10"), ("ratelimit-policy", "10;w=999999999")]).unwrap();
        assert_eq!(q.window_ms, None, "a window over a day is not a pace");
    }
}
