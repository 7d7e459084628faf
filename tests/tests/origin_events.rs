//! Genesys Cloud events through Amazon EventBridge, end to end over moto,
//! the CRM simulator and `failsoft worker`: the SQS-target path (the raw
//! EventBridge event is the queue message) and the API-destination path
//! (`POST /v1/events`), each delivered once to the simulator's `POST /events`
//! even when sent twice, held through a downstream outage and delivered
//! after it, and dead-lettered with the reason when the downstream refuses.
//!
//! The simulator ignores `Idempotency-Key` in these tests, so a second
//! delivery would show in its events ledger: "once" is failsoft's doing.

mod origin_support;

use std::collections::HashMap;
use std::time::Duration;

use origin_support::{AlertReceiver, OriginStack, Worker, wait_for};
use serde_json::{Value, json};

/// Made-up key for tests only; it protects nothing.
const EVENTS_API_KEY: &str = "test-only-events-api-key-0000000";
const API_KEY_HEADER: &str = "X-Failsoft-Api-Key";
/// The fixed group an EventBridge rule's SQS target sets (the template's default).
const RULE_GROUP: &str = "genesys-events";
const ORG: &str = "9f8e7d6c-1234-4abc-9def-0123456789ab";
/// Bound on a delivery once the downstream is up (backoff cap 2 s, breaker cool-down 1 s).
const DELIVERY_BOUND: Duration = Duration::from_secs(30);

/// A Genesys Cloud conversation event as the partner event source delivers it.
fn genesys_event(id: &str, conversation: &str) -> Value {
    let topic = format!("v2.detail.events.conversation.{conversation}.customer.start");
    json!({
        "version": "0",
        "id": id,
        "detail-type": topic,
        "source": format!("aws.partner/genesys.com/cloud/{ORG}/failsoft"),
        "account": "123456789012",
        "time": "2026-11-28T10:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "topicName": topic,
            "version": "2",
            "eventBody": {
                "eventTime": 1_764_324_000_000u64,
                "conversationId": conversation,
                "participantId": "0d9f7c1a-7e6b-4f3a-8c2d-1b0a9e8f7d6c",
                "sessionId": "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d",
                "mediaType": "VOICE",
                "direction": "INBOUND"
            },
            "metadata": {"CorrelationId": format!("{id}-corr")}
        }
    })
}

fn event_id(n: u32) -> String {
    format!("0b7e5c1f-2a34-4d1b-8b9f-{n:012}")
}

fn conversation(n: u32) -> String {
    format!("6c8b3a1e-52b4-4b8e-9c61-{n:012}")
}

/// The worker with events delivered to the simulator's `POST /events`.
async fn events_worker(stack: &OriginStack, extra: &[(&str, &str)]) -> Worker {
    let url = format!("{}/events", stack.sim.url("api"));
    let mut settings = vec![("FAILSOFT_EVENTS_URL", url.as_str()), ("FAILSOFT_EVENTS_API_KEY", EVENTS_API_KEY)];
    settings.extend_from_slice(extra);
    stack.worker(&settings).await
}

/// Sends the raw event as an EventBridge rule with the FIFO queue as its
/// target does: the event is the body, the group is the rule's fixed one.
/// The deduplication id stands for the one SQS derives from the content
/// (the same event, the same id).
async fn send_as_rule(stack: &OriginStack, event: &Value) {
    send_as_rule_with(stack, event, &format!("eb-{}", event["id"].as_str().unwrap())).await;
}

/// [`send_as_rule`] under the deduplication id `dedup`.
async fn send_as_rule_with(stack: &OriginStack, event: &Value, dedup: &str) {
    stack
        .sqs
        .send_message()
        .queue_url(&stack.queue_url)
        .message_body(event.to_string())
        .message_group_id(RULE_GROUP)
        .message_deduplication_id(dedup)
        .send()
        .await
        .expect("SendMessage");
}

/// `POST /v1/events` as an API destination does; (status, body).
async fn post_event(stack: &OriginStack, worker: &Worker, body: &str, key: Option<&str>) -> (u16, Value) {
    post_events(&stack.http, worker, "application/json; charset=utf-8", body, key).await
}

