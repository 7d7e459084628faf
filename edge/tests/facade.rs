//! The facade core over fake ports: decisions that need no real process.
//! (The end-to-end behaviour over real processes is in tests/.)

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use failsoft_edge::config::EdgeConfig;
use failsoft_edge::facade::{After, BREAKER_KEY, BreakerSharing, Facade, NonceStore};
use failsoft_edge::http::Request;
use failsoft_edge::native::{LocalQueue, MemoryKv};
use failsoft_edge::ports::{
    Clock, Downstream, Forwarder, Kv, OutboundRequest, OutboundResponse, PortError, QueueMessage, TransportError,
};
use failsoft_shared::signature::{self, Signed};
use serde_json::{Value, json};

/// The bearer token the tests' Genesys presents.
const TOKEN: &str = "facade-test-token-0123";
const INTERNAL: &str = "internal-secret-for-tests-0123";
const CACHE_SECRET: &str = "cache-secret-for-tests-0123";
/// An edge that reports its counts to the origin every second.
const REPORTING: &[(&str, &str)] = &[
    ("FAILSOFT_ORIGIN_URL", "http://origin.invalid"),
    ("FAILSOFT_INTERNAL_SECRET", INTERNAL),
    ("FAILSOFT_EDGE_STATS_EVERY_MS", "1000"),
];

#[derive(Clone)]
struct TestClock(Arc<AtomicU64>);
impl TestClock {
    fn at(ms: u64) -> Self {
        Self(Arc::new(AtomicU64::new(ms)))
    }
    fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}
impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
    fn random_u64(&self) -> u64 {
        self.0.load(Ordering::SeqCst).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    /// Real time passes (the slow CRM's answer is real-time), and the
    /// clock moves with it.
    async fn sleep_ms(&self, ms: u64) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        self.advance(ms);
    }
}

/// Answers from a script (a refused connection once it runs out) and
/// records what was asked.
#[derive(Clone, Default)]
struct Scripted {
    answers: Rc<RefCell<VecDeque<Result<OutboundResponse, TransportError>>>>,
    asked: Rc<RefCell<Vec<OutboundRequest>>>,
}
impl Scripted {
    fn push(&self, answer: Result<OutboundResponse, TransportError>) {
        self.answers.borrow_mut().push_back(answer);
    }
    fn calls(&self) -> usize {
        self.asked.borrow().len()
    }
}
impl Downstream for Scripted {
    async fn send(&self, request: OutboundRequest, _: u64) -> Result<OutboundResponse, TransportError> {
        self.asked.borrow_mut().push(request);
        self.answers.borrow_mut().pop_front().unwrap_or(Err(TransportError::Connect))
    }
}

fn ok(status: u16, body: Value) -> Result<OutboundResponse, TransportError> {
    Ok(OutboundResponse { status, retry_after: None, body: serde_json::to_vec(&body).unwrap() })
}

