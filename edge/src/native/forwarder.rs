//! The native host's forwarder: SQS when `FAILSOFT_QUEUE_URL` is set (the
//! same signed `SendMessage` bytes as the Wasm hosts), else the in-process
//! queue for a single-process setup.

use std::sync::Arc;

use super::{LocalQueue, ReqwestDownstream, SystemClock};
use crate::ports::{Forwarder, PortError, QueueMessage};
use crate::sqs::SqsForwarder;

pub enum NativeForwarder {
    Local(Arc<LocalQueue>),
    Sqs(SqsForwarder<ReqwestDownstream, SystemClock>),
}

impl Forwarder for NativeForwarder {
    async fn forward(&self, message: &QueueMessage, deadline_ms: u64) -> Result<(), PortError> {
        match self {
            Self::Local(queue) => queue.forward(message, deadline_ms).await,
            Self::Sqs(sqs) => sqs.forward(message, deadline_ms).await,
        }
    }
}
