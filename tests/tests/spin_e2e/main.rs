//! The Spin component end to end: the host-neutral cases of
//! `worker_e2e/cases.rs` (one table for every host), then what only this
//! host has to prove, each on its own CRM simulator and `wasmtime serve`.
//!
//! `wasmtime serve` gives every request a fresh instance, like Spin: the
//! cache, the write results and the CRM breaker live in the key-value store
//! (the shim keeps it in files), so the breaker case shows an open breaker
//! surviving from one instance to the next.
//!
//! Needs `make spin-test-component` and `cargo build --workspace --bins`
//! (crm-sim); `make test` does both before the tests.

#[path = "../origin_support/mod.rs"]
mod origin_support;
mod wasmtime;

use std::time::{Duration, Instant};

use failsoft_lab::local_stack::CrmContract;
use failsoft_lab::process::Service;
use failsoft_lab::switch::{Mode, Switch};
use failsoft_tests::harness::{base_edge_env, program};
use failsoft_tests::moto::{Moto, hung_queue};
use failsoft_tests::{AUTH_TOKEN, assert_error, wait_until};
use serde_json::{Value, json};

use failsoft_tests::cases::{self, Case, DEADLINE, DEADLINE_SLACK, Host, Queue, SYNC_SECRET, Target};
use wasmtime::WasmtimeServe;

/// The simulator and the component in front of it (dropped in this order;
/// a failed test shows the component's log as the stack drops).
struct SpinStack {
    target: Target,
    serve: WasmtimeServe,
    _sim: Service,
}

impl SpinStack {
    async fn start(settings: &[(&str, &str)]) -> Self {
        Self::start_with(settings, None).await
    }

    async fn start_with(settings: &[(&str, &str)], queue: Option<Queue>) -> Self {
        Self::start_with_sim(&[], settings, queue).await
    }

    /// A stack whose simulator gets `sim_args` (a vendor `--dialect`).
    async fn start_with_sim(sim_args: &[&str], settings: &[(&str, &str)], queue: Option<Queue>) -> Self {
        let sim_args: Vec<String> = sim_args.iter().map(|a| a.to_string()).collect();
        let sim = tokio::task::spawn_blocking(move || {
            let mut command = program("crm-sim");
            command.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]).env("RUST_LOG", "warn");
            command.args(&sim_args);
            Service::start_command("crm-sim", &mut command).expect("crm-sim starts")
        })
        .await
        .expect("crm-sim starts");
        let mut env = base_edge_env(sim.url("api"));
        env.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env.extend(queue.iter().flat_map(Queue::settings));
        let serve = tokio::task::spawn_blocking(move || WasmtimeServe::start(&env)).await.expect("wasmtime starts");
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(15)).build().expect("a client");
        let target = Target {
            host: Host::Spin,
            edge: serve.url.clone(),
            token: AUTH_TOKEN.to_owned(),
            admin: sim.url("admin").to_owned(),
            http,
            queue,
            seen: Default::default(),
        };
        // Listening is not yet answering: the first request instantiates.
        wait_until("the component to answer /healthz", Duration::from_secs(10), || async {
            let response = target.http.get(target.url("/healthz")).send().await.ok()?;
            response.bytes().await.ok().map(|_| ())
        })
        .await;
        Self { target, serve, _sim: sim }
    }
}

async fn run(case: &Case) {
    let stack = SpinStack::start_with(case.settings, Some(Queue::start().await)).await;
    case.run_on(&stack.target).await;
}

macro_rules! spin_cases {
    ($($test:ident => $case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $test() {
                run(&cases::$case).await;
            }
        )*

        /// Every case of the table has a test here.
        #[test]
        fn every_case_runs_on_spin() {
            let covered = [$(cases::$case.name),*];
            for case in cases::ALL {
                assert!(covered.contains(&case.name), "case {} has no Spin test", case.name);
            }
        }
    };
}

spin_cases! {
    spin_healthz => HEALTHZ,
    spin_bad_input => BAD_INPUT,
    spin_oversized_bodies => OVERSIZED_BODIES,
    spin_fresh_hit_is_cache => FRESH_HIT,
    spin_miss_is_live_and_stored => MISS_IS_LIVE_AND_STORED,
    spin_crm_down_serves_stale => CRM_DOWN_STALE,
    spin_crm_down_never_seen_is_default => CRM_DOWN_DEFAULT,
    spin_crm_hung_answers_within_deadline => CRM_HUNG_WITHIN_DEADLINE,
    spin_breaker_open_answers_at_once => BREAKER_OPEN,
    spin_webhook_invalidates => WEBHOOK_INVALIDATES,
    spin_sync_bulk_push_prewarms_and_keeps_the_newer => SYNC_BULK_PUSH,
    spin_signed_requests_are_not_replayed => SIGNED_REQUESTS_ARE_NOT_REPLAYED,
    spin_bad_input_corpus => BAD_INPUT_CORPUS,
}

