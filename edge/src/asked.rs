//! Refresh-ahead's memory: which keys this process (isolate, instance)
//! already asked to refresh in the current window, so a hot record near
//! the end of its freshness window sends one refresh, not one per hit.
//! Across processes the queue's deduplication id (entity and window) makes
//! the rest one; a Spin instance lives for one request, so there that id
//! alone does it.

use std::collections::HashMap;
use std::sync::Mutex;

/// Keys remembered at most; past it the map is cleared (a forgotten key
/// costs one more refresh, which the queue deduplicates).
pub const MAX_KEYS: usize = 10_000;

#[derive(Default)]
pub struct Asked {
    windows: Mutex<HashMap<String, u64>>,
}

impl Asked {
    /// Whether `key` is asked for the first time in the window of
    /// `window_ms` holding `now_ms` (and remembers that it now was).
    pub fn first_in_window(&self, key: &str, now_ms: u64, window_ms: u64) -> bool {
        let window = now_ms / window_ms.max(1);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.get(key) == Some(&window) {
            return false;
        }
        if windows.len() >= MAX_KEYS {
            windows.retain(|_, w| *w == window);
            if windows.len() >= MAX_KEYS {
                windows.clear();
            }
        }
        windows.insert(key.to_owned(), window);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_key_per_window() {
        let asked = Asked::default();
        assert!(asked.first_in_window("a", 1_000, 300_000));
        assert!(!asked.first_in_window("a", 299_999, 300_000));
        assert!(asked.first_in_window("b", 299_999, 300_000));
        assert!(asked.first_in_window("a", 300_000, 300_000), "a new window asks again");
    }

    #[test]
    fn bounded() {
        let asked = Asked::default();
        for i in 0..MAX_KEYS + 10 {
            assert!(asked.first_in_window(&i.to_string(), 5, 300_000));
        }
        assert!(asked.windows.lock().unwrap().len() <= MAX_KEYS);
    }
}
