//! The host-neutral cases of `cases.rs` against the Cloudflare Worker: the
//! release build of `edge/worker` under `wrangler dev --local`, in front of
//! the CRM simulator, each case on its own pair of processes.
//!
//! Needs `make worker` (and `cargo build --workspace --bins` for crm-sim);
//! `make test` does both before the tests.

#[path = "../origin_support/mod.rs"]
mod origin_support;
mod wrangler;

use std::path::Path;
use std::time::{Duration, Instant};

use failsoft_lab::local_stack::CrmContract;
use failsoft_lab::process::Service;
use failsoft_lab::switch::{Mode, Switch};
use failsoft_shared::keys::{entity_key, normalize_phone};
use failsoft_tests::harness::{CACHE_KEY_SECRET, base_edge_env, program};
use failsoft_tests::moto::{Moto, hung_queue};
use failsoft_tests::{AUTH_TOKEN, wait_until};
use serde_json::{Value, json};

use failsoft_tests::cases::{self, Case, DEADLINE, DEADLINE_SLACK, Host, Queue, Target};
use failsoft_tests::edge_traffic::{Edge, assert_counts, reporting_settings, wait_for_counts};
use origin_support::{INTERNAL_SECRET, OriginStack};
use wrangler::WranglerDev;

/// The simulator and a Worker in front of it (dropped in this order).
struct WorkerStack {
    target: Target,
    worker: WranglerDev,
    sim: Service,
}

impl WorkerStack {
    async fn start(settings: &[(&str, &str)]) -> Self {
        Self::start_with_state(settings, None, None).await
    }

    /// A stack whose Worker keeps its KV in `state` (see [`Self::restart_worker`]).
    async fn start_with_state(settings: &[(&str, &str)], state: Option<&Path>, queue: Option<Queue>) -> Self {
        let sim = tokio::task::spawn_blocking(|| {
            let mut command = program("crm-sim");
            command.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]).env("RUST_LOG", "warn");
            Service::start_command("crm-sim", &mut command).expect("crm-sim starts")
        })
        .await
        .expect("crm-sim starts");
        let mut vars = worker_vars(&sim, settings);
        vars.extend(queue.iter().flat_map(Queue::settings));
        let worker = WranglerDev::start(&vars, state).await;
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(15)).build().expect("a client");
        let target = Target {
            host: Host::Worker,
            edge: worker.url.clone(),
            token: AUTH_TOKEN.to_owned(),
            admin: sim.url("admin").to_owned(),
            http,
            queue,
            seen: Default::default(),
        };
        Self { target, worker, sim }
    }

    /// Replaces the Worker with a new one (a new isolate, nothing in its
    /// memory) that finds the first one's KV in `state`.
    async fn restart_worker(self, settings: &[(&str, &str)], state: &Path) -> Self {
        let Self { mut target, worker, sim } = self;
        // The old one stops first: two workerd processes on one store race.
        drop(worker);
        let worker = WranglerDev::start(&worker_vars(&sim, settings), Some(state)).await;
        target.edge = worker.url.clone();
        Self { target, worker, sim }
    }
}

fn worker_vars(sim: &Service, settings: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars = base_edge_env(sim.url("api"));
    vars.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    vars
}

async fn run(case: &Case) {
    let stack = WorkerStack::start_with_state(case.settings, None, Some(Queue::start().await)).await;
    case.run_on(&stack.target).await;
}

macro_rules! worker_cases {
    ($($test:ident => $case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $test() {
                run(&cases::$case).await;
            }
        )*

        /// Every case of the table has a test here.
        #[test]
        fn every_case_runs_on_the_worker() {
            let covered = [$(cases::$case.name),*];
            for case in cases::ALL {
                assert!(covered.contains(&case.name), "case {} has no Worker test", case.name);
            }
        }
    };
}

