//! The fetch handler: the isolate's facade, built once from `env`, and the
//! conversion between the runtime's requests and the core's.

use std::cell::OnceCell;
use std::rc::Rc;

use failsoft_edge::config::EdgeConfig;
use failsoft_edge::facade::{BreakerSharing, Facade};
use failsoft_edge::http::{Request, Response, misconfigured, read_capped};
use failsoft_edge::sqs::{SqsOr, SqsSettings};
use failsoft_shared::config::{self, ConfigError};
use worker::{Context, Env, Headers, event};

use crate::memo;
use crate::outbox::{OUTBOX_BINDING, WorkerForwarder};
use crate::{FetchDownstream, JsClock, WorkersKv, log};

/// The KV namespace binding in `wrangler.toml`.
pub const KV_BINDING: &str = "FAILSOFT_KV";

/// The facade with the Worker's ports.
pub type WorkerFacade = Facade<WorkersKv, FetchDownstream, WorkerForwarder, JsClock>;

/// What one isolate keeps between requests.
struct Isolate {
    facade: WorkerFacade,
    /// The facade's KV, shared: its deferred writes are flushed after a response.
    kv: WorkersKv,
}

thread_local! {
    static ISOLATE: OnceCell<Rc<Isolate>> = const { OnceCell::new() };
}

/// The isolate's facade, built from `env` on its first request. A bad
/// configuration is not cached: it is reported on every request until fixed.
fn isolate(env: &Env) -> Result<Rc<Isolate>, ConfigError> {
    if let Some(isolate) = ISOLATE.with(|cell| cell.get().cloned()) {
        return Ok(isolate);
    }
    let lookup = |name: &str| env.var(name).ok().map(|value| value.to_string());
    log::init(lookup("FAILSOFT_LOG").as_deref());
    let config = EdgeConfig::from_lookup(lookup)?;
    let sqs = SqsSettings::from_lookup(lookup)?;
    let store = env
        .kv(KV_BINDING)
        .map_err(|e| ConfigError::new(KV_BINDING, format!("the KV namespace binding is missing ({e})")))?;
    let clock = JsClock;
    let kv = WorkersKv::new(store, clock, memo_ms(&lookup)?);
    if sqs.is_none() {
        tracing::warn!("FAILSOFT_QUEUE_URL is unset: refreshes are dropped and failed writes not accepted");
    }
    // SQS through `fetch`, or no queue: without `FAILSOFT_QUEUE_URL` a write
    // the CRM does not take is answered `NOT_ACCEPTED`, never a `PENDING`
    // that nothing backs. Writes go through the outbox's shard when bound.
    let outbox = env.durable_object(OUTBOX_BINDING).ok();
    if outbox.is_none() {
        tracing::warn!("no {OUTBOX_BINDING} binding: a write SQS does not take in time is answered NOT_ACCEPTED");
    }
    let queue = SqsOr::new(sqs, FetchDownstream, clock, || failsoft_edge::sqs::NoQueue);
    let forwarder = WorkerForwarder::new(queue, outbox);
    // Isolates share the breaker through KV, so one trip stops them all.
    let facade = Facade::new(config, kv.clone(), FetchDownstream, forwarder, clock)
        .with_breaker_sharing(BreakerSharing::Transitions);
    let isolate = Rc::new(Isolate { facade, kv });
    Ok(ISOLATE.with(|cell| cell.get_or_init(|| isolate).clone()))
}

/// `FAILSOFT_KV_MEMO_MS`: how long the isolate remembers a KV read, up to
/// KV's own minute of eventual consistency; 0 turns it off.
fn memo_ms(lookup: &impl Fn(&str) -> Option<String>) -> Result<u64, ConfigError> {
    const SETTING: &str = "FAILSOFT_KV_MEMO_MS";
    match config::number(lookup, SETTING, memo::DEFAULT_MEMO_MS)? {
        ms if ms <= 60_000 => Ok(ms),
        _ => Err(ConfigError::new(SETTING, "must be at most 60000 (ms)")),
    }
}

#[event(fetch)]
async fn fetch(mut req: worker::Request, env: Env, ctx: Context) -> worker::Result<worker::Response> {
    let isolate = match isolate(&env) {
        Ok(isolate) => isolate,
        Err(error) => return into_worker(misconfigured(&error)),
    };
    let request = match into_request(&mut req).await {
        Ok(request) => request,
        Err(response) => return into_worker(response),
    };
    let handled = isolate.facade.handle(request).await;
    // After the response: refreshes to SQS, the isolate's traffic report to
    // the origin when due, and KV writes deferred by the one-write-per-second
    // rule. None ever delays the answer.
    if isolate.facade.has_work_after(&handled) || isolate.kv.has_deferred() {
        let isolate = isolate.clone();
        ctx.wait_until(async move {
            isolate.facade.run_after(handled.after).await;
            isolate.kv.flush().await;
        });
    }
    into_worker(handled.response)
}

/// The core's request, or the core's refusal of its body (see
/// [`read_capped`]: a body past the cap is never buffered whole).
async fn into_request(req: &mut worker::Request) -> Result<Request, Response> {
    let headers: Vec<(String, String)> =
        req.headers().entries().map(|(name, value)| (name.to_ascii_lowercase(), value)).collect();
    // No body stream at all (a GET) reads as an empty body.
    let body = read_capped(&headers, || req.stream().ok()).await?;
    // The query as sent: internal signatures cover the path and the query.
    let query = req.url().ok().and_then(|url| url.query().map(str::to_owned)).unwrap_or_default();
    Ok(Request { method: req.method().to_string(), path: req.path(), query, headers, body })
}

fn into_worker(response: Response) -> worker::Result<worker::Response> {
    let headers = Headers::new();
    for (name, value) in &response.headers {
        headers.set(name, value)?;
    }
    Ok(worker::Response::from_bytes(response.body)?.with_status(response.status).with_headers(headers))
}
