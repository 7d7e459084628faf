//! The write outbox: a write the queue does not take within its share of
//! the deadline is kept durably at the edge and sent on later, so it is
//! answered `PENDING` instead of `NOT_ACCEPTED` while SQS is out of reach.
//!
//! The decisions are here, once for every host; the storage is the host's
//! ([`OutboxStore`]: a journal on disk natively). The rules:
//!
//! - **Order per entity.** While an entry of a write's FIFO group waits in
//!   the outbox, the write goes behind it without trying the queue, so one
//!   caller's writes reach SQS in the order they were answered.
//! - **Room first.** Whether the outbox has room is asked *before* the
//!   queue attempt. A write whose `SendMessage` timed out may still have
//!   reached SQS; refusing it for room afterwards would answer
//!   `NOT_ACCEPTED` for a write that is later delivered. Without room, the
//!   queue gets the whole deadline, as it would without an outbox.
//! - **Exactly once.** An entry keeps its group, deduplication id and body
//!   byte for byte. A timed-out send that did reach SQS and the outbox's
//!   later send of the same entry are one message to SQS within its
//!   five-minute deduplication window; after it, the origin's write-once
//!   claim on the correlationId keeps the CRM from seeing it twice.
//! - **Nothing around the loop forever.** An entry SQS refuses for itself
//!   ([`crate::sqs::refused_code`]: too large, characters it does not take)
//!   is set aside with its reason; the queue's own trouble is retried with
//!   full-jitter backoff.
//!
//! `async fn` in the trait without a `Send` bound, as in [`crate::ports`].
#![allow(async_fn_in_trait)]

use failsoft_shared::backoff::Backoff;
use failsoft_shared::envelope::Envelope;

use crate::kv_outbox::Drained;
use crate::ports::{Backlog, Forwarder, Kept, PortError, QueueMessage};

/// The default caps of every host's outbox (`FAILSOFT_OUTBOX_MAX_ENTRIES`,
/// `FAILSOFT_OUTBOX_MAX_BYTES`): past either, a write the queue does not
/// take is `NOT_ACCEPTED`, as without an outbox.
pub const DEFAULT_MAX_ENTRIES: u64 = 100_000;
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// The caps from a host's settings (defaults above; each at least 1).
pub fn caps(lookup: impl Fn(&str) -> Option<String>) -> Result<(u64, u64), failsoft_shared::config::ConfigError> {
    use failsoft_shared::config::{ConfigError, number};
    let entries = number(&lookup, "FAILSOFT_OUTBOX_MAX_ENTRIES", DEFAULT_MAX_ENTRIES)?;
    let bytes = number(&lookup, "FAILSOFT_OUTBOX_MAX_BYTES", DEFAULT_MAX_BYTES)?;
    if entries == 0 {
        return Err(ConfigError::new("FAILSOFT_OUTBOX_MAX_ENTRIES", "must be at least 1"));
    }
    if bytes < 1024 {
        return Err(ConfigError::new("FAILSOFT_OUTBOX_MAX_BYTES", "must be at least 1024"));
    }
    Ok((entries, bytes))
}

/// The share of a write's queue deadline its first `SendMessage` gets; the
/// rest is the outbox's, to store the write when the queue did not answer.
pub const QUEUE_SHARE_PERCENT: u64 = 50;
/// How long one `SendMessage` of a drain may take: nobody waits on it.
pub const DRAIN_SEND_DEADLINE_MS: u64 = 5_000;
/// The drain's backoff while the queue is out of reach.
pub const DRAIN_BACKOFF: Backoff = Backoff { base_ms: 250, cap_ms: 10_000 };

/// The durable storage of a host's outbox.
pub trait OutboxStore {
    /// Whether an entry of `group` waits: a new write of the same entity
    /// must queue behind it.
    async fn holds(&self, group: &str) -> bool;
    /// Whether one more message of `bytes` fits under the caps.
    async fn has_room(&self, bytes: usize) -> bool;
    /// Stores `message`; returns once the storage acknowledged it. May go
    /// past the caps: room was granted before the queue attempt.
    async fn append(&self, message: &QueueMessage) -> Result<(), PortError>;
    /// What it holds now, when it knows (`None`: no outbox, or a store
    /// this instance has not read).
    fn backlog(&self) -> Option<Backlog>;
    /// Sends on up to `max` entries to `queue`, for a store that requests
    /// drain (`crate::kv_outbox`); `None` for one that drains itself.
    async fn drain<F: Forwarder>(&self, _queue: &F, _max: usize, _full: bool) -> Option<Result<Drained, PortError>> {
        None
    }
}

/// No outbox: nothing held, no room, so the queue gets every write's whole
/// deadline, as without this layer.
impl<S: OutboxStore> OutboxStore for Option<S> {
    async fn holds(&self, group: &str) -> bool {
        match self {
            Some(store) => store.holds(group).await,
            None => false,
        }
    }

