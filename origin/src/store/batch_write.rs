//! Unconditional DynamoDB puts, grouped into `BatchWriteItem` calls.
//!
//! A delivered refresh ends in two puts (its last-known record and its own
//! result record), a delivered write or event in one (its `COMPLETE`
//! result). After an outage the worker delivers hundreds of messages a
//! second, and a call per put made DynamoDB the bound of the drain. Here
//! one task writes while the others wait: the puts that arrive during a call
//! go out together in the next one, up to DynamoDB's 25 items (group
//! commit). Alone, a put goes out at once; nothing waits on a timer.
//!
//! Each caller learns whether its own puts are stored before it goes on (a
//! message is deleted only after its records are written). Items DynamoDB
//! leaves unprocessed are sent again with a short backoff, a few times. A
//! call that fails for several callers is made again for each alone, so one
//! bad record (over DynamoDB's item size, say) fails only its own message,
//! which is retried later (the puts are idempotent).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use tokio::sync::{mpsc, oneshot};

use crate::store::results::{StoreError, store_error};

/// DynamoDB's limit of items in one `BatchWriteItem`.
pub const MAX_ITEMS: usize = 25;
/// Sends of items DynamoDB left unprocessed, after the first.
const UNPROCESSED_RETRIES: u32 = 4;
/// Backoff before the first resend of unprocessed items; doubles.
const UNPROCESSED_BACKOFF: Duration = Duration::from_millis(25);
/// Callers that may wait for the writer before `put` itself waits.
const QUEUE_DEPTH: usize = 256;

/// One put: the table, the item, and the key attribute (no two puts of one
/// key may share a call).
#[derive(Debug, Clone)]
pub struct Put {
    pub table: String,
    pub key_attribute: &'static str,
    pub item: std::collections::HashMap<String, AttributeValue>,
}

impl Put {
    fn key(&self) -> (String, String) {
        let value = match self.item.get(self.key_attribute) {
            Some(AttributeValue::S(s)) => s.clone(),
            other => format!("{other:?}"),
        };
        (self.table.clone(), value)
    }
}

struct Job {
    puts: Vec<Put>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The handle callers write through; cheap to clone.
#[derive(Clone)]
pub struct BatchWriter {
    jobs: mpsc::Sender<Job>,
    /// Batches written so far (each one `BatchWriteItem`, plus resends).
    batches: Arc<AtomicU64>,
}

impl BatchWriter {
    /// Starts the writing task (it ends when every handle is dropped).
    pub fn start(client: Client) -> Self {
        let (jobs, rx) = mpsc::channel(QUEUE_DEPTH);
        let batches = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(client, rx, Arc::clone(&batches)));
        Self { jobs, batches }
    }

    /// Batches written so far.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Writes `puts` (at most [`MAX_ITEMS`], distinct keys), together with
    /// whatever else is waiting; returns once they are stored or failed.
    pub async fn put(&self, puts: Vec<Put>) -> Result<(), StoreError> {
        let refused = |message: &str| StoreError::new("BatchWriteItem", message);
        let keys: HashSet<_> = puts.iter().map(Put::key).collect();
        if puts.is_empty() || puts.len() > MAX_ITEMS || keys.len() != puts.len() {
            return Err(refused("1 to 25 puts of distinct keys per call"));
        }
        let stopped = || refused("the batch writer has stopped");
        let (done, outcome) = oneshot::channel();
        self.jobs.send(Job { puts, done }).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

async fn run(client: Client, mut rx: mpsc::Receiver<Job>, batches: Arc<AtomicU64>) {
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut keys: HashSet<(String, String)> = first.puts.iter().map(Put::key).collect();
        let mut batch = vec![first];
        let mut count = keys.len();
        // Everything already waiting that fits; the first job that does not
        // (too many items, or a key already in this call) opens the next.
        while count < MAX_ITEMS {
            let Ok(job) = rx.try_recv() else { break };
            let job_keys: Vec<_> = job.puts.iter().map(Put::key).collect();
            if count + job_keys.len() > MAX_ITEMS || job_keys.iter().any(|k| keys.contains(k)) {
                held = Some(job);
                break;
            }
            count += job_keys.len();
            keys.extend(job_keys);
            batch.push(job);
        }
        let puts: Vec<Put> = batch.iter().flat_map(|job| job.puts.iter().cloned()).collect();
        let outcome = write(&client, puts).await;
        batches.fetch_add(1, Ordering::Relaxed);
        metrics::histogram!("failsoft_store_batch_items").record(count as f64);
        if outcome.is_err() && batch.len() > 1 {
            // Whose puts failed is not known: each caller again, alone.
            for job in batch {
                let outcome = write(&client, job.puts).await;
                batches.fetch_add(1, Ordering::Relaxed);
                let _ = job.done.send(outcome);
            }
            continue;
        }
        for job in batch {
            let _ = job.done.send(outcome.clone());
        }
    }
}

/// One batch: sent, then its unprocessed items again, a bounded few times.
pub(crate) async fn write(client: &Client, puts: Vec<Put>) -> Result<(), StoreError> {
    let mut pending: std::collections::HashMap<String, Vec<WriteRequest>> = std::collections::HashMap::new();
    for put in puts {
        let request = PutRequest::builder()
            .set_item(Some(put.item))
            .build()
            .map_err(|e| StoreError::new("BatchWriteItem", e.to_string()))?;
        pending.entry(put.table).or_default().push(WriteRequest::builder().put_request(request).build());
    }
    let mut backoff = UNPROCESSED_BACKOFF;
    for attempt in 0..=UNPROCESSED_RETRIES {
        if attempt > 0 {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        let mut tables: Vec<&str> = pending.keys().map(String::as_str).collect();
        tables.sort_unstable();
        let tables = tables.join(",");
        let out = client
            .batch_write_item()
            .set_request_items(Some(std::mem::take(&mut pending)))
            .send()
            .await
            .map_err(|e| store_error("BatchWriteItem", &tables, &e))?;
        match out.unprocessed_items {
            Some(left) if left.values().any(|requests| !requests.is_empty()) => pending = left,
            _ => return Ok(()),
        }
    }
    let left: usize = pending.values().map(Vec::len).sum();
    Err(StoreError::new("BatchWriteItem", format!("{left} items still unprocessed after retries")))
}
