//! CloudWatch Embedded Metric Format lines (`FAILSOFT_EMF=1`): once every
//! `FAILSOFT_EMF_INTERVAL_SECS` (default 60) the worker prints one JSON
//! object on stdout that CloudWatch Logs turns into metrics without any
//! CloudWatch API call: the five health signals of `/v1/health`, the
//! breaker's state, and the deliveries, retries and dead letters since the
//! previous line.
//!
//! stdout holds only the listening line and these objects (the tracing logs
//! go to stderr), and each line is a whole JSON object with an `_aws`
//! member, so a log pipeline cannot take one for the other. The line holds
//! numbers and fixed names only, never a payload or phone number. A signal
//! without a value is left out of the line and of its `Metrics` (EMF has no
//! null).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use failsoft_shared::breaker::Mode;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::clock;
use crate::deliver::delivery::{Delivery, Outcome};
use crate::telemetry;

pub const NAMESPACE: &str = "Failsoft";
/// The one dimension's value: which process the metrics are of.
pub const SERVICE: &str = "failsoft-origin";

/// `/v1/health`'s signals: (signal, metric name, EMF unit).
const SIGNALS: [(&str, &str, &str); 5] = [
    ("cacheHitRate", "CacheHitRate", "Percent"),
    ("crmLatency", "CrmLatencyP99", "Milliseconds"),
    ("queueDepth", "QueueDepth", "Count"),
    ("dlqDepth", "DlqDepth", "Count"),
    ("degradedShare", "DegradedShare", "Percent"),
];

static DELIVERED: AtomicU64 = AtomicU64::new(0);
static RETRIED: AtomicU64 = AtomicU64::new(0);
static DEAD_LETTERED: AtomicU64 = AtomicU64::new(0);

/// Counts a delivery's outcome for the next line (the consumer's hook).
pub fn tally(outcome: &Outcome) {
    match outcome {
        Outcome::Done => DELIVERED.fetch_add(1, Ordering::Relaxed),
        Outcome::Retry { .. } => RETRIED.fetch_add(1, Ordering::Relaxed),
        Outcome::DeadLetter(_) | Outcome::Defer { .. } => return,
    };
}

/// Counts one message moved to the DLQ (the dead-lettering hook).
pub fn dead_lettered() {
    DEAD_LETTERED.fetch_add(1, Ordering::Relaxed);
}

/// What happened since the previous line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub deliveries: u64,
    pub retries: u64,
    pub dead_letters: u64,
}

impl Counts {
    /// Takes the counts, starting the next interval at zero.
    fn take() -> Self {
        Self {
            deliveries: DELIVERED.swap(0, Ordering::Relaxed),
            retries: RETRIED.swap(0, Ordering::Relaxed),
            dead_letters: DEAD_LETTERED.swap(0, Ordering::Relaxed),
        }
    }
}

/// One EMF document: `health` is the `/v1/health` document, `timestamp_ms`
/// Unix milliseconds.
pub fn line(health: &Value, breaker: Option<Mode>, counts: Counts, timestamp_ms: u64) -> Value {
    let mut metrics = Vec::new();
    let mut root = Map::new();
    let mut put = |name: &str, unit: &str, value: Value| {
        metrics.push(json!({"Name": name, "Unit": unit}));
        root.insert(name.to_owned(), value);
    };
    for (signal, name, unit) in SIGNALS {
        if let Some(value) = health["signals"][signal]["value"].as_f64() {
            put(name, unit, json!(value));
        }
    }
    if let Some(mode) = breaker {
        put("BreakerState", "None", json!(telemetry::breaker_value(mode)));
    }
    put("Deliveries", "Count", json!(counts.deliveries));
    put("Retries", "Count", json!(counts.retries));
    put("DeadLetters", "Count", json!(counts.dead_letters));
    root.insert(
        "_aws".to_owned(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Service"]],
                "Metrics": metrics,
            }],
        }),
    );
    root.insert("Service".to_owned(), json!(SERVICE));
    // Properties, not metrics: searchable in CloudWatch Logs Insights.
    if let Some(level) = health["level"].as_str() {
        root.insert("HealthLevel".to_owned(), json!(level));
    }
    if let Some(mode) = breaker {
        root.insert("Breaker".to_owned(), json!(mode.as_str()));
    }
    Value::Object(root)
}

fn print(delivery: &Delivery) {
    let breaker = delivery.breaker_mode();
    let doc = line(&telemetry::health(Some(breaker)), Some(breaker), Counts::take(), clock::now_ms());
    // A closed stdout must not stop the worker: the metrics are lost, nothing else.
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{doc}").and_then(|()| out.flush()).is_err() {
        tracing::debug!("stdout is closed: an EMF line was dropped");
    }
}

