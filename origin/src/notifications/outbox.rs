//! The events on their way to SQS: a bounded buffer between the socket and
//! `SendMessage`, so a slow or unreachable SQS never stalls the socket
//! (Genesys closes a channel whose client does not read) and never costs
//! an event silently.
//!
//! Events are sent one at a time, in arrival order, each retried with
//! full-jitter backoff until SQS takes it. A full buffer refuses the new
//! event, and the refusal is counted (`…_refused_total`) and logged with
//! the event's id, so an operator can reconcile it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use failsoft_shared::backoff::Backoff;
use failsoft_shared::envelope::Envelope;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::clock;

/// The dedup window argument of [`Envelope::dedup_id`]: events deduplicate
/// on their id, so it is unused, but must be positive.
const UNUSED_WINDOW_MS: u64 = 1;
/// SQS's largest message body: a bigger event would be refused on every
/// retry and block the events behind it, so it is refused once, counted.
const SQS_BODY_MAX: usize = 256 * 1024;

/// The producer side: the session loop pushes, a task sends.
pub struct Outbox {
    tx: mpsc::Sender<Envelope<Value>>,
    pending: Arc<AtomicUsize>,
}

/// The sending task and how many events it still holds.
pub struct Sender {
    task: JoinHandle<()>,
    pending: Arc<AtomicUsize>,
}

impl Outbox {
    /// Starts the sending task with room for `capacity` events.
    pub fn start(sqs: aws_sdk_sqs::Client, queue_url: String, capacity: usize, backoff: Backoff) -> (Self, Sender) {
        let (tx, rx) = mpsc::channel(capacity);
        let pending = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(send_all(rx, sqs, queue_url, backoff, Arc::clone(&pending)));
        (Self { tx, pending: Arc::clone(&pending) }, Sender { task, pending })
    }

    /// Queues an event for SQS; `false` (counted and logged) when the
    /// buffer is full.
    pub fn push(&self, envelope: Envelope<Value>) -> bool {
        let id = envelope.correlation_id.clone();
        self.pending.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(envelope) {
            Ok(()) => {
                metrics::gauge!(super::BUFFERED).set(self.pending.load(Ordering::SeqCst) as f64);
                true
            }
            Err(_) => {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                metrics::counter!(super::REFUSED).increment(1);
                tracing::error!(%id, "event refused: the buffer for SQS is full");
                false
            }
        }
    }
}

impl Sender {
    /// Waits up to `flush` for the buffer to drain (the [`Outbox`] must be
    /// dropped first); returns how many events were left unsent.
    pub async fn flush(self, flush: Duration) -> usize {
        let mut task = self.task;
        if tokio::time::timeout(flush, &mut task).await.is_err() {
            task.abort();
        }
        let unsent = self.pending.load(Ordering::SeqCst);
        if unsent > 0 {
            metrics::counter!(super::UNSENT_AT_EXIT).increment(unsent as u64);
            tracing::error!(unsent, "events still unsent to SQS at exit");
        }
        unsent
    }
}

async fn send_all(
    mut rx: mpsc::Receiver<Envelope<Value>>,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    backoff: Backoff,
    pending: Arc<AtomicUsize>,
) {
    while let Some(envelope) = rx.recv().await {
        let body = serde_json::to_string(&envelope).expect("an envelope serialises");
        if body.len() > SQS_BODY_MAX {
            metrics::counter!(super::REFUSED).increment(1);
            tracing::error!(id = %envelope.correlation_id, bytes = body.len(), "event refused: larger than SQS takes");
            pending.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let mut attempt = 0u32;
        loop {
            let sent = sqs
                .send_message()
                .queue_url(&queue_url)
                .message_body(&body)
                .message_group_id(envelope.group_id())
                .message_deduplication_id(envelope.dedup_id(UNUSED_WINDOW_MS))
                .send()
                .await;
            match sent {
                Ok(_) => break,
                Err(e) => {
                    let denied = crate::access::check("sqs:SendMessage", &queue_url, &e);
                    let delay = Duration::from_millis(backoff.delay_ms(attempt, clock::random_u64()));
                    metrics::counter!(super::SQS_ERRORS).increment(1);
                    if !denied {
                        tracing::warn!(
                            id = %envelope.correlation_id,
                            attempt,
                            retry_in_ms = delay.as_millis() as u64,
                            error = %DisplayErrorContext(&e),
                            "SQS did not take an event; retrying"
                        );
                    }
                    attempt = attempt.saturating_add(1);
                    tokio::time::sleep(delay).await;
                }
            }
        }
        let left = pending.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        metrics::counter!(super::QUEUED).increment(1);
        metrics::gauge!(super::BUFFERED).set(left as f64);
    }
}
