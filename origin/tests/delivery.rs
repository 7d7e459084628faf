//! One delivery over fake ports: the decisions `Delivery` sequences (the
//! write-once protocol, the retry decision, the breaker and its gate, the
//! settling delay) with no network, no moto and a clock moved by hand.
//! (The same paths over real processes and moto are in tests/tests/origin_*.)

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use failsoft_origin::config::WorkerConfig;
use failsoft_origin::deliver::crm::Reply;
use failsoft_origin::deliver::delivery::{Delivery, Gate, Outcome};
use failsoft_origin::deliver::ports::{BoxFuture, Clock, CrmCalls, Records};
use failsoft_origin::queue::received::Received;
use failsoft_origin::store::results::{Claim, RefreshRecord, StoreError};
use failsoft_shared::cache::CacheEntry;
use failsoft_shared::error_class::{ErrorClass, Verdict};
use serde_json::{Value, json};

/// 2026-12-01T00:00:00Z.
const T0: u64 = 1_796_083_200_000;
/// The worker's breaker cool-down (`FAILSOFT_WORKER_PROBE_EVERY_MS`).
const COOL_DOWN_MS: u64 = 10_000;

#[derive(Clone)]
struct HandClock(Arc<AtomicU64>);

impl HandClock {
    fn at(ms: u64) -> Self {
        Self(Arc::new(AtomicU64::new(ms)))
    }
    fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for HandClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
    /// Full jitter of 0: every backoff is its lower bound.
    fn random_u64(&self) -> u64 {
        0
    }
}

/// What the fake CRM was asked.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Lookup(String),
    FindCases(String),
    Create(String),
    Probe,
}

/// A CRM that answers from a script (a refused connection once it runs
/// out) and records every call.
#[derive(Clone, Default)]
struct FakeCrm {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl FakeCrm {
    fn then(&self, reply: Reply) -> &Self {
        self.replies.lock().unwrap().push_back(reply);
        self
    }
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
    fn answer(&self, call: Call) -> BoxFuture<'_, Reply> {
        self.calls.lock().unwrap().push(call);
        let reply = self.replies.lock().unwrap().pop_front().unwrap_or_else(refused);
        Box::pin(async move { reply })
    }
}

impl CrmCalls for FakeCrm {
    fn lookup<'a>(&'a self, phone: &'a str, _: &'a str, _: Duration) -> BoxFuture<'a, Reply> {
        self.answer(Call::Lookup(phone.to_owned()))
    }
    fn find_cases<'a>(&'a self, external_ref: &'a str, _: Duration) -> BoxFuture<'a, Reply> {
        self.answer(Call::FindCases(external_ref.to_owned()))
    }
    fn create_case<'a>(&'a self, correlation_id: &'a str, _: &'a Value, _: Duration) -> BoxFuture<'a, Reply> {
        self.answer(Call::Create(correlation_id.to_owned()))
    }
    fn probe(&self, _: Duration) -> BoxFuture<'_, Reply> {
        self.answer(Call::Probe)
    }
}

fn status(code: u16, verdict: Verdict, body: Value) -> Reply {
    Reply { verdict, status: Some(code), body: body.to_string().into_bytes(), maybe_reached: true, quota: None }
}

fn created(case_id: &str) -> Reply {
    status(201, Verdict::Success, json!({"caseId": case_id, "status": "open"}))
}

fn no_cases() -> Reply {
    status(200, Verdict::Success, json!([]))
}

fn unavailable() -> Reply {
    status(503, Verdict::Failed(ErrorClass::Transient), json!({"error": "down"}))
}

fn refused() -> Reply {
    Reply {
        verdict: Verdict::Failed(ErrorClass::Transient),
        status: None,
        body: Vec::new(),
        maybe_reached: false,
        quota: None,
    }
}

fn timed_out() -> Reply {
    Reply {
        verdict: Verdict::Failed(ErrorClass::Transient),
        status: None,
        body: Vec::new(),
        maybe_reached: true,
        quota: None,
    }
}

