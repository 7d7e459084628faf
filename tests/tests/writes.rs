//! Case creation (`POST /v1/cases`) and result polling
//! (`GET /v1/results/{correlationId}`): complete once with the CRM up,
//! queued write-ahead with it down, failed for good on a permanent refusal.

use failsoft_tests::{Stack, assert_error};
use serde_json::{Value, json};

const CALLER: &str = "+13175550123";
const WRITES: &str = r#"failsoft_edge_forwarded_total{kind="write"}"#;

fn callback() -> Value {
    json!({"ani": CALLER, "subject": "Callback", "description": "end-to-end test"})
}

#[tokio::test(flavor = "multi_thread")]
async fn case_with_the_crm_up_completes_once_under_its_correlation_id() {
    let stack = Stack::start().await;
    let (status, answer) = stack.create_case(&callback()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "COMPLETE", "{answer}");
    let case_id = answer["caseId"].as_str().unwrap_or_else(|| panic!("a caseId: {answer}")).to_owned();
    let correlation_id = answer["correlationId"].as_str().unwrap_or_else(|| panic!("a correlationId: {answer}"));
    assert!(!correlation_id.is_empty());

    let ledger = stack.ledger().await;
    assert_eq!(ledger.len(), 1, "exactly one case: {ledger:?}");
    assert_eq!(ledger[0]["idempotencyKey"], correlation_id, "the write carries its correlationId as key");
    assert_eq!(ledger[0]["caseId"], case_id.as_str());

    let (status, polled) = stack.result(correlation_id).await;
    assert_eq!(status, 200, "{polled}");
    assert_eq!(polled["status"], "COMPLETE", "{polled}");
    assert_eq!(polled["caseId"], case_id.as_str(), "{polled}");

    // The same correlationId again: the CRM honours the key.
    let mut again = callback();
    again["correlationId"] = json!(correlation_id);
    let (status, repeat) = stack.create_case(&again).await;
    assert_eq!(status, 200, "{repeat}");
    assert_eq!(repeat["status"], "COMPLETE", "{repeat}");
    assert_eq!(repeat["caseId"], case_id.as_str(), "same key, same case: {repeat}");
    assert_eq!(stack.ledger().await.len(), 1, "no duplicate case");
    assert_eq!(stack.sim_count("idempotentReplays").await, 1);
    assert_eq!(stack.metric(WRITES).await, 0.0, "nothing was queued");
}

#[tokio::test(flavor = "multi_thread")]
async fn case_with_the_crm_down_is_queued_and_pending() {
    let stack = Stack::start().await;
    stack.crm("down").await;
    let before = stack.metric(WRITES).await;
    let mut body = callback();
    body["correlationId"] = json!("it-write-down-1");
    let (status, answer) = stack.create_case(&body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "PENDING", "{answer}");
    assert_eq!(answer["warning"], "CRM_UNAVAILABLE_WRITE_QUEUED", "{answer}");
    assert_eq!(answer["correlationId"], "it-write-down-1", "{answer}");
    assert_eq!(answer["caseId"], Value::Null, "{answer}");
    assert_eq!(stack.metric(WRITES).await, before + 1.0, "the write was forwarded before the answer");

    let (status, polled) = stack.result("it-write-down-1").await;
    assert_eq!(status, 200, "{polled}");
    assert_eq!(polled["status"], "PENDING", "{polled}");

    let (status, unknown) = stack.result("it-never-written").await;
    assert_error("unknown correlationId", status, &unknown, 404, "RESULT_NOT_FOUND");
    assert!(stack.ledger().await.is_empty(), "the CRM created nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn case_rejected_by_the_crm_fails_and_is_not_queued() {
    let stack = Stack::start().await;
    stack.admin_mode(json!({"mode": "reject", "status": 422})).await;
    let (status, answer) = stack.create_case(&callback()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "FAILED", "{answer}");
    assert_eq!(answer["reason"], "CRM_REJECTED_422", "{answer}");
    assert_eq!(stack.sim_count("creates").await, 1, "the CRM was asked once");
    assert_eq!(stack.metric_sum("failsoft_edge_forwarded_total").await, 0.0, "a permanent refusal is not queued");
    assert!(stack.ledger().await.is_empty());

    let correlation_id = answer["correlationId"].as_str().expect("a correlationId");
    let (status, polled) = stack.result(correlation_id).await;
    assert_eq!(status, 200, "{polled}");
    assert_eq!(polled["status"], "FAILED", "{polled}");
    assert_eq!(polled["reason"], "CRM_REJECTED_422", "{polled}");
}

#[tokio::test(flavor = "multi_thread")]
async fn case_with_the_crm_hung_is_queued_at_the_deadline() {
    let stack = Stack::start_with(&[("FAILSOFT_CRM_DEADLINE_MS", "1000")]).await;
    stack.crm("hang").await;
    let started = std::time::Instant::now();
    let (status, answer) = stack.create_case(&callback()).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "PENDING", "{answer}");
    assert_eq!(answer["warning"], "CRM_UNAVAILABLE_WRITE_QUEUED", "{answer}");
    assert!(took >= std::time::Duration::from_millis(1_000), "it waited for the deadline, took {took:?}");
    assert!(took < std::time::Duration::from_millis(1_250), "answered past the deadline: {took:?}");
    assert_eq!(stack.sim_count("creates").await, 1, "the CRM was tried once");
    assert_eq!(stack.metric(WRITES).await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_neither_the_crm_nor_the_queue_takes_is_not_accepted() {
    let stack = Stack::start_with(&[("FAILSOFT_LOCAL_QUEUE_CAPACITY", "1")]).await;
    stack.crm("down").await;
    let mut first = callback();
    first["correlationId"] = json!("it-queue-fills-1");
    let (_, answer) = stack.create_case(&first).await;
    assert_eq!(answer["status"], "PENDING", "{answer}");

    let mut second = callback();
    second["correlationId"] = json!("it-queue-full-2");
    let (status, answer) = stack.create_case(&second).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "NOT_ACCEPTED", "a PENDING nothing backs would be a lie: {answer}");
    assert_eq!(answer["warning"], "CRM_AND_QUEUE_UNAVAILABLE_RETRY_LATER", "{answer}");
    let (status, unknown) = stack.result("it-queue-full-2").await;
    assert_error("result of a write nobody took", status, &unknown, 404, "RESULT_NOT_FOUND");
    let (_, pending) = stack.result("it-queue-fills-1").await;
    assert_eq!(pending["status"], "PENDING", "{pending}");
}

/// A native edge started without a queue and without the development flag
/// has nowhere durable to put a write: the CRM down, the write is
/// `NOT_ACCEPTED` (Genesys takes its failure path), never a `PENDING` that
/// nothing would deliver.
#[tokio::test(flavor = "multi_thread")]
async fn without_a_queue_a_write_the_crm_does_not_take_is_not_accepted() {
    let stack = Stack::start_with(&[("FAILSOFT_DEV_LOCAL_QUEUE", "")]).await;
    stack.crm("down").await;
    let (status, answer) = stack.create_case(&callback()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "NOT_ACCEPTED", "nothing backs a PENDING here: {answer}");
    assert_eq!(stack.metric_sum("failsoft_edge_local_queue_depth").await, 0.0, "nothing kept in the process");
}
