//! Genesys Cloud events, whichever way they arrive, as one queue envelope.
//!
//! Events reach failsoft three ways: an EventBridge rule with the SQS queue
//! as its target (the raw EventBridge event is the message body), an
//! EventBridge API destination posting to the origin's `POST /v1/events`,
//! and the Notification Service WebSocket (`failsoft notifications`). All
//! three become the same [`Kind::Event`] envelope, so one retry, dead-letter
//! and alert path delivers them:
//!
//! - dedup id = correlationId = the event's id (EventBridge `id`; the
//!   notification's `metadata.CorrelationId`, or a digest of topic and body
//!   when a notification has none), so a redelivered event is queued once;
//! - group = the conversation or entity the event is about, so events of
//!   one conversation stay in order and different conversations do not wait
//!   on each other;
//! - payload = `{via, id, topic, time, eventBody}`: what the downstream gets.
//!
//! Event bodies can carry phone numbers (participant addresses): they travel
//! in the payload only, never in a log line, key or group id.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use failsoft_shared::envelope::{Envelope, Kind, MAX_CORRELATION_ID, is_valid_correlation_id};

/// SQS's limit on `MessageGroupId` and `MessageDeduplicationId`.
const SQS_ID_MAX: usize = 128;

/// Which integration point an event came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    EventBridge,
    Notifications,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EventBridge => "eventbridge",
            Self::Notifications => "notifications",
        }
    }
}

/// Why an incoming event cannot be queued. The code is the API's error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct EventError {
    pub code: &'static str,
    pub message: String,
}

fn invalid(message: impl Into<String>) -> EventError {
    EventError { code: "INVALID_EVENT", message: message.into() }
}

/// One Genesys Cloud event, ready to queue.
#[derive(Debug, Clone, PartialEq)]
pub struct GenesysEvent {
    pub via: Via,
    /// The dedup id and correlationId.
    pub id: String,
    /// The Notification Service topic (EventBridge's `detail-type`).
    pub topic: String,
    /// When Genesys says it happened (RFC 3339), if it says.
    pub time: Option<String>,
    pub body: Value,
}

impl GenesysEvent {
    /// Reads an EventBridge event (the partner event source's envelope:
    /// `version`, `id`, `detail-type`, `source`, `account`, `time`, `region`,
    /// `resources`, and `detail` with `topicName` and `eventBody`).
    pub fn from_eventbridge(event: &Value) -> Result<Self, EventError> {
        let field = |name: &str| event.get(name).and_then(Value::as_str);
        let id = field("id").ok_or_else(|| invalid("`id` is missing or not a string"))?;
        let detail_type = field("detail-type").ok_or_else(|| invalid("`detail-type` is missing or not a string"))?;
        field("source").ok_or_else(|| invalid("`source` is missing or not a string"))?;
        let detail =
            event.get("detail").filter(|d| d.is_object()).ok_or_else(|| invalid("`detail` is not an object"))?;
        let topic = detail.get("topicName").and_then(Value::as_str).unwrap_or(detail_type);
        let body = detail.get("eventBody").cloned().unwrap_or_else(|| detail.clone());
        Ok(Self {
            via: Via::EventBridge,
            id: correlation_id(id, "id")?,
            topic: topic.to_owned(),
            time: field("time").map(str::to_owned),
            body,
        })
    }

    /// Reads one Notification Service WebSocket message: `None` for the
    /// channel's own messages (`channel.metadata` heartbeats and notices),
    /// which are liveness, not events.
    pub fn from_notification(message: &Value) -> Result<Option<Self>, EventError> {
        let topic = message
            .get("topicName")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("`topicName` is missing or not a string"))?;
        if topic == "channel.metadata" {
            return Ok(None);
        }
        let body = message.get("eventBody").cloned().ok_or_else(|| invalid("`eventBody` is missing"))?;
        let id = match message.pointer("/metadata/CorrelationId").and_then(Value::as_str) {
            Some(id) => correlation_id(id, "metadata.CorrelationId")?,
            None => digest_id(topic, &body),
        };
        Ok(Some(Self { via: Via::Notifications, id, topic: topic.to_owned(), time: None, body }))
    }

    /// The conversation or entity the event is about: the body's
    /// `conversationId`, else the first id in the topic
    /// (`v2.detail.events.conversation.{id}.customer.start`), else the body's
    /// `id`, else the event itself.
    pub fn group(&self) -> String {
        let from_body = |name: &str| self.body.get(name).and_then(Value::as_str).filter(|s| valid_sqs_id(s));
        if let Some(id) = from_body("conversationId") {
            return id.to_owned();
        }
        if let Some(id) = self.topic.split('.').find(|s| looks_like_id(s)) {
            return id.to_owned();
        }
        from_body("id").unwrap_or(&self.id).to_owned()
    }

    /// The queue envelope: kind `event`, correlationId = dedup id = the
    /// event's id, entity (group) = [`Self::group`].
    pub fn envelope(&self, now_ms: u64) -> Envelope<Value> {
        let payload = json!({
            "via": self.via.as_str(),
            "id": self.id,
            "topic": self.topic,
            "time": self.time,
            "eventBody": self.body,
        });
        Envelope::new(Kind::Event, self.id.clone(), self.group(), payload, now_ms)
    }
}

