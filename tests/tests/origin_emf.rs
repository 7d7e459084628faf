//! `FAILSOFT_EMF=1`: the worker prints CloudWatch Embedded Metric Format
//! lines on stdout, one per interval (1 s here), that CloudWatch Logs can
//! turn into metrics. Over real processes: every stdout line after the
//! listening line is such a document, its metrics are top-level numbers,
//! its timestamp is now in milliseconds, and the deliveries of the lines
//! add up to the deliveries made.

mod origin_support;

use std::time::Duration;

use origin_support::{OriginStack, wait_for};
use serde_json::Value;

const PHONE: &str = "+44 20 7946 0303";

fn check_line(line: &str, started_ms: u64) -> Value {
    let doc: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("stdout holds only EMF JSON ({e}): {line}"));
    let aws = &doc["_aws"];
    let ts = aws["Timestamp"].as_u64().unwrap_or_else(|| panic!("a Timestamp: {line}"));
    assert!(
        (started_ms..=failsoft_origin::clock::now_ms()).contains(&ts),
        "Timestamp in milliseconds, of this run: {ts}"
    );
    let directive = &aws["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "Failsoft", "{line}");
    assert_eq!(directive["Dimensions"], serde_json::json!([["Service"]]), "{line}");
    assert_eq!(doc["Service"], "failsoft-origin", "{line}");
    for metric in directive["Metrics"].as_array().expect("Metrics") {
        let name = metric["Name"].as_str().expect("a name");
        assert!(doc[name].is_number(), "{name} is a top-level number: {line}");
    }
    assert!(!line.contains("null"), "EMF has no null: {line}");
    assert!(!line.contains("7946"), "no phone number: {line}");
    doc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_prints_emf_lines_on_stdout() {
    let started = failsoft_origin::clock::now_ms();
    let stack = OriginStack::start().await;
    let worker = stack.worker(&[("FAILSOFT_EMF", "1"), ("FAILSOFT_EMF_INTERVAL_SECS", "1")]).await;
    stack.enqueue_write("emf-ok-0", PHONE, "counted").await;
    stack.ledger_with(1, Duration::from_secs(30)).await;

    // Once a line shows the delivery and the queue sampled empty after it
    // (samples are 5 s apart), check them all.
    let lines = wait_for("an EMF line with the delivery and the depths", Duration::from_secs(30), || async {
        let lines = worker.service.stdout_lines();
        let docs: Vec<Value> = lines.iter().map(|l| check_line(l, started)).collect();
        let delivered: f64 = docs.iter().filter_map(|d| d["Deliveries"].as_f64()).sum();
        let sampled = docs.last().is_some_and(|d| d["QueueDepth"] == 0.0 && d["DlqDepth"].is_number());
        (delivered >= 1.0 && sampled).then_some(docs)
    })
    .await;
    let delivered: f64 = lines.iter().filter_map(|d| d["Deliveries"].as_f64()).sum();
    assert_eq!(delivered, 1.0, "one delivery, counted in exactly one line");
    let last = lines.last().unwrap();
    assert_eq!((&last["QueueDepth"], &last["DlqDepth"]), (&Value::from(0.0), &Value::from(0.0)), "{last}");
    assert_eq!((&last["BreakerState"], &last["Breaker"]), (&Value::from(0.0), &Value::from("closed")), "{last}");
    assert!(last["CrmLatencyP99"].as_f64().is_some_and(|ms| ms > 0.0), "the CRM call's latency: {last}");
    assert!(last.get("CacheHitRate").is_none(), "a signal without a value is left out: {last}");
    let names: Vec<&str> = last["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap())
        .collect();
    for name in ["QueueDepth", "DlqDepth", "CrmLatencyP99", "BreakerState", "Deliveries", "Retries", "DeadLetters"] {
        assert!(names.contains(&name), "{name} in Metrics: {names:?}");
    }
}
