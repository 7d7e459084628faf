//! The whole local stack on loopback, for `make up` / `make down` and the
//! drill: moto's server (SQS and DynamoDB) with the queues and tables
//! `failsoft-lab init-local` makes in it, the CRM simulator (unless a CRM URL is
//! given), `failsoft worker` with its results API, and one edge host: the
//! Worker under `wrangler dev`, the Spin test component under `wasmtime
//! serve`, or the native `failsoft-edge`.
//!
//! Every process gets its own session, so it survives the shell that ran
//! `make up`, a Ctrl-C meant for the terminal does not reach it, and a
//! process group (wrangler and its workerd) stops as one. Its stdout and
//! stderr go to `logs/<name>.log`; each piece is waited for, bounded, until
//! it answers. What a client needs goes to `stack.env` (shell `KEY=value`
//! lines); the PIDs, with their process groups and start times, to
//! `stack.pids`, from which [`down`] stops exactly those processes: a PID the
//! kernel has since given to another program is left alone.
//!
//! Secrets (the bearer token and the HMAC keys) are random per start and are
//! written only to `stack.env` (mode 0600): never to a log or a command
//! line. The edges read them from their environment: `wrangler dev` as
//! declared `[secrets]`, `wasmtime serve --env NAME` inheriting the value.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use failsoft_shared::config::{ConfigError, Policy};

use crate::aws_stack::{self, AwsStackError, Credentials, StackRequest};
use crate::moto::Auth;
use crate::process::{bin_dir, parse_listening_line};

/// The file a client reads (`source .local/stack.env`).
pub const ENV_FILE: &str = "stack.env";
/// The processes `up` started: `name pid pgid start-time` lines.
pub const PID_FILE: &str = "stack.pids";

/// How long each piece may take to answer on 2 shared cores: moto imports
/// for seconds; wrangler bundles the Worker and starts workerd.
const MOTO_READY: Duration = Duration::from_secs(60);
const PROGRAM_READY: Duration = Duration::from_secs(30);
const EDGE_READY: Duration = Duration::from_secs(90);
/// SIGTERM's grace: the worker finishes deliveries in flight within its
/// shutdown grace (5 s in the local stack), the rest exit at once.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// After SIGKILL, how long to wait for the kernel to tear a process down.
const KILL_WAIT: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(100);

/// moto's region.
pub const MOTO_REGION: &str = crate::aws_stack::REGION;

/// Where `wrangler dev` writes its debug file: nowhere. Wrangler appends
/// every message of every level to that file whatever `--log-level` says,
/// and at debug level its inspector traces each outbound fetch with its URL:
/// the CRM lookup's `?phone=` included. The edge's own logs (its stdout, in
/// `logs/edge.log`) carry no number; this dev-only trace must not keep one
/// either. A path that ends in `.log` is used as the file itself.
fn discarded_wrangler_debug_log(logs: &Path) -> Result<PathBuf, StackError> {
    let path = logs.join("wrangler-debug.log");
    let _ = fs::remove_file(&path);
    std::os::unix::fs::symlink("/dev/null", &path)
        .map_err(io_error(format!("linking {} to /dev/null", path.display())))?;
    Ok(path)
}

/// The settings every process of the local stack gets before the caller's:
/// a short shutdown grace so `down` is quick.
const STACK_DEFAULTS: &[(&str, &str)] = &[("FAILSOFT_SHUTDOWN_GRACE_SECS", "5")];

/// The policy settings `failsoft-lab up` passes on from its own environment to
/// the edge, the worker and `init-local` (README, "Settings").
pub const POLICY_SETTINGS: &[&str] = &[
    "FAILSOFT_CRM_DEADLINE_MS",
    "FAILSOFT_DATA_ACTION_TIMEOUT_MS",
    "FAILSOFT_DEADLINE_MARGIN_MS",
    "FAILSOFT_FRESHNESS_SECS",
    "FAILSOFT_NOT_FOUND_FRESHNESS_SECS",
    "FAILSOFT_LAST_KNOWN_HORIZON_SECS",
    "FAILSOFT_REFRESH_AHEAD_PERCENT",
    "FAILSOFT_DEFAULT_TIER",
    "FAILSOFT_BACKOFF_BASE_MS",
    "FAILSOFT_BACKOFF_CAP_MS",
    "FAILSOFT_RETRY_BUDGET_SECS",
    "FAILSOFT_PROCESSING_LIMIT_SECS",
    "FAILSOFT_VISIBILITY_TIMEOUT_SECS",
    "FAILSOFT_BREAKER_WINDOW",
    "FAILSOFT_BREAKER_FAILURE_THRESHOLD",
    "FAILSOFT_BREAKER_COOL_DOWN_MS",
    "FAILSOFT_BREAKER_PROBE_TIMEOUT_MS",
    "FAILSOFT_SIGNATURE_TOLERANCE_SECS",
    "FAILSOFT_WORKER_CONCURRENCY",
    "FAILSOFT_REPLAY_RATE_MAX",
    "FAILSOFT_WORKER_PROBE_EVERY_MS",
    "FAILSOFT_RECEIVE_WAIT_SECS",
    "FAILSOFT_WRITE_SETTLE_MS",
    "FAILSOFT_LOG",
];

/// The keys of `stack.env` whose values are secrets (masked when printed).
const SECRET_KEYS: &[&str] = &[
    "FAILSOFT_AUTH_HEADER",
    "FAILSOFT_CACHE_KEY_SECRET",
    "FAILSOFT_WEBHOOK_SECRET",
    "FAILSOFT_INTERNAL_SECRET",
    "AWS_SECRET_ACCESS_KEY",
    "FAILSOFT_OPERATOR_AWS_SECRET_ACCESS_KEY",
];

/// Which edge host fronts the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeHost {
    /// The native `failsoft-edge` binary.
    Native,
    /// The Cloudflare Worker under `wrangler dev --local` (build it: `make worker`).
    Worker,
    /// The Spin component under `wasmtime serve`, with the test key-value
    /// shim composed on (build it: `make spin-test-component`).
    Spin,
}

impl EdgeHost {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Worker => "worker",
            Self::Spin => "spin",
        }
    }
}

/// What serves SQS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SqsHost {
    /// moto's server, with DynamoDB and IAM enforced (installed by
    /// `scripts/setup.sh`), through the lab's launcher: a send or receive
    /// costs a few milliseconds at any depth (`make bench-moto`)
    Moto,
    /// fauxqs (Node 22) for SQS, moto for DynamoDB: faster still, but SQS
    /// calls are not checked against IAM. Installed under `.local/bench` by
    /// `make bench-worker`
    Fauxqs,
}

