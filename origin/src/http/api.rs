//! The origin's HTTP surface, on two listeners.
//!
//! The API (`FAILSOFT_ORIGIN_LISTEN`, what the edge and EventBridge call):
//! `GET /v1/results/{correlationId}` (what the edge's result route proxies
//! to), `POST /v1/internal/edge-stats` (the edge's traffic reports,
//! [`crate::http::edge_stats`]), `POST /v1/events` ([`crate::http::events`])
//! and `GET /healthz` (the process's own liveness).
//!
//! The operator's (`FAILSOFT_OPERATOR_LISTEN`, loopback by default):
//! `GET /v1/health` (the five operational signals, classified), `GET
//! /metrics` (Prometheus), the dashboard ([`crate::http::dashboard`]: `GET
//! /dashboard` and `GET /v1/dashboard`) and `GET /healthz` again. They need
//! no credentials: they carry counts, levels, states, correlationIds and
//! reason codes, never a phone number, payload or secret; and they stay off
//! the port that takes edge traffic.
//!
//! Result reads and edge reports are authenticated with the internal
//! signature the edge already uses for its calls to the origin
//! (`failsoft_shared::signature`: timestamp, nonce, and the MAC over the
//! method, the path and query, both of those and the body, empty for a
//! read) under `FAILSOFT_INTERNAL_SECRET`. Each nonce is accepted once per
//! process: the [`ReplayCache`] in [`ApiState`] remembers them for the
//! tolerance window, so a captured read or report cannot be sent again.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use failsoft_shared::case::CaseSummary;
use failsoft_shared::edge_stats::{REPORT_PATH, Report};
use failsoft_shared::signature::{
    self, DEFAULT_REPLAY_CAPACITY, NONCE_HEADER, Presented, ReplayCache, SIGNATURE_HEADER, Signed, TIMESTAMP_HEADER,
};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::clock;
use crate::config::Secret;
use crate::deliver::delivery::Delivery;
use crate::http::edge_stats::{self, Ingested, MAX_REPORT_BYTES};
use crate::store::results::{Status, Store};
use crate::telemetry;
use failsoft_shared::envelope::is_valid_correlation_id;

/// What the handlers read.
pub struct ApiState {
    pub store: Store,
    pub secret: Secret,
    pub tolerance_secs: u64,
    /// The worker, for `/healthz` (absent in a results-only process).
    pub delivery: Option<Arc<Delivery>>,
    pub in_flight: Arc<dyn Fn() -> usize + Send + Sync>,
    /// The Prometheus recorder's handle; `None`: `/metrics` answers 503.
    pub metrics: Option<PrometheusHandle>,
    /// The nonces of the signed requests this process accepted.
    pub nonces: std::sync::Mutex<ReplayCache>,
}

/// A replay cache at the default capacity, for [`ApiState::nonces`].
pub fn replay_cache() -> std::sync::Mutex<ReplayCache> {
    std::sync::Mutex::new(ReplayCache::new(DEFAULT_REPLAY_CAPACITY))
}

/// The edge-facing routes (`POST /v1/events` is merged in by the worker).
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/v1/results/{id}", get(result))
        .route(REPORT_PATH, post(edge_report))
        .with_state(state)
}

/// The operator's routes: health, metrics, the dashboard.
pub fn operator_router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/v1/health", get(signals))
        .route("/metrics", get(render_metrics))
        .merge(crate::http::dashboard::routes())
        .with_state(state)
}

/// The worker's two listeners.
pub struct Listeners {
    pub api: TcpListener,
    pub operator: TcpListener,
}

/// Binds the API and the operator's listener (port 0 picks one) and prints
/// the one stdout line the lab and the tests wait for:
/// `failsoft-origin listening api=http://… operator=http://…`.
pub async fn bind(api: SocketAddr, operator: SocketAddr) -> Result<Listeners, (SocketAddr, std::io::Error)> {
    let api = TcpListener::bind(api).await.map_err(|e| (api, e))?;
    let operator = TcpListener::bind(operator).await.map_err(|e| (operator, e))?;
    let url = |l: &TcpListener| l.local_addr().map(|a| format!("http://{a}"));
    let (api_url, operator_url) = match (url(&api), url(&operator)) {
        (Ok(a), Ok(o)) => (a, o),
        (Err(e), _) => return Err((api.local_addr().unwrap_or(([0, 0, 0, 0], 0).into()), e)),
        (_, Err(e)) => return Err((operator.local_addr().unwrap_or(([0, 0, 0, 0], 0).into()), e)),
    };
    println!("failsoft-origin listening api={api_url} operator={operator_url}");
    Ok(Listeners { api, operator })
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

async fn health(State(state): State<Arc<ApiState>>) -> Json<Value> {
    let (breaker, rate) = match &state.delivery {
        Some(d) => (Value::from(d.breaker_mode().as_str()), Value::from(d.rate())),
        None => (Value::Null, Value::Null),
    };
    Json(json!({"status": "ok", "breaker": breaker, "replayRate": rate, "inFlight": (state.in_flight)()}))
}

async fn signals(State(state): State<Arc<ApiState>>) -> Json<Value> {
    Json(telemetry::health(state.delivery.as_ref().map(|d| d.breaker_mode())))
}

async fn render_metrics(State(state): State<Arc<ApiState>>) -> Response {
    let Some(handle) = &state.metrics else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "METRICS_UNAVAILABLE", "no metrics recorder in this process");
    };
    if let Some(d) = &state.delivery {
        telemetry::set_worker_gauges(d.breaker_mode(), d.pace(), (state.in_flight)());
    }
    crate::sync::set_lag_gauge(clock::now_ms());
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response()
}

