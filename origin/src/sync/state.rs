//! Where a sync stands, kept in DynamoDB so a restarted worker, or a second
//! one, resumes instead of starting over; and the lease that keeps two
//! workers from syncing at once. One item of the results table (whose
//! permissions the worker has: `GetItem`, `UpdateItem`), under a key no
//! correlationId can take (`#` is not allowed in one).

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use crate::store::results::{RESULTS_KEY, StoreError, store_error};

/// The state item's key.
pub const STATE_KEY: &str = "sync#customers";

/// A pass's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Every customer (no `updatedSince`).
    Full,
    /// Customers changed since the last pass began (less a margin).
    Delta,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Delta => "delta",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "full" => Some(Self::Full),
            "delta" => Some(Self::Delta),
            _ => None,
        }
    }
}

/// A pass in progress: enough to resume it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub kind: Kind,
    /// `updatedSince` of the pass (ms), `None` for a full pass.
    pub since_ms: Option<u64>,
    pub started_ms: u64,
    /// The next page's cursor (`None`: from the first page).
    pub cursor: Option<String>,
    /// Records read so far.
    pub records: u64,
}

/// The stored state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncState {
    pub run: Option<Run>,
    /// `updatedSince` of the next delta pass (ms).
    pub high_water_ms: Option<u64>,
    pub last_full_ms: Option<u64>,
    pub last_delta_ms: Option<u64>,
    /// Records the last full pass read (the next one's progress total).
    pub last_full_records: Option<u64>,
}

impl SyncState {
    /// When a pass last finished, of either kind.
    pub fn last_success_ms(&self) -> Option<u64> {
        self.last_full_ms.max(self.last_delta_ms)
    }

    fn from_item(item: &HashMap<String, AttributeValue>) -> Self {
        let num = |name: &str| item.get(name).and_then(|v| v.as_n().ok()).and_then(|n| n.parse::<u64>().ok());
        let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        let run = text("runKind").and_then(|k| Kind::parse(&k)).map(|kind| Run {
            kind,
            since_ms: num("runSince"),
            started_ms: num("runStarted").unwrap_or(0),
            cursor: text("listCursor"),
            records: num("runRecords").unwrap_or(0),
        });
        Self {
            run,
            high_water_ms: num("highWater"),
            last_full_ms: num("lastFull"),
            last_delta_ms: num("lastDelta"),
            last_full_records: num("lastFullRecords"),
        }
    }
}

/// The state item and its lease.
#[derive(Clone)]
pub struct StateStore {
    client: Client,
    table: String,
    owner: String,
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn lost<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool {
    e.as_service_error().and_then(|se| se.code()) == Some("ConditionalCheckFailedException")
}

impl StateStore {
    pub fn new(client: Client, table: String, owner: String) -> Self {
        Self { client, table, owner }
    }

    /// Takes (or renews) the lease until `until_ms`; `None` while another
    /// worker holds it.
    pub async fn claim(&self, now_ms: u64, until_ms: u64) -> Result<Option<SyncState>, StoreError> {
        let attempt = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(RESULTS_KEY, s(STATE_KEY))
            .update_expression("SET syncOwner = :me, syncLeaseUntil = :until")
            .condition_expression("attribute_not_exists(syncLeaseUntil) OR syncLeaseUntil < :now OR syncOwner = :me")
            .expression_attribute_values(":me", s(&self.owner))
            .expression_attribute_values(":until", n(until_ms))
            .expression_attribute_values(":now", n(now_ms))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match attempt {
            Ok(out) => Ok(Some(out.attributes.as_ref().map(SyncState::from_item).unwrap_or_default())),
            Err(e) if lost(&e) => Ok(None),
            Err(e) => Err(store_error("UpdateItem", &self.table, &e)),
        }
    }

    /// Records a pass's progress and renews the lease; `false` when the
    /// lease was lost (another worker took it over: stop).
    pub async fn progress(&self, run: &Run, until_ms: u64) -> Result<bool, StoreError> {
        let mut update =
            "SET runKind = :kind, runStarted = :started, runRecords = :records, syncLeaseUntil = :until".to_owned();
        let mut removes = Vec::new();
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(RESULTS_KEY, s(STATE_KEY))
            .condition_expression("syncOwner = :me")
            .expression_attribute_values(":me", s(&self.owner))
            .expression_attribute_values(":kind", s(run.kind.as_str()))
            .expression_attribute_values(":started", n(run.started_ms))
            .expression_attribute_values(":records", n(run.records))
            .expression_attribute_values(":until", n(until_ms));
        match &run.cursor {
            Some(cursor) => {
                update.push_str(", listCursor = :cursor");
                request = request.expression_attribute_values(":cursor", s(cursor));
            }
            None => removes.push("listCursor"),
        }
        match run.since_ms {
            Some(since) => {
                update.push_str(", runSince = :since");
                request = request.expression_attribute_values(":since", n(since));
            }
            None => removes.push("runSince"),
        }
        if !removes.is_empty() {
            update.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        match request.update_expression(update).send().await {
            Ok(_) => Ok(true),
            Err(e) if lost(&e) => Ok(false),
            Err(e) => Err(store_error("UpdateItem", &self.table, &e)),
        }
    }

    /// Records a finished pass (the next delta starts from `high_water_ms`)
    /// and lets the lease go.
    pub async fn finish(&self, run: &Run, now_ms: u64, high_water_ms: u64) -> Result<bool, StoreError> {
        let last = match run.kind {
            Kind::Full => "lastFull = :now, lastFullRecords = :records",
            Kind::Delta => "lastDelta = :now",
        };
        let mut values = HashMap::from([
            (":me".to_owned(), s(&self.owner)),
            (":now".to_owned(), n(now_ms)),
            (":hw".to_owned(), n(high_water_ms)),
            (":zero".to_owned(), n(0)),
        ]);
        if run.kind == Kind::Full {
            values.insert(":records".to_owned(), n(run.records));
        }
        let attempt = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(RESULTS_KEY, s(STATE_KEY))
            .update_expression(format!(
                "SET {last}, highWater = :hw, syncLeaseUntil = :zero \
                 REMOVE runKind, runSince, runStarted, runRecords, listCursor"
            ))
            .condition_expression("syncOwner = :me")
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match attempt {
            Ok(_) => Ok(true),
            Err(e) if lost(&e) => Ok(false),
            Err(e) => Err(store_error("UpdateItem", &self.table, &e)),
        }
    }

    /// Lets the lease go (after a failed pass: another worker may go on).
    pub async fn release(&self) {
        let attempt = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(RESULTS_KEY, s(STATE_KEY))
            .update_expression("SET syncLeaseUntil = :zero")
            .condition_expression("syncOwner = :me")
            .expression_attribute_values(":me", s(&self.owner))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        if let Err(e) = attempt
            && !lost(&e)
        {
            tracing::warn!(error = %store_error("UpdateItem", &self.table, &e), "releasing the sync lease failed");
        }
    }
}
