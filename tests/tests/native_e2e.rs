//! The host-neutral table of `failsoft_tests::cases` against the native
//! host (`failsoft-edge`), in front of the CRM simulator and forwarding to
//! an SQS FIFO queue in moto; the same cases run on the Worker
//! (`worker_e2e`) and the Spin component (`spin_e2e`).

use std::time::Duration;

use failsoft_lab::process::Service;
use failsoft_tests::AUTH_TOKEN;
use failsoft_tests::cases::{self, Case, Host, Queue, Target};
use failsoft_tests::harness::{base_edge_env, program};

/// The simulator and the native facade (dropped in this order).
struct NativeStack {
    target: Target,
    _edge: Service,
    _sim: Service,
}

impl NativeStack {
    async fn start(settings: &[(&str, &str)], queue: Queue) -> Self {
        let settings: Vec<(String, String)> = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let queue_settings = queue.settings();
        let (sim, edge) = tokio::task::spawn_blocking(move || {
            let mut sim_cmd = program("crm-sim");
            sim_cmd.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]).env("RUST_LOG", "warn");
            let sim = Service::start_command("crm-sim", &mut sim_cmd).expect("crm-sim starts");
            let mut edge_cmd = program("failsoft-edge");
            edge_cmd.args(["--listen", "127.0.0.1:0"]);
            edge_cmd.envs(base_edge_env(sim.url("api")).into_iter().chain(queue_settings).chain(settings));
            let edge = Service::start_command("failsoft-edge", &mut edge_cmd).expect("failsoft-edge starts");
            (sim, edge)
        })
        .await
        .expect("the stack starts");
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(15)).build().expect("a client");
        let target = Target {
            host: Host::Native,
            edge: edge.url("url").to_owned(),
            token: AUTH_TOKEN.to_owned(),
            admin: sim.url("admin").to_owned(),
            http,
            queue: Some(queue),
            seen: Default::default(),
        };
        Self { target, _edge: edge, _sim: sim }
    }
}

async fn run(case: &Case) {
    let stack = NativeStack::start(case.settings, Queue::start().await).await;
    case.run_on(&stack.target).await;
}

macro_rules! native_cases {
    ($($test:ident => $case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $test() {
                run(&cases::$case).await;
            }
        )*

        /// Every case of the table has a test here.
        #[test]
        fn every_case_runs_natively() {
            let covered = [$(cases::$case.name),*];
            for case in cases::ALL {
                assert!(covered.contains(&case.name), "case {} has no native test", case.name);
            }
        }
    };
}

native_cases! {
    native_healthz => HEALTHZ,
    native_bad_input => BAD_INPUT,
    native_oversized_bodies => OVERSIZED_BODIES,
    native_fresh_hit_is_cache => FRESH_HIT,
    native_miss_is_live_and_stored => MISS_IS_LIVE_AND_STORED,
    native_crm_down_serves_stale => CRM_DOWN_STALE,
    native_crm_down_never_seen_is_default => CRM_DOWN_DEFAULT,
    native_crm_hung_answers_within_deadline => CRM_HUNG_WITHIN_DEADLINE,
    native_breaker_open_answers_at_once => BREAKER_OPEN,
    native_webhook_invalidates => WEBHOOK_INVALIDATES,
    native_sync_bulk_push_prewarms_and_keeps_the_newer => SYNC_BULK_PUSH,
    native_signed_requests_are_not_replayed => SIGNED_REQUESTS_ARE_NOT_REPLAYED,
    native_bad_input_corpus => BAD_INPUT_CORPUS,
}

#[tokio::test(flavor = "multi_thread")]
async fn native_concurrent_misses_make_one_crm_call() {
    let stack = NativeStack::start(&[], Queue::start().await).await;
    cases::concurrent_misses_make_one_crm_call(&stack.target).await;
}

/// SQS unreachable (a port that accepts and never answers): lookups during a
/// CRM outage answer as before and at once, since refreshes go after the
/// response; a case creation is `NOT_ACCEPTED` within the margin, never a
/// `PENDING` that nothing holds.
#[tokio::test(flavor = "multi_thread")]
async fn native_unreachable_sqs_changes_no_answer() {
    let (hung, queue_url) = failsoft_tests::moto::hung_queue();
    let settings = [
        ("FAILSOFT_QUEUE_URL", queue_url.as_str()),
        ("AWS_ACCESS_KEY_ID", "test-only-key-id"),
        ("AWS_SECRET_ACCESS_KEY", "test-only-secret-access-key"),
        ("FAILSOFT_CRM_DEADLINE_MS", "1000"),
        ("FAILSOFT_DEADLINE_MARGIN_MS", "500"),
    ];
    // The stack's own queue is unused: the settings above point elsewhere.
    let stack = NativeStack::start(&settings, Queue::start().await).await;
    let t = &stack.target;
    t.load_customers(serde_json::json!([{"phone": "+442079460001", "customerId": "C-1001", "tier": "vip"}])).await;
    let (_, warm) = t.lookup("+442079460001").await;
    assert_eq!(warm["source"], "live", "{warm}");
    t.crm("down").await;
    for ani in ["+442079460001", "+442079460101", "+442079460102"] {
        let (status, body, took) = t.timed_lookup(ani).await;
        assert_eq!(status, 200, "{body}");
        let expected = if ani == "+442079460001" { "cache" } else { "default" };
        assert_eq!(body["source"], expected, "{body}");
        assert!(took < Duration::from_millis(250), "{ani} took {took:?}: the refresh sat on the response path");
    }
    let started = std::time::Instant::now();
    let (status, case) = t.post("/v1/cases", &serde_json::json!({"ani": "+442079460001", "subject": "Callback"})).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{case}");
    assert_eq!(case["status"], "NOT_ACCEPTED", "{case}");
    assert_eq!(case["warning"], "CRM_AND_QUEUE_UNAVAILABLE_RETRY_LATER", "{case}");
    assert!(took < Duration::from_millis(500 + 250), "the write waited {took:?}, past the margin");
    drop(hung);
}

/// The value of an unlabelled metric in a Prometheus text rendering.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The in-memory KV's cap is a setting, and `/metrics` shows what it holds
/// against it: a live lookup stores one record, charged its bytes.
#[tokio::test(flavor = "multi_thread")]
async fn native_kv_reports_its_size_against_the_cap() {
    let stack = NativeStack::start(&[("FAILSOFT_KV_MAX_BYTES", "1048576")], Queue::start().await).await;
    let t = &stack.target;
    t.load_customers(serde_json::json!([{"phone": "+442079460001", "customerId": "C-1001", "tier": "vip"}])).await;
    let (_, warm) = t.lookup("+442079460001").await;
    assert_eq!(warm["source"], "live", "{warm}");
    let text = t.http.get(t.url("/metrics")).send().await.expect("/metrics").text().await.expect("text");
    assert_eq!(metric(&text, "failsoft_edge_kv_max_bytes"), Some(1_048_576.0), "{text}");
    let entries = metric(&text, "failsoft_edge_kv_entries").expect("the entry gauge");
    let bytes = metric(&text, "failsoft_edge_kv_bytes").expect("the byte gauge");
    assert!(entries >= 1.0, "the looked-up record is held: {text}");
    assert!(bytes > 0.0 && bytes <= 1_048_576.0, "charged within the cap: {text}");
}
