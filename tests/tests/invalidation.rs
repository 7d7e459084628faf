//! The CRM's signed change webhook (`POST /v1/webhooks/crm-update`): a
//! routing change stops the cached record being served; anything unsigned,
//! tampered with or replayed late is refused.

use std::time::{SystemTime, UNIX_EPOCH};

use failsoft_shared::signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
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

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
}

/// POSTs a change event with the given signature headers.
async fn webhook(stack: &Stack, body: &[u8], timestamp: Option<u64>, signature: Option<String>) -> (u16, Value) {
    let mut request = stack
        .http
        .post(stack.url("/v1/webhooks/crm-update"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(ts) = timestamp {
        request = request.header(TIMESTAMP_HEADER, ts.to_string());
    }
    if let Some(signature) = signature {
        request = request.header(SIGNATURE_HEADER, signature);
    }
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

    let (status, reply) = webhook(&stack, &body, None, None).await;
    assert_error("unsigned", status, &reply, 401, "SIGNATURE_MISSING");

    let signature = sign(WEBHOOK_SECRET.as_bytes(), now, &body);
    let tampered = change(VIP_B, "tier");
    let (status, reply) = webhook(&stack, &tampered, Some(now), Some(signature.clone())).await;
    assert_error("tampered body", status, &reply, 401, "SIGNATURE_MISMATCH");

    let (status, reply) = webhook(&stack, &body, Some(now + 1), Some(signature)).await;
    assert_error("tampered timestamp", status, &reply, 401, "SIGNATURE_MISMATCH");

    let forged = sign(b"test-only-some-other-secret", now, &body);
    let (status, reply) = webhook(&stack, &body, Some(now), Some(forged)).await;
    assert_error("wrong secret", status, &reply, 401, "SIGNATURE_MISMATCH");

    let old = now - 3_600;
    let expired = sign(WEBHOOK_SECRET.as_bytes(), old, &body);
    let (status, reply) = webhook(&stack, &body, Some(old), Some(expired)).await;
    assert_error("expired", status, &reply, 401, "SIGNATURE_EXPIRED");

    let (_, still) = stack.lookup(VIP_A).await;
    assert_eq!(still["source"], "cache", "a refused webhook must not invalidate: {still}");
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_webhooks_invalidate_only_routing_changes() {
    let stack = Stack::start().await;
    with_vips(&stack).await;
    warm_vip(&stack, VIP_A).await;

    let email = change(VIP_A, "email");
    let now = now_secs();
    let (status, reply) = webhook(&stack, &email, Some(now), Some(sign(WEBHOOK_SECRET.as_bytes(), now, &email))).await;
    assert_eq!((status, &reply), (200, &json!({"invalidated": false})), "email change");
    let (_, body) = stack.lookup(VIP_A).await;
    assert_eq!(body["source"], "cache", "an email change keeps the record: {body}");

    let tier = change(VIP_A, "tier");
    let (status, reply) = webhook(&stack, &tier, Some(now), Some(sign(WEBHOOK_SECRET.as_bytes(), now, &tier))).await;
    assert_eq!((status, &reply), (200, &json!({"invalidated": true})), "tier change");
    let lookups = stack.sim_count("lookups").await;
    let (_, body) = stack.lookup(VIP_A).await;
    assert_eq!(body["source"], "live", "a tier change drops the record: {body}");
    assert_eq!(stack.sim_count("lookups").await, lookups + 1);
}
