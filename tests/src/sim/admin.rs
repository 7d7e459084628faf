//! The admin API that tests drive: modes, records, ledger, counters.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{info, warn};

use super::clock;
use super::control::Control;
use super::limit::RateLimit;
use super::mode::{FailureMode, ModeRequest};
use super::reply::{ErrorReply, parse_json};
use super::store::{Customer, IdempotencyPolicy};
use super::webhook::{self, ChangeEvent, WebhookTarget};

type Reply = Result<Response, ErrorReply>;

pub fn router(control: Arc<Control>) -> Router {
    Router::new()
        .route("/admin/health", get(health))
        .route("/admin/mode", get(mode).post(set_mode))
        .route("/admin/idempotency", get(idempotency).post(set_idempotency))
        .route("/admin/rate-limit", get(rate_limit).post(set_rate_limit))
        .route("/admin/customers", post(load_customers))
        .route("/admin/customers/tier", post(change_tier))
        .route("/admin/customers/remove", post(remove_customers))
        .route("/admin/customers/generate", post(generate_customers))
        .route("/admin/ledger", get(ledger))
        .route("/admin/events", get(events))
        .route("/admin/stats", get(stats))
        .route("/admin/correlations", get(correlations))
        .route("/admin/tokens/revoke", post(revoke_tokens))
        .route("/admin/reset", post(reset))
        .with_state(control)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"ok": true}))
}

/// The mode as the admin API shows it, e.g.
/// `{"mode":"slow","latencyMs":500,"sinceMs":…,"idempotency":"honour"}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ModeView {
    #[serde(flatten)]
    mode: FailureMode,
    since_ms: u64,
    idempotency: IdempotencyPolicy,
}

async fn mode_view(control: &Control) -> Json<ModeView> {
    let state = control.sim.mode();
    Json(ModeView {
        mode: state.mode,
        since_ms: state.since_ms,
        idempotency: control.sim.store.lock().await.idempotency(),
    })
}

async fn mode(State(control): State<Arc<Control>>) -> Json<ModeView> {
    mode_view(&control).await
}

/// Answers once the API port matches the new mode (closed for `down`).
async fn set_mode(State(control): State<Arc<Control>>, body: Bytes) -> Reply {
    let request: ModeRequest = parse_json(&body)?;
    let mode = FailureMode::try_from(request)
        .map_err(|err| ErrorReply::with_message(StatusCode::BAD_REQUEST, err.code(), err.to_string()))?;
    control
        .set_mode(mode)
        .await
        .map_err(|err| ErrorReply::with_message(StatusCode::INTERNAL_SERVER_ERROR, "rebind_failed", err.to_string()))?;
    info!(?mode, "mode set");
    Ok(mode_view(&control).await.into_response())
}

#[derive(Debug, Deserialize)]
struct IdempotencyRequest {
    mode: IdempotencyPolicy,
}

async fn idempotency(State(control): State<Arc<Control>>) -> Json<serde_json::Value> {
    let policy = control.sim.store.lock().await.idempotency();
    Json(json!({"mode": policy}))
}

async fn set_idempotency(State(control): State<Arc<Control>>, body: Bytes) -> Reply {
    let request: IdempotencyRequest = parse_json(&body)?;
    control.sim.store.lock().await.set_idempotency(request.mode);
    info!(policy = ?request.mode, "idempotency set");
    Ok(Json(json!({"mode": request.mode})).into_response())
}

/// Upserts by phone; `tier`, `name`, `vipFlag` and `status` have defaults.
async fn load_customers(State(control): State<Arc<Control>>, body: Bytes) -> Reply {
    let customers: Vec<Customer> = parse_json(&body)?;
    if let Some(index) = customers.iter().position(|c| c.phone.is_empty() || c.customer_id.is_empty()) {
        return Err(ErrorReply::bad_request(format!("customer {index}: phone and customerId must not be empty")));
    }
    let loaded = control.sim.store.lock().await.upsert_customers(customers, clock::unix_ms());
    Ok(Json(json!({"loaded": loaded})).into_response())
}

#[derive(Debug, Deserialize)]
struct RemoveRequest {
    phones: Vec<String>,
}

/// Removes customers (deleted, or opted out): lookups answer 404 and the
/// paged list shows each as `deleted: true`.
async fn remove_customers(State(control): State<Arc<Control>>, body: Bytes) -> Reply {
    let request: RemoveRequest = parse_json(&body)?;
    let removed = control.sim.store.lock().await.remove_customers(&request.phones, clock::unix_ms());
    Ok(Json(json!({"removed": removed})).into_response())
}

/// Most customers one generate call makes (the 1,000,000 of the sync
/// benchmark fit; memory stays bounded).
const MAX_GENERATED: u64 = 2_000_000;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateRequest {
    count: u64,
    /// Numbers are `+1555` and seven digits from here.
    #[serde(default)]
    first: u64,
}

