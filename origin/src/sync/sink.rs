//! Where synced records go: the DynamoDB last-known table (the durable
//! copy, in `BatchWriteItem` calls of 25) and the KV of every edge, through
//! its signed bulk route (`POST /v1/internal/cache`, 100 entries and 16 KiB
//! at most per request). Records are keyed by the HMAC of the number,
//! exactly as the edge keys them: no phone number leaves the worker.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};
use failsoft_shared::cache::CacheEntry;
use failsoft_shared::sync::{BULK_MAX_ENTRIES, BULK_PATH, BulkEntry};
use futures_util::StreamExt;

use crate::config::Secret;
use crate::deliver::edge_push::signed_json;
use crate::store::results::{LAST_KNOWN_KEY, TTL_ATTRIBUTE, store_error};

/// DynamoDB's most items per `BatchWriteItem`.
const DYNAMO_BATCH: usize = 25;
/// `BatchWriteItem` calls, and edge requests, in flight at once.
const IN_FLIGHT: usize = 4;
/// The edge's body cap is 16 KiB; a request stays under it with room.
const EDGE_BODY_BYTES: usize = 15 * 1024;
/// Sends of one edge batch or of unprocessed DynamoDB items, in all.
const ATTEMPTS: u32 = 5;
const EDGE_TIMEOUT: Duration = Duration::from_secs(10);

/// One key's change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Store(CacheEntry),
    /// Removed as of this time (ms since the epoch).
    Remove(u64),
}

/// Why a batch could not be written; the pass stops and resumes from its
/// last saved cursor.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    #[error("DynamoDB: {0}")]
    Store(String),
    #[error("edge {edge}: {why}")]
    Edge { edge: String, why: String },
}

/// Counts of what the edges did with a batch (summed over every edge).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub stored: u64,
    pub removed: u64,
    pub kept: u64,
}

pub struct Sink {
    dynamo: Client,
    table: String,
    http: reqwest::Client,
    edges: Vec<String>,
    internal_secret: Secret,
    horizon_ms: u64,
}

impl Sink {
    pub fn new(
        dynamo: Client,
        table: String,
        http: reqwest::Client,
        edges: Vec<String>,
        internal_secret: Secret,
        horizon_ms: u64,
    ) -> Self {
        Self { dynamo, table, http, edges, internal_secret, horizon_ms }
    }

    /// Writes one batch everywhere; a key given twice keeps its last change.
    pub async fn write(&self, changes: Vec<(String, Change)>) -> Result<Applied, SinkError> {
        let mut seen: HashMap<String, usize> = HashMap::with_capacity(changes.len());
        let mut unique: Vec<(String, Change)> = Vec::with_capacity(changes.len());
        for (key, change) in changes {
            match seen.get(&key) {
                Some(&at) => unique[at].1 = change,
                None => {
                    seen.insert(key.clone(), unique.len());
                    unique.push((key, change));
                }
            }
        }
        let (stored, applied) = tokio::join!(self.write_table(&unique), self.write_edges(&unique));
        stored?;
        applied
    }

    async fn write_table(&self, changes: &[(String, Change)]) -> Result<(), SinkError> {
        let mut calls = Vec::new();
        for chunk in changes.chunks(DYNAMO_BATCH) {
            calls.push(self.batch_write(chunk));
        }
        bounded(calls).await.into_iter().collect()
    }

