//! The queue toward the origin: SQS FIFO through `fetch`, signed by the
//! core's [`SqsForwarder`], so the Worker enqueues the same bytes as every
//! other host.
//!
//! A Worker has nowhere to keep a queue of its own: without
//! `FAILSOFT_QUEUE_URL` every forward fails, so refreshes are dropped
//! (logged and counted by the core) and a write the CRM does not take is
//! answered `NOT_ACCEPTED`, never a `PENDING` that nothing backs.

use failsoft_edge::ports::{Forwarder, PortError, QueueMessage};
use failsoft_edge::sqs::{SqsForwarder, SqsSettings};

use crate::{FetchDownstream, JsClock};

pub enum WorkerForwarder {
    Sqs(SqsForwarder<FetchDownstream, JsClock>),
    Unconfigured,
}

impl WorkerForwarder {
    pub fn new(settings: Option<SqsSettings>, http: FetchDownstream, clock: JsClock) -> Self {
        match settings {
            Some(settings) => Self::Sqs(SqsForwarder::new(settings, http, clock)),
            None => {
                tracing::warn!("FAILSOFT_QUEUE_URL is unset: refreshes are dropped and failed writes not accepted");
                Self::Unconfigured
            }
        }
    }
}

impl Forwarder for WorkerForwarder {
    async fn forward(&self, message: &QueueMessage, deadline_ms: u64) -> Result<(), PortError> {
        match self {
            Self::Sqs(sqs) => sqs.forward(message, deadline_ms).await,
            Self::Unconfigured => Err(PortError("no queue: FAILSOFT_QUEUE_URL is unset".to_owned())),
        }
    }
}
