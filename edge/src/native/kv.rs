//! An in-memory key-value store with real expiry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ports::{Kv, PortError};

/// Fewest entries at which a put sweeps out the expired ones. After a
/// sweep the next waits until the map has doubled, so sweeping costs
/// amortised O(1) per put even when a sync holds a million live records,
/// and memory stays bounded by twice the live set.
const SWEEP_AT: usize = 100_000;

#[derive(Default)]
struct Entries {
    map: HashMap<String, (String, Instant)>,
    /// The size at which the next put sweeps (0: [`SWEEP_AT`]).
    sweep_at: usize,
}

#[derive(Default)]
pub struct MemoryKv {
    entries: Mutex<Entries>,
}

impl MemoryKv {
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries held, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Kv for MemoryKv {
    async fn get(&self, key: &str) -> Result<Option<String>, PortError> {
        let mut entries = self.lock();
        match entries.map.get(key) {
            Some((value, expires)) if *expires > Instant::now() => Ok(Some(value.clone())),
            Some(_) => {
                entries.map.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn put(&self, key: &str, value: &str, ttl_secs: u64) -> Result<(), PortError> {
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.map.len() >= entries.sweep_at.max(SWEEP_AT) {
            entries.map.retain(|_, (_, expires)| *expires > now);
            entries.sweep_at = entries.map.len().saturating_mul(2);
        }
        let expires = now.checked_add(Duration::from_secs(ttl_secs)).unwrap_or(now + Duration::from_secs(86_400 * 365));
        entries.map.insert(key.to_owned(), (value.to_owned(), expires));
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.lock().map.remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_expire() {
        let kv = MemoryKv::new();
        kv.put("a", "1", 60).await.unwrap();
        kv.put("b", "2", 0).await.unwrap();
        assert_eq!(kv.get("a").await.unwrap().as_deref(), Some("1"));
        assert_eq!(kv.get("b").await.unwrap(), None);
        kv.delete("a").await.unwrap();
        assert_eq!(kv.get("a").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_sweep_drops_the_expired_and_waits_for_the_map_to_double() {
        let kv = MemoryKv::new();
        for i in 0..SWEEP_AT {
            kv.put(&format!("old{i}"), "x", 0).await.unwrap();
        }
        kv.put("live", "1", 60).await.unwrap();
        assert_eq!(kv.len(), 1, "the put at the threshold swept every expired entry");
        for i in 0..SWEEP_AT - 2 {
            kv.put(&format!("new{i}"), "x", 60).await.unwrap();
        }
        assert_eq!(kv.len(), SWEEP_AT - 1, "below the threshold nothing is swept");
        assert_eq!(kv.get("live").await.unwrap().as_deref(), Some("1"));
    }
}
