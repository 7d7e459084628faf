//! What `failsoft dlq show` prints of a dead letter's body by default: its
//! shape, ids, kinds and times, with the customer's data redacted (phone
//! numbers, a case's subject and description, any free text, a Genesys
//! event's participants). The output goes to logs (an ECS task's stdout
//! is CloudWatch), so the rule is an allow-list: a string is shown only
//! under a key that names an id, a kind, a status or a time; everything
//! else is replaced by its length. `--reveal` prints the body whole.

use serde_json::{Map, Value};

/// Keys whose string or number values are shown: ids, kinds, statuses and
/// times, never the customer's words or numbers.
const SHOWN: &[&str] = &[
    "v",
    "kind",
    "correlationId",
    "entityKey",
    "submittedAt",
    "operation",
    "externalRef",
    "conversationId",
    "id",
    "via",
    "topic",
    "topicName",
    "version",
    "time",
    "timestamp",
    "eventTime",
    "detail-type",
    "source",
    "account",
    "region",
    "status",
    "state",
    "reason",
    "errorClass",
];

/// Keys whose numbers are the customer's too (a phone number sent as a
/// number); other numbers (counts, times, amounts of a shape) are shown.
const PHONE_LIKE: &[&str] = &["phone", "ani", "dnis", "address", "mobile", "number", "msisdn"];

/// A dead letter's body (parsed JSON), redacted.
pub fn body(value: &Value) -> Value {
    redact(value, None)
}

/// A body that is not JSON: nothing of it is shown but its length.
pub fn text(body: &str) -> Value {
    Value::String(format!("[redacted: {} characters]", body.chars().count()))
}

fn shown(key: Option<&str>) -> bool {
    key.is_some_and(|k| SHOWN.iter().any(|s| s.eq_ignore_ascii_case(k)))
}

fn phone_like(key: Option<&str>) -> bool {
    key.is_some_and(|k| {
        let k = k.to_ascii_lowercase();
        PHONE_LIKE.iter().any(|p| k.contains(p))
    })
}

fn redact(value: &Value, key: Option<&str>) -> Value {
    match value {
        Value::Object(fields) => {
            Value::Object(fields.iter().map(|(k, v)| (k.clone(), redact(v, Some(k)))).collect::<Map<_, _>>())
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| redact(v, key)).collect()),
        Value::String(s) if !shown(key) => text(s),
        Value::Number(_) if phone_like(key) && !shown(key) => Value::String("[redacted]".to_owned()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_write_keeps_its_ids_kinds_and_times_and_loses_the_customer() {
        let write = json!({
            "v": 1, "kind": "write", "correlationId": "c-1", "entityKey": "ab12", "submittedAt": 5,
            "payload": {"operation": "create_case", "case": {
                "phone": "+442079460201", "subject": "my boiler", "description": "call me on 07700 900123",
                "conversationId": "conv-1", "externalRef": "c-1", "notes": ["free", {"text": "words"}],
            }},
        });
        let shown = body(&write);
        let text = shown.to_string();
        for secret in ["442079460201", "boiler", "07700", "free", "words"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(shown["correlationId"], "c-1");
        assert_eq!(shown["submittedAt"], 5);
        assert_eq!(shown["payload"]["operation"], "create_case");
        assert_eq!(shown["payload"]["case"]["conversationId"], "conv-1");
        assert_eq!(shown["payload"]["case"]["subject"], "[redacted: 9 characters]");
    }

    #[test]
    fn an_event_loses_its_participants_and_numbers_under_phone_keys() {
        let event = json!({"v": 1, "kind": "event", "payload": {"via": "notifications", "id": "e-1",
            "eventBody": {"ani": "tel:+15550100", "participants": [{"name": "Ann", "dnis": 15550101u64}], "count": 3}}});
        let shown = body(&event);
        let text = shown.to_string();
        assert!(!text.contains("5550100") && !text.contains("5550101") && !text.contains("Ann"), "{text}");
        assert_eq!(shown["payload"]["id"], "e-1");
        assert_eq!(shown["payload"]["eventBody"]["count"], 3);
    }

    #[test]
    fn a_body_that_is_not_json_shows_only_its_length() {
        assert_eq!(text("+44 20 7946 0201"), json!("[redacted: 16 characters]"));
    }
}
