//! failsoft as a Spin component (`wasm32-wasip2`, spin-sdk 5.2).
//!
//! Each request gets a fresh instance: the settings are read from Spin
//! variables, the facade is built over the Spin ports, the request is
//! answered, and only then are the lookup refreshes forwarded: the response
//! is set and its body finished first, so the client has its answer while
//! the instance keeps running (Spin has no `wait_until`; a wasi-http handler
//! may work after its response is complete, which `spin_e2e` checks with a
//! queue that never answers).
//!
//! Nothing outlives the instance but the key-value store: the cache, the
//! write results and the CRM breaker (one request in
//! `FAILSOFT_KV_SWEEP_EVERY` also deletes expired entries after its
//! response: Spin's store has no expiry of its own, see `kv.rs`) (`BreakerSharing::EveryOutcome`: read
//! before a call, written after every outcome), so an open breaker answers
//! the next request at once although no instance saw it open; and the
//! nonces of signed requests (`NonceStore::Kv`), so a replayed internal
//! call or webhook is refused by whichever instance it reaches.
//!
//! The traffic counters (answers by source, latency, forward failures) are
//! reported to the origin per instance, after the response like the
//! refreshes: no in-memory aggregate would survive the request, and
//! accumulating in KV would add a read-modify-write to every request and
//! race between instances. A report whose send fails ends with its instance.
//!
//! Writes SQS does not take in time are kept in the store too (the write
//! outbox, `failsoft_edge::kv_outbox`): each request sends a few on after
//! its response, and the origin's signed drain call
//! (`/v1/internal/outbox/drain`, on a schedule) the rest, so an idle edge
//! drains too.
//!
//! On any other target the crate is empty, so host builds of the workspace
//! skip it.
#![cfg(target_arch = "wasm32")]

mod downstream;
mod kv;
mod log;
mod settings;

use failsoft_edge::facade::{BreakerSharing, DRAIN_AFTER_RESPONSE, Facade, NonceStore};
use failsoft_edge::http::{Request, Response, misconfigured, read_capped};
use failsoft_edge::kv_outbox::KvOutbox;
use failsoft_edge::outbox::WithOutbox;
use failsoft_edge::sqs::{NoQueue, SqsOr};
use failsoft_shared::edge_stats::Cadence;
use futures::SinkExt;
use spin_sdk::http::{Fields, IncomingRequest, Method, OutgoingResponse, ResponseOutparam};

pub use downstream::SpinHttp;
pub use kv::SpinKv;
pub use settings::{SpinClock, lookup};

/// The facade over the Spin ports.
pub type SpinFacade = Facade<SpinKv, SpinHttp, SpinForwarder, SpinClock>;

/// SQS when `FAILSOFT_QUEUE_URL` is set, with the write outbox in the
/// key-value store behind it (`failsoft_edge::kv_outbox`); otherwise
/// nothing durable exists at the edge, so forwarding fails (writes answer
/// `NOT_ACCEPTED`).
pub type SpinForwarder = WithOutbox<SqsOr<SpinHttp, SpinClock>, Option<KvOutbox<SpinKv, SpinClock>>>;

/// The facade from the Spin variables, or the setting that is wrong.
pub fn facade() -> Result<SpinFacade, failsoft_shared::config::ConfigError> {
    let config = failsoft_edge::config::EdgeConfig::from_lookup(lookup)?;
    let sqs = failsoft_edge::sqs::SqsSettings::from_lookup(lookup)?;
    let open = || SpinKv::open().map_err(|e| failsoft_shared::config::ConfigError::new("key_value_stores", e.0));
    let outbox = match &sqs {
        Some(_) => {
            let (max_entries, max_bytes) = failsoft_edge::outbox::caps(lookup)?;
            let mut outbox = KvOutbox::new(open()?, SpinClock, max_entries, max_bytes);
            outbox.list_keys = Some(kv::list_keys);
            Some(outbox)
        }
        None => None,
    };
    let forwarder = WithOutbox { queue: SqsOr::new(sqs, SpinHttp, SpinClock, || NoQueue), store: outbox };
    let kv = open()?;
    // An instance lives for one request: the breaker's whole state and the
    // nonces of signed requests are in KV, and its traffic counters are
    // reported before it ends.
    Ok(Facade::new(config, kv, SpinHttp, forwarder, SpinClock)
        .with_breaker_sharing(BreakerSharing::EveryOutcome)
        .with_nonce_store(NonceStore::Kv)
        .with_stats_cadence(Cadence::EveryInstance))
}

#[spin_sdk::http_component]
async fn handle(incoming: IncomingRequest, out: ResponseOutparam) {
    log::init(lookup("FAILSOFT_LOG"));
    let request = match read_request(incoming).await {
        Ok(request) => request,
        Err(response) => return respond(out, response).await,
    };
    let (facade, sweep_every) = match facade().and_then(|facade| Ok((facade, kv::sweep_every(lookup)?))) {
        Ok(built) => built,
        Err(e) => return respond(out, misconfigured(&e)).await,
    };
    let handled = facade.handle(request).await;
    respond(out, handled.response).await;
    facade.run_after(handled.after).await;
    // A few of the outbox's writes go on after each response (one KV read
    // when it is empty); the origin's scheduled drain call does the rest.
    if let Some(Err(e)) = facade.drain_outbox(DRAIN_AFTER_RESPONSE, false).await {
        tracing::warn!(error = %e, "draining the outbox after a response failed");
    }
    kv::sweep(sweep_every);
}

/// The host-neutral request, or the core's refusal of its body (see
/// [`read_capped`]: read no further than one chunk past the cap).
async fn read_request(incoming: IncomingRequest) -> Result<Request, Response> {
    let method = match incoming.method() {
        Method::Get => "GET".to_owned(),
        Method::Head => "HEAD".to_owned(),
        Method::Post => "POST".to_owned(),
        Method::Put => "PUT".to_owned(),
        Method::Delete => "DELETE".to_owned(),
        Method::Connect => "CONNECT".to_owned(),
        Method::Options => "OPTIONS".to_owned(),
        Method::Trace => "TRACE".to_owned(),
        Method::Patch => "PATCH".to_owned(),
        Method::Other(other) => other.to_ascii_uppercase(),
    };
    let target = incoming.path_with_query().unwrap_or_else(|| "/".to_owned());
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let (path, query) = (path.to_owned(), query.to_owned());
    let headers: Vec<(String, String)> = incoming
        .headers()
        .entries()
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_ascii_lowercase(), String::from_utf8(value).ok()?)))
        .collect();
    let body = read_capped(&headers, || Some(incoming.into_body_stream())).await?;
    Ok(Request { method, path, query, headers, body })
}

/// Sends the response and finishes its body, so the client has all of it
/// before anything that runs after this returns.
async fn respond(out: ResponseOutparam, response: Response) {
    let headers: Vec<(String, Vec<u8>)> =
        response.headers.iter().map(|(name, value)| ((*name).to_owned(), value.clone().into_bytes())).collect();
    let fields = Fields::from_list(&headers).unwrap_or_else(|_| Fields::new());
    let outgoing = OutgoingResponse::new(fields);
    outgoing.set_status_code(response.status).ok();
    let mut body = outgoing.take_body();
    out.set(outgoing);
    if let Err(e) = body.send(response.body).await {
        eprintln!("failsoft-edge-spin: writing the response failed: {e}");
    }
    // Dropping the sink finishes the body: the response is complete.
    drop(body);
}