// ── what only the Spin host has to prove ─────────────────────────────────

const VIP: &str = "+442079460001";

async fn with_vip(t: &Target) {
    t.load_customers(json!([{"phone": VIP, "customerId": "C-1001", "tier": "vip", "vipFlag": true}])).await;
}

/// Request coalescing on Spin: an instance lives for one request, so 50
/// concurrent lookups of one cold number make at most one CRM call per
/// instance: every `live` answer is one call, and an answer from the cache
/// (a request served after an earlier one stored the record) is none.
#[tokio::test(flavor = "multi_thread")]
async fn spin_concurrent_misses_make_at_most_one_crm_call_per_instance() {
    let stack = SpinStack::start(&[]).await;
    let t = &stack.target;
    with_vip(t).await;
    t.admin_mode(json!({"mode": "slow", "latencyMs": 300})).await;
    let mut lookups = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let request = t.http.post(t.url("/v1/customer-lookup")).bearer_auth(&t.token).json(&json!({"ani": VIP}));
        lookups.spawn(async move {
            let response = request.send().await.expect("the component answers");
            (response.status().as_u16(), response.json::<serde_json::Value>().await.unwrap_or_default())
        });
    }
    let mut live = 0;
    while let Some(answer) = lookups.join_next().await {
        let (status, body) = answer.expect("a lookup");
        assert_eq!((status, &body["tier"]), (200, &json!("vip")), "{body}");
        assert!(matches!(body["source"].as_str(), Some("live" | "cache")), "{body}");
        live += u64::from(body["source"] == "live");
    }
    let calls = t.sim_count("lookups").await;
    assert_eq!(calls, live, "one CRM call per live answer, none for a cached one");
}

/// Spin has no `wait_until`: the component sets its response, finishes the
/// body, and only then forwards the refresh. With a queue that hangs, each
/// forward waits out its deadline, yet every answer arrives at once.
#[tokio::test(flavor = "multi_thread")]
async fn spin_refresh_is_forwarded_after_the_response() {
    let (_queue, queue_url) = hung_queue();
    let settings = [
        ("FAILSOFT_QUEUE_URL", queue_url.as_str()),
        ("AWS_ACCESS_KEY_ID", "test-only-key-id"),
        ("AWS_SECRET_ACCESS_KEY", "test-only-secret-access-key"),
        ("FAILSOFT_CRM_DEADLINE_MS", "1000"),
    ];
    let stack = SpinStack::start(&settings).await;
    let t = &stack.target;
    with_vip(t).await;
    t.crm("down").await;
    for ani in ["+442079460101", "+442079460102", "+442079460103"] {
        let (status, body, took) = t.timed_lookup(ani).await;
        assert_eq!((status, &body["source"]), (200, &json!("default")), "{body}");
        assert!(took < DEADLINE_SLACK, "the refresh is not on the response path: took {took:?}");
    }
    // A write is the opposite: write-ahead, bounded by the margin; the
    // queue not answering, the outbox in the key-value store keeps it.
    let started = Instant::now();
    let (status, body) = t.post("/v1/cases", &json!({"ani": VIP, "subject": "hung queue"})).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "PENDING", "the outbox kept it: {body}");
    assert!(took < DEADLINE + DEADLINE_SLACK, "the queue's deadline bounds the write: took {took:?}");
}

