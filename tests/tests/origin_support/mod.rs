//! Support for the origin worker's tests: moto's server (IAM on, the stack
//! created from `deploy/aws/failsoft.yaml`), the CRM simulator and
//! `failsoft worker` as real processes on loopback (each killed by PID when
//! dropped; each program signs with its identity's key), queue and table
//! access through the AWS SDK, a local alert receiver, and bounded polling.
//!
//! Build the programs first: `cargo build --workspace --bins`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::MessageSystemAttributeName;
use failsoft_lab::aws_stack::{self, AwsStack, Credentials, StackRequest};
use failsoft_lab::moto::{Auth, MotoServer};
use failsoft_lab::process::{Service, bin_dir};
use failsoft_shared::envelope::{Envelope, Kind};
use failsoft_shared::keys::{entity_key, normalize_phone};
use serde_json::{Value, json};

/// Made-up secrets for tests only; they protect nothing.
pub const INTERNAL_SECRET: &str = "test-only-internal-secret-000000";
pub const CACHE_KEY_SECRET: &str = "test-only-cache-key-secret-0000";
/// Bound on one HTTP exchange of a test.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);
/// Interval of [`wait_for`]'s polls.
pub const POLL: Duration = Duration::from_millis(100);

/// The settings every worker of these tests gets: the compressed policy of
/// the outage tests (backoff 200 ms..2 s, cool-down 1 s, a 15-minute
/// retry budget) and short polls.
pub const BASE_POLICY: &[(&str, &str)] = &[
    ("FAILSOFT_RECEIVE_WAIT_SECS", "1"),
    ("FAILSOFT_WRITE_SETTLE_MS", "0"),
    ("FAILSOFT_PROCESSING_LIMIT_SECS", "2"),
    ("FAILSOFT_VISIBILITY_TIMEOUT_SECS", "12"),
    ("FAILSOFT_CRM_DEADLINE_MS", "1500"),
    ("FAILSOFT_BREAKER_PROBE_TIMEOUT_MS", "3000"),
    ("FAILSOFT_BACKOFF_BASE_MS", "200"),
    ("FAILSOFT_BACKOFF_CAP_MS", "2000"),
    // With a 2 s cap a failing message is received about once a second, so
    // the queue's 1000 receives last about 17 minutes: the worker refuses a
    // budget longer than that (failsoft_shared::queue_fit).
    ("FAILSOFT_RETRY_BUDGET_SECS", "900"),
    ("FAILSOFT_BREAKER_COOL_DOWN_MS", "1000"),
    ("FAILSOFT_WORKER_PROBE_EVERY_MS", "1000"),
    ("FAILSOFT_SHUTDOWN_GRACE_SECS", "10"),
    ("FAILSOFT_LOG", "warn"),
];

/// Polls `probe` every [`POLL`] until it yields a value, for at most
/// `within` and `within / POLL + 1` attempts; panics naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    let attempts = within.as_millis() / POLL.as_millis() + 1;
    for _ in 0..attempts {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("timed out after {within:?} waiting for {what}");
}

/// A command for a workspace program with no stray `FAILSOFT_*` or AWS
/// setting of the machine, never going through a proxy.
pub fn program(name: &str) -> Command {
    let mut command = Command::new(bin_dir().join(name));
    for (key, _) in std::env::vars() {
        if key.starts_with("FAILSOFT_") || key.starts_with("AWS_") || key.starts_with("CRM_SIM_") {
            command.env_remove(key);
        }
    }
    command.env("NO_PROXY", "127.0.0.1,localhost").env("no_proxy", "127.0.0.1,localhost");
    command
}

/// A test customer's entity key (the FIFO group), as the edge derives it.
pub fn entity_for(phone: &str) -> String {
    entity_key(CACHE_KEY_SECRET.as_bytes(), &normalize_phone(phone).expect("a valid test phone"))
}

/// moto (IAM on), the simulator, and the stack of `deploy/aws/failsoft.yaml`:
/// every program runs with the keys of its identity in the template.
pub struct OriginStack {
    pub moto: MotoServer,
    pub sim: Service,
    pub aws: AwsStack,
    pub queue_url: String,
    pub dlq_url: String,
    /// The lab's administrator: the tests' own look-ups.
    pub sqs: aws_sdk_sqs::Client,
    pub ddb: aws_sdk_dynamodb::Client,
    /// Signing with the edge's key: [`Self::enqueue`] sends as the edge does.
    pub edge_sqs: aws_sdk_sqs::Client,
    pub http: reqwest::Client,
}

/// Who a program signs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum As {
    /// `failsoft worker`, `failsoft notifications`: the WorkerRole's policies.
    Worker,
    /// `failsoft dlq …`: the OperatorRole's policies.
    Operator,
    /// The lab's bootstrap administrator (`failsoft-lab init-local`).
    Admin,
}

