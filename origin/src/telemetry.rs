//! The origin's metrics and health: the Prometheus recorder (`/metrics`),
//! the CRM latency window and the queue-depth sampler `/v1/health` reads,
//! and the health document itself, classified by
//! [`failsoft_shared::health`].
//!
//! Metric names (all prefixed `failsoft_origin_`):
//! `crm_latency_seconds` (histogram, label `operation`),
//! `deliveries_total{outcome}` (`delivered`, or the error class of a failed
//! attempt: `transient`, `throttled`, `permanent`, `invalid`),
//! `retries_total{error_class}`, `dead_letters_total{error_class}`,
//! `deferred_total{why}`, `breaker_state` (0 closed, 1 half-open, 2 open),
//! `replay_rate` (CRM calls per second allowed now), `replay_ceiling` (what
//! it ramps to: `FAILSOFT_REPLAY_RATE_MAX`, or just under the CRM's limit
//! once configured or stated), `crm_throttled_total` (429s), `in_flight`,
//! `queue_depth`, `dlq_depth` (visible + in flight, sampled every
//! [`DEPTH_SAMPLE_EVERY`]).

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::QueueAttributeName;
use failsoft_shared::breaker::Mode;
use failsoft_shared::error_class::Operation;
use failsoft_shared::health::{Direction, Level, Signal, overall};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::http::edge_stats;

pub const CRM_LATENCY: &str = "failsoft_origin_crm_latency_seconds";
pub const DELIVERIES: &str = "failsoft_origin_deliveries_total";
pub const RETRIES: &str = "failsoft_origin_retries_total";
pub const DEAD_LETTERS: &str = "failsoft_origin_dead_letters_total";
pub const DEFERRED: &str = "failsoft_origin_deferred_total";
pub const BREAKER_STATE: &str = "failsoft_origin_breaker_state";
pub const REPLAY_RATE: &str = "failsoft_origin_replay_rate";
pub const REPLAY_CEILING: &str = "failsoft_origin_replay_ceiling";
pub const CRM_THROTTLED: &str = "failsoft_origin_crm_throttled_total";
pub const IN_FLIGHT: &str = "failsoft_origin_in_flight";
pub const QUEUE_DEPTH: &str = "failsoft_origin_queue_depth";
pub const DLQ_DEPTH: &str = "failsoft_origin_dlq_depth";

/// How often the queue depths are sampled.
pub const DEPTH_SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Bound on one `GetQueueAttributes` call.
const DEPTH_CALL_LIMIT: Duration = Duration::from_secs(5);
/// The CRM latency `/v1/health` reports: the p99 of the calls of this window…
pub const LATENCY_WINDOW: Duration = Duration::from_secs(300);
/// …and of at most this many of the latest calls.
pub const LATENCY_SAMPLES: usize = 2048;
/// Histogram buckets, seconds (the guide's 0.5 s and 2 s thresholds are edges).
const LATENCY_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
static LATENCIES: Mutex<VecDeque<(Instant, f64)>> = Mutex::new(VecDeque::new());
static DEPTHS: Mutex<Depths> = Mutex::new(Depths { queue: None, dlq: None });
/// Configuration faults seen at run time, by what is misconfigured: each
/// makes `/v1/health` critical until the process restarts with it fixed.
static FAULTS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The last successful samples of the queue depths.
#[derive(Debug, Clone, Copy)]
struct Depths {
    queue: Option<(u64, Instant)>,
    dlq: Option<(u64, Instant)>,
}

/// Installs the process's Prometheus recorder (once; later calls return
/// the same handle). `None` if another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(CRM_LATENCY.to_owned()), LATENCY_BUCKETS)
                .expect("the buckets are not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => Some(handle),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed: /metrics is unavailable");
                    None
                }
            }
        })
        .clone()
}

/// The CRM answered 429.
pub fn crm_throttled() {
    metrics::counter!(CRM_THROTTLED).increment(1);
}

/// One CRM call took `elapsed` (whatever its outcome).
pub fn crm_call(operation: Operation, elapsed: Duration) {
    let op = match operation {
        Operation::Lookup => "lookup",
        Operation::Write => "write",
    };
    metrics::histogram!(CRM_LATENCY, "operation" => op).record(elapsed.as_secs_f64());
    let now = Instant::now();
    let mut window = lock(&LATENCIES);
    window.push_back((now, elapsed.as_secs_f64() * 1000.0));
    while window.len() > LATENCY_SAMPLES {
        window.pop_front();
    }
    prune(&mut window, now);
}

fn prune(window: &mut VecDeque<(Instant, f64)>, now: Instant) {
    while window.front().is_some_and(|(at, _)| now.duration_since(*at) > LATENCY_WINDOW) {
        window.pop_front();
    }
}

/// The p99 CRM latency, milliseconds, of the recent window, and how many
/// calls it covers; `None` without calls.
pub fn crm_latency_p99_ms() -> Option<(f64, usize)> {
    let mut samples: Vec<f64> = {
        let mut window = lock(&LATENCIES);
        prune(&mut window, Instant::now());
        window.iter().map(|(_, ms)| *ms).collect()
    };
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    Some((percentile(&samples, 0.99), samples.len()))
}

