//! The simulator's shared state: records, counters, mode and stop flag.

use std::time::Instant;

use tokio::sync::{Mutex, watch};

use super::clock;
use super::correlations::Correlations;
use super::limit::Limiter;
use super::mode::{FailureMode, ModeState};
use super::stats::Stats;
use super::store::Store;
use super::tokens::Tokens;

/// Everything the API serves from. Mode changes go through a `watch`
/// channel so that hanging requests wake up the moment the mode moves on.
#[derive(Debug)]
pub struct Sim {
    pub store: Mutex<Store>,
    pub stats: Stats,
    /// The correlationIds the API received.
    pub correlations: Correlations,
    /// The rate limit (`--rate-limit`, `POST /admin/rate-limit`).
    pub limiter: Limiter,
    /// Bearer tokens issued by a dialect's token endpoint.
    pub tokens: Tokens,
    mode: watch::Sender<ModeState>,
    shutdown: watch::Sender<bool>,
}

impl Default for Sim {
    fn default() -> Self {
        Self::new()
    }
}

impl Sim {
    pub fn new() -> Self {
        Self {
            store: Mutex::new(Store::default()),
            stats: Stats::default(),
            correlations: Correlations::default(),
            limiter: Limiter::new(None),
            tokens: Tokens::default(),
            mode: watch::Sender::new(Self::state_of(FailureMode::Up)),
            shutdown: watch::Sender::new(false),
        }
    }

    fn state_of(mode: FailureMode) -> ModeState {
        ModeState { mode, since: Instant::now(), since_ms: clock::unix_ms() }
    }

    pub fn mode(&self) -> ModeState {
        *self.mode.borrow()
    }

    /// Switches the mode (restarting a flap's phase even if unchanged). The
    /// listener is [`super::control::Control`]'s business, not this one's.
    pub fn set_mode(&self, mode: FailureMode) -> ModeState {
        let state = Self::state_of(mode);
        self.mode.send_replace(state);
        state
    }

    pub fn watch_mode(&self) -> watch::Receiver<ModeState> {
        self.mode.subscribe()
    }

    /// Releases every waiting request (hang, slow) so the process can stop.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn watch_shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}
