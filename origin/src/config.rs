//! The origin's settings: the shared policy plus what only the origin
//! needs, read once from the environment and validated before anything
//! starts. Each command reads the part it needs; a missing or unusable
//! setting is refused with its name (the process exits with status 2).
//!
//! (Over 500 lines only with its unit tests, kept beside the code.)

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use failsoft_shared::breaker::BreakerPolicy;
use failsoft_shared::config::{ConfigError, Policy, number};

/// DynamoDB's and SQS's naming rules, checked here so a typo fails at start-up.
const TABLE_NAME_MAX: usize = 255;
/// One process should not hold more messages than SQS returns in a few
/// batches; past this the visibility heartbeat itself becomes the load.
pub const MAX_CONCURRENCY: usize = 256;
/// SQS's longest long poll.
pub const MAX_RECEIVE_WAIT_SECS: i32 = 20;
/// Bounds of `FAILSOFT_EMF_INTERVAL_SECS`: CloudWatch's finest resolution
/// is one second, and a metric silent for over an hour reads as missing.
const EMF_INTERVAL_SECS: std::ops::RangeInclusive<u64> = 1..=3_600;
/// The edge's own bound on a Data Action's downstream deadline; a settle
/// window longer than that waits for nothing.
const MAX_WRITE_SETTLE_MS: u64 = 60_000;
/// The worker's probe cadence while the CRM is down: one cheap read every
/// two seconds costs a down CRM nothing and finds it back within two.
const DEFAULT_PROBE_EVERY_MS: u64 = 2_000;
const MAX_PROBE_EVERY_MS: u64 = 600_000;
/// The operator's listener, next to the API's 8788.
pub const DEFAULT_OPERATOR_PORT: u16 = 8789;

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// How a dead-letter alert is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertFormat {
    /// PagerDuty Events API v2.
    PagerDuty,
    /// Opsgenie Alert API.
    Opsgenie,
    /// A plain JSON webhook.
    Webhook,
}

/// Where dead-letter alerts go.
#[derive(Debug, Clone)]
pub struct AlertTarget {
    pub url: String,
    pub format: AlertFormat,
    /// `FAILSOFT_ALERT_ROUTING_KEY`: PagerDuty's routing key, Opsgenie's API
    /// key, or a webhook's bearer token.
    pub routing_key: Option<Secret>,
}

/// Where Genesys events go, and how `POST /v1/events` knows EventBridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// `FAILSOFT_EVENTS_URL`: the downstream endpoint each event is POSTed
    /// to; unset: events are dead-lettered `EVENTS_NOT_CONFIGURED` and
    /// `POST /v1/events` answers 503.
    pub url: Option<String>,
    /// `FAILSOFT_EVENTS_API_KEY`: the API key of the EventBridge connection
    /// (at least 16 bytes); unset: `POST /v1/events` answers 503.
    pub api_key: Option<Secret>,
    /// `FAILSOFT_EVENTS_API_KEY_HEADER`: the header the connection sends it
    /// in (default `X-Failsoft-Api-Key`), lower-cased.
    pub api_key_header: String,
}

/// The header an EventBridge connection's API key arrives in, by default.
pub const DEFAULT_EVENTS_API_KEY_HEADER: &str = "x-failsoft-api-key";