    async fn has_room(&self, bytes: usize) -> bool {
        match self {
            Some(store) => store.has_room(bytes).await,
            None => false,
        }
    }

    async fn append(&self, message: &QueueMessage) -> Result<(), PortError> {
        match self {
            Some(store) => store.append(message).await,
            None => Err(PortError("no outbox".to_owned())),
        }
    }

    fn backlog(&self) -> Option<Backlog> {
        self.as_ref()?.backlog()
    }

    async fn drain<F: Forwarder>(&self, queue: &F, max: usize, full: bool) -> Option<Result<Drained, PortError>> {
        self.as_ref()?.drain(queue, max, full).await
    }
}

/// A queue with an outbox behind it: what the facade forwards writes to.
pub struct WithOutbox<F, S> {
    pub queue: F,
    pub store: S,
}

impl<F: Forwarder, S: OutboxStore> Forwarder for WithOutbox<F, S> {
    /// Refreshes and everything else that may be dropped: the queue alone.
    async fn forward(&self, message: &QueueMessage, deadline_ms: u64) -> Result<(), PortError> {
        self.queue.forward(message, deadline_ms).await
    }

    async fn forward_write(&self, message: &QueueMessage, deadline_ms: u64) -> Result<Kept, PortError> {
        if self.store.holds(&message.group_id).await {
            return self.keep(message).await;
        }
        if !self.store.has_room(message.body.len()).await {
            metrics::counter!("failsoft_edge_outbox_full_total").increment(1);
            return self.queue.forward(message, deadline_ms).await.map(|()| Kept::Queue);
        }
        let share = deadline_ms.saturating_mul(QUEUE_SHARE_PERCENT) / 100;
        match self.queue.forward(message, share).await {
            Ok(()) => Ok(Kept::Queue),
            // SQS will never take it: the outbox would not either.
            Err(e) if crate::sqs::refused_code(&e).is_some() => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "the queue did not take a write in time; keeping it in the outbox");
                self.keep(message).await
            }
        }
    }

    fn backlog(&self) -> Option<Backlog> {
        self.store.backlog()
    }

    async fn drain_outbox(&self, max: usize, full: bool) -> Option<Result<Drained, PortError>> {
        self.store.drain(&self.queue, max, full).await
    }
}

impl<F, S: OutboxStore> WithOutbox<F, S> {
    async fn keep(&self, message: &QueueMessage) -> Result<Kept, PortError> {
        self.store.append(message).await?;
        metrics::counter!("failsoft_edge_outbox_kept_total").increment(1);
        Ok(Kept::Outbox)
    }
}

/// What became of one attempt to send an outbox entry on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SentOn {
    /// The queue took it: remove it.
    Taken,
    /// The queue's trouble: try again after a backoff.
    Retry(PortError),
    /// SQS refuses the message itself (the code says why): set it aside.
    Refused(&'static str),
}

/// Sends one outbox entry to the queue.
pub async fn send_on<F: Forwarder>(queue: &F, message: &QueueMessage) -> SentOn {
    match queue.forward(message, DRAIN_SEND_DEADLINE_MS).await {
        Ok(()) => {
            metrics::counter!("failsoft_edge_outbox_sent_total").increment(1);
            SentOn::Taken
        }
        Err(e) => match crate::sqs::refused_code(&e) {
            Some(code) => {
                metrics::counter!("failsoft_edge_outbox_refused_total", "reason" => code).increment(1);
                SentOn::Refused(code)
            }
            None => SentOn::Retry(e),
        },
    }
}

