//! The CRM's signed change webhook (`POST /v1/webhooks/crm-update`): a
//! routing change stops the cached record being served; anything unsigned,
//! tampered with, replayed, late or from the future is refused.

use failsoft_shared::signature::TIMESTAMP_HEADER;
use failsoft_tests::signing::{self, now_secs};
use failsoft_tests::{Stack, WEBHOOK_SECRET, assert_error};
use serde_json::{Value, json};

const VIP_A: &str = "+13175550101";
const VIP_B: &str = "+13175550102";

async fn with_vips(stack: &Stack) {
    stack
        .load_customers(json!([
            {"phone": VIP_A, "customerId": "C-2001", "tier": "vip", "vipFlag": true},
            {"phone": VIP_B, "customerId": "C-2002", "tier": "vip", "vipFlag": true},
        ]))
        .await;
}

async fn warm_vip(stack: &Stack, ani: &str) {
    let (status, body) = stack.lookup(ani).await;
    assert_eq!((status, &body["source"], &body["tier"]), (200, &json!("live"), &json!("vip")), "warming: {body}");
    let (_, body) = stack.lookup(ani).await;
    assert_eq!((&body["source"], &body["tier"]), (&json!("cache"), &json!("vip")), "warm: {body}");
}

/// The signature headers of a change event `body` signed with `secret` at `ts`.
fn signed(body: &[u8], secret: &str, ts: u64) -> Vec<(&'static str, String)> {
    signing::headers(secret, "POST", "/v1/webhooks/crm-update", body, ts).into()
}

/// POSTs a change event with the given signature headers.
async fn webhook(stack: &Stack, body: &[u8], headers: &[(&'static str, String)]) -> (u16, Value) {
    let request = stack
        .http
        .post(stack.url("/v1/webhooks/crm-update"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    let request = headers.iter().fold(request, |request, (name, value)| request.header(*name, value));
    let reply = stack.send(request).await;
    (reply.status, reply.body)
}

fn change(phone: &str, field: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"phone": phone, "customerId": "C-2001", "fieldChanged": field, "newValue": "x"}))
        .expect("serialises")
}

#[tokio::test(flavor = "multi_thread")]
async fn tier_change_webhook_stops_the_old_tier_being_served() {
    let stack = Stack::start().await;
    with_vips(&stack).await;
    warm_vip(&stack, VIP_A).await;
    warm_vip(&stack, VIP_B).await;

    for phone in [VIP_A, VIP_B] {
        let reply = stack.change_tier(phone, "standard", true).await;
        assert_eq!(reply["oldTier"], "vip", "{reply}");
        assert_eq!(reply["webhookStatus"], 200, "the facade accepted the signed webhook: {reply}");
    }

    let lookups = stack.sim_count("lookups").await;
    let (status, body) = stack.lookup(VIP_A).await;
    assert_eq!(status, 200);
    assert_eq!(body["source"], "live", "the invalidated record is fetched again: {body}");
    assert_eq!(body["tier"], "standard", "{body}");
    assert_eq!(stack.sim_count("lookups").await, lookups + 1);

    // With the CRM down, the invalidated record is not served as stale.
    stack.crm("down").await;
    let (status, body) = stack.lookup(VIP_B).await;
    assert_eq!(status, 200);
    assert_ne!(body["tier"], "vip", "a downgraded customer kept premium routing: {body}");
    assert_eq!(body["source"], "default", "{body}");
    assert_eq!(body["warning"], "CRM_UNAVAILABLE_NO_CACHE", "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unsigned_tampered_and_expired_webhooks_are_refused() {
    let stack = Stack::start().await;
    with_vips(&stack).await;
    warm_vip(&stack, VIP_A).await;
    let body = change(VIP_A, "tier");
    let now = now_secs();

    let (status, reply) = webhook(&stack, &body, &[]).await;
    assert_error("unsigned", status, &reply, 401, "SIGNATURE_MISSING");

    let headers = signed(&body, WEBHOOK_SECRET, now);
    let tampered = change(VIP_B, "tier");
    let (status, reply) = webhook(&stack, &tampered, &headers).await;
    assert_error("tampered body", status, &reply, 401, "SIGNATURE_MISMATCH");

    let mut later = headers.clone();
    later.iter_mut().filter(|(name, _)| *name == TIMESTAMP_HEADER).for_each(|(_, ts)| *ts = (now + 1).to_string());
    let (status, reply) = webhook(&stack, &body, &later).await;
    assert_error("tampered timestamp", status, &reply, 401, "SIGNATURE_MISMATCH");

    let (status, reply) = webhook(&stack, &body, &signed(&body, "test-only-some-other-secret", now)).await;
    assert_error("wrong secret", status, &reply, 401, "SIGNATURE_MISMATCH");

    let (status, reply) = webhook(&stack, &body, &signed(&body, WEBHOOK_SECRET, now - 3_600)).await;
    assert_error("expired", status, &reply, 401, "SIGNATURE_EXPIRED");

    let (status, reply) = webhook(&stack, &body, &signed(&body, WEBHOOK_SECRET, now + 65)).await;
    assert_error("65 s ahead", status, &reply, 401, "SIGNATURE_FROM_FUTURE");

    let (_, still) = stack.lookup(VIP_A).await;
    assert_eq!(still["source"], "cache", "a refused webhook must not invalidate: {still}");

    // Accepted once; the very same request again is a replay.
    let (status, reply) = webhook(&stack, &body, &headers).await;
    assert_eq!((status, &reply), (200, &json!({"invalidated": true})), "the signed change, once");
    warm_vip(&stack, VIP_A).await;
    let (status, reply) = webhook(&stack, &body, &headers).await;
    assert_error("replayed", status, &reply, 401, "SIGNATURE_REPLAYED");

    let (_, still) = stack.lookup(VIP_A).await;
    assert_eq!(still["source"], "cache", "a replayed webhook must not invalidate: {still}");
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_webhooks_invalidate_only_routing_changes() {
    let stack = Stack::start().await;
    with_vips(&stack).await;
    warm_vip(&stack, VIP_A).await;

    let email = change(VIP_A, "email");
    let now = now_secs();
    let (status, reply) = webhook(&stack, &email, &signed(&email, WEBHOOK_SECRET, now)).await;
    assert_eq!((status, &reply), (200, &json!({"invalidated": false})), "email change");
    let (_, body) = stack.lookup(VIP_A).await;
    assert_eq!(body["source"], "cache", "an email change keeps the record: {body}");

    let tier = change(VIP_A, "tier");
    let (status, reply) = webhook(&stack, &tier, &signed(&tier, WEBHOOK_SECRET, now)).await;
    assert_eq!((status, &reply), (200, &json!({"invalidated": true})), "tier change");
    let lookups = stack.sim_count("lookups").await;
    let (_, body) = stack.lookup(VIP_A).await;
    assert_eq!(body["source"], "live", "a tier change drops the record: {body}");
    assert_eq!(stack.sim_count("lookups").await, lookups + 1);
}
