//! The DynamoDB tables: results by correlationId (what `GET /v1/results`
//! reads, and the write-once claims), and last-known records by entity key.
//! A delivered refresh is recorded in the results table too, under a key of
//! its own (see [`refresh_record_key`]).
//!
//! DynamoDB deletes TTL-expired items late (up to days; a local stand-in
//! never), so every read here treats an item past its `expiresAt` as absent.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use failsoft_shared::cache::CacheEntry;
use serde_json::Value;

use crate::config::Tables;
use crate::store::batch_write::{self, BatchWriter, Put};

/// How long a result is kept for polling (the edge keeps its copy as long).
pub const RESULT_TTL_SECS: u64 = 86_400;
/// The TTL attribute of both tables (`init-local` enables it).
pub const TTL_ATTRIBUTE: &str = "expiresAt";
/// Key attribute of the results table.
pub const RESULTS_KEY: &str = "correlationId";
/// Key attribute of the last-known table.
pub const LAST_KNOWN_KEY: &str = "entityKey";

/// A store operation that failed; the caller retries the message later,
/// or, when AWS denied it ([`crate::access`]), hands it back until the
/// policy is fixed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("DynamoDB {op} failed: {message}")]
pub struct StoreError {
    pub op: &'static str,
    pub message: String,
    /// AWS refused the call for want of permission: a configuration error.
    pub denied: bool,
}

impl StoreError {
    pub fn new(op: &'static str, message: impl Into<String>) -> Self {
        Self { op, message: message.into(), denied: false }
    }
}

/// The error of `op` on `table` (tables, for a batch), checked for a denial.
pub(crate) fn store_error<E>(op: &'static str, table: &str, e: &SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let denied = crate::access::check(&format!("dynamodb:{op}"), table, e);
    StoreError { op, message: DisplayErrorContext(e).to_string(), denied }
}

fn is_condition_failure<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error().and_then(|se| se.code()) == Some("ConditionalCheckFailedException")
}

/// The outcome of a conditional write whose losing side needs no action:
/// a failed condition means a newer or final record is already there.
fn lost_race_is_fine<T, E: ProvideErrorMetadata + std::error::Error + 'static>(
    attempt: Result<T, SdkError<E, HttpResponse>>,
    operation: &'static str,
    table: &str,
) -> Result<(), StoreError> {
    match attempt {
        Ok(_) => Ok(()),
        Err(e) if is_condition_failure(&e) => Ok(()),
        Err(e) => Err(store_error(operation, table, &e)),
    }
}

/// Where a message's work stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Seen, not delivered yet.
    Pending,
    /// Claimed by a worker for a write (shown as `PENDING` by the API).
    InFlight,
    Complete,
    /// Dead-lettered.
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::InFlight => "IN_FLIGHT",
            Self::Complete => "COMPLETE",
            Self::Failed => "FAILED",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "PENDING" => Self::Pending,
            "IN_FLIGHT" => Self::InFlight,
            "COMPLETE" => Self::Complete,
            "FAILED" => Self::Failed,
            _ => return None,
        })
    }

    /// What the results API says: a claim is still pending to a caller.
    pub fn public(self) -> &'static str {
        match self {
            Self::InFlight => Self::Pending.as_str(),
            other => other.as_str(),
        }
    }
}

/// One results item.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResult {
    pub status: Status,
    pub result: Option<Value>,
    pub case_id: Option<String>,
    pub reason: Option<String>,
    pub owner: Option<String>,
    pub lease_until_ms: Option<u64>,
}

/// The outcome of trying to claim a write.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This worker holds it until the lease ends.
    Claimed,
    /// Delivered already (by an earlier attempt or another worker).
    Complete,
    /// Dead-lettered already.
    Failed,
    /// Another attempt holds it; look again after this many milliseconds.
    Busy { retry_in_ms: u64 },
}

