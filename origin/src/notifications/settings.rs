//! What `failsoft notifications` needs, read from the environment and
//! validated before anything connects.
//!
//! Every timing is a setting so the tests can compress a day of channel
//! life into seconds; the defaults are Genesys Cloud's own numbers.

use std::time::Duration;

use failsoft_shared::backoff::Backoff;
use failsoft_shared::config::{ConfigError, check_backoff, number};

use crate::config::{AlertTarget, Lookup, Secret, alert, fifo_queue_url, http_url, required, text};

/// The Notification Service's limit of topics on one channel.
pub const MAX_TOPICS: usize = 1000;
/// Genesys sends a heartbeat every 30 s; 2.5 of them missed is a dead
/// socket, not a slow one.
const HEARTBEAT_TIMEOUT_MS: u64 = 75_000;
/// A channel lives 24 h; renewing 10 min early leaves room for a few
/// failed attempts (and their backoff) before it is gone.
const CHANNEL_RENEW_MARGIN_MS: u64 = 600_000;
/// Tokens live about 24 h too; 5 min early leaves room for retries.
const TOKEN_REFRESH_MARGIN_MS: u64 = 300_000;
/// Events held while SQS is unreachable. A busy org sends a few hundred a
/// minute: this covers several minutes of SQS outage in bounded memory.
const BUFFER_DEFAULT: usize = 10_000;

/// The regions of Genesys Cloud (the domain of `login.` and `api.`).
pub const REGIONS: &[&str] = &[
    "mypurecloud.com",
    "use2.us-gov-pure.cloud",
    "usw2.pure.cloud",
    "cac1.pure.cloud",
    "sae1.pure.cloud",
    "mypurecloud.ie",
    "euw2.pure.cloud",
    "mypurecloud.de",
    "euc2.pure.cloud",
    "mec1.pure.cloud",
    "aps1.pure.cloud",
    "apne2.pure.cloud",
    "apne3.pure.cloud",
    "mypurecloud.com.au",
    "mypurecloud.jp",
];

/// The settings of the Notification Service consumer.
#[derive(Debug, Clone)]
pub struct NotificationSettings {
    /// `GENESYS_LOGIN_URL`, or `https://login.{GENESYS_REGION}`.
    pub login_url: String,
    /// `GENESYS_API_URL`, or `https://api.{GENESYS_REGION}`.
    pub api_url: String,
    /// `GENESYS_CLIENT_ID`: an OAuth client with the client-credentials grant.
    pub client_id: String,
    /// `GENESYS_CLIENT_SECRET`: never logged.
    pub client_secret: Secret,
    /// `FAILSOFT_NOTIFICATION_TOPICS`: comma-separated, 1 to 1000.
    pub topics: Vec<String>,
    /// `FAILSOFT_QUEUE_URL`: the FIFO work queue the events go to.
    pub queue_url: String,
    /// `FAILSOFT_NOTIFICATION_HEARTBEAT_TIMEOUT_MS`: silence after which
    /// the socket is taken for dead and replaced (default 75 000).
    pub heartbeat_timeout: Duration,
    /// `FAILSOFT_NOTIFICATION_CHANNEL_RENEW_MARGIN_MS`: how long before its
    /// `expires` a channel is replaced (default 600 000).
    pub channel_renew_margin: Duration,
    /// `FAILSOFT_NOTIFICATION_TOKEN_REFRESH_MARGIN_MS`: how long before its
    /// `expires_in` runs out a token is replaced (default 300 000).
    pub token_refresh_margin: Duration,
    /// `FAILSOFT_NOTIFICATION_BACKOFF_BASE_MS` / `…_CAP_MS`: full-jitter
    /// backoff between reconnects and SQS retries (default 1 s .. 60 s).
    pub backoff: Backoff,
    /// `FAILSOFT_NOTIFICATION_BUFFER`: events held while SQS refuses them.
    pub buffer: usize,
    /// `FAILSOFT_NOTIFICATION_FLUSH_SECS`: how long SIGTERM waits for the
    /// buffer to reach SQS (default 10).
    pub flush: Duration,
    /// `FAILSOFT_NOTIFICATION_HTTP_TIMEOUT_MS`: one Genesys API call or
    /// WebSocket handshake (default 10 000).
    pub http_timeout: Duration,
    /// `FAILSOFT_ALERT_URL` and friends, as the worker's: an event SQS will
    /// never take is parked with an alert; unset, it is logged and counted.
    pub alert: Option<AlertTarget>,
}

