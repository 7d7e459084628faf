//! End-to-end cases written once and run against every host (native, the
//! Worker under `wrangler dev`, the Spin component under `wasmtime serve`):
//! each takes a [`Target`] (the facade's base URL and bearer token, the CRM
//! simulator's admin API, and the SQS queue in moto the facade forwards to)
//! and the settings it needs.
//!
//! Every lookup a case makes is recorded; after the case, [`Target::
//! assert_degraded_answers_forwarded`] reads the queue and finds, for every
//! degraded answer, the refresh envelope with the right group, dedup id and
//! body.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::signing::{self, Capture};
use failsoft_shared::keys::{entity_key, normalize_phone};

use crate::harness::CACHE_KEY_SECRET;
use crate::moto::{Moto, Received};
use crate::{WEBHOOK_SECRET, assert_error, wait_until};
use serde_json::{Value, json};

/// Which edge host a [`Target`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    Native,
    /// The Worker under `wrangler dev` (workerd and wrangler's local proxy).
    Worker,
    /// The Spin component under `wasmtime serve`.
    Spin,
}

/// A running facade in front of a CRM simulator.
#[derive(Clone)]
pub struct Target {
    /// The host it runs on.
    pub host: Host,
    /// The facade's base URL, e.g. `http://127.0.0.1:8787`.
    pub edge: String,
    /// The bearer token the facade accepts.
    pub token: String,
    /// The simulator's admin base URL.
    pub admin: String,
    pub http: reqwest::Client,
    /// The queue the facade forwards to, when the stack has one.
    pub queue: Option<Queue>,
    /// Every lookup made through [`Target::lookup`]: the `ani` and the answer.
    pub seen: Arc<Mutex<Vec<(String, Value)>>>,
}

/// An SQS FIFO queue in moto, with the settings that point a facade at it.
#[derive(Clone)]
pub struct Queue {
    pub moto: Arc<Moto>,
    pub url: String,
}

impl Queue {
    /// Starts moto and creates a FIFO queue.
    pub async fn start() -> Self {
        let moto = Moto::start().await;
        let url = moto.fifo_queue("failsoft-test").await;
        Self { moto: Arc::new(moto), url }
    }

    /// The facade settings for this queue (made-up credentials: moto takes any).
    pub fn settings(&self) -> Vec<(String, String)> {
        [
            ("FAILSOFT_QUEUE_URL", self.url.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test-only-key-id"),
            ("AWS_SECRET_ACCESS_KEY", "test-only-secret-access-key"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// A case: the settings it needs on top of the suite's, and its body.
pub struct Case {
    pub name: &'static str,
    pub settings: &'static [(&'static str, &'static str)],
    pub run: for<'a> fn(&'a Target) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
}

impl Case {
    /// The freshness window the case runs with (the refresh dedup bucket).
    pub fn freshness_secs(&self) -> u64 {
        self.settings
            .iter()
            .find(|(k, _)| *k == "FAILSOFT_FRESHNESS_SECS")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(300)
    }

    /// Runs the case on `target`, then checks the queue behind it.
    pub async fn run_on(&self, target: &Target) {
        (self.run)(target).await;
        target.assert_degraded_answers_forwarded(self.freshness_secs()).await;
    }
}

/// Every case of this table.
pub const ALL: &[Case] = &[
    HEALTHZ,
    BAD_INPUT,
    OVERSIZED_BODIES,
    FRESH_HIT,
    MISS_IS_LIVE_AND_STORED,
    CRM_DOWN_STALE,
    CRM_DOWN_DEFAULT,
    CRM_HUNG_WITHIN_DEADLINE,
    BREAKER_OPEN,
    WEBHOOK_INVALIDATES,
    SYNC_BULK_PUSH,
    SIGNED_REQUESTS_ARE_NOT_REPLAYED,
    BAD_INPUT_CORPUS,
];

/// Fictional numbers (Ofcom's drama range), E.164 as the simulator stores them.
const VIP: &str = "+442079460001";
const GOLD: &str = "+442079460002";
const NEVER_SEEN: &str = "+442079460999";

/// The CRM deadline the timing cases configure, and what a host may add.
pub const DEADLINE: Duration = Duration::from_millis(1_000);
pub const DEADLINE_SLACK: Duration = Duration::from_millis(250);
const ONE_SECOND_FRESHNESS: &[(&str, &str)] =
    &[("FAILSOFT_FRESHNESS_SECS", "1"), ("FAILSOFT_NOT_FOUND_FRESHNESS_SECS", "1")];

impl Target {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.edge)
    }

    /// Sends a request; the status and the JSON body (`Null` when not JSON).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("the facade answers");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("the body arrives");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// A POST signed with the internal secret, as the origin signs its calls.
    pub fn signed_post(&self, path: &str, body: &Value, secret: &str) -> reqwest::RequestBuilder {
        self.signed("POST", path, body, secret, signing::now_secs())
    }

    /// A `method` request signed at `ts` with a fresh nonce, as the origin
    /// signs its calls.
    pub fn signed(&self, method: &str, path: &str, body: &Value, secret: &str, ts: u64) -> reqwest::RequestBuilder {
        signing::request(&self.http, method, &self.url(path), body.to_string().into_bytes(), secret, ts)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.http.post(self.url(path)).bearer_auth(&self.token).json(body)).await
    }

    pub async fn lookup(&self, ani: &str) -> (u16, Value) {
        let (status, body) = self.post("/v1/customer-lookup", &json!({"ani": ani})).await;
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).push((ani.to_owned(), body.clone()));
        (status, body)
    }

