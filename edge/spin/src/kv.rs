//! The Spin key-value store `default` as the facade's KV port.
//!
//! Spin KV has no expiry, so each value is stored as
//! `{expires_at_ms}\n{value}`; a read past that time is a miss (and deletes
//! the entry). Nothing sweeps entries that are never read again: their number
//! is bounded by the customers looked up within the last-known horizon.

use failsoft_edge::ports::{Clock, Kv, PortError};
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
