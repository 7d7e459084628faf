//! The shipped CRM profiles (`deploy/crm/`) end to end on the native edge:
//! each against the simulator serving that vendor's API as its public
//! documentation gives it (`crm-sim --dialect`), with the vendor's
//! authentication enforced. Lookups found and not found, a case created
//! and recorded under the write's reference, and, for OAuth, a revoked
//! token replaced once without failing the call.
//!
//! The worker's side (the search before a create, the breaker probe, an
//! outage) is the compressed drill per profile (`tests/tests/drill.rs`).
//! Needs `cargo build --workspace --bins`.

use failsoft_lab::local_stack::CrmContract;
use failsoft_tests::Stack;
use serde_json::{Value, json};

const KNOWN: &str = "+13175550123";
const UNKNOWN: &str = "+13175550188";

async fn stack(contract: CrmContract) -> Stack {
    let settings = contract.profile_settings();
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let stack = Stack::start_with_sim(&contract.sim_args(), &settings).await;
    stack.load_customers(json!([{"phone": KNOWN, "customerId": "C-1001", "tier": "gold"}])).await;
    stack
}

/// A lookup of a known and of an unknown number, answered live.
async fn lookups_are_read_through_the_profile(stack: &Stack) {
    let (status, answer) = stack.lookup("+1 (317) 555-0123").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["source"].as_str(), answer["found"].as_bool()), (Some("live"), Some(true)), "{answer}");
    assert_eq!((answer["customerId"].as_str(), answer["tier"].as_str()), (Some("C-1001"), Some("gold")), "{answer}");

    let (status, answer) = stack.lookup(UNKNOWN).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["source"].as_str(), answer["found"].as_bool()), (Some("live"), Some(false)), "{answer}");
    assert_eq!(answer["customerId"], "UNKNOWN", "{answer}");
}

/// A case created at once, its id the vendor's, recorded by the CRM under
/// the write's correlationId (the reference the worker searches by).
async fn a_case_is_created_under_its_reference(stack: &Stack) -> Value {
    let (status, answer) =
        stack.create_case(&json!({"ani": KNOWN, "subject": "Callback", "description": "profile test"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "COMPLETE", "{answer}");
    let case_id = answer["caseId"].as_str().unwrap_or_else(|| panic!("a caseId: {answer}"));
    let ledger = stack.ledger().await;
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0]["caseId"].as_str(), Some(case_id), "the vendor's id is the case's: {ledger:?}");
    assert_eq!(ledger[0]["externalRef"], answer["correlationId"], "{ledger:?}");
    answer
}