/// Prints a line every `every` until `stop`, and a last one then (so the
/// counts of the final interval are not lost).
pub async fn run(delivery: Arc<Delivery>, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => print(&delivery),
            _ = stop.wait_for(|s| *s) => {
                print(&delivery);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's rules a document must follow: `_aws` with a
    /// millisecond `Timestamp` and directives; each directive's namespace
    /// 1-255 characters, dimension sets naming string members (at most 30),
    /// metrics (at most 100) named by top-level numbers, units CloudWatch
    /// knows.
    fn check_against_the_spec(doc: &Value) {
        const UNITS: &[&str] = &["Seconds", "Microseconds", "Milliseconds", "Count", "Percent", "None"];
        let root = doc.as_object().expect("the root is an object");
        let aws = root["_aws"].as_object().expect("_aws is an object");
        let ts = aws["Timestamp"].as_u64().expect("Timestamp is an integer");
        assert!(ts > 1_600_000_000_000, "Timestamp is in milliseconds: {ts}");
        let directives = aws["CloudWatchMetrics"].as_array().expect("CloudWatchMetrics is an array");
        assert!(!directives.is_empty());
        for d in directives {
            let ns = d["Namespace"].as_str().expect("Namespace");
            assert!((1..=255).contains(&ns.len()) && !ns.starts_with("AWS/"));
            for set in d["Dimensions"].as_array().expect("Dimensions") {
                let set = set.as_array().expect("a dimension set is an array");
                assert!(!set.is_empty() && set.len() <= 30);
                for name in set {
                    let name = name.as_str().expect("a dimension name");
                    assert!(root[name].is_string(), "dimension {name} is a string member");
                }
            }
            let metrics = d["Metrics"].as_array().expect("Metrics");
            assert!(!metrics.is_empty() && metrics.len() <= 100);
            for m in metrics {
                let name = m["Name"].as_str().expect("a metric name");
                assert!((1..=255).contains(&name.len()));
                assert!(root[name].is_number(), "metric {name} is a top-level number: {doc}");
                assert!(UNITS.contains(&m["Unit"].as_str().unwrap()), "{m}");
            }
        }
        assert!(!doc.to_string().contains("null"), "EMF has no null: {doc}");
    }

    fn health(latency: Value, dlq: Value) -> Value {
        json!({
            "level": "warning",
            "signals": {
                "cacheHitRate": {"value": null},
                "crmLatency": {"value": latency},
                "queueDepth": {"value": 3.0},
                "dlqDepth": {"value": dlq},
                "degradedShare": {"value": null},
            },
            "breaker": "closed",
        })
    }

    #[test]
    fn a_line_follows_the_specification() {
        let counts = Counts { deliveries: 7, retries: 2, dead_letters: 1 };
        let doc = line(&health(json!(12.5), json!(1.0)), Some(Mode::Closed), counts, 1_764_000_000_123);
        check_against_the_spec(&doc);
        assert_eq!(doc["_aws"]["Timestamp"], 1_764_000_000_123u64);
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Failsoft");
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Service"]]));
        assert_eq!(
            (&doc["Service"], &doc["QueueDepth"], &doc["DlqDepth"]),
            (&json!(SERVICE), &json!(3.0), &json!(1.0))
        );
        assert_eq!((&doc["CrmLatencyP99"], &doc["BreakerState"]), (&json!(12.5), &json!(0.0)));
        assert_eq!((&doc["Deliveries"], &doc["Retries"], &doc["DeadLetters"]), (&json!(7), &json!(2), &json!(1)));
        assert_eq!((&doc["HealthLevel"], &doc["Breaker"]), (&json!("warning"), &json!("closed")));
        let units: Vec<(&str, &str)> = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["Name"].as_str().unwrap(), m["Unit"].as_str().unwrap()))
            .collect();
        assert!(units.contains(&("CrmLatencyP99", "Milliseconds")) && units.contains(&("DlqDepth", "Count")));
    }

    #[test]
    fn signals_without_a_value_are_left_out() {
        let doc = line(&health(Value::Null, Value::Null), None, Counts::default(), 1_764_000_000_000);
        check_against_the_spec(&doc);
        for absent in ["CacheHitRate", "DegradedShare", "CrmLatencyP99", "DlqDepth", "BreakerState", "Breaker"] {
            assert!(doc.get(absent).is_none(), "{absent}: {doc}");
        }
        let named: Vec<&str> = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(named, ["QueueDepth", "Deliveries", "Retries", "DeadLetters"]);
    }

    #[test]
    fn a_line_is_one_line_of_json() {
        let doc = line(&health(json!(1.0), json!(0.0)), Some(Mode::Closed), Counts::default(), 1_764_000_000_000);
        let text = doc.to_string();
        assert!(!text.contains('\n'));
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), doc);
    }

    #[test]
    fn the_live_document_follows_the_specification() {
        let doc = line(&telemetry::health(Some(Mode::Closed)), Some(Mode::Closed), Counts::take(), clock::now_ms());
        check_against_the_spec(&doc);
    }
}