/// What `failsoft worker` needs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub policy: Policy,
    pub tables: Tables,
    /// `FAILSOFT_QUEUE_URL`: the FIFO work queue.
    pub queue_url: String,
    /// `FAILSOFT_DLQ_URL`: the FIFO dead-letter queue.
    pub dlq_url: String,
    /// `FAILSOFT_CRM_URL`: the downstream's base URL, without a trailing `/`.
    pub crm_url: String,
    /// `FAILSOFT_INTERNAL_SECRET`: signs edge pushes and authenticates
    /// result reads (the edge signs them with the same secret).
    pub internal_secret: Secret,
    /// `FAILSOFT_EDGE_URL`: the edges refreshed and synced records are
    /// pushed to (several, comma-separated, for a Worker and a Spin
    /// deployment side by side); unset: no push.
    pub edge_urls: Vec<String>,
    /// The pre-warm sync's settings (`FAILSOFT_SYNC_*`, `FAILSOFT_CACHE_KEY_SECRET`).
    pub sync: crate::sync::SyncSettings,
    /// `FAILSOFT_ALERT_URL` and friends; unset: dead-letters are only logged.
    pub alert: Option<AlertTarget>,
    /// `FAILSOFT_WORKER_CONCURRENCY`: messages held at once (default 32).
    pub concurrency: usize,
    /// `FAILSOFT_REPLAY_RATE_MAX`: ceiling of downstream deliveries per second.
    pub replay_rate_max: u32,
    /// `FAILSOFT_CRM_RATE_LIMIT`: the calls per second the CRM allows this
    /// integration, when the operator knows it (unset: learned from the
    /// CRM's rate-limit headers and 429s). The replay keeps just under it.
    pub crm_rate_limit: Option<f64>,
    /// The worker's breaker: the policy's window and threshold, with
    /// `FAILSOFT_WORKER_PROBE_EVERY_MS` (default 2000) as its cool-down,
    /// counted from when a probe was sent (probes start that far apart).
    /// The edge's cool-down spares Data Actions the CRM's deadline; the
    /// worker's only spaces one cheap probe, and every second it waits
    /// after the CRM is back is a second more of backlog.
    pub breaker: BreakerPolicy,
    /// `FAILSOFT_ORIGIN_LISTEN`: the edge-facing API (results, edge
    /// reports, `POST /v1/events`) and `/healthz`.
    pub listen: SocketAddr,
    /// `FAILSOFT_OPERATOR_LISTEN`: `/metrics`, `/v1/health`, the dashboard
    /// and `/healthz`; loopback by default (`127.0.0.1:8789`).
    pub operator_listen: SocketAddr,
    /// `FAILSOFT_RECEIVE_WAIT_SECS`: the long poll (default 20, SQS's longest).
    pub receive_wait_secs: i32,
    /// `FAILSOFT_SHUTDOWN_GRACE_SECS`: how long SIGTERM waits for in-flight work.
    pub shutdown_grace: Duration,
    /// `FAILSOFT_WRITE_SETTLE_MS`: a queued write is not delivered before
    /// this long after it was enqueued (default: the CRM deadline), so the
    /// edge's abandoned first attempt has finished at the CRM before the
    /// worker looks for it.
    pub write_settle_ms: u64,
    /// Whether the CRM's mapping declares a case search by external
    /// reference (for the generic profile: `FAILSOFT_CRM_CAN_FIND_CASES`,
    /// the optional `GET /cases?externalRef=`, default false), so the worker
    /// looks for a case before creating it: write-once even when the CRM
    /// ignores or lacks an idempotency key. Without it, the create's key is
    /// the guard.
    pub can_find_cases: bool,
    /// `FAILSOFT_CRM_PROFILE` (default `generic`) or `FAILSOFT_CRM_MAPPING`
    /// (a file): how the CRM is spoken to (`deploy/crm/`), its secrets bound.
    pub crm_mapping: std::sync::Arc<failsoft_shared::mapping::Mapping>,
    /// `FAILSOFT_EMF` (default off): print a CloudWatch Embedded Metric
    /// Format line on stdout every `FAILSOFT_EMF_INTERVAL_SECS` (default 60).
    pub emf_every: Option<Duration>,
    /// `FAILSOFT_EVENTS_URL` and friends.
    pub events: EventsConfig,
    /// `FAILSOFT_EDGE_OUTBOX_DRAIN_SECS` (default 30, 0: off): how often the
    /// edges' outbox drain route is called (`deliver::outbox_drain`).
    pub outbox_drain_every: Option<Duration>,
}

/// The DynamoDB tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    /// `FAILSOFT_RESULTS_TABLE` (default `failsoft-results`).
    pub results: String,
    /// `FAILSOFT_LAST_KNOWN_TABLE` (default `failsoft-last-known`).
    pub last_known: String,
}