impl SqsHost {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Moto => "moto",
            Self::Fauxqs => "fauxqs",
        }
    }
}

/// Which calls the CRM simulator offers (`crm-sim --contract`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrmContract {
    /// The required calls and the optional ones; the worker is told it may
    /// look a case up by its reference (`FAILSOFT_CRM_CAN_FIND_CASES`).
    #[default]
    Full,
    /// Only `GET /customers?phone=` and `POST /cases` with
    /// `Idempotency-Key`: what every CRM must offer, and nothing more.
    TwoCall,
    /// Salesforce's REST API as the simulator serves it (`crm-sim --dialect
    /// salesforce`): the edge and the worker use the `salesforce` profile.
    Salesforce,
    /// Zendesk's Search and Tickets APIs (`crm-sim --dialect zendesk`),
    /// spoken through the `zendesk` profile.
    Zendesk,
    /// HubSpot's CRM API v3 (`crm-sim --dialect hubspot`), through the
    /// `hubspot` profile.
    Hubspot,
    /// ServiceNow's Table API (`crm-sim --dialect servicenow`), through the
    /// `servicenow` profile.
    Servicenow,
}

/// The simulator's made-up credentials for the vendor dialects; tests only,
/// they protect nothing.
pub const SIM_CLIENT_ID: &str = "failsoft-test-client";
pub const SIM_CLIENT_SECRET: &str = "failsoft-test-secret";
pub const SIM_ZENDESK_EMAIL: &str = "agent@example.com";
pub const SIM_ZENDESK_TOKEN: &str = "failsoft-test-token";
pub const SIM_HUBSPOT_TOKEN: &str = "failsoft-test-hubspot-token";

impl CrmContract {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::TwoCall => "two-call",
            Self::Salesforce => "salesforce",
            Self::Zendesk => "zendesk",
            Self::Hubspot => "hubspot",
            Self::Servicenow => "servicenow",
        }
    }

    /// The vendor contracts: a simulated vendor API and its shipped profile.
    pub const VENDORS: [Self; 4] = [Self::Salesforce, Self::Zendesk, Self::Hubspot, Self::Servicenow];

    /// `crm-sim`'s arguments for this contract.
    pub fn sim_args(self) -> Vec<&'static str> {
        match self {
            Self::Full | Self::TwoCall => vec!["--contract", self.as_str()],
            Self::Salesforce | Self::Zendesk | Self::Hubspot | Self::Servicenow => vec![
                "--dialect",
                self.as_str(),
                "--client-id",
                SIM_CLIENT_ID,
                "--client-secret",
                SIM_CLIENT_SECRET,
                "--zendesk-email",
                SIM_ZENDESK_EMAIL,
                "--zendesk-token",
                SIM_ZENDESK_TOKEN,
                "--hubspot-token",
                SIM_HUBSPOT_TOKEN,
            ],
        }
    }

    /// The settings the edge and the worker need to speak to the simulator:
    /// the vendor's profile and the simulator's credentials.
    pub fn profile_settings(self) -> Vec<(String, String)> {
        let pairs: &[(&str, &str)] = match self {
            Self::Full | Self::TwoCall => &[],
            Self::Salesforce => &[
                ("FAILSOFT_CRM_PROFILE", "salesforce"),
                ("FAILSOFT_CRM_CLIENT_ID", SIM_CLIENT_ID),
                ("FAILSOFT_CRM_CLIENT_SECRET", SIM_CLIENT_SECRET),
            ],
            Self::Zendesk => &[
                ("FAILSOFT_CRM_PROFILE", "zendesk"),
                ("FAILSOFT_CRM_USERNAME", SIM_ZENDESK_EMAIL),
                ("FAILSOFT_CRM_API_TOKEN", SIM_ZENDESK_TOKEN),
            ],
            Self::Hubspot => &[("FAILSOFT_CRM_PROFILE", "hubspot"), ("FAILSOFT_CRM_API_TOKEN", SIM_HUBSPOT_TOKEN)],
            Self::Servicenow => &[
                ("FAILSOFT_CRM_PROFILE", "servicenow"),
                ("FAILSOFT_CRM_CLIENT_ID", SIM_CLIENT_ID),
                ("FAILSOFT_CRM_CLIENT_SECRET", SIM_CLIENT_SECRET),
            ],
        };
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// Whether the simulator serves the profile's customer list (the
    /// pre-warm sync's source); without it, an export file is.
    pub fn has_list(self) -> bool {
        !matches!(self, Self::TwoCall | Self::Servicenow)
    }
}

/// Whether the processes outlive the [`LocalStack`] value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// `failsoft-lab up`: they run on until `failsoft-lab down`.
    Detached,
    /// The drill: stopped when the stack is dropped (on an error or a panic
    /// too), and killed by the kernel if this process dies first.
    Owned,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct StackSpec {
    pub edge: EdgeHost,
    pub sqs: SqsHost,
    /// A downstream to use as it is; `None` starts the CRM simulator.
    pub crm_url: Option<String>,
    /// The calls the simulator offers (when it is started).
    pub crm_contract: CrmContract,
    /// Where `logs/`, `state/`, `stack.env` and `stack.pids` go.
    pub dir: PathBuf,
    /// `FAILSOFT_*` settings for the edge, the worker and `init-local`, over
    /// the production defaults.
    pub settings: Vec<(String, String)>,
    pub lifetime: Lifetime,
    /// Put a proxy this process runs ([`crate::switch::Switch`]) between the
    /// edge and SQS, so the drill can cut the edge's path to the queue
    /// (the worker keeps its own). Only for a stack this process owns.
    pub queue_switch: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("invalid setting {0}")]
    Setting(#[from] ConfigError),
    #[error("{what} not found at {path}: {hint}")]
    Missing { what: &'static str, path: PathBuf, hint: &'static str },
    #[error("{name} could not start: {source}")]
    Spawn { name: String, source: io::Error },
    #[error("{name} did not answer within {within:?}; the end of {log}:\n{tail}")]
    NotReady { name: String, within: Duration, log: String, tail: String },
    #[error("{name} exited ({status}); the end of {log}:\n{tail}")]
    Exited { name: String, status: String, log: String, tail: String },
    #[error(transparent)]
    AwsStack(#[from] AwsStackError),
    #[error("a stack is already up ({0}): run `make down` (or `failsoft-lab down`) first")]
    AlreadyUp(PathBuf),
    #[error("{0}: {1}")]
    Io(String, io::Error),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> StackError {
    let what = what.into();
    move |e| StackError::Io(what, e)
}

// ── stack.env ───────────────────────────────────────────────────────────────

/// `KEY=value` pairs in order, as `stack.env` holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackEnv {
    vars: Vec<(String, String)>,
}

impl StackEnv {
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.vars.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.vars.push((key.to_owned(), value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }

    /// Shell lines; secrets replaced by a note when `mask` is set.
    pub fn render(&self, mask: bool) -> String {
        let mut out = String::new();
        for (key, value) in &self.vars {
            let shown = if mask && SECRET_KEYS.contains(&key.as_str()) {
                "<secret: see the file>".to_owned()
            } else {
                value.clone()
            };
            out.push_str(&format!("{key}={}\n", shell_quote(&shown)));
        }
        out
    }

    /// Reads `KEY=value` lines (`export`, comments and shell quotes allowed).
    pub fn parse(text: &str) -> Self {
        let mut env = Self::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            if let Some((key, value)) = line.split_once('=') {
                env.set(key.trim(), shell_unquote(value.trim()));
            }
        }
        env
    }

    pub fn read(path: &Path) -> Result<Self, StackError> {
        let text = fs::read_to_string(path).map_err(io_error(format!("reading {}", path.display())))?;
        Ok(Self::parse(&text))
    }

    /// Writes the file readable by its owner only: it holds the secrets.
    pub fn write(&self, path: &Path) -> Result<(), StackError> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(io_error(format!("writing {}", path.display())))?;
        let header = "# The local stack `failsoft-lab up` started (`make down` stops it). Secrets: keep this file to yourself.\n";
        file.write_all(header.as_bytes())
            .and_then(|()| file.write_all(self.render(false).as_bytes()))
            .map_err(io_error(format!("writing {}", path.display())))
    }
}