/// One KV shared by several facades, as isolates share Workers KV (its
/// deletes of anything but a nonce fail while the flag is set).
#[derive(Clone, Default)]
struct SharedKv(Rc<MemoryKv>, Rc<std::cell::Cell<bool>>);
impl Kv for SharedKv {
    async fn get(&self, key: &str) -> Result<Option<String>, PortError> {
        self.0.get(key).await
    }
    async fn put(&self, key: &str, value: &str, ttl: u64) -> Result<(), PortError> {
        self.0.put(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<(), PortError> {
        if self.1.get() && !key.starts_with("nonce:") {
            return Err(PortError("deletes fail".into()));
        }
        self.0.delete(key).await
    }
}

type TestFacade = Facade<SharedKv, Scripted, Arc<LocalQueue>, TestClock>;

fn facade(kv: &SharedKv, crm: &Scripted, clock: &TestClock, extra: &[(&str, &str)]) -> TestFacade {
    let mut pairs = vec![
        ("FAILSOFT_CRM_URL", "http://crm.invalid"),
        ("FAILSOFT_AUTH_TOKEN", TOKEN),
        ("FAILSOFT_CACHE_KEY_SECRET", CACHE_SECRET),
        ("FAILSOFT_WEBHOOK_SECRET", "webhook-secret-for-tests-0123"),
        ("FAILSOFT_BREAKER_FAILURE_THRESHOLD", "2"),
        ("FAILSOFT_BREAKER_COOL_DOWN_MS", "5000"),
    ];
    pairs.extend_from_slice(extra);
    let config = EdgeConfig::from_lookup(|n| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string())).unwrap();
    Facade::new(config, kv.clone(), crm.clone(), Arc::new(LocalQueue::new(100)), clock.clone())
}

fn lookup(ani: &str) -> Request {
    Request::new("POST", "/v1/customer-lookup")
        .header("authorization", "Bearer facade-test-token-0123")
        .body(json!({"ani": ani}).to_string())
}

async fn source(f: &TestFacade, ani: &str) -> String {
    f.handle(lookup(ani)).await.response.json_body()["source"].as_str().unwrap_or("?").to_owned()
}

#[tokio::test]
async fn a_peers_trip_stops_this_instance_calling_the_crm() {
    let (kv, clock) = (SharedKv::default(), TestClock::at(1_000_000));
    let (crm_a, crm_b) = (Scripted::default(), Scripted::default());
    let a = facade(&kv, &crm_a, &clock, &[]).with_breaker_sharing(BreakerSharing::Transitions);
    let b = facade(&kv, &crm_b, &clock, &[]).with_breaker_sharing(BreakerSharing::Transitions);

    // Instance A sees two refused connections and trips; it publishes it.
    assert_eq!(source(&a, "+442071234567").await, "default");
    assert_eq!(source(&a, "+442071234567").await, "default");
    assert!(kv.get(BREAKER_KEY).await.unwrap().unwrap().contains("open"));

    // Instance B has never failed, yet does not call the CRM.
    assert_eq!(source(&b, "+442071234568").await, "default");
    assert_eq!(crm_b.calls(), 0, "B called the CRM despite the shared trip");
}

#[tokio::test]
async fn without_sharing_instances_trip_on_their_own() {
    let (kv, clock) = (SharedKv::default(), TestClock::at(1_000_000));
    let (crm_a, crm_b) = (Scripted::default(), Scripted::default());
    let a = facade(&kv, &crm_a, &clock, &[]);
    let b = facade(&kv, &crm_b, &clock, &[]);
    source(&a, "+442071234567").await;
    source(&a, "+442071234567").await;
    source(&b, "+442071234567").await;
    assert_eq!(crm_b.calls(), 1);
    assert!(kv.get(BREAKER_KEY).await.unwrap().is_none());
}

#[tokio::test]
async fn per_request_instances_keep_one_window_in_kv() {
    let (kv, clock) = (SharedKv::default(), TestClock::at(1_000_000));
    // A fresh facade per request, as Spin builds one: one failure each.
    for _ in 0..2 {
        let f = facade(&kv, &Scripted::default(), &clock, &[]).with_breaker_sharing(BreakerSharing::EveryOutcome);
        source(&f, "+442071234567").await;
    }
    let crm = Scripted::default();
    let f = facade(&kv, &crm, &clock, &[]).with_breaker_sharing(BreakerSharing::EveryOutcome);
    assert_eq!(source(&f, "+442071234567").await, "default");
    assert_eq!(crm.calls(), 0, "the third instance should see the open breaker");
}

#[tokio::test]
async fn a_cache_hit_does_not_spend_the_half_open_probe() {
    let (kv, clock) = (SharedKv::default(), TestClock::at(1_000_000));
    let crm = Scripted::default();
    let f = facade(&kv, &crm, &clock, &[]);
    crm.push(ok(200, json!({"customerId": "C-1", "tier": "gold"})));
    assert_eq!(source(&f, "+442071234567").await, "live");
    // Two failures on other numbers open the breaker.
    source(&f, "+442071234501").await;
    source(&f, "+442071234502").await;
    clock.advance(5_000);
    // After the cool-down a cache hit comes first, then a cold number.
    assert_eq!(source(&f, "+442071234567").await, "cache");
    let calls = crm.calls();
    let cold = f.handle(lookup("+442071234503")).await;
    assert_eq!(cold.response.json_body()["source"], "default", "answered from the ladder at once");
    assert_eq!(crm.calls(), calls, "no caller waits on the probe");
    assert!(cold.after.iter().any(|w| matches!(w, After::Probe { .. })), "the probe went to the cold number");
}

#[tokio::test]
async fn instances_sharing_every_outcome_send_one_probe_per_cool_down() {
    let (kv, clock) = (SharedKv::default(), TestClock::at(1_000_000));
    let crm = Scripted::default();
    let instance = || facade(&kv, &crm, &clock, &[]).with_breaker_sharing(BreakerSharing::EveryOutcome);
    for ani in ["+442071234501", "+442071234502"] {
        source(&instance(), ani).await;
    }
    clock.advance(5_000);
    let probes = |handled: &failsoft_edge::facade::Handled| {
        handled.after.iter().filter(|w| matches!(w, After::Probe { .. })).count()
    };
    let first = instance().handle(lookup("+442071234503")).await;
    assert_eq!(probes(&first), 1, "the first instance past the cool-down takes the probe");
    for ani in ["+442071234504", "+442071234505"] {
        let other = instance().handle(lookup(ani)).await;
        assert_eq!((probes(&other), other.response.json_body()["source"].clone()), (0, json!("default")));
    }
    assert_eq!(crm.calls(), 2, "nobody called the CRM on a caller's time");
}

#[tokio::test]
async fn a_slow_call_that_began_before_a_peer_tripped_the_breaker_does_not_close_it() {
    let (kv, clock) = (SharedKv::default(), TestClock::at(1_000_000));
    let crm = Scripted::default();
    let instance = || facade(&kv, &crm, &clock, &[]).with_breaker_sharing(BreakerSharing::EveryOutcome);
    // A request reads the closed breaker and starts a call that takes
    // 50 ms and fails; meanwhile peers trip the breaker (threshold 2).
    let slow_crm = SlowCrm { calls: Rc::default(), status: 503 };
    let config = instance().config().clone();
    let slow = Facade::new(config, kv.clone(), slow_crm, Arc::new(LocalQueue::new(10)), clock.clone())
        .with_breaker_sharing(BreakerSharing::EveryOutcome);
    let peers = async {
        for ani in ["+442071234501", "+442071234502"] {
            source(&instance(), ani).await;
        }
    };
    let (late, ()) = tokio::join!(slow.handle(lookup("+442071234509")), peers);
    assert_eq!(late.response.json_body()["source"], "default");
    // Its failure, recorded late, did not publish its stale closed copy.
    let calls = crm.calls();
    assert_eq!(source(&instance(), "+442071234503").await, "default");
    assert_eq!(crm.calls(), calls, "the breaker stayed open for every instance");
}

#[tokio::test]
async fn the_half_open_probe_goes_after_the_response_and_its_record_is_kept() {
    let (kv, clock) = (SharedKv::default(), TestClock::at(1_000_000));
    let crm = Scripted::default();
    let f = facade(&kv, &crm, &clock, &[]);
    source(&f, "+442071234501").await;
    source(&f, "+442071234502").await;
    assert_eq!(f.breaker().mode.as_str(), "open");
    clock.advance(5_000);
    let probing = f.handle(lookup("+442071234503")).await;
    assert_eq!(probing.response.json_body()["source"], "default");
    assert_eq!(crm.calls(), 2, "the answer did not wait for the CRM");
    // Another caller meanwhile: the probe is taken, so no call at all.
    assert_eq!(source(&f, "+442071234504").await, "default");
    assert!(f.handle(lookup("+442071234505")).await.after.iter().all(|w| !matches!(w, After::Probe { .. })));
    crm.push(ok(200, json!({"customerId": "C-3", "tier": "vip"})));
    f.run_after(probing.after).await;
    assert_eq!(crm.calls(), 3, "the probe, after the response");
    assert_eq!(f.breaker().mode.as_str(), "closed", "the CRM is back");
    let answer = f.handle(lookup("+442071234503")).await.response.json_body();
    assert_eq!((&answer["source"], &answer["tier"]), (&json!("cache"), &json!("vip")), "the probe's record kept");

    // A failed probe re-opens the breaker; still nobody waited.
    source(&f, "+442071234506").await;
    source(&f, "+442071234507").await;
    clock.advance(5_000);
    let probing = f.handle(lookup("+442071234508")).await;
    f.run_after(probing.after).await;
    assert_eq!(f.breaker().mode.as_str(), "open");
}

#[tokio::test]
async fn the_origin_push_is_signed_and_never_replaces_a_newer_record() {
    let (kv, clock) = (SharedKv::default(), TestClock::at(1_800_000_000_000));
    let crm = Scripted::default();
    crm.push(ok(200, json!({"customerId": "C-1", "tier": "gold"})));
    let f = facade(&kv, &crm, &clock, &[("FAILSOFT_INTERNAL_SECRET", INTERNAL)]);
    assert_eq!(source(&f, "+442071234567").await, "live");

    let phone = failsoft_shared::keys::normalize_phone("+442071234567").unwrap();
    let entity = failsoft_shared::keys::entity_key(CACHE_SECRET.as_bytes(), &phone);
    let push = |body: &Value, secret: &str| {
        signed("PUT", &format!("/v1/internal/cache/{entity}"), body, secret, 1_800_000_000)
    };
    let record = json!({"found": true, "customerId": "C-1", "tier": "vip"});
    let older = json!({"record": record, "fetchedAtMs": 1_700_000_000_000u64});
    let newer = json!({"record": record, "fetchedAtMs": 1_800_000_000_500u64});

    assert_eq!(f.handle(push(&newer, "wrong-secret-0123456789")).await.response.status, 401);
    assert_eq!(f.handle(push(&older, INTERNAL)).await.response.json_body()["stored"], false);
    assert_eq!(f.handle(lookup("+442071234567")).await.response.json_body()["tier"], "gold");
    assert_eq!(f.handle(push(&newer, INTERNAL)).await.response.json_body()["stored"], true);
    clock.advance(600);
    assert_eq!(f.handle(lookup("+442071234567")).await.response.json_body()["tier"], "vip");
    let bad_key = Request::new("PUT", "/v1/internal/cache/not-hex");
    assert_eq!(f.handle(bad_key).await.response.status, 401, "signature first, then the key");
    // Upper case is the same digest spelt as a KV key no lookup reads.
    let upper =
        signed("PUT", &format!("/v1/internal/cache/{}", entity.to_ascii_uppercase()), &newer, INTERNAL, 1_800_000_000);
    assert_eq!(refusal(&f, upper).await, (400, "INVALID_ENTITY_KEY".to_owned()));
}

/// A signed change whose `phone` is there but not text is an invalid phone,
/// not a missing one (bad-input corpus: `signature/webhook-body-phone-number`).
#[tokio::test]
async fn a_webhook_phone_that_is_not_text_is_invalid_not_missing() {
    let (kv, clock, crm) = (SharedKv::default(), TestClock::at(1_800_000_000_000), Scripted::default());
    let f = facade(&kv, &crm, &clock, &[]);
    let hook = |phone: Value| {
        let change = json!({"phone": phone, "fieldChanged": "tier"});
        signed("POST", "/v1/webhooks/crm-update", &change, "webhook-secret-for-tests-0123", 1_800_000_000)
    };
    for phone in [json!(442071234567u64), json!(["+442071234567"]), json!({"n": 1}), json!(true)] {
        assert_eq!(refusal(&f, hook(phone.clone())).await, (400, "INVALID_PHONE".to_owned()), "{phone}");
    }
    assert_eq!(refusal(&f, hook(Value::Null)).await, (400, "MISSING_PHONE".to_owned()));
}

/// A request signed as the origin signs one, with a nonce never used before.
fn signed(method: &str, target: &str, body: &Value, secret: &str, ts: u64) -> Request {
    static NONCES: AtomicU64 = AtomicU64::new(1);
    let mut random = [0u8; signature::NONCE_BYTES];
    random[..8].copy_from_slice(&NONCES.fetch_add(1, Ordering::SeqCst).to_le_bytes());
    let body = body.to_string();
    let headers = signature::headers(secret.as_bytes(), &Signed::new(method, target, body.as_bytes()), ts, random);
    headers.iter().fold(Request::new(method, target), |req, (name, value)| req.header(name, value)).body(body)
}

#[tokio::test]
async fn a_webhook_that_failed_may_be_sent_again_unchanged() {
    for store in ["memory", "kv"] {
        let (kv, clock, crm) = (SharedKv::default(), TestClock::at(1_800_000_000_000), Scripted::default());
        let f = facade(&kv, &crm, &clock, &[]);
        let f = if store == "kv" { f.with_nonce_store(NonceStore::Kv) } else { f };
        let change = json!({"phone": "+442071234567", "fieldChanged": "tier", "newValue": "gold"});
        let hook = signed("POST", "/v1/webhooks/crm-update", &change, "webhook-secret-for-tests-0123", 1_800_000_000);
        kv.1.set(true);
        assert_eq!(f.handle(hook.clone()).await.response.status, 503, "{store}: the invalidation failed");
        kv.1.set(false);
        let retried = f.handle(hook.clone()).await.response;
        assert_eq!(retried.json_body()["invalidated"], true, "{store}: the CRM's retry of the same bytes passes");
        assert_eq!(refusal(&f, hook).await, (401, "SIGNATURE_REPLAYED".to_owned()), "{store}: once it took effect");
    }
}

/// `req` with its method and target swapped, signature headers kept.
fn moved(req: &Request, method: &str, target: &str) -> Request {
    let mut moved = Request::new(method, target).body(req.body.clone());
    moved.headers = req.headers.clone();
    moved
}

async fn refusal(f: &TestFacade, req: Request) -> (u16, String) {
    let resp = f.handle(req).await.response;
    (resp.status, resp.json_body()["error"]["code"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn a_signed_request_is_accepted_once_and_only_where_it_was_sent() {
    for store in ["memory", "kv"] {
        let (kv, clock, crm) = (SharedKv::default(), TestClock::at(1_800_000_000_000), Scripted::default());
        let f = facade(&kv, &crm, &clock, &[("FAILSOFT_INTERNAL_SECRET", INTERNAL)]);
        let f = if store == "kv" { f.with_nonce_store(NonceStore::Kv) } else { f };
        let (a, b) = (entity_of("+442071234567"), entity_of("+442071234568"));
        let body =
            json!({"record": {"found": true, "customerId": "C-1", "tier": "vip"}, "fetchedAtMs": 1_800_000_000_000u64});
        let push = signed("PUT", &format!("/v1/internal/cache/{a}"), &body, INTERNAL, 1_800_000_000);
        assert_eq!(f.handle(push.clone()).await.response.json_body()["stored"], true, "{store}");
        let replayed = (401, "SIGNATURE_REPLAYED".to_owned());
        assert_eq!(refusal(&f, push.clone()).await, replayed, "{store}: the same push again");
        clock.advance(299_000);
        assert_eq!(refusal(&f, push.clone()).await, replayed, "{store}: still remembered at the window's end");
        clock.advance(2_000);
        assert_eq!(refusal(&f, push.clone()).await.1, "SIGNATURE_EXPIRED", "{store}: then too old");

        // A fresh push for A, moved onto B's key, the bulk route, a query.
        let push = signed("PUT", &format!("/v1/internal/cache/{a}"), &body, INTERNAL, 1_800_000_301);
        for (method, target) in
            [("PUT", format!("/v1/internal/cache/{b}")), ("PUT", format!("/v1/internal/cache/{a}?x=1"))]
        {
            assert_eq!(refusal(&f, moved(&push, method, &target)).await, (401, "SIGNATURE_MISMATCH".to_owned()));
        }
        let webhook = moved(&push, "POST", "/v1/webhooks/crm-update");
        assert_eq!(refusal(&f, webhook).await.0, 401, "{store}: onto the webhook");
        assert_eq!(f.handle(push).await.response.json_body()["stored"], false, "{store}: the original still passes");

        // Signed 61 s ahead: refused; 60 s ahead: accepted.
        let ahead =
            |secs: u64| signed("PUT", &format!("/v1/internal/cache/{b}"), &body, INTERNAL, 1_800_000_301 + secs);
        assert_eq!(refusal(&f, ahead(61)).await, (401, "SIGNATURE_FROM_FUTURE".to_owned()), "{store}");
        assert_eq!(f.handle(ahead(60)).await.response.status, 200, "{store}");
        // Without a nonce: refused.
        let mut bare = ahead(0);
        bare.headers.retain(|(name, _)| name != signature::NONCE_HEADER);
        assert_eq!(refusal(&f, bare).await, (401, "SIGNATURE_MISSING".to_owned()), "{store}");
    }
}

fn entity_of(ani: &str) -> String {
    failsoft_shared::keys::entity_key(CACHE_SECRET.as_bytes(), &failsoft_shared::keys::normalize_phone(ani).unwrap())
}

#[tokio::test]
async fn the_sync_s_bulk_push_stores_removes_and_never_replaces_a_newer_record() {
    let (kv, clock) = (SharedKv::default(), TestClock::at(1_800_000_000_000));
    let crm = Scripted::default();
    crm.push(ok(200, json!({"customerId": "C-1", "tier": "gold"})));
    let f = facade(&kv, &crm, &clock, &[("FAILSOFT_INTERNAL_SECRET", INTERNAL)]);
    // Read live now: newer than the sync's page below.
    assert_eq!(source(&f, "+442071234567").await, "live");
    let ts = 1_800_000_000u64;
    let record = |id: &str, tier: &str, at: u64| json!({"record": {"found": true, "customerId": id, "tier": tier}, "fetchedAtMs": at});
    let page_read_at = 1_799_999_000_000u64;
    let body = json!({"entries": [
        {"key": entity_of("+442071234567"), "entry": record("C-1", "standard", page_read_at)},
        {"key": entity_of("+442071234568"), "entry": record("C-2", "vip", page_read_at)},
        {"key": entity_of("+442071234569"), "removedAtMs": page_read_at},
    ]});
    assert_eq!(
        f.handle(signed("POST", "/v1/internal/cache", &body, "wrong-secret-0123456789", ts)).await.response.status,
        401
    );
    let resp = f.handle(signed("POST", "/v1/internal/cache", &body, INTERNAL, ts)).await.response;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json_body(), json!({"stored": 1, "removed": 0, "kept": 2, "failed": 0}));
    assert_eq!(f.handle(lookup("+442071234567")).await.response.json_body()["tier"], "gold", "the live read is newer");

    // The CRM goes away: the synced customer this edge never saw is known.
    clock.advance(400_000);
    let answer = f.handle(lookup("+442071234568")).await.response.json_body();
    assert_eq!((answer["source"].as_str(), answer["tier"].as_str()), (Some("stale_cache"), Some("vip")));

    // A removal as of after the live read deletes it; one as of before would not.
    let removal = |at: u64| json!({"entries": [{"key": entity_of("+442071234567"), "removedAtMs": at}]});
    let ts = clock.now_ms() / 1000;
    let kept = f.handle(signed("POST", "/v1/internal/cache", &removal(page_read_at), INTERNAL, ts)).await.response;
    assert_eq!(kept.json_body()["kept"], 1);
    let gone = f.handle(signed("POST", "/v1/internal/cache", &removal(1_800_000_000_001), INTERNAL, ts)).await.response;
    assert_eq!(gone.json_body()["removed"], 1);
    assert_eq!(source(&f, "+442071234567").await, "default");
}

#[tokio::test]
async fn a_bulk_push_that_is_malformed_or_too_big_is_refused_whole() {
    let (kv, clock) = (SharedKv::default(), TestClock::at(1_800_000_000_000));
    let f = facade(&kv, &Scripted::default(), &clock, &[("FAILSOFT_INTERNAL_SECRET", INTERNAL)]);
    let ts = 1_800_000_000u64;
    let entry = |key: String| json!({"key": key, "entry": {"record": {"found": true, "customerId": "C", "tier": "t"}, "fetchedAtMs": 1}});
    let too_many: Vec<Value> = (0..101).map(|i| entry(format!("{i:064x}"))).collect();
    let cases = [
        (json!({"entries": too_many}), "TOO_MANY_ENTRIES"),
        (json!({"entries": [entry("not-hex".into())]}), "INVALID_ENTRY"),
        (json!({"entries": [entry("B".repeat(64))]}), "INVALID_ENTRY"),
        (json!({"entries": [{"key": "a".repeat(64)}]}), "INVALID_ENTRY"),
        (json!({"entries": [entry("b".repeat(64))], "extra": true}), "INVALID_BODY"),
        (json!([1, 2]), "INVALID_BODY"),
    ];
    for (body, code) in cases {
        let resp = f.handle(signed("POST", "/v1/internal/cache", &body, INTERNAL, ts)).await.response;
        assert_eq!((resp.status, resp.json_body()["error"]["code"].as_str()), (400, Some(code)), "{body}");
    }
    assert_eq!(kv.0.len(), 0, "nothing of a refused batch is stored");
    let wrong_method = f.handle(signed("PUT", "/v1/internal/cache", &json!({"entries": []}), INTERNAL, ts)).await;
    assert_eq!(wrong_method.response.status, 405);
}

#[tokio::test]
async fn a_hit_late_in_its_window_is_answered_from_cache_and_refreshed_once_after() {
    let (kv, clock) = (SharedKv::default(), TestClock::at(1_800_000_000_000));
    let crm = Scripted::default();
    crm.push(ok(200, json!({"customerId": "C-1", "tier": "gold"})));
    let f = facade(&kv, &crm, &clock, &[]);
    assert_eq!(source(&f, "+442071234567").await, "live");
    clock.advance(239_000);
    let early = f.handle(lookup("+442071234567")).await;
    assert!(early.after.is_empty(), "79 % into the window: no refresh");
    clock.advance(2_000);
    let late = f.handle(lookup("+442071234567")).await;
    assert_eq!(late.response.json_body()["source"], "cache", "answered at once");
    assert_eq!(late.after.len(), 1, "a refresh after the response");
    assert!(matches!(&late.after[0], After::Forward(m) if m.body.contains("\"kind\":\"refresh\"")));
    for _ in 0..5 {
        assert!(f.handle(lookup("+442071234567")).await.after.is_empty(), "once per key per window");
    }
    assert_eq!(crm.calls(), 1, "no caller waited on the CRM");
    let off = facade(&kv, &crm, &clock, &[("FAILSOFT_REFRESH_AHEAD_PERCENT", "100")]);
    assert!(off.handle(lookup("+442071234567")).await.after.is_empty(), "100 turns it off");
}

#[tokio::test]
async fn internal_routes_are_off_without_a_secret() {
    let (kv, clock) = (SharedKv::default(), TestClock::at(1_000));
    let f = facade(&kv, &Scripted::default(), &clock, &[]);
    let resp = f.handle(Request::new("PUT", &format!("/v1/internal/cache/{}", "a".repeat(64)))).await.response;
    assert_eq!(resp.status, 404);
    let bulk = f.handle(signed("POST", "/v1/internal/cache", &json!({"entries": []}), INTERNAL, 1)).await.response;
    assert_eq!(bulk.status, 404);
}

#[tokio::test]
async fn results_come_from_the_origin_when_it_knows_them() {
    let (kv, clock) = (SharedKv::default(), TestClock::at(1_800_000_000_000));
    let crm = Scripted::default();
    let extra = [("FAILSOFT_INTERNAL_SECRET", INTERNAL), ("FAILSOFT_ORIGIN_URL", "http://origin.invalid")];
    let f = facade(&kv, &crm, &clock, &extra);
    // The CRM refuses the connection, so the case is queued: PENDING.
    let case = Request::new("POST", "/v1/cases")
        .header("authorization", "Bearer facade-test-token-0123")
        .body(json!({"ani": "+442071234567", "subject": "Callback", "correlationId": "corr-1"}).to_string());
    assert_eq!(f.handle(case).await.response.json_body()["status"], "PENDING");

    let poll = || Request::new("GET", "/v1/results/corr-1").header("authorization", "Bearer facade-test-token-0123");
    // The origin has not seen it yet: the edge's own record answers.
    crm.push(ok(404, json!({"error": {"code": "RESULT_NOT_FOUND"}})));
    assert_eq!(f.handle(poll()).await.response.json_body()["status"], "PENDING");
    // The origin delivered it.
    crm.push(ok(
        200,
        json!({"correlationId": "corr-1", "status": "COMPLETE", "caseId": "CASE-9",
               "result": {"caseId": "CASE-9"}, "reason": null, "warning": null}),
    ));
    let done = f.handle(poll()).await.response.json_body();
    assert_eq!((done["status"].as_str(), done["caseId"].as_str()), (Some("COMPLETE"), Some("CASE-9")));
    let asked = crm.asked.borrow();
    let origin_call = asked.last().unwrap();
    assert_eq!(origin_call.url, "http://origin.invalid/v1/results/corr-1");
    let header = |name: &str| origin_call.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
    let presented = signature::Presented {
        signature: header(signature::SIGNATURE_HEADER),
        timestamp: header(signature::TIMESTAMP_HEADER),
        nonce: header(signature::NONCE_HEADER),
    };
    let read = Signed::new("GET", "/v1/results/corr-1", b"");
    let now = clock.now_ms() / 1000;
    assert!(
        signature::verify(INTERNAL.as_bytes(), &presented, &read, now, 300).is_ok(),
        "signed over GET and its path"
    );
}

/// What a CRM that echoes its request sends back for a case: the caller's
/// number (as sent, and in the description in national form).
fn echoed_case(case_id: &str) -> Value {
    json!({"caseId": case_id, "status": "open", "createdAt": 1_800_000_000_000u64,
           "phone": "+442071234567", "subject": "Callback", "description": "ring 020 7123 4567",
           "externalRef": "corr-e", "idempotencyKey": "corr-e"})
}

/// The caller's number in E.164 and national form, and the free text.
fn assert_nothing_echoed(text: &str) {
    for personal in ["442071234567", "2071234567", "020 7123 4567", "7123", "Callback", "ring"] {
        assert!(!text.contains(personal), "`{personal}` kept in {text}");
    }
}

#[tokio::test]
async fn of_a_crm_that_echoes_the_case_only_its_id_status_and_time_are_answered_and_kept() {
    let (kv, clock) = (SharedKv::default(), TestClock::at(1_800_000_000_000));
    let crm = Scripted::default();
    let extra = [("FAILSOFT_INTERNAL_SECRET", INTERNAL), ("FAILSOFT_ORIGIN_URL", "http://origin.invalid")];
    let f = facade(&kv, &crm, &clock, &extra);
    crm.push(ok(201, echoed_case("CASE-E")));
    let case = Request::new("POST", "/v1/cases").header("authorization", "Bearer facade-test-token-0123").body(
        json!({"ani": "+442071234567", "subject": "Callback", "description": "ring 020 7123 4567",
               "correlationId": "corr-e"})
        .to_string(),
    );
    let answer = f.handle(case).await.response.json_body();
    assert_eq!((answer["status"].as_str(), answer["caseId"].as_str()), (Some("COMPLETE"), Some("CASE-E")));
    let kept = json!({"caseId": "CASE-E", "status": "open", "createdAt": 1_800_000_000_000u64});
    assert_eq!(answer["result"], kept, "{answer}");
    assert_nothing_echoed(&answer.to_string());
    let stored = kv.get("res:v1:corr-e").await.unwrap().expect("the edge's result record");
    assert!(stored.contains("CASE-E"), "{stored}");
    assert_nothing_echoed(&stored);

    // Polled: the origin has not seen it (the edge's record answers), then
    // an origin that kept the whole case answers: only the summary passes.
    let poll = || Request::new("GET", "/v1/results/corr-e").header("authorization", "Bearer facade-test-token-0123");
    crm.push(ok(404, json!({"error": {"code": "RESULT_NOT_FOUND"}})));
    let polled = f.handle(poll()).await.response.json_body();
    assert_eq!((&polled["caseId"], &polled["result"]), (&json!("CASE-E"), &kept), "{polled}");
    crm.push(ok(
        200,
        json!({"correlationId": "corr-e", "status": "COMPLETE", "caseId": "CASE-E",
               "result": echoed_case("CASE-E"), "reason": null, "warning": null}),
    ));
    let polled = f.handle(poll()).await.response.json_body();
    assert_eq!((&polled["caseId"], &polled["result"]), (&json!("CASE-E"), &kept), "{polled}");
    assert_nothing_echoed(&polled.to_string());
}

#[tokio::test]
async fn answers_are_counted_and_reported_signed_after_the_interval() {
    let (kv, clock, http) = (SharedKv::default(), TestClock::at(1_000_000), Scripted::default());
    let f = facade(&kv, &http, &clock, REPORTING);
    // Live, then cache for the same number; the CRM refuses the third: default.
    http.push(ok(200, json!({"customerId": "C-1", "tier": "gold"})));
    assert_eq!(source(&f, "+442071234567").await, "live");
    assert_eq!(source(&f, "+442071234567").await, "cache");
    assert_eq!(source(&f, "+442071234999").await, "default");
    let refused = f.handle(Request::new("POST", "/v1/customer-lookup").body("{}")).await;
    assert_eq!(refused.response.status, 401);
    let counts = f.stats();
    assert_eq!((counts.lookups.live, counts.lookups.cache, counts.lookups.default), (1, 1, 1));
    assert_eq!((counts.refusals, counts.latency.count()), (1, 3));
    assert!(!f.stats_due(), "not before the interval");
    let asked = http.calls();

    clock.advance(1_000);
    assert!(f.stats_due());
    http.push(Err(TransportError::Timeout));
    f.report_stats().await;
    let first = http.asked.borrow().last().cloned().unwrap();
    assert_eq!((first.method.as_str(), first.url.as_str()), ("POST", "http://origin.invalid/v1/internal/edge-stats"));
    let body = first.body.clone().unwrap();
    let header = |name: &str| first.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
    let ts: u64 = header("x-failsoft-timestamp").unwrap().parse().unwrap();
    let nonce = header("x-failsoft-nonce").unwrap();
    assert_eq!(nonce.len(), 32);
    let report_signed = Signed::new("POST", "/v1/internal/edge-stats", &body);
    assert_eq!(
        header("x-failsoft-signature").unwrap(),
        signature::sign(INTERNAL.as_bytes(), &report_signed, ts, &nonce)
    );
    let report: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((report["seq"].as_u64(), report["counts"]["lookups"]["cache"].as_u64()), (Some(0), Some(1)));
    assert!(f.stats().is_empty(), "the counts left in the report");

    // The timeout is retried with the same bytes after the interval.
    clock.advance(1_000);
    http.push(ok(202, json!({"accepted": true})));
    f.report_stats().await;
    assert_eq!(http.asked.borrow().last().unwrap().body.as_ref(), Some(&body), "resent unchanged");
    assert_eq!(http.calls(), asked + 2);
    assert!(!f.stats_due(), "delivered: nothing more to send");
}

#[tokio::test]
async fn a_due_report_rides_on_the_next_response_and_a_refused_one_is_dropped() {
    let (kv, clock, http) = (SharedKv::default(), TestClock::at(1_000_000), Scripted::default());
    let f = facade(&kv, &http, &clock, REPORTING);
    let first = f.handle(Request::new("POST", "/v1/customer-lookup").body("{}")).await;
    assert!(!f.has_work_after(&first), "a refusal leaves nothing to do before the interval");
    clock.advance(1_000);
    // Any response may carry the due report, a health check too.
    let health = f.handle(Request::new("GET", "/healthz")).await;
    assert!(f.has_work_after(&health));

    // 400 and 413 cannot get better by resending the same bytes: dropped.
    http.push(ok(413, json!({"error": {"code": "PAYLOAD_TOO_LARGE"}})));
    f.report_stats().await;
    let calls = http.calls();
    assert!(!f.stats_due(), "a refused report is not resent");
    clock.advance(1_000);
    f.report_stats().await;
    assert_eq!(http.calls(), calls, "nothing sent again");
    let next = f.handle(Request::new("GET", "/healthz")).await;
    assert!(!f.has_work_after(&next));
}

#[tokio::test]
async fn without_an_origin_the_counters_only_count() {
    let (kv, clock, http) = (SharedKv::default(), TestClock::at(1_000_000), Scripted::default());
    let f = facade(&kv, &http, &clock, &[]);
    assert_eq!(source(&f, "+442071234567").await, "default");
    clock.advance(60_000);
    assert!(!f.stats_due());
    f.report_stats().await;
    assert_eq!(http.calls(), 1, "only the CRM was called");
    assert_eq!(f.stats().lookups.default, 1);
}

/// A queue that takes `ms` of the test clock per send, and takes the
/// message or not.
struct SlowQueue {
    clock: TestClock,
    ms: u64,
    take: bool,
}
impl Forwarder for SlowQueue {
    async fn forward(&self, _: &QueueMessage, deadline_ms: u64) -> Result<(), PortError> {
        self.clock.advance(self.ms.min(deadline_ms));
        if self.take && self.ms < deadline_ms { Ok(()) } else { Err(PortError("the queue timed out".into())) }
    }
}

fn with_queue(crm: &Scripted, clock: &TestClock, queue: SlowQueue) -> Facade<SharedKv, Scripted, SlowQueue, TestClock> {
    let pairs = [
        ("FAILSOFT_CRM_URL", "http://crm.invalid"),
        ("FAILSOFT_AUTH_TOKEN", TOKEN),
        ("FAILSOFT_CACHE_KEY_SECRET", CACHE_SECRET),
        ("FAILSOFT_WEBHOOK_SECRET", "webhook-secret-for-tests-0123"),
        ("FAILSOFT_DEADLINE_MARGIN_MS", "1000"),
    ];
    let config = EdgeConfig::from_lookup(|n| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string())).unwrap();
    Facade::new(config, SharedKv::default(), crm.clone(), queue, clock.clone())
}

fn create_case() -> Request {
    Request::new("POST", "/v1/cases")
        .header("authorization", "Bearer facade-test-token-0123")
        .body(json!({"ani": "+442071234567", "subject": "slow queue"}).to_string())
}

#[tokio::test]
async fn a_queued_write_says_what_its_send_took_and_a_send_past_its_share_is_counted_slow() {
    let (crm, clock) = (Scripted::default(), TestClock::at(1_000_000));
    // The CRM refuses connections: each write goes to the queue.
    let fast = with_queue(&crm, &clock, SlowQueue { clock: clock.clone(), ms: 40, take: true });
    let handled = fast.handle(create_case()).await;
    assert_eq!(handled.response.json_body()["status"], "PENDING");
    let timing = handled.response.headers.iter().find(|(n, _)| *n == "server-timing").map(|(_, v)| v.as_str());
    assert_eq!(timing, Some("queue;dur=40"));
    let counts = fast.stats();
    assert_eq!((counts.queue_sends.count(), counts.queue_sends.sum_ms, counts.slow_queue_sends), (1, 40, 0));

    let slow = with_queue(&crm, &clock, SlowQueue { clock: clock.clone(), ms: 5_000, take: true });
    let handled = slow.handle(create_case()).await;
    assert_eq!(handled.response.json_body()["status"], "NOT_ACCEPTED");
    let timing = handled.response.headers.iter().find(|(n, _)| *n == "server-timing").map(|(_, v)| v.as_str());
    assert_eq!(timing, Some("queue;dur=1000"), "the send had the deadline margin");
    let counts = slow.stats();
    assert_eq!((counts.slow_queue_sends, counts.forward_failures), (1, 1));

    // A queue that refuses at once is a failure, not a slow send.
    let down = with_queue(&crm, &clock, SlowQueue { clock: clock.clone(), ms: 3, take: false });
    assert_eq!(down.handle(create_case()).await.response.json_body()["status"], "NOT_ACCEPTED");
    let counts = down.stats();
    assert_eq!((counts.slow_queue_sends, counts.forward_failures), (0, 1));
}

/// A CRM that answers every lookup after `delay_ms` (real time), counting calls.
#[derive(Clone, Default)]
struct SlowCrm {
    calls: Rc<std::cell::Cell<usize>>,
    status: u16,
}
impl Downstream for SlowCrm {
    async fn send(&self, _: OutboundRequest, _: u64) -> Result<OutboundResponse, TransportError> {
        self.calls.set(self.calls.get() + 1);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        match self.status {
            200 => ok(200, json!({"customerId": "C-1", "tier": "gold", "vipFlag": false})),
            status => ok(status, json!({})),
        }
    }
}

/// 50 lookups of one cold number at once, on one facade; the sources they
/// were answered from, and the CRM's calls.
async fn fifty_at_once(crm: SlowCrm) -> (Vec<String>, usize) {
    let clock = TestClock::at(1_000_000);
    let pairs = [
        ("FAILSOFT_CRM_URL", "http://crm.invalid"),
        ("FAILSOFT_AUTH_TOKEN", TOKEN),
        ("FAILSOFT_CACHE_KEY_SECRET", CACHE_SECRET),
        ("FAILSOFT_WEBHOOK_SECRET", "webhook-secret-for-tests-0123"),
    ];
    let config = EdgeConfig::from_lookup(|n| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string())).unwrap();
    let facade = Rc::new(Facade::new(config, SharedKv::default(), crm.clone(), Arc::new(LocalQueue::new(100)), clock));
    let local = tokio::task::LocalSet::new();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let facade = Rc::clone(&facade);
            local.spawn_local(async move {
                let handled = facade.handle(lookup("+442071234567")).await;
                handled.response.json_body()["source"].as_str().unwrap_or("?").to_owned()
            })
        })
        .collect();
    local.await;
    let mut sources = Vec::new();
    for task in tasks {
        sources.push(task.await.expect("a lookup"));
    }
    (sources, crm.calls.get())
}

