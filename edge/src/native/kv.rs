//! An in-memory key-value store with real expiry and a byte cap.
//!
//! Real traffic writes one entry per caller (kept for the last-known
//! horizon, 7 days by default) and one per write result, so without a bound
//! the map grows with the number of distinct callers. The store is an LRU
//! (`lru::LruCache` keeps the recency order) whose entries are charged their
//! key, their value and a fixed [`ENTRY_OVERHEAD`]; a put that takes the
//! charge over the cap evicts the least recently used entries until it fits.
//! Losing a cold entry only costs a CRM call (or, during an outage, a
//! `default` answer for a caller not seen for a long time); an expired entry
//! is never returned.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::ports::{Kv, PortError};

/// The cap when none is given: room for about 650,000 cache entries of a
/// typical size (a 70-byte key and a 150-byte record), far more than the
/// callers a single native edge sees in a week, at a memory cost any
/// container has.
pub const DEFAULT_MAX_BYTES: usize = 256 * 1024 * 1024;

/// The smallest cap the native host accepts: below it a burst of lookups
/// would evict records still being refreshed.
pub const MIN_MAX_BYTES: usize = 1024 * 1024;

/// What an entry costs beyond its key and value bytes, on a 64-bit target:
/// the list node (key and value `String`s, the expiry, two links: 80 bytes
/// in a 96-byte allocation), the hash table's slot (16 bytes at a load of
/// 7/16 to 7/8 after growth: up to ~40 bytes) and the allocator's rounding
/// of the two strings (up to ~30 bytes each). Rounded up, so the charge
/// is at least what the entry really holds.
pub const ENTRY_OVERHEAD: usize = 192;

/// Expired entries a put drops from the cold end of the order at most,
/// before inserting: keeps expired entries from holding the space of live
/// ones, at a bounded cost under the lock.
const EXPIRED_DROPS_PER_PUT: usize = 16;

struct Entry {
    value: String,
    expires: Instant,
}

/// The charge of one entry.
fn cost(key: &str, value: &str) -> usize {
    key.len().saturating_add(value.len()).saturating_add(ENTRY_OVERHEAD)
}

struct Entries {
    order: LruCache<String, Entry>,
    /// Sum of [`cost`] over `order`.
    bytes: usize,
}

impl Entries {
    /// Removes `key`, returning its charge to the budget.
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.order.pop(key)?;
        self.bytes -= cost(key, &entry.value);
        Some(entry)
    }

    /// Drops the least recently used entry (`None` when empty).
    fn drop_coldest(&mut self) -> Option<(String, Entry)> {
        let (key, entry) = self.order.pop_lru()?;
        self.bytes -= cost(&key, &entry.value);
        Some((key, entry))
    }

    /// Drops expired entries from the cold end, at most `limit`.
    fn drop_expired_coldest(&mut self, now: Instant, limit: usize) -> u64 {
        let mut dropped = 0;
        while dropped < limit as u64 && self.order.peek_lru().is_some_and(|(_, entry)| entry.expires <= now) {
            self.drop_coldest();
            dropped += 1;
        }
        dropped
    }
}

/// The store's gauges and counters (`/metrics`). Handles are taken when
/// the store is built, so build it after the metrics recorder is installed
/// (the binary does); without one they do nothing.
struct Meters {
    bytes: metrics::Gauge,
    entries: metrics::Gauge,
    evicted: metrics::Counter,
    expired: metrics::Counter,
}

impl Meters {
    fn new(max_bytes: usize) -> Self {
        metrics::gauge!("failsoft_edge_kv_max_bytes").set(max_bytes as f64);
        Self {
            bytes: metrics::gauge!("failsoft_edge_kv_bytes"),
            entries: metrics::gauge!("failsoft_edge_kv_entries"),
            evicted: metrics::counter!("failsoft_edge_kv_evictions_total"),
            expired: metrics::counter!("failsoft_edge_kv_expired_total"),
        }
    }

    fn size(&self, entries: &Entries) {
        self.bytes.set(entries.bytes as f64);
        self.entries.set(entries.order.len() as f64);
    }
}

/// The native host's KV: an LRU of at most `max_bytes` (see [`cost`]),
/// where a read refreshes an entry's recency and an expired entry reads as
/// missing and is dropped.
pub struct MemoryKv {
    entries: Mutex<Entries>,
    max_bytes: usize,
    meters: Meters,
}

impl Default for MemoryKv {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryKv {
    /// A store capped at [`DEFAULT_MAX_BYTES`].
    pub fn new() -> Self {
        Self::with_max_bytes(DEFAULT_MAX_BYTES)
    }

    /// A store that holds at most `max_bytes` of charged entries.
    pub fn with_max_bytes(max_bytes: usize) -> Self {
        Self {
            entries: Mutex::new(Entries { order: LruCache::unbounded(), bytes: 0 }),
            max_bytes,
            meters: Meters::new(max_bytes),
        }
    }

