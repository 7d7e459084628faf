//! The fuzz targets' bodies: each takes the fuzzer's bytes, feeds them to
//! a parser of outside input, and asserts what must hold of any answer
//! (beyond "no panic"). `fuzz/` runs them under libFuzzer (`make fuzz`);
//! `tests/replay.rs` replays the committed corpora in `make test` and
//! mutates them for a few seconds more, so a crash found once stays fixed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use failsoft_edge::config::EdgeConfig;
use failsoft_edge::facade::Facade;
use failsoft_edge::http::Request;
use failsoft_edge::native::{LocalQueue, MemoryKv};
use failsoft_edge::ports::{Clock, Downstream, OutboundRequest, OutboundResponse, TransportError};
use failsoft_origin::deliver::delivery;
use failsoft_origin::genesys_events::GenesysEvent;
use failsoft_origin::queue::received::Received;
use failsoft_shared::config::Policy;
use failsoft_shared::edge_stats::{Counts, Report};
use failsoft_shared::keys::normalize_phone;
use serde_json::Value;

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus folder and cargo-fuzz target.
pub const TARGETS: [(&str, Target); 9] = [
    ("ani", ani),
    ("signature", signature),
    ("queue_envelope", queue_envelope),
    ("crm_response", crm_response),
    ("rate_limit_headers", rate_limit_headers),
    ("settings", settings),
    ("edge_report", edge_report),
    ("genesys_event", genesys_event),
    ("facade_request", facade_request),
];

/// An `ani` as Genesys may send it: normalised, it is `+` and 8-15 ASCII
/// digits, and normalising it again changes nothing.
pub fn ani(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(phone) = normalize_phone(text) {
        let digits = phone.as_str().strip_prefix('+').unwrap_or(phone.as_str());
        assert!((8..=15).contains(&digits.len()), "{text:?} normalised to {phone:?}");
        assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{text:?} normalised to {phone:?}");
        assert_eq!(normalize_phone(phone.as_str()).as_ref().map(|p| p.as_str()), Ok(phone.as_str()));
    }
}

/// A signed request as a receiver sees it, one part per line: method,
/// target, timestamp, nonce, signature, then the body. Whatever passes is
/// within the time window and is exactly what signing it again gives; a
/// request signed here passes, once.
pub fn signature(data: &[u8]) {
    use failsoft_shared::signature::{self, Presented, ReplayCache, Signed};
    const SECRET: &[u8] = b"fuzz-internal-secret-0123456789a";
    const NOW: u64 = 1_800_000_000;
    const TOLERANCE: u64 = 300;
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(6, '\n');
    let mut next = || parts.next().unwrap_or_default();
    let (method, target, timestamp, nonce, tag) = (next(), next(), next(), next(), next());
    let body = next().as_bytes();
    let signed = Signed::new(method, target, body);
    let presented = Presented { signature: Some(tag), timestamp: Some(timestamp), nonce: Some(nonce) };
    for tolerance in [TOLERANCE, 0, u64::MAX] {
        if let Ok(verified) = signature::verify(SECRET, &presented, &signed, NOW, tolerance) {
            assert!(verified.timestamp_secs <= NOW + signature::MAX_FUTURE_SKEW_SECS);
            assert!(verified.timestamp_secs.saturating_add(tolerance) >= NOW);
            let again = signature::sign(SECRET, &signed, verified.timestamp_secs, &verified.nonce);
            assert_eq!(again.to_ascii_lowercase(), tag.trim().to_ascii_lowercase(), "{text:?}");
            let _ = verified.remember_secs(NOW, tolerance);
        }
    }
    // What a signer of this machine sends passes once.
    let ts = timestamp.trim().parse::<u64>().unwrap_or(NOW).clamp(NOW - TOLERANCE, NOW + 60);
    let mut random = [0u8; signature::NONCE_BYTES];
    for (slot, byte) in random.iter_mut().zip(data.iter().chain(core::iter::repeat(&7))) {
        *slot = *byte;
    }
    let [(_, ts_text), (_, nonce), (_, tag)] = signature::headers(SECRET, &signed, ts, random);
    let presented = Presented { signature: Some(&tag), timestamp: Some(&ts_text), nonce: Some(&nonce) };
    let verified =
        signature::verify(SECRET, &presented, &signed, NOW, TOLERANCE).expect("a request signed here passes");
    let mut seen = ReplayCache::new(4);
    assert!(seen.admit(&verified, NOW, TOLERANCE).is_ok());
    assert!(seen.admit(&verified, NOW, TOLERANCE).is_err(), "a nonce passes once");
}

