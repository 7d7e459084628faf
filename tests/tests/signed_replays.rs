//! The origin accepts each signed call from the edge once and only where it
//! was sent: a result read and a traffic report, captured as a real native
//! edge signed them, are refused `SIGNATURE_REPLAYED` when sent again,
//! `SIGNATURE_MISMATCH` when moved to another correlationId, route or
//! method, and a call signed 65 s ahead is refused `SIGNATURE_FROM_FUTURE`.
//! (The edge's side, on every host, is the `signed_requests_are_not_replayed`
//! case in `failsoft_tests::cases`.)

mod origin_support;

use std::time::Duration;

use failsoft_shared::edge_stats::REPORT_PATH;
use failsoft_tests::edge_traffic::reporting_settings;
use failsoft_tests::signing::{self, Capture, Captured};
use failsoft_tests::{Stack, assert_error, wait_until};
use origin_support::{INTERNAL_SECRET, OriginStack};
use serde_json::Value;

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("the origin answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_refuses_replayed_moved_and_future_signed_calls() {
    // A native edge whose origin is a capture: its calls are kept, not answered.
    let capture = Capture::start().await;
    let settings = reporting_settings(&capture.url, INTERNAL_SECRET);
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let edge = Stack::start_with(&settings).await;
    edge.result("replay-1").await;
    edge.lookup("+442079460777").await;
    let captured = |method: &str, prefix: &str| {
        capture.all().into_iter().find(|c: &Captured| c.method == method && c.target.starts_with(prefix))
    };
    let read = wait_until("the edge's signed result read", Duration::from_secs(10), || async {
        captured("GET", "/v1/results/replay-1")
    })
    .await;
    let report = wait_until("the edge's signed traffic report", Duration::from_secs(10), || async {
        captured("POST", REPORT_PATH)
    })
    .await;

    let origin = OriginStack::start().await;
    let worker = origin.worker(&[]).await;
    let base = worker.url();
    let http = &origin.http;

    // The read: accepted once (no such write: 404), then a replay.
    let (status, body) = send(read.resend(http, base, "GET", &read.target)).await;
    assert_error("the captured read", status, &body, 404, "RESULT_NOT_FOUND");
    let (status, body) = send(read.resend(http, base, "GET", &read.target)).await;
    assert_error("the read again", status, &body, 401, "SIGNATURE_REPLAYED");
    let (status, body) = send(read.resend(http, base, "GET", "/v1/results/replay-2")).await;
    assert_error("the read moved to another id", status, &body, 401, "SIGNATURE_MISMATCH");
    let (status, body) = send(read.resend(http, base, "GET", "/v1/results/replay-1?x=1")).await;
    assert_error("the read with a query", status, &body, 401, "SIGNATURE_MISMATCH");
    let (status, body) = send(read.resend(http, base, "POST", REPORT_PATH)).await;
    assert_error("the read onto the report route", status, &body, 401, "SIGNATURE_MISMATCH");

    // The report: counted once, then a replay.
    let (status, body) = send(report.resend(http, base, "POST", REPORT_PATH)).await;
    assert_eq!(status, 202, "the captured report, once: {body}");
    let (status, body) = send(report.resend(http, base, "POST", REPORT_PATH)).await;
    assert_error("the report again", status, &body, 401, "SIGNATURE_REPLAYED");

    // Signed 65 s ahead: refused (past the 60 s allowed, with room for the
    // seconds the request may take to arrive); 55 s ahead: accepted.
    let url = format!("{base}/v1/results/replay-3");
    let ahead = |secs| signing::request(http, "GET", &url, Vec::new(), INTERNAL_SECRET, signing::now_secs() + secs);
    let (status, body) = send(ahead(65)).await;
    assert_error("a read signed 65 s ahead", status, &body, 401, "SIGNATURE_FROM_FUTURE");
    let (status, body) = send(ahead(55)).await;
    assert_error("a read signed 55 s ahead", status, &body, 404, "RESULT_NOT_FOUND");
}