/// What `failsoft dlq …` needs.
#[derive(Debug, Clone)]
pub struct DlqConfig {
    pub queue_url: String,
    pub dlq_url: String,
    pub tables: Tables,
    /// `FAILSOFT_DLQ_HOLD_SECS` (default 30, 2–43200): how long the tool
    /// holds what it received; renewed at half of it while a read goes on.
    pub hold_secs: i32,
}

pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

pub(crate) fn text(lookup: Lookup<'_>, name: &str) -> Option<String> {
    lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

pub(crate) fn required(lookup: Lookup<'_>, name: &'static str) -> Result<String, ConfigError> {
    text(lookup, name).ok_or_else(|| ConfigError::new(name, "is required"))
}

pub(crate) fn http_url(name: &'static str, value: String) -> Result<String, ConfigError> {
    let rest = value.strip_prefix("http://").or_else(|| value.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(value.trim_end_matches('/').to_owned()),
        _ => Err(ConfigError::new(name, "must be an http:// or https:// URL")),
    }
}

pub(crate) fn fifo_queue_url(lookup: Lookup<'_>, name: &'static str) -> Result<String, ConfigError> {
    let url = http_url(name, required(lookup, name)?)?;
    if !url.ends_with(".fifo") {
        return Err(ConfigError::new(name, "must be a FIFO queue (its name ends in .fifo)"));
    }
    Ok(url)
}

fn table_name(lookup: Lookup<'_>, name: &'static str, default: &str) -> Result<String, ConfigError> {
    let value = text(lookup, name).unwrap_or_else(|| default.to_owned());
    let ok = (3..=TABLE_NAME_MAX).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok { Ok(value) } else { Err(ConfigError::new(name, "must be 3-255 letters, digits, '_', '-' or '.'")) }
}

pub(crate) fn secret(lookup: Lookup<'_>, name: &'static str) -> Result<Secret, ConfigError> {
    // Trimmed and measured as the edge does it, so both sign with the same bytes.
    let value = required(lookup, name)?;
    failsoft_shared::signature::secret_from_setting(&value)
        .map(Secret::new)
        .ok_or_else(|| ConfigError::new(name, "must be at least 16 bytes"))
}

fn flag(lookup: Lookup<'_>, name: &'static str, default: bool) -> Result<bool, ConfigError> {
    match text(lookup, name).map(|v| v.to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
        Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
        Some(_) => Err(ConfigError::new(name, "must be true or false")),
    }
}

/// `FAILSOFT_CRM_CAN_FIND_CASES`, when set; the setting it replaced is
/// refused with its new name, so an upgrade cannot silently turn the look off.
fn can_find_cases(lookup: Lookup<'_>) -> Result<Option<bool>, ConfigError> {
    if lookup("FAILSOFT_CRM_LOOKUP_BEFORE_CREATE").is_some() {
        return Err(ConfigError::new(
            "FAILSOFT_CRM_LOOKUP_BEFORE_CREATE",
            "is now FAILSOFT_CRM_CAN_FIND_CASES (true when the CRM offers GET /cases?externalRef=)",
        ));
    }
    match text(lookup, "FAILSOFT_CRM_CAN_FIND_CASES") {
        None => Ok(None),
        Some(_) => flag(lookup, "FAILSOFT_CRM_CAN_FIND_CASES", false).map(Some),
    }
}

/// The CRM's mapping: `FAILSOFT_CRM_MAPPING_FILE` (a TOML or JSON file) or
/// `FAILSOFT_CRM_MAPPING` (the document itself), else the shipped profile
/// `FAILSOFT_CRM_PROFILE` (default `generic`); the secrets it names are read
/// from the environment.
pub(crate) fn crm_mapping(lookup: Lookup<'_>) -> Result<failsoft_shared::mapping::Mapping, ConfigError> {
    let document = match text(lookup, "FAILSOFT_CRM_MAPPING_FILE") {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::new("FAILSOFT_CRM_MAPPING_FILE", format!("cannot read {path}: {e}")))?,
        ),
        None => text(lookup, "FAILSOFT_CRM_MAPPING"),
    };
    let profile = text(lookup, "FAILSOFT_CRM_PROFILE");
    let from = failsoft_shared::mapping::Settings {
        profile: profile.as_deref(),
        document: document.as_deref(),
        can_find_cases: can_find_cases(lookup)?,
    };
    failsoft_shared::mapping::load_text(from, lookup)
        .map_err(|e| ConfigError::new("FAILSOFT_CRM_MAPPING", e.to_string()))
}

