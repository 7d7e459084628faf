//! A known mix of Data Action traffic driven through any edge host, and
//! the checks that the origin's `/v1/health` and `/metrics` describe that
//! exact traffic once the edge has reported it.
//!
//! The mix: two customers looked up cold with the CRM up (`live`), then
//! warm (`cache`); the CRM taken down; a never-seen number (`default`); a
//! warm one past its freshness window (`stale_cache`); one case creation
//! and one refused request. Every answer's source is tallied from the
//! responses themselves, so the assertions are exact whatever the timing.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{AUTH_TOKEN, POLL_INTERVAL, metric_value, wait_until};

/// Settings an edge needs to report to an origin at `origin_url` quickly:
/// a 2 s freshness window so a record goes stale within the test, and a
/// 500 ms report interval.
pub fn reporting_settings(origin_url: &str, internal_secret: &str) -> Vec<(String, String)> {
    [
        ("FAILSOFT_ORIGIN_URL", origin_url),
        ("FAILSOFT_INTERNAL_SECRET", internal_secret),
        ("FAILSOFT_EDGE_STATS_EVERY_MS", "500"),
        ("FAILSOFT_FRESHNESS_SECS", "2"),
        ("FAILSOFT_NOT_FOUND_FRESHNESS_SECS", "2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

const VIP: &str = "+442079460301";
const GOLD: &str = "+442079460302";
const NEVER_SEEN: &str = "+442079460399";

/// What the test sent and how the edge answered it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub cache: u64,
    pub live: u64,
    pub stale_cache: u64,
    pub default: u64,
    pub pending_writes: u64,
    pub other_writes: u64,
    pub refusals: u64,
}

impl Tally {
    pub fn lookups(&self) -> u64 {
        self.cache + self.live + self.stale_cache + self.default
    }

    pub fn hit_rate(&self) -> f64 {
        self.cache as f64 * 100.0 / self.lookups() as f64
    }

    pub fn degraded_share(&self) -> f64 {
        (self.stale_cache + self.default) as f64 * 100.0 / self.lookups() as f64
    }
}

/// An edge and the CRM simulator behind it.
pub struct Edge<'a> {
    pub http: &'a reqwest::Client,
    pub url: &'a str,
    pub sim_admin: &'a str,
}

impl Edge<'_> {
    async fn admin(&self, path: &str, body: Value) {
        let resp = self.http.post(format!("{}{path}", self.sim_admin)).json(&body).send().await.expect("simulator");
        assert!(resp.status().is_success(), "simulator {path}: {}", resp.status());
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(AUTH_TOKEN)
            .json(body)
            .send()
            .await
            .expect("the edge answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// One lookup, tallied; returns its source.
    async fn lookup(&self, tally: &mut Tally, ani: &str) -> String {
        let (status, body) = self.post("/v1/customer-lookup", &json!({"ani": ani})).await;
        assert_eq!(status, 200, "lookup: {body}");
        let source = body["source"].as_str().unwrap_or_else(|| panic!("a source: {body}")).to_owned();
        match source.as_str() {
            "cache" => tally.cache += 1,
            "live" => tally.live += 1,
            "stale_cache" => tally.stale_cache += 1,
            "default" => tally.default += 1,
            other => panic!("unknown source {other}"),
        }
        source
    }

    /// Drives the mix and returns what the edge answered.
    pub async fn drive_mix(&self) -> Tally {
        let mut t = Tally::default();
        self.admin(
            "/admin/customers",
            json!([
                {"phone": VIP, "customerId": "C-3001", "tier": "vip", "vipFlag": true},
                {"phone": GOLD, "customerId": "C-3002", "tier": "gold", "vipFlag": false},
            ]),
        )
        .await;
        for ani in [VIP, GOLD] {
            assert_eq!(self.lookup(&mut t, ani).await, "live", "cold with the CRM up");
        }
        for ani in [VIP, GOLD, VIP, GOLD, VIP] {
            self.lookup(&mut t, ani).await;
        }
        self.admin("/admin/mode", json!({"mode": "down"})).await;
        for _ in 0..2 {
            assert_eq!(self.lookup(&mut t, NEVER_SEEN).await, "default");
        }
        // Past the 2 s freshness window the warm record answers stale; every
        // probe until then is an answer too, and tallied.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.lookup(&mut t, VIP).await != "stale_cache" {
            assert!(Instant::now() < deadline, "no stale answer within 10 s: {t:?}");
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let (status, body) = self.post("/v1/cases", &json!({"ani": VIP, "subject": "edge stats"})).await;
        assert_eq!(status, 200, "{body}");
        match body["status"].as_str() {
            Some("PENDING") => t.pending_writes += 1,
            _ => t.other_writes += 1,
        }
        let (status, _) = self.post("/v1/customer-lookup", &json!({"ani": "not a number"})).await;
        assert_eq!(status, 400);
        t.refusals += 1;
        assert!(t.cache > 0 && t.stale_cache + t.default > 0, "a mix worth checking: {t:?}");
        t
    }
}

/// The origin's `/v1/health`.
pub async fn origin_health(http: &reqwest::Client, origin: &str) -> Value {
    let resp = http.get(format!("{origin}/v1/health")).send().await.expect("the origin answers");
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.expect("/v1/health is JSON")
}

/// The origin's Prometheus text.
pub async fn origin_metrics(http: &reqwest::Client, origin: &str) -> String {
    let resp = http.get(format!("{origin}/metrics")).send().await.expect("the origin answers");
    assert_eq!(resp.status().as_u16(), 200);
    resp.text().await.expect("/metrics text")
}

/// One series of the origin's metrics (0 when absent).
pub fn series(text: &str, series: &str) -> f64 {
    metric_value(text, series).unwrap_or(0.0)
}

/// Waits (bounded) until the origin has counted all of `tally`, poking the
/// edge's `/healthz` meanwhile: a Worker reports only after a response,
/// and `/healthz` is no counted answer. Returns `/v1/health` and `/metrics`.
pub async fn wait_for_counts(http: &reqwest::Client, origin: &str, edge: &str, tally: &Tally) -> (Value, String) {
    wait_until("the edge's reports counted at the origin", Duration::from_secs(30), || async {
        http.get(format!("{edge}/healthz")).send().await.ok();
        let text = origin_metrics(http, origin).await;
        let writes = tally.pending_writes + tally.other_writes;
        let all_in = series(&text, "failsoft_edge_latency_seconds_count") == (tally.lookups() + writes) as f64
            && series(&text, "failsoft_edge_refusals_total") == tally.refusals as f64;
        if !all_in {
            return None;
        }
        Some((origin_health(http, origin).await, text))
    })
    .await
}

/// The origin's health and metrics describe exactly `tally`.
pub fn assert_counts(doc: &Value, text: &str, tally: &Tally) {
    use failsoft_shared::health::Signal;
    for (name, signal, want) in [
        ("cacheHitRate", Signal::CacheHitRate, tally.hit_rate()),
        ("degradedShare", Signal::DegradedShare, tally.degraded_share()),
    ] {
        let entry = &doc["signals"][name];
        let value = entry["value"].as_f64().unwrap_or_else(|| panic!("{name} has a value: {doc}"));
        assert!((value - want).abs() < 1e-9, "{name}: {value} != {want} for {tally:?}: {entry}");
        assert_eq!((&entry["source"], entry["samples"].as_u64()), (&json!("edge"), Some(tally.lookups())), "{entry}");
        assert_eq!(entry["windowSeconds"], 300, "{entry}");
        let level: failsoft_shared::health::Level = serde_json::from_value(entry["level"].clone()).unwrap();
        assert_eq!(level, signal.classify(value), "{name}: {entry}");
    }
    for (source, n) in
        [("cache", tally.cache), ("live", tally.live), ("stale_cache", tally.stale_cache), ("default", tally.default)]
    {
        let got = series(text, &format!("failsoft_edge_answers_total{{source=\"{source}\"}}"));
        assert_eq!(got, n as f64, "answers from {source}: {tally:?}");
    }
    assert_eq!(series(text, "failsoft_edge_writes_total{status=\"pending\"}"), tally.pending_writes as f64);
    assert_eq!(series(text, "failsoft_edge_refusals_total"), tally.refusals as f64);
    let all = (tally.lookups() + tally.pending_writes + tally.other_writes) as f64;
    assert_eq!(series(text, "failsoft_edge_latency_seconds_bucket{le=\"+Inf\"}"), all, "cumulative buckets");
    assert!(series(text, "failsoft_edge_reports_total{outcome=\"counted\"}") >= 1.0);
    // Each queued write was one SendMessage (refreshes add theirs), none slow.
    let sends = series(text, "failsoft_edge_queue_send_seconds_count");
    assert!(sends >= tally.pending_writes as f64 && sends >= 1.0, "queue sends: {sends} for {tally:?}");
    assert_eq!(series(text, "failsoft_edge_queue_send_seconds_bucket{le=\"+Inf\"}"), sends, "cumulative buckets");
    assert_eq!(series(text, "failsoft_edge_queue_sends_slow_total"), 0.0);
    assert!(!text.contains("7946"), "no phone number in /metrics");
}
