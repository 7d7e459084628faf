//! `POST /v1/events`: the target of an EventBridge API destination. The
//! body is the EventBridge event; it is queued as the same `kind: event`
//! envelope an EventBridge rule's SQS target produces, and delivered by the
//! worker like any other message.
//!
//! Write-ahead, as the edge's writes: `202` only once SQS has acknowledged
//! the `SendMessage` (group = the conversation, dedup id = the event's
//! `id`); otherwise `503 QUEUE_UNAVAILABLE`, which EventBridge retries (it
//! retries an API destination on 5xx and 429, for 24 hours by default).
//! A bad request gets a 4xx, which EventBridge does not retry, and nothing
//! is queued for it.
//!
//! Authentication is the EventBridge connection's API key: a header
//! (`FAILSOFT_EVENTS_API_KEY_HEADER`) holding `FAILSOFT_EVENTS_API_KEY`,
//! compared in constant time and never logged.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use failsoft_shared::signature::constant_time_eq;
use serde_json::{Value, json};

use crate::clock;
use crate::config::EventsConfig;
use crate::genesys_events::GenesysEvent;

/// SQS's largest message (256 KiB): an event whose envelope would not fit
/// could never be queued, so it is refused before anything is sent.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;
/// How long the handler waits for SQS. An API destination gives up after
/// 5 seconds; answering 503 first lets EventBridge retry at once rather
/// than count a timeout.
const SEND_TIMEOUT: Duration = Duration::from_secs(4);

/// What the handler needs: the queue and the events settings.
pub struct EventsApi {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub config: EventsConfig,
}

pub fn router(state: Arc<EventsApi>) -> Router {
    Router::new().route("/v1/events", post(receive)).with_state(state)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

/// Whether a `Content-Type` is JSON (`application/json`, `…+json`, any
/// parameters); a missing one is taken as JSON, as EventBridge always sends it.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else { return true };
    let Ok(value) = value.to_str() else { return false };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

async fn receive(State(api): State<Arc<EventsApi>>, headers: HeaderMap, body: Body) -> Response {
    if api.config.url.is_none() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "EVENTS_NOT_CONFIGURED",
            "this origin has no FAILSOFT_EVENTS_URL to deliver events to",
        );
    }
    let Some(key) = &api.config.api_key else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "EVENTS_API_NOT_CONFIGURED",
            "this origin has no FAILSOFT_EVENTS_API_KEY to authenticate EventBridge with",
        );
    };
    let presented = headers.get(api.config.api_key_header.as_str()).map(|v| v.as_bytes());
    if !presented.is_some_and(|p| constant_time_eq(p, key.expose())) {
        return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "the API key is missing or wrong");
    }
    if !is_json(&headers) {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE", "the body must be JSON");
    }
    let too_large = || error(StatusCode::PAYLOAD_TOO_LARGE, "BODY_TOO_LARGE", "an event must fit in 256 KiB");
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_EVENT_BYTES) {
        return too_large();
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_EVENT_BYTES).await else {
        return too_large();
    };
    let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
        return error(StatusCode::BAD_REQUEST, "MALFORMED_JSON", "the body is not JSON");
    };
    let event = match GenesysEvent::from_eventbridge(&value) {
        Ok(event) => event,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.code, &e.message),
    };
    let envelope = event.envelope(clock::now_ms());
    let message = match serde_json::to_string(&envelope) {
        Ok(message) if message.len() <= MAX_EVENT_BYTES => message,
        _ => return too_large(),
    };
    let send = api
        .sqs
        .send_message()
        .queue_url(&api.queue_url)
        .message_body(message)
        .message_group_id(envelope.group_id())
        .message_deduplication_id(envelope.dedup_id(0))
        .send();
    match tokio::time::timeout(SEND_TIMEOUT, send).await {
        Ok(Ok(_)) => {
            tracing::debug!(correlation_id = %envelope.correlation_id, topic = %event.topic, "event queued");
            (StatusCode::ACCEPTED, Json(json!({"accepted": true, "id": envelope.correlation_id}))).into_response()
        }
        Ok(Err(e)) => {
            if !crate::access::check("sqs:SendMessage", &api.queue_url, &e) {
                tracing::warn!(error = %DisplayErrorContext(&e), correlation_id = %envelope.correlation_id, "event not queued");
            }
            error(StatusCode::SERVICE_UNAVAILABLE, "QUEUE_UNAVAILABLE", "the queue did not take the event; retry")
        }
        Err(_) => {
            tracing::warn!(correlation_id = %envelope.correlation_id, "event not queued: SQS did not answer in time");
            error(StatusCode::SERVICE_UNAVAILABLE, "QUEUE_UNAVAILABLE", "the queue did not answer in time; retry")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_told_apart() {
        let with = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            is_json(&h)
        };
        assert!(is_json(&HeaderMap::new()));
        assert!(with("application/json; charset=utf-8"));
        assert!(with("application/cloudevents+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/x-www-form-urlencoded"));
    }
}