/// `FAILSOFT_EDGE_URL`: one URL or several, comma-separated.
pub(crate) fn edge_urls(lookup: Lookup<'_>) -> Result<Vec<String>, ConfigError> {
    let Some(list) = text(lookup, "FAILSOFT_EDGE_URL") else { return Ok(Vec::new()) };
    list.split(',').map(|url| http_url("FAILSOFT_EDGE_URL", url.trim().to_owned())).collect()
}

fn policy(lookup: Lookup<'_>) -> Result<Policy, ConfigError> {
    Policy::from_lookup(|name| lookup(name))
}

pub(crate) fn tables(lookup: Lookup<'_>) -> Result<Tables, ConfigError> {
    Ok(Tables {
        results: table_name(lookup, "FAILSOFT_RESULTS_TABLE", "failsoft-results")?,
        last_known: table_name(lookup, "FAILSOFT_LAST_KNOWN_TABLE", "failsoft-last-known")?,
    })
}

pub(crate) fn alert(lookup: Lookup<'_>) -> Result<Option<AlertTarget>, ConfigError> {
    let Some(url) = text(lookup, "FAILSOFT_ALERT_URL") else {
        return Ok(None);
    };
    let url = http_url("FAILSOFT_ALERT_URL", url)?;
    let format = match text(lookup, "FAILSOFT_ALERT_FORMAT").map(|f| f.to_ascii_lowercase()).as_deref() {
        None | Some("webhook") => AlertFormat::Webhook,
        Some("pagerduty") => AlertFormat::PagerDuty,
        Some("opsgenie") => AlertFormat::Opsgenie,
        Some(_) => return Err(ConfigError::new("FAILSOFT_ALERT_FORMAT", "must be pagerduty, opsgenie or webhook")),
    };
    let routing_key = text(lookup, "FAILSOFT_ALERT_ROUTING_KEY").map(|k| Secret::new(k.into_bytes()));
    if routing_key.is_none() && format != AlertFormat::Webhook {
        return Err(ConfigError::new(
            "FAILSOFT_ALERT_ROUTING_KEY",
            "is required for the pagerduty and opsgenie formats (the routing key or API key)",
        ));
    }
    Ok(Some(AlertTarget { url, format, routing_key }))
}

