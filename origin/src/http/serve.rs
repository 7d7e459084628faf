//! Serving a router with bounds a slow or idle client cannot outlast: a
//! request head must arrive within [`Limits::header_read`] of the
//! connection opening (or of the previous response, when kept alive), a
//! body may not stall longer than [`Limits::body_idle`] between chunks, a
//! whole request (body included) gets [`Limits::request`] before it is
//! answered 408, and at most [`Limits::concurrency`] requests are handled
//! at once (more wait for a slot, within their own time bound).
//!
//! HTTP/1.1 only: what calls the origin (the edge, EventBridge through a
//! load balancer, Prometheus, a browser) speaks it.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};

/// Pause after a failed accept (e.g. out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The bounds of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request head (request line and headers) must be in by then.
    pub header_read: Duration,
    /// The longest pause between two chunks of a request body.
    pub body_idle: Duration,
    /// The longest a request may take, body included: then 408.
    pub request: Duration,
    /// Requests handled at once; more wait for a slot.
    pub concurrency: usize,
}

impl Limits {
    /// The edge-facing listener (results API, `POST /v1/events`, edge
    /// reports). A legitimate head or body of at most 16 KiB arrives in
    /// milliseconds; the slowest handler (an event's SendMessage, 4 s) is
    /// far inside the request bound. The concurrency bound is above what a
    /// few hundred stalled clients hold, so they cannot starve the edge's
    /// result reads while their own time bounds run out.
    pub const API: Self = Self {
        header_read: Duration::from_secs(5),
        body_idle: Duration::from_secs(5),
        request: Duration::from_secs(15),
        concurrency: 1_024,
    };

    /// An operator listener (`/metrics`, `/v1/health`, the dashboard, the
    /// notifications consumer's status): a scraper and a few browsers.
    pub const OPERATOR: Self = Self {
        header_read: Duration::from_secs(5),
        body_idle: Duration::from_secs(5),
        request: Duration::from_secs(15),
        concurrency: 64,
    };
}

/// Serves `router` on `listener` within `limits` until `shutdown`
/// resolves, then stops accepting and waits for the connections to finish
/// their requests in flight (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let service = tower::ServiceBuilder::new()
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.request))
        .layer(GlobalConcurrencyLimitLayer::new(limits.concurrency))
        .layer(RequestBodyTimeoutLayer::new(limits.body_idle))
        .service(router);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read);
    let graceful = GracefulShutdown::new();
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
        let handler = hyper::service::service_fn(move |req: Request<Incoming>| {
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