worker_cases! {
    worker_healthz => HEALTHZ,
    worker_bad_input => BAD_INPUT,
    worker_oversized_bodies => OVERSIZED_BODIES,
    worker_fresh_hit_is_cache => FRESH_HIT,
    worker_miss_is_live_and_stored => MISS_IS_LIVE_AND_STORED,
    worker_crm_down_serves_stale => CRM_DOWN_STALE,
    worker_crm_down_never_seen_is_default => CRM_DOWN_DEFAULT,
    worker_crm_hung_answers_within_deadline => CRM_HUNG_WITHIN_DEADLINE,
    worker_breaker_open_answers_at_once => BREAKER_OPEN,
    worker_webhook_invalidates => WEBHOOK_INVALIDATES,
    worker_sync_bulk_push_prewarms_and_keeps_the_newer => SYNC_BULK_PUSH,
    worker_signed_requests_are_not_replayed => SIGNED_REQUESTS_ARE_NOT_REPLAYED,
    worker_bad_input_corpus => BAD_INPUT_CORPUS,
}

const VIP: &str = "+442079460001";

/// Each shipped CRM profile on the Worker, against the simulator speaking
/// that vendor's API: its lookups and a case through the Worker, the OAuth
/// token fetched once and kept in KV.
#[tokio::test(flavor = "multi_thread")]
async fn worker_speaks_each_shipped_crm_profile() {
    for contract in CrmContract::VENDORS {
        let sim = tokio::task::spawn_blocking(move || {
            let mut command = program("crm-sim");
            command.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]).env("RUST_LOG", "warn");
            command.args(contract.sim_args());
            Service::start_command("crm-sim", &mut command).expect("crm-sim starts")
        })
        .await
        .expect("crm-sim starts");
        let mut vars = worker_vars(&sim, &[]);
        vars.extend(contract.profile_settings());
        let worker = WranglerDev::start(&vars, None).await;
        let target = Target {
            host: Host::Worker,
            edge: worker.url.clone(),
            token: AUTH_TOKEN.to_owned(),
            admin: sim.url("admin").to_owned(),
            http: reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(15)).build().expect("a client"),
            queue: None,
            seen: Default::default(),
        };
        let oauth = matches!(contract, CrmContract::Salesforce | CrmContract::Servicenow);
        cases::speaks_the_vendor_profile(&target, oauth).await;
        drop(worker);
        drop(sim);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_concurrent_misses_in_one_isolate_make_one_crm_call() {
    let stack = WorkerStack::start_with_state(&[], None, Some(Queue::start().await)).await;
    cases::concurrent_misses_make_one_crm_call(&stack.target).await;
}

async fn with_vip(t: &Target) {
    t.load_customers(json!([{"phone": VIP, "customerId": "C-1001", "tier": "vip", "vipFlag": true}])).await;
}

/// Refreshes go to SQS in `ctx.wait_until`, after the response: with a queue
/// that hangs, each forward waits out its deadline, yet every answer comes
/// at once. A write is the opposite (write-ahead), bounded by the margin:
/// the queue not answering, its outbox shard keeps it, and the answer says so.
#[tokio::test(flavor = "multi_thread")]
async fn worker_refresh_is_forwarded_after_the_response() {
    let (_queue, queue_url) = hung_queue();
    let settings = [
        ("FAILSOFT_QUEUE_URL", queue_url.as_str()),
        ("AWS_ACCESS_KEY_ID", "test-only-key-id"),
        ("AWS_SECRET_ACCESS_KEY", "test-only-secret-access-key"),
        ("FAILSOFT_CRM_DEADLINE_MS", "1000"),
    ];
    let stack = WorkerStack::start(&settings).await;
    let t = &stack.target;
    with_vip(t).await;
    t.crm("down").await;
    for ani in ["+442079460101", "+442079460102", "+442079460103"] {
        let (status, body, took) = t.timed_lookup(ani).await;
        assert_eq!((status, &body["source"]), (200, &json!("default")), "{body}");
        assert!(took < DEADLINE_SLACK, "the refresh is not on the response path: took {took:?}");
    }
    let started = Instant::now();
    let (status, body) = t.post("/v1/cases", &json!({"ani": VIP, "subject": "hung queue"})).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "PENDING", "the outbox kept it: {body}");
    assert!(took < DEADLINE + DEADLINE_SLACK, "the queue's deadline bounds the write: took {took:?}");
}