fn shell_quote(value: &str) -> String {
    let plain = !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"_./:@%+,=-".contains(&b));
    if plain { value.to_owned() } else { format!("'{}'", value.replace('\'', r"'\''")) }
}

fn shell_unquote(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => out.extend(chars.by_ref().take_while(|&c| c != '\'')),
            '"' => out.extend(chars.by_ref().take_while(|&c| c != '"')),
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

// ── processes ───────────────────────────────────────────────────────────────

/// One process the stack started (leader of its own process group).
#[derive(Debug)]
struct Proc {
    name: String,
    pid: u32,
    /// Its start time in clock ticks since boot (`/proc/PID/stat`, field
    /// 22): with the PID, it names this process and no later one.
    start_time: u64,
    child: Option<Child>,
    log: PathBuf,
}

/// A process as `stack.pids` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub name: String,
    pub pid: u32,
    pub pgid: u32,
    pub start_time: u64,
}

impl Recorded {
    fn parse(line: &str) -> Option<Self> {
        let mut words = line.split_whitespace();
        Some(Self {
            name: words.next()?.to_owned(),
            pid: words.next()?.parse().ok()?,
            pgid: words.next()?.parse().ok()?,
            start_time: words.next()?.parse().ok()?,
        })
    }

    /// Whether this very process still runs (not a zombie, not a newer
    /// process under a reused PID).
    pub fn alive(&self) -> bool {
        proc_stat(self.pid).is_some_and(|(state, start)| state != 'Z' && state != 'X' && start == self.start_time)
    }
}

/// The state letter and start time of `pid`, from `/proc/PID/stat`.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, start time field 22.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// Whether any process of group `pgid` is left (zombies aside).
fn group_alive(pgid: u32) -> bool {
    // SAFETY: signal 0 only checks that the group exists.
    let exists = unsafe { libc::kill(-(pgid as libc::pid_t), 0) } == 0;
    if !exists {
        return false;
    }
    // A group of zombies still "exists"; look for a live member.
    let Ok(entries) = fs::read_dir("/proc") else { return true };
    entries.filter_map(Result::ok).filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()).any(|pid| {
        fs::read_to_string(format!("/proc/{pid}/stat")).ok().is_some_and(|text| {
            let Some(close) = text.rfind(')') else { return false };
            let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
            let state = fields.first().and_then(|s| s.chars().next()).unwrap_or('X');
            fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid) && state != 'Z' && state != 'X'
        })
    })
}

fn signal_group(pgid: u32, signal: libc::c_int) {
    // SAFETY: signalling a process group this stack created.
    unsafe { libc::kill(-(pgid as libc::pid_t), signal) };
}

/// Stops process groups: SIGTERM, up to `grace` to exit, then SIGKILL.
/// Returns the names still alive at the end (none, normally).
fn stop_groups(targets: &mut [(Recorded, Option<&mut Child>)], grace: Duration) -> Vec<String> {
    for (r, _) in targets.iter() {
        signal_group(r.pgid, libc::SIGTERM);
    }
    let reap = |targets: &mut [(Recorded, Option<&mut Child>)]| {
        for (_, child) in targets.iter_mut() {
            if let Some(child) = child {
                let _ = child.try_wait();
            }
        }
    };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        reap(targets);
        if targets.iter().all(|(r, _)| !group_alive(r.pgid)) {
            break;
        }
        std::thread::sleep(POLL);
    }
    for (r, _) in targets.iter() {
        if group_alive(r.pgid) {
            signal_group(r.pgid, libc::SIGKILL);
        }
    }
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        reap(targets);
        let left: Vec<String> =
            targets.iter().filter(|(r, _)| group_alive(r.pgid)).map(|(r, _)| r.name.clone()).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(POLL);
    }
}

/// The last lines of a log, for an error message.
fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(4_000)));
        let _ = file.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

/// The checkout whose `wrangler.toml`, `node_modules/` and `.venv/` the
/// stack uses: `FAILSOFT_ROOT` (the Makefile sets it), else the workspace of
/// the package `cargo run`/`cargo test` runs us from, else the one this
/// binary was built in. Not the build-time path first: a target directory
/// shared by clones (CI's cache) keeps binaries cargo built in another clone.
pub fn workspace_root() -> PathBuf {
    if let Some(root) = std::env::var_os("FAILSOFT_ROOT").filter(|r| !r.is_empty()) {
        return PathBuf::from(root);
    }
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    let package = manifest_dir.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    package.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn free_port() -> Result<u16, StackError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io_error("picking a free loopback port"))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS has randomness");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The stack's secrets, new for every start.
struct Secrets {
    token: String,
    cache_key: String,
    webhook: String,
    internal: String,
}

