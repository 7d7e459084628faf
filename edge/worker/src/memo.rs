//! An isolate's short memory of what it read from and wrote to Workers KV.
//!
//! A cache hit is one KV read, and on Workers that read is most of the
//! hit's cost: a call out of the isolate to the KV service, billed per
//! read. Workers KV is eventually consistent (a value written elsewhere is
//! visible everywhere within about 60 s, and reads may be served from a
//! cache for that long), so remembering a read for [`DEFAULT_MEMO_MS`]
//! changes nothing a caller could rely on: within the isolate, its own
//! writes replace what it remembers at once; between isolates, the second
//! adds to a window that is already a minute.
//!
//! What the core decides from a value (fresh, stale, expired, a breaker's
//! cool-down) it decides with the clock of the request, so remembering the
//! text never makes an answer fresher than it is.
//!
//! Plain data and `now` in, decisions out: it builds and is tested on the
//! host; `kv.rs` does the I/O.

use std::collections::HashMap;

/// How long a read is remembered unless `FAILSOFT_KV_MEMO_MS` says
/// otherwise (0 turns the memory off).
pub const DEFAULT_MEMO_MS: u64 = 1_000;

/// Keys remembered at most: a bound on the isolate's memory (a cached
/// lookup is under 1 KiB, so about 1 MiB of Workers' 128 MiB).
pub const MAX_KEYS: usize = 1_024;

#[derive(Debug)]
pub struct Memo {
    ttl_ms: u64,
    /// A key's value (`None`: KV has none) and when it is forgotten.
    held: HashMap<String, (Option<String>, u64)>,
    /// Writes finished so far: a read that was under way while one
    /// finished may have fetched what that write replaced.
    writes: u64,
}

/// Taken before a read from KV (see [`Memo::remember_read`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadStart(u64);

impl Memo {
    pub fn new(ttl_ms: u64) -> Self {
        Self { ttl_ms, held: HashMap::new(), writes: 0 }
    }

    /// Marks the start of a read from KV.
    pub fn read_start(&self) -> ReadStart {
        ReadStart(self.writes)
    }

    /// Remembers what a read started at `start` fetched, unless a write of
    /// this isolate finished meanwhile: the read may then hold what that
    /// write replaced (a cache entry the webhook just invalidated), and
    /// remembering it would serve it on for the memo time.
    pub fn remember_read(&mut self, start: ReadStart, key: &str, value: Option<&str>, now: u64) {
        if start.0 == self.writes {
            self.remember(key, value, now);
        }
    }

    /// Remembers what this isolate's write left in KV.
    pub fn remember_write(&mut self, key: &str, value: Option<&str>, now: u64) {
        self.writes += 1;
        self.remember(key, value, now);
    }

    /// What KV held for `key` less than the memo's time ago, if remembered.
    pub fn get(&self, key: &str, now: u64) -> Option<Option<&str>> {
        match self.held.get(key) {
            Some((value, until)) if now < *until => Some(value.as_deref()),
            _ => None,
        }
    }

    /// Remembers what KV holds for `key`. A full memory first forgets what
    /// has expired; if none has, the key is not remembered.
    fn remember(&mut self, key: &str, value: Option<&str>, now: u64) {
        if self.ttl_ms == 0 {
            return;
        }
        if self.held.len() >= MAX_KEYS && !self.held.contains_key(key) {
            self.held.retain(|_, (_, until)| now < *until);
            if self.held.len() >= MAX_KEYS {
                return;
            }
        }
        self.held.insert(key.to_owned(), (value.map(str::to_owned), now + self.ttl_ms));
    }

    /// Forgets `key`: a write to it failed, so what KV holds is unknown.
    pub fn forget(&mut self, key: &str) {
        self.writes += 1;
        self.held.remove(key);
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_is_remembered_for_the_memo_time_and_no_longer() {
        let mut memo = Memo::new(1_000);
        assert_eq!(memo.get("k", 0), None, "nothing read yet");
        let start = memo.read_start();
        memo.remember_read(start, "k", Some("v"), 10_000);
        memo.remember_read(start, "absent", None, 10_000);
        assert_eq!(memo.get("k", 10_999), Some(Some("v")));
        assert_eq!(memo.get("absent", 10_500), Some(None), "KV had none: remembered too");
        assert_eq!(memo.get("k", 11_000), None, "forgotten after the memo time");
    }

    #[test]
    fn the_isolates_own_write_replaces_what_it_remembers() {
        let mut memo = Memo::new(1_000);
        memo.remember_read(memo.read_start(), "k", Some("old"), 0);
        memo.remember_write("k", Some("new"), 100);
        assert_eq!(memo.get("k", 1_050), Some(Some("new")), "and its time starts again");
        memo.remember_write("k", None, 200);
        assert_eq!(memo.get("k", 300), Some(None), "a delete is remembered as none");
        memo.forget("k");
        assert_eq!(memo.get("k", 300), None);
    }

    #[test]
    fn a_read_overtaken_by_a_write_is_not_remembered() {
        let mut memo = Memo::new(1_000);
        memo.remember_read(memo.read_start(), "k", Some("cached"), 0);
        // A lookup's read leaves for KV; the webhook's delete of the same
        // key finishes before the read comes back with the old entry.
        let start = memo.read_start();
        memo.remember_write("k", None, 10);
        memo.remember_read(start, "k", Some("cached"), 20);
        assert_eq!(memo.get("k", 30), Some(None), "the delete stands, not the overtaken read");
        let start = memo.read_start();
        memo.forget("other");
        memo.remember_read(start, "k2", Some("v"), 40);
        assert_eq!(memo.get("k2", 50), None, "a failed write counts as well");
    }

    #[test]
    fn zero_turns_it_off() {
        let mut memo = Memo::new(0);
        memo.remember_write("k", Some("v"), 0);
        assert_eq!(memo.get("k", 0), None);
        assert!(memo.is_empty());
    }

    #[test]
    fn a_full_memory_forgets_the_expired_and_never_grows_past_its_bound() {
        let mut memo = Memo::new(1_000);
        for i in 0..MAX_KEYS {
            memo.remember_write(&format!("k{i}"), Some("v"), 0);
        }
        memo.remember_write("late", Some("v"), 500);
        assert_eq!(memo.len(), MAX_KEYS, "bounded");
        assert_eq!(memo.get("late", 500), None, "nothing had expired, so it was not remembered");
        memo.remember_write("k0", Some("w"), 600);
        assert_eq!(memo.get("k0", 600), Some(Some("w")), "a key already held is still replaced");
        memo.remember_write("later", Some("v"), 1_000);
        assert_eq!(memo.get("later", 1_000), Some(Some("v")), "the expired made room");
        assert_eq!(memo.len(), 2, "k0 (renewed) and later");
    }
}
