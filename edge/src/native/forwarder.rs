//! The native host's forwarder: SQS when `FAILSOFT_QUEUE_URL` is set (the
//! same signed `SendMessage` bytes as the Wasm hosts). Without it, writes
//! are answered `NOT_ACCEPTED`: nothing would ever deliver them. Only a
//! process started for development (`--dev-local-queue`) keeps them in an
//! in-process queue, which nothing drains and which dies with the process.
//! With `FAILSOFT_OUTBOX_DIR`, a write SQS does not take in time is kept in
//! the journal outbox (`outbox.rs`) and sent on when SQS answers again.

use std::sync::Arc;

use super::{LocalQueue, NativeOutbox, ReqwestDownstream, SystemClock};
use crate::outbox::WithOutbox;
use crate::ports::{Forwarder, PortError, QueueMessage};
use crate::sqs::{NoQueue, SqsOr};

/// Where the native host forwards without SQS.
pub enum WithoutSqs {
    /// `--dev-local-queue`: the in-process queue (tests, the demo).
    DevLocalQueue(Arc<LocalQueue>),
    /// Nowhere: every forward fails, so a write is `NOT_ACCEPTED`, never a
    /// `PENDING` that nothing backs.
    Refuse(NoQueue),
}

impl Forwarder for WithoutSqs {
    async fn forward(&self, message: &QueueMessage, deadline_ms: u64) -> Result<(), PortError> {
        match self {
            Self::DevLocalQueue(queue) => queue.forward(message, deadline_ms).await,
            Self::Refuse(none) => none.forward(message, deadline_ms).await,
        }
    }
}

/// SQS (or the fallback) with the journal outbox behind it when
/// `FAILSOFT_OUTBOX_DIR` is set.
pub type NativeForwarder = WithOutbox<SqsOr<ReqwestDownstream, SystemClock, WithoutSqs>, Option<NativeOutbox>>;