/// The outbox in Spin's key-value store, with the component's way to SQS
/// cut by a proxy (moto behind it): writes are `PENDING` and kept while SQS
/// hangs; once it is back, the signed drain call the origin makes on a
/// schedule sends them on, once each and one caller's in order, and a later
/// request's response drains what is kept after it.
#[tokio::test(flavor = "multi_thread")]
async fn spin_outbox_keeps_writes_through_a_queue_outage_and_drains_them() {
    let moto = Moto::start().await;
    let queue_url = moto.fifo_queue("failsoft-spin-outbox").await;
    let switch = Switch::start(moto.endpoint.trim_start_matches("http://").parse().expect("moto's address"))
        .await
        .expect("the proxy starts");
    let through = switch.url_through(&queue_url);
    let settings = [
        ("FAILSOFT_QUEUE_URL", through.as_str()),
        ("AWS_ACCESS_KEY_ID", "test-only-key-id"),
        ("AWS_SECRET_ACCESS_KEY", "test-only-secret-access-key"),
        ("FAILSOFT_DEADLINE_MARGIN_MS", "600"),
        ("FAILSOFT_INTERNAL_SECRET", SYNC_SECRET),
    ];
    let stack = SpinStack::start(&settings).await;
    let t = &stack.target;
    t.crm("down").await;
    switch.set(Mode::Hang);
    let write = |ani: &'static str, id: &'static str| async move {
        let request = t.http.post(t.url("/v1/cases")).bearer_auth(&t.token);
        let response = request
            .json(&json!({"ani": ani, "subject": "Callback", "correlationId": id}))
            .send()
            .await
            .expect("the component answers");
        let timing = response.headers().get("server-timing").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["status"], "PENDING", "{id}: {body}");
        assert!(timing.contains("outbox"), "{id}: kept by the outbox: {timing}");
    };
    write("+13175550501", "spin-outbox-1").await;
    write("+13175550502", "spin-outbox-2").await;
    write("+13175550501", "spin-outbox-3").await;
    assert!(moto.receive_all(&queue_url, 10).await.is_empty(), "nothing reached SQS while the path hung");

    switch.set(Mode::Forward);
    let drain_url = t.url(failsoft_shared::sync::OUTBOX_DRAIN_PATH);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs();
    let response = failsoft_tests::signing::request(&t.http, "POST", &drain_url, Vec::new(), SYNC_SECRET, now)
        .send()
        .await
        .expect("the drain call is answered");
    assert_eq!(response.status(), 200);
    let drained: Value = response.json().await.expect("JSON");
    assert_eq!((&drained["sent"], &drained["waiting"]), (&json!(3), &json!(0)), "{drained}");
    let messages = moto.receive_all(&queue_url, 10).await;
    let id = |m: &failsoft_tests::moto::Received| {
        serde_json::from_str::<Value>(&m.body).ok().and_then(|b| b["correlationId"].as_str().map(str::to_owned))
    };
    let mut ids: Vec<String> = messages.iter().filter_map(id).collect();
    let first_caller: Vec<String> =
        messages.iter().filter(|m| m.group_id == messages[0].group_id).filter_map(id).collect();
    ids.sort();
    assert_eq!(ids, ["spin-outbox-1", "spin-outbox-2", "spin-outbox-3"], "each once: {messages:?}");
    assert!(
        first_caller == ["spin-outbox-1", "spin-outbox-3"] || first_caller == ["spin-outbox-2"],
        "one caller's writes in the order answered: {first_caller:?}"
    );

    // Kept again; this time the next request's response drains it.
    switch.set(Mode::Refuse);
    write("+13175550503", "spin-outbox-4").await;
    switch.set(Mode::Forward);
    let (status, _) = t.send(t.http.get(t.url("/healthz"))).await;
    assert_eq!(status, 200);
    let later = wait_until("the kept write in SQS after a response", Duration::from_secs(10), || async {
        let all = moto.receive_all(&queue_url, 10).await;
        (!all.is_empty()).then_some(all)
    })
    .await;
    assert_eq!(later.iter().filter_map(id).collect::<Vec<_>>(), ["spin-outbox-4"]);

    // Unsigned, the drain route is refused.
    let (status, body) = t.send(t.http.post(&drain_url)).await;
    assert_error("an unsigned drain call", status, &body, 401, "SIGNATURE_MISSING");
}