/// The Durable Object outbox, with the Worker's way to SQS cut by a proxy
/// (moto behind it): writes are `PENDING` and kept while SQS hangs, survive
/// the Worker's restart (a new workerd on the same state: no isolate
/// remembers anything), and reach SQS once each, one caller's in the order
/// answered, when the path comes back.
#[tokio::test(flavor = "multi_thread")]
async fn worker_outbox_keeps_writes_through_a_queue_outage_and_a_restart() {
    let moto = Moto::start().await;
    let queue_url = moto.fifo_queue("failsoft-worker-outbox").await;
    let switch = Switch::start(moto.endpoint.trim_start_matches("http://").parse().expect("moto's address"))
        .await
        .expect("the proxy starts");
    let through = switch.url_through(&queue_url);
    let settings = [
        ("FAILSOFT_QUEUE_URL", through.as_str()),
        ("AWS_ACCESS_KEY_ID", "test-only-key-id"),
        ("AWS_SECRET_ACCESS_KEY", "test-only-secret-access-key"),
        ("FAILSOFT_DEADLINE_MARGIN_MS", "600"),
    ];
    let state = wrangler::temp_dir();
    let stack = WorkerStack::start_with_state(&settings, Some(&state), None).await;
    stack.target.crm("down").await;
    switch.set(Mode::Hang);
    let writes =
        [("+13175550301", "worker-outbox-1"), ("+13175550302", "worker-outbox-2"), ("+13175550301", "worker-outbox-3")];
    for (ani, id) in writes {
        let t = &stack.target;
        let request = t.http.post(t.url("/v1/cases")).bearer_auth(&t.token);
        let response = request
            .json(&json!({"ani": ani, "subject": "Callback", "correlationId": id}))
            .send()
            .await
            .expect("the Worker answers");
        let timing = response.headers().get("server-timing").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["status"], "PENDING", "{id}: {body}");
        assert!(timing.contains("outbox"), "{id}: kept by the outbox: {timing}");
    }
    let stack = stack.restart_worker(&settings, &state).await;
    assert!(moto.receive_all(&queue_url, 10).await.is_empty(), "nothing reached SQS while the path hung");
    switch.set(Mode::Forward);
    wait_until("the outbox's three writes in SQS", Duration::from_secs(30), || async {
        let out = moto
            .sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .ok()?;
        let waiting = out.attributes()?.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)?;
        (waiting.parse::<u64>().ok()? >= 3).then_some(())
    })
    .await;
    let messages = moto.receive_all(&queue_url, 10).await;
    let id = |m: &failsoft_tests::moto::Received| {
        serde_json::from_str::<Value>(&m.body).ok().and_then(|b| b["correlationId"].as_str().map(str::to_owned))
    };
    let mut ids: Vec<String> = messages.iter().filter_map(id).collect();
    let in_order: Vec<String> = messages.iter().filter(|m| m.group_id == messages[0].group_id).filter_map(id).collect();
    ids.sort();
    assert_eq!(ids, ["worker-outbox-1", "worker-outbox-2", "worker-outbox-3"], "each once: {messages:?}");
    assert!(
        in_order == ["worker-outbox-1", "worker-outbox-3"] || in_order == ["worker-outbox-2"],
        "one caller's writes in the order answered: {in_order:?}"
    );
    drop(stack);
}

