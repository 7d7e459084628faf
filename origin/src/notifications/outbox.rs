//! The events on their way to SQS: a bounded buffer between the socket and
//! `SendMessage`, so a slow or unreachable SQS never stalls the socket
//! (Genesys closes a channel whose client does not read) and never costs
//! an event silently.
//!
//! Events are sent one at a time, in arrival order, each retried with
//! full-jitter backoff until SQS takes it. A full buffer refuses the new
//! event, and the refusal is counted (`…_refused_total`) and logged with
//! the event's id, so an operator can reconcile it.
//!
//! SQS's errors are told apart ([`verdict`]): an outage, throttling or a
//! refused permission is the queue's trouble and is retried (the events
//! behind wait, in order, in the buffer); a refusal of the message itself
//! (too large for the queue, characters SQS does not take, an invalid
//! parameter) would be refused on every retry, block the head of the line
//! and, once the buffer filled, lose every new event. Such an event is
//! parked: taken out of the line, counted
//! (`…_parked_total{reason}`), logged with its id and size (never its
//! body) and alerted (`FAILSOFT_ALERT_URL`), so an operator reconciles it
//! from Genesys; the events behind it go on.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata};
use failsoft_shared::backoff::Backoff;
use failsoft_shared::envelope::Envelope;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::clock;
use crate::dead_letter::alerts::{Alert, Alerts};

/// The dedup window argument of [`Envelope::dedup_id`]: events deduplicate
/// on their id, so it is unused, but must be positive.
const UNUSED_WINDOW_MS: u64 = 1;
/// SQS's largest message body: a bigger event would be refused on every
/// retry and block the events behind it, so it is parked without a try.
const SQS_BODY_MAX: usize = 256 * 1024;
/// The `errorClass` of a parked event's alert.
pub const PARKED_CLASS: &str = "sqs_refused";
/// What to do with an event SQS did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The queue's trouble (an outage, throttling, a refused permission):
    /// try again.
    Retry,
    /// The message's own: SQS will never take it. The code says why.
    Park(String),
}

/// Tells an SQS error `code` (as the SDK reports it: `InvalidParameterValue`,
/// or its query-compatible `AWS.SimpleQueueService.…` form) apart.
pub fn verdict(code: Option<&str>) -> Verdict {
    match code.and_then(failsoft_shared::sqs_refusal::refuses_the_message) {
        Some(c) => Verdict::Park(c.to_owned()),
        None => Verdict::Retry,
    }
}

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
    /// Starts the sending task with room for `capacity` events; parked
    /// events are alerted through `alerts`.
    pub fn start(
        sqs: aws_sdk_sqs::Client,
        queue_url: String,
        capacity: usize,
        backoff: Backoff,
        alerts: Alerts,
    ) -> (Self, Sender) {
        let (tx, rx) = mpsc::channel(capacity);
        let pending = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(send_all(rx, Sqs { sqs, queue_url, backoff, alerts }, Arc::clone(&pending)));
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

/// Where the sending task sends, and whom it tells about a parked event.
struct Sqs {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    backoff: Backoff,
    alerts: Alerts,
}

async fn send_all(mut rx: mpsc::Receiver<Envelope<Value>>, to: Sqs, pending: Arc<AtomicUsize>) {
    while let Some(envelope) = rx.recv().await {
        let body = serde_json::to_string(&envelope).expect("an envelope serialises");
        if body.len() > SQS_BODY_MAX {
            park(&to, &envelope, body.len(), "MessageTooLarge", 0);
        } else {
            send_one(&to, &envelope, &body).await;
        }
        let left = pending.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        metrics::gauge!(super::BUFFERED).set(left as f64);
    }
}

/// Sends one event until SQS takes it, or parks it once SQS says it never
/// will.
async fn send_one(to: &Sqs, envelope: &Envelope<Value>, body: &str) {
    let mut attempt = 0u32;
    loop {
        let sent = to
            .sqs
            .send_message()
            .queue_url(&to.queue_url)
            .message_body(body)
            .message_group_id(envelope.group_id())
            .message_deduplication_id(envelope.dedup_id(UNUSED_WINDOW_MS))
            .send()
            .await;
        let e = match sent {
            Ok(_) => {
                metrics::counter!(super::QUEUED).increment(1);
                return;
            }
            Err(e) => e,
        };
        metrics::counter!(super::SQS_ERRORS).increment(1);
        let denied = crate::access::check("sqs:SendMessage", &to.queue_url, &e);
        if !denied && let Verdict::Park(code) = verdict(e.code()) {
            tracing::warn!(id = %envelope.correlation_id, message = e.message().unwrap_or_default(), "SQS refuses this event");
            park(to, envelope, body.len(), &code, attempt.saturating_add(1));
            return;
        }
        let delay = Duration::from_millis(to.backoff.delay_ms(attempt, clock::random_u64()));
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

/// Sets aside an event SQS will never take: counted by reason, logged with
/// its id and size, alerted. Its body stays out of logs and alerts (it is
/// the customer's); Genesys still has the event by its id.
fn park(to: &Sqs, envelope: &Envelope<Value>, bytes: usize, code: &str, attempts: u32) {
    metrics::counter!(super::PARKED, "reason" => code.to_owned()).increment(1);
    tracing::error!(
        id = %envelope.correlation_id,
        reason = code,
        bytes,
        "event parked: SQS will never take it; reconcile it from Genesys by its id"
    );
    let now = clock::now_ms();
    to.alerts.raise(Alert {
        correlation_id: envelope.correlation_id.clone(),
        kind: envelope.kind.as_str().to_owned(),
        reason: format!("SQS_REFUSED_{code}"),
        error_class: PARKED_CLASS.to_owned(),
        last_status: None,
        attempts,
        first_attempt_at_ms: envelope.submitted_at,
        last_attempt_at_ms: now,
        queue_message_id: String::new(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_of_the_message_parks_it_and_the_queue_s_trouble_is_retried() {
        assert_eq!(verdict(Some("InvalidParameterValue")), Verdict::Park("InvalidParameterValue".into()));
        assert_eq!(verdict(Some("InvalidMessageContents")), Verdict::Park("InvalidMessageContents".into()));
        assert_eq!(
            verdict(Some("AWS.SimpleQueueService.InvalidParameterValue")),
            Verdict::Park("InvalidParameterValue".into())
        );
        for retried in
            [None, Some("RequestThrottled"), Some("AWS.SimpleQueueService.NonExistentQueue"), Some("AccessDenied")]
        {
            assert_eq!(verdict(retried), Verdict::Retry, "{retried:?}");
        }
    }
}
