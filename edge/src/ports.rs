//! The ports a host implements: key-value store, downstream HTTP, queue
//! forwarder, clock and randomness.
//!
//! The traits use `async fn` without a `Send` bound on purpose: Workers and
//! Spin run single-threaded, and the native host's concrete types are `Send`,
//! which the compiler sees through the concrete instantiation.
#![allow(async_fn_in_trait)]

use crate::kv_outbox::Drained;

/// A failure of a port: the facade degrades around it and never surfaces it
/// to Genesys as an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PortError(pub String);

/// An eventually consistent key-value store with expiry.
pub trait Kv {
    async fn get(&self, key: &str) -> Result<Option<String>, PortError>;
    /// Stores `value` for `ttl_secs` seconds.
    async fn put(&self, key: &str, value: &str, ttl_secs: u64) -> Result<(), PortError>;
    async fn delete(&self, key: &str) -> Result<(), PortError>;
}

/// An outbound HTTP request to the downstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// The downstream's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundResponse {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Vec<u8>,
}

/// Why no response arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    /// The deadline passed first.
    Timeout,
    /// No connection could be made, or it broke.
    Connect,
}

/// HTTP to the downstream system, bounded by a deadline the host enforces
/// (the whole exchange, body included, must finish within it).
pub trait Downstream {
    async fn send(&self, request: OutboundRequest, deadline_ms: u64) -> Result<OutboundResponse, TransportError>;
}

/// A queue message ready to send: the FIFO group, the deduplication id and
/// the exact body bytes, identical on every host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub group_id: String,
    pub dedup_id: String,
    pub body: String,
}

/// Where a write was kept when [`Forwarder::forward_write`] succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// The queue acknowledged it.
    Queue,
    /// The queue did not in time; the host's outbox holds it durably and
    /// sends it on later (`crate::outbox`).
    Outbox,
}

/// What an outbox holds now, for metrics, the traffic report and health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub entries: u64,
    pub bytes: u64,
    /// When the oldest entry was written (ms since the epoch), if any.
    pub oldest_at_ms: Option<u64>,
}

/// The durable queue toward the origin (SQS FIFO in production).
pub trait Forwarder {
    /// Returns once the queue has acknowledged the message, or fails
    /// within `deadline_ms`.
    async fn forward(&self, message: &QueueMessage, deadline_ms: u64) -> Result<(), PortError>;

    /// Forwards a write, which must not be lost: a host with an outbox
    /// keeps it there when the queue does not take it in time. Without
    /// one, the same as [`Self::forward`].
    async fn forward_write(&self, message: &QueueMessage, deadline_ms: u64) -> Result<Kept, PortError> {
        self.forward(message, deadline_ms).await.map(|()| Kept::Queue)
    }

    /// What the host's outbox holds, when it has one.
    fn backlog(&self) -> Option<Backlog> {
        None
    }

    /// Sends on up to `max` entries of an outbox that requests drain
    /// (`crate::kv_outbox`, Spin's); `full` also repairs its index. `None`
    /// when the host's outbox drains itself, or it has none.
    async fn drain_outbox(&self, _max: usize, _full: bool) -> Option<Result<Drained, PortError>> {
        None
    }
}

/// Time and randomness, from the host.
pub trait Clock {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// A uniformly random `u64`.
    fn random_u64(&self) -> u64;
    /// Ends after `ms` milliseconds, woken by the host's own timer: a
    /// coalesced lookup's follower looks for its leader's answer between
    /// sleeps (`crate::coalesce::follow`). On a Worker it must be the
    /// request's own I/O: a request waiting on nothing of its own is
    /// cancelled as hung, and one woken by another request's I/O may not
    /// make a response.
    async fn sleep_ms(&self, ms: u64);
}

impl<T: Forwarder> Forwarder for std::sync::Arc<T> {
    async fn forward(&self, message: &QueueMessage, deadline_ms: u64) -> Result<(), PortError> {
        (**self).forward(message, deadline_ms).await
    }

    async fn forward_write(&self, message: &QueueMessage, deadline_ms: u64) -> Result<Kept, PortError> {
        (**self).forward_write(message, deadline_ms).await
    }

    fn backlog(&self) -> Option<Backlog> {
        (**self).backlog()
    }

    async fn drain_outbox(&self, max: usize, full: bool) -> Option<Result<Drained, PortError>> {
        (**self).drain_outbox(max, full).await
    }
}
