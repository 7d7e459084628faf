//! The axum server: one fallback handler hands every request to the facade,
//! plus `/metrics` for Prometheus; served within bounds a slow or idle
//! client cannot outlast (see [`serve`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceExt;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};

use super::{MemoryKv, NativeForwarder, ReqwestDownstream};
use crate::facade::Facade;
use crate::http::{Request, Response, read_capped};
use crate::ports::Clock;

/// Wall clock and operating-system randomness.
#[derive(Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }

    fn random_u64(&self) -> u64 {
        getrandom::u64().unwrap_or_else(|_| self.now_ms().wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    async fn sleep_ms(&self, ms: u64) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await
    }
}

/// The facade with the native ports.
pub type NativeFacade = Facade<MemoryKv, ReqwestDownstream, NativeForwarder, SystemClock>;

#[derive(Clone)]
struct AppState {
    facade: Arc<NativeFacade>,
    metrics: PrometheusHandle,
}

/// The native routes.
pub fn router(facade: Arc<NativeFacade>, metrics: PrometheusHandle) -> Router {
    Router::new().route("/metrics", get(render_metrics)).fallback(handle).with_state(AppState { facade, metrics })
}

async fn render_metrics(State(state): State<AppState>) -> String {
    state.metrics.render()
}

async fn handle(State(state): State<AppState>, req: axum::extract::Request) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let headers: Vec<(String, String)> =
        parts.headers.iter().filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned()))).collect();
    let body = match read_capped(&headers, || Some(body.into_data_stream())).await {
        Ok(body) => body,
        Err(refusal) => return into_axum(refusal),
    };
    let request = Request {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers,
        body,
    };
    let handled = state.facade.handle(request).await;
    if state.facade.has_work_after(&handled) {
        let facade = state.facade.clone();
        tokio::spawn(async move { facade.run_after(handled.after).await });
    }
    into_axum(handled.response)
}

/// How often an idle process checks whether a traffic report is due: the
/// after-response path reports only while requests arrive, so this sends a
/// quiet process's last window too.
const STATS_TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// Reports the process's traffic to the origin when due, also when idle
/// (one process is one isolate: its counters live in its facade).
pub fn spawn_stats_reporter(facade: Arc<NativeFacade>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(STATS_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if facade.stats_due() {
                facade.report_stats().await;
            }
        }
    })
}

fn into_axum(response: Response) -> axum::response::Response {
    let mut out =
        (StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), Body::from(response.body))
            .into_response();
    for (name, value) in response.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.headers_mut().insert(HeaderName::from_static(name), value);
        }
    }
    out
}

/// A request head (request line and headers) must be in this long after the
/// connection opened or the previous response went; idle connections close.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause between two chunks of a request body.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a request may take, body included, before a 408: Genesys'
/// longest Data Action timeout, so an answer a caller still waits for is
/// never cut (the facade's own work ends at the CRM deadline plus margin).
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(failsoft_shared::config::MAX_DATA_ACTION_TIMEOUT_MS);
/// Requests handled at once; more wait for a slot. Above what a few hundred
/// stalled clients hold while their own bounds run out, so they cannot
/// starve Data Actions.
pub const MAX_CONCURRENT_REQUESTS: usize = 1_024;
/// Pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves until SIGTERM or Ctrl-C, printing the bound address first.
///
/// HTTP/1.1 (what a Data Action or a load balancer speaks), with hyper's
/// header read timeout, tower-http's body-idle and whole-request timeouts
/// and tower's concurrency limit: [`HEADER_READ_TIMEOUT`],
/// [`BODY_IDLE_TIMEOUT`], [`REQUEST_TIMEOUT`], [`MAX_CONCURRENT_REQUESTS`].
pub async fn serve(listen: SocketAddr, app: Router) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    // One line on stdout, parsed by tests and the demo to find the port.
    println!("failsoft-edge listening http://{addr}");
    tracing::info!(%addr, "failsoft-edge listening");
    let service = tower::ServiceBuilder::new()
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .layer(GlobalConcurrencyLimitLayer::new(MAX_CONCURRENT_REQUESTS))
        .layer(RequestBodyTimeoutLayer::new(BODY_IDLE_TIMEOUT))
        .service(app);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let handler = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let service = service.clone();
            async move { Ok::<_, Infallible>(service.oneshot(req).await.unwrap_or_else(|e| match e {})) }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), handler));
        tokio::spawn(async move {
            // A client that goes away or stalls past a bound ends here.
            let _ = connection.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
