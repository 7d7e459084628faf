//! The pre-warm sync end to end, under IAM (moto, the stack created from
//! the template; `failsoft sync` and the worker sign as the worker's role):
//! the CRM simulator's paged list into the DynamoDB last-known table and a
//! real native edge; a delta that reads only what changed; two workers that
//! sync once between them and resume a pass a killed one left; and bad
//! input (records without a phone or id, unreadable records and lines, a
//! cursor that loops, a page that is not the list) counted by place, never
//! by number, with nothing already stored lost.

mod origin_support;

use std::time::Duration;

use aws_sdk_dynamodb::types::Select;
use failsoft_tests::Stack;
use origin_support::{CACHE_KEY_SECRET, INTERNAL_SECRET, OriginStack, entity_for, sample, wait_for};
use serde_json::{Value, json};

/// The generated customers' numbers (crm-sim's `/admin/customers/generate`).
fn generated(i: u64) -> String {
    format!("+1555{i:07}")
}

/// The sync's settings against `stack` (its CRM and its edge).
fn sync_env(stack: &Stack) -> Vec<(&'static str, String)> {
    vec![
        ("FAILSOFT_CRM_URL", stack.sim.url("api").to_owned()),
        ("FAILSOFT_EDGE_URL", stack.edge_url().to_owned()),
        ("FAILSOFT_CACHE_KEY_SECRET", CACHE_KEY_SECRET.to_owned()),
        ("FAILSOFT_SYNC_RATE", "50".to_owned()),
        // Deltas read exactly what changed since the last pass began.
        ("FAILSOFT_SYNC_OVERLAP_SECS", "0".to_owned()),
    ]
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn edge_with_internal_secret() -> Stack {
    Stack::start_with(&[("FAILSOFT_INTERNAL_SECRET", INTERNAL_SECRET)]).await
}

async fn generate(stack: &Stack, count: u64) {
    let url = format!("{}/admin/customers/generate", stack.admin_url());
    let resp = stack.http.post(url).json(&json!({"count": count})).send().await.expect("the simulator answers");
    assert!(resp.status().is_success());
}

async fn sim_admin(stack: &Stack, path: &str, body: Value) {
    let resp = stack.http.post(format!("{}{path}", stack.admin_url())).json(&body).send().await.expect("admin");
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
}

/// Items in the last-known table.
async fn last_known_count(origin: &OriginStack) -> i32 {
    let table = origin.aws.last_known_table().expect("the last-known table");
    // A scan reads at most 1 MB at a time: every page counted.
    let mut pages = origin.ddb.scan().table_name(table).select(Select::Count).into_paginator().send();
    let mut count = 0;
    while let Some(page) = pages.next().await {
        count += page.expect("a scan").count();
    }
    count
}

async fn last_known_item(origin: &OriginStack, phone: &str) -> Option<Value> {
    let table = origin.aws.last_known_table().expect("the last-known table");
    let key = aws_sdk_dynamodb::types::AttributeValue::S(entity_for(phone));
    let out = origin.ddb.get_item().table_name(table).key("entityKey", key).send().await.expect("a read");
    let item = out.item?;
    serde_json::from_str(item.get("entry")?.as_s().ok()?).ok()
}

/// Runs `failsoft sync` with `args`; (exit code, the report on stdout, stderr).
async fn sync(
    origin: &OriginStack,
    stack: &Stack,
    args: &[&str],
    extra: &[(&'static str, &str)],
) -> (i32, Value, String) {
    let mut env = sync_env(stack);
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let mut full_args = vec!["sync"];
    full_args.extend_from_slice(args);
    let (code, stdout, stderr) = origin.failsoft(&full_args, &borrowed(&env)).await;
    (code, serde_json::from_str(&stdout).unwrap_or(Value::Null), stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_fills_dynamodb_and_the_edge_and_a_delta_reads_only_what_changed() {
    let origin = OriginStack::start().await;
    let stack = edge_with_internal_secret().await;
    generate(&stack, 1_200).await;

    let (code, report, stderr) = sync(&origin, &stack, &["--once"], &[]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        (&report["kind"], &report["records"], &report["stored"], &report["pages"], &report["edgeStored"]),
        (&json!("full"), &json!(1200), &json!(1200), &json!(3), &json!(1200)),
        "{report}"
    );
    assert_eq!(stack.sim_count("lists").await, 3, "500 a page");
    assert_eq!(stack.sim_count("lookups").await, 0, "the sync never looks a number up");
    assert_eq!(last_known_count(&origin).await, 1200);
    let item = last_known_item(&origin, &generated(7)).await.expect("a synced record in DynamoDB");
    assert_eq!(item["record"], json!({"found": true, "customerId": "G-0000007", "tier": "gold"}));

    // The CRM goes down: customers this edge was never asked about are known.
    stack.crm("down").await;
    for (i, tier) in [(5, "vip"), (400, "gold"), (1_199, "vip")] {
        let (status, body) = stack.lookup(&generated(i)).await;
        assert_eq!(status, 200);
        assert_eq!((&body["source"], &body["tier"]), (&json!("cache"), &json!(tier)), "{body}");
    }
    let (_, unknown) = stack.lookup("+15559999999").await;
    assert_eq!(unknown["source"], "default", "a number the CRM does not know: {unknown}");

    // Three changes, then a delta: it reads those three and nothing else.
    stack.crm("up").await;
    sim_admin(&stack, "/admin/customers/tier", json!({"phone": generated(3), "tier": "vip"})).await;
    sim_admin(&stack, "/admin/customers/remove", json!({"phones": [generated(4)]})).await;
    sim_admin(&stack, "/admin/customers", json!([{"phone": "+15558888888", "customerId": "NEW-1", "tier": "gold"}]))
        .await;
    let (code, delta, stderr) = sync(&origin, &stack, &["--once"], &[]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        (&delta["kind"], &delta["records"], &delta["stored"], &delta["removed"]),
        (&json!("delta"), &json!(3), &json!(2), &json!(1)),
        "{delta}"
    );
    assert_eq!(last_known_count(&origin).await, 1200, "one removed, one added");
    assert!(last_known_item(&origin, &generated(4)).await.is_none(), "the removed customer is gone from DynamoDB");

    stack.crm("down").await;
    let answer = |body: Value| (body["source"].as_str().unwrap_or("?").to_owned(), body["tier"].clone());
    assert_eq!(answer(stack.lookup(&generated(3)).await.1), ("cache".to_owned(), json!("vip")));
    assert_eq!(answer(stack.lookup("+15558888888").await.1), ("cache".to_owned(), json!("gold")));
    let (_, removed) = stack.lookup(&generated(4)).await;
    assert_eq!(removed["source"], "default", "the removed customer is gone from the edge: {removed}");

    // No phone number is stored in clear.
    let table = origin.aws.last_known_table().expect("the table");
    let items = origin.ddb.scan().table_name(table).send().await.expect("a scan");
    let text = format!("{:?}", items.items());
    assert!(!text.contains("+1555") && !text.contains("15550000"), "a number in the last-known table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_sync_once_between_them_and_resume_a_pass_a_killed_one_left() {
    let origin = OriginStack::start().await;
    let stack = edge_with_internal_secret().await;
    generate(&stack, 6_000).await;
    let env = sync_env(&stack);
    let mut settings = borrowed(&env);
    settings.extend([
        ("FAILSOFT_EDGE_URL", stack.edge_url()),
        ("FAILSOFT_SYNC_RATE", "2"),
        ("FAILSOFT_SYNC_INTERVAL_SECS", "3600"),
        ("FAILSOFT_SYNC_LEASE_SECS", "15"),
    ]);

    // The first worker dies (SIGKILL) six pages into its full pass of 12.
    let first = origin.worker(&settings).await;
    wait_for("six list pages", Duration::from_secs(30), || async {
        (stack.sim_count("lists").await >= 6).then_some(())
    })
    .await;
    first.kill();
    let read_before = stack.sim_count("lists").await;
    assert!(read_before < 12, "killed before the end of its pass ({read_before} pages)");

    // Two more start together: one takes the lease once it lapses and
    // resumes from the cursor; the other finds the pass done.
    let (second, third) = tokio::join!(origin.worker(&settings), origin.worker(&settings));
    let done = |text: &str| sample(text, "failsoft_sync_passes_total", &[("kind", "full"), ("outcome", "done")]);
    let metrics = |w: &origin_support::Worker| {
        let url = format!("{}/metrics", w.operator_url());
        let http = origin.http.clone();
        async move { http.get(url).send().await.ok()?.text().await.ok() }
    };
    wait_for("a finished full pass", Duration::from_secs(60), || async {
        let a = done(&metrics(&second).await?).unwrap_or(0.0);
        let b = done(&metrics(&third).await?).unwrap_or(0.0);
        (a + b >= 1.0).then_some(())
    })
    .await;
    assert_eq!(last_known_count(&origin).await, 6000, "every customer synced");
    let a = done(&metrics(&second).await.unwrap()).unwrap_or(0.0);
    let b = done(&metrics(&third).await.unwrap()).unwrap_or(0.0);
    assert_eq!(a + b, 1.0, "one pass between the two workers");
    // Twelve pages make a pass. Resumed, it re-reads at most the page the
    // killed worker had written but not saved and the one it prefetched;
    // started over, it would read all twelve again.
    let pages = stack.sim_count("lists").await;
    assert!(pages <= 14, "{pages} pages read after {read_before}: the pass was not resumed");
    for worker in [&second, &third] {
        let url = format!("{}/v1/health", worker.operator_url());
        let health = wait_for("the sync's health", Duration::from_secs(15), || async {
            let health: Value = origin.http.get(&url).send().await.ok()?.json().await.ok()?;
            health["sync"]["lastFull"].is_string().then_some(health)
        })
        .await;
        assert_eq!(health["sync"]["level"], "ok", "{health}");
    }
}

/// The sync is a polite client: its failed page opens the worker's breaker
/// (threshold 1 here), and while the breaker is open it asks the CRM for
/// nothing (the worker's probes alone go out); once a probe finds the CRM
/// back, the pass resumes and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_waits_while_the_breaker_is_open_and_resumes_after() {
    let origin = OriginStack::start().await;
    let stack = edge_with_internal_secret().await;
    generate(&stack, 300).await;
    stack.admin_mode(json!({"mode": "error", "status": 503})).await;
    let env = sync_env(&stack);
    let mut settings = borrowed(&env);
    settings.extend([
        ("FAILSOFT_SYNC_INTERVAL_SECS", "3600"),
        ("FAILSOFT_BREAKER_FAILURE_THRESHOLD", "1"),
        ("FAILSOFT_WORKER_PROBE_EVERY_MS", "500"),
    ]);
    let worker = origin.worker(&settings).await;
    let metrics_url = format!("{}/metrics", worker.operator_url());
    let metrics = || async { origin.http.get(&metrics_url).send().await.ok()?.text().await.ok() };
    wait_for("the breaker open on the sync's failed page", Duration::from_secs(20), || async {
        let text = metrics().await?;
        (sample(&text, "failsoft_origin_breaker_state", &[]) == Some(2.0)).then_some(())
    })
    .await;
    let lists_when_open = stack.sim_count("lists").await;
    let probes_when_open = stack.sim_count("lookups").await;
    // Probes go out every 500 ms; the sync asks for no page meanwhile.
    wait_for("three probes while the breaker is open", Duration::from_secs(15), || async {
        (stack.sim_count("lookups").await >= probes_when_open + 3).then_some(())
    })
    .await;
    assert_eq!(stack.sim_count("lists").await, lists_when_open, "the sync waited while the breaker was open");

    stack.crm("up").await;
    wait_for("the full pass done once the CRM is back", Duration::from_secs(30), || async {
        let text = metrics().await?;
        (sample(&text, "failsoft_sync_passes_total", &[("kind", "full"), ("outcome", "done")]) == Some(1.0))
            .then_some(())
    })
    .await;
    assert_eq!(last_known_count(&origin).await, 300);
    let text = metrics().await.expect("metrics");
    assert_eq!(sample(&text, "failsoft_sync_records_total", &[("outcome", "stored")]), Some(300.0));
    assert!(sample(&text, "failsoft_sync_lag_seconds", &[]).is_some_and(|lag| lag < 60.0), "{text}");
}

/// A CRM that breaks the list's contract in the ways a real one might.
async fn broken_crm() -> (String, tokio::task::JoinHandle<()>) {
    use axum::extract::Query;
    use axum::routing::get;
    async fn customers(Query(query): Query<std::collections::HashMap<String, String>>) -> axum::response::Response {
        use axum::response::IntoResponse;
        let page = |customers: Value, next: Value| axum::Json(json!({"customers": customers, "nextCursor": next}));
        match query.get("cursor").map(String::as_str) {
            None => page(
                json!([
                    {"phone": "+15550000001", "customerId": "A-1", "tier": "gold", "updatedAt": "2026-01-01T00:00:00Z"},
                    {"customerId": "NO-PHONE"},
                    {"phone": "+15550000002", "tier": "gold"},
                    42,
                    {"phone": "not a number", "customerId": "X"},
                ]),
                json!("c2"),
            )
            .into_response(),
            // Page 2 names page 2 again: a loop.
            Some("c2") => page(json!([{"phone": "+15550000003", "customerId": "A-3"}]), json!("c2")).into_response(),
            Some(_) => (axum::http::StatusCode::BAD_REQUEST, "unknown cursor").into_response(),
        }
    }
    async fn maintenance() -> &'static str {
        "<html>maintenance</html>"
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    let app = axum::Router::new().route("/customers", get(customers)).route("/html/customers", get(maintenance));
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.ok();
    });
    (url, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_a_looping_cursor_and_broken_lines_are_counted_by_place_and_nothing_is_lost() {
    let origin = OriginStack::start().await;
    let stack = edge_with_internal_secret().await;
    let (crm_url, server) = broken_crm().await;

    let (code, _, stderr) = sync(&origin, &stack, &["--once"], &[("FAILSOFT_CRM_URL", crm_url.as_str())]).await;
    assert_ne!(code, 0, "a looping cursor ends the pass as failed: {stderr}");
    assert!(stderr.contains("page 2: the CRM's cursor repeats"), "{stderr}");
    for place in ["page 1, record 1: MISSING_PHONE", "page 1, record 2: MISSING_CUSTOMER_ID"] {
        assert!(stderr.contains(place), "{place} in {stderr}");
    }
    assert!(stderr.contains("page 1, record 3: UNREADABLE") && stderr.contains("page 1, record 4: INVALID_PHONE"));
    assert!(!stderr.contains("+15550000002") && !stderr.contains("15550000002"), "a number in the logs");
    // The good records of both pages are stored, in DynamoDB and at the edge.
    assert_eq!(last_known_count(&origin).await, 2);
    assert_eq!(last_known_item(&origin, "+15550000003").await.unwrap()["record"]["customerId"], "A-3");
    stack.crm("down").await;
    assert_eq!(stack.lookup("+15550000001").await.1["customerId"], "A-1");
    server.abort();

    // An export with broken lines: the rest is synced, lines named.
    let dir = std::env::temp_dir().join(format!("failsoft-sync-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    let path = dir.join("customers.jsonl");
    let lines = [
        r#"{"phone":"+15550000011","customerId":"F-11","tier":"vip"}"#,
        r#"{"phone":"+15550000012","customerId":"F-12""#,
        "",
        r#"{"phone":"+15550000001","deleted":true}"#,
        r#"{"phone":"+15550000013"}"#,
    ];
    std::fs::write(&path, lines.join("\n")).expect("the export is written");
    let path_text = path.to_str().expect("a UTF-8 path").to_owned();
    let (code, report, stderr) = sync(&origin, &stack, &["--from-file", &path_text], &[]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!((&report["stored"], &report["removed"]), (&json!(1), &json!(1)), "{report}");
    assert_eq!(report["problems"], json!(["line 5: MISSING_CUSTOMER_ID", "line 2: UNREADABLE"]), "{report}");
    assert_eq!(stack.lookup("+15550000011").await.1["tier"], "vip");
    assert_eq!(stack.lookup("+15550000001").await.1["source"], "default", "removed by the export");
    assert_eq!(last_known_count(&origin).await, 2, "one added, one removed");
    std::fs::remove_dir_all(dir).ok();

    // A CRM without the list, and one whose page is not the list (tried
    // three times): each pass stops, and what earlier passes stored stays.
    let (crm_url, server) = broken_crm().await;
    stack.crm("up").await;
    let (code, _, stderr) =
        sync(&origin, &stack, &["--once", "--full"], &[("FAILSOFT_CRM_URL", &format!("{crm_url}/not-the-api"))]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("has no customer list (HTTP 404)"), "{stderr}");
    let (code, _, stderr) =
        sync(&origin, &stack, &["--once", "--full"], &[("FAILSOFT_CRM_URL", &format!("{crm_url}/html"))]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("not the list's shape: not JSON"), "{stderr}");
    assert_eq!(last_known_count(&origin).await, 2);
    server.abort();
}