impl Secrets {
    fn generate() -> Self {
        Self { token: random_hex(24), cache_key: random_hex(32), webhook: random_hex(32), internal: random_hex(32) }
    }

    /// As the edges read them.
    fn edge_env(&self) -> [(&'static str, String); 4] {
        [
            ("FAILSOFT_AUTH_TOKEN", self.token.clone()),
            ("FAILSOFT_CACHE_KEY_SECRET", self.cache_key.clone()),
            ("FAILSOFT_WEBHOOK_SECRET", self.webhook.clone()),
            ("FAILSOFT_INTERNAL_SECRET", self.internal.clone()),
        ]
    }
}

/// A command with none of the machine's `FAILSOFT_*`, AWS or simulator
/// settings, and no proxy for loopback.
pub fn clean_command(program: &Path) -> Command {
    let mut command = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("FAILSOFT_")
            || key.starts_with("AWS_")
            || key.starts_with("CRM_SIM_")
            || key.starts_with("SPIN_VARIABLE_")
            || key.starts_with("CLOUDFLARE_")
        {
            command.env_remove(key.as_ref());
        }
    }
    command.env("NO_PROXY", "127.0.0.1,localhost").env("no_proxy", "127.0.0.1,localhost");
    command
}

/// The AWS SDK pointed at moto (and SQS at `sqs` when given), signing as `who`.
fn aws_env(endpoint: &str, sqs: Option<&str>, who: &Credentials) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_REGION", MOTO_REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID", who.key.clone()),
        ("AWS_SECRET_ACCESS_KEY", who.secret.clone()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ];
    if let Some(sqs) = sqs {
        env.push(("AWS_ENDPOINT_URL_SQS", sqs.to_owned()));
    }
    env
}

/// `url`'s path on `base` (`http://host:port`).
fn rebase(url: &str, base: &str) -> String {
    let path = url.split_once("://").and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..])).unwrap_or("/");
    format!("{}{path}", base.trim_end_matches('/'))
}

/// Node 22 and fauxqs as `make bench-worker` installs them.
fn fauxqs_paths() -> Result<(PathBuf, PathBuf), StackError> {
    let bench = workspace_root().join(".local/bench/node_modules");
    let (node, cli) = (bench.join(".bin/node"), bench.join("fauxqs/dist/cli.js"));
    for (what, path) in [("Node 22 for fauxqs", &node), ("fauxqs", &cli)] {
        if !path.exists() {
            return Err(StackError::Missing {
                what,
                path: path.clone(),
                hint: "run `make bench-worker` once (it installs fauxqs and Node 22 under .local/bench)",
            });
        }
    }
    Ok((node, cli))
}

pub(crate) fn program(name: &'static str) -> Result<PathBuf, StackError> {
    let path = bin_dir().join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(StackError::Missing { what: name, path, hint: "run `cargo build --workspace --bins` first" })
    }
}

// ── the stack ───────────────────────────────────────────────────────────────

/// A running local stack.
pub struct LocalStack {
    /// What a client needs (written to `stack.env` by [`Self::detach`]).
    pub env: StackEnv,
    pub dir: PathBuf,
    procs: Vec<Proc>,
    lifetime: Lifetime,
    /// Until disarmed, dropping the stack stops every process.
    armed: bool,
    /// The proxy between the edge and SQS, when [`StackSpec::queue_switch`].
    pub queue_switch: Option<crate::switch::Switch>,
}