/// Whether a queue message body is a raw EventBridge event, as an
/// EventBridge rule with the queue as its target sends it, rather than one
/// of our envelopes: no `v` or `kind`, and the event's own `id`,
/// `detail-type`, `source` and `detail`.
pub fn is_eventbridge_event(body: &Value) -> bool {
    let Some(fields) = body.as_object() else { return false };
    !fields.contains_key("v")
        && !fields.contains_key("kind")
        && ["id", "detail-type", "source", "detail"].iter().all(|name| fields.contains_key(*name))
}

/// A Genesys id: a UUID, or any token of 16+ hex digits and dashes.
fn looks_like_id(segment: &str) -> bool {
    // No longer than a group may be: fuzzing found a 150-character topic
    // segment becoming a group the worker then refused (INVALID_ENTITY_KEY).
    (16..=SQS_ID_MAX).contains(&segment.len()) && segment.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// SQS accepts 1–128 characters of ASCII letters, digits and punctuation.
fn valid_sqs_id(s: &str) -> bool {
    (1..=SQS_ID_MAX).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

/// An event's id as its envelope's correlationId (its deduplication id and
/// results key), or why it cannot be one.
fn correlation_id(s: &str, name: &str) -> Result<String, EventError> {
    if is_valid_correlation_id(s) {
        Ok(s.to_owned())
    } else {
        Err(invalid(format!("`{name}` must be 1-{MAX_CORRELATION_ID} letters, digits, '-' or '_'")))
    }
}

/// A stable id for a notification without a CorrelationId: the same event
/// delivered twice gets the same id, so SQS drops the second.
fn digest_id(topic: &str, body: &Value) -> String {
    let mut hash = Sha256::new();
    hash.update(topic.as_bytes());
    hash.update([0]);
    hash.update(body.to_string().as_bytes());
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("n-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONVERSATION: &str = "6c8b3a1e-52b4-4b8e-9c61-0f2a7d4e9b10";

    fn eventbridge() -> Value {
        json!({
            "version": "0",
            "id": "0b7e5c1f-2a34-4d1b-8b9f-1c2d3e4f5a6b",
            "detail-type": format!("v2.detail.events.conversation.{CONVERSATION}.customer.start"),
            "source": "aws.partner/genesys.com/cloud/9f8e7d6c-1234-4abc-9def-0123456789ab/failsoft",
            "account": "123456789012",
            "time": "2026-11-28T10:00:00Z",
            "region": "eu-west-1",
            "resources": [],
            "detail": {
                "topicName": format!("v2.detail.events.conversation.{CONVERSATION}.customer.start"),
                "version": "2",
                "eventBody": {"conversationId": CONVERSATION, "eventTime": 1_764_324_000_000u64, "ani": "tel:+15550100"},
                "metadata": {"CorrelationId": "c0ffee00-0000-4000-8000-000000000001"}
            }
        })
    }

    #[test]
    fn a_topic_segment_too_long_for_a_group_is_not_taken_as_one() {
        let long = "e".repeat(129);
        let message = json!({"topicName": format!("v2.users.{long}.presence"), "eventBody": {"x": 1}});
        let event = GenesysEvent::from_notification(&message).unwrap().expect("an event");
        assert_ne!(event.group(), long);
        assert!((1..=SQS_ID_MAX).contains(&event.group().len()), "{}", event.group());
    }

    #[test]
    fn an_eventbridge_event_dedups_on_its_id_and_groups_by_conversation() {
        let event = GenesysEvent::from_eventbridge(&eventbridge()).unwrap();
        let envelope = event.envelope(42);
        assert_eq!(envelope.kind, Kind::Event);
        assert_eq!(envelope.dedup_id(300_000), "0b7e5c1f-2a34-4d1b-8b9f-1c2d3e4f5a6b");
        assert_eq!(envelope.group_id(), CONVERSATION);
        assert_eq!(envelope.payload["via"], "eventbridge");
        assert_eq!(envelope.payload["time"], "2026-11-28T10:00:00Z");
        assert_eq!(envelope.payload["eventBody"]["conversationId"], CONVERSATION);
    }

    #[test]
    fn the_group_falls_back_to_the_topic_then_the_body_then_the_event() {
        let mut e = GenesysEvent::from_eventbridge(&eventbridge()).unwrap();
        e.body = json!({"id": "queue-7"});
        assert_eq!(e.group(), CONVERSATION, "the topic's id");
        e.topic = "v2.analytics.queues.observations".into();
        assert_eq!(e.group(), "queue-7");
        e.body = json!({});
        assert_eq!(e.group(), e.id);
    }

    #[test]
    fn a_malformed_eventbridge_event_is_refused_with_a_code() {
        for broken in [json!({}), json!({"id": 7, "detail-type": "x", "source": "s", "detail": {}})] {
            assert_eq!(GenesysEvent::from_eventbridge(&broken).unwrap_err().code, "INVALID_EVENT");
        }
        let mut no_detail = eventbridge();
        no_detail["detail"] = json!("text");
        assert!(GenesysEvent::from_eventbridge(&no_detail).is_err());
        let mut long_id = eventbridge();
        long_id["id"] = json!("x".repeat(129));
        assert!(GenesysEvent::from_eventbridge(&long_id).is_err());
    }

    #[test]
    fn a_raw_eventbridge_event_is_told_from_an_envelope() {
        assert!(is_eventbridge_event(&eventbridge()));
        let envelope = GenesysEvent::from_eventbridge(&eventbridge()).unwrap().envelope(1);
        assert!(!is_eventbridge_event(&serde_json::to_value(&envelope).unwrap()));
        let mut no_detail = eventbridge();
        no_detail.as_object_mut().unwrap().remove("detail");
        assert!(!is_eventbridge_event(&no_detail));
        assert!(!is_eventbridge_event(&json!("text")));
    }

    #[test]
    fn a_heartbeat_is_not_an_event() {
        let heartbeat = json!({"topicName": "channel.metadata", "eventBody": {"message": "WebSocket Heartbeat"}});
        assert_eq!(GenesysEvent::from_notification(&heartbeat).unwrap(), None);
    }

    #[test]
    fn a_notification_dedups_on_its_correlation_id_or_a_digest() {
        let message = json!({
            "topicName": "v2.users.5d2c9a10-7b3e-4f6a-9c1d-2e3f4a5b6c7d.presence",
            "version": "2",
            "eventBody": {"id": "5d2c9a10-7b3e-4f6a-9c1d-2e3f4a5b6c7d", "presenceDefinition": {"systemPresence": "Available"}},
            "metadata": {"CorrelationId": "a1b2c3d4-0000-4000-8000-000000000002"}
        });
        let event = GenesysEvent::from_notification(&message).unwrap().unwrap();
        assert_eq!(event.id, "a1b2c3d4-0000-4000-8000-000000000002");
        assert_eq!(event.group(), "5d2c9a10-7b3e-4f6a-9c1d-2e3f4a5b6c7d");
        assert_eq!(event.envelope(1).payload["via"], "notifications");

        let mut bare = message.clone();
        bare.as_object_mut().unwrap().remove("metadata");
        let a = GenesysEvent::from_notification(&bare).unwrap().unwrap();
        let b = GenesysEvent::from_notification(&bare).unwrap().unwrap();
        assert_eq!(a.id, b.id, "the same event gets the same id");
        assert!(a.id.starts_with("n-") && a.id.len() <= SQS_ID_MAX);
        bare["eventBody"]["presenceDefinition"]["systemPresence"] = json!("Away");
        assert_ne!(GenesysEvent::from_notification(&bare).unwrap().unwrap().id, a.id);
    }

    #[test]
    fn a_notification_without_a_topic_is_refused() {
        assert!(GenesysEvent::from_notification(&json!({"eventBody": {}})).is_err());
        assert!(GenesysEvent::from_notification(&json!({"topicName": "v2.users.x.presence"})).is_err());
    }
}
