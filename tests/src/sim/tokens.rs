//! Bearer tokens the dialects' token endpoints issue (`--dialect`).
//!
//! A token is valid from its issue until its lifetime ends or the admin API
//! revokes every token (`POST /admin/tokens/revoke`), whichever comes first,
//! so a test can force a 401 and watch the client fetch a new token once.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Most live tokens kept; past it the expired ones go first, then the
/// soonest to expire (a client that fetches a token per call cannot exhaust
/// memory).
const MAX_LIVE: usize = 100_000;

#[derive(Debug, Default)]
pub struct Tokens {
    /// Each live token and when it expires.
    live: Mutex<HashMap<String, Instant>>,
    sequence: AtomicU64,
    /// Keyed at random per process: tokens are not guessable from the sequence.
    random: RandomState,
}

impl Tokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Issues a token valid for `lifetime` from `now`: `prefix` followed by
    /// 48 hex digits.
    pub fn issue(&self, prefix: &str, lifetime: Duration, now: Instant) -> String {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        let words = [self.random.hash_one((n, 1u8)), self.random.hash_one((n, 2u8)), self.random.hash_one((n, 3u8))];
        let token = format!("{prefix}{:016x}{:016x}{:016x}", words[0], words[1], words[2]);
        let mut live = self.lock();
        if live.len() >= MAX_LIVE {
            live.retain(|_, expires| *expires > now);
        }
        if live.len() >= MAX_LIVE
            && let Some(soonest) = live.iter().min_by_key(|(_, expires)| **expires).map(|(t, _)| t.clone())
        {
            live.remove(&soonest);
        }
        live.insert(token.clone(), now + lifetime);
        token
    }

    /// Whether the token was issued, is not revoked and has not expired at `now`.
    pub fn is_valid(&self, token: &str, now: Instant) -> bool {
        self.lock().get(token).is_some_and(|expires| *expires > now)
    }

    /// Revokes every token; returns how many were still valid.
    pub fn revoke_all(&self, now: Instant) -> usize {
        let mut live = self.lock();
        let valid = live.values().filter(|expires| **expires > now).count();
        live.clear();
        valid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_and_are_revoked() {
        let tokens = Tokens::default();
        let now = Instant::now();
        let a = tokens.issue("x!", Duration::from_secs(10), now);
        let b = tokens.issue("x!", Duration::from_secs(10), now);
        assert_ne!(a, b);
        assert!(a.starts_with("x!") && a.len() == 2 + 48);
        assert!(tokens.is_valid(&a, now + Duration::from_secs(9)));
        assert!(!tokens.is_valid(&a, now + Duration::from_secs(10)), "expired at its lifetime");
        assert!(!tokens.is_valid("x!nope", now));
        assert_eq!(tokens.revoke_all(now), 2);
        assert!(!tokens.is_valid(&b, now), "revoked");
    }
}