/// What identifies a delivered refresh.
#[derive(Debug, Clone, Copy)]
pub struct RefreshRecord<'a> {
    pub entity_key: &'a str,
    /// The lookup's correlationId.
    pub correlation_id: &'a str,
    /// When the edge made the message (its deduplication window's stamp).
    pub submitted_at_ms: u64,
}

/// The two tables.
#[derive(Clone)]
pub struct Store {
    client: Client,
    tables: Tables,
    /// Groups refresh records into `BatchWriteItem` calls (the worker's).
    batch: Option<BatchWriter>,
}

/// The results-table key of a delivered refresh: the lookup's correlationId
/// and the message's stamp. `:` is in no correlationId (letters, digits,
/// `-`, `_`), so a refresh never lands on a write's item: an Architect flow
/// that passes `Call.ConversationId` to both the lookup and the case
/// creation must get its case created, whichever is delivered first. Nor
/// does `GET /v1/results/{id}` ever answer with one.
pub fn refresh_record_key(correlation_id: &str, submitted_at_ms: u64) -> String {
    format!("refresh:{correlation_id}:{submitted_at_ms}")
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn names(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn expiry(now_ms: u64, ttl_secs: u64) -> u64 {
    now_ms / 1000 + ttl_secs
}

impl Store {
    pub fn new(client: Client, tables: Tables) -> Self {
        Self { client, tables, batch: None }
    }

    /// Records refreshes through a [`BatchWriter`] (needs a Tokio runtime).
    pub fn with_batching(mut self) -> Self {
        self.batch = Some(BatchWriter::start(self.client.clone()));
        self
    }

    /// The item for `correlation_id`, unless absent or expired.
    pub async fn get(&self, correlation_id: &str, now_ms: u64) -> Result<Option<StoredResult>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.results)
            .key(RESULTS_KEY, s(correlation_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("GetItem", &self.tables.results, &e))?;
        let Some(item) = out.item else { return Ok(None) };
        let num = |k: &str| item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<u64>().ok());
        let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        if num(TTL_ATTRIBUTE).is_some_and(|exp| exp <= now_ms / 1000) {
            return Ok(None);
        }
        let Some(status) = text("status").as_deref().and_then(Status::parse) else { return Ok(None) };
        Ok(Some(StoredResult {
            status,
            result: text("result").and_then(|r| serde_json::from_str(&r).ok()),
            case_id: text("caseId"),
            reason: text("reason"),
            owner: text("owner"),
            lease_until_ms: num("leaseUntil"),
        }))
    }

    /// Claims a write for `owner` until `lease_until_ms`: succeeds when the
    /// item is absent, expired, pending, or claimed under a lease that ran out.
    pub async fn claim(
        &self,
        correlation_id: &str,
        kind: &str,
        owner: &str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> Result<Claim, StoreError> {
        let attempt = self
            .client
            .update_item()
            .table_name(&self.tables.results)
            .key(RESULTS_KEY, s(correlation_id))
            .update_expression("SET #s = :inflight, #o = :owner, #l = :lease, #k = :kind, #u = :now, #e = :exp")
            .condition_expression(
                "attribute_not_exists(#s) OR #s = :pending OR (#s = :inflight AND #l < :now) OR #e <= :nows",
            )
            .set_expression_attribute_names(Some(names(&[
                ("#s", "status"),
                ("#o", "owner"),
                ("#l", "leaseUntil"),
                ("#k", "kind"),
                ("#u", "updatedAt"),
                ("#e", TTL_ATTRIBUTE),
            ])))
            .expression_attribute_values(":inflight", s(Status::InFlight.as_str()))
            .expression_attribute_values(":pending", s(Status::Pending.as_str()))
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":lease", n(lease_until_ms))
            .expression_attribute_values(":kind", s(kind))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":nows", n(now_ms / 1000))
            .expression_attribute_values(":exp", n(expiry(now_ms, RESULT_TTL_SECS)))
            .send()
            .await;
        match attempt {
            Ok(_) => Ok(Claim::Claimed),
            Err(e) if is_condition_failure(&e) => Ok(match self.get(correlation_id, now_ms).await? {
                Some(StoredResult { status: Status::Complete, .. }) => Claim::Complete,
                Some(StoredResult { status: Status::Failed, .. }) => Claim::Failed,
                Some(StoredResult { status: Status::InFlight, lease_until_ms: Some(until), .. }) if until >= now_ms => {
                    Claim::Busy { retry_in_ms: until - now_ms + 1 }
                }
                // Changed between the two calls: look again soon.
                _ => Claim::Busy { retry_in_ms: 1_000 },
            }),
            Err(e) => Err(store_error("UpdateItem", &self.tables.results, &e)),
        }
    }

    /// Gives a claim back before its lease ends, when this attempt certainly
    /// created nothing (the next attempt then need not wait for the lease).
    pub async fn release(&self, correlation_id: &str, owner: &str, now_ms: u64) -> Result<(), StoreError> {
        let attempt = self
            .client
            .update_item()
            .table_name(&self.tables.results)
            .key(RESULTS_KEY, s(correlation_id))
            .update_expression("SET #s = :pending, #u = :now REMOVE #o, #l")
            .condition_expression("#s = :inflight AND #o = :owner")
            .set_expression_attribute_names(Some(names(&[
                ("#s", "status"),
                ("#o", "owner"),
                ("#l", "leaseUntil"),
                ("#u", "updatedAt"),
            ])))
            .expression_attribute_values(":inflight", s(Status::InFlight.as_str()))
            .expression_attribute_values(":pending", s(Status::Pending.as_str()))
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        lost_race_is_fine(attempt, "UpdateItem", &self.tables.results)
    }

    /// Records a delivery: `COMPLETE` with its result, the claim's owner and
    /// lease gone. A plain put, batched with other records when
    /// [`Store::with_batching`] is on: only the claim's holder delivers. The
    /// one case a second `COMPLETE` lands is a holder whose lease ran out
    /// while it worked: for a write, the next holder looked the case up
    /// before creating it and records the same case; for an event, the
    /// later post's answer replaces the earlier one's (both were 2xx).
    pub async fn complete(
        &self,
        correlation_id: &str,
        kind: &str,
        result: &Value,
        case_id: Option<&str>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let mut item = HashMap::from([
            (RESULTS_KEY.to_owned(), s(correlation_id)),
            ("status".to_owned(), s(Status::Complete.as_str())),
            ("result".to_owned(), s(result.to_string())),
            ("kind".to_owned(), s(kind)),
            ("updatedAt".to_owned(), n(now_ms)),
            (TTL_ATTRIBUTE.to_owned(), n(expiry(now_ms, RESULT_TTL_SECS))),
        ]);
        if let Some(id) = case_id {
            item.insert("caseId".to_owned(), s(id));
        }
        self.put(vec![Put { table: self.tables.results.clone(), key_attribute: RESULTS_KEY, item }]).await
    }

    /// Writes `puts` through the batch writer, or in one call of their own.
    async fn put(&self, puts: Vec<Put>) -> Result<(), StoreError> {
        match &self.batch {
            Some(batch) => batch.put(puts).await,
            None => batch_write::write(&self.client, puts).await,
        }
    }

    /// Records a dead-letter. Never turns a delivered write into a failure.
    pub async fn fail(&self, correlation_id: &str, kind: &str, reason: &str, now_ms: u64) -> Result<(), StoreError> {
        let attempt = self
            .client
            .update_item()
            .table_name(&self.tables.results)
            .key(RESULTS_KEY, s(correlation_id))
            .update_expression("SET #s = :failed, #why = :reason, #k = :kind, #u = :now, #e = :exp REMOVE #o, #l")
            .condition_expression("attribute_not_exists(#s) OR #s <> :complete")
            .set_expression_attribute_names(Some(names(&[
                ("#s", "status"),
                ("#why", "reason"),
                ("#k", "kind"),
                ("#u", "updatedAt"),
                ("#e", TTL_ATTRIBUTE),
                ("#o", "owner"),
                ("#l", "leaseUntil"),
            ])))
            .expression_attribute_values(":failed", s(Status::Failed.as_str()))
            .expression_attribute_values(":complete", s(Status::Complete.as_str()))
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":kind", s(kind))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":exp", n(expiry(now_ms, RESULT_TTL_SECS)))
            .send()
            .await;
        lost_race_is_fine(attempt, "UpdateItem", &self.tables.results)
    }

    /// Makes a dead-lettered id deliverable again before its replay is
    /// enqueued: `FAILED` becomes `PENDING` (a `COMPLETE` one stays).
    pub async fn reset_for_replay(&self, correlation_id: &str, now_ms: u64) -> Result<(), StoreError> {
        let attempt = self
            .client
            .update_item()
            .table_name(&self.tables.results)
            .key(RESULTS_KEY, s(correlation_id))
            .update_expression("SET #s = :pending, #u = :now, #e = :exp REMOVE #why")
            .condition_expression("#s = :failed")
            .set_expression_attribute_names(Some(names(&[
                ("#s", "status"),
                ("#u", "updatedAt"),
                ("#e", TTL_ATTRIBUTE),
                ("#why", "reason"),
            ])))
            .expression_attribute_values(":pending", s(Status::Pending.as_str()))
            .expression_attribute_values(":failed", s(Status::Failed.as_str()))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":exp", n(expiry(now_ms, RESULT_TTL_SECS)))
            .send()
            .await;
        lost_race_is_fine(attempt, "UpdateItem", &self.tables.results)
    }

    /// Records a delivered refresh: its record as last-known for the horizon
    /// (keyed by the hashed entity, never a phone), and the refresh itself
    /// under [`refresh_record_key`], in one `BatchWriteItem`, batched with
    /// other refreshes when [`Store::with_batching`] is on.
    ///
    /// The puts are unconditional: a refresh's message group is its entity,
    /// and SQS hands out a group's next message only once this one is
    /// deleted, after these puts; so an older record of an entity never
    /// follows a newer one.
    pub async fn record_refresh(
        &self,
        refresh: &RefreshRecord<'_>,
        entry: &CacheEntry,
        horizon_ms: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let last_known = Put {
            table: self.tables.last_known.clone(),
            key_attribute: LAST_KNOWN_KEY,
            item: HashMap::from([
                (LAST_KNOWN_KEY.to_owned(), s(refresh.entity_key)),
                ("entry".to_owned(), s(serde_json::to_string(entry).unwrap_or_default())),
                ("fetchedAtMs".to_owned(), n(entry.fetched_at_ms)),
                (TTL_ATTRIBUTE.to_owned(), n(expiry(entry.fetched_at_ms, horizon_ms / 1000))),
            ]),
        };
        let result = serde_json::json!({"record": entry.record, "submittedAt": refresh.submitted_at_ms});
        let record = Put {
            table: self.tables.results.clone(),
            key_attribute: RESULTS_KEY,
            item: HashMap::from([
                (RESULTS_KEY.to_owned(), s(refresh_record_key(refresh.correlation_id, refresh.submitted_at_ms))),
                ("lookupCorrelationId".to_owned(), s(refresh.correlation_id)),
                ("kind".to_owned(), s("refresh")),
                ("status".to_owned(), s(Status::Complete.as_str())),
                ("result".to_owned(), s(result.to_string())),
                ("submittedAt".to_owned(), n(refresh.submitted_at_ms)),
                ("updatedAt".to_owned(), n(now_ms)),
                (TTL_ATTRIBUTE.to_owned(), n(expiry(now_ms, RESULT_TTL_SECS))),
            ]),
        };
        self.put(vec![last_known, record]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_reads_as_pending_to_callers() {
        assert_eq!(Status::InFlight.public(), "PENDING");
        assert_eq!(Status::Complete.public(), "COMPLETE");
        for s in [Status::Pending, Status::InFlight, Status::Complete, Status::Failed] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(expiry(10_500, 60), 70);
    }
}