/// A queue message's body as the worker reads it: an envelope it accepts
/// has a valid correlationId and entity key, and reads back the same from
/// its own serialisation.
pub fn queue_envelope(data: &[u8]) {
    let Ok(body) = std::str::from_utf8(data) else { return };
    let message = Received {
        message_id: "m-1".into(),
        receipt: "r-1".into(),
        body: body.to_owned(),
        group_id: "g".into(),
        receive_count: 1,
        first_received_ms: None,
        sent_ms: Some(1_800_000_000_000),
    };
    if let Ok(envelope) = delivery::read(&message, 1_800_000_000_000) {
        assert!(failsoft_shared::envelope::is_valid_correlation_id(&envelope.correlation_id));
        assert!(!envelope.entity_key.is_empty() && envelope.entity_key.len() <= 128);
        let again = serde_json::to_string(&envelope).expect("an envelope serialises");
        let reread = delivery::parse(&again).expect("an accepted envelope reads back");
        assert_eq!(serde_json::to_value(&reread).ok(), serde_json::to_value(&envelope).ok());
    }
}

/// A CRM's answer body, read by every shipped profile (the edge and the
/// origin read answers through the same mapping): no panic, a found
/// customer always has an id and a tier, a case always an id.
pub fn crm_response(data: &[u8]) {
    use failsoft_shared::mapping::{LookupAnswer, Mapping, MappingDoc, parse_document, profiles};
    static MAPPINGS: std::sync::LazyLock<Vec<Mapping>> = std::sync::LazyLock::new(|| {
        profiles::PROFILES
            .iter()
            .map(|(_, text)| {
                let doc: MappingDoc = parse_document(text).expect("a shipped profile parses");
                Mapping::bind(&doc, &|_| Some("fuzz-secret".to_owned())).expect("a shipped profile binds")
            })
            .collect()
    });
    for mapping in MAPPINGS.iter() {
        if let LookupAnswer::Found(record) = mapping.read_customer(data, "standard") {
            assert!(record.found && !record.customer_id.is_empty() && !record.tier.is_empty(), "{record:?}");
        }
        if let Some(case) = mapping.read_created_case(data) {
            assert!(!case.case_id.is_empty(), "{case:?}");
        }
        if let Ok(Some(case)) = mapping.read_found_case(data) {
            assert!(!case.case_id.is_empty(), "{case:?}");
        }
        let _ = mapping.read_token(data, 1_800_000_000);
    }
}

/// A CRM's rate-limit headers, one `name: value` per line: a quota read
/// from them states a finite, positive rate or none.
pub fn rate_limit_headers(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let headers: Vec<(String, &str)> = text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim()))
        .collect();
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    for now in [0, 1_800_000_000, u64::MAX] {
        if let Some(quota) = failsoft_shared::rate_limit::read(header, now)
            && let Some(rate) = quota.calls_per_sec()
        {
            assert!(rate.is_finite() && rate > 0.0, "{quota:?} from {text:?}");
        }
    }
}

/// Settings as the environment gives them, one `NAME=value` per line: what
/// the policy and the edge accept, they also find valid, and a CRM call
/// plus the margin always fits the Data Action's timeout.
pub fn settings(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let pairs: Vec<(&str, &str)> = text.lines().filter_map(|line| line.split_once('=')).collect();
    let lookup = |name: &str| pairs.iter().rev().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned());
    if let Ok(policy) = Policy::from_lookup(lookup) {
        assert_eq!(policy.validate(), Ok(()));
        assert!(policy.crm_deadline_ms + policy.deadline_margin_ms < policy.data_action_timeout_ms);
    }
    if let Ok(config) = EdgeConfig::from_lookup(lookup) {
        assert_eq!(config.policy.validate(), Ok(()));
    }
}

/// An edge's traffic report as the origin reads it: one it accepts merges
/// into a window without overflow, however large its counts.
pub fn edge_report(data: &[u8]) {
    let Ok(report) = serde_json::from_slice::<Report>(data) else { return };
    if report.validate().is_ok() {
        let mut window = Counts::default();
        window.merge(&report.counts);
        window.merge(&report.counts);
        assert!(window.answers() >= report.counts.answers());
        assert!(window.latency.count() >= report.counts.latency.count());
    }
}

