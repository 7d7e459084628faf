//! Mode changes that touch the network, serialised behind one lock.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::listener::ApiListener;
use super::mode::{FailureMode, ModeState};
use super::state::Sim;

/// Bound on a webhook delivery, so a tier change cannot hang the admin API.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// What the admin API drives: the simulator and its API listener. The
/// listener's lock also orders mode changes, so two concurrent admin calls
/// cannot leave the port open in `down` or closed in `up`.
#[derive(Debug)]
pub struct Control {
    pub sim: Arc<Sim>,
    pub http: reqwest::Client,
    api: Mutex<ApiListener>,
}

impl Control {
    pub fn new(sim: Arc<Sim>, api: ApiListener) -> io::Result<Self> {
        let http = reqwest::Client::builder().timeout(WEBHOOK_TIMEOUT).build().map_err(io::Error::other)?;
        Ok(Self { sim, http, api: Mutex::new(api) })
    }

    /// Sets the mode; returns once the API port matches it (closed for
    /// `down`, listening otherwise), so callers can test at once.
    pub async fn set_mode(&self, mode: FailureMode) -> io::Result<ModeState> {
        let mut api = self.api.lock().await;
        // The mode changes first: entering `down` wakes hanging requests
        // before the port closes; leaving it, no request can arrive before
        // the mode is no longer `down`.
        let state = self.sim.set_mode(mode);
        if mode.is_down() {
            api.close().await;
        } else if let Err(err) = api.open() {
            self.sim.set_mode(FailureMode::Down);
            return Err(err);
        }
        Ok(state)
    }

    /// Back to a fresh simulator: no records, zero counters, `up`, keys honoured.
    pub async fn reset(&self) -> io::Result<()> {
        self.set_mode(FailureMode::Up).await?;
        self.sim.store.lock().await.reset();
        self.sim.stats.reset();
        self.sim.correlations.clear();
        Ok(())
    }

    /// Closes the API port and waits up to `grace` for its requests.
    pub async fn shutdown(&self, grace: Duration) {
        self.api.lock().await.shutdown(grace).await;
    }
}
