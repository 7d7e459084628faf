//! Store no more than needed: the CRM simulator, like many CRMs, answers a
//! case creation with the case whole, the caller's phone number, subject
//! and description echoed back. Of that answer only the case's summary
//! (`caseId`, `status`, `createdAt`) may be kept: every item of the results
//! and last-known tables (scanned in moto), the origin's results API, the
//! edge's answer and its own result record, and a poll through the edge
//! hold none of the rest, the number in no form (E.164 or national).

mod origin_support;

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use failsoft_shared::envelope::{Envelope, Kind};
use failsoft_shared::keys::normalize_phone;
use failsoft_tests::Stack;
use origin_support::{INTERNAL_SECRET, OriginStack, entity_for, refresh_envelope, wait_for};
use serde_json::{Value, json};

/// The caller, and what they said, in the forms a person would write them.
const CALLER: &str = "+13175550123";
const SUBJECT: &str = "Refund for order 4471";
const DESCRIPTION: &str = "Please call me back on (317) 555-0123 after five";
/// A customer whose lookup is refreshed, so a refresh record is scanned too.
const KNOWN: &str = "+13175550188";

/// Panics when `text` holds the caller's number in any form (with or
/// without `+1`, with spaces, dashes, dots or brackets), the subject or the
/// description.
fn assert_nothing_personal(what: &str, text: &str) {
    let digits_only: String = text.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
    for number in [CALLER, KNOWN] {
        let national = number.trim_start_matches("+1");
        assert!(!digits_only.contains(national), "{what}: the number {number} (national {national}) in {text}");
    }
    for free_text in [SUBJECT, DESCRIPTION, "Refund", "call me back"] {
        assert!(!text.contains(free_text), "{what}: `{free_text}` in {text}");
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The envelope the edge enqueues for this caller's case.
fn write_envelope(correlation_id: &str) -> Envelope<Value> {
    let phone = normalize_phone(CALLER).expect("a valid number");
    let case = json!({
        "phone": phone.as_str(),
        "subject": SUBJECT,
        "description": DESCRIPTION,
        "conversationId": null,
        "externalRef": correlation_id,
    });
    let payload = json!({"operation": "create_case", "case": case});
    Envelope::new(Kind::Write, correlation_id.to_owned(), entity_for(CALLER), payload, now_ms())
}

/// Every item of `table`, each as text (its attribute values, whatever their type).
async fn scan_table(stack: &OriginStack, table: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = stack.ddb.scan().table_name(table).set_exclusive_start_key(start.take()).send().await.expect("Scan");
        items.extend(page.items().iter().map(|item| format!("{item:?}")));
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return items,
        }
    }
}

/// The summary the results show of the case `case_id`.
fn summary_of(result: &Value, case_id: &str) {
    assert_eq!(result["caseId"], case_id, "{result}");
    assert!(result["createdAt"].as_u64().is_some(), "the CRM's creation time is kept: {result}");
    let mut fields: Vec<&str> = result.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
    fields.sort_unstable();
    assert_eq!(fields, ["caseId", "createdAt", "status"], "only the summary: {result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_that_echoes_the_case_leaves_no_personal_data_in_the_tables_or_the_results() {
    let origin = OriginStack::start().await;
    origin.admin("/admin/customers", json!([{"phone": KNOWN, "customerId": "C-188", "tier": "gold"}])).await;
    let worker = origin.worker(&[]).await;

    origin.enqueue(&write_envelope("pii-write-1")).await;
    origin.enqueue(&refresh_envelope("pii-lookup-1", KNOWN)).await;
    wait_for("the write recorded COMPLETE", Duration::from_secs(30), || async {
        (origin.result_status("pii-write-1").await.as_deref() == Some("COMPLETE")).then_some(())
    })
    .await;

    // The CRM did echo the caller back: what it answers for this case.
    let echoed: Value = origin
        .http
        .get(format!("{}/cases", origin.sim.url("api")))
        .query(&[("externalRef", "pii-write-1")])
        .send()
        .await
        .expect("the simulator answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(echoed[0]["phone"], CALLER, "the simulator echoes the request: {echoed}");
    assert_eq!(echoed[0]["description"], DESCRIPTION, "{echoed}");
    let case_id = echoed[0]["caseId"].as_str().expect("a caseId").to_owned();
    let echo = echoed.to_string();
    let caught = std::panic::catch_unwind(|| assert_nothing_personal("the CRM's echo", &echo));
    assert!(caught.is_err(), "the check finds the caller in what the CRM answered");
    let national = "(317) 555-0123".to_owned();
    assert!(std::panic::catch_unwind(|| assert_nothing_personal("national", &national)).is_err());

    // Every item of both tables, the refresh's record among them.
    let results = wait_for("the refresh recorded", Duration::from_secs(30), || async {
        let items = scan_table(&origin, "failsoft-results").await;
        items.iter().any(|i| i.contains("refresh:pii-lookup-1:")).then_some(items)
    })
    .await;
    let last_known = scan_table(&origin, "failsoft-last-known").await;
    assert!(results.len() >= 2 && !last_known.is_empty(), "{results:?} {last_known:?}");
    for item in results.iter().chain(&last_known) {
        assert_nothing_personal("a DynamoDB item", item);
    }
    let item = origin.result_item("pii-write-1").await.expect("the write's item");
    let stored: Value = serde_json::from_str(item["result"].as_s().expect("a result")).expect("JSON");
    summary_of(&stored, &case_id);
    assert_eq!(item.get("caseId"), Some(&AttributeValue::S(case_id.clone())));

    // The origin's results API.
    let (status, answer) = origin.result(&worker, "pii-write-1").await;
    assert_eq!((status, &answer["status"], &answer["caseId"]), (200, &json!("COMPLETE"), &json!(case_id)), "{answer}");
    summary_of(&answer["result"], &case_id);
    assert_nothing_personal("the results API", &answer.to_string());

    // An edge in front of this origin: the poll is proxied to it. A case
    // the edge created itself (its own simulator echoes too) is answered,
    // kept in the edge's result store and polled back as its summary.
    let edge =
        Stack::start_with(&[("FAILSOFT_ORIGIN_URL", worker.url()), ("FAILSOFT_INTERNAL_SECRET", INTERNAL_SECRET)])
            .await;
    let (status, polled) = edge.result("pii-write-1").await;
    assert_eq!((status, &polled["status"], &polled["caseId"]), (200, &json!("COMPLETE"), &json!(case_id)), "{polled}");
    summary_of(&polled["result"], &case_id);
    assert_nothing_personal("a poll through the edge", &polled.to_string());

    let body = json!({"ani": CALLER, "subject": SUBJECT, "description": DESCRIPTION, "correlationId": "pii-edge-1"});
    let (status, created) = edge.create_case(&body).await;
    assert_eq!((status, &created["status"]), (200, &json!("COMPLETE")), "{created}");
    let edge_case = created["caseId"].as_str().expect("a caseId").to_owned();
    assert_eq!(edge.ledger().await[0]["body"]["phone"], CALLER, "the edge's simulator got the caller");
    summary_of(&created["result"], &edge_case);
    assert_nothing_personal("the edge's answer", &created.to_string());
    // The origin never saw this one: the edge's own record answers.
    let (status, polled) = edge.result("pii-edge-1").await;
    assert_eq!((status, &polled["caseId"]), (200, &json!(edge_case)), "{polled}");
    summary_of(&polled["result"], &edge_case);
    assert_nothing_personal("the edge's result record", &polled.to_string());
}
