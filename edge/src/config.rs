//! The edge's settings: the shared policy plus what only the facade needs
//! (where the CRM is, the secrets, the caller's credentials). Read once per
//! process (per isolate on Workers) through a lookup function and validated.

use failsoft_shared::config::{ConfigError, Policy, number};
use failsoft_shared::edge_stats::{DEFAULT_REPORT_EVERY_MS, MAX_REPORT_EVERY_MS, MIN_REPORT_EVERY_MS};

/// Shortest secret accepted: an HMAC key shorter than this is guessable.
pub use failsoft_shared::signature::MIN_SECRET_BYTES;

/// How Genesys authenticates to the facade (its Web Services Data Action
/// credentials: a bearer token, or Basic user name and password).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub bearer_token: Option<String>,
    pub basic: Option<(String, String)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "<redacted>"))
            .field("basic", &self.basic.as_ref().map(|(user, _)| (user, "<redacted>")))
            .finish()
    }
}

/// Everything the facade needs.
#[derive(Clone)]
pub struct EdgeConfig {
    pub policy: Policy,
    /// `FAILSOFT_CRM_URL`: base URL of the downstream REST API.
    pub crm_url: String,
    /// `FAILSOFT_CRM_MAPPING` (the document itself) or `FAILSOFT_CRM_PROFILE`
    /// (a shipped profile, default `generic`): how the CRM is spoken to, its
    /// secrets bound (`deploy/crm/`).
    pub crm_mapping: std::sync::Arc<failsoft_shared::mapping::Mapping>,
    /// `FAILSOFT_CACHE_KEY_SECRET`: HMAC key of cache keys and queue groups.
    pub cache_key_secret: Vec<u8>,
    /// `FAILSOFT_WEBHOOK_SECRET`: HMAC key of the CRM's change webhook.
    pub webhook_secret: Vec<u8>,
    /// `FAILSOFT_AUTH_TOKEN`, or `FAILSOFT_BASIC_USER` + `FAILSOFT_BASIC_PASSWORD`.
    pub credentials: Credentials,
    /// `FAILSOFT_INTERNAL_SECRET`: HMAC key of calls between the origin and
    /// the edge (cache pushes, result reads). Unset: the internal routes are off.
    pub internal_secret: Option<Vec<u8>>,
    /// `FAILSOFT_ORIGIN_URL`: where the result route reads write statuses
    /// (the origin's results API). Unset: the edge's own store answers.
    pub origin_url: Option<String>,
    /// `FAILSOFT_EDGE_STATS_EVERY_MS`: how much traffic time one report to
    /// the origin covers at most (see `failsoft_shared::edge_stats`).
    pub stats_every_ms: u64,
}

impl std::fmt::Debug for EdgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeConfig")
            .field("policy", &self.policy)
            .field("crm_url", &self.crm_url)
            .field("crm_mapping", &self.crm_mapping.name())
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

fn secret(lookup: &impl Fn(&str) -> Option<String>, setting: &'static str) -> Result<Vec<u8>, ConfigError> {
    // Trimmed as the origin trims it, so both sides sign with the same bytes.
    match lookup(setting).as_deref().map(failsoft_shared::signature::secret_from_setting) {
        Some(Some(secret)) => Ok(secret),
        Some(None) => Err(ConfigError::new(setting, format!("must be at least {MIN_SECRET_BYTES} bytes"))),
        None => Err(ConfigError::new(
            setting,
            "is required (a secret: set it in the environment, never in a file in the repo)",
        )),
    }
}

/// The fewest bytes of a credential Genesys presents (the bearer token, the
/// Basic password): the secrets' rule, so none is guessable.
pub const MIN_CREDENTIAL_BYTES: usize = 16;

/// A credential setting, trimmed as the secrets are; `None` when unset or
/// blank (Spin gives a declared variable's empty default).
fn credential(lookup: &impl Fn(&str) -> Option<String>, setting: &'static str) -> Result<Option<String>, ConfigError> {
    match lookup(setting) {
        None => Ok(None),
        Some(raw) if raw.trim().is_empty() => Ok(None),
        Some(raw) if raw.trim().len() >= MIN_CREDENTIAL_BYTES => Ok(Some(raw.trim().to_owned())),
        Some(_) => Err(ConfigError::new(
            setting,
            format!("must be at least {MIN_CREDENTIAL_BYTES} bytes (whitespace around it is trimmed)"),
        )),
    }
}

