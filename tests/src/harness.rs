//! A CRM simulator and a facade on ephemeral loopback ports, one pair per
//! test, stopped by PID when the [`Stack`] is dropped (even on a panic).
//!
//! Build the programs first: `cargo build --workspace --bins`.

use std::future::Future;
use std::process::Command;
use std::time::{Duration, Instant};

use failsoft_lab::process::{Service, bin_dir};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

/// Made-up credentials for tests only; they protect nothing.
pub const AUTH_TOKEN: &str = "test-only-bearer-token-not-a-secret";
pub const CACHE_KEY_SECRET: &str = "test-only-cache-key-secret-0000";
pub const WEBHOOK_SECRET: &str = "test-only-webhook-secret-00000";

/// Bound on any single HTTP exchange of a test, so a hang fails the test
/// instead of stalling the run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);
/// Interval of [`wait_until`]'s polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The settings every edge of the suite gets; a test adds or overrides
/// policy settings through [`Stack::start_with`].
pub fn base_edge_env(crm_url: &str) -> Vec<(String, String)> {
    [
        ("FAILSOFT_CRM_URL", crm_url),
        ("FAILSOFT_CACHE_KEY_SECRET", CACHE_KEY_SECRET),
        ("FAILSOFT_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("FAILSOFT_AUTH_TOKEN", AUTH_TOKEN),
        ("FAILSOFT_LOG", "warn"),
        // No SQS in these stacks: writes go to the edge's in-process queue.
        ("FAILSOFT_DEV_LOCAL_QUEUE", "true"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A command for one of the workspace's programs whose environment holds
/// no stray `FAILSOFT_*` setting of the machine, and that never sends
/// loopback traffic through a proxy.
pub fn program(name: &str) -> Command {
    let mut command = Command::new(bin_dir().join(name));
    for (key, _) in std::env::vars() {
        if key.starts_with("FAILSOFT_") || key.starts_with("CRM_SIM_") {
            command.env_remove(key);
        }
    }
    command.env("NO_PROXY", "127.0.0.1,localhost").env("no_proxy", "127.0.0.1,localhost");
    command
}

/// The simulator and the facade in front of it.
pub struct Stack {
    pub sim: Service,
    pub edge: Service,
    pub http: reqwest::Client,
}

/// A status, the headers and the JSON body (`Null` when not JSON).
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Stack {
    /// A stack with the default policy.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A stack whose edge gets `settings` on top of [`base_edge_env`]
    /// (a later entry wins; an empty value unsets a setting).
    pub async fn start_with(settings: &[(&str, &str)]) -> Self {
        Self::start_with_sim(&[], settings).await
    }

    /// A stack whose simulator gets `sim_args` (a vendor `--dialect`, say)
    /// and whose edge gets `settings` as [`Self::start_with`] gives them.
    pub async fn start_with_sim(sim_args: &[&str], settings: &[(&str, &str)]) -> Self {
        let settings: Vec<(String, String)> = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let sim_args: Vec<String> = sim_args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let mut sim_cmd = program("crm-sim");
            sim_cmd.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]).env("RUST_LOG", "warn");
            sim_cmd.args(&sim_args);
            let sim = Service::start_command("crm-sim", &mut sim_cmd).expect("crm-sim starts");
            let mut edge_cmd = program("failsoft-edge");
            edge_cmd.args(["--listen", "127.0.0.1:0"]);
            for (key, value) in base_edge_env(sim.url("api")).into_iter().chain(settings) {
                if value.is_empty() {
                    edge_cmd.env_remove(key);
                } else {
                    edge_cmd.env(key, value);
                }
            }
            let edge = Service::start_command("failsoft-edge", &mut edge_cmd).expect("failsoft-edge starts");
            let http = reqwest::Client::builder().no_proxy().timeout(CLIENT_TIMEOUT).build().expect("client builds");
            Self { sim, edge, http }
        })
        .await
        .expect("the stack starts")
    }

    pub fn edge_url(&self) -> &str {
        self.edge.url("url")
    }

    pub fn admin_url(&self) -> &str {
        self.sim.url("admin")
    }

    /// The facade's URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.edge_url())
    }

    /// Sends a request and reads the reply; panics on a transport error.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("the facade answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("the body arrives");
        Reply { status, headers, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
    }

    /// An authorised JSON POST to the facade.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let reply = self.send(self.http.post(self.url(path)).bearer_auth(AUTH_TOKEN).json(body)).await;
        (reply.status, reply.body)
    }

    /// `POST /v1/customer-lookup` for `ani`.
    pub async fn lookup(&self, ani: &str) -> (u16, Value) {
        self.post("/v1/customer-lookup", &json!({"ani": ani})).await
    }

    /// A lookup and the wall time it took, body included.
    pub async fn timed_lookup(&self, ani: &str) -> (u16, Value, Duration) {
        let started = Instant::now();
        let (status, body) = self.lookup(ani).await;
        (status, body, started.elapsed())
    }

    /// `POST /v1/cases`.
    pub async fn create_case(&self, body: &Value) -> (u16, Value) {
        self.post("/v1/cases", body).await
    }

    /// `GET /v1/results/{id}`, authorised.
    pub async fn result(&self, id: &str) -> (u16, Value) {
        let reply = self.send(self.http.get(self.url(&format!("/v1/results/{id}"))).bearer_auth(AUTH_TOKEN)).await;
        (reply.status, reply.body)
    }

    async fn admin(&self, method: Method, path: &str, body: Option<&Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.admin_url()));
        if let Some(body) = body {
            request = request.json(body);
        }
        let reply = self.send(request).await;
        assert_eq!(reply.status, 200, "simulator {path}: {}", reply.body);
        reply.body
    }

    /// A `POST` to the simulator's admin API; its JSON answer (200 asserted).
    pub async fn admin_post(&self, path: &str, body: &Value) -> Value {
        self.admin(Method::POST, path, Some(body)).await
    }

    /// Sets the simulator's failure mode, e.g. `json!({"mode": "down"})`;
    /// returns once its API port matches the mode.
    pub async fn admin_mode(&self, mode: Value) -> Value {
        self.admin(Method::POST, "/admin/mode", Some(&mode)).await
    }

    /// Sets the mode by name (`up`, `down`, `hang`, `reject`, …).
    pub async fn crm(&self, mode: &str) {
        self.admin_mode(json!({"mode": mode})).await;
    }

    /// Loads customers into the simulator (a JSON array).
    pub async fn load_customers(&self, customers: Value) {
        let loaded = self.admin(Method::POST, "/admin/customers", Some(&customers)).await;
        assert_eq!(loaded["loaded"].as_u64(), customers.as_array().map(|a| a.len() as u64));
    }

    /// Changes a tier in the simulator; with `webhook`, the simulator tells
    /// the facade through its signed change webhook. Returns the reply.
    pub async fn change_tier(&self, phone: &str, tier: &str, webhook: bool) -> Value {
        let mut body = json!({"phone": phone, "tier": tier});
        if webhook {
            body["webhook"] = json!({"url": self.url("/v1/webhooks/crm-update"), "secret": WEBHOOK_SECRET});
        }
        self.admin(Method::POST, "/admin/customers/tier", Some(&body)).await
    }

    /// The simulator's counters (`requests`, `lookups`, `creates`, …).
    pub async fn sim_stats(&self) -> Value {
        self.admin(Method::GET, "/admin/stats", None).await
    }

    /// One simulator counter.
    pub async fn sim_count(&self, counter: &str) -> u64 {
        let stats = self.sim_stats().await;
        stats[counter].as_u64().unwrap_or_else(|| panic!("no counter {counter} in {stats}"))
    }

    /// Every case the simulator created, in order.
    pub async fn ledger(&self) -> Vec<Value> {
        match self.admin(Method::GET, "/admin/ledger", None).await {
            Value::Array(cases) => cases,
            other => panic!("the ledger is not an array: {other}"),
        }
    }

    /// The facade's Prometheus text.
    pub async fn metrics(&self) -> String {
        let response = self.http.get(self.url("/metrics")).send().await.expect("/metrics answers");
        assert_eq!(response.status().as_u16(), 200, "/metrics");
        response.text().await.expect("/metrics body")
    }

    /// One series, e.g. `failsoft_edge_forwarded_total{kind="write"}`;
    /// 0 when absent (a counter is rendered once first incremented).
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series).unwrap_or(0.0)
    }

    /// The sum of every series of a metric, whatever their labels.
    pub async fn metric_sum(&self, name: &str) -> f64 {
        metric_sum(&self.metrics().await, name)
    }
}

/// The value of one series in Prometheus text, matched exactly (name and
/// labels as rendered).
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(name, _)| *name == series)
        .and_then(|(_, value)| value.trim().parse().ok())
}

/// The sum of every series named `name` (any labels) in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| *series == name || series.strip_prefix(name).is_some_and(|rest| rest.starts_with('{')))
        .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
        .sum()
}

/// Polls `probe` every [`POLL_INTERVAL`] until it yields a value, for at
/// most `within` and at most `within / POLL_INTERVAL + 1` attempts; panics
/// naming `what` otherwise.
pub async fn wait_until<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    let attempts = within.as_millis() / POLL_INTERVAL.as_millis() + 1;
    for _ in 0..attempts {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    panic!("timed out after {within:?} waiting for {what}");
}

/// Asserts a `{"error":{"code","message"}}` body with `code`.
pub fn assert_error(context: &str, status: u16, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status, expected_status, "{context}: status (body {body})");
    assert_eq!(body["error"]["code"], code, "{context}: code (body {body})");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{context}: a message (body {body})");
}
