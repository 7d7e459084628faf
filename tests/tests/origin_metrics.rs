//! The origin's `/metrics` and `/v1/health` over real processes: deliveries
//! move the Prometheus counters and the CRM latency histogram; dead letters
//! raise the DLQ depth `/v1/health` classifies with the guide's thresholds,
//! and the overall level follows; `/healthz` stays the process's liveness.
//! They are served on the operator's listener, apart from the edge-facing API.

mod origin_support;

use std::time::Duration;

use failsoft_shared::health::{Level, Signal};
use origin_support::{OriginStack, Worker, sample, wait_for};
use serde_json::{Value, json};

const PHONE: &str = "+44 20 7946 0301";
const SIGNALS: [&str; 5] = ["cacheHitRate", "crmLatency", "queueDepth", "dlqDepth", "degradedShare"];

async fn get(stack: &OriginStack, worker: &Worker, path: &str) -> (u16, String) {
    let resp = stack.http.get(format!("{}{path}", worker.operator_url())).send().await.expect("the origin answers");
    (resp.status().as_u16(), resp.text().await.unwrap_or_default())
}

async fn health(stack: &OriginStack, worker: &Worker) -> Value {
    let (status, body) = get(stack, worker, "/v1/health").await;
    assert_eq!(status, 200, "/v1/health: {body}");
    serde_json::from_str(&body).expect("/v1/health is JSON")
}

fn level(value: &Value) -> Level {
    serde_json::from_value(value.clone()).unwrap_or_else(|_| panic!("a level: {value}"))
}

