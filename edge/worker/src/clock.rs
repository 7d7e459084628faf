//! Time and randomness from the runtime. `Date.now()` in a Worker advances
//! only across I/O (a Spectre mitigation), which is exactly the resolution
//! the core needs: it reads the clock around KV and downstream calls.

use failsoft_edge::ports::Clock;

#[derive(Clone, Copy, Default)]
pub struct JsClock;

impl Clock for JsClock {
    fn now_ms(&self) -> u64 {
        worker::Date::now().as_millis()
    }

    /// From `crypto.getRandomValues` (getrandom's `wasm_js` backend).
    fn random_u64(&self) -> u64 {
        getrandom::u64().unwrap_or_else(|_| (worker::js_sys::Math::random() * (1u64 << 53) as f64) as u64)
    }

    /// `setTimeout`: a pending timer keeps a waiting request alive.
    async fn sleep_ms(&self, ms: u64) {
        worker::Delay::from(std::time::Duration::from_millis(ms)).await
    }
}
