//! The origin worker through each shipped CRM profile (`deploy/crm/`),
//! against the simulator serving that vendor's API: a write whose case the
//! CRM already made (an attempt the edge gave up on, the CRM's answer
//! lost) is found by its reference and recorded, never created again; a
//! new write is created once. Real processes: moto's server (IAM on), the
//! simulator, `failsoft worker`.

mod origin_support;

use std::time::Duration;

use failsoft_lab::local_stack::CrmContract;
use failsoft_shared::mapping::{self, Mapping, Settings};
use origin_support::{OriginStack, refs, wait_for, write_envelope};
use serde_json::{Value, json};

const PHONE: &str = "+44 20 7946 0111";

/// The profile's mapping with the simulator's credentials.
fn mapping_of(contract: CrmContract) -> Mapping {
    let settings = contract.profile_settings();
    let secret = |name: &str| settings.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let profile = secret("FAILSOFT_CRM_PROFILE");
    let from = Settings { profile: profile.as_deref(), ..Default::default() };
    mapping::load_text(from, &secret).expect("the profile binds")
}

/// Creates a case at the CRM as the edge's abandoned first attempt did:
/// through the profile's own create call, its answer thrown away.
async fn made_at_the_crm(stack: &OriginStack, contract: CrmContract, correlation_id: &str) {
    let mapping = mapping_of(contract);
    let base = stack.sim.url("api").to_owned();
    let send = |request: mapping::CrmRequest| {
        let method = reqwest::Method::from_bytes(request.method.as_bytes()).expect("a method");
        let mut builder = stack.http.request(method, request.url);
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        builder.send()
    };
    let token = match mapping.token_request(&base) {
        Some(request) => {
            let body = send(request).await.expect("the token call").bytes().await.expect("the token");
            Some(mapping.read_token(&body, 0).expect("a token").access_token)
        }
        None => None,
    };
    let case = json!({"phone": "+442079460111", "subject": "Callback", "externalRef": correlation_id});
    let request = mapping.create_case(&base, correlation_id, &case, token.as_deref()).expect("a create");
    let status = send(request).await.expect("the create").status();
    assert!(status.is_success(), "the simulator made the case: {status}");
}

async fn a_case_the_crm_made_is_found_not_made_again(contract: CrmContract) {
    let stack = OriginStack::start_with_sim(&contract.sim_args()).await;
    let settings = contract.profile_settings();
    let mut extra: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // The profile declares its own search.
    extra.push(("FAILSOFT_CRM_CAN_FIND_CASES", ""));
    let worker = stack.worker(&extra).await;

    made_at_the_crm(&stack, contract, "abandoned-1").await;
    let made = stack.ledger().await;
    assert_eq!(made.len(), 1, "{made:?}");
    stack.enqueue(&write_envelope("abandoned-1", PHONE, "Callback")).await;
    stack.enqueue(&write_envelope("fresh-1", PHONE, "Callback")).await;

    let ledger = stack.ledger_with(2, Duration::from_secs(30)).await;
    for id in ["abandoned-1", "fresh-1"] {
        wait_for(&format!("{id} COMPLETE"), Duration::from_secs(30), || async {
            (stack.result_status(id).await.as_deref() == Some("COMPLETE")).then_some(())
        })
        .await;
    }
    let (status, answer) = stack.result(&worker, "abandoned-1").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["caseId"], made[0]["caseId"], "the case the CRM made is the write's: {answer}");
    // Settled: nothing more arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ledger_after = stack.ledger().await;
    assert_eq!(refs(&ledger_after), vec!["abandoned-1".to_owned(), "fresh-1".to_owned()], "{ledger:?}");
    assert!(stack.sim_count("caseQueries").await >= 2, "the worker searched before each create");
    let queries: Value = stack.sim_stats().await;
    assert_eq!(stack.depth(&stack.dlq_url).await, 0, "{queries}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_salesforce_finds_a_case_the_crm_made_before_creating() {
    a_case_the_crm_made_is_found_not_made_again(CrmContract::Salesforce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_zendesk_finds_a_case_the_crm_made_before_creating() {
    a_case_the_crm_made_is_found_not_made_again(CrmContract::Zendesk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_hubspot_finds_a_case_the_crm_made_before_creating() {
    a_case_the_crm_made_is_found_not_made_again(CrmContract::Hubspot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_servicenow_finds_a_case_the_crm_made_before_creating() {
    a_case_the_crm_made_is_found_not_made_again(CrmContract::Servicenow).await;
}