    /// For every degraded answer this target gave, the queue holds a refresh
    /// envelope: group = the customer's entity key, dedup id = entity key and
    /// freshness bucket, body = the versioned envelope of one of those
    /// answers. Refreshes are sent after the response, so this waits (bounded).
    pub async fn assert_degraded_answers_forwarded(&self, freshness_secs: u64) {
        let Some(queue) = &self.queue else { return };
        let degraded: Vec<(String, Value)> = {
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.iter().filter(|(_, a)| a["source"] == "stale_cache" || a["source"] == "default").cloned().collect()
        };
        if degraded.is_empty() {
            return;
        }
        let mut received: Vec<Received> = Vec::new();
        let expected: Vec<String> = {
            let mut e: Vec<String> = degraded.iter().map(|(ani, _)| entity_of(ani)).collect();
            e.sort();
            e.dedup();
            e
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !expected.iter().all(|e| received.iter().any(|m| &m.group_id == e)) {
            assert!(Instant::now() < deadline, "no refresh reached SQS within 15 s for some of {degraded:?}");
            received.extend(queue.moto.receive_all(&queue.url, 50).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (ani, answer) in &degraded {
            let entity = entity_of(ani);
            let refreshes: Vec<&Received> = received.iter().filter(|m| m.group_id == entity).collect();
            let ours = refreshes
                .iter()
                .map(|m| (m, serde_json::from_str::<Value>(&m.body).expect("the body is JSON")))
                .find(|(_, body)| body["kind"] == "refresh");
            let (message, body) = ours.unwrap_or_else(|| panic!("no refresh envelope for {answer}"));
            assert_eq!(body["v"], 1, "{body}");
            assert_eq!(body["entityKey"], entity.as_str(), "{body}");
            assert_eq!(body["payload"]["phone"], normalize_phone(ani).unwrap().as_str(), "{body}");
            let submitted = body["submittedAt"].as_u64().expect("submittedAt");
            let bucket = submitted / (freshness_secs * 1000);
            assert_eq!(message.dedup_id, format!("r-{entity}-{bucket}"), "{body}");
            // A degraded answer's refresh, or the refresh-ahead of a cache
            // answer late in its window: either way one of this number's.
            let forwarded_for = body["correlationId"].as_str().unwrap_or_default();
            let answered: Vec<String> = {
                let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                seen.iter()
                    .filter(|(a, _)| entity == entity_of(a))
                    .filter_map(|(_, ans)| ans["correlationId"].as_str().map(str::to_owned))
                    .collect()
            };
            assert!(
                answered.iter().any(|id| id == forwarded_for),
                "the refresh {body} belongs to none of {answered:?}"
            );
        }
        // Deduplication: one refresh per customer per freshness window.
        for e in &expected {
            let per_bucket = received.iter().filter(|m| &m.group_id == e).count();
            let buckets: std::collections::BTreeSet<&str> =
                received.iter().filter(|m| &m.group_id == e).map(|m| m.dedup_id.as_str()).collect();
            assert_eq!(per_bucket, buckets.len(), "more than one refresh per window for one customer");
        }
    }

    pub async fn timed_lookup(&self, ani: &str) -> (u16, Value, Duration) {
        let started = Instant::now();
        let (status, body) = self.lookup(ani).await;
        (status, body, started.elapsed())
    }

    async fn admin(&self, request: reqwest::RequestBuilder, what: &str) -> Value {
        let response = request.send().await.unwrap_or_else(|e| panic!("simulator {what}: {e}"));
        assert_eq!(response.status().as_u16(), 200, "simulator {what}");
        response.json().await.unwrap_or(Value::Null)
    }

    /// Sets the simulator's mode by name (`up`, `down`, `hang`, …).
    /// Sets the simulator's mode with its parameters (`{"mode":"slow","latencyMs":300}`).
    pub async fn admin_mode(&self, mode: Value) -> Value {
        let url = format!("{}/admin/mode", self.admin);
        self.admin(self.http.post(url).json(&mode), "/admin/mode").await
    }

    pub async fn crm(&self, mode: &str) {
        let url = format!("{}/admin/mode", self.admin);
        self.admin(self.http.post(url).json(&json!({"mode": mode})), "/admin/mode").await;
    }

    pub async fn load_customers(&self, customers: Value) {
        let url = format!("{}/admin/customers", self.admin);
        self.admin(self.http.post(url).json(&customers), "/admin/customers").await;
    }

    pub async fn sim_count(&self, counter: &str) -> u64 {
        let stats = self.admin(self.http.get(format!("{}/admin/stats", self.admin)), "/admin/stats").await;
        stats[counter].as_u64().unwrap_or_else(|| panic!("no counter {counter} in {stats}"))
    }

    /// Changes a tier in the simulator, which sends the signed webhook here.
    pub async fn change_tier(&self, phone: &str, tier: &str) -> Value {
        let body = json!({"phone": phone, "tier": tier,
            "webhook": {"url": self.url("/v1/webhooks/crm-update"), "secret": WEBHOOK_SECRET}});
        let url = format!("{}/admin/customers/tier", self.admin);
        self.admin(self.http.post(url).json(&body), "/admin/customers/tier").await
    }

    pub(crate) async fn with_customers(&self) {
        self.load_customers(json!([
            {"phone": VIP, "customerId": "C-1001", "tier": "vip", "vipFlag": true},
            {"phone": GOLD, "customerId": "C-1002", "tier": "gold"},
        ]))
        .await;
    }

    /// Looks `ani` up until it is no longer a cache answer, bounded.
    async fn first_answer_past_freshness(&self, ani: &str) -> (u16, Value, Duration) {
        wait_until("the cached record to go stale", Duration::from_secs(10), || async {
            let (status, body, took) = self.timed_lookup(ani).await;
            (body["source"] != "cache").then_some((status, body, took))
        })
        .await
    }
}

fn entity_of(ani: &str) -> String {
    entity_key(CACHE_KEY_SECRET.as_bytes(), &normalize_phone(ani).expect("a valid test number"))
}

fn assert_record(context: &str, body: &Value, source: &str, customer_id: &str, tier: &str) {
    assert_eq!(body["source"], source, "{context}: {body}");
    assert_eq!(body["found"], true, "{context}: {body}");
    assert_eq!(body["customerId"], customer_id, "{context}: {body}");
    assert_eq!(body["tier"], tier, "{context}: {body}");
}

fn assert_within_deadline(context: &str, took: Duration) {
    assert!(took >= DEADLINE, "{context}: answered in {took:?}, before the deadline: it did not wait");
    assert!(
        took < DEADLINE + DEADLINE_SLACK,
        "{context}: answered in {took:?}, past {DEADLINE:?} + {DEADLINE_SLACK:?}"
    );
}

pub const HEALTHZ: Case = Case { name: "healthz", settings: &[], run: |t| Box::pin(healthz(t)) };

async fn healthz(t: &Target) {
    let (status, body) = t.send(t.http.get(t.url("/healthz"))).await;
    assert_eq!((status, &body), (200, &json!({"status": "ok"})));
}

pub const BAD_INPUT: Case = Case { name: "bad_input", settings: &[], run: |t| Box::pin(bad_input(t)) };

async fn bad_input(t: &Target) {
    let valid = json!({"ani": VIP});
    let (status, body) = t.send(t.http.post(t.url("/v1/customer-lookup")).json(&valid)).await;
    assert_error("no credentials", status, &body, 401, "UNAUTHORIZED");
    let (status, body) =
        t.send(t.http.post(t.url("/v1/customer-lookup")).bearer_auth("test-only-wrong-token").json(&valid)).await;
    assert_error("wrong token", status, &body, 401, "UNAUTHORIZED");
    // Empty credentials: Spin hands unset variables as "" (spin.toml's
    // defaults), which once made an empty Basic pair and an empty token
    // that these matched.
    for (what, header) in
        [("empty Basic pair", "Basic Og=="), ("empty bearer token", "Bearer "), ("bare scheme", "Bearer")]
    {
        let request = t.http.post(t.url("/v1/customer-lookup")).header("authorization", header).json(&valid);
        let (status, body) = t.send(request).await;
        assert_error(what, status, &body, 401, "UNAUTHORIZED");
    }
    let (status, body) = t.post("/v1/customer-lookup", &json!({"correlationId": "no-ani"})).await;
    assert_error("no ani", status, &body, 400, "MISSING_ANI");
    let (status, body) = t.post("/v1/customer-lookup", &json!({"ani": "12"})).await;
    assert_error("short ani", status, &body, 400, "INVALID_ANI");
    let huge = json!({"ani": VIP, "padding": "x".repeat(17 * 1024)});
    let (status, body) = t.post("/v1/customer-lookup", &huge).await;
    assert_error("17 KiB body", status, &body, 413, "PAYLOAD_TOO_LARGE");
    let (status, body) = t.send(t.http.get(t.url("/v1/customer-lookup")).bearer_auth(&t.token)).await;
    assert_error("GET on a POST route", status, &body, 405, "METHOD_NOT_ALLOWED");
    let (status, body) = t.send(t.http.get(t.url("/nowhere"))).await;
    assert_error("unknown route", status, &body, 404, "NOT_FOUND");
    assert_eq!(t.sim_count("lookups").await, 0, "bad input never reaches the CRM");
}

pub const OVERSIZED_BODIES: Case =
    Case { name: "oversized_bodies", settings: &[], run: |t| Box::pin(oversized_bodies(t)) };

/// Every host reads bodies through the core's capped reader: a body whose
/// declared length is over 16 KiB, and a chunked body with no length that
/// passes 16 KiB, are both refused 413; a chunked body within the cap is
/// read whole. (That a declared length is refused before the body is read
/// is the core's unit test: `wrangler dev`'s local proxy waits for a
/// declared body before the Worker sees the request, so it cannot be
/// observed here on every host.)
async fn oversized_bodies(t: &Target) {
    let auth = format!("Bearer {}", t.token);
    let padded = json!({"ani": VIP, "padding": "x".repeat(17 * 1024)}).to_string();
    // The body within the cap goes first: under `wrangler dev`, a request
    // sent after a chunked body refused mid-stream was answered 503 by the
    // local proxy (not yet investigated; the refusals themselves are 413).
    t.with_customers().await;
    let small = json!({"ani": VIP, "padding": "x".repeat(4 * 1024)}).to_string();
    let (status, body) = raw_exchange("4 KiB chunked", &t.edge, &chunked_post(&auth, small.as_bytes())).await;
    assert_eq!(status, 200, "a chunked body within the cap is read whole: {status} {body}");
    assert_eq!((&body["source"], &body["tier"]), (&json!("live"), &json!("vip")), "{body}");

    let declared = format!(
        "POST /v1/customer-lookup HTTP/1.1\r\nhost: localhost\r\nauthorization: {auth}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{padded}",
        padded.len()
    );
    let (status, body) = raw_exchange("17 KiB declared", &t.edge, declared.as_bytes()).await;
    assert_error("17 KiB declared", status, &body, 413, "PAYLOAD_TOO_LARGE");
    let (status, body) = raw_exchange("17 KiB chunked", &t.edge, &chunked_post(&auth, padded.as_bytes())).await;
    assert_error("17 KiB chunked", status, &body, 413, "PAYLOAD_TOO_LARGE");

    assert_eq!(t.sim_count("lookups").await, 1, "only the body within the cap reached the CRM");
}

/// A lookup POST whose body goes in 1 KiB chunks, with no length.
fn chunked_post(auth: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST /v1/customer-lookup HTTP/1.1\r\nhost: localhost\r\nauthorization: {auth}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(1024) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}

/// Writes `request` as-is to the host at `base` (`http://host:port`) and
/// reads the response: its status and JSON body. reqwest cannot send a
/// length it does not keep, nor (without its `stream` feature) a chunked
/// body. Bounded: a host that waits for bytes never sent fails the test.
async fn raw_exchange(what: &str, base: &str, request: &[u8]) -> (u16, Value) {
    raw_exchange_within(base, request, false, Duration::from_secs(10)).await.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// [`raw_exchange`] within `limit`, saying what went wrong instead of
/// panicking (the bad-input corpus collects its failures); with
/// `half_close`, the client then shuts its sending side, as one that sent a
/// length it never meant to fill and now waits for the answer.
pub(crate) async fn raw_exchange_within(
    base: &str,
    request: &[u8],
    half_close: bool,
    limit: Duration,
) -> Result<(u16, Value), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("no connection: {e}"))?;
        // A host may answer and close before taking the whole body.
        stream.write_all(request).await.ok();
        if half_close {
            stream.shutdown().await.ok();
        }
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
            if let Some(complete) = complete_response(&response) {
                return Ok(complete);
            }
        }
        complete_response(&response)
            .or_else(|| closed_response(&response))
            .ok_or_else(|| format!("no whole response: {:?}", String::from_utf8_lossy(&response)))
    };
    tokio::time::timeout(limit, exchange).await.unwrap_or_else(|_| Err(format!("no answer within {limit:?}")))
}

