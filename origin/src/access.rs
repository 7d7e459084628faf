//! A call AWS refused for want of permission (`AccessDenied`,
//! `AccessDeniedException`, `UnauthorizedOperation`, a bad or unknown key,
//! or any 403) is a configuration error, not a transient one: retrying
//! cannot fix a policy, and the CRM is not to blame. So it is
//!
//! - logged at error level once per action and resource, both named, with
//!   what to fix (later denials of the same pair are counted, not logged);
//! - shown on `/v1/health`: the level is `critical` and
//!   `configuration.accessDenied` lists the pairs while a denial is at most [`DENIAL_WINDOW`] old;
//! - alerted once per pair, through the dead-letter alert target
//!   (`error_class` `access_denied`), when one is configured;
//! - and the message is handed back as it is ([`crate::deliver::delivery`]:
//!   deferred, no failed attempt counted, never dead-lettered for it), to be
//!   delivered once the policy is fixed.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use serde_json::{Value, json};

use crate::clock;
use crate::dead_letter::alerts::{Alert, Alerts};

/// A pair stays on `/v1/health` this long after its last denial.
pub const DENIAL_WINDOW: Duration = Duration::from_secs(300);
/// How long a message whose delivery was denied waits before it is tried
/// again: a policy is not fixed in seconds, and every try is logged.
pub const DENIED_RETRY_MS: u64 = 30_000;

/// Error codes that mean "this identity may not do this" (or is not one).
const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnauthorizedException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "MissingAuthenticationToken",
    "KMS.AccessDeniedException",
];

/// Whether an error code or HTTP status says the call was not authorised.
pub fn is_denial(code: Option<&str>, status: Option<u16>) -> bool {
    status == Some(403) || code.is_some_and(|c| DENIED_CODES.contains(&c))
}

/// Whether an SDK error is a denial.
pub fn is_denied<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    let code = e.as_service_error().and_then(|se| se.code());
    let status = e.raw_response().map(|r| r.status().as_u16());
    is_denial(code, status)
}

#[derive(Debug, Clone)]
struct Denial {
    first: Instant,
    last: Instant,
    count: u64,
    last_at_ms: u64,
    error: String,
}

static DENIALS: Mutex<BTreeMap<(String, String), Denial>> = Mutex::new(BTreeMap::new());
static ALERTS: OnceLock<Alerts> = OnceLock::new();

fn lock() -> std::sync::MutexGuard<'static, BTreeMap<(String, String), Denial>> {
    DENIALS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where denials are alerted (the worker's alert target); set once.
pub fn alert_to(alerts: Alerts) {
    let _ = ALERTS.set(alerts);
}

/// If `e` is a denial of `action` (e.g. `sqs:DeleteMessage`) on `resource`
/// (a queue URL or table name), records it (see the module) and says so.
pub fn check<E>(action: &str, resource: &str, e: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if !is_denied(e) {
        return false;
    }
    let error = DisplayErrorContext(e).to_string();
    // AWS names the resource it refused ("… on resource: arn:…"): of a
    // batch over two tables, the one denied.
    let named = error.split("on resource: ").nth(1).and_then(|rest| rest.split_whitespace().next());
    record(action, named.map_or(resource, |r| r.trim_end_matches(['.', '"', ','])), &error);
    true
}

/// Records a denial of `action` on `resource`.
pub fn record(action: &str, resource: &str, error: &str) {
    let now = Instant::now();
    let first_time = {
        let mut denials = lock();
        let key = (action.to_owned(), resource.to_owned());
        match denials.get_mut(&key) {
            Some(d) => {
                d.last = now;
                d.count += 1;
                d.last_at_ms = clock::now_ms();
                d.error = error.to_owned();
                false
            }
            None => {
                let at = clock::now_ms();
                denials
                    .insert(key, Denial { first: now, last: now, count: 1, last_at_ms: at, error: error.to_owned() });
                true
            }
        }
    };
    if !first_time {
        tracing::debug!(action, resource, "AWS denied it again");
        return;
    }
    tracing::error!(
        action,
        resource,
        error,
        "AWS denied {action} on {resource}: a configuration error, not a transient one; grant {action} on it to this \
         identity (deploy/aws/failsoft.yaml). Messages that need it are handed back until then"
    );
    if let Some(alerts) = ALERTS.get() {
        let now_ms = clock::now_ms();
        alerts.raise(Alert {
            correlation_id: format!("access-denied:{action}:{resource}"),
            kind: "configuration".to_owned(),
            reason: format!("ACCESS_DENIED {action} on {resource}"),
            error_class: ERROR_CLASS.to_owned(),
            last_status: Some(403),
            attempts: 1,
            first_attempt_at_ms: now_ms,
            last_attempt_at_ms: now_ms,
            queue_message_id: String::new(),
        });
    }
}

/// `error_class` of a denial's alert.
pub const ERROR_CLASS: &str = "access_denied";

/// The pairs denied within [`DENIAL_WINDOW`], for `/v1/health`.
pub fn recent() -> Vec<Value> {
    let mut denials = lock();
    denials.retain(|_, d| d.last.elapsed() <= DENIAL_WINDOW);
    denials
        .iter()
        .map(|((action, resource), d)| {
            json!({
                "action": action,
                "resource": resource,
                "count": d.count,
                "firstSecondsAgo": d.first.elapsed().as_secs(),
                "lastAtMs": d.last_at_ms,
                "error": d.error,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_are_403s_and_the_access_codes() {
        assert!(is_denial(None, Some(403)));
        assert!(is_denial(Some("AccessDenied"), Some(400)));
        assert!(is_denial(Some("AccessDeniedException"), None));
        assert!(is_denial(Some("UnauthorizedOperation"), None));
        assert!(is_denial(Some("UnrecognizedClientException"), Some(400)));
        assert!(!is_denial(Some("ThrottlingException"), Some(400)));
        assert!(!is_denial(Some("ConditionalCheckFailedException"), Some(400)));
        assert!(!is_denial(None, Some(500)));
        assert!(!is_denial(None, None));
    }

    #[test]
    fn a_pair_is_listed_once_however_often_denied() {
        record("sqs:Test", "queue-a", "403");
        record("sqs:Test", "queue-a", "403 again");
        record("sqs:Test", "queue-b", "403");
        let listed: Vec<Value> = recent().into_iter().filter(|d| d["action"] == "sqs:Test").collect();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert_eq!(listed[0]["resource"], "queue-a");
        assert_eq!(listed[0]["count"], 2);
        assert_eq!(listed[0]["error"], "403 again");
    }
}