/// The CRM's mapping from `FAILSOFT_CRM_MAPPING`, `FAILSOFT_CRM_PROFILE` and
/// `FAILSOFT_CRM_CAN_FIND_CASES` (the search is the worker's; the edge only
/// checks the setting agrees with the mapping), the secrets it names read
/// through `lookup`.
fn crm_mapping(lookup: &impl Fn(&str) -> Option<String>) -> Result<failsoft_shared::mapping::Mapping, ConfigError> {
    let can_find_cases = match lookup("FAILSOFT_CRM_CAN_FIND_CASES").map(|v| v.trim().to_ascii_lowercase()) {
        None => None,
        Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Some(true),
        Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Some(false),
        Some(_) => return Err(ConfigError::new("FAILSOFT_CRM_CAN_FIND_CASES", "must be true or false")),
    };
    let document = lookup("FAILSOFT_CRM_MAPPING");
    let profile = lookup("FAILSOFT_CRM_PROFILE").map(|p| p.trim().to_owned());
    let from = failsoft_shared::mapping::Settings {
        profile: profile.as_deref(),
        document: document.as_deref(),
        can_find_cases,
    };
    failsoft_shared::mapping::load_text(from, lookup)
        .map_err(|e| ConfigError::new("FAILSOFT_CRM_MAPPING", e.to_string()))
}

