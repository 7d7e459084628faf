//! Deletes of delivered messages, grouped into `DeleteMessageBatch` calls.
//!
//! Every delivered message ends in a delete, and a call per delete was half
//! of what a drain asked of SQS (each message also shares a receive and a
//! `BatchWriteItem`). Here, as in [`crate::store::batch_write`], one task
//! deletes while the others wait: the deletes that arrive during a call go
//! out together in the next one, up to SQS's 10 entries (group commit).
//! Alone, a delete goes out at once; nothing waits on a timer, so a group's
//! next message is unlocked as soon as before.
//!
//! Each caller learns whether its own delete was taken. SQS authorises a
//! `DeleteMessageBatch` as `sqs:DeleteMessage`, the action the template
//! grants the worker. A delete that fails leaves its message to come back
//! when its visibility ends; it then finds its result and is deleted again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use tokio::sync::{mpsc, oneshot};

/// SQS's limit of entries in one `DeleteMessageBatch`.
pub const MAX_ENTRIES: usize = 10;
/// Callers that may wait for the deleting task before `delete` itself waits.
const QUEUE_DEPTH: usize = 256;
/// The histogram of entries per call.
pub const BATCH_ENTRIES: &str = "failsoft_queue_delete_batch_entries";

/// Why a delete was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeleteError {
    /// IAM refused it: recorded for `/v1/health` (see [`crate::access`]).
    #[error("sqs:DeleteMessage denied")]
    Denied,
    #[error("{0}")]
    Failed(String),
}

struct Job {
    receipt: String,
    done: oneshot::Sender<Result<(), DeleteError>>,
}

/// The handle callers delete through; cheap to clone.
#[derive(Clone)]
pub struct Deletes {
    jobs: mpsc::Sender<Job>,
    calls: Arc<AtomicU64>,
}

impl Deletes {
    /// Starts the deleting task (it ends when every handle is dropped).
    pub fn start(sqs: Client, queue_url: String) -> Self {
        let (jobs, rx) = mpsc::channel(QUEUE_DEPTH);
        let calls = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(sqs, queue_url, rx, Arc::clone(&calls)));
        Self { jobs, calls }
    }

    /// `DeleteMessageBatch` calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Deletes the message received with `receipt`; returns once SQS has
    /// answered for it (an error says why it was not deleted).
    pub async fn delete(&self, receipt: &str) -> Result<(), DeleteError> {
        let stopped = || DeleteError::Failed("the deleting task has stopped".to_owned());
        let (done, outcome) = oneshot::channel();
        self.jobs.send(Job { receipt: receipt.to_owned(), done }).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

async fn run(sqs: Client, queue_url: String, mut rx: mpsc::Receiver<Job>, calls: Arc<AtomicU64>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_ENTRIES {
            let Ok(job) = rx.try_recv() else { break };
            batch.push(job);
        }
        let entries = batch
            .iter()
            .enumerate()
            .map(|(i, job)| {
                DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(&job.receipt).build()
            })
            .collect::<Result<Vec<_>, _>>();
        let entries = match entries {
            Ok(entries) => entries,
            Err(e) => {
                for job in batch {
                    let _ = job.done.send(Err(DeleteError::Failed(e.to_string())));
                }
                continue;
            }
        };
        calls.fetch_add(1, Ordering::Relaxed);
        metrics::histogram!(BATCH_ENTRIES).record(batch.len() as f64);
        match sqs.delete_message_batch().queue_url(&queue_url).set_entries(Some(entries)).send().await {
            Ok(out) => {
                for (i, job) in batch.into_iter().enumerate() {
                    let id = i.to_string();
                    let failed = out.failed().iter().find(|f| f.id() == id);
                    let outcome = match failed {
                        Some(f) => {
                            Err(DeleteError::Failed(format!("{}: {}", f.code(), f.message().unwrap_or("refused"))))
                        }
                        None => Ok(()),
                    };
                    let _ = job.done.send(outcome);
                }
            }
            Err(e) => {
                // A denial is recorded for /v1/health here; callers log the rest.
                let why = if crate::access::check("sqs:DeleteMessage", &queue_url, &e) {
                    DeleteError::Denied
                } else {
                    DeleteError::Failed(DisplayErrorContext(&e).to_string())
                };
                for job in batch {
                    let _ = job.done.send(Err(why.clone()));
                }
            }
        }
    }
}