#[tokio::test]
async fn concurrent_misses_for_one_number_make_one_crm_call_and_share_its_answer() {
    let (sources, calls) = fifty_at_once(SlowCrm { status: 200, ..SlowCrm::default() }).await;
    assert_eq!(calls, 1, "one CRM call for 50 concurrent misses");
    assert!(sources.iter().all(|s| s == "live"), "each answered from the one call: {sources:?}");
}

#[tokio::test]
async fn a_shared_not_found_counts_and_a_failed_call_sends_every_follower_down_the_ladder() {
    let (sources, calls) = fifty_at_once(SlowCrm { status: 404, ..SlowCrm::default() }).await;
    assert_eq!(calls, 1);
    assert!(sources.iter().all(|s| s == "live"), "a not-found is an answer: {sources:?}");
    let (sources, calls) = fifty_at_once(SlowCrm { status: 503, ..SlowCrm::default() }).await;
    assert_eq!(calls, 1, "followers do not call a CRM that just failed");
    assert!(sources.iter().all(|s| s == "default"), "{sources:?}");
}

/// A KV store whose reads answer and whose writes never do.
#[derive(Clone, Default)]
struct HangingWrites(SharedKv);
impl Kv for HangingWrites {
    async fn get(&self, key: &str) -> Result<Option<String>, PortError> {
        self.0.get(key).await
    }
    async fn put(&self, _: &str, _: &str, _: u64) -> Result<(), PortError> {
        std::future::pending().await
    }
    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.0.delete(key).await
    }
}