impl EdgeConfig {
    /// Reads and validates every setting through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let lookup = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let policy = Policy::from_lookup(lookup)?;
        let crm_url = lookup("FAILSOFT_CRM_URL").ok_or_else(|| {
            ConfigError::new("FAILSOFT_CRM_URL", "is required: the base URL of the downstream CRM API")
        })?;
        if !(crm_url.starts_with("http://") || crm_url.starts_with("https://")) {
            return Err(ConfigError::new("FAILSOFT_CRM_URL", "must be an http:// or https:// URL"));
        }
        let credentials = Credentials {
            bearer_token: credential(&lookup, "FAILSOFT_AUTH_TOKEN")?,
            basic: match (
                lookup("FAILSOFT_BASIC_USER").filter(|user| !user.trim().is_empty()),
                credential(&lookup, "FAILSOFT_BASIC_PASSWORD")?,
            ) {
                (Some(user), Some(password)) => Some((user, password)),
                (None, None) => None,
                _ => {
                    return Err(ConfigError::new(
                        "FAILSOFT_BASIC_PASSWORD",
                        "FAILSOFT_BASIC_USER and FAILSOFT_BASIC_PASSWORD must be set together",
                    ));
                }
            },
        };
        if lookup("FAILSOFT_ORIGIN_URL").is_some() && lookup("FAILSOFT_INTERNAL_SECRET").is_none() {
            return Err(ConfigError::new(
                "FAILSOFT_INTERNAL_SECRET",
                "is required with FAILSOFT_ORIGIN_URL: calls to the origin are signed",
            ));
        }
        if credentials.bearer_token.is_none() && credentials.basic.is_none() {
            return Err(ConfigError::new(
                "FAILSOFT_AUTH_TOKEN",
                "set it, or FAILSOFT_BASIC_USER and FAILSOFT_BASIC_PASSWORD: the facade never runs open",
            ));
        }
        let crm_mapping = crm_mapping(&lookup)?;
        Ok(Self {
            policy,
            crm_url: crm_url.trim_end_matches('/').to_owned(),
            crm_mapping: std::sync::Arc::new(crm_mapping),
            cache_key_secret: secret(&lookup, "FAILSOFT_CACHE_KEY_SECRET")?,
            webhook_secret: secret(&lookup, "FAILSOFT_WEBHOOK_SECRET")?,
            credentials,
            internal_secret: match lookup("FAILSOFT_INTERNAL_SECRET") {
                Some(_) => Some(secret(&lookup, "FAILSOFT_INTERNAL_SECRET")?),
                None => None,
            },
            origin_url: match lookup("FAILSOFT_ORIGIN_URL") {
                Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                    Some(url.trim_end_matches('/').to_owned())
                }
                Some(_) => return Err(ConfigError::new("FAILSOFT_ORIGIN_URL", "must be an http:// or https:// URL")),
                None => None,
            },
            stats_every_ms: {
                const NAME: &str = "FAILSOFT_EDGE_STATS_EVERY_MS";
                let ms = number(&lookup, NAME, DEFAULT_REPORT_EVERY_MS)?;
                if !(MIN_REPORT_EVERY_MS..=MAX_REPORT_EVERY_MS).contains(&ms) {
                    let range = format!("must be milliseconds from {MIN_REPORT_EVERY_MS} to {MAX_REPORT_EVERY_MS}");
                    return Err(ConfigError::new(NAME, range));
                }
                ms
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    const BASE: [(&str, &str); 4] = [
        ("FAILSOFT_CRM_URL", "http://127.0.0.1:9/"),
        ("FAILSOFT_CACHE_KEY_SECRET", "0123456789abcdef0123"),
        ("FAILSOFT_WEBHOOK_SECRET", "fedcba9876543210fedc"),
        ("FAILSOFT_AUTH_TOKEN", "bearer-token-0123456789"),
    ];

    #[test]
    fn reads_a_complete_configuration() {
        let c = EdgeConfig::from_lookup(lookup(&BASE)).unwrap();
        assert_eq!(c.crm_url, "http://127.0.0.1:9");
        assert_eq!(c.credentials.bearer_token.as_deref(), Some("bearer-token-0123456789"));
        assert!(!format!("{c:?}").contains("0123456789\""), "secrets stay out of Debug");
    }

    #[test]
    fn names_what_is_missing_or_weak() {
        for (drop, setting) in [
            ("FAILSOFT_CRM_URL", "FAILSOFT_CRM_URL"),
            ("FAILSOFT_CACHE_KEY_SECRET", "FAILSOFT_CACHE_KEY_SECRET"),
            ("FAILSOFT_AUTH_TOKEN", "FAILSOFT_AUTH_TOKEN"),
        ] {
            let pairs: Vec<(&str, &str)> = BASE.iter().copied().filter(|(k, _)| *k != drop).collect();
            assert_eq!(EdgeConfig::from_lookup(lookup(&pairs)).unwrap_err().setting, setting);
        }
        let mut weak = BASE.to_vec();
        weak[1].1 = "short";
        assert_eq!(EdgeConfig::from_lookup(lookup(&weak)).unwrap_err().setting, "FAILSOFT_CACHE_KEY_SECRET");
        // Padding does not count towards the 16 bytes, and is not part of the
        // key: the origin trims it the same way.
        weak[1].1 = "  0123456789abcde\n";
        assert_eq!(EdgeConfig::from_lookup(lookup(&weak)).unwrap_err().setting, "FAILSOFT_CACHE_KEY_SECRET");
        let mut padded = BASE.to_vec();
        padded.push(("FAILSOFT_INTERNAL_SECRET", " internal-secret-0123\n"));
        let config = EdgeConfig::from_lookup(lookup(&padded)).unwrap();
        assert_eq!(config.internal_secret.as_deref(), Some(&b"internal-secret-0123"[..]));
        // Credentials Genesys presents: 16 bytes at least, trimmed.
        let mut short_token = BASE.to_vec();
        short_token[3].1 = " 0123456789abcde ";
        assert_eq!(EdgeConfig::from_lookup(lookup(&short_token)).unwrap_err().setting, "FAILSOFT_AUTH_TOKEN");
        short_token[3].1 = " 0123456789abcdef\n";
        let config = EdgeConfig::from_lookup(lookup(&short_token)).unwrap();
        assert_eq!(config.credentials.bearer_token.as_deref(), Some("0123456789abcdef"));
        let mut short_basic = BASE.to_vec();
        short_basic.extend([("FAILSOFT_BASIC_USER", "genesys"), ("FAILSOFT_BASIC_PASSWORD", "hunter2")]);
        assert_eq!(EdgeConfig::from_lookup(lookup(&short_basic)).unwrap_err().setting, "FAILSOFT_BASIC_PASSWORD");
        // Spin hands a declared variable's empty default: blank is unset,
        // never an empty user and password that anyone could present.
        let mut blank_basic = BASE.to_vec();
        blank_basic.extend([("FAILSOFT_BASIC_USER", ""), ("FAILSOFT_BASIC_PASSWORD", " ")]);
        assert!(EdgeConfig::from_lookup(lookup(&blank_basic)).unwrap().credentials.basic.is_none());
        let mut half_basic = BASE.to_vec();
        half_basic.push(("FAILSOFT_BASIC_USER", "genesys"));
        assert_eq!(EdgeConfig::from_lookup(lookup(&half_basic)).unwrap_err().setting, "FAILSOFT_BASIC_PASSWORD");
        let mut bad_deadline = BASE.to_vec();
        bad_deadline.push(("FAILSOFT_CRM_DEADLINE_MS", "9800"));
        assert_eq!(EdgeConfig::from_lookup(lookup(&bad_deadline)).unwrap_err().setting, "FAILSOFT_CRM_DEADLINE_MS");
        for bad in ["50", "600000", "soon"] {
            let mut stats = BASE.to_vec();
            stats.push(("FAILSOFT_EDGE_STATS_EVERY_MS", bad));
            assert_eq!(EdgeConfig::from_lookup(lookup(&stats)).unwrap_err().setting, "FAILSOFT_EDGE_STATS_EVERY_MS");
        }
    }
}
