//! Delivering a Genesys event to `FAILSOFT_EVENTS_URL` exactly once, with
//! the write path's protections where they apply (`write_once.rs`):
//!
//! 1. **Claim** the event's id in the results table (the same conditional
//!    write and lease as a case creation). A duplicate of an event already
//!    delivered, whether SQS let it through (its deduplication window is
//!    5 minutes) or it
//!    came the other way (SQS target and API destination both wired), finds
//!    the claim `COMPLETE` and is deleted without a call. Two workers never
//!    post the same event at once.
//! 2. **Post** it with `Idempotency-Key: <event id>`.
//! 3. **Record** `COMPLETE`; the consumer deletes the message.
//!
//! What the write path has and this one cannot: the look before the create
//! (`GET /cases?externalRef=`). An events endpoint has no lookup in the
//! contract, so when an attempt ends ambiguously (the post timed out or the
//! connection broke after it was sent, or the worker died between 2 and 3),
//! the retry after the lease posts again, and only the receiver's
//! `Idempotency-Key` makes that second post a no-op. Every other path
//! (answered failures, refused connections, duplicates, concurrent workers)
//! is exactly once whatever the receiver does.

use std::time::Instant;

use failsoft_shared::envelope::Envelope;
use failsoft_shared::error_class::Verdict;
use serde_json::{Value, json};

use crate::deliver::delivery::{Attempted, Delivery};
use crate::deliver::event_sink::EventSink;
use crate::deliver::write_once::{claim, failed, record};

const KIND: &str = "event";

/// Delivers an event envelope (payload `{via, id, topic, time, eventBody}`).
pub async fn deliver(d: &Delivery, sink: &EventSink, envelope: &Envelope<Value>, deadline: Instant) -> Attempted {
    let id = envelope.correlation_id.as_str();
    if let Err(stop) = claim(d, id, KIND).await {
        return stop;
    }
    let reply = sink.post(id, &envelope.payload, Delivery::remaining(deadline)).await;
    d.observe(&reply);
    match reply.verdict {
        Verdict::Success | Verdict::NotFound => {
            record(d, id, KIND, &json!({"delivered": true, "status": reply.status}), None).await
        }
        Verdict::Failed(class) => failed(d, id, class, &reply).await,
    }
}