fn millis(lookup: Lookup<'_>, name: &'static str, default: u64, min: u64, max: u64) -> Result<Duration, ConfigError> {
    let ms = number(&lookup, name, default)?;
    if !(min..=max).contains(&ms) {
        return Err(ConfigError::new(name, format!("must be between {min} and {max} milliseconds")));
    }
    Ok(Duration::from_millis(ms))
}

fn urls(lookup: Lookup<'_>) -> Result<(String, String), ConfigError> {
    let login = text(lookup, "GENESYS_LOGIN_URL").map(|u| http_url("GENESYS_LOGIN_URL", u)).transpose()?;
    let api = text(lookup, "GENESYS_API_URL").map(|u| http_url("GENESYS_API_URL", u)).transpose()?;
    if let (Some(login), Some(api)) = (&login, &api) {
        return Ok((login.clone(), api.clone()));
    }
    let Some(region) = text(lookup, "GENESYS_REGION") else {
        return Err(ConfigError::new(
            "GENESYS_REGION",
            "is required (e.g. mypurecloud.com), unless GENESYS_LOGIN_URL and GENESYS_API_URL are both set",
        ));
    };
    let region = region.to_ascii_lowercase();
    if !REGIONS.contains(&region.as_str()) {
        return Err(ConfigError::new("GENESYS_REGION", format!("must be one of {}", REGIONS.join(", "))));
    }
    Ok((login.unwrap_or_else(|| format!("https://login.{region}")), api.unwrap_or(format!("https://api.{region}"))))
}

fn topics(lookup: Lookup<'_>) -> Result<Vec<String>, ConfigError> {
    const NAME: &str = "FAILSOFT_NOTIFICATION_TOPICS";
    let mut topics: Vec<String> = Vec::new();
    for topic in required(lookup, NAME)?.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if topic.chars().any(|c| c.is_whitespace() || c.is_control()) || !topic.contains('.') {
            return Err(ConfigError::new(NAME, format!("`{topic}` is not a topic such as v2.users.{{id}}.presence")));
        }
        if !topics.iter().any(|t| t == topic) {
            topics.push(topic.to_owned());
        }
    }
    if topics.is_empty() || topics.len() > MAX_TOPICS {
        return Err(ConfigError::new(NAME, format!("must name 1 to {MAX_TOPICS} topics (one channel's limit)")));
    }
    Ok(topics)
}