/// A running worker.
pub struct Worker {
    pub service: Service,
}

impl Worker {
    /// The edge-facing API: results, edge reports, `POST /v1/events`, `/healthz`.
    pub fn url(&self) -> &str {
        self.service.url("api")
    }

    /// The operator's listener: `/metrics`, `/v1/health`, the dashboard, `/healthz`.
    pub fn operator_url(&self) -> &str {
        self.service.url("operator")
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(self) {
        // SAFETY: signalling our own child by its PID; it is reaped on drop.
        unsafe { libc::kill(self.service.pid() as libc::pid_t, libc::SIGKILL) };
        drop(self.service);
    }
}

impl OriginStack {
    pub async fn start() -> Self {
        Self::start_with_sim(&[]).await
    }

    /// A stack whose simulator gets `sim_args` (a vendor `--dialect`).
    pub async fn start_with_sim(sim_args: &[&str]) -> Self {
        let sim_args: Vec<String> = sim_args.iter().map(|a| a.to_string()).collect();
        let (moto, sim) = tokio::task::spawn_blocking(move || {
            let moto = MotoServer::start_with(Auth::Iam).expect("moto_server starts (scripts/setup.sh installs it)");
            let mut sim_cmd = program("crm-sim");
            sim_cmd.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]).env("RUST_LOG", "warn");
            sim_cmd.args(&sim_args);
            let sim = Service::start_command("crm-sim", &mut sim_cmd).expect("crm-sim starts");
            (moto, sim)
        })
        .await
        .expect("the stack starts");
        // The template's defaults: a queue whose visibility timeout fits any
        // processing limit these tests give a worker (up to 20 s).
        let aws = aws_stack::create(&StackRequest::new(&moto.endpoint))
            .await
            .expect("the stack is created from the template");
        Self::on(moto, sim, aws).await
    }

    /// The stack in `moto`, already created as `aws`.
    pub async fn on(moto: MotoServer, sim: Service, aws: AwsStack) -> Self {
        let sdk = |who: &Credentials| {
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new("us-east-1"))
                .endpoint_url(&moto.endpoint)
                .credentials_provider(aws_sdk_sqs::config::Credentials::new(&who.key, &who.secret, None, None, "tests"))
                .load()
        };
        let admin = sdk(&aws.admin).await;
        let edge = sdk(aws.edge().expect("the edge's key")).await;
        Self {
            queue_url: aws.queue_url().expect("QueueUrl"),
            dlq_url: aws.dlq_url().expect("DlqUrl"),
            sqs: aws_sdk_sqs::Client::new(&admin),
            ddb: aws_sdk_dynamodb::Client::new(&admin),
            edge_sqs: aws_sdk_sqs::Client::new(&edge),
            http: reqwest::Client::builder().no_proxy().timeout(CLIENT_TIMEOUT).build().expect("client"),
            aws,
            moto,
            sim,
        }
    }

    pub fn admin_url(&self) -> &str {
        self.sim.url("admin")
    }

    /// The environment of a worker command against this stack.
    pub fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        self.env_as(As::Worker, extra)
    }

    /// The environment of a program signing as `who`.
    pub fn env_as(&self, who: As, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let credentials = match who {
            As::Worker => self.aws.worker().expect("the worker's key"),
            As::Operator => self.aws.operator().expect("the operator's key"),
            As::Admin => &self.aws.admin,
        };
        let mut env: Vec<(String, String)> =
            self.aws.env(credentials).into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        if who == As::Admin {
            env.push(("FAILSOFT_LAB_ADMIN_ACCESS_KEY_ID".into(), credentials.key.clone()));
            env.push(("FAILSOFT_LAB_ADMIN_SECRET_ACCESS_KEY".into(), credentials.secret.clone()));
        }
        let base = [
            ("FAILSOFT_QUEUE_URL", self.queue_url.as_str()),
            ("FAILSOFT_DLQ_URL", self.dlq_url.as_str()),
            ("FAILSOFT_CRM_URL", self.sim.url("api")),
            // The simulator offers the optional case search.
            ("FAILSOFT_CRM_CAN_FIND_CASES", "true"),
            ("FAILSOFT_INTERNAL_SECRET", INTERNAL_SECRET),
            ("FAILSOFT_ORIGIN_LISTEN", "127.0.0.1:0"),
            ("FAILSOFT_OPERATOR_LISTEN", "127.0.0.1:0"),
        ];
        for (k, v) in base.iter().chain(BASE_POLICY).chain(extra) {
            env.retain(|(name, _)| name != k);
            if !v.is_empty() {
                env.push((k.to_string(), v.to_string()));
            }
        }
        env
    }

    /// Starts `failsoft worker` with `extra` settings over the base ones.
    pub async fn worker(&self, extra: &[(&str, &str)]) -> Worker {
        let env = self.env(extra);
        let service = tokio::task::spawn_blocking(move || {
            let mut cmd = program("failsoft");
            cmd.arg("worker").envs(env);
            Service::start_command("failsoft worker", &mut cmd).expect("the worker starts")
        })
        .await
        .unwrap();
        Worker { service }
    }

    /// Runs a `failsoft` command (`dlq …` as the operator, the rest as the
    /// worker); returns (exit code, stdout, stderr).
    pub async fn failsoft(&self, args: &[&str], extra: &[(&str, &str)]) -> (i32, String, String) {
        let who = if args.first() == Some(&"dlq") { As::Operator } else { As::Worker };
        self.run_program("failsoft", who, args, extra).await
    }

    /// Runs a `failsoft-lab` command (e.g. `init-local`) as the lab's
    /// administrator; as [`Self::failsoft`].
    pub async fn failsoft_lab(&self, args: &[&str], extra: &[(&str, &str)]) -> (i32, String, String) {
        self.run_program("failsoft-lab", As::Admin, args, extra).await
    }

    async fn run_program(&self, name: &str, who: As, args: &[&str], extra: &[(&str, &str)]) -> (i32, String, String) {
        let mut cmd = program(name);
        cmd.args(args).envs(self.env_as(who, extra));
        let out = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().expect("failsoft runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    // ── the queue ────────────────────────────────────────────────────────

    /// Enqueues an envelope exactly as the edge does (group = entity key,
    /// deduplication id = correlationId for writes).
    pub async fn enqueue(&self, envelope: &Envelope<Value>) {
        self.edge_sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(serde_json::to_string(envelope).unwrap())
            .message_group_id(envelope.group_id())
            .message_deduplication_id(envelope.dedup_id(300_000))
            .send()
            .await
            .expect("SendMessage");
    }

    /// Enqueues a case creation for `phone` under `correlation_id`.
    pub async fn enqueue_write(&self, correlation_id: &str, phone: &str, subject: &str) {
        self.enqueue(&write_envelope(correlation_id, phone, subject)).await;
    }

    /// `ApproximateNumberOfMessages` + `…NotVisible` of a queue.
    pub async fn depth(&self, queue_url: &str) -> u64 {
        let (visible, in_flight) =
            failsoft_origin::telemetry::queue_depths(&self.sqs, queue_url).await.expect("GetQueueAttributes");
        visible + in_flight
    }

    /// The dead letters visible now, with their attributes, read without
    /// hiding them (visibility 0).
    pub async fn dead_letters(&self) -> Vec<DeadLetter> {
        let mut seen: HashMap<String, DeadLetter> = HashMap::new();
        for _ in 0..5 {
            let batch = self
                .sqs
                .receive_message()
                .queue_url(&self.dlq_url)
                .max_number_of_messages(10)
                .visibility_timeout(0)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .expect("ReceiveMessage (DLQ)")
                .messages
                .unwrap_or_default();
            if batch.is_empty() {
                break;
            }
            for m in batch {
                let attributes = m
                    .message_attributes()
                    .map(|a| a.iter().filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_owned()))).collect())
                    .unwrap_or_default();
                let body = serde_json::from_str(m.body().unwrap_or_default()).unwrap_or(Value::Null);
                let group = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                    .cloned()
                    .unwrap_or_default();
                let id = m.message_id().unwrap_or_default().to_owned();
                seen.insert(id.clone(), DeadLetter { message_id: id, attributes, body, group });
            }
        }
        seen.into_values().collect()
    }

    // ── the results ──────────────────────────────────────────────────────

    /// `GET /v1/results/{id}` on a worker, signed as the edge signs it.
    pub async fn result(&self, worker: &Worker, id: &str) -> (u16, Value) {
        let resp = self.signed_read(worker, id, INTERNAL_SECRET).send().await.expect("the results API answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// `GET /v1/results/{id}` signed now with `secret` and a fresh nonce.
    pub fn signed_read(&self, worker: &Worker, id: &str, secret: &str) -> reqwest::RequestBuilder {
        let url = format!("{}/v1/results/{id}", worker.url());
        failsoft_tests::signing::request(
            &self.http,
            "GET",
            &url,
            Vec::new(),
            secret,
            failsoft_tests::signing::now_secs(),
        )
    }

    /// The results table's item for `id`, straight from DynamoDB.
    pub async fn result_item(&self, id: &str) -> Option<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        self.ddb
            .get_item()
            .table_name("failsoft-results")
            .key("correlationId", aws_sdk_dynamodb::types::AttributeValue::S(id.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .expect("GetItem")
            .item
    }

    /// The `status` of a results item, straight from DynamoDB.
    pub async fn result_status(&self, id: &str) -> Option<String> {
        self.result_item(id).await.and_then(|i| i.get("status").and_then(|v| v.as_s().ok()).cloned())
    }

    // ── the simulator ────────────────────────────────────────────────────

    pub async fn admin(&self, path: &str, body: Value) -> Value {
        let resp = self.http.post(format!("{}{path}", self.admin_url())).json(&body).send().await.expect("admin");
        assert!(resp.status().is_success(), "simulator {path}: {}", resp.status());
        resp.json().await.unwrap_or(Value::Null)
    }

    /// Sets the simulator's mode, e.g. `json!({"mode":"down"})`.
    pub async fn crm(&self, mode: Value) {
        self.admin("/admin/mode", mode).await;
    }

    pub async fn ledger(&self) -> Vec<Value> {
        let resp = self.http.get(format!("{}/admin/ledger", self.admin_url())).send().await.expect("ledger");
        match resp.json().await.expect("ledger JSON") {
            Value::Array(cases) => cases,
            other => panic!("the ledger is not an array: {other}"),
        }
    }

    pub async fn sim_stats(&self) -> Value {
        let resp = self.http.get(format!("{}/admin/stats", self.admin_url())).send().await.expect("stats");
        resp.json().await.expect("stats JSON")
    }

    pub async fn sim_count(&self, counter: &str) -> u64 {
        self.sim_stats().await[counter].as_u64().unwrap_or_else(|| panic!("no counter {counter}"))
    }

    /// Waits until the ledger holds at least `n` cases, and returns it.
    pub async fn ledger_with(&self, n: usize, within: Duration) -> Vec<Value> {
        wait_for(&format!("{n} cases in the CRM ledger"), within, || async {
            let ledger = self.ledger().await;
            (ledger.len() >= n).then_some(ledger)
        })
        .await
    }
}

/// A dead letter as the tests read it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message_id: String,
    pub attributes: HashMap<String, String>,
    pub body: Value,
    pub group: String,
}

/// The environment pointing the AWS SDK at a moto without IAM checks
/// (`failsoft_tests::moto::Moto`, whose tests make their own queues), with
/// dummy credentials. Instance metadata is off: nothing may leave loopback.
pub fn aws_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `NAME=value` lines.
pub fn parse_assignments(text: &str) -> HashMap<String, String> {
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The envelope the edge enqueues for a case creation.
pub fn write_envelope(correlation_id: &str, phone: &str, subject: &str) -> Envelope<Value> {
    let phone_n = normalize_phone(phone).expect("a valid test phone");
    let case = json!({
        "phone": phone_n.as_str(),
        "subject": subject,
        "description": null,
        "conversationId": null,
        "externalRef": correlation_id,
    });
    let payload = json!({"operation": "create_case", "case": case});
    Envelope::new(Kind::Write, correlation_id.to_owned(), entity_for(phone), payload, now_ms())
}

/// The envelope the edge enqueues for a lookup refresh.
pub fn refresh_envelope(correlation_id: &str, phone: &str) -> Envelope<Value> {
    let phone_n = normalize_phone(phone).expect("a valid test phone");
    let payload = json!({"phone": phone_n.as_str()});
    Envelope::new(Kind::Refresh, correlation_id.to_owned(), entity_for(phone), payload, now_ms())
}

/// Cases in the ledger by `externalRef`, in ledger order.
pub fn refs(ledger: &[Value]) -> Vec<String> {
    ledger.iter().filter_map(|c| c["externalRef"].as_str().map(str::to_owned)).collect()
}

/// What a local alert receiver got: headers (lower-case names) and body.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub raw: Vec<u8>,
    pub body: Value,
}

/// A tiny HTTP server that records every POST; answers `status`.
pub struct AlertReceiver {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AlertReceiver {
    pub async fn start(status: u16) -> Self {
        use axum::extract::State;
        use axum::http::{HeaderMap, StatusCode};
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let app = axum::Router::new()
            .route(
                "/{*path}",
                axum::routing::any(
                    move |State(store): State<Arc<Mutex<Vec<Received>>>>,
                          method: axum::http::Method,
                          uri: axum::http::Uri,
                          headers: HeaderMap,
                          body: axum::body::Bytes| async move {
                        let headers = headers
                            .iter()
                            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
                            .collect();
                        let raw = body.to_vec();
                        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
                        let (method, path) = (method.to_string(), uri.path().to_owned());
                        store.lock().unwrap().push(Received { method, path, headers, raw, body });
                        StatusCode::from_u16(status).unwrap()
                    },
                ),
            )
            .with_state(Arc::clone(&received));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self { url, received, task }
    }

    pub fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for AlertReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The sum of a metric's samples whose labels include `labels`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name || !labels.iter().all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\""))) {
            continue;
        }
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number in {line:?}"));
        *found.get_or_insert(0.0) += value;
    }
    found
}
