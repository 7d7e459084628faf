//! The downstream endpoint Genesys events are delivered to
//! (`FAILSOFT_EVENTS_URL`): one `POST` per event, classified by the shared
//! [`classify`](failsoft_shared::error_class::classify) like a CRM write, so
//! the retry decision, the breaker and the pacing treat it the same way.

use std::time::Duration;

use failsoft_shared::error_class::Operation;
use serde_json::Value;

use crate::deliver::crm::{self, Reply};

/// `POST {FAILSOFT_EVENTS_URL}` with the event's payload.
#[derive(Clone)]
pub struct EventSink {
    http: reqwest::Client,
    url: String,
}

impl EventSink {
    pub fn new(http: reqwest::Client, url: &str) -> Self {
        Self { http, url: url.to_owned() }
    }

    /// Posts one event. `Idempotency-Key` is the event's id, so a receiver
    /// that honours it turns a retry after an unanswered attempt into a
    /// no-op; `X-Correlation-Id` is the same id, for the receiver's logs.
    /// A 404 means the endpoint is gone: a write's classification.
    pub async fn post(&self, event_id: &str, payload: &Value, deadline: Duration) -> Reply {
        let request = self
            .http
            .post(&self.url)
            .header("accept", "application/json")
            .header("idempotency-key", event_id)
            .header("x-correlation-id", event_id)
            .json(payload);
        crm::send(request, Operation::Write, deadline).await
    }
}
