//! `failsoft notifications`' own small HTTP listener (`--metrics-addr`):
//! `GET /metrics` (Prometheus) and `GET /healthz` (`connected` tells
//! whether a socket is open right now).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;

#[derive(Clone)]
struct Status {
    metrics: Option<PrometheusHandle>,
    connected: Arc<AtomicBool>,
}

/// Binds `addr` and prints the one stdout line the local stack waits for.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    println!("failsoft-notifications listening http://{}", listener.local_addr()?);
    Ok(listener)
}

pub fn router(metrics: Option<PrometheusHandle>, connected: Arc<AtomicBool>) -> Router {
    let status = Status { metrics, connected };
    let health = status.clone();
    Router::new()
        .route(
            "/healthz",
            get(move || async move {
                axum::Json(json!({"status": "ok", "connected": health.connected.load(Ordering::SeqCst)}))
            }),
        )
        .route("/metrics", get(move || async move { render(&status) }))
}

fn render(status: &Status) -> Response {
    match &status.metrics {
        Some(handle) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                json!({"error": {"code": "METRICS_UNAVAILABLE", "message": "no metrics recorder in this process"}}),
            ),
        )
            .into_response(),
    }
}