/// Generates `count` customers, `+15550000000` onwards (customer id
/// `G-` and the same seven digits; tiers `standard`, `gold`, `vip` in
/// turn), for the sync's benchmark.
async fn generate_customers(State(control): State<Arc<Control>>, body: Bytes) -> Reply {
    let request: GenerateRequest = parse_json(&body)?;
    let end = request.first.saturating_add(request.count);
    if request.count > MAX_GENERATED || end > 10_000_000 {
        return Err(ErrorReply::bad_request(format!(
            "count must be at most {MAX_GENERATED} and first + count at most 10000000"
        )));
    }
    const TIERS: [&str; 3] = ["standard", "gold", "vip"];
    let customers = (request.first..end).map(|i| Customer {
        customer_id: format!("G-{i:07}"),
        phone: format!("+1555{i:07}"),
        tier: TIERS[(i % 3) as usize].to_owned(),
        name: String::new(),
        vip_flag: i % 3 == 2,
        status: "active".to_owned(),
        updated_at_ms: 0,
    });
    let generated = control.sim.store.lock().await.upsert_customers(customers.collect(), clock::unix_ms());
    Ok(Json(json!({"generated": generated})).into_response())
}

#[derive(Debug, Deserialize)]
struct TierRequest {
    phone: String,
    tier: String,
    webhook: Option<WebhookTarget>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TierReply {
    phone: String,
    customer_id: String,
    old_tier: String,
    tier: String,
    /// The receiver's status; `null` when no webhook was asked for or it
    /// could not be delivered (then `webhookError` says why).
    webhook_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_error: Option<String>,
}

/// Changes a tier and, when asked, tells failsoft through the signed
/// webhook. The event is sent after the store is unlocked: the receiver may
/// well call the API back.
async fn change_tier(State(control): State<Arc<Control>>, body: Bytes) -> Reply {
    let request: TierRequest = parse_json(&body)?;
    let change = control
        .sim
        .store
        .lock()
        .await
        .set_tier(&request.phone, &request.tier)
        .ok_or_else(|| ErrorReply::new(StatusCode::NOT_FOUND, "not_found"))?;
    let mut reply = TierReply {
        phone: request.phone,
        customer_id: change.customer_id,
        old_tier: change.old_tier,
        tier: request.tier,
        webhook_status: None,
        webhook_error: None,
    };
    if let Some(target) = request.webhook {
        let event = ChangeEvent {
            phone: reply.phone.clone(),
            customer_id: reply.customer_id.clone(),
            field_changed: "tier",
            old_value: reply.old_tier.clone(),
            new_value: reply.tier.clone(),
            changed_at: clock::unix_ms(),
        };
        match webhook::deliver(&control.http, &target, &event).await {
            Ok(status) => reply.webhook_status = Some(status),
            Err(err) => {
                warn!(url = %target.url, %err, "change webhook not delivered");
                reply.webhook_error = Some(err);
            }
        }
    }
    Ok(Json(reply).into_response())
}

async fn ledger(State(control): State<Arc<Control>>) -> Response {
    let store = control.sim.store.lock().await;
    Json(store.ledger()).into_response()
}

/// Every request's `X-Correlation-Id`, oldest first.
async fn correlations(State(control): State<Arc<Control>>) -> Response {
    Json(control.sim.correlations.all()).into_response()
}

/// Every event `POST /events` took, in order, duplicates included.
async fn events(State(control): State<Arc<Control>>) -> Response {
    let store = control.sim.store.lock().await;
    Json(store.events()).into_response()
}

/// `{"limit":50,"windowSecs":1,"headers":"ietf"}`, or `{"limit":null}` without one.
async fn rate_limit(State(control): State<Arc<Control>>) -> Response {
    match control.sim.limiter.limit() {
        Some(limit) => Json(json!(limit)).into_response(),
        None => Json(json!({"limit": null})).into_response(),
    }
}

/// Sets the rate limit (`{"limit":N,"windowSecs":W,"headers":"ietf|x|none"}`)
/// or lifts it (`{"limit":null}`); a new window starts now.
async fn set_rate_limit(State(control): State<Arc<Control>>, body: Bytes) -> Reply {
    let request: serde_json::Value = parse_json(&body)?;
    let limit = if request.get("limit").is_some_and(|l| l.is_null()) {
        None
    } else {
        let limit: RateLimit = serde_json::from_value(request)
            .map_err(|e| ErrorReply::with_message(StatusCode::BAD_REQUEST, "invalid_rate_limit", e.to_string()))?;
        Some(limit.validate().map_err(|e| ErrorReply::with_message(StatusCode::BAD_REQUEST, "invalid_rate_limit", e))?)
    };
    control.sim.limiter.set(limit);
    info!(?limit, "rate limit");
    Ok(rate_limit(State(control)).await)
}

/// Revokes every bearer token a dialect issued: the next API call with one
/// is refused 401 until the client fetches a new token.
/// `{"revoked": <tokens that were still valid>}`.
async fn revoke_tokens(State(control): State<Arc<Control>>) -> Response {
    let revoked = control.sim.tokens.revoke_all(std::time::Instant::now());
    info!(revoked, "bearer tokens revoked");
    Json(json!({"revoked": revoked})).into_response()
}

async fn stats(State(control): State<Arc<Control>>) -> Response {
    Json(control.sim.stats.snapshot()).into_response()
}

async fn reset(State(control): State<Arc<Control>>) -> Reply {
    control
        .reset()
        .await
        .map_err(|err| ErrorReply::with_message(StatusCode::INTERNAL_SERVER_ERROR, "rebind_failed", err.to_string()))?;
    info!("reset");
    Ok(Json(json!({"ok": true})).into_response())
}
