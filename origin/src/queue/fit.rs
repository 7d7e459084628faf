//! The start-up check of the work queue: reads its `RedrivePolicy`,
//! `VisibilityTimeout` and `MessageRetentionPeriod` (GetQueueAttributes)
//! and asks the policy core whether they fit the settings
//! (`failsoft_shared::queue_fit`, where the reasoning is).

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::QueueAttributeName;
use failsoft_shared::config::{ConfigError, Policy};
use failsoft_shared::queue_fit::{self, QueueAttributes};

/// Reads of the attributes before the worker gives up starting.
const TRIES: u32 = 3;
const PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// The queue does not fit the settings (exit 2).
    #[error("the work queue (FAILSOFT_QUEUE_URL) does not fit the settings: {0}")]
    Unfit(ConfigError),
    /// The attributes could not be read.
    #[error("cannot read the work queue's attributes: {0}")]
    Unreadable(String),
    /// AWS refused to let this identity read them (exit 2: a configuration
    /// error, see crate::access).
    #[error(
        "AWS denied sqs:GetQueueAttributes on {0}: grant it to this identity (deploy/aws/failsoft.yaml, WorkerPolicy)"
    )]
    Denied(String),
}

/// Reads the queue's attributes and checks them against `policy`.
pub async fn check(sqs: &Client, queue_url: &str, policy: &Policy) -> Result<QueueAttributes, FitError> {
    let attributes = read(sqs, queue_url).await?;
    queue_fit::check(policy, &attributes).map_err(FitError::Unfit)?;
    Ok(attributes)
}

async fn read(sqs: &Client, queue_url: &str) -> Result<QueueAttributes, FitError> {
    let mut last = String::new();
    for attempt in 1..=TRIES {
        let request = sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .attribute_names(QueueAttributeName::VisibilityTimeout)
            .attribute_names(QueueAttributeName::MessageRetentionPeriod);
        match request.send().await {
            Ok(out) => {
                let map = out.attributes.unwrap_or_default();
                let get = |name: QueueAttributeName| map.get(&name).map(String::as_str);
                return parse(
                    get(QueueAttributeName::RedrivePolicy),
                    get(QueueAttributeName::VisibilityTimeout),
                    get(QueueAttributeName::MessageRetentionPeriod),
                )
                .map_err(FitError::Unreadable);
            }
            Err(e) => {
                if crate::access::check("sqs:GetQueueAttributes", queue_url, &e) {
                    return Err(FitError::Denied(queue_url.to_owned()));
                }
                last = DisplayErrorContext(&e).to_string();
                tracing::warn!(attempt, error = %last, "GetQueueAttributes failed");
            }
        }
        if attempt < TRIES {
            tokio::time::sleep(PAUSE).await;
        }
    }
    Err(FitError::Unreadable(last))
}

/// The attributes as SQS returns them: numbers as strings, the redrive
/// policy as a JSON string whose `maxReceiveCount` is a number or a string.
pub fn parse(
    redrive: Option<&str>,
    visibility: Option<&str>,
    retention: Option<&str>,
) -> Result<QueueAttributes, String> {
    let number = |name: &str, value: Option<&str>| -> Result<u64, String> {
        let value = value.ok_or_else(|| format!("{name} is missing"))?;
        value.trim().parse().map_err(|_| format!("{name} `{value}` is not a number"))
    };
    let max_receive_count = match redrive.map(str::trim).filter(|r| !r.is_empty()) {
        None => None,
        Some(text) => {
            let policy: serde_json::Value =
                serde_json::from_str(text).map_err(|e| format!("RedrivePolicy is not JSON: {e}"))?;
            let count = match &policy["maxReceiveCount"] {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            let count = count.ok_or_else(|| format!("RedrivePolicy has no maxReceiveCount: {text}"))?;
            Some(u32::try_from(count).map_err(|_| format!("maxReceiveCount {count} is out of range"))?)
        }
    };
    Ok(QueueAttributes {
        max_receive_count,
        visibility_timeout_secs: number("VisibilityTimeout", visibility)?,
        retention_secs: number("MessageRetentionPeriod", retention)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_sqs_returns() {
        let q = parse(Some(r#"{"deadLetterTargetArn":"arn:x","maxReceiveCount":1000}"#), Some("120"), Some("1209600"))
            .unwrap();
        assert_eq!(
            q,
            QueueAttributes { max_receive_count: Some(1000), visibility_timeout_secs: 120, retention_secs: 1_209_600 }
        );
        let q = parse(Some(r#"{"maxReceiveCount":"5"}"#), Some("30"), Some("60")).unwrap();
        assert_eq!(q.max_receive_count, Some(5));
        assert_eq!(parse(None, Some("30"), Some("60")).unwrap().max_receive_count, None);
        assert!(parse(Some("{}"), Some("30"), Some("60")).is_err());
        assert!(parse(None, None, Some("60")).unwrap_err().contains("VisibilityTimeout"));
    }
}
