//! Workers KV accepts one write per key per second and answers a second one
//! with 429. [`WritePacer`] decides, per isolate, which writes go out now and
//! which wait: a write (put or delete) within [`WRITE_INTERVAL_MS`] of the
//! last one to its key is *deferred*, not dropped. The latest deferred write
//! per key wins, and reads in the isolate see it at once.
//!
//! Plain data and `now` in, decisions out: it builds and is tested on the
//! host; `kv.rs` does the I/O.

use std::collections::HashMap;

/// KV's write rate per key.
pub const WRITE_INTERVAL_MS: u64 = 1_000;

#[derive(Debug)]
pub struct WritePacer<W> {
    /// When each key was last written; entries older than the interval are
    /// dropped on the next admission, so the map holds one second of keys.
    last: HashMap<String, u64>,
    /// The latest write per key waiting for its second to pass.
    deferred: HashMap<String, W>,
}

impl<W> Default for WritePacer<W> {
    fn default() -> Self {
        Self { last: HashMap::new(), deferred: HashMap::new() }
    }
}

impl<W> WritePacer<W> {
    /// `Some(write)` when it may go out now (and it is recorded as done at
    /// `now`); `None` when it was deferred, replacing any deferred before it.
    pub fn admit(&mut self, key: &str, write: W, now: u64) -> Option<W> {
        self.last.retain(|_, at| now.saturating_sub(*at) < WRITE_INTERVAL_MS);
        if self.last.contains_key(key) || self.deferred.contains_key(key) {
            self.deferred.insert(key.to_owned(), write);
            None
        } else {
            self.last.insert(key.to_owned(), now);
            Some(write)
        }
    }

    /// The deferred write to `key`, which a read must see.
    pub fn deferred(&self, key: &str) -> Option<&W> {
        self.deferred.get(key)
    }

    pub fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// The deferred write due first: when it may go out, and its key.
    pub fn next_due(&self) -> Option<(u64, String)> {
        self.deferred.keys().map(|key| (self.last.get(key).map_or(0, |at| at + WRITE_INTERVAL_MS), key.clone())).min()
    }

    /// Takes the deferred write to `key` to perform it at `now`, which
    /// starts the key's next second.
    pub fn take(&mut self, key: &str, now: u64) -> Option<W> {
        let write = self.deferred.remove(key)?;
        self.last.insert(key.to_owned(), now);
        Some(write)
    }

    /// Records that a write to `key` finished at `now`: the second counts
    /// from the end of a write, to be safe.
    pub fn finished(&mut self, key: &str, now: u64) {
        self.last.insert(key.to_owned(), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_write_within_a_second_is_deferred_and_the_latest_wins() {
        let mut pacer = WritePacer::default();
        assert_eq!(pacer.admit("k", "v1", 10_000), Some("v1"));
        assert_eq!(pacer.admit("other", "x", 10_100), Some("x"), "keys are paced separately");
        assert_eq!(pacer.admit("k", "v2", 10_500), None);
        assert_eq!(pacer.admit("k", "v3", 10_600), None);
        assert_eq!(pacer.deferred("k"), Some(&"v3"), "reads see the latest deferred write");
        assert_eq!(pacer.next_due(), Some((11_000, "k".to_owned())));
        assert_eq!(pacer.take("k", 11_000), Some("v3"));
        assert!(!pacer.has_deferred());
        assert_eq!(pacer.admit("k", "v4", 11_500), None, "the flushed write started a new second");
    }

    #[test]
    fn a_write_after_the_interval_goes_out_at_once() {
        let mut pacer = WritePacer::default();
        assert_eq!(pacer.admit("k", 1, 0), Some(1));
        pacer.finished("k", 300);
        assert_eq!(pacer.admit("k", 2, 1_200), None, "the second counts from the end of the write");
        assert_eq!(pacer.next_due(), Some((1_300, "k".to_owned())));
        assert_eq!(pacer.take("k", 1_300), Some(2));
        assert_eq!(pacer.admit("k", 3, 2_400), Some(3));
    }

    #[test]
    fn a_deferred_write_stays_deferred_after_its_second_until_flushed() {
        let mut pacer = WritePacer::default();
        pacer.admit("k", "a", 0);
        pacer.admit("k", "b", 100);
        // Past the second, yet "b" is still waiting: "c" replaces it rather
        // than overtaking it, so the flush writes the latest value once.
        assert_eq!(pacer.admit("k", "c", 5_000), None);
        assert_eq!(pacer.next_due(), Some((0, "k".to_owned())), "due at once: its second passed");
        assert_eq!(pacer.take("k", 5_000), Some("c"));
        assert_eq!(pacer.take("k", 5_000), None);
    }
}
