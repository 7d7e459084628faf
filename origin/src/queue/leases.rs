//! The visibility heartbeat: every message the worker holds (being
//! delivered, or waiting behind an earlier message of its group) has its
//! visibility extended before it runs out, so a slow delivery is never
//! handed to a second consumer.
//!
//! Finishing a message (delete, backoff, release) first takes it out of
//! this registry, under the same lock the heartbeat holds while it calls
//! SQS, so a heartbeat can never land after, and undo, a backoff delay.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry;
use tokio::sync::{Mutex, watch};

/// SQS's batch size for ChangeMessageVisibilityBatch.
const BATCH: usize = 10;

struct Held {
    receipt: String,
    extended_at: Instant,
}

/// The messages this worker holds, by message id.
pub struct Leases {
    held: Mutex<HashMap<String, Held>>,
    visibility: Duration,
}

impl Leases {
    pub fn new(visibility_secs: u64) -> Arc<Self> {
        Arc::new(Self { held: Mutex::new(HashMap::new()), visibility: Duration::from_secs(visibility_secs.max(1)) })
    }

    /// Starts covering a message just received (its visibility starts now).
    pub async fn hold(&self, message_id: &str, receipt: &str) {
        let held = Held { receipt: receipt.to_owned(), extended_at: Instant::now() };
        self.held.lock().await.insert(message_id.to_owned(), held);
    }

    /// Stops covering a message. Once this returns no heartbeat for it is in
    /// flight, so the caller may set its visibility or delete it.
    pub async fn release(&self, message_id: &str) {
        self.held.lock().await.remove(message_id);
    }

    pub async fn len(&self) -> usize {
        self.held.lock().await.len()
    }

    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }

    /// Extends, every quarter of the visibility timeout, each held message
    /// that has used half of it, until `stop` turns true. Extending at half
    /// leaves a quarter of the timeout as the margin for a slow SQS call.
    pub async fn heartbeat(self: Arc<Self>, sqs: Client, queue_url: String, mut stop: watch::Receiver<bool>) {
        let tick = (self.visibility / 4).max(Duration::from_millis(250));
        let visibility_secs = self.visibility.as_secs() as i32;
        loop {
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                _ = stop.wait_for(|stopping| *stopping) => return,
            }
            let mut held = self.held.lock().await;
            let due: Vec<(String, String)> = held
                .iter()
                .filter(|(_, h)| h.extended_at.elapsed() >= self.visibility / 2)
                .map(|(id, h)| (id.clone(), h.receipt.clone()))
                .collect();
            for chunk in due.chunks(BATCH) {
                let entries: Vec<_> = chunk
                    .iter()
                    .enumerate()
                    .filter_map(|(i, (_, receipt))| {
                        ChangeMessageVisibilityBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(receipt)
                            .visibility_timeout(visibility_secs)
                            .build()
                            .ok()
                    })
                    .collect();
                let sent_at = Instant::now();
                match sqs
                    .change_message_visibility_batch()
                    .queue_url(&queue_url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                {
                    Ok(out) => {
                        let failed: Vec<usize> = out.failed.iter().filter_map(|f| f.id.parse().ok()).collect();
                        for (i, (id, _)) in chunk.iter().enumerate() {
                            if failed.contains(&i) {
                                tracing::warn!(message_id = %id, "visibility heartbeat refused for a message");
                            } else if let Some(h) = held.get_mut(id) {
                                h.extended_at = sent_at;
                            }
                        }
                    }
                    Err(e) => {
                        if !crate::access::check("sqs:ChangeMessageVisibility", &queue_url, &e) {
                            tracing::warn!(
                                error = %aws_sdk_sqs::error::DisplayErrorContext(&e),
                                "visibility heartbeat failed; retrying next tick"
                            )
                        }
                    }
                }
            }
            drop(held);
        }
    }
}