/// The refresh forwarded after the response, and the write forwarded
/// before it, both reach SQS (moto) as the envelopes the origin expects.
#[tokio::test(flavor = "multi_thread")]
async fn spin_forwards_refreshes_and_writes_to_sqs() {
    let moto = Moto::start().await;
    let queue_url = moto.fifo_queue("failsoft-spin").await;
    let settings =
        [("FAILSOFT_QUEUE_URL", queue_url.as_str()), ("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test")];
    let stack = SpinStack::start(&settings).await;
    let target = &stack.target;
    with_vip(target).await;
    target.crm("down").await;

    let (_, answer) = target.lookup(VIP).await;
    assert_eq!(answer["source"], "default", "{answer}");
    let (status, write) =
        target.post("/v1/cases", &json!({"ani": VIP, "subject": "CRM down", "correlationId": "spin-case-1"})).await;
    assert_eq!((status, &write["status"]), (200, &json!("PENDING")), "{write}");

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
    let (refresh, body) = envelope("refresh");
    assert_eq!(body["correlationId"], answer["correlationId"], "{body}");
    assert_eq!(body["payload"]["phone"], VIP, "{body}");
    assert_eq!(refresh.group_id, body["entityKey"].as_str().expect("an entity key"), "group = entity");
    assert!(refresh.dedup_id.starts_with("r-"), "a refresh is deduplicated per entity and window: {refresh:?}");
    let (write_message, body) = envelope("write");
    assert_eq!(write_message.dedup_id, "spin-case-1", "a write is deduplicated by its correlationId");
    assert_eq!(body["payload"]["case"]["subject"], "CRM down", "{body}");
    assert_eq!(write_message.group_id, refresh.group_id, "one customer, one FIFO group");
}

/// Spin KV has no expiry: the adapter stores one with each value, and a
/// record past the last-known horizon reads as missing, not as stale.
#[tokio::test(flavor = "multi_thread")]
async fn spin_kv_entries_expire_with_the_last_known_horizon() {
    let settings = [
        ("FAILSOFT_FRESHNESS_SECS", "1"),
        ("FAILSOFT_NOT_FOUND_FRESHNESS_SECS", "1"),
        ("FAILSOFT_LAST_KNOWN_HORIZON_SECS", "2"),
    ];
    let stack = SpinStack::start(&settings).await;
    let t = &stack.target;
    with_vip(t).await;
    let (_, warm) = t.lookup(VIP).await;
    assert_eq!(warm["source"], "live", "{warm}");
    t.crm("down").await;
    let stale = wait_until("the record to go stale", Duration::from_secs(5), || async {
        let (_, body) = t.lookup(VIP).await;
        (body["source"] != "cache").then_some(body)
    })
    .await;
    assert_eq!(stale["source"], "stale_cache", "within the horizon: {stale}");
    let gone = wait_until("the record to expire", Duration::from_secs(5), || async {
        let (_, body) = t.lookup(VIP).await;
        (body["source"] != "stale_cache").then_some(body)
    })
    .await;
    assert_eq!(gone["source"], "default", "past the horizon the record is gone: {gone}");
}

/// Spin KV keeps an entry nobody reads again: the sweep deletes it. With
/// `FAILSOFT_KV_SWEEP_EVERY=1` every request sweeps after its response; a
/// customer record past its 2 s horizon goes from the store (its file is
/// gone) although it is never read again, while a write's result, not yet
/// expired (24 h), stays.
#[tokio::test(flavor = "multi_thread")]
async fn spin_kv_sweep_deletes_expired_entries_never_read_again() {
    let settings = [
        ("FAILSOFT_KV_SWEEP_EVERY", "1"),
        ("FAILSOFT_FRESHNESS_SECS", "1"),
        ("FAILSOFT_NOT_FOUND_FRESHNESS_SECS", "1"),
        ("FAILSOFT_LAST_KNOWN_HORIZON_SECS", "2"),
    ];
    let stack = SpinStack::start(&settings).await;
    let t = &stack.target;
    with_vip(t).await;
    let (status, write) =
        t.post("/v1/cases", &json!({"ani": VIP, "subject": "sweep", "correlationId": "sweep-1"})).await;
    assert_eq!(status, 200, "{write}");
    let (_, warm) = t.lookup(VIP).await;
    assert_eq!(warm["source"], "live", "{warm}");
    let keys = stack.serve.kv_keys();
    let customer = |keys: &[String]| keys.iter().any(|k| k.starts_with("cust:v1:"));
    assert!(customer(&keys), "the record is stored: {keys:?}");
    assert!(keys.iter().any(|k| k == "res:v1:sweep-1"), "the write's result is stored: {keys:?}");

    // Requests that never read the record: each sweeps the whole (small) store.
    let left = wait_until("the expired record to be swept", Duration::from_secs(15), || async {
        let (status, _) = t.send(t.http.get(t.url("/healthz"))).await;
        assert_eq!(status, 200);
        let keys = stack.serve.kv_keys();
        (!customer(&keys)).then_some(keys)
    })
    .await;
    assert!(left.iter().any(|k| k == "res:v1:sweep-1"), "an unexpired result stays: {left:?}");
    let (status, result) = t.send(t.http.get(t.url("/v1/results/sweep-1")).bearer_auth(&t.token)).await;
    assert_eq!(status, 200, "the swept store still answers the result: {result}");
}

