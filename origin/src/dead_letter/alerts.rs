//! Dead-letter alerts to PagerDuty (Events API v2), Opsgenie, or a plain
//! JSON webhook. The dedup key is the correlationId, so a message
//! dead-lettered twice pages once.
//!
//! Sending happens in a background task fed through a bounded queue: a
//! slow or failing alert endpoint is retried with backoff there and never
//! holds up the worker. An alert carries ids, classes and times only:
//! never a phone number, never the message's payload.

use std::time::Duration;

use failsoft_shared::backoff::Backoff;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::clock;
use crate::config::{AlertFormat, AlertTarget};

/// Alerts waiting to be sent. Past this the newest are dropped (and logged):
/// a dead-letter storm must not grow the worker's memory without bound, and
/// a thousand pages are as actionable as ten thousand.
pub const QUEUE_CAPACITY: usize = 1_000;
/// Tries per alert before giving up on it (about 8 minutes of backoff).
const MAX_TRIES: u32 = 10;
const RETRY_BACKOFF: Backoff = Backoff { base_ms: 500, cap_ms: 60_000 };
/// Bound on one POST to the alert endpoint.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// `source` of PagerDuty events and Opsgenie alerts.
const SOURCE: &str = "failsoft-origin";

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub correlation_id: String,
    pub kind: String,
    pub reason: String,
    pub error_class: String,
    pub last_status: Option<u16>,
    pub attempts: u32,
    pub first_attempt_at_ms: u64,
    pub last_attempt_at_ms: u64,
    pub queue_message_id: String,
}

impl Alert {
    fn summary(&self) -> String {
        if self.error_class == crate::access::ERROR_CLASS {
            return format!("failsoft: AWS refused {} (a configuration error: fix the IAM policy)", self.reason);
        }
        if self.error_class == crate::notifications::outbox::PARKED_CLASS {
            return format!(
                "failsoft parked a Genesys {} SQS will never take ({}): {}; reconcile it from Genesys",
                self.kind, self.reason, self.correlation_id
            );
        }
        format!("failsoft dead-lettered a {} ({}): {}", self.kind, self.reason, self.correlation_id)
    }
}

/// The request body for `format`.
pub fn body(format: AlertFormat, alert: &Alert, routing_key: Option<&str>) -> Value {
    let details = serde_json::to_value(alert).unwrap_or(Value::Null);
    match format {
        AlertFormat::PagerDuty => json!({
            "routing_key": routing_key.unwrap_or_default(),
            "event_action": "trigger",
            "dedup_key": alert.correlation_id,
            "payload": {
                "summary": alert.summary(),
                "source": SOURCE,
                "severity": "error",
                "component": "origin-worker",
                "class": alert.error_class,
                "custom_details": details,
            },
        }),
        AlertFormat::Opsgenie => {
            // Opsgenie's details are a map of strings, its message at most 130 characters.
            let details: serde_json::Map<String, Value> = details
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), Value::String(v.as_str().map_or_else(|| v.to_string(), str::to_owned))))
                .collect();
            json!({
                "message": alert.summary().chars().take(130).collect::<String>(),
                "alias": alert.correlation_id,
                "description": format!(
                    "A {} could not be delivered to the CRM and was moved to the dead-letter queue. Reason: {}; error class: {}; attempts: {}. Replay it with `failsoft dlq replay {}` once the cause is fixed.",
                    alert.kind, alert.reason, alert.error_class, alert.attempts, alert.correlation_id
                ),
                "priority": "P2",
                "source": SOURCE,
                "tags": ["failsoft", "dead-letter"],
                "details": details,
            })
        }
        AlertFormat::Webhook => json!({
            "event": match alert.error_class.as_str() {
                crate::access::ERROR_CLASS => "access_denied",
                crate::notifications::outbox::PARKED_CLASS => "parked",
                _ => "dead_letter",
            },
            "dedupKey": alert.correlation_id,
            "summary": alert.summary(),
            "alert": details,
        }),
    }
}

/// The worker's handle: enqueue an alert without waiting.
#[derive(Clone)]
pub struct Alerts {
    tx: Option<mpsc::Sender<Alert>>,
}

impl Alerts {
    /// No alert target: dead-letters are only logged.
    pub fn disabled() -> Self {
        Self { tx: None }
    }