/// The status and JSON body once `response` holds the head and as much
/// body as its `content-length` says (or is chunked and ends).
fn complete_response(response: &[u8]) -> Option<(u16, Value)> {
    let head_end = response.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&response[..head_end]).to_ascii_lowercase();
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let rest = &response[head_end..];
    let body = if let Some(len) =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok())
    {
        if rest.len() < len {
            return None;
        }
        rest[..len].to_vec()
    } else if head.contains("transfer-encoding: chunked") {
        dechunk(rest)?
    } else {
        return None;
    };
    Some((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// The status and JSON body of a response the host ended by closing the
/// connection (no length, not chunked).
fn closed_response(response: &[u8]) -> Option<(u16, Value)> {
    let head_end = response.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&response[..head_end]);
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, serde_json::from_slice(&response[head_end..]).unwrap_or(Value::Null)))
}

/// A whole chunked body, or `None` while its last chunk has not arrived.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).ok()?.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        if rest.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

pub const BAD_INPUT_CORPUS: Case = Case {
    name: "bad_input_corpus",
    settings: &[
        ("FAILSOFT_INTERNAL_SECRET", SYNC_SECRET),
        ("FAILSOFT_BASIC_USER", crate::corpus::BASIC_USER),
        ("FAILSOFT_BASIC_PASSWORD", crate::corpus::BASIC_PASSWORD),
    ],
    run: |t| Box::pin(bad_input_corpus(t)),
};