/// The refresh forwarded after the response and the write forwarded before
/// it both reach SQS (moto) as the envelopes the origin expects, signed
/// SendMessage calls from the Worker's own `fetch`.
#[tokio::test(flavor = "multi_thread")]
async fn worker_forwards_refreshes_and_writes_to_sqs() {
    let moto = Moto::start().await;
    let queue_url = moto.fifo_queue("failsoft-worker").await;
    let settings =
        [("FAILSOFT_QUEUE_URL", queue_url.as_str()), ("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test")];
    let stack = WorkerStack::start(&settings).await;
    let t = &stack.target;
    with_vip(t).await;
    t.crm("down").await;

    let (_, answer) = t.lookup(VIP).await;
    assert_eq!(answer["source"], "default", "{answer}");
    let (status, write) =
        t.post("/v1/cases", &json!({"ani": VIP, "subject": "CRM down", "correlationId": "worker-case-1"})).await;
    assert_eq!((status, &write["status"]), (200, &json!("PENDING")), "{write}");
    let (status, polled) = t.send(t.http.get(t.url("/v1/results/worker-case-1")).bearer_auth(&t.token)).await;
    assert_eq!((status, &polled["status"]), (200, &json!("PENDING")), "{polled}");

    let messages = wait_until("both messages in SQS", Duration::from_secs(10), || async {
        let all = moto.receive_all(&queue_url, 10).await;
        (all.len() >= 2).then_some(all)
    })
    .await;
    let envelope = |kind: &str| {
        let m = messages
            .iter()
            .find(|m| serde_json::from_str::<Value>(&m.body).is_ok_and(|b| b["kind"] == kind))
            .unwrap_or_else(|| panic!("a {kind} message in {messages:?}"));
        (m.clone(), serde_json::from_str::<Value>(&m.body).expect("JSON"))
    };
    let entity = entity_key(CACHE_KEY_SECRET.as_bytes(), &normalize_phone(VIP).expect("a valid number"));
    let (refresh, body) = envelope("refresh");
    assert_eq!((body["v"].as_u64(), &body["correlationId"]), (Some(1), &answer["correlationId"]), "{body}");
    assert_eq!(body["payload"]["phone"], VIP, "{body}");
    assert_eq!((refresh.group_id.as_str(), body["entityKey"].as_str()), (entity.as_str(), Some(entity.as_str())));
    assert!(refresh.dedup_id.starts_with(&format!("r-{entity}-")), "per entity and window: {refresh:?}");
    let (write_message, body) = envelope("write");
    assert_eq!(write_message.dedup_id, "worker-case-1", "a write is deduplicated by its correlationId");
    assert_eq!(write_message.group_id, entity, "one customer, one FIFO group");
    assert_eq!(body["payload"]["case"]["subject"], "CRM down", "{body}");
}

/// A Worker has many isolates. One that trips the breaker publishes it in
/// KV, and a fresh isolate (here: a new workerd on the same KV store)
/// answers at once instead of waiting out the deadline itself.
#[tokio::test(flavor = "multi_thread")]
async fn worker_breaker_trip_reaches_a_new_isolate_through_kv() {
    let settings = [
        ("FAILSOFT_CRM_DEADLINE_MS", "1000"),
        ("FAILSOFT_BREAKER_FAILURE_THRESHOLD", "2"),
        ("FAILSOFT_BREAKER_COOL_DOWN_MS", "60000"),
    ];
    let state = wrangler::temp_dir();
    let stack = WorkerStack::start_with_state(&settings, Some(&state), None).await;
    with_vip(&stack.target).await;
    stack.target.crm("hang").await;
    for attempt in 1..=2 {
        let (_, body, took) = stack.target.timed_lookup(VIP).await;
        assert_eq!(body["source"], "default", "timeout {attempt}: {body}");
        assert!(took >= DEADLINE, "timeout {attempt} waited out the deadline, took {took:?}");
    }

    let stack = stack.restart_worker(&settings, &state).await;
    let (status, body, took) = stack.target.timed_lookup(VIP).await;
    assert_eq!((status, &body["source"]), (200, &json!("default")), "{body}");
    assert!(took < DEADLINE_SLACK, "the new isolate adopted the open breaker, yet took {took:?}");
    assert_eq!(stack.target.sim_count("lookups").await, 2, "the new isolate did not call the CRM");
    drop(stack);
    std::fs::remove_dir_all(&state).ok();
}