    /// Starts the sender task; it ends once every handle is dropped and the
    /// queue is drained (or given up on).
    pub fn start(target: AlertTarget, http: reqwest::Client) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let task = tokio::spawn(run(target, http, rx));
        (Self { tx: Some(tx) }, task)
    }

    pub fn raise(&self, alert: Alert) {
        let Some(tx) = &self.tx else { return };
        if let Err(e) = tx.try_send(alert) {
            let correlation_id = match &e {
                mpsc::error::TrySendError::Full(a) | mpsc::error::TrySendError::Closed(a) => a.correlation_id.clone(),
            };
            tracing::error!(%correlation_id, "alert queue full or closed; this dead-letter is not alerted");
        }
    }
}

async fn run(target: AlertTarget, http: reqwest::Client, mut rx: mpsc::Receiver<Alert>) {
    while let Some(alert) = rx.recv().await {
        deliver(&target, &http, &alert).await;
    }
}

/// Sends one alert, retrying transient failures with full-jitter backoff.
async fn deliver(target: &AlertTarget, http: &reqwest::Client, alert: &Alert) {
    let key = target.routing_key.as_ref().map(|k| String::from_utf8_lossy(k.expose()).into_owned());
    let payload = body(target.format, alert, key.as_deref());
    for attempt in 0..MAX_TRIES {
        let mut request = http.post(&target.url).timeout(SEND_TIMEOUT).json(&payload);
        match (target.format, key.as_deref()) {
            (AlertFormat::Opsgenie, Some(k)) => request = request.header("authorization", format!("GenieKey {k}")),
            (AlertFormat::Webhook, Some(k)) => request = request.bearer_auth(k),
            _ => {}
        }
        let retry = match request.send().await {
            Ok(resp) if resp.status().is_success() => {
                tracing::info!(correlation_id = %alert.correlation_id, "dead-letter alert sent");
                return;
            }
            Ok(resp) => {
                let status = resp.status().as_u16();
                tracing::warn!(correlation_id = %alert.correlation_id, status, attempt, "alert endpoint refused");
                status == 429 || status >= 500
            }
            Err(e) => {
                tracing::warn!(correlation_id = %alert.correlation_id, error = %e, attempt, "alert endpoint unreachable");
                true
            }
        };
        if !retry {
            break;
        }
        let delay = RETRY_BACKOFF.delay_ms(attempt, clock::random_u64()).max(RETRY_BACKOFF.base_ms / 2);
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    tracing::error!(correlation_id = %alert.correlation_id, "dead-letter alert given up");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        Alert {
            correlation_id: "corr-1".into(),
            kind: "write".into(),
            reason: "CRM_REJECTED_422".into(),
            error_class: "permanent".into(),
            last_status: Some(422),
            attempts: 1,
            first_attempt_at_ms: 10,
            last_attempt_at_ms: 20,
            queue_message_id: "m-1".into(),
        }
    }

    #[test]
    fn pagerduty_events_v2_shape() {
        let b = body(AlertFormat::PagerDuty, &alert(), Some("R0UTING"));
        assert_eq!(b["routing_key"], "R0UTING");
        assert_eq!(b["event_action"], "trigger");
        assert_eq!(b["dedup_key"], "corr-1");
        assert_eq!(b["payload"]["severity"], "error");
        assert_eq!(b["payload"]["source"], SOURCE);
        assert_eq!(b["payload"]["custom_details"]["lastStatus"], 422);
        assert!(b["payload"]["summary"].as_str().unwrap().contains("CRM_REJECTED_422"));
    }

    #[test]
    fn opsgenie_shape_has_string_details_and_a_short_message() {
        let mut a = alert();
        a.correlation_id = "x".repeat(64);
        let b = body(AlertFormat::Opsgenie, &a, Some("k"));
        assert_eq!(b["alias"], a.correlation_id);
        assert_eq!(b["priority"], "P2");
        assert!(b["message"].as_str().unwrap().chars().count() <= 130);
        assert_eq!(b["details"]["lastStatus"], "422");
        assert_eq!(b["details"]["reason"], "CRM_REJECTED_422");
    }

    #[test]
    fn webhook_shape() {
        let b = body(AlertFormat::Webhook, &alert(), None);
        assert_eq!(b["event"], "dead_letter");
        assert_eq!(b["dedupKey"], "corr-1");
        assert_eq!(b["alert"]["attempts"], 1);
    }
}
