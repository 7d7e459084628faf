//! The versioned queue message every host enqueues and the origin consumes.
//!
//! FIFO ordering is per message group, so the group is the customer (the
//! entity key): one group per priority, as the seed had it, would serialise
//! all traffic behind a single stuck message.

use alloc::format;
use alloc::string::String;
use serde::{Deserialize, Serialize};

/// The longest correlationId.
pub const MAX_CORRELATION_ID: usize = 64;

/// Whether `id` may be a correlationId: 1 to 64 letters, digits, `-` or
/// `_`. It goes as it is into FIFO deduplication ids, DynamoDB keys, URLs
/// and headers; the origin keys a refresh's record with a `:`, which no
/// correlationId has, so it never lands on a write's.
pub fn is_valid_correlation_id(id: &str) -> bool {
    (1..=MAX_CORRELATION_ID).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The freshness window a refresh stamped at `submitted_at_ms` falls in:
/// the edge asks for one refresh per customer per window (its
/// deduplication id), and the drill counts them the same way.
pub fn refresh_window(submitted_at_ms: u64, window_ms: u64) -> u64 {
    submitted_at_ms / window_ms.max(1)
}

/// The envelope version this build writes and reads.
pub const ENVELOPE_VERSION: u8 = 1;

/// What a message asks the origin to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Fetch a customer record again and push it to the edge's cache.
    Refresh,
    /// Deliver a write (a case creation) exactly once.
    Write,
    /// Deliver a Genesys event to the downstream.
    Event,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refresh => "refresh",
            Self::Write => "write",
            Self::Event => "event",
        }
    }
}

/// A queue message. `P` is the payload; hosts use a JSON value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<P> {
    pub v: u8,
    pub kind: Kind,
    pub correlation_id: String,
    /// The hashed customer key (never a phone number).
    pub entity_key: String,
    pub payload: P,
    /// Milliseconds since the Unix epoch; the retry budget counts from here.
    pub submitted_at: u64,
}

impl<P> Envelope<P> {
    pub fn new(kind: Kind, correlation_id: String, entity_key: String, payload: P, now_ms: u64) -> Self {
        Self { v: ENVELOPE_VERSION, kind, correlation_id, entity_key, payload, submitted_at: now_ms }
    }

    /// The SQS FIFO `MessageGroupId`: the entity, for per-customer order.
    pub fn group_id(&self) -> &str {
        &self.entity_key
    }

    /// The SQS FIFO `MessageDeduplicationId`. Writes and events deduplicate
    /// on their correlationId. Refreshes deduplicate on the entity and a time
    /// bucket of `refresh_window_ms`, so an outage queues at most one
    /// refresh per customer per window however many calls it answers.
    pub fn dedup_id(&self, refresh_window_ms: u64) -> String {
        match self.kind {
            Kind::Write | Kind::Event => self.correlation_id.clone(),
            Kind::Refresh => {
                format!("r-{}-{}", self.entity_key, refresh_window(self.submitted_at, refresh_window_ms))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refresh(at: u64) -> Envelope<()> {
        Envelope::new(Kind::Refresh, "c-1".into(), "ab".repeat(32), (), at)
    }

    #[test]
    fn correlation_ids_are_short_and_plain() {
        assert!(is_valid_correlation_id("3f1e2d4c-0000-4000-8000-00000000abcd"));
        assert!(is_valid_correlation_id("conv_1-callback"));
        assert!(is_valid_correlation_id(&"a".repeat(64)));
        for bad in ["", "x:y", "has spaces", "a/b", "é", &"a".repeat(65)] {
            assert!(!is_valid_correlation_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn refreshes_share_a_dedup_id_within_a_window() {
        let w = 300_000;
        assert_eq!(refresh(600_000).dedup_id(w), refresh(899_999).dedup_id(w));
        assert_ne!(refresh(600_000).dedup_id(w), refresh(900_000).dedup_id(w));
        assert!(refresh(0).dedup_id(w).len() <= 128, "SQS limit");
    }

    #[test]
    fn writes_dedup_on_correlation_id_and_group_by_entity() {
        let e = Envelope::new(Kind::Write, "corr-7".into(), "ent".into(), (), 5);
        assert_eq!(e.dedup_id(300_000), "corr-7");
        assert_eq!(e.group_id(), "ent");
    }

    #[test]
    fn wire_format_is_stable() {
        let e = Envelope::new(Kind::Write, "c".into(), "k".into(), 7u8, 9);
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(json, r#"{"v":1,"kind":"write","correlationId":"c","entityKey":"k","payload":7,"submittedAt":9}"#);
        assert_eq!(serde_json::from_str::<Envelope<u8>>(&json).unwrap(), e);
    }
}
