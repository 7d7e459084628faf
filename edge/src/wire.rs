//! The JSON the facade speaks with Genesys (docs/design.md, "Contracts"). Field
//! names are the contract the Data Action translation maps read.

use failsoft_shared::case::CaseSummary;
use failsoft_shared::ladder::Source;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `customerId` of an answer that carries no record.
pub const UNKNOWN_CUSTOMER: &str = "UNKNOWN";
/// Warning of a `stale_cache` answer.
pub const WARNING_STALE: &str = "CRM_UNAVAILABLE_USING_CACHED_DATA";
/// Warning of a `default` answer.
pub const WARNING_NO_CACHE: &str = "CRM_UNAVAILABLE_NO_CACHE";
/// Warning of a case queued for later delivery.
pub const WARNING_WRITE_QUEUED: &str = "CRM_UNAVAILABLE_WRITE_QUEUED";
/// Warning of a case neither the CRM nor the queue took.
pub const WARNING_NOT_ACCEPTED: &str = "CRM_AND_QUEUE_UNAVAILABLE_RETRY_LATER";

/// A lookup answer. Every field is always present (`null` when it does not
/// apply), so translation maps never meet a missing path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LookupAnswer {
    pub correlation_id: String,
    pub source: Source,
    /// `true` with a record, `false` for a number the CRM does not know,
    /// `null` for a default answer (nobody knows).
    pub found: Option<bool>,
    pub customer_id: String,
    pub tier: String,
    pub cache_age_seconds: Option<u64>,
    pub warning: Option<String>,
}

/// Status of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WriteStatus {
    /// Delivered; `result` holds what is kept of the CRM's answer.
    Complete,
    /// Durably queued; the origin delivers it.
    Pending,
    /// Refused for good (dead-lettered, or a permanent CRM error).
    Failed,
    /// Neither the CRM nor the queue took it: nothing will happen.
    NotAccepted,
}

/// The answer to a case creation, and the body of a result poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteAnswer {
    pub correlation_id: String,
    pub status: WriteStatus,
    pub case_id: Option<String>,
    pub result: Option<ResultBody>,
    pub reason: Option<String>,
    pub warning: Option<String>,
}

/// A result's body. A case is only ever its [`CaseSummary`]: reading an
/// answer into this type drops whatever else a CRM (or an origin from
/// before summaries) put beside the case id. Anything that is not a case
/// (an event's receipt, which the origin's results API also answers)
/// passes as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ResultBody {
    Case(CaseSummary),
    Other(Value),
}

/// What the result store keeps per correlationId: of a delivered case, its
/// [`CaseSummary`] alone (a record stored whole before reads as one too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredResult {
    pub status: WriteStatus,
    pub result: Option<CaseSummary>,
    pub reason: Option<String>,
    pub updated_at: u64,
}

/// The CRM's change notification (`POST /v1/webhooks/crm-update`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrmChange {
    pub phone: Option<Value>,
    pub field_changed: Option<String>,
}

/// Fields whose change must stop the cached record being served: routing
/// depends on them, and a downgraded customer must not keep premium routing.
pub const ROUTING_FIELDS: [&str; 3] = ["tier", "status", "vip_flag"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_answer_has_every_field() {
        let a = LookupAnswer {
            correlation_id: "c".into(),
            source: Source::Default,
            found: None,
            customer_id: UNKNOWN_CUSTOMER.into(),
            tier: "standard".into(),
            cache_age_seconds: None,
            warning: Some(WARNING_NO_CACHE.into()),
        };
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"correlationId":"c","source":"default","found":null,"customerId":"UNKNOWN","tier":"standard","cacheAgeSeconds":null,"warning":"CRM_UNAVAILABLE_NO_CACHE"}"#
        );
    }

    #[test]
    fn a_result_read_back_keeps_only_the_case_summary() {
        let whole = r#"{"status":"COMPLETE","result":{"caseId":"C-1","createdAt":5,"phone":"+13175550123"},"reason":null,"updatedAt":1}"#;
        let stored: StoredResult = serde_json::from_str(whole).unwrap();
        assert!(!serde_json::to_string(&stored).unwrap().contains("phone"));
        let answer = r#"{"correlationId":"c","status":"COMPLETE","caseId":"C-1","result":{"caseId":"C-1","subject":"s"},"reason":null,"warning":null}"#;
        let answer: WriteAnswer = serde_json::from_str(answer).unwrap();
        let text = serde_json::to_string(&answer).unwrap();
        assert!(text.contains(r#""result":{"caseId":"C-1","status":null,"createdAt":null}"#), "{text}");
        let receipt = r#"{"correlationId":"e","status":"COMPLETE","caseId":null,"result":{"delivered":true,"status":202},"reason":null,"warning":null}"#;
        let receipt: WriteAnswer = serde_json::from_str(receipt).unwrap();
        assert_eq!(receipt.result, Some(ResultBody::Other(serde_json::json!({"delivered": true, "status": 202}))));
    }

    #[test]
    fn write_status_is_screaming() {
        assert_eq!(serde_json::to_string(&WriteStatus::NotAccepted).unwrap(), r#""NOT_ACCEPTED""#);
    }
}