impl NotificationSettings {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let lookup: Lookup<'_> = &lookup;
        let (login_url, api_url) = urls(lookup)?;
        let base_ms = number(&lookup, "FAILSOFT_NOTIFICATION_BACKOFF_BASE_MS", 1_000u64)?;
        let cap_ms = number(&lookup, "FAILSOFT_NOTIFICATION_BACKOFF_CAP_MS", 60_000u64)?;
        let backoff = Backoff { base_ms, cap_ms };
        check_backoff(
            &backoff,
            ["FAILSOFT_NOTIFICATION_BACKOFF_BASE_MS", "FAILSOFT_NOTIFICATION_BACKOFF_CAP_MS"],
            3_600_000,
            "an hour",
        )?;
        let buffer = number(&lookup, "FAILSOFT_NOTIFICATION_BUFFER", BUFFER_DEFAULT)?;
        if !(1..=1_000_000).contains(&buffer) {
            return Err(ConfigError::new("FAILSOFT_NOTIFICATION_BUFFER", "must be between 1 and 1000000 events"));
        }
        let flush_secs = number(&lookup, "FAILSOFT_NOTIFICATION_FLUSH_SECS", 10u64)?;
        if flush_secs > 600 {
            return Err(ConfigError::new("FAILSOFT_NOTIFICATION_FLUSH_SECS", "must be at most 600"));
        }
        Ok(Self {
            login_url,
            api_url,
            client_id: required(lookup, "GENESYS_CLIENT_ID")?,
            client_secret: Secret::new(required(lookup, "GENESYS_CLIENT_SECRET")?.into_bytes()),
            topics: topics(lookup)?,
            queue_url: fifo_queue_url(lookup, "FAILSOFT_QUEUE_URL")?,
            heartbeat_timeout: millis(
                lookup,
                "FAILSOFT_NOTIFICATION_HEARTBEAT_TIMEOUT_MS",
                HEARTBEAT_TIMEOUT_MS,
                100,
                3_600_000,
            )?,
            channel_renew_margin: millis(
                lookup,
                "FAILSOFT_NOTIFICATION_CHANNEL_RENEW_MARGIN_MS",
                CHANNEL_RENEW_MARGIN_MS,
                0,
                12 * 3_600_000,
            )?,
            token_refresh_margin: millis(
                lookup,
                "FAILSOFT_NOTIFICATION_TOKEN_REFRESH_MARGIN_MS",
                TOKEN_REFRESH_MARGIN_MS,
                0,
                12 * 3_600_000,
            )?,
            backoff,
            buffer,
            flush: Duration::from_secs(flush_secs),
            http_timeout: millis(lookup, "FAILSOFT_NOTIFICATION_HTTP_TIMEOUT_MS", 10_000, 100, 120_000)?,
            alert: alert(lookup)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<NotificationSettings, ConfigError> {
        let mut env: HashMap<String, String> = [
            ("GENESYS_REGION", "mypurecloud.ie"),
            ("GENESYS_CLIENT_ID", "client"),
            ("GENESYS_CLIENT_SECRET", "not-a-real-secret"),
            ("FAILSOFT_NOTIFICATION_TOPICS", "v2.users.a.presence, v2.users.b.presence,v2.users.a.presence"),
            ("FAILSOFT_QUEUE_URL", "http://127.0.0.1:5000/000000000000/failsoft.fifo"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in pairs {
            env.insert(k.to_string(), v.to_string());
        }
        NotificationSettings::from_lookup(|name| env.get(name).cloned())
    }

    #[test]
    fn a_region_names_its_login_and_api_hosts() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.login_url, "https://login.mypurecloud.ie");
        assert_eq!(s.api_url, "https://api.mypurecloud.ie");
        assert_eq!(s.topics, ["v2.users.a.presence", "v2.users.b.presence"], "trimmed and deduplicated");
        assert_eq!(s.heartbeat_timeout, Duration::from_secs(75));
        assert!(!format!("{s:?}").contains("not-a-real-secret"), "the secret never shows");
    }

    #[test]
    fn explicit_urls_win_over_the_region() {
        let s = settings(&[
            ("GENESYS_REGION", ""),
            ("GENESYS_LOGIN_URL", "http://127.0.0.1:9/"),
            ("GENESYS_API_URL", "http://127.0.0.1:9"),
        ])
        .unwrap();
        assert_eq!((s.login_url.as_str(), s.api_url.as_str()), ("http://127.0.0.1:9", "http://127.0.0.1:9"));
    }

    #[test]
    fn unusable_settings_are_refused_by_name() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("GENESYS_REGION", "example.com")], "GENESYS_REGION"),
            (&[("GENESYS_CLIENT_SECRET", " ")], "GENESYS_CLIENT_SECRET"),
            (&[("FAILSOFT_NOTIFICATION_TOPICS", " , ")], "FAILSOFT_NOTIFICATION_TOPICS"),
            (&[("FAILSOFT_NOTIFICATION_TOPICS", "presence")], "FAILSOFT_NOTIFICATION_TOPICS"),
            (&[("FAILSOFT_QUEUE_URL", "http://127.0.0.1:5000/q")], "FAILSOFT_QUEUE_URL"),
            (&[("FAILSOFT_NOTIFICATION_HEARTBEAT_TIMEOUT_MS", "5")], "FAILSOFT_NOTIFICATION_HEARTBEAT_TIMEOUT_MS"),
            (&[("FAILSOFT_NOTIFICATION_BACKOFF_CAP_MS", "10")], "FAILSOFT_NOTIFICATION_BACKOFF_CAP_MS"),
            (&[("FAILSOFT_NOTIFICATION_BACKOFF_CAP_MS", "3600001")], "FAILSOFT_NOTIFICATION_BACKOFF_CAP_MS"),
            (&[("FAILSOFT_NOTIFICATION_BACKOFF_BASE_MS", "0")], "FAILSOFT_NOTIFICATION_BACKOFF_BASE_MS"),
            (&[("FAILSOFT_NOTIFICATION_BUFFER", "0")], "FAILSOFT_NOTIFICATION_BUFFER"),
        ];
        for (pairs, name) in cases {
            assert_eq!(settings(pairs).unwrap_err().setting, *name, "{pairs:?}");
        }
        let many = (0..=MAX_TOPICS).map(|i| format!("v2.users.{i}.presence")).collect::<Vec<_>>().join(",");
        assert!(settings(&[("FAILSOFT_NOTIFICATION_TOPICS", &many)]).is_err(), "over one channel's limit");
    }
}
