//! What failsoft keeps of a CRM's answer to a case creation: its
//! [`CaseSummary`] (docs/design.md, "Data kept").
//!
//! A CRM's `POST /cases` answer is often the whole case, and many echo what
//! they were sent: the caller's phone number, the subject, the description.
//! Kept whole, that answer would put personal data into the results table
//! (kept for a day, and in point-in-time backups for 35), the edge's result
//! store and every result poll. So the edge and the origin keep, store and
//! answer only this allow-listed projection: the case's id, and its status
//! and creation time when the CRM gives them as plain values. Everything
//! else in the answer is dropped on reading, so it is never held at all.
//!
//! Deserializing a CRM's body (or an older stored result) straight into
//! [`CaseSummary`] is the projection: unknown fields are skipped, and a
//! `status` or `createdAt` that is not a short scalar reads as absent
//! rather than failing the write.

use alloc::string::String;
use core::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// The longest `status` or `createdAt` text kept. A status or a timestamp
/// is a word or an ISO 8601 time; anything longer is not one, and might be
/// free text with personal data in it.
pub const MAX_SCALAR_TEXT: usize = 64;

/// The allow-listed projection of a CRM's created (or found) case. It
/// reads only from a JSON object with a string `caseId`: anything else is
/// not a case.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaseSummary {
    /// The CRM's case id: what Genesys's *Create case* and *Get result*
    /// map.
    pub case_id: String,
    /// The CRM's own case status (`"open"`, `"NEW"`, …), when it gives one.
    pub status: Option<Scalar>,
    /// When the CRM created the case, as it wrote it (epoch milliseconds or
    /// an ISO 8601 text), when it gives one.
    pub created_at: Option<Scalar>,
}

/// A plain JSON value kept as the CRM wrote it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Scalar {
    Text(String),
    Integer(i64),
    Number(f64),
}

impl<'de> Deserialize<'de> for CaseSummary {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A map only: a derived struct would also read `["C-1"]` as a case.
        deserializer.deserialize_map(CaseVisitor)
    }
}

/// The fields read; every other one is skipped unread.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum Field {
    CaseId,
    Status,
    CreatedAt,
    #[serde(other)]
    Other,
}

struct CaseVisitor;

impl<'de> Visitor<'de> for CaseVisitor {
    type Value = CaseSummary;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a case: an object with a string caseId")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CaseSummary, A::Error> {
        let (mut case_id, mut status, mut created_at) = (None, None, None);
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::CaseId => case_id = Some(map.next_value::<String>()?),
                Field::Status => status = map.next_value::<Lenient>()?.0,
                Field::CreatedAt => created_at = map.next_value::<Lenient>()?.0,
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let case_id = case_id.ok_or_else(|| de::Error::missing_field("caseId"))?;
        Ok(CaseSummary { case_id, status, created_at })
    }
}

/// A [`Scalar`], or `None` for `null`, a boolean, an object, an array or a
/// text longer than [`MAX_SCALAR_TEXT`] (each skipped whole).
struct Lenient(Option<Scalar>);

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor).map(Lenient)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Option<Scalar>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok((v.len() <= MAX_SCALAR_TEXT).then(|| Scalar::Text(v.into())))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(Scalar::Integer(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(i64::try_from(v).map_or(Scalar::Number(v as f64), Scalar::Integer)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(v.is_finite().then_some(Scalar::Number(v)))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::string::ToString;

    fn project(body: Value) -> Option<Value> {
        let summary: CaseSummary = serde_json::from_value(body).ok()?;
        Some(serde_json::to_value(summary).unwrap())
    }

    #[test]
    fn keeps_the_case_id_status_and_creation_time_and_nothing_else() {
        let echoed = json!({
            "caseId": "CASE-000001",
            "status": "open",
            "createdAt": 1_796_083_200_000u64,
            "phone": "+13175550123",
            "subject": "Callback for +1 317 555 0123",
            "description": "call me on (317) 555-0123",
            "conversationId": "conv-1",
            "externalRef": "c-1",
            "idempotencyKey": "c-1",
            "customer": {"phone": "+13175550123"},
        });
        let kept = project(echoed).unwrap();
        assert_eq!(kept, json!({"caseId": "CASE-000001", "status": "open", "createdAt": 1_796_083_200_000u64}));
        assert!(!kept.to_string().contains("5550123"));
    }

    #[test]
    fn status_and_creation_time_are_kept_only_as_short_scalars() {
        let iso = json!({"caseId": "C", "status": "NEW", "createdAt": "2026-12-01T00:00:00Z"});
        assert_eq!(project(iso.clone()), Some(iso));
        let odd = json!({"caseId": "C", "status": {"name": "open", "by": "+13175550123"}, "createdAt": [1, 2]});
        assert_eq!(project(odd), Some(json!({"caseId": "C", "status": null, "createdAt": null})));
        let long = json!({"caseId": "C", "status": "x".repeat(MAX_SCALAR_TEXT + 1), "createdAt": true});
        assert_eq!(project(long), Some(json!({"caseId": "C", "status": null, "createdAt": null})));
        assert_eq!(
            project(json!({"caseId": "C", "createdAt": 1.5})),
            Some(json!({"caseId": "C", "status": null, "createdAt": 1.5}))
        );
        assert_eq!(project(json!({"caseId": "C"})), Some(json!({"caseId": "C", "status": null, "createdAt": null})));
    }

    #[test]
    fn a_body_without_a_string_case_id_is_not_a_case() {
        assert_eq!(project(json!({"id": "C"})), None);
        assert_eq!(project(json!({"caseId": 7})), None);
        assert_eq!(project(json!(["C"])), None);
    }

    #[test]
    fn a_kept_summary_reads_back_the_same() {
        let summary = CaseSummary {
            case_id: "C".into(),
            status: Some(Scalar::Text("open".into())),
            created_at: Some(Scalar::Integer(5)),
        };
        let text = serde_json::to_string(&summary).unwrap();
        assert_eq!(serde_json::from_str::<CaseSummary>(&text).unwrap(), summary);
    }
}
