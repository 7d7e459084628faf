//! The lookup read ladder over real processes (docs/design.md, "Flows"):
//! fresh → live → stale → default, the deadline and the breaker.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use failsoft_tests::{Stack, wait_until};
use serde_json::{Value, json};

/// Fictional numbers (Ofcom's drama range), E.164 as the simulator stores them.
const VIP: &str = "+442079460001";
const GOLD: &str = "+442079460002";
const NEVER_SEEN: &str = "+442079460999";

const DEADLINE: Duration = Duration::from_millis(1_000);
/// What the facade may add to the deadline on a loaded machine.
const DEADLINE_SLACK: Duration = Duration::from_millis(250);
/// Settings that make a found record stale one second after it was fetched.
const ONE_SECOND_FRESHNESS: [(&str, &str); 2] =
    [("FAILSOFT_FRESHNESS_SECS", "1"), ("FAILSOFT_NOT_FOUND_FRESHNESS_SECS", "1")];

async fn with_customers(stack: &Stack) {
    stack
        .load_customers(json!([
            {"phone": VIP, "customerId": "C-1001", "tier": "vip", "vipFlag": true},
            {"phone": GOLD, "customerId": "C-1002", "tier": "gold"},
        ]))
        .await;
}

fn assert_record(context: &str, body: &Value, source: &str, customer_id: &str, tier: &str) {
    assert_eq!(body["source"], source, "{context}: {body}");
    assert_eq!(body["found"], true, "{context}: {body}");
    assert_eq!(body["customerId"], customer_id, "{context}: {body}");
    assert_eq!(body["tier"], tier, "{context}: {body}");
}

