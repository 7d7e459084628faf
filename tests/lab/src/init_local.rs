//! `failsoft-lab init-local`: creates the work queue, its dead-letter queue and
//! the two tables in the endpoint `AWS_ENDPOINT_URL` names (moto's server in
//! development and tests). Idempotent: run again, it converges the
//! attributes and prints the same URLs.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::json;

use failsoft_origin::aws;
use failsoft_origin::config::InitConfig;
use failsoft_origin::store::results::{LAST_KNOWN_KEY, RESULTS_KEY, TTL_ATTRIBUTE};

/// SQS's longest retention: the retry budget may be up to 14 days.
const RETENTION_SECS: u64 = 14 * 86_400;
/// How long a new table may take to become active (seconds on AWS).
const TABLE_ACTIVE_POLLS: u32 = 120;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{what}: {message}")]
    Aws { what: String, message: String },
}

fn aws_error(what: impl Into<String>, e: impl std::error::Error) -> InitError {
    InitError::Aws { what: what.into(), message: aws_sdk_sqs::error::DisplayErrorContext(e).to_string() }
}

/// The URLs and names created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub queue_url: String,
    pub dlq_url: String,
}

pub async fn run(config: &InitConfig) -> Result<Created, InitError> {
    let sdk = aws::sdk_config(Duration::from_secs(30)).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);

    let retention = RETENTION_SECS.to_string();
    let visibility = config.policy.visibility_timeout_secs.to_string();
    let dlq_url = ensure_queue(
        &sqs,
        &config.dlq_name,
        HashMap::from([
            (QueueAttributeName::ContentBasedDeduplication, "false".to_owned()),
            (QueueAttributeName::MessageRetentionPeriod, retention.clone()),
            (QueueAttributeName::VisibilityTimeout, "30".to_owned()),
        ]),
    )
    .await?;
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| aws_error("GetQueueAttributes (DLQ)", e))?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| InitError::Aws { what: "the DLQ".into(), message: "has no QueueArn".into() })?;
    let redrive = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": config.max_receive_count}).to_string();
    let queue_url = ensure_queue(
        &sqs,
        &config.queue_name,
        HashMap::from([
            (QueueAttributeName::ContentBasedDeduplication, "false".to_owned()),
            (QueueAttributeName::MessageRetentionPeriod, retention),
            (QueueAttributeName::VisibilityTimeout, visibility),
            (QueueAttributeName::RedrivePolicy, redrive),
        ]),
    )
    .await?;

    ensure_table(&ddb, &config.tables.results, RESULTS_KEY).await?;
    ensure_table(&ddb, &config.tables.last_known, LAST_KNOWN_KEY).await?;
    Ok(Created { queue_url, dlq_url })
}

/// The queue's URL, creating the FIFO queue or converging its attributes.
async fn ensure_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: HashMap<QueueAttributeName, String>,
) -> Result<String, InitError> {
    if let Ok(existing) = sqs.get_queue_url().queue_name(name).send().await
        && let Some(url) = existing.queue_url
    {
        sqs.set_queue_attributes()
            .queue_url(&url)
            .set_attributes(Some(attributes))
            .send()
            .await
            .map_err(|e| aws_error(format!("SetQueueAttributes {name}"), e))?;
        return Ok(url);
    }
    let mut attributes = attributes;
    attributes.insert(QueueAttributeName::FifoQueue, "true".to_owned());
    sqs.create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes))
        .send()
        .await
        .map_err(|e| aws_error(format!("CreateQueue {name}"), e))?
        .queue_url
        .ok_or_else(|| InitError::Aws { what: format!("CreateQueue {name}"), message: "no QueueUrl".into() })
}

/// Creates the table (on-demand, one string hash key) unless it exists, and
/// enables TTL on `expiresAt`.
async fn ensure_table(ddb: &aws_sdk_dynamodb::Client, name: &str, key: &str) -> Result<(), InitError> {
    let exists = ddb.describe_table().table_name(name).send().await.is_ok();
    if !exists {
        let definition = AttributeDefinition::builder()
            .attribute_name(key)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| aws_error("AttributeDefinition", e))?;
        let schema = KeySchemaElement::builder()
            .attribute_name(key)
            .key_type(KeyType::Hash)
            .build()
            .map_err(|e| aws_error("KeySchemaElement", e))?;
        let created = ddb
            .create_table()
            .table_name(name)
            .attribute_definitions(definition)
            .key_schema(schema)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        if let Err(e) = created {
            // Created meanwhile by a concurrent init: fine.
            let in_use = e.as_service_error().is_some_and(|se| se.is_resource_in_use_exception());
            if !in_use {
                return Err(aws_error(format!("CreateTable {name}"), e));
            }
        }
    }
    for _ in 0..TABLE_ACTIVE_POLLS {
        let status = ddb
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|e| aws_error(format!("DescribeTable {name}"), e))?
            .table
            .and_then(|t| t.table_status);
        if status == Some(TableStatus::Active) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ttl = ddb
        .describe_time_to_live()
        .table_name(name)
        .send()
        .await
        .map_err(|e| aws_error(format!("DescribeTimeToLive {name}"), e))?
        .time_to_live_description;
    let enabled = ttl.is_some_and(|d| {
        matches!(d.time_to_live_status, Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling))
            && d.attribute_name.as_deref() == Some(TTL_ATTRIBUTE)
    });
    if !enabled {
        let spec = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name(TTL_ATTRIBUTE)
            .build()
            .map_err(|e| aws_error("TimeToLiveSpecification", e))?;
        ddb.update_time_to_live()
            .table_name(name)
            .time_to_live_specification(spec)
            .send()
            .await
            .map_err(|e| aws_error(format!("UpdateTimeToLive {name}"), e))?;
    }
    Ok(())
}
