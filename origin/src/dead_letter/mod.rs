//! Moving a message that cannot be delivered to the dead-letter queue: the
//! original body, with attributes that say why, then `FAILED` in the results
//! table, then the delete from the work queue, then the alert.
//!
//! The order makes a crash at any point safe: the DLQ copy exists before the
//! original goes, and a message seen again after a crash finds its result
//! `FAILED` and is only deleted. The DLQ deduplication id is the
//! correlationId plus the work queue's message id: a crash-and-retry of the
//! same message is deduplicated, while the same correlationId failing again
//! after a replay (inside SQS's 5-minute window) is not silently dropped.

pub mod alerts;
pub mod redact;
pub mod tool;

use std::collections::HashMap;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::MessageAttributeValue;

use crate::clock;
use crate::dead_letter::alerts::{Alert, Alerts};
use crate::deliver::delivery::DeadLetter;
use crate::queue::received::Received;
use crate::store::results::Store;

/// Attribute names on DLQ messages (`failsoft dlq show` prints them).
pub mod attr {
    pub const ERROR_CLASS: &str = "errorClass";
    pub const LAST_STATUS: &str = "lastStatus";
    pub const ATTEMPTS: &str = "attempts";
    pub const FIRST_ATTEMPT_AT: &str = "firstAttemptAt";
    pub const LAST_ATTEMPT_AT: &str = "lastAttemptAt";
    pub const REASON: &str = "reason";
    pub const CORRELATION_ID: &str = "correlationId";
    pub const KIND: &str = "kind";
    pub const SOURCE_MESSAGE_ID: &str = "sourceMessageId";
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("sending to the dead-letter queue failed: {0}")]
    Send(String),
    #[error("deleting the original failed (the DLQ copy exists): {0}")]
    Delete(String),
    /// AWS refused the call (crate::access logged it, once): the message
    /// returns to the queue.
    #[error("AWS denied {0}")]
    Denied(&'static str),
}

/// Where dead letters go.
#[derive(Clone)]
pub struct DeadLetters {
    pub sqs: Client,
    pub queue_url: String,
    pub dlq_url: String,
    pub store: Store,
    pub alerts: Alerts,
}

fn string(value: impl Into<String>) -> Option<MessageAttributeValue> {
    MessageAttributeValue::builder().data_type("String").string_value(value).build().ok()
}

fn number(value: u64) -> Option<MessageAttributeValue> {
    MessageAttributeValue::builder().data_type("Number").string_value(value.to_string()).build().ok()
}

/// The DLQ deduplication id: at most 128 characters.
pub fn dedup_id(correlation_id: Option<&str>, message_id: &str) -> String {
    let id = match correlation_id {
        Some(c) => format!("{c}.{message_id}"),
        None => message_id.to_owned(),
    };
    id.chars().take(128).collect()
}

impl DeadLetters {
    /// Dead-letters `message` for `why`.
    pub async fn send(&self, message: &Received, why: &DeadLetter) -> Result<(), DeadLetterError> {
        let now = clock::now_ms();
        let first = message.first_received_ms.unwrap_or(now);
        let mut attributes: HashMap<String, MessageAttributeValue> = HashMap::new();
        let mut put = |name: &str, value: Option<MessageAttributeValue>| {
            if let Some(value) = value {
                attributes.insert(name.to_owned(), value);
            }
        };
        put(attr::ERROR_CLASS, string(why.error_class));
        put(attr::LAST_STATUS, string(why.last_status.map_or_else(|| "none".to_owned(), |s| s.to_string())));
        put(attr::ATTEMPTS, number(u64::from(message.receive_count)));
        put(attr::FIRST_ATTEMPT_AT, number(first));
        put(attr::LAST_ATTEMPT_AT, number(now));
        put(attr::REASON, string(why.reason.clone()));
        put(attr::KIND, string(why.kind));
        put(attr::SOURCE_MESSAGE_ID, string(message.message_id.clone()));
        if let Some(c) = &why.correlation_id {
            put(attr::CORRELATION_ID, string(c.clone()));
        }
        let group = if message.group_id.is_empty() { "unknown" } else { message.group_id.as_str() };
        self.sqs
            .send_message()
            .queue_url(&self.dlq_url)
            .message_body(&message.body)
            .message_group_id(group)
            .message_deduplication_id(dedup_id(why.correlation_id.as_deref(), &message.message_id))
            .set_message_attributes(Some(attributes))
            .send()
            .await
            .map_err(|e| {
                if crate::access::check("sqs:SendMessage", &self.dlq_url, &e) {
                    return DeadLetterError::Denied("sqs:SendMessage on the DLQ");
                }
                DeadLetterError::Send(DisplayErrorContext(&e).to_string())
            })?;

        if let Some(c) = &why.correlation_id
            && let Err(e) = self.store.fail(c, why.kind, &why.reason, now).await
        {
            // The DLQ copy carries the reason; the result stays as it was.
            tracing::error!(error = %e, correlation_id = %c, "could not record FAILED");
        }
        self.sqs.delete_message().queue_url(&self.queue_url).receipt_handle(&message.receipt).send().await.map_err(
            |e| {
                if crate::access::check("sqs:DeleteMessage", &self.queue_url, &e) {
                    return DeadLetterError::Denied("sqs:DeleteMessage on the work queue");
                }
                DeadLetterError::Delete(DisplayErrorContext(&e).to_string())
            },
        )?;

        tracing::warn!(
            correlation_id = why.correlation_id.as_deref().unwrap_or("-"),
            kind = why.kind,
            reason = %why.reason,
            error_class = why.error_class,
            last_status = why.last_status,
            attempts = message.receive_count,
            "dead-lettered"
        );
        crate::http::dashboard::history::record_dead_letter(why, message.receive_count, now);
        crate::emf::dead_lettered();
        self.alerts.raise(Alert {
            correlation_id: why.correlation_id.clone().unwrap_or_else(|| message.message_id.clone()),
            kind: why.kind.to_owned(),
            reason: why.reason.clone(),
            error_class: why.error_class.to_owned(),
            last_status: why.last_status,
            attempts: message.receive_count,
            first_attempt_at_ms: first,
            last_attempt_at_ms: now,
            queue_message_id: message.message_id.clone(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_ids_fit_sqs() {
        assert_eq!(dedup_id(Some("corr"), "m-1"), "corr.m-1");
        assert_eq!(dedup_id(None, "m-1"), "m-1");
        assert!(dedup_id(Some(&"c".repeat(64)), &"m".repeat(100)).len() <= 128);
    }
}