    /// Entries held, expired ones not yet dropped included.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The charge of the entries held: never above [`Self::max_bytes`].
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Kv for MemoryKv {
    async fn get(&self, key: &str) -> Result<Option<String>, PortError> {
        let mut entries = self.lock();
        match entries.order.get(key) {
            Some(entry) if entry.expires > Instant::now() => Ok(Some(entry.value.clone())),
            Some(_) => {
                entries.remove(key);
                self.meters.expired.increment(1);
                self.meters.size(&entries);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Replaces any entry under `key`, then evicts the least recently used
    /// entries until the charge fits the cap. An entry larger than the whole
    /// cap is refused (and the key's old value dropped, so it is never read
    /// in place of the new one).
    async fn put(&self, key: &str, value: &str, ttl_secs: u64) -> Result<(), PortError> {
        let now = Instant::now();
        let charge = cost(key, value);
        let mut entries = self.lock();
        entries.remove(key);
        if charge > self.max_bytes {
            self.meters.size(&entries);
            return Err(PortError(format!(
                "kv put: an entry of {charge} bytes is larger than the whole store (FAILSOFT_KV_MAX_BYTES={})",
                self.max_bytes
            )));
        }
        let expired = entries.drop_expired_coldest(now, EXPIRED_DROPS_PER_PUT);
        let mut evicted = 0;
        while entries.bytes + charge > self.max_bytes && entries.drop_coldest().is_some() {
            evicted += 1;
        }
        let expires = now.checked_add(Duration::from_secs(ttl_secs)).unwrap_or(now + Duration::from_secs(86_400 * 365));
        entries.order.put(key.to_owned(), Entry { value: value.to_owned(), expires });
        entries.bytes += charge;
        self.meters.size(&entries);
        drop(entries);
        self.meters.expired.increment(expired);
        self.meters.evicted.increment(evicted);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        let mut entries = self.lock();
        entries.remove(key);
        self.meters.size(&entries);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store with room for exactly `n` entries of a one-byte key and value.
    fn room_for(n: usize) -> MemoryKv {
        MemoryKv::with_max_bytes(n * cost("k", "v"))
    }

    async fn read(kv: &MemoryKv, key: &str) -> Option<String> {
        kv.get(key).await.unwrap()
    }

    #[tokio::test]
    async fn entries_expire() {
        let kv = MemoryKv::new();
        kv.put("a", "1", 60).await.unwrap();
        kv.put("b", "2", 0).await.unwrap();
        assert_eq!(read(&kv, "a").await.as_deref(), Some("1"));
        assert_eq!(read(&kv, "b").await, None);
        assert_eq!(kv.len(), 1, "reading the expired entry dropped it");
        kv.delete("a").await.unwrap();
        assert_eq!(read(&kv, "a").await, None);
        assert_eq!((kv.len(), kv.bytes()), (0, 0), "nothing held, nothing charged");
    }

    #[tokio::test]
    async fn the_least_recently_used_entry_is_evicted_first() {
        let kv = room_for(3);
        for key in ["a", "b", "c"] {
            kv.put(key, "v", 60).await.unwrap();
        }
        assert_eq!(read(&kv, "a").await.as_deref(), Some("v"), "a is now the most recently used");
        kv.put("d", "v", 60).await.unwrap();
        assert_eq!(read(&kv, "b").await, None, "b was the least recently used");
        for key in ["a", "c", "d"] {
            assert_eq!(read(&kv, key).await.as_deref(), Some("v"), "{key} is kept");
        }
        assert_eq!(kv.bytes(), kv.max_bytes(), "three entries fill the cap exactly");
    }

    #[tokio::test]
    async fn a_replaced_value_is_charged_at_its_new_size() {
        let kv = MemoryKv::with_max_bytes(4096);
        kv.put("key", "short", 60).await.unwrap();
        assert_eq!(kv.bytes(), cost("key", "short"));
        let long = "x".repeat(1000);
        kv.put("key", &long, 60).await.unwrap();
        assert_eq!((kv.len(), kv.bytes()), (1, cost("key", &long)), "the old value's charge is returned");
        kv.put("key", "s", 60).await.unwrap();
        assert_eq!(kv.bytes(), cost("key", "s"));
        assert_eq!(read(&kv, "key").await.as_deref(), Some("s"));
    }

    #[tokio::test]
    async fn a_growing_value_evicts_others_but_never_itself() {
        let kv = MemoryKv::with_max_bytes(3 * cost("k", "v") + 10);
        for key in ["a", "b", "c"] {
            kv.put(key, "v", 60).await.unwrap();
        }
        kv.put("c", "v-with-eleven", 60).await.unwrap();
        assert_eq!(read(&kv, "a").await, None, "the coldest made room");
        assert_eq!(read(&kv, "b").await.as_deref(), Some("v"));
        assert_eq!(read(&kv, "c").await.as_deref(), Some("v-with-eleven"));
        assert!(kv.bytes() <= kv.max_bytes());
    }

    #[tokio::test]
    async fn an_entry_larger_than_the_cap_is_refused_and_drops_the_old_value() {
        let kv = MemoryKv::with_max_bytes(1024);
        kv.put("other", "v", 60).await.unwrap();
        kv.put("key", "old", 60).await.unwrap();
        let error = kv.put("key", &"x".repeat(2000), 60).await.unwrap_err();
        assert!(error.0.contains("FAILSOFT_KV_MAX_BYTES"), "{}", error.0);
        assert_eq!(read(&kv, "key").await, None, "never the old value in place of the refused one");
        assert_eq!(read(&kv, "other").await.as_deref(), Some("v"), "nothing else was evicted for it");
    }

    #[tokio::test]
    async fn a_put_drops_expired_entries_from_the_cold_end_before_evicting_live_ones() {
        let kv = room_for(3);
        kv.put("gone1", "v", 0).await.unwrap();
        kv.put("gone2", "v", 0).await.unwrap();
        kv.put("live", "v", 60).await.unwrap();
        kv.put("new", "v", 60).await.unwrap();
        assert_eq!(kv.len(), 2, "both expired entries dropped, no live one evicted");
        assert_eq!(read(&kv, "live").await.as_deref(), Some("v"));
        assert_eq!(read(&kv, "new").await.as_deref(), Some("v"));
    }
}