/// The bad-input corpus (`tests/corpus/bad_input.jsonl`, issue #14) on this
/// host: every case answered as the corpus says (a 4xx with its error code,
/// or its documented 2xx), none a 5xx, none slower than 2 s; then the CRM
/// saw no call, nothing was queued, and a valid lookup is still served.
///
/// "Nothing queued" is read after a sentinel: once the corpus is done, a
/// lookup with the CRM down is answered `default` and its refresh queued
/// after the response; anything a case had queued was queued before it, so
/// once the sentinel's refresh is in, the queue must hold nothing else.
async fn bad_input_corpus(t: &Target) {
    t.with_customers().await;
    let failures = crate::corpus::run_all(t).await;
    assert!(
        failures.is_empty(),
        "{} of {} corpus cases failed:\n{}",
        failures.len(),
        crate::corpus::cases().len(),
        failures.join("\n")
    );
    assert_eq!(t.sim_count("requests").await, 0, "bad input never reaches the CRM");

    let (status, body) = t.lookup(VIP).await;
    assert_eq!(status, 200, "a valid lookup after the corpus: {body}");
    assert_record("a valid lookup after the corpus", &body, "live", "C-1001", "vip");

    let Some(queue) = &t.queue else { return };
    t.crm("down").await;
    let (status, sentinel) = t.post("/v1/customer-lookup", &json!({"ani": NEVER_SEEN})).await;
    assert_eq!((status, &sentinel["source"]), (200, &json!("default")), "{sentinel}");
    let sentinel_group = entity_of(NEVER_SEEN);
    let mut received: Vec<Received> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !received.iter().any(|m| m.group_id == sentinel_group) {
        assert!(Instant::now() < deadline, "the sentinel's refresh did not reach SQS within 15 s");
        received.extend(queue.moto.receive_all(&queue.url, 50).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let others: Vec<&Received> = received.iter().filter(|m| m.group_id != sentinel_group).collect();
    assert!(others.is_empty(), "bad input queued {} message(s): {others:?}", others.len());
}

pub const FRESH_HIT: Case = Case { name: "fresh_hit", settings: &[], run: |t| Box::pin(fresh_hit(t)) };

async fn fresh_hit(t: &Target) {
    t.with_customers().await;
    let (status, warm) = t.lookup("+44 20 7946 0001").await;
    assert_eq!(status, 200, "{warm}");
    assert_record("warming lookup", &warm, "live", "C-1001", "vip");
    let (status, hit) = t.lookup(VIP).await;
    assert_eq!(status, 200);
    assert_record("second lookup", &hit, "cache", "C-1001", "vip");
    assert!(hit["cacheAgeSeconds"].is_u64(), "a cache answer has an age: {hit}");
    assert_eq!(hit["warning"], Value::Null, "{hit}");
    let (status, seed_path) = t.post("/crm/customer-lookup", &json!({"ani": "tel:+442079460001"})).await;
    assert_eq!(status, 200);
    assert_record("the seed's path", &seed_path, "cache", "C-1001", "vip");
    assert_eq!(t.sim_count("lookups").await, 1, "fresh hits must not reach the CRM");
}

pub const MISS_IS_LIVE_AND_STORED: Case =
    Case { name: "miss_is_live_and_stored", settings: &[], run: |t| Box::pin(miss_is_live_and_stored(t)) };

async fn miss_is_live_and_stored(t: &Target) {
    t.with_customers().await;
    let (status, live) = t.post("/v1/customer-lookup", &json!({"ani": GOLD, "correlationId": "it-live-1"})).await;
    assert_eq!(status, 200);
    assert_record("miss", &live, "live", "C-1002", "gold");
    assert_eq!(live["correlationId"], "it-live-1", "the caller's correlationId is echoed");
    assert_eq!(live["cacheAgeSeconds"], 0, "{live}");
    let (_, next) = t.lookup(GOLD).await;
    assert_record("after the miss", &next, "cache", "C-1002", "gold");
    // A number the CRM does not know is a real answer, stored too.
    let (_, unknown) = t.lookup(NEVER_SEEN).await;
    assert_eq!((&unknown["source"], &unknown["found"]), (&json!("live"), &json!(false)), "{unknown}");
    assert_eq!(unknown["warning"], Value::Null, "{unknown}");
    let (_, again) = t.lookup(NEVER_SEEN).await;
    assert_eq!((&again["source"], &again["found"]), (&json!("cache"), &json!(false)), "{again}");
    assert_eq!(t.sim_count("lookups").await, 2, "each miss asked the CRM once");
}

pub const CRM_DOWN_STALE: Case =
    Case { name: "crm_down_stale", settings: ONE_SECOND_FRESHNESS, run: |t| Box::pin(crm_down_stale(t)) };

async fn crm_down_stale(t: &Target) {
    t.with_customers().await;
    let (_, warm) = t.lookup(VIP).await;
    assert_record("warming lookup", &warm, "live", "C-1001", "vip");
    t.crm("down").await;
    let (status, stale, took) = t.first_answer_past_freshness(VIP).await;
    assert_eq!(status, 200);
    assert_record("stale answer", &stale, "stale_cache", "C-1001", "vip");
    assert_eq!(stale["warning"], "CRM_UNAVAILABLE_USING_CACHED_DATA", "{stale}");
    let age = stale["cacheAgeSeconds"].as_u64().unwrap_or_else(|| panic!("cacheAgeSeconds is a number: {stale}"));
    assert!(age >= 1, "past a 1 s freshness window the record is at least 1 s old: {stale}");
    assert!(took < DEADLINE, "a refused connection needs no deadline, took {took:?}");
}

pub const CRM_DOWN_DEFAULT: Case = Case {
    name: "crm_down_default",
    settings: &[("FAILSOFT_DEFAULT_TIER", "bronze")],
    run: |t| Box::pin(crm_down_default(t)),
};

async fn crm_down_default(t: &Target) {
    t.with_customers().await;
    t.crm("down").await;
    let (status, body) = t.lookup(VIP).await;
    assert_eq!(status, 200, "a well-formed request is always answered 200: {body}");
    assert_eq!(body["source"], "default", "{body}");
    assert_eq!(body["customerId"], "UNKNOWN", "{body}");
    assert_eq!(body["tier"], "bronze", "FAILSOFT_DEFAULT_TIER: {body}");
    assert_eq!(body["found"], Value::Null, "nobody knows: {body}");
    assert_eq!(body["warning"], "CRM_UNAVAILABLE_NO_CACHE", "{body}");
    assert_eq!(body["cacheAgeSeconds"], Value::Null, "{body}");
}

pub const CRM_HUNG_WITHIN_DEADLINE: Case = Case {
    name: "crm_hung_within_deadline",
    settings: &[
        ("FAILSOFT_FRESHNESS_SECS", "1"),
        ("FAILSOFT_NOT_FOUND_FRESHNESS_SECS", "1"),
        ("FAILSOFT_CRM_DEADLINE_MS", "1000"),
    ],
    run: |t| Box::pin(crm_hung_within_deadline(t)),
};

async fn crm_hung_within_deadline(t: &Target) {
    t.with_customers().await;
    let (_, warm) = t.lookup(VIP).await;
    assert_record("warming lookup", &warm, "live", "C-1001", "vip");
    t.crm("hang").await;
    let (status, stale, took) = t.first_answer_past_freshness(VIP).await;
    assert_eq!(status, 200);
    assert_record("hung CRM, stale record", &stale, "stale_cache", "C-1001", "vip");
    assert_within_deadline("hung CRM, stale record", took);
    let (status, default, took) = t.timed_lookup(NEVER_SEEN).await;
    assert_eq!(status, 200);
    assert_eq!(default["source"], "default", "hung CRM, nothing cached: {default}");
    assert_within_deadline("hung CRM, nothing cached", took);
}

pub const BREAKER_OPEN: Case = Case {
    name: "breaker_open",
    settings: &[
        ("FAILSOFT_CRM_DEADLINE_MS", "1000"),
        ("FAILSOFT_BREAKER_FAILURE_THRESHOLD", "2"),
        ("FAILSOFT_BREAKER_COOL_DOWN_MS", "2000"),
    ],
    run: |t| Box::pin(breaker_open(t)),
};

async fn breaker_open(t: &Target) {
    t.with_customers().await;
    t.crm("hang").await;
    for attempt in 1..=2 {
        let (status, body, took) = t.timed_lookup(VIP).await;
        assert_eq!((status, &body["source"]), (200, &json!("default")), "timeout {attempt}: {body}");
        assert_within_deadline(&format!("timeout {attempt}"), took);
    }
    assert_eq!(t.sim_count("lookups").await, 2);
    let (status, body, took) = t.timed_lookup(VIP).await;
    assert_eq!((status, &body["source"]), (200, &json!("default")), "breaker open: {body}");
    assert_eq!(body["warning"], "CRM_UNAVAILABLE_NO_CACHE", "{body}");
    assert!(took < DEADLINE_SLACK, "an open breaker answers at once, took {took:?}");
    assert_eq!(t.sim_count("lookups").await, 2, "an open breaker does not call the CRM");

    // Past the cool-down a lookup takes the half-open probe: it is
    // answered from the ladder at once, and the probe (its number) goes
    // after the response, so its record is then cached.
    t.crm("up").await;
    let known = wait_until("the probe to close the breaker", Duration::from_secs(10), || async {
        let (_, body, took) = t.timed_lookup(VIP).await;
        assert!(took < DEADLINE_SLACK, "no lookup waits on the probe, took {took:?}: {body}");
        (body["source"] != "default").then_some(body)
    })
    .await;
    assert_eq!((&known["customerId"], &known["tier"]), (&json!("C-1001"), &json!("vip")), "{known}");
    let (_, next) = t.lookup(GOLD).await;
    assert_record("breaker closed", &next, "live", "C-1002", "gold");
}

pub const WEBHOOK_INVALIDATES: Case =
    Case { name: "webhook_invalidates", settings: &[], run: |t| Box::pin(webhook_invalidates(t)) };

async fn webhook_invalidates(t: &Target) {
    t.with_customers().await;
    let (_, warm) = t.lookup(VIP).await;
    assert_record("warming lookup", &warm, "live", "C-1001", "vip");
    let (_, hit) = t.lookup(VIP).await;
    assert_record("warm", &hit, "cache", "C-1001", "vip");

    let reply = t.change_tier(VIP, "standard").await;
    assert_eq!(reply["webhookStatus"], 200, "the facade accepted the signed webhook: {reply}");
    let (status, body) = t.lookup(VIP).await;
    assert_eq!(status, 200);
    assert_record("after the webhook", &body, "live", "C-1001", "standard");
    assert_eq!(t.sim_count("lookups").await, 2, "the invalidated record was fetched again");

    // Unsigned and wrongly signed changes are refused.
    let change = serde_json::to_vec(&json!({"phone": VIP, "fieldChanged": "tier", "newValue": "vip"})).unwrap();
    let unsigned = t.http.post(t.url("/v1/webhooks/crm-update")).body(change.clone());
    let (status, body) = t.send(unsigned).await;
    assert_eq!(status, 401, "unsigned webhook: {body}");
    let url = t.url("/v1/webhooks/crm-update");
    let forged =
        signing::request(&t.http, "POST", &url, change, "test-only-some-other-secret-000", signing::now_secs());
    let (status, body) = t.send(forged).await;
    assert_eq!(status, 401, "webhook signed with another secret: {body}");
    let (_, body) = t.lookup(VIP).await;
    assert_record("after refused webhooks", &body, "cache", "C-1001", "standard");
}

/// The internal secret the sync case's edge is given (made up, tests only).
pub const SYNC_SECRET: &str = "test-only-internal-secret-000000";

pub const SYNC_BULK_PUSH: Case = Case {
    name: "sync_bulk_push",
    settings: &[("FAILSOFT_INTERNAL_SECRET", SYNC_SECRET)],
    run: |t| Box::pin(sync_bulk_push(t)),
};

/// The pre-warm sync's bulk route on this host: a synced customer this
/// edge never saw is answered `stale_cache` while the CRM is down; a synced
/// record older than a live read does not replace it; a removal newer than
/// what is held deletes it; a forged push changes nothing.
async fn sync_bulk_push(t: &Target) {
    t.with_customers().await;
    let (_, warm) = t.lookup(VIP).await;
    assert_record("warming lookup", &warm, "live", "C-1001", "vip");
    let key = |ani: &str| entity_key(CACHE_KEY_SECRET.as_bytes(), &normalize_phone(ani).expect("a valid number"));
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as u64;
    let record = |id: &str, tier: &str, at: u64| json!({"record": {"found": true, "customerId": id, "tier": tier}, "fetchedAtMs": at});
    // Read by the sync 400 s ago: older than the live read, and stale.
    let page_read_at = now_ms - 400_000;
    let body = json!({"entries": [
        {"key": key(VIP), "entry": record("C-1001", "standard", page_read_at)},
        {"key": key(GOLD), "entry": record("C-1002", "gold", page_read_at)},
        {"key": key(NEVER_SEEN), "removedAtMs": page_read_at},
    ]});
    let (status, forged) = t.send(t.signed_post("/v1/internal/cache", &body, "not-the-internal-secret-00000")).await;
    assert_error("a forged bulk push", status, &forged, 401, "SIGNATURE_MISMATCH");
    let (status, counts) = t.send(t.signed_post("/v1/internal/cache", &body, SYNC_SECRET)).await;
    assert_eq!((status, counts), (200, json!({"stored": 1, "removed": 0, "kept": 2, "failed": 0})));

    t.crm("down").await;
    let (status, gold) = t.lookup(GOLD).await;
    assert_eq!(status, 200);
    assert_record("a synced customer never looked up here", &gold, "stale_cache", "C-1002", "gold");
    let (_, vip) = t.lookup(VIP).await;
    assert_record("the live read outranks the older synced one", &vip, "cache", "C-1001", "vip");

    let removal = json!({"entries": [{"key": key(VIP), "removedAtMs": now_ms + 60_000}]});
    let (status, counts) = t.send(t.signed_post("/v1/internal/cache", &removal, SYNC_SECRET)).await;
    assert_eq!((status, &counts["removed"]), (200, &json!(1)), "{counts}");
    let (_, gone) = t.lookup(VIP).await;
    assert_eq!(gone["source"], "default", "a removed customer is no longer known here: {gone}");
}

pub const SIGNED_REQUESTS_ARE_NOT_REPLAYED: Case = Case {
    name: "signed_requests_are_not_replayed",
    settings: &[("FAILSOFT_INTERNAL_SECRET", SYNC_SECRET)],
    run: |t| Box::pin(signed_requests_are_not_replayed(t)),
};

/// Every signed route on this host accepts a request once and only where
/// it was sent: the CRM's webhook (as crm-sim signed it, captured on its
/// way), the origin's cache push and the sync's bulk push are each refused
/// `SIGNATURE_REPLAYED` when sent again, `SIGNATURE_MISMATCH` when moved to
/// another key, route or method, and a timestamp 65 s ahead is refused
/// `SIGNATURE_FROM_FUTURE`. (Spin remembers nonces in KV, the native host
/// and a Worker in memory.)
async fn signed_requests_are_not_replayed(t: &Target) {
    t.with_customers().await;
    let key = |ani: &str| entity_key(CACHE_KEY_SECRET.as_bytes(), &normalize_phone(ani).expect("a valid number"));
    let refused = |what: &str, (status, body): (u16, Value), code: &str| assert_error(what, status, &body, 401, code);

    // The webhook, as the CRM simulator signs it, captured on its way.
    let capture = Capture::start().await;
    let hook = json!({"phone": VIP, "tier": "standard",
        "webhook": {"url": format!("{}/v1/webhooks/crm-update", capture.url), "secret": WEBHOOK_SECRET}});
    let url = format!("{}/admin/customers/tier", t.admin);
    t.admin(t.http.post(url).json(&hook), "/admin/customers/tier").await;
    let webhook = capture.all().pop().expect("crm-sim sent the webhook");
    assert_eq!(webhook.header("x-failsoft-nonce").map(str::len), Some(32), "a 16-byte nonce");
    let send = |method: &str, target: &str| t.send(webhook.resend(&t.http, &t.edge, method, target));
    let (status, body) = send("POST", "/v1/webhooks/crm-update").await;
    assert_eq!((status, &body["invalidated"]), (200, &json!(true)), "the captured webhook, once: {body}");
    refused("the webhook again", send("POST", "/v1/webhooks/crm-update").await, "SIGNATURE_REPLAYED");
    refused("the webhook with a query", send("POST", "/v1/webhooks/crm-update?x=1").await, "SIGNATURE_MISMATCH");

    // The origin's cache push for VIP.
    let now = signing::now_secs();
    let entry = json!({"record": {"found": true, "customerId": "C-1001", "tier": "vip"},
                       "fetchedAtMs": now * 1000});
    let a_path = format!("/v1/internal/cache/{}", key(VIP));
    let push = t.signed("PUT", &a_path, &entry, SYNC_SECRET, now);
    let again = push.try_clone().expect("a byte body clones");
    let moved = |target: &str, method: &str| {
        let mut request = push.try_clone().expect("a byte body clones").build().expect("a request");
        *request.method_mut() = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        *request.url_mut() = reqwest::Url::parse(&t.url(target)).expect("a URL");
        reqwest::RequestBuilder::from_parts(t.http.clone(), request)
    };
    let (status, body) = t.send(push.try_clone().expect("a byte body clones")).await;
    assert_eq!((status, &body["stored"]), (200, &json!(true)), "the push, once: {body}");
    refused("the push again", t.send(again).await, "SIGNATURE_REPLAYED");
    let b_path = format!("/v1/internal/cache/{}", key(GOLD));
    refused("VIP's push moved onto GOLD", t.send(moved(&b_path, "PUT")).await, "SIGNATURE_MISMATCH");
    refused("the push onto the bulk route", t.send(moved("/v1/internal/cache", "POST")).await, "SIGNATURE_MISMATCH");
    refused("the push onto the webhook", t.send(moved("/v1/webhooks/crm-update", "POST")).await, "SIGNATURE_MISMATCH");
    let ahead = t.signed("PUT", &b_path, &entry, SYNC_SECRET, now + 65);
    refused("a push signed 65 s ahead", t.send(ahead).await, "SIGNATURE_FROM_FUTURE");

    // The sync's bulk push.
    let bulk = json!({"entries": [{"key": key(NEVER_SEEN), "removedAtMs": now * 1000}]});
    let bulk = t.signed("POST", "/v1/internal/cache", &bulk, SYNC_SECRET, now);
    let again = bulk.try_clone().expect("a byte body clones");
    assert_eq!(t.send(bulk).await.0, 200, "the bulk push, once");
    refused("the bulk push again", t.send(again).await, "SIGNATURE_REPLAYED");

    // The refusals changed nothing: GOLD is answered live from the CRM.
    let (_, gold) = t.lookup(GOLD).await;
    assert_record("after the refused pushes", &gold, "live", "C-1002", "gold");
}

/// Request coalescing, on a host whose requests share one facade (native:
/// the process; Worker: the isolate): 50 lookups of one cold number at once,
/// with the CRM taking a second, make one CRM call, and every one is
/// answered `live` from it (a request that came after the call would be a
/// `cache` answer, so all `live` shows they waited on the one call). Spin
/// runs an instance per request, so there each request is its own call.
/// A shipped CRM profile through this host, against the simulator speaking
/// that vendor's API (`crm-sim --dialect`): a known number found and an
/// unknown one not found, both live; a case created at once under the
/// write's reference; with OAuth, one token for every call (kept in the
/// host's KV, so a Worker's isolates share it).
pub async fn speaks_the_vendor_profile(t: &Target, oauth: bool) {
    t.load_customers(json!([{"phone": GOLD, "customerId": "C-2002", "tier": "gold"}])).await;
    let (status, answer) = t.lookup(GOLD).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["source"].as_str(), answer["found"].as_bool()), (Some("live"), Some(true)), "{answer}");
    assert_eq!((answer["customerId"].as_str(), answer["tier"].as_str()), (Some("C-2002"), Some("gold")), "{answer}");
    let (status, answer) = t.lookup(NEVER_SEEN).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["source"].as_str(), answer["found"].as_bool()), (Some("live"), Some(false)), "{answer}");

    let (status, answer) = t.post("/v1/cases", &json!({"ani": GOLD, "subject": "Callback"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "COMPLETE", "{answer}");
    let ledger = t.admin(t.http.get(format!("{}/admin/ledger", t.admin)), "/admin/ledger").await;
    let cases = ledger.as_array().cloned().unwrap_or_default();
    assert_eq!(cases.len(), 1, "{ledger}");
    assert_eq!(cases[0]["caseId"], answer["caseId"], "{ledger}");
    assert_eq!(cases[0]["externalRef"], answer["correlationId"], "{ledger}");
    let tokens = t.sim_count("tokensIssued").await;
    assert_eq!(tokens, u64::from(oauth), "one token serves every call");
}

pub async fn concurrent_misses_make_one_crm_call(t: &Target) {
    t.with_customers().await;
    let url = format!("{}/admin/mode", t.admin);
    t.admin(t.http.post(url).json(&json!({"mode": "slow", "latencyMs": 1000})), "/admin/mode").await;
    let before = t.sim_count("lookups").await;
    let mut lookups = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let request = t.http.post(t.url("/v1/customer-lookup")).bearer_auth(&t.token).json(&json!({"ani": VIP}));
        lookups.spawn(async move {
            let response = request.send().await.expect("the facade answers");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        });
    }
    let mut answers = Vec::new();
    while let Some(answer) = lookups.join_next().await {
        answers.push(answer.expect("a lookup"));
    }
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_record("a coalesced lookup", body, "live", "C-1001", "vip");
    }
    let calls = t.sim_count("lookups").await - before;
    assert_eq!(calls, 1, "50 concurrent lookups of one number made {calls} CRM calls");
}