/// An HTTP header name: 1-64 letters, digits and '-', as an EventBridge
/// connection's API key name must be.
fn header_name(lookup: Lookup<'_>, name: &'static str, default: &str) -> Result<String, ConfigError> {
    let value = text(lookup, name).unwrap_or_else(|| default.to_owned()).to_ascii_lowercase();
    let ok = (1..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok { Ok(value) } else { Err(ConfigError::new(name, "must be a header name: 1-64 letters, digits or '-'")) }
}

fn events(lookup: Lookup<'_>) -> Result<EventsConfig, ConfigError> {
    let url = text(lookup, "FAILSOFT_EVENTS_URL").map(|u| http_url("FAILSOFT_EVENTS_URL", u)).transpose()?;
    let api_key = match text(lookup, "FAILSOFT_EVENTS_API_KEY") {
        None => None,
        Some(_) => Some(secret(lookup, "FAILSOFT_EVENTS_API_KEY")?),
    };
    let api_key_header = header_name(lookup, "FAILSOFT_EVENTS_API_KEY_HEADER", DEFAULT_EVENTS_API_KEY_HEADER)?;
    Ok(EventsConfig { url, api_key, api_key_header })
}

impl WorkerConfig {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let lookup: Lookup<'_> = &lookup;
        let policy = policy(lookup)?;
        let concurrency = number(&lookup, "FAILSOFT_WORKER_CONCURRENCY", 32usize)?;
        if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
            return Err(ConfigError::new(
                "FAILSOFT_WORKER_CONCURRENCY",
                format!("must be between 1 and {MAX_CONCURRENCY}"),
            ));
        }
        let replay_rate_max = number(&lookup, "FAILSOFT_REPLAY_RATE_MAX", 200u32)?;
        if !(1..=1_000_000).contains(&replay_rate_max) {
            return Err(ConfigError::new("FAILSOFT_REPLAY_RATE_MAX", "must be between 1 and 1000000 per second"));
        }
        let crm_rate_limit = match text(lookup, "FAILSOFT_CRM_RATE_LIMIT") {
            None => None,
            Some(v) => match v.trim().parse::<f64>() {
                Ok(limit) if limit.is_finite() && (0.1..=1_000_000.0).contains(&limit) => Some(limit),
                _ => {
                    return Err(ConfigError::new(
                        "FAILSOFT_CRM_RATE_LIMIT",
                        "must be the CRM's calls per second, between 0.1 and 1000000 (e.g. 25, or 1.5)",
                    ));
                }
            },
        };
        let listen = match text(lookup, "FAILSOFT_ORIGIN_LISTEN") {
            None => SocketAddr::from(([127, 0, 0, 1], 8788)),
            Some(v) => v
                .parse()
                .map_err(|_| ConfigError::new("FAILSOFT_ORIGIN_LISTEN", "must be an address such as 127.0.0.1:8788"))?,
        };
        let operator_listen = match text(lookup, "FAILSOFT_OPERATOR_LISTEN") {
            None => SocketAddr::from(([127, 0, 0, 1], DEFAULT_OPERATOR_PORT)),
            Some(v) => v.parse().map_err(|_| {
                ConfigError::new("FAILSOFT_OPERATOR_LISTEN", "must be an address such as 127.0.0.1:8789")
            })?,
        };
        if operator_listen.port() != 0 && operator_listen.port() == listen.port() {
            let overlap = operator_listen.ip() == listen.ip()
                || operator_listen.ip().is_unspecified()
                || listen.ip().is_unspecified();
            if overlap {
                return Err(ConfigError::new(
                    "FAILSOFT_OPERATOR_LISTEN",
                    format!(
                        "{operator_listen} is the API's port (FAILSOFT_ORIGIN_LISTEN {listen}): the operator's \
                         surface must be apart from the edge-facing one"
                    ),
                ));
            }
        }
        let receive_wait_secs = number(&lookup, "FAILSOFT_RECEIVE_WAIT_SECS", MAX_RECEIVE_WAIT_SECS)?;
        if !(0..=MAX_RECEIVE_WAIT_SECS).contains(&receive_wait_secs) {
            return Err(ConfigError::new(
                "FAILSOFT_RECEIVE_WAIT_SECS",
                "must be between 0 and 20 (SQS's longest poll)",
            ));
        }
        let grace_secs = number(&lookup, "FAILSOFT_SHUTDOWN_GRACE_SECS", 25u64)?;
        if grace_secs == 0 || grace_secs > 3_600 {
            return Err(ConfigError::new("FAILSOFT_SHUTDOWN_GRACE_SECS", "must be between 1 and 3600"));
        }
        let write_settle_ms = number(&lookup, "FAILSOFT_WRITE_SETTLE_MS", policy.crm_deadline_ms)?;
        if write_settle_ms > MAX_WRITE_SETTLE_MS {
            return Err(ConfigError::new("FAILSOFT_WRITE_SETTLE_MS", format!("must not exceed {MAX_WRITE_SETTLE_MS}")));
        }
        let edge_urls = edge_urls(lookup)?;
        let probe_every_ms = number(&lookup, "FAILSOFT_WORKER_PROBE_EVERY_MS", DEFAULT_PROBE_EVERY_MS)?;
        if !(100..=MAX_PROBE_EVERY_MS).contains(&probe_every_ms) {
            return Err(ConfigError::new(
                "FAILSOFT_WORKER_PROBE_EVERY_MS",
                format!("must be between 100 and {MAX_PROBE_EVERY_MS}"),
            ));
        }
        let emf_secs = number(&lookup, "FAILSOFT_EMF_INTERVAL_SECS", 60u64)?;
        if !EMF_INTERVAL_SECS.contains(&emf_secs) {
            return Err(ConfigError::new("FAILSOFT_EMF_INTERVAL_SECS", "must be between 1 and 3600 seconds"));
        }
        let emf_every = flag(lookup, "FAILSOFT_EMF", false)?.then(|| Duration::from_secs(emf_secs));
        let drain_secs = number(&lookup, "FAILSOFT_EDGE_OUTBOX_DRAIN_SECS", 30u64)?;
        if drain_secs > 3600 {
            return Err(ConfigError::new(
                "FAILSOFT_EDGE_OUTBOX_DRAIN_SECS",
                "must be between 0 (off) and 3600 seconds",
            ));
        }
        let outbox_drain_every = (drain_secs > 0).then(|| Duration::from_secs(drain_secs));
        let crm_mapping = crm_mapping(lookup)?;
        Ok(Self {
            breaker: BreakerPolicy { cool_down_ms: probe_every_ms, ..policy.breaker },
            tables: tables(lookup)?,
            queue_url: fifo_queue_url(lookup, "FAILSOFT_QUEUE_URL")?,
            dlq_url: fifo_queue_url(lookup, "FAILSOFT_DLQ_URL")?,
            crm_url: http_url("FAILSOFT_CRM_URL", required(lookup, "FAILSOFT_CRM_URL")?)?,
            internal_secret: secret(lookup, "FAILSOFT_INTERNAL_SECRET")?,
            edge_urls,
            sync: crate::sync::SyncSettings::from_lookup(lookup)?,
            alert: alert(lookup)?,
            concurrency,
            replay_rate_max,
            crm_rate_limit,
            listen,
            operator_listen,
            receive_wait_secs,
            shutdown_grace: Duration::from_secs(grace_secs),
            write_settle_ms,
            can_find_cases: crm_mapping.can_find_cases(),
            crm_mapping: std::sync::Arc::new(crm_mapping),
            emf_every,
            events: events(lookup)?,
            outbox_drain_every,
            policy,
        })
    }

    /// How long a claimed write stays reserved for its worker: the delivery
    /// itself (at most the processing limit) plus as long again for a
    /// request the worker abandoned to finish at the CRM. Another worker
    /// looks for the case only after that, so it sees any create in flight.
    pub fn lease_ms(&self) -> u64 {
        self.policy.processing_limit_secs.saturating_mul(2_000)
    }
}