/// One results item as the fake table holds it.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    InFlight { owner: String, lease_until_ms: u64 },
    Complete { case_id: Option<String> },
}

/// The results table's write-once semantics, in memory.
#[derive(Clone, Default)]
struct FakeRecords {
    items: Arc<Mutex<HashMap<String, Item>>>,
    /// The result each `COMPLETE` was recorded with.
    results: Arc<Mutex<HashMap<String, Value>>>,
    refreshes: Arc<Mutex<Vec<(String, CacheEntry)>>>,
    releases: Arc<Mutex<u32>>,
}

impl FakeRecords {
    fn item(&self, id: &str) -> Option<Item> {
        self.items.lock().unwrap().get(id).cloned()
    }
    fn result(&self, id: &str) -> Option<Value> {
        self.results.lock().unwrap().get(id).cloned()
    }
}

impl Records for FakeRecords {
    fn claim<'a>(
        &'a self,
        id: &'a str,
        _: &'a str,
        owner: &'a str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        let mut items = self.items.lock().unwrap();
        let claim = match items.get(id) {
            Some(Item::Complete { .. }) => Claim::Complete,
            Some(Item::InFlight { lease_until_ms: until, .. }) if *until > now_ms => {
                Claim::Busy { retry_in_ms: until - now_ms }
            }
            _ => {
                items.insert(id.to_owned(), Item::InFlight { owner: owner.to_owned(), lease_until_ms });
                Claim::Claimed
            }
        };
        Box::pin(async move { Ok(claim) })
    }
    fn release<'a>(&'a self, id: &'a str, owner: &'a str, _: u64) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut items = self.items.lock().unwrap();
        if matches!(items.get(id), Some(Item::InFlight { owner: o, .. }) if o == owner) {
            items.remove(id);
            *self.releases.lock().unwrap() += 1;
        }
        Box::pin(async { Ok(()) })
    }
    fn complete<'a>(
        &'a self,
        id: &'a str,
        _: &'a str,
        result: &'a Value,
        case_id: Option<&'a str>,
        _: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.results.lock().unwrap().insert(id.to_owned(), result.clone());
        self.items.lock().unwrap().insert(id.to_owned(), Item::Complete { case_id: case_id.map(str::to_owned) });
        Box::pin(async { Ok(()) })
    }
    fn record_refresh<'a>(
        &'a self,
        refresh: &'a RefreshRecord<'a>,
        entry: &'a CacheEntry,
        _: u64,
        _: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.refreshes.lock().unwrap().push((refresh.entity_key.to_owned(), entry.clone()));
        Box::pin(async { Ok(()) })
    }
}

struct Rig {
    delivery: Delivery,
    crm: FakeCrm,
    records: FakeRecords,
    clock: HandClock,
}