/// A sweep setting out of range is refused like any other.
#[tokio::test(flavor = "multi_thread")]
async fn spin_kv_sweep_setting_out_of_range_is_named() {
    let stack = SpinStack::start(&[("FAILSOFT_KV_SWEEP_EVERY", "0")]).await;
    let t = &stack.target;
    let (status, body) = t.send(t.http.get(t.url("/healthz"))).await;
    assert_error("healthz", status, &body, 500, "MISCONFIGURED");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("FAILSOFT_KV_SWEEP_EVERY"), "names the setting: {body}");
}

/// A setting the core refuses: every route answers 500 `MISCONFIGURED`
/// naming it (a Spin component has no start-up to refuse).
#[tokio::test(flavor = "multi_thread")]
async fn spin_misconfiguration_is_named_on_every_route() {
    let stack = SpinStack::start(&[("FAILSOFT_CACHE_KEY_SECRET", "SECRET-15-BYTES")]).await;
    let t = &stack.target;
    let (status, body) = t.send(t.http.get(t.url("/healthz"))).await;
    assert_error("healthz", status, &body, 500, "MISCONFIGURED");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("FAILSOFT_CACHE_KEY_SECRET"), "names the setting: {body}");
    assert!(!message.contains("SECRET-15-BYTES"), "never echoes a secret: {body}");
    let (status, body) = t.lookup(VIP).await;
    assert_error("lookup", status, &body, 500, "MISCONFIGURED");
}

/// An idle Spin edge's outbox drains too: the origin worker calls its
/// signed drain route on a schedule (`FAILSOFT_EDGE_OUTBOX_DRAIN_SECS`), so
/// a write kept while SQS was out of reach reaches SQS with no request to
/// the edge after it.
#[tokio::test(flavor = "multi_thread")]
async fn spin_outbox_is_drained_by_the_origins_schedule_while_the_edge_is_idle() {
    let moto = Moto::start().await;
    let queue_url = moto.fifo_queue("failsoft-spin-idle").await;
    let switch = Switch::start(moto.endpoint.trim_start_matches("http://").parse().expect("moto's address"))
        .await
        .expect("the proxy starts");
    let through = switch.url_through(&queue_url);
    let settings = [
        ("FAILSOFT_QUEUE_URL", through.as_str()),
        ("AWS_ACCESS_KEY_ID", "test-only-key-id"),
        ("AWS_SECRET_ACCESS_KEY", "test-only-secret-access-key"),
        ("FAILSOFT_INTERNAL_SECRET", origin_support::INTERNAL_SECRET),
    ];
    let stack = SpinStack::start(&settings).await;
    let t = &stack.target;
    t.crm("down").await;
    switch.set(Mode::Refuse);
    let (status, body) = t
        .post("/v1/cases", &json!({"ani": "+13175550601", "subject": "Callback", "correlationId": "spin-idle-1"}))
        .await;
    assert_eq!((status, &body["status"]), (200, &json!("PENDING")), "{body}");
    switch.set(Mode::Forward);

    let origin = origin_support::OriginStack::start().await;
    let _worker =
        origin.worker(&[("FAILSOFT_EDGE_URL", t.edge.as_str()), ("FAILSOFT_EDGE_OUTBOX_DRAIN_SECS", "1")]).await;
    let messages = wait_until("the origin's drain call sent the kept write", Duration::from_secs(20), || async {
        let all = moto.receive_all(&queue_url, 10).await;
        (!all.is_empty()).then_some(all)
    })
    .await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(messages[0].body.contains("spin-idle-1"), "{messages:?}");
}

/// Each shipped CRM profile in the Spin component, against the simulator
/// speaking that vendor's API: its lookups and a case, the OAuth token
/// fetched once and kept in the key-value store (one instance per request).
#[tokio::test(flavor = "multi_thread")]
async fn spin_speaks_each_shipped_crm_profile() {
    for contract in CrmContract::VENDORS {
        let settings = contract.profile_settings();
        let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let stack = SpinStack::start_with_sim(&contract.sim_args(), &settings, None).await;
        let oauth = matches!(contract, CrmContract::Salesforce | CrmContract::Servicenow);
        cases::speaks_the_vendor_profile(&stack.target, oauth).await;
    }
}