/// Nearest-rank percentile of sorted samples (not empty).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The gauges read from the worker's state, set just before a scrape.
pub fn set_worker_gauges(breaker: Mode, (replay_rate, replay_ceiling): (f64, f64), in_flight: usize) {
    metrics::gauge!(BREAKER_STATE).set(breaker_value(breaker));
    metrics::gauge!(REPLAY_RATE).set(replay_rate);
    metrics::gauge!(REPLAY_CEILING).set(replay_ceiling);
    metrics::gauge!(IN_FLIGHT).set(in_flight as f64);
}

/// 0 closed, 1 half-open, 2 open.
pub fn breaker_value(mode: Mode) -> f64 {
    match mode {
        Mode::Closed => 0.0,
        Mode::HalfOpen { .. } => 1.0,
        Mode::Open { .. } => 2.0,
    }
}

/// Samples both queues' depths every [`DEPTH_SAMPLE_EVERY`] until `stop`,
/// and runs the recorder's upkeep. Failures are logged (once per streak).
pub async fn sample_depths(sqs: Client, queue_url: String, dlq_url: String, mut stop: watch::Receiver<bool>) {
    let mut failing = false;
    let mut tick = tokio::time::interval(DEPTH_SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Some(Some(handle)) = HANDLE.get() {
            handle.run_upkeep();
        }
        let (queue, dlq) = tokio::join!(depth(&sqs, &queue_url), depth(&sqs, &dlq_url));
        let now = Instant::now();
        crate::http::dashboard::history::record_depths(queue.as_ref().ok().copied(), dlq.as_ref().ok().copied());
        let mut errors = Vec::new();
        {
            let mut depths = lock(&DEPTHS);
            match queue {
                Ok(n) => {
                    metrics::gauge!(QUEUE_DEPTH).set(n as f64);
                    depths.queue = Some((n, now));
                }
                Err(e) => errors.push(format!("queue: {e}")),
            }
            match dlq {
                Ok(n) => {
                    metrics::gauge!(DLQ_DEPTH).set(n as f64);
                    depths.dlq = Some((n, now));
                }
                Err(e) => errors.push(format!("dlq: {e}")),
            }
        }
        match (errors.is_empty(), failing) {
            (false, false) => tracing::warn!(errors = ?errors, "sampling the queue depths failed"),
            (false, true) => tracing::debug!(errors = ?errors, "sampling the queue depths failed again"),
            (true, true) => tracing::info!("sampling the queue depths works again"),
            (true, false) => {}
        }
        failing = !errors.is_empty();
    }
}

/// `ApproximateNumberOfMessages` + `ApproximateNumberOfMessagesNotVisible`.
async fn depth(sqs: &Client, url: &str) -> Result<u64, String> {
    queue_depths(sqs, url).await.map(|(visible, in_flight)| visible + in_flight)
}

/// A queue's (visible, in flight) messages: `ApproximateNumberOfMessages`
/// and `ApproximateNumberOfMessagesNotVisible`, within [`DEPTH_CALL_LIMIT`].
/// The one reader of queue depths (the sampler, the drill, the tests).
pub async fn queue_depths(sqs: &Client, url: &str) -> Result<(u64, u64), String> {
    let call = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send();
    let out = match tokio::time::timeout(DEPTH_CALL_LIMIT, call).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            crate::access::check("sqs:GetQueueAttributes", url, &e);
            return Err(DisplayErrorContext(&e).to_string());
        }
        Err(_) => return Err("timed out".to_owned()),
    };
    let attrs = out.attributes.unwrap_or_default();
    let n = |name: QueueAttributeName| -> Result<u64, String> {
        attrs
            .get(&name)
            .ok_or_else(|| format!("{} missing", name.as_str()))?
            .parse::<u64>()
            .map_err(|_| format!("{} is not a number", name.as_str()))
    };
    Ok((
        n(QueueAttributeName::ApproximateNumberOfMessages)?,
        n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)?,
    ))
}

/// One signal's entry: value (or `null`), its thresholds and level, where
/// the value comes from, and whatever else says how it was measured.
fn signal(signal: Signal, value: Option<f64>, unit: &str, source: &str, extra: Value) -> (Level, Value) {
    let t = signal.thresholds();
    let level = value.map_or(Level::Ok, |v| signal.classify(v));
    let mut entry = json!({
        "value": value,
        "unit": unit,
        "warning": t.warning,
        "critical": t.critical,
        "direction": match t.direction { Direction::Below => "below", Direction::Above => "above" },
        "level": level,
        "source": source,
    });
    if let (Value::Object(entry), Value::Object(extra)) = (&mut entry, extra) {
        entry.extend(extra);
    }
    (level, entry)
}

fn sampled(depth: Option<(u64, Instant)>) -> (Option<f64>, &'static str, Value) {
    match depth {
        Some((n, at)) => (Some(n as f64), "sqs", json!({"ageSeconds": at.elapsed().as_secs()})),
        None => (None, "not sampled yet", json!({})),
    }
}

