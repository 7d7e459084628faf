//! The Spin key-value store `default` as the facade's KV port.
//!
//! Spin KV has no expiry, so each value is stored as
//! `{expires_at_ms}\n{value}`; a read past that time is a miss (and deletes
//! the entry). An entry never read again is deleted by a sweep ([`sweep`]):
//! one request in `FAILSOFT_KV_SWEEP_EVERY` looks, after its response, at up
//! to [`SWEEP_LOOKS`] keys from a random place in the store's key list.

use failsoft_edge::ports::{Clock, Kv, PortError};
use failsoft_shared::config::{ConfigError, number};
use spin_sdk::key_value::Store;

use crate::SpinClock;

pub struct SpinKv {
    store: Store,
}

impl SpinKv {
    pub fn open() -> Result<Self, PortError> {
        Store::open_default().map(|store| Self { store }).map_err(|e| PortError(format!("kv open: {e}")))
    }
}

/// Splits a stored value into its expiry and the value.
fn unwrap_entry(stored: &[u8]) -> Option<(u64, &str)> {
    let text = std::str::from_utf8(stored).ok()?;
    let (expires, value) = text.split_once('\n')?;
    Some((expires.parse().ok()?, value))
}

impl Kv for SpinKv {
    async fn get(&self, key: &str) -> Result<Option<String>, PortError> {
        let Some(stored) = self.store.get(key).map_err(|e| PortError(format!("kv get: {e}")))? else {
            return Ok(None);
        };
        match unwrap_entry(&stored) {
            Some((expires, value)) if expires > SpinClock.now_ms() => Ok(Some(value.to_owned())),
            _ => {
                self.store.delete(key).ok();
                Ok(None)
            }
        }
    }

    async fn put(&self, key: &str, value: &str, ttl_secs: u64) -> Result<(), PortError> {
        let expires = SpinClock.now_ms().saturating_add(ttl_secs.saturating_mul(1000));
        let stored = format!("{expires}\n{value}");
        self.store.set(key, stored.as_bytes()).map_err(|e| PortError(format!("kv set: {e}")))
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.store.delete(key).map_err(|e| PortError(format!("kv delete: {e}")))
    }
}

/// Every key in the store (Spin's `get-keys` has no prefix or cursor): the
/// write outbox's full drain repairs its index from it.
pub fn list_keys() -> Result<Vec<String>, PortError> {
    Store::open_default().and_then(|store| store.get_keys()).map_err(|e| PortError(format!("kv keys: {e}")))
}

/// The setting: one request in this many sweeps (after its response).
pub const SWEEP_EVERY_SETTING: &str = "FAILSOFT_KV_SWEEP_EVERY";

/// One request in 100 sweeps. With [`SWEEP_LOOKS`] keys looked at per
/// sweep, that is 10 keys a request on average: each request writes at most
/// one or two entries, so the sweep keeps up unless most of the store is
/// expired, and an instance that sweeps pays one key listing and at most
/// [`SWEEP_LOOKS`] reads after its response.
pub const DEFAULT_SWEEP_EVERY: u32 = 100;

/// Keys one sweep reads at most (and deletes, when expired).
pub const SWEEP_LOOKS: usize = 1000;

/// `FAILSOFT_KV_SWEEP_EVERY`: 1 (every request) to 1,000,000.
pub fn sweep_every(lookup: impl Fn(&str) -> Option<String>) -> Result<u32, ConfigError> {
    match number(&lookup, SWEEP_EVERY_SETTING, DEFAULT_SWEEP_EVERY)? {
        every @ 1..=1_000_000 => Ok(every),
        _ => Err(ConfigError::new(SWEEP_EVERY_SETTING, "must be from 1 (every request) to 1000000")),
    }
}

/// The positions one sweep looks at: `looks` in a row from `start`,
/// wrapping, each at most once.
fn window(len: usize, start: u64, looks: usize) -> impl Iterator<Item = usize> {
    let first = if len == 0 { 0 } else { (start % len as u64) as usize };
    (0..len.min(looks)).map(move |i| (first + i) % len)
}

/// On one request in `every` (by `wasi:random`), deletes the expired
/// entries among up to [`SWEEP_LOOKS`] keys, starting at a random key so
/// every key is looked at over time. Spin's `get-keys` lists the whole
/// store (it has no cursor), which is why this is not done on every
/// request. A value not in this adapter's format is left alone. Like an
/// expired read's delete, a sweep's delete may race a value written under
/// the same key between its read and its delete (Spin KV has no
/// compare-and-delete): that loses the new entry, which costs a cache miss
/// (or a write's result, then answered by the origin if it has it), never
/// a wrong answer.
pub fn sweep(every: u32) {
    if !SpinClock.random_u64().is_multiple_of(u64::from(every)) {
        return;
    }
    let swept = Store::open_default().and_then(|store| {
        let keys = store.get_keys()?;
        let now = SpinClock.now_ms();
        let mut deleted = 0usize;
        for i in window(keys.len(), SpinClock.random_u64(), SWEEP_LOOKS) {
            let key = &keys[i];
            let expired = store.get(key)?.as_deref().and_then(unwrap_entry).is_some_and(|(expires, _)| expires <= now);
            if expired {
                store.delete(key)?;
                deleted += 1;
            }
        }
        Ok((keys.len().min(SWEEP_LOOKS), deleted))
    });
    match swept {
        Ok((looked, deleted)) => tracing::debug!(looked, deleted, "kv sweep"),
        Err(e) => tracing::warn!(error = %e, "kv sweep failed"),
    }
}