impl DlqConfig {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let lookup: Lookup<'_> = &lookup;
        Ok(Self {
            queue_url: fifo_queue_url(lookup, "FAILSOFT_QUEUE_URL")?,
            dlq_url: fifo_queue_url(lookup, "FAILSOFT_DLQ_URL")?,
            tables: tables(lookup)?,
            hold_secs: {
                let secs = number(&lookup, "FAILSOFT_DLQ_HOLD_SECS", 30i32)?;
                if !(2..=43_200).contains(&secs) {
                    return Err(ConfigError::new(
                        "FAILSOFT_DLQ_HOLD_SECS",
                        "must be between 2 and 43200 (SQS's longest)",
                    ));
                }
                secs
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(pairs: &[(&str, &str)]) -> Result<WorkerConfig, ConfigError> {
        let mut all: Vec<(String, String)> = [
            ("FAILSOFT_QUEUE_URL", "http://127.0.0.1:5000/123456789012/failsoft.fifo"),
            ("FAILSOFT_DLQ_URL", "http://127.0.0.1:5000/123456789012/failsoft-dlq.fifo"),
            ("FAILSOFT_CRM_URL", "http://127.0.0.1:6000/"),
            ("FAILSOFT_INTERNAL_SECRET", "0123456789abcdef-internal"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in pairs {
            all.retain(|(name, _)| name != k);
            all.push((k.to_string(), v.to_string()));
        }
        WorkerConfig::from_lookup(move |name| all.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn defaults_fill_everything_optional() {
        let c = worker(&[]).unwrap();
        assert_eq!(c.crm_url, "http://127.0.0.1:6000");
        assert_eq!(c.tables.results, "failsoft-results");
        assert_eq!(c.tables.last_known, "failsoft-last-known");
        assert_eq!(c.concurrency, 32);
        assert_eq!(c.replay_rate_max, 200);
        assert_eq!(c.crm_rate_limit, None, "learned from the CRM's answers unless set");
        assert_eq!(c.breaker.cool_down_ms, 2_000);
        assert_eq!(c.receive_wait_secs, 20);
        assert_eq!(c.listen.port(), 8788);
        assert_eq!(c.operator_listen, SocketAddr::from(([127, 0, 0, 1], 8789)), "loopback unless set");
        assert_eq!(c.write_settle_ms, c.policy.crm_deadline_ms);
        assert!(!c.can_find_cases, "the two required calls are all a CRM must offer");
        assert!(c.alert.is_none() && c.edge_urls.is_empty() && c.emf_every.is_none());
        assert_eq!(c.outbox_drain_every, Some(Duration::from_secs(30)), "the edges' outboxes drained every 30 s");
        assert_eq!(worker(&[("FAILSOFT_EDGE_OUTBOX_DRAIN_SECS", "0")]).unwrap().outbox_drain_every, None);
        let e = worker(&[("FAILSOFT_EDGE_OUTBOX_DRAIN_SECS", "3601")]).err().unwrap();
        assert_eq!(e.setting, "FAILSOFT_EDGE_OUTBOX_DRAIN_SECS");
        assert_eq!(c.events, EventsConfig { url: None, api_key: None, api_key_header: "x-failsoft-api-key".into() });
        assert_eq!(c.lease_ms(), 40_000);
        assert!(!format!("{c:?}").contains("0123456789abcdef"), "the secret never prints");
    }

    #[test]
    fn names_the_setting_that_is_wrong() {
        let cases: [(&[(&str, &str)], &str); 20] = [
            (&[("FAILSOFT_CRM_RATE_LIMIT", "0")], "FAILSOFT_CRM_RATE_LIMIT"),
            (&[("FAILSOFT_CRM_RATE_LIMIT", "NaN")], "FAILSOFT_CRM_RATE_LIMIT"),
            (&[("FAILSOFT_OPERATOR_LISTEN", "localhost")], "FAILSOFT_OPERATOR_LISTEN"),
            (&[("FAILSOFT_OPERATOR_LISTEN", "127.0.0.1:8788")], "FAILSOFT_OPERATOR_LISTEN"),
            (
                &[("FAILSOFT_ORIGIN_LISTEN", "0.0.0.0:9000"), ("FAILSOFT_OPERATOR_LISTEN", "127.0.0.1:9000")],
                "FAILSOFT_OPERATOR_LISTEN",
            ),
            (&[("FAILSOFT_EMF", "maybe")], "FAILSOFT_EMF"),
            (&[("FAILSOFT_EMF", "1"), ("FAILSOFT_EMF_INTERVAL_SECS", "0")], "FAILSOFT_EMF_INTERVAL_SECS"),
            (&[("FAILSOFT_EVENTS_URL", "events.example.com")], "FAILSOFT_EVENTS_URL"),
            (&[("FAILSOFT_EVENTS_API_KEY", "short")], "FAILSOFT_EVENTS_API_KEY"),
            (&[("FAILSOFT_EVENTS_API_KEY_HEADER", "X Api Key")], "FAILSOFT_EVENTS_API_KEY_HEADER"),
            (&[("FAILSOFT_QUEUE_URL", "")], "FAILSOFT_QUEUE_URL"),
            (&[("FAILSOFT_QUEUE_URL", "http://h/1/standard-queue")], "FAILSOFT_QUEUE_URL"),
            (&[("FAILSOFT_DLQ_URL", "ftp://h/1/q.fifo")], "FAILSOFT_DLQ_URL"),
            (&[("FAILSOFT_INTERNAL_SECRET", "short")], "FAILSOFT_INTERNAL_SECRET"),
            (&[("FAILSOFT_WORKER_CONCURRENCY", "0")], "FAILSOFT_WORKER_CONCURRENCY"),
            (&[("FAILSOFT_RECEIVE_WAIT_SECS", "30")], "FAILSOFT_RECEIVE_WAIT_SECS"),
            (
                &[("FAILSOFT_ALERT_URL", "http://a"), ("FAILSOFT_ALERT_FORMAT", "pagerduty")],
                "FAILSOFT_ALERT_ROUTING_KEY",
            ),
            (&[("FAILSOFT_ALERT_URL", "http://a"), ("FAILSOFT_ALERT_FORMAT", "email")], "FAILSOFT_ALERT_FORMAT"),
            (&[("FAILSOFT_RESULTS_TABLE", "a b")], "FAILSOFT_RESULTS_TABLE"),
            (&[("FAILSOFT_VISIBILITY_TIMEOUT_SECS", "10")], "FAILSOFT_VISIBILITY_TIMEOUT_SECS"),
        ];
        for (pairs, setting) in cases {
            let err = worker(pairs).unwrap_err();
            assert_eq!(err.setting, setting, "{err}");
        }
    }

    #[test]
    fn both_listeners_may_pick_their_ports() {
        let c =
            worker(&[("FAILSOFT_ORIGIN_LISTEN", "127.0.0.1:0"), ("FAILSOFT_OPERATOR_LISTEN", "127.0.0.1:0")]).unwrap();
        assert_eq!((c.listen.port(), c.operator_listen.port()), (0, 0));
        let c = worker(&[("FAILSOFT_ORIGIN_LISTEN", "0.0.0.0:8788"), ("FAILSOFT_OPERATOR_LISTEN", "0.0.0.0:9100")])
            .unwrap();
        assert_eq!(c.operator_listen.port(), 9100);
    }

    #[test]
    fn emf_is_off_unless_asked_and_every_minute_by_default() {
        assert_eq!(worker(&[("FAILSOFT_EMF", "1")]).unwrap().emf_every, Some(Duration::from_secs(60)));
        let c = worker(&[("FAILSOFT_EMF", "true"), ("FAILSOFT_EMF_INTERVAL_SECS", "5")]).unwrap();
        assert_eq!(c.emf_every, Some(Duration::from_secs(5)));
        assert_eq!(worker(&[("FAILSOFT_EMF_INTERVAL_SECS", "5")]).unwrap().emf_every, None);
    }

    #[test]
    fn events_settings_parse_and_the_key_never_prints() {
        let c = worker(&[
            ("FAILSOFT_EVENTS_URL", "https://events.example.com/genesys/"),
            ("FAILSOFT_EVENTS_API_KEY", "an-eventbridge-connection-key"),
            ("FAILSOFT_EVENTS_API_KEY_HEADER", "X-Genesys-Key"),
        ])
        .unwrap();
        assert_eq!(c.events.url.as_deref(), Some("https://events.example.com/genesys"));
        assert_eq!(c.events.api_key_header, "x-genesys-key");
        assert!(!format!("{c:?}").contains("an-eventbridge-connection-key"));
    }

    #[test]
    fn alert_formats_parse() {
        let c = worker(&[
            ("FAILSOFT_ALERT_URL", "http://127.0.0.1:9/alerts"),
            ("FAILSOFT_ALERT_FORMAT", "OpsGenie"),
            ("FAILSOFT_ALERT_ROUTING_KEY", "key"),
        ])
        .unwrap();
        let alert = c.alert.unwrap();
        assert_eq!(alert.format, AlertFormat::Opsgenie);
        assert_eq!(alert.routing_key.unwrap().expose(), b"key");
    }
}
