//! The fetch handler: the isolate's facade, built once from `env`, and the
//! conversion between the runtime's requests and the core's.

use std::cell::OnceCell;
use std::rc::Rc;

use failsoft_edge::config::EdgeConfig;
use failsoft_edge::facade::{BreakerSharing, Facade};
use failsoft_edge::http::{MAX_BODY_BYTES, Request, Response, payload_too_large};
use failsoft_edge::sqs::SqsSettings;
use futures_util::StreamExt as _;
use worker::{Context, Env, Headers, event};

use crate::{FetchDownstream, JsClock, WorkerForwarder, WorkersKv, log};

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
fn isolate(env: &Env) -> Result<Rc<Isolate>, String> {
    if let Some(isolate) = ISOLATE.with(|cell| cell.get().cloned()) {
        return Ok(isolate);
    }
    let lookup = |name: &str| env.var(name).ok().map(|value| value.to_string());
    log::init(lookup("FAILSOFT_LOG").as_deref());
    let config = EdgeConfig::from_lookup(lookup).map_err(|e| format!("{}: {}", e.setting, e.problem))?;
    let sqs = SqsSettings::from_lookup(lookup).map_err(|e| format!("{}: {}", e.setting, e.problem))?;
    let store = env.kv(KV_BINDING).map_err(|e| format!("{KV_BINDING}: the KV namespace binding is missing ({e})"))?;
    let clock = JsClock;
    let kv = WorkersKv::new(store, clock);
    let forwarder = WorkerForwarder::new(sqs, FetchDownstream, clock);
    // Isolates share the breaker through KV, so one trip stops them all.
    let facade = Facade::new(config, kv.clone(), FetchDownstream, forwarder, clock)
        .with_breaker_sharing(BreakerSharing::Transitions);
    let isolate = Rc::new(Isolate { facade, kv });
    Ok(ISOLATE.with(|cell| cell.get_or_init(|| isolate).clone()))
}

#[event(fetch)]
async fn fetch(mut req: worker::Request, env: Env, ctx: Context) -> worker::Result<worker::Response> {
    let isolate = match isolate(&env) {
        Ok(isolate) => isolate,
        Err(problem) => {
            tracing::error!(%problem, "the Worker's settings are invalid");
            let setting = problem.split(':').next().unwrap_or_default();
            return into_worker(Response::error(500, "MISCONFIGURED", &format!("invalid setting {setting}")));
        }
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

/// The core's request. A body past the cap is refused as soon as it is
/// declared or read past it, never buffered whole.
async fn into_request(req: &mut worker::Request) -> Result<Request, Response> {
    let headers: Vec<(String, String)> =
        req.headers().entries().map(|(name, value)| (name.to_ascii_lowercase(), value)).collect();
    let declared = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Err(payload_too_large());
    }
    let mut body = Vec::new();
    if let Ok(mut stream) = req.stream() {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| Response::error(400, "INVALID_BODY", "the body could not be read"))?;
            body.extend_from_slice(&chunk);
            if body.len() > MAX_BODY_BYTES {
                return Err(payload_too_large());
            }
        }
    }
    Ok(Request { method: req.method().to_string(), path: req.path(), headers, body })
}

fn into_worker(response: Response) -> worker::Result<worker::Response> {
    let headers = Headers::new();
    for (name, value) in &response.headers {
        headers.set(name, value)?;
    }
    Ok(worker::Response::from_bytes(response.body)?.with_status(response.status).with_headers(headers))
}