/// A Worker has no start-up to refuse: with a setting that would break a
/// promise it answers every request 500 `MISCONFIGURED`, naming the setting
/// (never its value), instead of running half-configured.
#[tokio::test(flavor = "multi_thread")]
async fn worker_refuses_a_bad_configuration_naming_the_setting() {
    // The core's settings, and the Worker host's own (the KV memory's
    // time, past KV's minute of eventual consistency).
    for (setting, value) in [("FAILSOFT_CRM_DEADLINE_MS", "9500"), ("FAILSOFT_KV_MEMO_MS", "60001")] {
        let mut vars = base_edge_env("http://127.0.0.1:9");
        vars.push((setting.to_owned(), value.to_owned()));
        let worker = WranglerDev::spawn(&vars, None).await;
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(15)).build().expect("a client");
        let (status, body) = wait_until("the Worker to answer", Duration::from_secs(30), || async {
            let response = http.get(format!("{}/healthz", worker.url)).send().await.ok()?;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status != 503).then_some((status, body))
        })
        .await;
        failsoft_tests::assert_error(setting, status, &body, 500, "MISCONFIGURED");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(setting), "{body}");
        assert!(!message.contains(value), "the value stays in the log: {body}");
    }
}

/// The production host reports its traffic: the isolate counts every
/// answer and sends its report in `ctx.wait_until`, signed, to a real
/// origin, whose `/v1/health` then shows the exact hit rate and degraded
/// share of the mix and whose `/metrics` counts it.
#[tokio::test(flavor = "multi_thread")]
async fn worker_traffic_reaches_the_origins_health_and_metrics() {
    let origin = OriginStack::start().await;
    let origin_worker = origin.worker(&[]).await;
    let settings = reporting_settings(origin_worker.url(), INTERNAL_SECRET);
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let stack = WorkerStack::start(&settings).await;
    let t = &stack.target;
    let edge = Edge { http: &t.http, url: &t.edge, sim_admin: &t.admin };
    let tally = edge.drive_mix().await;
    let (doc, text) = wait_for_counts(&origin.http, origin_worker.operator_url(), &t.edge, &tally).await;
    assert_counts(&doc, &text, &tally);
}

/// A write the Durable Object outbox keeps, which SQS then refuses for
/// itself (over the queue's maximum message size): removed from the outbox
/// with its reason, and `FAILED` for whoever polls it, not sent forever.
#[tokio::test(flavor = "multi_thread")]
async fn worker_outbox_hands_a_write_sqs_refuses_for_itself_back_as_failed() {
    let moto = Moto::start().await;
    let queue_url = moto.fifo_queue("failsoft-worker-refused").await;
    let switch = Switch::start(moto.endpoint.trim_start_matches("http://").parse().expect("moto's address"))
        .await
        .expect("the proxy starts");
    let through = switch.url_through(&queue_url);
    let settings = [
        ("FAILSOFT_QUEUE_URL", through.as_str()),
        ("AWS_ACCESS_KEY_ID", "test-only-key-id"),
        ("AWS_SECRET_ACCESS_KEY", "test-only-secret-access-key"),
    ];
    let stack = WorkerStack::start(&settings).await;
    let t = &stack.target;
    t.crm("down").await;
    switch.set(Mode::Refuse);
    let long = "x".repeat(2_000);
    let body =
        json!({"ani": "+13175550701", "subject": "Callback", "description": long, "correlationId": "worker-big-1"});
    let (status, answer) = t.post("/v1/cases", &body).await;
    assert_eq!((status, &answer["status"]), (200, &json!("PENDING")), "{answer}");
    moto.sqs
        .set_queue_attributes()
        .queue_url(&queue_url)
        .attributes(aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize, "1024")
        .send()
        .await
        .expect("set the queue's maximum message size");
    switch.set(Mode::Forward);
    let failed = wait_until("the refused write is FAILED", Duration::from_secs(30), || async {
        let (_, polled) = t.send(t.http.get(t.url("/v1/results/worker-big-1")).bearer_auth(&t.token)).await;
        (polled["status"] == "FAILED").then_some(polled)
    })
    .await;
    assert_eq!(failed["reason"], "QUEUE_REFUSED_InvalidParameterValue", "{failed}");
    assert!(moto.receive_all(&queue_url, 10).await.is_empty(), "nothing reached SQS");
}