impl LocalStack {
    /// Starts everything `spec` names and waits until each piece answers.
    /// On any failure, what was already started is stopped.
    pub async fn start(mut spec: StackSpec) -> Result<Self, StackError> {
        // Absolute: wrangler runs in a directory of its own.
        spec.dir = std::path::absolute(&spec.dir).map_err(io_error(format!("resolving {}", spec.dir.display())))?;
        let logs = spec.dir.join("logs");
        fs::create_dir_all(&logs).map_err(io_error(format!("creating {}", logs.display())))?;
        let mut settings: Vec<(String, String)> =
            STACK_DEFAULTS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        if spec.crm_url.is_none() {
            settings.extend(spec.crm_contract.profile_settings());
        }
        for (key, value) in &spec.settings {
            settings.retain(|(k, _)| k != key);
            settings.push((key.clone(), value.clone()));
        }
        let lookup = |name: &str| settings.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let policy = Policy::from_lookup(lookup)?;
        let mut stack = Self {
            env: StackEnv::default(),
            dir: spec.dir.clone(),
            procs: Vec::new(),
            lifetime: spec.lifetime,
            armed: true,
            queue_switch: None,
        };
        let secrets = Secrets::generate();

        // moto: SQS and DynamoDB.
        // FAILSOFT_LAB_IAM=off: moto takes every call (to measure what the
        // checks cost; README, "The local stack").
        let auth = if std::env::var("FAILSOFT_LAB_IAM").is_ok_and(|v| v == "off") { Auth::Open } else { Auth::Iam };
        let moto = crate::moto::command(auth).map_err(|_| StackError::Missing {
            what: "moto_server",
            path: workspace_root().join(".venv/bin/moto_server"),
            hint: SETUP_HINT,
        })?;
        stack.spawn("moto", moto)?;
        let line = stack.wait_line("moto", MOTO_READY, crate::moto::READY_MARKER).await?;
        let endpoint = crate::moto::endpoint_in(&line).unwrap_or_default();
        let sqs_endpoint = match spec.sqs {
            SqsHost::Moto => None,
            SqsHost::Fauxqs => {
                let (node, cli) = fauxqs_paths()?;
                let port = free_port()?;
                let mut fauxqs = clean_command(&node);
                fauxqs.arg(cli).env("FAUXQS_PORT", port.to_string()).env("FAUXQS_LOGGER", "false");
                stack.spawn("fauxqs", fauxqs)?;
                stack.wait_tcp("fauxqs", SocketAddr::from(([127, 0, 0, 1], port)), MOTO_READY).await?;
                Some(format!("http://127.0.0.1:{port}"))
            }
        };
        // The queues, tables and identities: the template's stack.
        let request = StackRequest::new(&endpoint).processing_limit(policy.processing_limit_secs);
        let aws_stack = aws_stack::create(&request).await?;
        let (mut queue_url, mut dlq_url) = (aws_stack.queue_url()?, aws_stack.dlq_url()?);
        let tables = (aws_stack.results_table()?.to_owned(), aws_stack.last_known_table()?.to_owned());
        let worker_aws = aws_env(&endpoint, sqs_endpoint.as_deref(), aws_stack.worker()?);
        let edge_key = aws_stack.edge()?.clone();
        if let Some(sqs) = &sqs_endpoint {
            (queue_url, dlq_url) = aws_stack::mirror_queues(&aws_stack, sqs).await?;
            // fauxqs names its queues `http://sqs.REGION.localhost:PORT/…`,
            // a host only some resolvers know; the edge posts to the URL's host.
            queue_url = rebase(&queue_url, sqs);
            dlq_url = rebase(&dlq_url, sqs);
        }

        // The CRM: the simulator unless one is given.
        let (crm_url, crm_admin) = match &spec.crm_url {
            Some(url) => (url.trim_end_matches('/').to_owned(), None),
            None => {
                let mut sim = clean_command(&program("crm-sim")?);
                sim.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]).env("RUST_LOG", "info");
                sim.args(spec.crm_contract.sim_args());
                stack.spawn("crm-sim", sim)?;
                let urls = parse_listening_line(&stack.wait_line("crm-sim", PROGRAM_READY, "crm-sim listening").await?);
                let api = urls.get("api").cloned().unwrap_or_default();
                let admin = urls.get("admin").cloned().unwrap_or_default();
                (api, Some(admin))
            }
        };

        // The worker binds ports of its own choosing and says which; the
        // edge's must be known before the worker starts (it pushes there).
        let edge_port = free_port()?;
        let edge_url = format!("http://127.0.0.1:{edge_port}");

        // The origin worker and its results API.
        let mut worker = clean_command(&program("failsoft")?);
        // The simulator's full contract has the optional case search; a
        // CRM given by URL declares its capabilities in the settings.
        if spec.crm_url.is_none() && spec.crm_contract == CrmContract::Full {
            worker.env("FAILSOFT_CRM_CAN_FIND_CASES", "true");
        }
        worker.arg("worker").envs(worker_aws.iter().cloned()).envs(settings.iter().map(|(k, v)| (k, v)));
        worker.envs([
            ("FAILSOFT_QUEUE_URL", queue_url.as_str()),
            ("FAILSOFT_DLQ_URL", dlq_url.as_str()),
            ("FAILSOFT_CRM_URL", crm_url.as_str()),
            ("FAILSOFT_INTERNAL_SECRET", secrets.internal.as_str()),
            // The pre-warm sync keys records as the edge does.
            ("FAILSOFT_CACHE_KEY_SECRET", secrets.cache_key.as_str()),
            ("FAILSOFT_EDGE_URL", edge_url.as_str()),
            ("FAILSOFT_ORIGIN_LISTEN", "127.0.0.1:0"),
            ("FAILSOFT_OPERATOR_LISTEN", "127.0.0.1:0"),
        ]);
        stack.spawn("worker", worker)?;
        let urls = parse_listening_line(&stack.wait_line("worker", PROGRAM_READY, "failsoft-origin listening").await?);
        let origin_url = urls.get("api").cloned().unwrap_or_default();
        let operator_url = urls.get("operator").cloned().unwrap_or_default();
        stack.wait_http("worker", &format!("{origin_url}/healthz"), PROGRAM_READY).await?;

        // The edge, through the queue's switch when asked for one.
        let mut edge_queue_url = queue_url.clone();
        if spec.queue_switch {
            let target = queue_url
                .split_once("://")
                .and_then(|(_, rest)| rest.split('/').next())
                .and_then(|host| host.parse().ok())
                .ok_or_else(|| {
                    StackError::Setting(ConfigError::new("FAILSOFT_QUEUE_URL", "not an http://ip:port URL"))
                })?;
            let switch = crate::switch::Switch::start(target)
                .await
                .map_err(io_error("starting the proxy in front of SQS".to_owned()))?;
            edge_queue_url = switch.url_through(&queue_url);
            stack.queue_switch = Some(switch);
        }
        let mut edge_env: Vec<(String, String)> = vec![
            ("FAILSOFT_CRM_URL".into(), crm_url.clone()),
            ("FAILSOFT_QUEUE_URL".into(), edge_queue_url),
            ("FAILSOFT_ORIGIN_URL".into(), origin_url.clone()),
            ("AWS_REGION".into(), MOTO_REGION.into()),
            ("AWS_ACCESS_KEY_ID".into(), edge_key.key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), edge_key.secret.clone()),
        ];
        for (key, value) in &settings {
            edge_env.retain(|(k, _)| k != key);
            edge_env.push((key.clone(), value.clone()));
        }
        stack.start_edge(spec.edge, edge_port, &edge_env, &secrets).await?;

        let env = &mut stack.env;
        env.set("FAILSOFT_EDGE_URL", edge_url);
        env.set("FAILSOFT_EDGE_HOST", spec.edge.as_str());
        env.set("FAILSOFT_AUTH_HEADER", format!("Bearer {}", secrets.token));
        env.set("FAILSOFT_ORIGIN_URL", origin_url);
        env.set("FAILSOFT_OPERATOR_URL", operator_url);
        env.set("FAILSOFT_QUEUE_URL", queue_url);
        env.set("FAILSOFT_DLQ_URL", dlq_url);
        env.set("FAILSOFT_RESULTS_TABLE", tables.0);
        env.set("FAILSOFT_LAST_KNOWN_TABLE", tables.1);
        env.set("AWS_ENDPOINT_URL", endpoint);
        if let Some(sqs) = sqs_endpoint {
            env.set("AWS_ENDPOINT_URL_SQS", sqs);
        }
        env.set("AWS_REGION", MOTO_REGION);
        // The lab's administrator, for a load driver's and the drill's
        // look-ups (queue depths); the operator's key for `failsoft dlq …`.
        env.set("AWS_ACCESS_KEY_ID", aws_stack.admin.key.clone());
        env.set("AWS_SECRET_ACCESS_KEY", aws_stack.admin.secret.clone());
        // The worker's key, for `failsoft sync --once` by hand (the drill's pre-warm).
        let worker = aws_stack.worker()?;
        env.set("FAILSOFT_WORKER_AWS_ACCESS_KEY_ID", worker.key.clone());
        env.set("FAILSOFT_WORKER_AWS_SECRET_ACCESS_KEY", worker.secret.clone());
        let operator = aws_stack.operator()?;
        env.set("FAILSOFT_OPERATOR_AWS_ACCESS_KEY_ID", operator.key.clone());
        env.set("FAILSOFT_OPERATOR_AWS_SECRET_ACCESS_KEY", operator.secret.clone());
        env.set("CRM_URL", crm_url);
        if let Some(admin) = crm_admin {
            env.set("CRM_ADMIN_URL", admin);
        }
        env.set("FAILSOFT_CRM_DEADLINE_MS", policy.crm_deadline_ms.to_string());
        env.set("FAILSOFT_FRESHNESS_SECS", (policy.freshness.fresh_ms / 1000).to_string());
        env.set("FAILSOFT_BREAKER_COOL_DOWN_MS", policy.breaker.cool_down_ms.to_string());
        env.set("FAILSOFT_CACHE_KEY_SECRET", secrets.cache_key.clone());
        env.set("FAILSOFT_WEBHOOK_SECRET", secrets.webhook.clone());
        env.set("FAILSOFT_INTERNAL_SECRET", secrets.internal.clone());
        env.set("FAILSOFT_STACK_LOGS", logs.display().to_string());
        Ok(stack)
    }

    /// The processes, as `stack.pids` records them.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.procs
            .iter()
            .map(|p| Recorded { name: p.name.clone(), pid: p.pid, pgid: p.pid, start_time: p.start_time })
            .collect()
    }

    /// Writes `stack.env` and `stack.pids` and lets the processes run on
    /// after this value is gone (`failsoft-lab up`).
    pub fn detach(mut self) -> Result<StackEnv, StackError> {
        self.env.write(&self.dir.join(ENV_FILE))?;
        let pids: String =
            self.recorded().iter().map(|r| format!("{} {} {} {}\n", r.name, r.pid, r.pgid, r.start_time)).collect();
        let path = self.dir.join(PID_FILE);
        fs::write(&path, pids).map_err(io_error(format!("writing {}", path.display())))?;
        self.armed = false;
        // The children are left to run: dropping a `Child` neither waits
        // for nor kills it.
        self.procs.clear();
        Ok(self.env.clone())
    }

    /// Stops every process (reverse start order), by process group.
    pub fn stop(&mut self) -> Vec<String> {
        let mut procs = std::mem::take(&mut self.procs);
        let mut targets: Vec<(Recorded, Option<&mut Child>)> = procs
            .iter_mut()
            .rev()
            .map(|p| {
                (Recorded { name: p.name.clone(), pid: p.pid, pgid: p.pid, start_time: p.start_time }, p.child.as_mut())
            })
            .collect();
        let left = stop_groups(&mut targets, STOP_GRACE);
        drop(targets);
        for p in procs.iter_mut() {
            if let Some(child) = p.child.as_mut() {
                let _ = child.wait();
            }
        }
        left
    }

    fn spawn(&mut self, name: &str, mut command: Command) -> Result<(), StackError> {
        let log = self.dir.join("logs").join(format!("{name}.log"));
        let file = File::create(&log).map_err(io_error(format!("creating {}", log.display())))?;
        let err = file.try_clone().map_err(io_error("duplicating a log handle"))?;
        let owned = self.lifetime == Lifetime::Owned;
        command.stdin(Stdio::null()).stdout(file).stderr(err);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::setsid() == -1 {
                    return Err(io::Error::last_os_error());
                }
                if owned {
                    // Killed with the drill, should it die without cleaning up.
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|source| StackError::Spawn { name: name.to_owned(), source })?;
        let pid = child.id();
        let start_time = proc_stat(pid).map(|(_, start)| start).unwrap_or(0);
        self.procs.push(Proc { name: name.to_owned(), pid, start_time, child: Some(child), log });
        Ok(())
    }

    fn proc(&mut self, name: &str) -> &mut Proc {
        self.procs.iter_mut().find(|p| p.name == name).expect("a started process")
    }

    /// An error if the process has exited.
    fn check_running(&mut self, name: &str) -> Result<(), StackError> {
        let proc = self.proc(name);
        if let Some(child) = proc.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            let log = proc.log.clone();
            return Err(StackError::Exited {
                name: name.to_owned(),
                status: status.to_string(),
                log: log.display().to_string(),
                tail: log_tail(&log),
            });
        }
        Ok(())
    }

    fn not_ready(&mut self, name: &str, within: Duration) -> StackError {
        let log = self.proc(name).log.clone();
        StackError::NotReady { name: name.to_owned(), within, log: log.display().to_string(), tail: log_tail(&log) }
    }

    /// Waits for a line of the process's log containing `marker`; returns it.
    async fn wait_line(&mut self, name: &str, within: Duration, marker: &str) -> Result<String, StackError> {
        let log = self.proc(name).log.clone();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(text) = fs::read_to_string(&log)
                && let Some(line) = text.lines().find(|l| l.contains(marker))
            {
                return Ok(line.to_owned());
            }
            self.check_running(name)?;
            tokio::time::sleep(POLL).await;
        }
        Err(self.not_ready(name, within))
    }

    async fn wait_tcp(&mut self, name: &str, addr: SocketAddr, within: Duration) -> Result<(), StackError> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            self.check_running(name)?;
            tokio::time::sleep(POLL).await;
        }
        Err(self.not_ready(name, within))
    }

    /// Waits until `url` answers 200 (a 5xx from a Worker that refuses its
    /// settings is not waited out).
    async fn wait_http(&mut self, name: &str, url: &str, within: Duration) -> Result<(), StackError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| StackError::Io("an HTTP client".into(), io::Error::other(e)))?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(resp) = http.get(url).send().await {
                if resp.status().is_success() {
                    return Ok(());
                }
                if resp.status().as_u16() == 500 {
                    let body = resp.text().await.unwrap_or_default();
                    return Err(StackError::Exited {
                        name: name.to_owned(),
                        status: format!("answered 500 at {url}"),
                        log: String::new(),
                        tail: body,
                    });
                }
            }
            self.check_running(name)?;
            tokio::time::sleep(POLL).await;
        }
        Err(self.not_ready(name, within))
    }

    async fn start_edge(
        &mut self,
        host: EdgeHost,
        port: u16,
        env: &[(String, String)],
        secrets: &Secrets,
    ) -> Result<(), StackError> {
        let url = format!("http://127.0.0.1:{port}");
        let root = workspace_root();
        match host {
            EdgeHost::Native => {
                let mut edge = clean_command(&program("failsoft-edge")?);
                edge.args(["--listen", &format!("127.0.0.1:{port}")]);
                edge.envs(env.iter().map(|(k, v)| (k, v))).envs(secrets.edge_env());
                // The write outbox's journal, kept with the stack's state.
                edge.env("FAILSOFT_OUTBOX_DIR", self.dir.join("state/outbox"));
                self.spawn("edge", edge)?;
                self.wait_line("edge", PROGRAM_READY, "failsoft-edge listening").await?;
            }
            EdgeHost::Worker => {
                let state = self.dir.join("state/worker");
                fs::create_dir_all(&state).map_err(io_error(format!("creating {}", state.display())))?;
                let config = state.join("wrangler.toml");
                let names: Vec<&str> = secrets.edge_env().iter().map(|(k, _)| *k).collect();
                fs::write(&config, worker_config(&root, &names)?)
                    .map_err(io_error(format!("writing {}", config.display())))?;
                let logs = self.dir.join("logs");
                let vars = env.iter().map(|(k, v)| (k, v));
                let mut dev = wrangler_dev(&root, &config, port, &state.join("kv"), &logs, vars)?;
                dev.current_dir(&state).envs(secrets.edge_env());
                self.spawn("edge", dev)?;
                self.wait_line("edge", EDGE_READY, "Ready on ").await?;
            }
            EdgeHost::Spin => {
                let wasmtime = installed("wasmtime", root.join(".venv/bin/wasmtime"))?;
                let component = bin_dir()
                    .parent()
                    .map(|target| target.join("spin/failsoft-edge-spin-with-shim.wasm"))
                    .unwrap_or_default();
                if !component.exists() {
                    return Err(StackError::Missing {
                        what: "the Spin test component",
                        path: component,
                        hint: "run `make spin-test-component`",
                    });
                }
                let kv = self.dir.join("state/spin-kv");
                fs::create_dir_all(&kv).map_err(io_error(format!("creating {}", kv.display())))?;
                let mut serve = clean_command(&wasmtime);
                serve.args(["serve", "--addr", &format!("127.0.0.1:{port}"), "-S", "cli", "--dir"]);
                serve.arg(format!("{}::/kv", kv.display()));
                for (key, value) in env {
                    serve.arg("--env").arg(format!("{key}={value}"));
                }
                // `--env NAME` passes this process's value: secrets stay off the command line.
                for (key, _) in secrets.edge_env() {
                    serve.arg("--env").arg(key);
                }
                serve.envs(secrets.edge_env()).arg(&component);
                self.spawn("edge", serve)?;
                self.wait_line("edge", EDGE_READY, "Serving HTTP on").await?;
            }
        }
        self.wait_http("edge", &format!("{url}/healthz"), EDGE_READY).await
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        if self.armed && !self.procs.is_empty() {
            let left = self.stop();
            if !left.is_empty() {
                eprintln!("failsoft: could not stop {}", left.join(", "));
            }
        }
    }
}