/// Looks `ani` up until it is no longer answered from the cache (its
/// record went stale), bounded; returns that answer and its wall time.
async fn first_answer_past_freshness(stack: &Stack, ani: &str) -> (u16, Value, Duration) {
    wait_until("the cached record to go stale", Duration::from_secs(10), || async {
        let (status, body, took) = stack.timed_lookup(ani).await;
        (body["source"] != "cache").then_some((status, body, took))
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn fresh_hit_is_served_from_cache_without_asking_the_crm() {
    let stack = Stack::start().await;
    with_customers(&stack).await;
    let (status, warm) = stack.lookup("+44 20 7946 0001").await;
    assert_eq!(status, 200);
    assert_record("warming lookup", &warm, "live", "C-1001", "vip");
    let crm_lookups = stack.sim_count("lookups").await;
    assert_eq!(crm_lookups, 1, "the warming lookup asked the CRM once");

    let (status, hit) = stack.lookup(VIP).await;
    assert_eq!(status, 200);
    assert_record("second lookup", &hit, "cache", "C-1001", "vip");
    assert!(hit["cacheAgeSeconds"].is_u64(), "a cache answer has an age: {hit}");
    assert_eq!(hit["warning"], Value::Null, "{hit}");
    // The seed's path is the same lookup.
    let (status, seed_path) = stack.post("/crm/customer-lookup", &json!({"ani": "tel:+442079460001"})).await;
    assert_eq!(status, 200);
    assert_record("lookup at the seed's path", &seed_path, "cache", "C-1001", "vip");
    assert_eq!(stack.sim_count("lookups").await, crm_lookups, "fresh hits must not reach the CRM");
}

#[tokio::test(flavor = "multi_thread")]
async fn miss_with_the_crm_up_is_live_and_stored() {
    let stack = Stack::start().await;
    with_customers(&stack).await;
    let (status, live) = stack.post("/v1/customer-lookup", &json!({"ani": GOLD, "correlationId": "it-live-1"})).await;
    assert_eq!(status, 200);
    assert_record("miss", &live, "live", "C-1002", "gold");
    assert_eq!(live["correlationId"], "it-live-1", "the caller's correlationId is echoed");
    assert_eq!(live["warning"], Value::Null);
    assert_eq!(stack.sim_count("lookups").await, 1);

    let (status, next) = stack.lookup(GOLD).await;
    assert_eq!(status, 200);
    assert_record("lookup after the miss", &next, "cache", "C-1002", "gold");
    assert_eq!(stack.sim_count("lookups").await, 1, "the live answer was stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn number_unknown_to_the_crm_is_a_real_answer_and_is_cached() {
    let stack = Stack::start().await;
    with_customers(&stack).await;
    let (status, body) = stack.lookup(NEVER_SEEN).await;
    assert_eq!(status, 200);
    assert_eq!(body["source"], "live", "{body}");
    assert_eq!(body["found"], false, "{body}");
    assert_eq!(body["customerId"], "UNKNOWN", "{body}");
    assert_eq!(body["tier"], "standard", "{body}");
    assert_eq!(body["warning"], Value::Null, "a real answer carries no warning: {body}");

    let (_, again) = stack.lookup(NEVER_SEEN).await;
    assert_eq!(again["source"], "cache", "{again}");
    assert_eq!(again["found"], false, "{again}");
    assert_eq!(stack.sim_count("lookups").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn crm_down_serves_the_stale_record_with_its_age_and_a_warning() {
    let stack = Stack::start_with(&ONE_SECOND_FRESHNESS).await;
    with_customers(&stack).await;
    let (_, warm) = stack.lookup(VIP).await;
    assert_record("warming lookup", &warm, "live", "C-1001", "vip");
    stack.crm("down").await;

    let (status, stale, _) = first_answer_past_freshness(&stack, VIP).await;
    assert_eq!(status, 200);
    assert_record("stale answer", &stale, "stale_cache", "C-1001", "vip");
    assert_eq!(stale["warning"], "CRM_UNAVAILABLE_USING_CACHED_DATA", "{stale}");
    let age = stale["cacheAgeSeconds"].as_u64().unwrap_or_else(|| panic!("cacheAgeSeconds is a number: {stale}"));
    assert!(age >= 1, "a record past a 1 s freshness window is at least 1 s old: {stale}");
}

#[tokio::test(flavor = "multi_thread")]
async fn crm_down_and_a_never_seen_number_get_the_configured_default() {
    let stack = Stack::start_with(&[("FAILSOFT_DEFAULT_TIER", "bronze")]).await;
    with_customers(&stack).await;
    stack.crm("down").await;
    let (status, body) = stack.lookup(VIP).await;
    assert_eq!(status, 200, "a well-formed request is always answered 200: {body}");
    assert_eq!(body["source"], "default", "{body}");
    assert_eq!(body["customerId"], "UNKNOWN", "{body}");
    assert_eq!(body["tier"], "bronze", "FAILSOFT_DEFAULT_TIER: {body}");
    assert_eq!(body["found"], Value::Null, "nobody knows: {body}");
    assert_eq!(body["warning"], "CRM_UNAVAILABLE_NO_CACHE", "{body}");
    assert_eq!(body["cacheAgeSeconds"], Value::Null, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn crm_hung_is_answered_at_the_deadline() {
    let mut settings = ONE_SECOND_FRESHNESS.to_vec();
    settings.push(("FAILSOFT_CRM_DEADLINE_MS", "1000"));
    let stack = Stack::start_with(&settings).await;
    with_customers(&stack).await;
    let (_, warm) = stack.lookup(VIP).await;
    assert_record("warming lookup", &warm, "live", "C-1001", "vip");
    stack.crm("hang").await;

    let (status, stale, took) = first_answer_past_freshness(&stack, VIP).await;
    assert_eq!(status, 200);
    assert_record("hung CRM, stale record", &stale, "stale_cache", "C-1001", "vip");
    assert!(took >= DEADLINE, "answered in {took:?}: it did not wait for the deadline");
    assert!(took < DEADLINE + DEADLINE_SLACK, "answered in {took:?}: past the deadline of {DEADLINE:?}");

    let (status, default, took) = stack.timed_lookup(NEVER_SEEN).await;
    assert_eq!(status, 200);
    assert_eq!(default["source"], "default", "hung CRM, nothing cached: {default}");
    assert!(took >= DEADLINE, "answered in {took:?}: it did not wait for the deadline");
    assert!(took < DEADLINE + DEADLINE_SLACK, "answered in {took:?}: past the deadline of {DEADLINE:?}");
    assert_eq!(stack.sim_count("lookups").await, 3, "both degraded answers did ask the CRM");
}

#[tokio::test(flavor = "multi_thread")]
async fn open_breaker_answers_at_once_and_a_probe_closes_it() {
    let stack = Stack::start_with(&[
        ("FAILSOFT_CRM_DEADLINE_MS", "1000"),
        ("FAILSOFT_BREAKER_FAILURE_THRESHOLD", "2"),
        ("FAILSOFT_BREAKER_WINDOW", "20"),
        ("FAILSOFT_BREAKER_COOL_DOWN_MS", "2000"),
    ])
    .await;
    with_customers(&stack).await;
    stack.crm("hang").await;

    for attempt in 1..=2 {
        let (status, body, took) = stack.timed_lookup(VIP).await;
        assert_eq!(status, 200);
        assert_eq!(body["source"], "default", "timeout {attempt}: {body}");
        assert!(took >= DEADLINE, "timeout {attempt} answered in {took:?}, before the deadline");
    }
    assert_eq!(stack.sim_count("lookups").await, 2);

    let (status, body, took) = stack.timed_lookup(VIP).await;
    assert_eq!(status, 200);
    assert_eq!(body["source"], "default", "breaker open: {body}");
    assert_eq!(body["warning"], "CRM_UNAVAILABLE_NO_CACHE", "{body}");
    assert!(took < Duration::from_millis(250), "an open breaker answers at once, took {took:?}");
    assert_eq!(stack.sim_count("lookups").await, 2, "an open breaker does not call the CRM");
    let rejections = stack.metric("failsoft_edge_breaker_rejections_total").await;
    assert!(rejections > 0.0, "failsoft_edge_breaker_rejections_total = {rejections}");

    // The lookup that takes the half-open probe is answered at once; the
    // probe goes after the response and caches its record.
    stack.crm("up").await;
    let known = wait_until("the probe to close the breaker", Duration::from_secs(10), || async {
        let (_, body, took) = stack.timed_lookup(VIP).await;
        assert!(took < Duration::from_millis(250), "no lookup waits on the probe, took {took:?}: {body}");
        (body["source"] != "default").then_some(body)
    })
    .await;
    assert_eq!((&known["customerId"], &known["tier"]), (&json!("C-1001"), &json!("vip")), "{known}");
    let (_, next) = stack.lookup(GOLD).await;
    assert_record("breaker closed", &next, "live", "C-1002", "gold");
}

#[tokio::test(flavor = "multi_thread")]
async fn degraded_lookups_forward_one_refresh_per_customer() {
    // Refreshes deduplicate per customer per freshness window: an hour-long
    // window keeps the five lookups inside one bucket.
    let window_ms: u64 = 3_600_000;
    let stack = Stack::start_with(&[("FAILSOFT_FRESHNESS_SECS", "3600")]).await;
    stack.crm("down").await;
    let into_bucket =
        SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as u64 % window_ms;
    if into_bucket > window_ms - 10_000 {
        tokio::time::sleep(Duration::from_millis(window_ms - into_bucket + 100)).await;
    }

    for n in 1..=5 {
        let (status, body) = stack.lookup(NEVER_SEEN).await;
        assert_eq!(status, 200);
        assert_eq!(body["source"], "default", "lookup {n}: {body}");
        assert_eq!(body["tier"], "standard", "the default tier: {body}");
    }
    // The refreshes are forwarded after each answer: wait until all five
    // forwards ran (a deduplicated one is acknowledged, hence counted).
    let forwarded = wait_until("five refresh forwards", Duration::from_secs(10), || async {
        let text = stack.metrics().await;
        let ok = failsoft_tests::metric_value(&text, r#"failsoft_edge_forwarded_total{kind="refresh"}"#).unwrap_or(0.0);
        let failed = failsoft_tests::metric_value(&text, r#"failsoft_edge_forward_failures_total{kind="refresh"}"#)
            .unwrap_or(0.0);
        (ok + failed >= 5.0).then_some(ok)
    })
    .await;
    assert!(forwarded >= 1.0, "refreshes forwarded: {forwarded}");
    let depth = stack.metric("failsoft_edge_local_queue_depth").await;
    assert_eq!(depth, 1.0, "one refresh per customer per window, not one per lookup");
}

#[tokio::test(flavor = "multi_thread")]
async fn not_found_answers_expire_sooner_than_found_records() {
    let stack =
        Stack::start_with(&[("FAILSOFT_FRESHNESS_SECS", "60"), ("FAILSOFT_NOT_FOUND_FRESHNESS_SECS", "1")]).await;
    with_customers(&stack).await;
    let (_, found) = stack.lookup(VIP).await;
    assert_record("found record", &found, "live", "C-1001", "vip");
    let (_, missing) = stack.lookup(NEVER_SEEN).await;
    assert_eq!((&missing["source"], &missing["found"]), (&json!("live"), &json!(false)), "{missing}");

    let (_, again, _) = first_answer_past_freshness(&stack, NEVER_SEEN).await;
    assert_eq!(again["source"], "live", "a not-found answer past its window asks the CRM again: {again}");
    let (_, still) = stack.lookup(VIP).await;
    assert_eq!(still["source"], "cache", "a found record keeps its longer window: {still}");
    assert_eq!(stack.sim_count("lookups").await, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn crm_errors_and_throttling_degrade_without_waiting_for_the_deadline() {
    let stack = Stack::start_with(&[("FAILSOFT_CRM_DEADLINE_MS", "2000")]).await;
    with_customers(&stack).await;
    for mode in [json!({"mode": "error", "status": 503}), json!({"mode": "throttle", "retryAfterSecs": 30})] {
        stack.admin_mode(mode.clone()).await;
        let (status, body, took) = stack.timed_lookup(VIP).await;
        assert_eq!(status, 200, "{mode}: {body}");
        assert_eq!(body["source"], "default", "{mode}: {body}");
        assert_eq!(body["warning"], "CRM_UNAVAILABLE_NO_CACHE", "{mode}: {body}");
        assert!(took < Duration::from_millis(1_000), "{mode}: a failed answer needs no deadline, took {took:?}");
    }
    assert_eq!(stack.sim_count("lookups").await, 2, "each lookup asked the CRM once, without retrying inline");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_cache_hit_does_not_use_up_the_breaker_probe() {
    const COOL_DOWN: Duration = Duration::from_millis(2_000);
    let stack = Stack::start_with(&[
        ("FAILSOFT_CRM_DEADLINE_MS", "1000"),
        ("FAILSOFT_BREAKER_FAILURE_THRESHOLD", "1"),
        ("FAILSOFT_BREAKER_COOL_DOWN_MS", "2000"),
    ])
    .await;
    with_customers(&stack).await;
    let (_, warm) = stack.lookup(VIP).await;
    assert_record("warming lookup", &warm, "live", "C-1001", "vip");

    stack.crm("down").await;
    let (_, failed) = stack.lookup(GOLD).await;
    assert_eq!(failed["source"], "default", "{failed}");
    let opened = tokio::time::Instant::now();
    let (_, rejected) = stack.lookup(GOLD).await;
    assert_eq!(rejected["source"], "default", "{rejected}");
    assert!(stack.metric("failsoft_edge_breaker_rejections_total").await > 0.0, "one failure opened the breaker");

    stack.crm("up").await;
    // Past the cool-down the next call to the CRM is the probe. A lookup
    // answered from a fresh cache entry makes no call, so must not take it.
    tokio::time::sleep_until(opened + COOL_DOWN + Duration::from_millis(300)).await;
    let (_, hit) = stack.lookup(VIP).await;
    assert_record("fresh hit after the cool-down", &hit, "cache", "C-1001", "vip");
    let lookups = stack.sim_count("lookups").await;
    // The next miss takes the probe: answered from the ladder at once, the
    // probe after the response. Had the cache hit taken it, no call would
    // go until the probe's timeout (10 s).
    let (_, probing) = stack.lookup(GOLD).await;
    assert_eq!(probing["source"], "default", "{probing}");
    wait_until("the probe after the response", Duration::from_secs(3), || async {
        (stack.sim_count("lookups").await == lookups + 1).then_some(())
    })
    .await;
    let (_, probed) = stack.lookup(GOLD).await;
    assert_record("the probe's record", &probed, "cache", "C-1002", "gold");
}

#[tokio::test(flavor = "multi_thread")]
async fn records_past_the_last_known_horizon_are_not_served() {
    let mut settings = ONE_SECOND_FRESHNESS.to_vec();
    settings.push(("FAILSOFT_LAST_KNOWN_HORIZON_SECS", "2"));
    let stack = Stack::start_with(&settings).await;
    with_customers(&stack).await;
    let (_, warm) = stack.lookup(VIP).await;
    assert_record("warming lookup", &warm, "live", "C-1001", "vip");
    stack.crm("down").await;

    let seen = std::cell::RefCell::new(Vec::<String>::new());
    let (stack, seen_ref) = (&stack, &seen);
    wait_until("the record to pass the horizon", Duration::from_secs(10), || async move {
        let (status, body) = stack.lookup(VIP).await;
        assert_eq!(status, 200, "{body}");
        let source = body["source"].as_str().unwrap_or_default().to_owned();
        let mut seen = seen_ref.borrow_mut();
        if seen.last() != Some(&source) {
            seen.push(source.clone());
        }
        (source == "default").then_some(())
    })
    .await;
    let seen = seen.into_inner();
    assert_eq!(seen, ["cache", "stale_cache", "default"], "fresh, then stale within the horizon, then nothing");
}
