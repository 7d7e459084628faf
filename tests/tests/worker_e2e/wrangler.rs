//! The built Worker under `wrangler dev --local` (workerd with Miniflare's
//! KV), one per test, on a loopback port wrangler picks (`--port 0`; its
//! "Ready on" line names it), its state in a temporary directory, stopped
//! with its whole process group (wrangler runs workerd) when dropped. A
//! failing test shows what wrangler and the Worker printed.
//!
//! Build it first: `make worker` (the tests do not run worker-build: two
//! tests building at once would race on `edge/worker/build`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use failsoft_lab::local_stack;
use failsoft_lab::process::{Ready, Service};

/// How long wrangler may take to bundle and start workerd (2 cores, shared).
const START_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A fresh directory under the system's temporary one; its owner removes it.
pub fn temp_dir() -> PathBuf {
    static RUN: AtomicU32 = AtomicU32::new(0);
    let n = RUN.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("failsoft-worker-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

pub fn workspace_root() -> PathBuf {
    failsoft_lab::local_stack::workspace_root()
}

/// A running `wrangler dev`.
pub struct WranglerDev {
    service: Service,
    pub url: String,
    dir: PathBuf,
    started: Instant,
}

impl WranglerDev {
    /// Starts the Worker with `vars` (given as `--var`, secrets included) and
    /// waits until `/healthz` answers. Its KV lives in `state` when given
    /// (so a later Worker can find what this one stored), else in its own
    /// directory.
    pub async fn start(vars: &[(String, String)], state: Option<&Path>) -> Self {
        let mut dev = Self::spawn(vars, state).await;
        dev.wait_healthy().await;
        dev
    }

    /// Starts the Worker and returns once wrangler listens, without asking
    /// the Worker anything.
    pub async fn spawn(vars: &[(String, String)], state: Option<&Path>) -> Self {
        let root = workspace_root();
        let dir = temp_dir();
        let config = dir.join("wrangler.toml");
        let text = local_stack::worker_config(&root, &[]).expect("wrangler.toml and the built Worker (`make worker`)");
        std::fs::write(&config, text).expect("the test wrangler.toml is written");

        let persist = state.map_or_else(|| dir.join("state"), Path::to_path_buf);
        let vars: Vec<(String, String)> = vars.to_vec();
        let logs = dir.join("logs");
        let started = Instant::now();
        let service = tokio::task::spawn_blocking(move || {
            let vars = vars.iter().map(|(k, v)| (k, v));
            let mut command = local_stack::wrangler_dev(&root, &config, 0, &persist, &logs, vars)
                .expect("wrangler (scripts/setup.sh installs it)");
            command
                .current_dir(config.parent().expect("the test directory"))
                .env("NO_PROXY", "127.0.0.1,localhost")
                .env("no_proxy", "127.0.0.1,localhost");
            Service::launch("wrangler dev", &mut command, Ready::UrlAfter("Ready on "), START_TIMEOUT)
        })
        .await
        .expect("the start task")
        .unwrap_or_else(|e| panic!("{e}"));
        let url = service.url("url").to_owned();
        Self { service, url, dir, started }
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.service.exited() {
            panic!("wrangler dev exited ({status}):\n{}", self.output());
        }
    }

    /// Polls `/healthz` until it answers 200, within the start timeout.
    async fn wait_healthy(&mut self) {
        let started = self.started;
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build().expect("a client");
        let url = format!("{}/healthz", self.url);
        while started.elapsed() < START_TIMEOUT {
            if let Ok(response) = http.get(&url).send().await {
                match response.status().as_u16() {
                    200 => return,
                    // The Worker runs but refuses its settings: no use waiting.
                    500 => panic!("the Worker refused its settings: {}", response.text().await.unwrap_or_default()),
                    _ => {}
                }
            }
            self.assert_running();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("wrangler dev did not answer {url} within {START_TIMEOUT:?}:\n{}", self.output());
    }

    /// Everything wrangler and the Worker printed so far.
    pub fn output(&self) -> String {
        self.service.output()
    }
}

impl Drop for WranglerDev {
    /// Stops wrangler and workerd (its process group), then drops its files.
    fn drop(&mut self) {
        self.service.stop(STOP_GRACE);
        std::fs::remove_dir_all(&self.dir).ok();
    }
}