    async fn batch_write(&self, chunk: &[(String, Change)]) -> Result<(), SinkError> {
        let mut requests: Vec<WriteRequest> = chunk.iter().map(|(key, change)| self.request(key, change)).collect();
        let mut backoff = Duration::from_millis(25);
        for _ in 0..ATTEMPTS {
            let output = self
                .dynamo
                .batch_write_item()
                .request_items(self.table.clone(), requests.clone())
                .send()
                .await
                .map_err(|e| SinkError::Store(store_error("BatchWriteItem", &self.table, &e).to_string()))?;
            requests = output.unprocessed_items.and_then(|mut u| u.remove(&self.table)).unwrap_or_default();
            if requests.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        Err(SinkError::Store(format!("{} items still unprocessed after {ATTEMPTS} sends", requests.len())))
    }

    fn request(&self, key: &str, change: &Change) -> WriteRequest {
        let s = |v: &str| AttributeValue::S(v.to_owned());
        let n = |v: u64| AttributeValue::N(v.to_string());
        match change {
            Change::Store(entry) => {
                let expires = entry.fetched_at_ms.saturating_add(self.horizon_ms) / 1000;
                let item = HashMap::from([
                    (LAST_KNOWN_KEY.to_owned(), s(key)),
                    ("entry".to_owned(), s(&serde_json::to_string(entry).unwrap_or_default())),
                    ("fetchedAtMs".to_owned(), n(entry.fetched_at_ms)),
                    (TTL_ATTRIBUTE.to_owned(), n(expires)),
                ]);
                WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(item)).build().expect("item set"))
                    .build()
            }
            Change::Remove(_) => {
                let key = HashMap::from([(LAST_KNOWN_KEY.to_owned(), s(key))]);
                WriteRequest::builder()
                    .delete_request(DeleteRequest::builder().set_key(Some(key)).build().expect("key set"))
                    .build()
            }
        }
    }

    async fn write_edges(&self, changes: &[(String, Change)]) -> Result<Applied, SinkError> {
        let bodies = bulk_bodies(changes);
        let mut sends = Vec::new();
        for edge in &self.edges {
            for body in &bodies {
                sends.push(self.push(edge, body));
            }
        }
        let mut total = Applied::default();
        for applied in bounded(sends).await {
            let applied = applied?;
            total.stored += applied.stored;
            total.removed += applied.removed;
            total.kept += applied.kept;
        }
        Ok(total)
    }

    /// One signed bulk request, sent again on a 503 or a failed connection.
    async fn push(&self, edge: &str, body: &[u8]) -> Result<Applied, SinkError> {
        let fail = |why: String| SinkError::Edge { edge: edge.to_owned(), why };
        let mut backoff = Duration::from_millis(100);
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let url = format!("{edge}{BULK_PATH}");
            let request = signed_json(&self.http, reqwest::Method::POST, &url, &self.internal_secret, body.to_vec())
                .timeout(EDGE_TIMEOUT);
            match request.send().await {
                Ok(resp) if resp.status().is_success() => {
                    let counts: serde_json::Value = resp.json().await.map_err(|e| fail(e.to_string()))?;
                    let count = |name: &str| counts.get(name).and_then(serde_json::Value::as_u64).unwrap_or(0);
                    return Ok(Applied { stored: count("stored"), removed: count("removed"), kept: count("kept") });
                }
                Ok(resp) if resp.status().as_u16() == 503 => last = "HTTP 503".to_owned(),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.text().await.unwrap_or_default();
                    return Err(fail(format!(
                        "refused the bulk push: HTTP {status} {}",
                        text.chars().take(200).collect::<String>()
                    )));
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        Err(fail(format!("no success after {ATTEMPTS} sends (last: {last})")))
    }
}

/// Runs `calls`, [`IN_FLIGHT`] at a time.
async fn bounded<F: std::future::Future>(calls: Vec<F>) -> Vec<F::Output> {
    let mut calls = calls.into_iter();
    let mut running = futures_util::stream::FuturesUnordered::new();
    let mut outputs = Vec::new();
    running.extend(calls.by_ref().take(IN_FLIGHT));
    while let Some(output) = running.next().await {
        outputs.push(output);
        running.extend(calls.next());
    }
    outputs
}

/// The changes as bulk bodies, each at most [`BULK_MAX_ENTRIES`] entries
/// and [`EDGE_BODY_BYTES`] long.
pub fn bulk_bodies(changes: &[(String, Change)]) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    let mut entries: Vec<String> = Vec::new();
    let mut length = 0;
    let close = |entries: &mut Vec<String>, bodies: &mut Vec<Vec<u8>>| {
        if !entries.is_empty() {
            bodies.push(format!("{{\"entries\":[{}]}}", entries.join(",")).into_bytes());
            entries.clear();
        }
    };
    for (key, change) in changes {
        let entry = match change {
            Change::Store(entry) => BulkEntry { key: key.clone(), entry: Some(entry.clone()), removed_at_ms: None },
            Change::Remove(at) => BulkEntry { key: key.clone(), entry: None, removed_at_ms: Some(*at) },
        };
        let text = serde_json::to_string(&entry).unwrap_or_default();
        if entries.len() == BULK_MAX_ENTRIES || length + text.len() + 16 > EDGE_BODY_BYTES {
            close(&mut entries, &mut bodies);
            length = 0;
        }
        length += text.len() + 1;
        entries.push(text);
    }
    close(&mut entries, &mut bodies);
    bodies
}

#[cfg(test)]
mod tests {
    use super::*;
    use failsoft_shared::cache::CustomerRecord;
    use failsoft_shared::sync::BulkPush;

    fn store(id: &str) -> Change {
        Change::Store(CacheEntry {
            record: CustomerRecord { found: true, customer_id: id.to_owned(), tier: "gold".into() },
            fetched_at_ms: 1,
        })
    }

    #[test]
    fn bodies_hold_at_most_a_hundred_entries_and_fit_the_edge_cap() {
        let changes: Vec<(String, Change)> = (0..250).map(|i| (format!("{i:064x}"), store("C-1"))).collect();
        let bodies = bulk_bodies(&changes);
        let sizes: Vec<usize> =
            bodies.iter().map(|b| serde_json::from_slice::<BulkPush>(b).expect("a bulk body").entries.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 250);
        assert!(sizes.iter().all(|&n| n <= BULK_MAX_ENTRIES), "{sizes:?}");
        assert!(bodies.iter().all(|b| b.len() <= EDGE_BODY_BYTES));

        let long_id = "x".repeat(120);
        let big: Vec<(String, Change)> = (0..100).map(|i| (format!("{i:064x}"), store(&long_id))).collect();
        let bodies = bulk_bodies(&big);
        assert!(bodies.len() > 1 && bodies.iter().all(|b| b.len() <= EDGE_BODY_BYTES), "split by size too");
        assert!(bulk_bodies(&[]).is_empty());
    }
}