/// Records a configuration fault found at run time (a CRM route the
/// settings say exists answers 404, a call AWS refuses). Returns true the
/// first time `what` is recorded, so the caller logs it once. `detail` must
/// carry no customer data: it is served on `/v1/health`.
pub fn config_fault(what: &str, detail: String) -> bool {
    let mut faults = lock(&FAULTS);
    if faults.iter().any(|(w, _)| w == what) {
        return false;
    }
    metrics::counter!("failsoft_config_faults_total", "what" => what.to_owned()).increment(1);
    faults.push((what.to_owned(), detail));
    true
}

fn configuration() -> (Level, Value) {
    let faults = lock(&FAULTS);
    let level = if faults.is_empty() { Level::Ok } else { Level::Critical };
    let listed: Vec<Value> = faults.iter().map(|(what, detail)| json!({"what": what, "detail": detail})).collect();
    (level, json!({"level": level, "faults": listed}))
}

/// The `/v1/health` document: the five signals classified with the guide's
/// thresholds, the configuration faults seen, the overall level, and the
/// breaker's state.
pub fn health(breaker: Option<Mode>) -> Value {
    let depths = *lock(&DEPTHS);
    let latency = crm_latency_p99_ms();
    let edge = edge_stats::window();
    let (hit_value, hit_source, hit_extra) = edge_stats::cache_hit_rate(&edge);
    let (degraded_value, degraded_source, degraded_extra) = edge_stats::degraded_share(&edge);
    let (q_value, q_source, q_extra) = sampled(depths.queue);
    let (d_value, d_source, d_extra) = sampled(depths.dlq);
    let entries = [
        ("cacheHitRate", signal(Signal::CacheHitRate, hit_value, "percent", hit_source, hit_extra)),
        (
            "crmLatency",
            signal(
                Signal::CrmLatency,
                latency.map(|(ms, _)| ms),
                "ms",
                "origin",
                json!({
                    "statistic": "p99",
                    "windowSeconds": LATENCY_WINDOW.as_secs(),
                    "samples": latency.map_or(0, |(_, n)| n),
                }),
            ),
        ),
        ("queueDepth", signal(Signal::QueueDepth, q_value, "messages", q_source, q_extra)),
        ("dlqDepth", signal(Signal::DlqDepth, d_value, "messages", d_source, d_extra)),
        ("degradedShare", signal(Signal::DegradedShare, degraded_value, "percent", degraded_source, degraded_extra)),
    ];
    // A call AWS denied is a configuration error too: critical until it
    // has not recurred for crate::access::DENIAL_WINDOW.
    let (mut config_level, mut configuration) = configuration();
    let denied = crate::access::recent();
    if !denied.is_empty() {
        config_level = Level::Critical;
        configuration["level"] = json!(config_level);
    }
    configuration["accessDenied"] = Value::Array(denied);
    let sync = crate::sync::health(crate::clock::now_ms());
    let sync_level = sync.as_ref().map_or(Level::Ok, |(level, _)| *level);
    let outbox = edge_stats::outbox_health(crate::clock::now_ms());
    let outbox_level = outbox.as_ref().map_or(Level::Ok, |(level, _)| *level);
    let level = overall(entries.iter().map(|(_, (level, _))| *level).chain([config_level, sync_level, outbox_level]));
    let signals: serde_json::Map<String, Value> =
        entries.into_iter().map(|(name, (_, entry))| (name.to_owned(), entry)).collect();
    json!({
        "level": level,
        "signals": signals,
        "configuration": configuration,
        "breaker": breaker.map(|m| m.as_str()),
        "sync": sync.map(|(_, doc)| doc),
        "edgeOutbox": outbox.map(|(_, doc)| doc),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_is_the_nearest_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        let two = [1.0, 900.0];
        assert_eq!(percentile(&two, 0.99), 900.0);
    }

    #[test]
    fn an_unreported_signal_is_null_and_ok() {
        let (level, entry) = signal(Signal::CacheHitRate, None, "percent", "not reported", json!({}));
        assert_eq!(level, Level::Ok);
        assert_eq!(entry["value"], Value::Null);
        assert_eq!(entry["level"], "ok");
        assert_eq!(entry["warning"], 60.0);
        assert_eq!(entry["direction"], "below");
    }

    #[test]
    fn one_dead_letter_is_a_warning_and_eleven_critical() {
        let (level, entry) = signal(Signal::DlqDepth, Some(1.0), "messages", "sqs", json!({"ageSeconds": 1}));
        assert_eq!((level, &entry["level"], &entry["ageSeconds"]), (Level::Warning, &json!("warning"), &json!(1)));
        assert_eq!(signal(Signal::DlqDepth, Some(11.0), "messages", "sqs", json!({})).0, Level::Critical);
    }

    #[test]
    fn the_document_has_five_signals_and_an_overall_level() {
        let doc = health(Some(Mode::Closed));
        for name in ["cacheHitRate", "crmLatency", "queueDepth", "dlqDepth", "degradedShare"] {
            assert!(doc["signals"][name]["level"].is_string(), "{name}: {doc}");
        }
        assert_eq!(doc["breaker"], "closed");
        assert!(doc["level"].is_string());
    }
}
