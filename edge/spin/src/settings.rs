//! Settings from Spin variables, and the clock.
//!
//! The core asks for `FAILSOFT_X` (and `AWS_*`); Spin variable names are
//! lower snake case, so it reads `failsoft_x`. A variable the manifest does
//! not map to the component is unset; so is an empty one, which is how
//! `spin.toml` leaves an optional secret unset.

use std::time::{SystemTime, UNIX_EPOCH};

use failsoft_edge::ports::Clock;

/// The Spin variable for a setting, or `None` when unset.
pub fn lookup(setting: &str) -> Option<String> {
    match spin_sdk::variables::get(&setting.to_ascii_lowercase()) {
        Ok(value) => Some(value),
        Err(spin_sdk::variables::Error::Undefined(_)) | Err(spin_sdk::variables::Error::InvalidName(_)) => None,
        Err(e) => {
            eprintln!("failsoft-edge-spin: reading variable for {setting}: {e}");
            None
        }
    }
}

/// Wall clock and `wasi:random` (what getrandom would call, without pulling
/// in newer WASI bindings that raise every import to wasi 0.2.12).
#[derive(Clone, Copy, Default)]
pub struct SpinClock;

impl Clock for SpinClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }

    fn random_u64(&self) -> u64 {
        wasi::random::random::get_random_u64()
    }

    /// Blocks the instance: it serves one request, so nothing else waits.
    async fn sleep_ms(&self, ms: u64) {
        wasi::clocks::monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000)).block();
    }
}