fn rig(extra: &[(&str, &str)]) -> Rig {
    let mut settings: HashMap<String, String> = [
        ("FAILSOFT_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/failsoft.fifo"),
        ("FAILSOFT_DLQ_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/failsoft-dlq.fifo"),
        ("FAILSOFT_CRM_URL", "http://crm.invalid"),
        ("FAILSOFT_INTERNAL_SECRET", "internal-secret-for-tests-0123"),
        ("FAILSOFT_BREAKER_WINDOW", "4"),
        ("FAILSOFT_BREAKER_FAILURE_THRESHOLD", "2"),
        ("FAILSOFT_WORKER_PROBE_EVERY_MS", "10000"),
        ("FAILSOFT_WRITE_SETTLE_MS", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    settings.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let config = WorkerConfig::from_lookup(|name| settings.get(name).cloned()).expect("valid settings");
    let (crm, records, clock) = (FakeCrm::default(), FakeRecords::default(), HandClock::at(T0));
    let delivery =
        Delivery::new(config, crm.clone(), records.clone(), None, "worker-test".to_owned()).with_clock(clock.clone());
    Rig { delivery, crm, records, clock }
}

fn write_message(correlation_id: &str, submitted_at: u64) -> Received {
    let body = json!({
        "v": 1, "kind": "write", "correlationId": correlation_id, "entityKey": "e-1",
        "payload": {"operation": "create_case", "case": {"subject": "Callback"}},
        "submittedAt": submitted_at,
    });
    received(body.to_string(), submitted_at)
}

fn received(body: String, sent_ms: u64) -> Received {
    Received {
        message_id: format!("m-{sent_ms}"),
        receipt: "r".into(),
        body,
        group_id: "e-1".into(),
        receive_count: 1,
        first_received_ms: None,
        sent_ms: Some(sent_ms),
    }
}

/// A CRM that declares the optional `GET /cases?externalRef=`.
const CAN_FIND_CASES: (&str, &str) = ("FAILSOFT_CRM_CAN_FIND_CASES", "true");

#[tokio::test]
async fn with_the_two_required_calls_a_write_is_created_with_no_search() {
    let r = rig(&[]);
    r.crm.then(created("CASE-0"));
    assert_eq!(r.delivery.deliver(&write_message("c-0", T0)).await, Outcome::Done);
    assert_eq!(r.crm.calls(), [Call::Create("c-0".into())], "no call outside the two the contract requires");
    assert_eq!(r.records.item("c-0"), Some(Item::Complete { case_id: Some("CASE-0".into()) }));
}

#[tokio::test]
async fn a_declared_search_the_crm_lacks_is_a_configuration_fault_not_the_writes_failure() {
    // 400: a search the CRM refuses (Salesforce's INVALID_FIELD for a
    // reference field that does not exist) is the mapping's fault too.
    for missing in [404, 405, 501, 400] {
        let r = rig(&[CAN_FIND_CASES]);
        let id = format!("c-missing-{missing}");
        r.crm
            .then(status(missing, Verdict::Failed(ErrorClass::Permanent { status: missing }), json!({})))
            .then(created("CASE-M"));
        assert_eq!(r.delivery.deliver(&write_message(&id, T0)).await, Outcome::Done, "{missing}");
        assert_eq!(r.crm.calls(), [Call::FindCases(id.clone()), Call::Create(id.clone())], "{missing}");
        assert_eq!(r.records.item(&id), Some(Item::Complete { case_id: Some("CASE-M".into()) }));
    }
    let health = failsoft_origin::telemetry::health(None);
    assert_eq!(health["level"], "critical", "{health}");
    assert_eq!(health["configuration"]["faults"][0]["what"], "crm.find_cases", "{health}");
}

#[tokio::test]
async fn a_probe_answered_404_not_found_closes_the_breaker() {
    let r = rig(&[]);
    for id in ["c-p1", "c-p2"] {
        r.crm.then(unavailable());
        r.delivery.deliver(&write_message(id, T0)).await;
    }
    r.clock.advance(COOL_DOWN_MS);
    assert_eq!(r.delivery.gate(), Gate::Probe);
    r.crm.then(status(404, Verdict::NotFound, json!({"error": "not_found"})));
    r.delivery.probe().await;
    assert_eq!(r.delivery.gate(), Gate::Receive, "the CRM answered: it is back");
}

#[tokio::test]
async fn a_write_is_looked_up_created_once_and_recorded_and_a_redelivery_calls_nothing() {
    let r = rig(&[CAN_FIND_CASES]);
    r.crm.then(no_cases()).then(created("CASE-1"));
    let message = write_message("c-1", T0);
    assert_eq!(r.delivery.deliver(&message).await, Outcome::Done);
    assert_eq!(r.crm.calls(), [Call::FindCases("c-1".into()), Call::Create("c-1".into())]);
    assert_eq!(r.records.item("c-1"), Some(Item::Complete { case_id: Some("CASE-1".into()) }));

    assert_eq!(r.delivery.deliver(&message).await, Outcome::Done, "SQS handed it out again");
    assert_eq!(r.crm.calls().len(), 2, "the claim found it complete: no second create");
}

#[tokio::test]
async fn a_case_found_by_its_reference_is_recorded_without_a_create() {
    let r = rig(&[CAN_FIND_CASES]);
    r.crm.then(status(200, Verdict::Success, json!([{"caseId": "CASE-7", "externalRef": "c-7"}])));
    assert_eq!(r.delivery.deliver(&write_message("c-7", T0)).await, Outcome::Done);
    assert_eq!(r.crm.calls(), [Call::FindCases("c-7".into())]);
    assert_eq!(r.records.item("c-7"), Some(Item::Complete { case_id: Some("CASE-7".into()) }));
}

/// A CRM's case as many answer it: the request echoed back beside the id.
fn echoed(case_id: &str, external_ref: &str) -> Value {
    json!({"caseId": case_id, "status": "open", "createdAt": "2026-12-01T00:00:00Z",
           "phone": "+13175550123", "subject": "Callback", "description": "call (317) 555-0123",
           "externalRef": external_ref, "idempotencyKey": external_ref})
}

#[tokio::test]
async fn only_the_case_s_id_status_and_creation_time_are_recorded_created_or_found() {
    let r = rig(&[CAN_FIND_CASES]);
    r.crm.then(no_cases()).then(status(201, Verdict::Success, echoed("CASE-E", "c-e")));
    r.crm.then(status(200, Verdict::Success, json!([echoed("CASE-F", "c-f")])));
    assert_eq!(r.delivery.deliver(&write_message("c-e", T0)).await, Outcome::Done);
    assert_eq!(r.delivery.deliver(&write_message("c-f", T0)).await, Outcome::Done);
    for (id, case_id) in [("c-e", "CASE-E"), ("c-f", "CASE-F")] {
        let result = r.records.result(id).expect("recorded");
        let summary = json!({"caseId": case_id, "status": "open", "createdAt": "2026-12-01T00:00:00Z"});
        assert_eq!(result, summary, "{id}");
        assert_eq!(r.records.item(id), Some(Item::Complete { case_id: Some(case_id.into()) }));
    }
}

#[tokio::test]
async fn a_refusal_gives_the_claim_back_but_a_timeout_keeps_it_for_its_lease() {
    let r = rig(&[]);
    r.crm.then(unavailable());
    let outcome = r.delivery.deliver(&write_message("c-2", T0)).await;
    assert!(
        matches!(outcome, Outcome::Retry { attempt: 0, class: ErrorClass::Transient, status: Some(503), .. }),
        "{outcome:?}"
    );
    assert_eq!(r.records.item("c-2"), None, "the CRM answered: nothing was created, the claim goes back");

    r.crm.then(timed_out());
    let outcome = r.delivery.deliver(&write_message("c-3", T0)).await;
    assert!(matches!(outcome, Outcome::Retry { status: None, .. }), "{outcome:?}");
    assert!(
        matches!(r.records.item("c-3"), Some(Item::InFlight { .. })),
        "a timed-out create may still land: the claim runs its lease out"
    );
    assert_eq!(*r.records.releases.lock().unwrap(), 1);
}

#[tokio::test]
async fn the_backoff_doubles_on_failed_attempts() {
    let r = rig(&[("FAILSOFT_BREAKER_FAILURE_THRESHOLD", "4")]);
    let message = write_message("c-4", T0);
    let mut attempts = Vec::new();
    for _ in 0..3 {
        r.crm.then(unavailable());
        match r.delivery.deliver(&message).await {
            Outcome::Retry { attempt, .. } => attempts.push(attempt),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(attempts, [0, 1, 2], "each failure counts once, whatever SQS's receive count says");
}

#[tokio::test]
async fn a_permanent_refusal_is_dead_lettered_with_its_status() {
    let r = rig(&[]);
    r.crm.then(status(422, Verdict::Failed(ErrorClass::Permanent { status: 422 }), json!({"error": "subject"})));
    match r.delivery.deliver(&write_message("c-5", T0)).await {
        Outcome::DeadLetter(dead) => {
            assert_eq!(dead.reason, "CRM_REJECTED_422");
            assert_eq!(dead.last_status, Some(422));
            assert_eq!(dead.correlation_id.as_deref(), Some("c-5"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_write_past_its_budget_is_dead_lettered_after_its_last_attempt() {
    let r = rig(&[]);
    let day_and_an_hour = 25 * 3_600_000;
    r.crm.then(unavailable());
    match r.delivery.deliver(&write_message("c-6", T0 - day_and_an_hour)).await {
        Outcome::DeadLetter(dead) => assert_eq!(dead.reason, "RETRY_BUDGET_EXHAUSTED"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_write_younger_than_the_settle_time_waits_without_a_call() {
    let r = rig(&[("FAILSOFT_WRITE_SETTLE_MS", "3000")]);
    let outcome = r.delivery.deliver(&write_message("c-8", T0 - 1_000)).await;
    assert_eq!(outcome, Outcome::Defer { delay_ms: 2_000, why: "settling" });
    assert!(r.crm.calls().is_empty());
}

#[tokio::test]
async fn the_breaker_opens_defers_without_calls_and_a_probe_after_the_cool_down_closes_it() {
    let r = rig(&[]);
    assert_eq!(r.delivery.gate(), Gate::Receive);
    for id in ["c-a", "c-b"] {
        r.crm.then(unavailable());
        assert!(matches!(r.delivery.deliver(&write_message(id, T0)).await, Outcome::Retry { .. }));
    }
    assert_eq!(r.delivery.gate(), Gate::Wait(Duration::from_millis(COOL_DOWN_MS)), "two failures of four open it");

    let calls = r.crm.calls().len();
    let outcome = r.delivery.deliver(&write_message("c-c", T0)).await;
    assert_eq!(outcome, Outcome::Defer { delay_ms: COOL_DOWN_MS, why: "breaker_open" });
    assert_eq!(r.crm.calls().len(), calls, "an open breaker calls nothing");

    r.clock.advance(4_000);
    assert_eq!(r.delivery.gate(), Gate::Wait(Duration::from_millis(COOL_DOWN_MS - 4_000)));
    r.clock.advance(COOL_DOWN_MS - 4_000);
    assert_eq!(r.delivery.gate(), Gate::Probe, "the cool-down is over");
    r.crm.then(status(200, Verdict::Success, json!([])));
    r.delivery.probe().await;
    assert_eq!(r.crm.calls().last(), Some(&Call::Probe));
    assert_eq!(r.delivery.gate(), Gate::Receive, "a healthy probe closes it");
}

#[tokio::test]
async fn a_refresh_keeps_the_record_stamped_by_the_delivery_clock() {
    let r = rig(&[]);
    r.crm.then(status(200, Verdict::Success, json!({"customerId": "C-1", "tier": "vip"})));
    let body = json!({
        "v": 1, "kind": "refresh", "correlationId": "l-1", "entityKey": "k-1",
        "payload": {"phone": "+15550100"}, "submittedAt": T0,
    });
    r.clock.advance(1_234);
    assert_eq!(r.delivery.deliver(&received(body.to_string(), T0)).await, Outcome::Done);
    assert_eq!(r.crm.calls(), [Call::Lookup("+15550100".into())]);
    let refreshes = r.records.refreshes.lock().unwrap();
    assert_eq!(refreshes.len(), 1);
    assert_eq!(refreshes[0].0, "k-1");
    assert_eq!(refreshes[0].1.fetched_at_ms, T0 + 1_234);
    assert_eq!(refreshes[0].1.record.customer_id, "C-1");
}

#[tokio::test]
async fn a_message_that_is_no_envelope_is_dead_lettered_as_invalid_without_a_call() {
    let r = rig(&[]);
    match r.delivery.deliver(&received("not json".into(), T0)).await {
        Outcome::DeadLetter(dead) => {
            assert_eq!(dead.reason, "MALFORMED_ENVELOPE");
            assert_eq!(dead.error_class, "invalid");
        }
        other => panic!("{other:?}"),
    }
    assert!(r.crm.calls().is_empty());
}
