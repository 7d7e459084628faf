//! The downstream contract (docs/design.md, "With the CRM"): how a lookup and a
//! case creation become HTTP requests, and how responses become records.

use failsoft_shared::cache::{CustomerAnswer, CustomerRecord};
use failsoft_shared::case::CaseSummary;
use failsoft_shared::keys::Phone;
use serde_json::Value;

use crate::ports::OutboundRequest;

/// The header that carries the Data Action's correlationId to the CRM, so
/// one id follows a call from Genesys through the queue to the CRM's logs.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// `GET {base}/customers?phone={E.164}`.
pub fn lookup_request(base: &str, phone: &Phone, correlation_id: &str) -> OutboundRequest {
    // A normalised number holds only digits and a leading '+', so '+' is the
    // one character that needs percent-encoding in a query.
    let encoded = phone.as_str().replace('+', "%2B");
    OutboundRequest {
        method: "GET",
        url: format!("{base}/customers?phone={encoded}"),
        headers: vec![("accept", "application/json".to_owned()), (CORRELATION_HEADER, correlation_id.to_owned())],
        body: None,
    }
}

/// `POST {base}/cases` with `Idempotency-Key: <correlationId>`, so a replay
/// of a create that did reach the CRM returns the same case.
pub fn create_case_request(base: &str, correlation_id: &str, case: &Value) -> OutboundRequest {
    OutboundRequest {
        method: "POST",
        url: format!("{base}/cases"),
        headers: vec![
            ("content-type", "application/json".to_owned()),
            ("accept", "application/json".to_owned()),
            ("idempotency-key", correlation_id.to_owned()),
            (CORRELATION_HEADER, correlation_id.to_owned()),
        ],
        body: Some(serde_json::to_vec(case).unwrap_or_default()),
    }
}

/// A found customer from a 2xx lookup body; `None` when the body is not the
/// contract's shape (treated as a failed call, never cached).
pub fn parse_customer(body: &[u8]) -> Option<CustomerRecord> {
    serde_json::from_slice::<CustomerAnswer>(body).ok()?.into_record()
}

/// The record cached for a number the CRM does not know.
pub fn not_found_record(default_tier: &str) -> CustomerRecord {
    CustomerRecord {
        found: false,
        customer_id: crate::wire::UNKNOWN_CUSTOMER.to_owned(),
        tier: default_tier.to_owned(),
    }
}

/// What is kept of the created case in a 2xx create body (it must carry a
/// string `caseId`): its [`CaseSummary`], never the phone, subject or
/// description a CRM may echo.
pub fn parse_case(body: &[u8]) -> Option<CaseSummary> {
    serde_json::from_slice(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use failsoft_shared::keys::normalize_phone;

    #[test]
    fn lookup_encodes_the_plus() {
        let req = lookup_request("http://crm", &normalize_phone("+44 20 7123 4567").unwrap(), "corr-9");
        assert_eq!(req.url, "http://crm/customers?phone=%2B442071234567");
        assert_eq!(req.method, "GET");
        assert!(req.headers.contains(&(CORRELATION_HEADER, "corr-9".to_owned())));
    }

    #[test]
    fn create_carries_the_idempotency_key() {
        let req = create_case_request("http://crm", "corr-1", &serde_json::json!({"subject": "x"}));
        assert!(req.headers.contains(&("idempotency-key", "corr-1".to_owned())));
        assert!(req.headers.contains(&(CORRELATION_HEADER, "corr-1".to_owned())));
        assert_eq!(req.body.unwrap(), br#"{"subject":"x"}"#);
    }

    #[test]
    fn parses_only_contract_shaped_bodies() {
        let rec = parse_customer(br#"{"customerId":"C-1","tier":"vip","name":"A"}"#).unwrap();
        assert_eq!((rec.found, rec.customer_id.as_str(), rec.tier.as_str()), (true, "C-1", "vip"));
        assert!(parse_customer(br#"{"id":"C-1"}"#).is_none());
        assert!(parse_customer(b"<html>").is_none());
        assert!(parse_case(br#"{"caseId":"CASE-1"}"#).is_some());
        assert!(parse_case(br#"{"ok":true}"#).is_none());
        let echoed = parse_case(br#"{"caseId":"CASE-1","phone":"+13175550123","description":"d"}"#).unwrap();
        let kept = serde_json::to_value(echoed).unwrap();
        assert_eq!(kept, serde_json::json!({"caseId": "CASE-1", "status": null, "createdAt": null}));
    }
}