/// `POST /v1/events` with `client` and `content_type`.
async fn post_events(
    client: &reqwest::Client,
    worker: &Worker,
    content_type: &str,
    body: &str,
    key: Option<&str>,
) -> (u16, Value) {
    let mut request =
        client.post(format!("{}/v1/events", worker.url())).header("content-type", content_type).body(body.to_owned());
    if let Some(key) = key {
        request = request.header(API_KEY_HEADER, key);
    }
    let response = request.send().await.expect("the origin answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The simulator's events ledger: deliveries per `Idempotency-Key`.
async fn deliveries(stack: &OriginStack) -> HashMap<String, usize> {
    let ledger = ledger_entries(stack).await;
    let mut counts = HashMap::new();
    for delivery in ledger {
        let key = delivery["idempotencyKey"].as_str().unwrap_or("<none>").to_owned();
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// The stack with a CRM simulator that ignores `Idempotency-Key` (so
/// "once" is failsoft's doing) and a worker delivering events to it.
async fn events_stack() -> (OriginStack, Worker) {
    let stack = OriginStack::start().await;
    ignore_idempotency(&stack).await;
    let worker = events_worker(&stack, &[]).await;
    (stack, worker)
}

async fn ledger_entries(stack: &OriginStack) -> Vec<Value> {
    let response = stack.http.get(format!("{}/admin/events", stack.admin_url())).send().await.expect("events ledger");
    response.json().await.expect("events ledger JSON")
}

/// Waits until every id in `ids` has been delivered, and returns the counts.
async fn delivered(stack: &OriginStack, ids: &[String], within: Duration) -> HashMap<String, usize> {
    wait_for(&format!("{} events delivered", ids.len()), within, || async {
        let counts = deliveries(stack).await;
        ids.iter().all(|id| counts.contains_key(id)).then_some(counts)
    })
    .await
}

/// Waits until the work queue is empty (every message deleted).
async fn drained(stack: &OriginStack, within: Duration) {
    wait_for("the work queue to drain", within, || async { (stack.depth(&stack.queue_url).await == 0).then_some(()) })
        .await;
}

async fn ignore_idempotency(stack: &OriginStack) {
    stack.admin("/admin/idempotency", json!({"mode": "ignore"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_events_from_an_sqs_target_are_delivered_once() {
    let (stack, worker) = events_stack().await;
    let (first, second) = (event_id(1), event_id(2));

    send_as_rule(&stack, &genesys_event(&first, &conversation(1))).await;
    send_as_rule(&stack, &genesys_event(&second, &conversation(2))).await;
    let counts = delivered(&stack, &[first.clone(), second.clone()], DELIVERY_BOUND).await;
    assert_eq!((counts[&first], counts[&second]), (1, 1), "{counts:?}");

    let ledger = ledger_entries(&stack).await;
    let body = &ledger.iter().find(|d| d["idempotencyKey"] == first.as_str()).unwrap()["body"];
    assert_eq!(body["via"], "eventbridge");
    assert_eq!(body["id"], first.as_str());
    assert_eq!(body["topic"], format!("v2.detail.events.conversation.{}.customer.start", conversation(1)));
    assert_eq!(body["eventBody"]["conversationId"], conversation(1).as_str());
    assert_eq!(stack.result_status(&first).await.as_deref(), Some("COMPLETE"));

    // EventBridge delivers at least once: the same event again, after SQS's
    // 5-minute deduplication interval (a fresh deduplication id stands in
    // for the wait; within the interval SQS itself drops it).
    drained(&stack, DELIVERY_BOUND).await;
    send_as_rule(&stack, &genesys_event(&first, &conversation(1))).await;
    assert_eq!(stack.depth(&stack.queue_url).await, 0, "SQS drops it within the interval");
    send_as_rule_with(&stack, &genesys_event(&first, &conversation(1)), &format!("eb-{first}-later")).await;
    assert!(stack.depth(&stack.queue_url).await >= 1, "the duplicate is on the queue");
    drained(&stack, DELIVERY_BOUND).await;
    let counts = deliveries(&stack).await;
    assert_eq!(counts[&first], 1, "the duplicate is not delivered again: {counts:?}");
    assert_eq!(counts.len(), 2);
    assert!(stack.dead_letters().await.is_empty(), "nothing dead-lettered");

    // A body that is neither an envelope nor an EventBridge event is dead-lettered as before.
    send_as_rule(&stack, &json!({"id": event_id(3), "hello": "world"})).await;
    let dead = wait_for("the malformed message's dead letter", DELIVERY_BOUND, || async {
        stack.dead_letters().await.into_iter().next()
    })
    .await;
    assert_eq!(dead.attributes["reason"], "MALFORMED_ENVELOPE", "{:?}", dead.attributes);
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_events_from_an_api_destination_are_queued_then_delivered_once() {
    let (stack, worker) = events_stack().await;

    // Refusals first, with the downstream down: anything queued would stay
    // on the queue (retrying), so an empty queue shows nothing was queued.
    stack.crm(json!({"mode": "down"})).await;
    let valid = genesys_event(&event_id(10), &conversation(10)).to_string();
    let (status, body) = post_event(&stack, &worker, &valid, Some("not-the-key-at-all-0000000000")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("UNAUTHORIZED")), "{body}");
    let (status, _) = post_event(&stack, &worker, &valid, None).await;
    assert_eq!(status, 401, "no key");
    let (status, body) = post_event(&stack, &worker, "{not json", Some(EVENTS_API_KEY)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("MALFORMED_JSON")), "{body}");
    let mut no_detail = genesys_event(&event_id(11), &conversation(11));
    no_detail.as_object_mut().unwrap().remove("detail");
    let (status, body) = post_event(&stack, &worker, &no_detail.to_string(), Some(EVENTS_API_KEY)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("INVALID_EVENT")), "{body}");
    // An id that cannot be a correlationId (the results table's key).
    let odd_id = genesys_event("x:y", &conversation(13));
    let (status, body) = post_event(&stack, &worker, &odd_id.to_string(), Some(EVENTS_API_KEY)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("INVALID_EVENT")), "{body}");
    let mut huge = genesys_event(&event_id(12), &conversation(12));
    huge["detail"]["eventBody"]["padding"] = json!("x".repeat(300 * 1024));
    // On a connection of its own: the server answers 413 without reading
    // the body and closes the connection, which a pooled client could
    // otherwise pick for the next request (IncompleteMessage).
    let once = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).build().unwrap();
    let (status, body) = post_events(&once, &worker, "application/json", &huge.to_string(), Some(EVENTS_API_KEY)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("BODY_TOO_LARGE")), "{body}");
    let (status, _) = post_events(&stack.http, &worker, "text/plain", &valid, Some(EVENTS_API_KEY)).await;
    assert_eq!(status, 415);
    assert_eq!(stack.depth(&stack.queue_url).await, 0, "nothing queued for a refused request");
    assert!(stack.dead_letters().await.is_empty());
    stack.crm(json!({"mode": "up"})).await;

    let id = event_id(10);
    let (status, body) = post_event(&stack, &worker, &valid, Some(EVENTS_API_KEY)).await;
    assert_eq!((status, &body["accepted"], body["id"].as_str()), (202, &json!(true), Some(id.as_str())), "{body}");
    let counts = delivered(&stack, std::slice::from_ref(&id), DELIVERY_BOUND).await;
    assert_eq!(counts[&id], 1);
    let ledger = ledger_entries(&stack).await;
    assert_eq!(ledger[0]["body"]["eventBody"]["conversationId"], conversation(10).as_str());

    // EventBridge retries an API destination; the same event posted twice more.
    drained(&stack, DELIVERY_BOUND).await;
    for _ in 0..2 {
        let (status, _) = post_event(&stack, &worker, &valid, Some(EVENTS_API_KEY)).await;
        assert_eq!(status, 202);
    }
    drained(&stack, DELIVERY_BOUND).await;
    let counts = deliveries(&stack).await;
    assert_eq!((counts.len(), counts[&id]), (1, 1), "delivered once: {counts:?}");
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_events_wait_out_a_downstream_outage_and_arrive_once() {
    let (stack, worker) = events_stack().await;
    stack.crm(json!({"mode": "down"})).await;

    let mut ids = Vec::new();
    for n in 20..23 {
        let id = event_id(n);
        send_as_rule(&stack, &genesys_event(&id, &conversation(n))).await;
        ids.push(id);
    }
    for n in 23..26 {
        let id = event_id(n);
        let (status, body) =
            post_event(&stack, &worker, &genesys_event(&id, &conversation(n)).to_string(), Some(EVENTS_API_KEY)).await;
        assert_eq!(status, 202, "queued while the downstream is down: {body}");
        ids.push(id);
    }
    // Both wirings on at once: the same event arrives by both paths.
    let both = event_id(26);
    let event = genesys_event(&both, &conversation(26));
    send_as_rule(&stack, &event).await;
    assert_eq!(post_event(&stack, &worker, &event.to_string(), Some(EVENTS_API_KEY)).await.0, 202);
    ids.push(both.clone());

    // Attempts fail until the breaker opens; nothing is lost or dead-lettered.
    wait_for("the breaker to open", DELIVERY_BOUND, || async {
        let health: Value = stack.http.get(format!("{}/healthz", worker.url())).send().await.ok()?.json().await.ok()?;
        (health["breaker"] == "open").then_some(())
    })
    .await;
    assert!(deliveries(&stack).await.is_empty(), "nothing delivered during the outage");
    assert!(stack.dead_letters().await.is_empty(), "nothing dead-lettered during the outage");
    assert_eq!(stack.depth(&stack.queue_url).await, 8, "every message still queued");

    stack.crm(json!({"mode": "up"})).await;
    let counts = delivered(&stack, &ids, Duration::from_secs(60)).await;
    drained(&stack, DELIVERY_BOUND).await;
    let counts_after = deliveries(&stack).await;
    assert_eq!(counts, counts_after, "nothing more after the drain");
    for id in &ids {
        assert_eq!(counts[id], 1, "{id} delivered exactly once: {counts:?}");
    }
    assert_eq!(counts.len(), ids.len());
    assert!(stack.dead_letters().await.is_empty());
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_events_a_refusing_downstream_or_none_dead_letters_with_the_reason() {
    let stack = OriginStack::start().await;
    let receiver = AlertReceiver::start(202).await;
    let alert_url = format!("{}/alerts", receiver.url);
    let mut worker = events_worker(&stack, &[("FAILSOFT_ALERT_URL", alert_url.as_str())]).await;
    stack.crm(json!({"mode": "reject", "status": 422})).await;

    let id = event_id(30);
    send_as_rule(&stack, &genesys_event(&id, &conversation(30))).await;
    let dead = wait_for("the refused event's dead letter", DELIVERY_BOUND, || async {
        stack.dead_letters().await.into_iter().find(|d| d.attributes.get("correlationId") == Some(&id))
    })
    .await;
    let a = &dead.attributes;
    assert_eq!((a["reason"].as_str(), a["errorClass"].as_str()), ("EVENTS_REJECTED_422", "permanent"), "{a:?}");
    assert_eq!((a["kind"].as_str(), a["lastStatus"].as_str(), a["attempts"].as_str()), ("event", "422", "1"));
    assert_eq!(dead.body["detail-type"], genesys_event(&id, &conversation(30))["detail-type"], "the original body");
    assert_eq!(stack.result_status(&id).await.as_deref(), Some("FAILED"));
    let alert = wait_for("the alert", DELIVERY_BOUND, || async { receiver.all().into_iter().next() }).await;
    assert_eq!(alert.body["alert"]["reason"], "EVENTS_REJECTED_422", "{}", alert.body);
    assert!(deliveries(&stack).await.is_empty());
    assert!(worker.service.stop(Duration::from_secs(15)));

    // Without FAILSOFT_EVENTS_URL: dead-lettered with that reason, and the
    // API destination is told 503 (EventBridge retries it).
    stack.crm(json!({"mode": "up"})).await;
    let bare = stack.worker(&[("FAILSOFT_EVENTS_API_KEY", EVENTS_API_KEY)]).await;
    let unrouted = event_id(31);
    let event = genesys_event(&unrouted, &conversation(31));
    let (status, body) = post_event(&stack, &bare, &event.to_string(), Some(EVENTS_API_KEY)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("EVENTS_NOT_CONFIGURED")), "{body}");
    send_as_rule(&stack, &event).await;
    let dead = wait_for("the unrouted event's dead letter", DELIVERY_BOUND, || async {
        stack.dead_letters().await.into_iter().find(|d| d.attributes.get("correlationId") == Some(&unrouted))
    })
    .await;
    assert_eq!(dead.attributes["reason"], "EVENTS_NOT_CONFIGURED", "{:?}", dead.attributes);
    assert!(deliveries(&stack).await.is_empty());
    drop(bare);
}