/// The root `wrangler.toml` for a copy outside the checkout (the local stack,
/// the Worker tests): the build step dropped (the Worker is built already),
/// `main` made absolute, and the `secrets` (if any) declared so wrangler
/// takes them from its environment and shows them as hidden.
pub fn worker_config(root: &Path, secrets: &[&str]) -> Result<String, StackError> {
    let path = root.join("wrangler.toml");
    let text = fs::read_to_string(&path).map_err(io_error(format!("reading {}", path.display())))?;
    let mut out = String::new();
    let mut in_build = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            in_build = trimmed == "[build]";
        }
        if in_build {
            continue;
        }
        if let Some(main) = trimmed.strip_prefix("main = ") {
            let main = root.join(main.trim().trim_matches('"'));
            if !main.exists() {
                return Err(StackError::Missing { what: "the built Worker", path: main, hint: "run `make worker`" });
            }
            out.push_str(&format!("main = {:?}\n", main.display().to_string()));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !secrets.is_empty() {
        let names: Vec<String> = secrets.iter().map(|s| format!("{s:?}")).collect();
        out.push_str(&format!("\n[secrets]\nrequired = [{}]\n", names.join(", ")));
    }
    Ok(out)
}

/// `path`, a tool `make setup` installs, or what to run when it is missing.
fn installed(what: &'static str, path: PathBuf) -> Result<PathBuf, StackError> {
    if path.exists() { Ok(path) } else { Err(StackError::Missing { what, path, hint: SETUP_HINT }) }
}