#[tokio::test]
async fn a_kv_write_that_hangs_does_not_hold_the_answer() {
    let clock = TestClock::at(1_000_000);
    let pairs = [
        ("FAILSOFT_CRM_URL", "http://crm.invalid"),
        ("FAILSOFT_AUTH_TOKEN", TOKEN),
        ("FAILSOFT_CACHE_KEY_SECRET", CACHE_SECRET),
        ("FAILSOFT_WEBHOOK_SECRET", "webhook-secret-for-tests-0123"),
        ("FAILSOFT_DEADLINE_MARGIN_MS", "400"),
    ];
    let config = EdgeConfig::from_lookup(|n| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string())).unwrap();
    let crm = SlowCrm { status: 200, ..SlowCrm::default() };
    let facade = Facade::new(config, HangingWrites::default(), crm.clone(), Arc::new(LocalQueue::new(100)), clock);
    let started = std::time::Instant::now();
    let handled = tokio::time::timeout(std::time::Duration::from_secs(5), facade.handle(lookup("+442071234567")))
        .await
        .expect("the lookup is answered although its cache write hangs");
    let body = handled.response.json_body();
    assert_eq!((body["source"].as_str(), body["customerId"].as_str()), (Some("live"), Some("C-1")));
    // The CRM's 50 ms, then a quarter of the 400 ms margin for the write.
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_millis(150), "the write was given its share: {took:?}");
    let write = Request::new("POST", "/v1/cases")
        .header("authorization", "Bearer facade-test-token-0123")
        .body(json!({"ani": "+442071234567", "subject": "hanging KV"}).to_string());
    let handled = tokio::time::timeout(std::time::Duration::from_secs(5), facade.handle(write))
        .await
        .expect("the write is answered although its result's write hangs");
    assert!(handled.response.status < 500, "{}", handled.response.json_body());
}