/// The correlationId of a queued write, to record what became of it.
pub fn correlation_id_of(message: &QueueMessage) -> Option<String> {
    serde_json::from_str::<Envelope<serde_json::Value>>(&message.body).ok().map(|e| e.correlation_id)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::VecDeque;

    use super::*;

    /// A queue that answers from a script and records what it was sent.
    #[derive(Default)]
    struct Scripted {
        answers: RefCell<VecDeque<Result<(), PortError>>>,
        sent: RefCell<Vec<(String, u64)>>,
    }

    impl Forwarder for Scripted {
        async fn forward(&self, message: &QueueMessage, deadline_ms: u64) -> Result<(), PortError> {
            self.sent.borrow_mut().push((message.dedup_id.clone(), deadline_ms));
            self.answers.borrow_mut().pop_front().unwrap_or(Ok(()))
        }
    }

    #[derive(Default)]
    struct Memory {
        entries: RefCell<Vec<QueueMessage>>,
        room: std::cell::Cell<bool>,
    }

    impl OutboxStore for Memory {
        async fn holds(&self, group: &str) -> bool {
            self.entries.borrow().iter().any(|m| m.group_id == group)
        }
        async fn has_room(&self, _: usize) -> bool {
            self.room.get()
        }
        async fn append(&self, message: &QueueMessage) -> Result<(), PortError> {
            self.entries.borrow_mut().push(message.clone());
            Ok(())
        }
        fn backlog(&self) -> Option<Backlog> {
            Some(Backlog { entries: self.entries.borrow().len() as u64, ..Backlog::default() })
        }
    }

    fn message(group: &str, dedup: &str) -> QueueMessage {
        QueueMessage { group_id: group.into(), dedup_id: dedup.into(), body: "{}".into() }
    }

    fn outbox(answers: Vec<Result<(), PortError>>, room: bool) -> WithOutbox<Scripted, Memory> {
        let queue = Scripted { answers: RefCell::new(answers.into()), ..Scripted::default() };
        let store = Memory::default();
        store.room.set(room);
        WithOutbox { queue, store }
    }

    /// The tests' futures never wait on anything: one poll ends them.
    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("a test future waited"),
        }
    }

    #[test]
    fn a_write_the_queue_takes_never_touches_the_outbox_and_a_slow_one_is_kept() {
        let o = outbox(vec![Ok(()), Err(PortError("SQS unreachable: Timeout".into()))], true);
        assert_eq!(block_on(o.forward_write(&message("a", "1"), 1_000)), Ok(Kept::Queue));
        assert_eq!(block_on(o.forward_write(&message("b", "2"), 1_000)), Ok(Kept::Outbox));
        assert_eq!(*o.queue.sent.borrow(), [("1".to_owned(), 500), ("2".to_owned(), 500)], "half the deadline each");
        assert_eq!(o.backlog().unwrap().entries, 1);
    }

    #[test]
    fn a_write_of_an_entity_with_an_entry_waiting_goes_behind_it_without_trying_the_queue() {
        let o = outbox(vec![Err(PortError("SQS unreachable: Connect".into()))], true);
        assert_eq!(block_on(o.forward_write(&message("a", "1"), 1_000)), Ok(Kept::Outbox));
        assert_eq!(block_on(o.forward_write(&message("a", "2"), 1_000)), Ok(Kept::Outbox));
        assert_eq!(block_on(o.forward_write(&message("b", "3"), 1_000)), Ok(Kept::Queue), "another entity");
        let sent: Vec<String> = o.queue.sent.borrow().iter().map(|(d, _)| d.clone()).collect();
        assert_eq!(sent, ["1", "3"]);
        let kept: Vec<String> = o.store.entries.borrow().iter().map(|m| m.dedup_id.clone()).collect();
        assert_eq!(kept, ["1", "2"], "in the order answered");
    }

    #[test]
    fn without_room_the_queue_gets_the_whole_deadline_and_its_refusal_stands() {
        let o = outbox(vec![Err(PortError("SQS unreachable: Connect".into()))], false);
        assert!(block_on(o.forward_write(&message("a", "1"), 1_000)).is_err());
        assert_eq!(*o.queue.sent.borrow(), [("1".to_owned(), 1_000)]);
        assert_eq!(o.backlog().unwrap().entries, 0);
    }

    #[test]
    fn a_message_sqs_refuses_for_itself_is_not_kept() {
        let refused = PortError("SQS answered 400: com.amazonaws.sqs#InvalidParameterValue too long".into());
        let o = outbox(vec![Err(refused.clone()), Err(refused)], true);
        assert!(block_on(o.forward_write(&message("a", "1"), 1_000)).is_err());
        assert_eq!(o.backlog().unwrap().entries, 0);
        assert_eq!(block_on(send_on(&o.queue, &message("a", "1"))), SentOn::Refused("InvalidParameterValue"));
        let o = outbox(vec![Err(PortError("SQS answered 503: ServiceUnavailable".into()))], true);
        assert!(matches!(block_on(send_on(&o.queue, &message("a", "1"))), SentOn::Retry(_)));
        assert_eq!(block_on(send_on(&o.queue, &message("a", "1"))), SentOn::Taken);
    }

    #[test]
    fn refreshes_go_to_the_queue_alone() {
        let o = outbox(vec![Err(PortError("SQS unreachable: Timeout".into()))], true);
        assert!(block_on(o.forward(&message("a", "1"), 1_000)).is_err());
        assert_eq!(o.backlog().unwrap().entries, 0);
    }

    #[test]
    fn the_correlation_id_is_read_from_the_envelope() {
        let envelope =
            Envelope::new(failsoft_shared::envelope::Kind::Write, "c-1".into(), "e".into(), serde_json::json!({}), 1);
        let body = serde_json::to_string(&envelope).unwrap();
        let m = QueueMessage { group_id: "e".into(), dedup_id: "d".into(), body };
        assert_eq!(correlation_id_of(&m).as_deref(), Some("c-1"));
        assert_eq!(correlation_id_of(&message("a", "1")), None);
    }
}