/// The 401 for a request without a valid internal signature over its
/// method, `target` (path and query) and `body`, or whose nonce was used.
fn verify_internal(
    state: &ApiState,
    method: &str,
    target: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Box<Response>> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let presented = Presented {
        signature: header(SIGNATURE_HEADER),
        timestamp: header(TIMESTAMP_HEADER),
        nonce: header(NONCE_HEADER),
    };
    let now = clock::now_ms() / 1000;
    let signed = Signed::new(method, target, body);
    signature::verify(state.secret.expose(), &presented, &signed, now, state.tolerance_secs)
        .and_then(|verified| {
            let mut nonces = state.nonces.lock().unwrap_or_else(|e| e.into_inner());
            nonces.admit(&verified, now, state.tolerance_secs)
        })
        .map_err(|e| {
            let message = "the internal signature is missing, wrong, expired or already used";
            Box::new(error(StatusCode::UNAUTHORIZED, e.code(), message))
        })
}

/// The request target (path and query) as the client sent it.
fn target_of(uri: &Uri) -> &str {
    uri.path_and_query().map_or_else(|| uri.path(), |pq| pq.as_str())
}

/// `POST /v1/internal/edge-stats`: 202 counted, 200 a resend already
/// counted; 413, 401 and 400 count nothing.
async fn edge_report(State(state): State<Arc<ApiState>>, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let Ok(bytes) = axum::body::to_bytes(body, MAX_REPORT_BYTES).await else {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", "a report is at most 16 KiB");
    };
    if let Err(refused) = verify_internal(&state, "POST", target_of(&uri), &headers, &bytes) {
        return *refused;
    }
    let report: Report = match serde_json::from_slice(&bytes) {
        Ok(report) => report,
        Err(e) => return error(StatusCode::BAD_REQUEST, "INVALID_REPORT", &format!("not an edge report: {e}")),
    };
    if let Err(e) = report.validate() {
        return error(StatusCode::BAD_REQUEST, e.code(), &e.to_string());
    }
    match edge_stats::ingest(&report) {
        Ingested::Counted => (StatusCode::ACCEPTED, Json(json!({"counted": true}))).into_response(),
        Ingested::Duplicate => Json(json!({"counted": false, "reason": "duplicate"})).into_response(),
    }
}

/// What a result poll shows of a stored result: a case only as its
/// [`CaseSummary`] (an item recorded before summaries were kept may hold the
/// CRM's whole answer until its TTL ends), an event's receipt as it is.
fn public_result(result: Value) -> Value {
    match CaseSummary::deserialize(&result) {
        Ok(case) => serde_json::to_value(case).unwrap_or(Value::Null),
        Err(_) => result,
    }
}

async fn result(State(state): State<Arc<ApiState>>, Path(id): Path<String>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(refused) = verify_internal(&state, "GET", target_of(&uri), &headers, b"") {
        return *refused;
    }
    if !is_valid_correlation_id(&id) {
        return error(StatusCode::BAD_REQUEST, "INVALID_CORRELATION_ID", "not a correlationId");
    }
    match state.store.get(&id, clock::now_ms()).await {
        Ok(Some(stored)) => {
            let case_id = stored.case_id.clone().or_else(|| {
                stored.result.as_ref().and_then(|r| r.get("caseId")).and_then(Value::as_str).map(str::to_owned)
            });
            let complete = stored.status == Status::Complete;
            Json(json!({
                "correlationId": id,
                "status": stored.status.public(),
                "caseId": case_id,
                "result": if complete { stored.result.map(public_result) } else { None },
                "reason": if stored.status == Status::Failed { stored.reason } else { None },
                "warning": null,
            }))
            .into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "RESULT_NOT_FOUND", "no write with this correlationId"),
        Err(e) => {
            tracing::warn!(error = %e, "result read failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "RESULT_STORE_UNAVAILABLE", "try again shortly")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_shows_a_case_as_its_summary_and_an_event_receipt_as_it_is() {
        let legacy = json!({"caseId": "CASE-1", "createdAt": 5, "phone": "+13175550123", "subject": "s"});
        assert_eq!(public_result(legacy), json!({"caseId": "CASE-1", "status": null, "createdAt": 5}));
        let receipt = json!({"delivered": true, "status": 202});
        assert_eq!(public_result(receipt.clone()), receipt);
    }
}