const SETUP_HINT: &str = "run `make setup` (scripts/setup.sh installs it)";

/// `wrangler dev --local` of the built Worker on 127.0.0.1:`port` (0: it
/// picks, and names it in its "Ready on" line), KV kept in `persist`, with
/// `vars` as `--var`s and none of this process's failsoft, AWS or
/// Cloudflare settings. Its debug file is discarded
/// ([`discarded_wrangler_debug_log`], in `logs`).
pub fn wrangler_dev(
    root: &Path,
    config: &Path,
    port: u16,
    persist: &Path,
    logs: &Path,
    vars: impl IntoIterator<Item = (impl AsRef<str>, impl AsRef<str>)>,
) -> Result<Command, StackError> {
    let wrangler = installed("wrangler", root.join("node_modules/.bin/wrangler"))?;
    fs::create_dir_all(logs).map_err(io_error(format!("creating {}", logs.display())))?;
    let mut dev = clean_command(&wrangler);
    dev.arg("dev")
        .arg("--config")
        .arg(config)
        .args(["--local", "--ip", "127.0.0.1", "--port", &port.to_string(), "--inspector-port", "0"])
        .arg("--persist-to")
        .arg(persist)
        .args(["--show-interactive-dev-session=false", "--log-level", "info"]);
    for (key, value) in vars {
        dev.arg("--var").arg(format!("{}:{}", key.as_ref(), value.as_ref()));
    }
    dev.env("WRANGLER_SEND_METRICS", "false")
        // Miniflare would fetch its `Request.cf` placeholder from the internet.
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
        .env("WRANGLER_LOG_PATH", discarded_wrangler_debug_log(logs)?)
        .env("BROWSER", "none");
    Ok(dev)
}

// ── failsoft-lab up / down ──────────────────────────────────────────────────────

/// `failsoft-lab up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// The edge host.
    #[arg(long, value_enum, default_value_t = EdgeHost::Worker)]
    pub edge: EdgeHost,
    /// Use this downstream as it is instead of starting the CRM simulator.
    #[arg(long, value_name = "URL")]
    pub crm_url: Option<String>,
    /// The calls the CRM simulator offers.
    #[arg(long, value_enum, default_value_t = CrmContract::Full)]
    pub crm_contract: CrmContract,
    /// What serves SQS (DynamoDB is always moto's).
    #[arg(long, value_enum, default_value_t = SqsHost::Moto)]
    pub sqs: SqsHost,
    /// Where logs/, state/, stack.env and stack.pids go.
    #[arg(long, default_value = ".local")]
    pub dir: PathBuf,
}