/// The document's shape: five signals with value, thresholds and level,
/// the overall level the worst of them, nothing personal in it.
fn check_document(doc: &Value) {
    let mut worst = Level::Ok;
    for (name, signal) in SIGNALS.iter().zip(Signal::ALL) {
        let entry = &doc["signals"][name];
        let t = signal.thresholds();
        assert_eq!((entry["warning"].as_f64(), entry["critical"].as_f64()), (Some(t.warning), Some(t.critical)));
        let entry_level = level(&entry["level"]);
        if let Some(value) = entry["value"].as_f64() {
            assert_eq!(entry_level, signal.classify(value), "{name}: {entry}");
        } else {
            assert!(entry["value"].is_null(), "{name}: {entry}");
            assert_eq!(entry_level, Level::Ok, "{name}: {entry}");
        }
        worst = worst.max(entry_level);
    }
    assert_eq!(level(&doc["level"]), worst, "overall is the worst signal: {doc}");
    for name in ["cacheHitRate", "degradedShare"] {
        let entry = &doc["signals"][name];
        assert_eq!((&entry["value"], &entry["source"]), (&Value::Null, &json!("not reported")), "{name}");
    }
    let text = doc.to_string();
    assert!(!text.contains("7946") && !text.contains("+44"), "no phone number in /v1/health: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_operator_surface_is_apart_from_the_edge_facing_api() {
    let stack = OriginStack::start().await;
    let worker = stack.worker(&[]).await;
    assert_ne!(worker.url(), worker.operator_url());
    for path in ["/metrics", "/v1/health", "/dashboard", "/v1/dashboard"] {
        let (status, _) = get(&stack, &worker, path).await;
        assert_eq!(status, 200, "{path} on the operator's listener");
        let api = stack.http.get(format!("{}{path}", worker.url())).send().await.expect("the API answers");
        assert_eq!(api.status().as_u16(), 404, "{path} is not on the edge-facing port");
    }
    for base in [worker.url(), worker.operator_url()] {
        let live = stack.http.get(format!("{base}/healthz")).send().await.expect("/healthz answers");
        assert_eq!(live.status().as_u16(), 200, "/healthz on {base}");
    }
    // The results API and the edge's reports stay on the API's port only.
    let read = stack.http.get(format!("{}/v1/results/anything", worker.operator_url())).send().await.unwrap();
    assert_eq!(read.status().as_u16(), 404, "no results on the operator's listener");
    let read = stack.http.get(format!("{}/v1/results/anything", worker.url())).send().await.unwrap();
    assert_eq!(read.status().as_u16(), 401, "results on the API, unsigned: refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_metrics_count_deliveries_and_health_classifies_the_dlq() {
    let stack = OriginStack::start().await;
    let worker = stack.worker(&[]).await;

    // Healthy: both depths sampled at zero, every signal ok.
    let doc = wait_for("both queue depths sampled", Duration::from_secs(20), || async {
        let doc = health(&stack, &worker).await;
        let sampled = |name: &str| doc["signals"][name]["source"] == "sqs";
        (sampled("queueDepth") && sampled("dlqDepth")).then_some(doc)
    })
    .await;
    check_document(&doc);
    assert_eq!(doc["signals"]["dlqDepth"]["value"], 0.0, "{doc}");
    assert_eq!(doc["level"], "ok", "healthy before any dead letter: {doc}");
    assert_eq!(doc["breaker"], "closed");

    // Three writes are delivered: the counters and the histogram move.
    for i in 0..3 {
        stack.enqueue_write(&format!("metrics-ok-{i}"), PHONE, &format!("case {i}")).await;
    }
    stack.ledger_with(3, Duration::from_secs(30)).await;
    let text = wait_for("three deliveries counted", Duration::from_secs(10), || async {
        let (status, text) = get(&stack, &worker, "/metrics").await;
        assert_eq!(status, 200);
        let delivered = sample(&text, "failsoft_origin_deliveries_total", &[("outcome", "delivered")]);
        (delivered >= Some(3.0)).then_some(text)
    })
    .await;
    let calls = sample(&text, "failsoft_origin_crm_latency_seconds_count", &[]).unwrap_or(0.0);
    assert!(calls >= 3.0, "three CRM calls at least: {text}");
    assert!(
        sample(&text, "failsoft_origin_crm_latency_seconds_bucket", &[("le", "0.5")]).is_some(),
        "a histogram with the 0.5 s threshold as a bucket: {text}"
    );
    assert_eq!(sample(&text, "failsoft_origin_breaker_state", &[]), Some(0.0), "closed: {text}");
    assert!(sample(&text, "failsoft_origin_replay_rate", &[]).is_some_and(|r| r > 0.0), "{text}");
    assert!(sample(&text, "failsoft_origin_queue_depth", &[]).is_some(), "{text}");
    assert!(sample(&text, "failsoft_origin_dlq_depth", &[]).is_some(), "{text}");
    assert!(!text.contains("7946"), "no phone number in /metrics");
    let doc = health(&stack, &worker).await;
    check_document(&doc);
    let latency = &doc["signals"]["crmLatency"];
    assert!(latency["value"].as_f64().is_some(), "the CRM latency is measured now: {latency}");
    assert_eq!((&latency["statistic"], &latency["source"]), (&json!("p99"), &json!("origin")));

    // The CRM refuses two writes: both dead-lettered, the DLQ depth is a warning.
    stack.crm(json!({"mode": "reject"})).await;
    for i in 0..2 {
        stack.enqueue_write(&format!("metrics-refused-{i}"), PHONE, "refused").await;
    }
    wait_for("two dead letters", Duration::from_secs(30), || async {
        (stack.dead_letters().await.len() == 2).then_some(())
    })
    .await;
    let doc = wait_for("the DLQ depth in /v1/health", Duration::from_secs(20), || async {
        let doc = health(&stack, &worker).await;
        (doc["signals"]["dlqDepth"]["value"].as_f64() >= Some(1.0)).then_some(doc)
    })
    .await;
    check_document(&doc);
    let dlq = &doc["signals"]["dlqDepth"];
    let depth = dlq["value"].as_f64().unwrap();
    let want = Signal::DlqDepth.classify(depth);
    assert!(want >= Level::Warning, "any dead letter is at least a warning");
    assert_eq!(level(&dlq["level"]), want, "{dlq}");
    assert!(level(&doc["level"]) >= want, "the overall level follows the DLQ: {doc}");

    let (_, text) = get(&stack, &worker, "/metrics").await;
    let dead = sample(&text, "failsoft_origin_dead_letters_total", &[("error_class", "permanent")]);
    assert_eq!(dead, Some(2.0), "{text}");
    let refused = sample(&text, "failsoft_origin_deliveries_total", &[("outcome", "permanent")]);
    assert_eq!(refused, Some(2.0), "{text}");
    assert!(sample(&text, "failsoft_origin_dlq_depth", &[]) >= Some(1.0), "{text}");

    // The process's own liveness is unchanged and separate.
    let (status, body) = get(&stack, &worker, "/healthz").await;
    let live: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, &live["status"]), (200, &json!("ok")));
    assert!(live.get("signals").is_none(), "{live}");
}