/// A Genesys event, as EventBridge delivers it or as a Notification
/// Service frame: one accepted becomes an envelope the worker accepts.
pub fn genesys_event(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    let mut events = Vec::new();
    if let Ok(event) = GenesysEvent::from_eventbridge(&value) {
        events.push(event);
    }
    if let Ok(Some(event)) = GenesysEvent::from_notification(&value) {
        events.push(event);
    }
    for event in events {
        let envelope = event.envelope(1_800_000_000_000);
        let body = serde_json::to_string(&envelope).expect("an envelope serialises");
        delivery::parse(&body).expect("the envelope of an accepted event is accepted");
        assert!(!event.group().is_empty());
    }
}

/// The CRM behind the fuzzed facade: its answer is picked by a byte of
/// the input (found, not found, failing, throttled, timing out, refused).
struct FuzzCrm(u8);

impl Downstream for FuzzCrm {
    async fn send(&self, _: OutboundRequest, _: u64) -> Result<OutboundResponse, TransportError> {
        let (status, body) = match self.0 % 6 {
            0 => (200, r#"{"customerId":"C-1","tier":"gold","caseId":"K-1"}"#),
            1 => (404, "{}"),
            2 => (503, "down"),
            3 => (429, ""),
            4 => return Err(TransportError::Timeout),
            _ => return Err(TransportError::Connect),
        };
        Ok(OutboundResponse { status, retry_after: Some("1".into()), body: body.as_bytes().to_vec() })
    }
}

#[derive(Clone, Default)]
struct FuzzClock(Arc<AtomicU64>);

impl Clock for FuzzClock {
    fn now_ms(&self) -> u64 {
        1_800_000_000_000 + self.0.load(Ordering::Relaxed)
    }
    fn random_u64(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    async fn sleep_ms(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::Relaxed);
    }
}

const ROUTES: [&str; 8] = [
    "/v1/customer-lookup",
    "/crm/customer-lookup",
    "/v1/cases",
    "/v1/results/",
    "/v1/webhooks/crm-update",
    "/v1/internal/cache",
    "/v1/internal/cache/",
    "/healthz",
];
const METHODS: [&str; 4] = ["POST", "GET", "PUT", "DELETE"];

thread_local! {
    static RUNTIME: tokio::runtime::Runtime =
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
}

/// A request to the facade: byte 0 picks the method and whether it is
/// authorised, byte 1 the route and the CRM's answer; then a path suffix
/// line, header lines (`name: value`) up to an empty line, and the body.
/// Every answer is 200, a 4xx with an error code, or a documented 503,
/// never another 5xx; every refusal says what was wrong.
pub fn facade_request(data: &[u8]) {
    let [first, second, rest @ ..] = data else { return };
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.splitn(2, "\n\n");
    let head = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let mut lines = head.lines();
    let suffix = lines.next().unwrap_or_default();
    let path = format!("{}{suffix}", ROUTES[usize::from(*second) % ROUTES.len()]);
    let mut request = Request::new(METHODS[usize::from(*first) % METHODS.len()], &path);
    if first & 0x10 == 0 {
        request = request.header("authorization", "Bearer fuzz-token-0123456789abcdef");
    }
    if first & 0x20 == 0 {
        request = request.header("content-type", "application/json");
    }
    for (name, value) in lines.filter_map(|line| line.split_once(':')) {
        request = request.header(&name.trim().to_ascii_lowercase(), value.trim());
    }
    let request = request.body(body.as_bytes().to_vec());
    let settings = [
        ("FAILSOFT_CRM_URL", "http://crm.invalid"),
        ("FAILSOFT_AUTH_TOKEN", "fuzz-token-0123456789abcdef"),
        ("FAILSOFT_CACHE_KEY_SECRET", "fuzz-cache-key-secret-0123456789"),
        ("FAILSOFT_WEBHOOK_SECRET", "fuzz-webhook-secret-0123456789ab"),
        ("FAILSOFT_INTERNAL_SECRET", "fuzz-internal-secret-0123456789a"),
    ];
    let config = EdgeConfig::from_lookup(|n| settings.iter().find(|(k, _)| *k == n).map(|(_, v)| (*v).to_owned()))
        .expect("the fuzz settings are valid");
    let facade =
        Facade::new(config, MemoryKv::new(), FuzzCrm(*second / 8), Arc::new(LocalQueue::new(8)), FuzzClock::default());
    let handled = RUNTIME.with(|rt| rt.block_on(facade.handle(request)));
    let status = handled.response.status;
    assert!(status == 200 || (400..500).contains(&status) || status == 503, "status {status} for {path}");
    if status >= 400 {
        let body: Value = serde_json::from_slice(&handled.response.body).expect("a refusal is JSON");
        let code = body["error"]["code"].as_str().expect("a refusal has a code");
        assert!(!code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit()));
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    }
}