/// `failsoft-lab down`.
#[derive(Debug, Clone, clap::Args)]
pub struct DownArgs {
    /// The directory `failsoft-lab up` wrote stack.pids to.
    #[arg(long, default_value = ".local")]
    pub dir: PathBuf,
}

/// The processes recorded in `dir`'s pid file, if any.
pub fn read_pids(dir: &Path) -> Option<Vec<Recorded>> {
    let text = fs::read_to_string(dir.join(PID_FILE)).ok()?;
    Some(text.lines().filter_map(Recorded::parse).collect())
}

/// Starts a detached stack, writes `stack.env` and `stack.pids`, prints the
/// environment (secrets masked).
pub async fn up(args: UpArgs) -> ExitCode {
    if let Some(recorded) = read_pids(&args.dir) {
        if recorded.iter().any(Recorded::alive) {
            eprintln!("failsoft-lab up: {}", StackError::AlreadyUp(args.dir.join(PID_FILE)));
            return ExitCode::FAILURE;
        }
        // A stack that died by itself: its files are stale.
        let _ = fs::remove_file(args.dir.join(PID_FILE));
        let _ = fs::remove_file(args.dir.join(ENV_FILE));
    }
    let settings: Vec<(String, String)> = POLICY_SETTINGS
        .iter()
        .filter_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()).map(|v| (name.to_string(), v)))
        .collect();
    let spec = StackSpec {
        edge: args.edge,
        sqs: args.sqs,
        crm_url: args.crm_url.clone().filter(|u| !u.is_empty()),
        crm_contract: args.crm_contract,
        dir: args.dir.clone(),
        settings,
        lifetime: Lifetime::Detached,
        queue_switch: false,
    };
    let edge = match spec.edge {
        EdgeHost::Native => "the native edge (failsoft-edge)",
        EdgeHost::Worker => "the Worker edge (wrangler dev)",
        EdgeHost::Spin => "the Spin edge (wasmtime serve)",
    };
    println!(
        "starting the local stack: moto, {}{}failsoft worker, {edge}…",
        if spec.sqs == SqsHost::Fauxqs { "fauxqs, " } else { "" },
        if spec.crm_url.is_some() { "" } else { "crm-sim, " },
    );
    let started = tokio::select! {
        started = LocalStack::start(spec) => started,
        () = failsoft_origin::worker::stop_signal() => {
            // Dropping the half-started stack stops what it started.
            eprintln!("failsoft-lab up: interrupted");
            return ExitCode::from(130);
        }
    };
    let stack = match started {
        Ok(stack) => stack,
        Err(e) => {
            eprintln!("failsoft-lab up: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pids: Vec<String> = stack.recorded().iter().map(|r| format!("{} {}", r.name, r.pid)).collect();
    match stack.detach() {
        Ok(env) => {
            println!("{}", env.render(true).trim_end());
            println!(
                "\nwritten to {} (with the secrets); logs in {}; PIDs {}\nstop it with `make down`",
                args.dir.join(ENV_FILE).display(),
                args.dir.join("logs").display(),
                pids.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("failsoft-lab up: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Stops what `up` recorded, by process group, and removes its files.
pub fn down(args: DownArgs) -> ExitCode {
    let Some(recorded) = read_pids(&args.dir) else {
        println!("no stack to stop ({} not found)", args.dir.join(PID_FILE).display());
        return ExitCode::SUCCESS;
    };
    // A recorded leader that is gone may still have left its group (workerd
    // after wrangler): the group is signalled all the same. A leader whose
    // PID now names another process is left alone, and so is its group.
    let mut targets: Vec<(Recorded, Option<&mut Child>)> = recorded
        .iter()
        .rev()
        .filter(|r| r.alive() || (proc_stat(r.pid).is_none() && group_alive(r.pgid)))
        .map(|r| (r.clone(), None))
        .collect();
    let stopping: Vec<String> = targets.iter().map(|(r, _)| format!("{} ({})", r.name, r.pid)).collect();
    let left = stop_groups(&mut targets, STOP_GRACE);
    let _ = fs::remove_file(args.dir.join(PID_FILE));
    let _ = fs::remove_file(args.dir.join(ENV_FILE));
    if stopping.is_empty() {
        println!("the stack had already stopped");
    } else {
        println!("stopped {}", stopping.join(", "));
    }
    if left.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("failsoft-lab down: still running after SIGKILL: {}", left.join(", "));
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_round_trips_through_shell_quoting() {
        let mut env = StackEnv::default();
        env.set("FAILSOFT_AUTH_HEADER", "Bearer abc");
        env.set("FAILSOFT_EDGE_URL", "http://127.0.0.1:1234");
        env.set("ODD", "it's");
        let text = env.render(false);
        assert!(text.contains("FAILSOFT_AUTH_HEADER='Bearer abc'\n"), "{text}");
        assert!(text.contains("FAILSOFT_EDGE_URL=http://127.0.0.1:1234\n"), "{text}");
        assert_eq!(StackEnv::parse(&text), env);
        assert!(!env.render(true).contains("abc"), "secrets are masked when printed");
    }

    #[test]
    fn queue_urls_rebase_onto_loopback() {
        assert_eq!(
            rebase("http://sqs.us-east-1.localhost:4566/000000000000/failsoft.fifo", "http://127.0.0.1:4566"),
            "http://127.0.0.1:4566/000000000000/failsoft.fifo"
        );
    }

    #[test]
    fn pid_lines_parse_and_this_process_is_alive() {
        let (_, start) = proc_stat(std::process::id()).expect("our own stat");
        let me = Recorded::parse(&format!("me {} {} {start}", std::process::id(), std::process::id())).unwrap();
        assert!(me.alive());
        let reused = Recorded { start_time: start + 1, ..me.clone() };
        assert!(!reused.alive(), "a reused PID is not the recorded process");
        assert!(Recorded::parse("bad line").is_none());
    }

    #[test]
    fn worker_config_declares_the_secrets() {
        let root = workspace_root();
        if !root.join("edge/worker/build/index.js").exists() {
            return; // the Worker is not built here
        }
        let text = worker_config(&root, &["FAILSOFT_AUTH_TOKEN"]).unwrap();
        assert!(!text.lines().any(|l| l.trim() == "[build]"));
        assert!(text.ends_with("[secrets]\nrequired = [\"FAILSOFT_AUTH_TOKEN\"]\n"), "{text}");
    }
}
