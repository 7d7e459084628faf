//! The native edge reports its traffic to the origin: a known mix of
//! lookups and writes through a real `failsoft-edge`, reported signed to a
//! real `failsoft worker`, shows up exactly in the origin's `/v1/health`
//! (cacheHitRate, degradedShare) and `/metrics`. A forged report is refused
//! and counts nothing; a replayed one counts once.

mod origin_support;

use failsoft_shared::edge_stats::{Counts, REPORT_PATH, Report};
use failsoft_tests::Stack;
use failsoft_tests::edge_traffic::wait_for_counts;
use failsoft_tests::edge_traffic::{Edge, assert_counts, origin_health, origin_metrics, reporting_settings, series};
use failsoft_tests::signing;
use origin_support::{INTERNAL_SECRET, OriginStack};
use serde_json::{Value, json};

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// POSTs `body` to the origin's report route signed with `secret`.
async fn post_report(http: &reqwest::Client, origin: &str, secret: &str, body: Vec<u8>) -> (u16, Value) {
    let url = format!("{origin}{REPORT_PATH}");
    let resp = signing::request(http, "POST", &url, body, secret, now_secs()).send().await.expect("the origin answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn report(isolate: &str, seq: u64, cache: u64) -> Vec<u8> {
    let mut counts = Counts::default();
    counts.lookups.cache = cache;
    counts.latency.record(3);
    let report = Report { v: 1, isolate: isolate.to_owned(), seq, from_ms: 1, to_ms: 2, counts, outbox: None };
    serde_json::to_vec(&report).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_edge_traffic_reaches_the_origins_health_and_metrics() {
    let origin = OriginStack::start().await;
    let worker = origin.worker(&[]).await;
    let http = &origin.http;

    // No report yet: both signals null and ok.
    let doc = origin_health(http, worker.operator_url()).await;
    for name in ["cacheHitRate", "degradedShare"] {
        let entry = &doc["signals"][name];
        assert_eq!(
            (&entry["value"], &entry["level"], &entry["source"]),
            (&Value::Null, &json!("ok"), &json!("not reported"))
        );
    }

    let settings = reporting_settings(worker.url(), INTERNAL_SECRET);
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let stack = Stack::start_with(&settings).await;
    let edge = Edge { http: &stack.http, url: stack.edge_url(), sim_admin: stack.admin_url() };
    let tally = edge.drive_mix().await;
    let (doc, text) = wait_for_counts(http, worker.operator_url(), stack.edge_url(), &tally).await;
    assert_counts(&doc, &text, &tally);

    // A forged report (wrong secret) is refused and counts nothing.
    let (status, body) =
        post_report(http, worker.url(), "not-the-internal-secret-0000", report("forged", 0, 100)).await;
    assert_eq!((status, &body["error"]["code"]), (401, &json!("SIGNATURE_MISMATCH")), "{body}");
    // Malformed and oversized reports are refused too.
    let (status, body) = post_report(http, worker.url(), INTERNAL_SECRET, b"{\"v\":1}".to_vec()).await;
    assert_eq!((status, &body["error"]["code"]), (400, &json!("INVALID_REPORT")), "{body}");
    let (status, body) = post_report(http, worker.url(), INTERNAL_SECRET, vec![b' '; 17 * 1024]).await;
    assert_eq!((status, &body["error"]["code"]), (413, &json!("PAYLOAD_TOO_LARGE")), "{body}");

    // A replayed report is counted once.
    let replayed = report("replay-test", 7, 4);
    let (status, body) = post_report(http, worker.url(), INTERNAL_SECRET, replayed.clone()).await;
    assert_eq!((status, &body["counted"]), (202, &json!(true)), "{body}");
    let (status, body) = post_report(http, worker.url(), INTERNAL_SECRET, replayed).await;
    assert_eq!((status, &body["counted"]), (200, &json!(false)), "{body}");

    let text = origin_metrics(http, worker.operator_url()).await;
    let cache = series(&text, "failsoft_edge_answers_total{source=\"cache\"}");
    assert_eq!(cache, (tally.cache + 4) as f64, "the edge's cache answers plus the replayed report's, once");
    assert_eq!(series(&text, "failsoft_edge_reports_total{outcome=\"duplicate\"}"), 1.0);
    let doc = origin_health(http, worker.operator_url()).await;
    assert_eq!(doc["signals"]["cacheHitRate"]["samples"].as_u64(), Some(tally.lookups() + 4), "{doc}");
}

/// An edge's write outbox in its reports: a native edge whose queue hangs
/// keeps a write in its journal, and the origin's `/v1/health` and
/// `/metrics` show it; an edge whose oldest kept write is minutes old turns
/// the origin's health to warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edges_write_outbox_reaches_the_origins_health_and_metrics() {
    let origin = OriginStack::start().await;
    let worker = origin.worker(&[]).await;
    let http = &origin.http;
    assert_eq!(origin_health(http, worker.operator_url()).await["edgeOutbox"], Value::Null, "no outbox reported");

    let (_hung, queue_url) = failsoft_tests::moto::hung_queue();
    let dir = std::env::temp_dir().join(format!("failsoft-edge-stats-outbox-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut settings = reporting_settings(worker.url(), INTERNAL_SECRET);
    settings.extend(
        [
            ("FAILSOFT_QUEUE_URL", queue_url.as_str()),
            ("AWS_ACCESS_KEY_ID", "test-only-key-id"),
            ("AWS_SECRET_ACCESS_KEY", "test-only-secret-access-key"),
            ("FAILSOFT_DEADLINE_MARGIN_MS", "400"),
            ("FAILSOFT_OUTBOX_DIR", &dir.display().to_string()),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let stack = Stack::start_with(&settings).await;
    stack.crm("down").await;
    let (_, answer) = stack.create_case(&json!({"ani": "+13175550401", "subject": "Callback"})).await;
    assert_eq!(answer["status"], "PENDING", "kept by the outbox: {answer}");
    let doc = failsoft_tests::wait_until(
        "the origin's health shows the kept write",
        std::time::Duration::from_secs(20),
        || async {
            // A report goes out with traffic: keep some coming.
            let _ = stack.lookup("+13175550402").await;
            let doc = origin_health(http, worker.operator_url()).await;
            (doc["edgeOutbox"]["entries"] == 1).then_some(doc)
        },
    )
    .await;
    assert_eq!(doc["edgeOutbox"]["level"], "ok", "a write kept seconds ago: {doc}");
    assert_eq!(doc["edgeOutbox"]["edges"], 1, "{doc}");
    let text = origin_metrics(http, worker.operator_url()).await;
    assert_eq!(series(&text, "failsoft_edge_outbox_entries"), 1.0, "{text}");

    // Another edge whose oldest kept write is two minutes old.
    let mut counts = Counts::default();
    counts.lookups.cache = 1;
    let old = (now_secs() - 120) * 1000;
    let stale = Report {
        v: 1,
        isolate: "edge-with-an-old-write".into(),
        seq: 0,
        from_ms: 1,
        to_ms: 2,
        counts,
        outbox: Some(failsoft_shared::edge_stats::OutboxLevel { entries: 4, bytes: 400, oldest_at_ms: Some(old) }),
    };
    let (status, _) = post_report(http, worker.url(), INTERNAL_SECRET, serde_json::to_vec(&stale).unwrap()).await;
    assert_eq!(status, 202, "accepted");
    let doc = origin_health(http, worker.operator_url()).await;
    assert_eq!((&doc["edgeOutbox"]["level"], &doc["edgeOutbox"]["entries"]), (&json!("warning"), &json!(5)), "{doc}");
    assert!(doc["edgeOutbox"]["oldestAgeSeconds"].as_u64().unwrap_or(0) >= 120, "{doc}");
    assert_ne!(doc["level"], "ok", "the overall level is at least the outbox's: {doc}");
    let _ = std::fs::remove_dir_all(&dir);
}
