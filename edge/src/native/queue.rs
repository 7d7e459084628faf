//! The native host's development queue (`--dev-local-queue`), for running
//! without SQS: an in-process FIFO queue with SQS FIFO's five-minute
//! deduplication, behind the same port. Not durable: production sends to
//! SQS.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ports::{Forwarder, PortError, QueueMessage};

/// SQS FIFO's deduplication interval.
const DEDUP_INTERVAL: Duration = Duration::from_secs(300);

#[derive(Default)]
struct State {
    messages: VecDeque<QueueMessage>,
    seen: HashMap<String, Instant>,
}

/// A bounded in-process queue. When full, it refuses, as a real queue that
/// cannot take a message would: the facade then answers `NOT_ACCEPTED`
/// instead of a `PENDING` nothing backs.
pub struct LocalQueue {
    capacity: usize,
    state: Mutex<State>,
}

impl LocalQueue {
    pub fn new(capacity: usize) -> Self {
        Self { capacity, state: Mutex::new(State::default()) }
    }

    /// Messages accepted and not yet taken.
    pub fn depth(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).messages.len()
    }

    /// Takes up to `max` messages in order.
    pub fn drain(&self, max: usize) -> Vec<QueueMessage> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let n = max.min(state.messages.len());
        state.messages.drain(..n).collect()
    }
}

impl Forwarder for LocalQueue {
    async fn forward(&self, message: &QueueMessage, _deadline_ms: u64) -> Result<(), PortError> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.seen.retain(|_, at| now.duration_since(*at) < DEDUP_INTERVAL);
        if state.seen.contains_key(&message.dedup_id) {
            // Accepted before: acknowledged again, not queued twice.
            return Ok(());
        }
        if state.messages.len() >= self.capacity {
            return Err(PortError(format!("local queue full ({} messages)", self.capacity)));
        }
        state.seen.insert(message.dedup_id.clone(), now);
        state.messages.push_back(message.clone());
        metrics::gauge!("failsoft_edge_local_queue_depth").set(state.messages.len() as f64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(dedup: &str) -> QueueMessage {
        QueueMessage { group_id: "g".into(), dedup_id: dedup.into(), body: "{}".into() }
    }

    #[tokio::test]
    async fn deduplicates_and_refuses_when_full() {
        let q = LocalQueue::new(2);
        q.forward(&msg("a"), 10).await.unwrap();
        q.forward(&msg("a"), 10).await.unwrap();
        assert_eq!(q.depth(), 1);
        q.forward(&msg("b"), 10).await.unwrap();
        assert!(q.forward(&msg("c"), 10).await.is_err());
        assert_eq!(q.drain(10).len(), 2);
    }
}