/// One OAuth token serves every call until the CRM refuses it; then the
/// edge fetches a new one and repeats the call once, within the deadline.
async fn a_refused_token_is_renewed_once(stack: &Stack) {
    assert_eq!(stack.sim_count("tokensIssued").await, 1, "one token serves every call until it is refused");
    let revoked = stack.admin_post("/admin/tokens/revoke", &json!({})).await;
    assert!(revoked["revoked"].as_u64().unwrap_or(0) >= 1, "{revoked}");
    let (status, answer) = stack.lookup("+13175550177").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["source"], "live", "a refused token is renewed, not a failed call: {answer}");
    assert_eq!(stack.sim_count("tokensIssued").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn salesforce_profile_looks_up_creates_and_renews_its_token() {
    let stack = stack(CrmContract::Salesforce).await;
    lookups_are_read_through_the_profile(&stack).await;
    a_case_is_created_under_its_reference(&stack).await;
    a_refused_token_is_renewed_once(&stack).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn servicenow_profile_looks_up_creates_and_renews_its_token() {
    let stack = stack(CrmContract::Servicenow).await;
    lookups_are_read_through_the_profile(&stack).await;
    let answer = a_case_is_created_under_its_reference(&stack).await;
    assert!(answer["caseId"].as_str().is_some_and(|id| id.starts_with("INC")), "the incident's number: {answer}");
    a_refused_token_is_renewed_once(&stack).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hubspot_profile_looks_up_and_creates_a_ticket() {
    let stack = stack(CrmContract::Hubspot).await;
    lookups_are_read_through_the_profile(&stack).await;
    a_case_is_created_under_its_reference(&stack).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn zendesk_profile_looks_up_and_creates_a_ticket_with_its_idempotency_key() {
    let stack = stack(CrmContract::Zendesk).await;
    lookups_are_read_through_the_profile(&stack).await;
    let answer = a_case_is_created_under_its_reference(&stack).await;
    let ledger = stack.ledger().await;
    assert_eq!(ledger[0]["idempotencyKey"], answer["correlationId"], "Zendesk's Idempotency-Key is the write's id");
}

/// Credentials the CRM refuses: lookups fall back (never an error to
/// Genesys) and writes are queued, not failed.
#[tokio::test(flavor = "multi_thread")]
async fn refused_credentials_degrade_like_an_outage() {
    let contract = CrmContract::Salesforce;
    let mut settings = contract.profile_settings();
    settings.retain(|(k, _)| k != "FAILSOFT_CRM_CLIENT_SECRET");
    settings.push(("FAILSOFT_CRM_CLIENT_SECRET".to_owned(), "not-the-secret".to_owned()));
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let stack = Stack::start_with_sim(&contract.sim_args(), &settings).await;
    let (status, answer) = stack.lookup(KNOWN).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["source"], "default", "{answer}");
    let (status, answer) = stack.create_case(&json!({"ani": KNOWN, "subject": "Callback"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "PENDING", "queued for the worker, not failed: {answer}");
    assert_eq!(stack.ledger().await.len(), 0);
    assert_eq!(stack.sim_count("tokensIssued").await, 0);
}

/// `failsoft crm check` with `settings` against the stack's simulator: its
/// exit code and what it printed.
async fn crm_check(stack: &Stack, settings: &[(String, String)], args: &[&str]) -> (i32, String) {
    let mut command = failsoft_tests::harness::program("failsoft");
    command.arg("crm").arg("check").args(args).env("FAILSOFT_CRM_URL", stack.sim.url("api"));
    command.envs(settings.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let output = tokio::task::spawn_blocking(move || command.output().expect("failsoft runs")).await.unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn crm_check_runs_each_mapped_operation_and_says_what_it_read() {
    let contract = CrmContract::Salesforce;
    let stack = stack(contract).await;
    let settings = contract.profile_settings();
    let (code, out) = crm_check(&stack, &settings, &["--phone", "+1 317 555 0123", "--create-case"]).await;
    assert_eq!(code, 0, "{out}");
    for line in [
        "ok   token",
        "ok   probe",
        "(a number no one has): HTTP 200 (success)",
        "found: customerId C-1001, tier gold",
        "no case, as expected of a new reference",
        "ok   create_case  HTTP 201",
        "by its reference: a replay would not create another",
    ] {
        assert!(out.contains(line), "{line:?} in\n{out}");
    }
    assert!(!out.contains("5550123"), "numbers are masked: {out}");
    assert_eq!(stack.ledger().await.len(), 1, "one test case, made on request");

    let mut wrong = settings.clone();
    wrong.retain(|(k, _)| k != "FAILSOFT_CRM_CLIENT_SECRET");
    wrong.push(("FAILSOFT_CRM_CLIENT_SECRET".to_owned(), "not-the-secret".to_owned()));
    let (code, out) = crm_check(&stack, &wrong, &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL token") && out.contains("HTTP 400"), "{out}");

    let (code, out) = crm_check(&stack, &settings[..1], &[]).await;
    assert_eq!(code, 2, "a secret the profile names is missing: {out}");
    assert!(out.contains("FAILSOFT_CRM_CLIENT_ID is not set"), "{out}");
}
