//! The native host's forwarder: SQS when `FAILSOFT_QUEUE_URL` is set (the
//! same signed `SendMessage` bytes as the Wasm hosts). Without it, writes
//! are answered `NOT_ACCEPTED`: nothing would ever deliver them. Only a
//! process started for development (`--dev-local-queue`) keeps them in an
//! in-process queue, which nothing drains and which dies with the process.

use std::sync::Arc;

use super::{LocalQueue, ReqwestDownstream, SystemClock};
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

pub type NativeForwarder = SqsOr<ReqwestDownstream, SystemClock, WithoutSqs>;
