//! The downstream CRM contract, behind the failure-mode middleware.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::header::{CONNECTION, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::watch;
use tracing::debug;

use super::clock;
use super::config::Contract;
use super::correlations;
use super::dialect::{self, Dialect};
use super::mode::{Failure, FailureMode, ModeState, Verdict};
use super::reply::ErrorReply;
use super::state::Sim;
use super::store::{CaseCreation, EventReceipt, LedgerFull, ListPosition};

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The API router; every request passes through [`apply_mode`] first.
pub fn router(sim: Arc<Sim>, contract: Contract) -> Router {
    let (customers, cases) = match contract {
        Contract::Full => (get(lookup), get(find_cases).post(create_case)),
        // No list: a `GET /customers` without `phone` is refused 400, as
        // before the list existed; axum answers the missing GET of /cases
        // with 405 and `Allow: POST`.
        Contract::TwoCall => (get(lookup_only), post(create_case)),
    };
    let router =
        Router::new().route("/customers", customers).route("/cases", cases).route("/events", post(receive_event));
    guarded(router, Arc::clone(&sim), Dialect::Generic).with_state(sim)
}

/// What the failure-mode middleware needs: the simulator, and the dialect
/// whose requests it classifies and whose rate-limit answers it gives.
#[derive(Debug, Clone)]
pub struct Guard {
    pub sim: Arc<Sim>,
    pub dialect: Dialect,
}

/// Puts every route of `router` (and its fallback) behind [`apply_mode`].
pub fn guarded<S: Clone + Send + Sync + 'static>(router: Router<S>, sim: Arc<Sim>, dialect: Dialect) -> Router<S> {
    router.layer(middleware::from_fn_with_state(Guard { sim, dialect }, apply_mode))
}

/// Counts the request and lets the current mode decide its fate.
async fn apply_mode(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let sim = &guard.sim;
    let route = dialect::classify(guard.dialect, request.method(), request.uri());
    sim.stats.request(route);
    if let Some(id) = request.headers().get(correlations::HEADER).and_then(|v| v.to_str().ok()) {
        sim.correlations.record(request.method().as_str(), request.uri().path(), route, id);
    }
    let mut mode = sim.watch_mode();
    let verdict = mode.borrow_and_update().verdict(route, Instant::now());
    debug!(method = %request.method(), path = %request.uri().path(), ?verdict, "API request");
    match verdict {
        Verdict::Pass => limited(&guard, request, next).await,
        Verdict::Delay(latency) => {
            delay(sim, latency).await;
            limited(&guard, request, next).await
        }
        Verdict::Late(latency) => {
            // Carried out first: a caller that gives up during the hold
            // drops only the answer.
            let response = limited(&guard, request, next).await;
            delay(sim, latency).await;
            response
        }
        Verdict::Hang => {
            sim.stats.failed();
            hang(sim, mode).await;
            ErrorReply::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable").into_response()
        }
        Verdict::Refuse => {
            sim.stats.failed();
            let mut response = ErrorReply::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable").into_response();
            response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            response
        }
        Verdict::Fail(failure) => {
            sim.stats.failed();
            failure_response(failure)
        }
    }
}

/// Serves a request the mode lets through, within the rate limit: over it,
/// 429 with `Retry-After`; every answer states the quota (`sim::limit`).
/// A dialect answers as its vendor does ([`dialect::limited`]).
async fn limited(guard: &Guard, request: Request, next: Next) -> Response {
    if guard.dialect != Dialect::Generic {
        return dialect::limited(&guard.sim, guard.dialect, request, next).await;
    }
    let sim = &guard.sim;
    let Some(admission) = sim.limiter.admit(Instant::now()) else {
        return next.run(request).await;
    };
    let mut response = if admission.admitted {
        next.run(request).await
    } else {
        sim.stats.throttled();
        ErrorReply::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited").into_response()
    };
    admission.write_headers(response.headers_mut());
    response
}

/// Sleeps for a `slow` request, cut short by a stop signal.
async fn delay(sim: &Sim, latency: Duration) {
    let mut shutdown = sim.watch_shutdown();
    tokio::select! {
        () = tokio::time::sleep(latency) => {}
        _ = shutdown.wait_for(|stopping| *stopping) => {}
    }
}

/// Holds a request until the mode is no longer `hang` or the process stops.
/// A client that gives up drops the connection, and hyper drops this future.
async fn hang(sim: &Sim, mut mode: watch::Receiver<ModeState>) {
    let mut shutdown = sim.watch_shutdown();
    tokio::select! {
        _ = mode.wait_for(|state| state.mode != FailureMode::Hang) => {}
        _ = shutdown.wait_for(|stopping| *stopping) => {}
    }
}

fn failure_response(failure: Failure) -> Response {
    let status = StatusCode::from_u16(failure.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = ErrorReply::new(status, failure.error).into_response();
    if let Some(secs) = failure.retry_after_secs {
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CustomersQuery {
    phone: Option<String>,
    updated_since: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

/// `GET /customers?phone=` — 404 is a real answer (no such customer).
/// Without `phone`, the paged list ([`list`]).
async fn lookup(State(sim): State<Arc<Sim>>, query: Result<Query<CustomersQuery>, QueryRejection>) -> Response {
    let query = match query {
        Ok(Query(query)) => query,
        Err(err) => return ErrorReply::bad_request(err.body_text()).into_response(),
    };
    let phone = match query.phone {
        None => return list(&sim, query).await,
        Some(phone) if !phone.is_empty() => phone,
        Some(_) => return ErrorReply::bad_request("the phone query parameter is empty").into_response(),
    };
    match sim.store.lock().await.customer(&phone) {
        Some(customer) => Json(customer.clone()).into_response(),
        None => ErrorReply::new(StatusCode::NOT_FOUND, "not_found").into_response(),
    }
}

/// `GET /customers?phone=` of a CRM that offers only the two calls.
async fn lookup_only(sim: State<Arc<Sim>>, query: Result<Query<CustomersQuery>, QueryRejection>) -> Response {
    if let Ok(Query(CustomersQuery { phone: None, .. })) = &query {
        return ErrorReply::bad_request("the phone query parameter is required").into_response();
    }
    lookup(sim, query).await
}

/// The list's page size when none is asked for, and its bounds.
const LIST_LIMIT_DEFAULT: usize = 500;
const LIST_LIMIT_MAX: usize = 1_000;

/// `GET /customers` without `phone`: every customer changed at or after
/// `updatedSince` (RFC 3339; all when absent), in change order, `limit`
/// (1–1000, default 500) at a time; `nextCursor` (opaque) asks for the next
/// page and is `null` on the last. A removed customer is listed as
/// `{"phone", "updatedAt", "deleted": true}`.
async fn list(sim: &Sim, query: CustomersQuery) -> Response {
    let since_ms = match query.updated_since.as_deref().map(parse_rfc3339) {
        None => 0,
        Some(Ok(ms)) => ms,
        Some(Err(())) => return ErrorReply::bad_request("updatedSince must be an RFC 3339 time").into_response(),
    };
    let limit = match query.limit.as_deref().map(str::parse::<usize>) {
        None => LIST_LIMIT_DEFAULT,
        Some(Ok(n)) if (1..=LIST_LIMIT_MAX).contains(&n) => n,
        Some(_) => return ErrorReply::bad_request("limit must be a number from 1 to 1000").into_response(),
    };
    let after = match query.cursor.as_deref().map(decode_cursor) {
        None => None,
        Some(Some(position)) => Some(position),
        Some(None) => return ErrorReply::bad_request("cursor is not one this API gave").into_response(),
    };
    let page = sim.store.lock().await.list(since_ms, after.as_ref(), limit);
    let customers: Vec<Value> = page
        .customers
        .iter()
        .map(|listed| {
            let updated_at = format_rfc3339(listed.updated_at_ms);
            match &listed.customer {
                Some(c) => serde_json::json!({
                    "phone": c.phone, "customerId": c.customer_id, "tier": c.tier,
                    "updatedAt": updated_at, "deleted": false,
                }),
                None => serde_json::json!({"phone": listed.phone, "updatedAt": updated_at, "deleted": true}),
            }
        })
        .collect();
    let next = page.next.map(|position| encode_cursor(&position));
    Json(serde_json::json!({"customers": customers, "nextCursor": next})).into_response()
}

fn parse_rfc3339(text: &str) -> Result<u64, ()> {
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).map_err(|_| ())?;
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).map_err(|_| ())
}

fn format_rfc3339(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|at| at.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// The cursor: `{ms}:{phone}` in hex, opaque to the client.
fn encode_cursor(position: &ListPosition) -> String {
    format!("{}:{}", position.0, position.1).bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(text: &str) -> Option<ListPosition> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect();
    let plain = String::from_utf8(bytes?).ok()?;
    let (ms, phone) = plain.split_once(':')?;
    Some(ListPosition(ms.parse().ok()?, phone.to_owned()))
}

/// The request's `Idempotency-Key`, if it has one.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ErrorReply> {
    match headers.get(IDEMPOTENCY_KEY).map(HeaderValue::to_str) {
        None => Ok(None),
        Some(Ok(key)) => Ok(Some(key.to_owned())),
        Some(Err(_)) => Err(ErrorReply::bad_request("Idempotency-Key must be visible ASCII")),
    }
}

/// `POST /cases` — 201 for a new case, 200 for a key seen before.
async fn create_case(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let key = match idempotency_key(&headers) {
        Ok(key) => key,
        Err(refusal) => return refusal.into_response(),
    };
    let fields: Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(Value::Object(fields)) => fields,
        Ok(_) => return ErrorReply::bad_request("the body must be a JSON object").into_response(),
        Err(err) => {
            return ErrorReply::bad_request(format!("invalid JSON body: {err}")).into_response();
        }
    };
    let creation = sim.store.lock().await.create_case(key, fields, clock::unix_ms());
    match creation {
        Ok(CaseCreation::Created(case)) => {
            sim.stats.case_created();
            (StatusCode::CREATED, Json(case.response())).into_response()
        }
        Ok(CaseCreation::Replayed(case)) => {
            sim.stats.idempotent_replay();
            (StatusCode::OK, Json(case.response())).into_response()
        }
        Err(LedgerFull) => ErrorReply::new(StatusCode::INSUFFICIENT_STORAGE, "ledger_full").into_response(),
    }
}

/// `POST /events` — a Genesys event from the origin: 201 for a new
/// delivery, 200 for a key seen before (while keys are honoured).
async fn receive_event(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let key = match idempotency_key(&headers) {
        Ok(key) => key,
        Err(refusal) => return refusal.into_response(),
    };
    let event: Value = match serde_json::from_slice(&body) {
        Ok(event @ Value::Object(_)) => event,
        Ok(_) => return ErrorReply::bad_request("the body must be a JSON object").into_response(),
        Err(err) => return ErrorReply::bad_request(format!("invalid JSON body: {err}")).into_response(),
    };
    let receipt = sim.store.lock().await.receive_event(key, event, clock::unix_ms());
    match receipt {
        Ok(EventReceipt::Delivered) => {
            sim.stats.event_delivered();
            (StatusCode::CREATED, Json(serde_json::json!({"received": true}))).into_response()
        }
        Ok(EventReceipt::Replayed) => {
            sim.stats.idempotent_replay();
            (StatusCode::OK, Json(serde_json::json!({"received": true, "replayed": true}))).into_response()
        }
        Err(LedgerFull) => ErrorReply::new(StatusCode::INSUFFICIENT_STORAGE, "ledger_full").into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefQuery {
    external_ref: Option<String>,
}

/// `GET /cases?externalRef=` — lets a client look before it creates.
async fn find_cases(State(sim): State<Arc<Sim>>, query: Result<Query<RefQuery>, QueryRejection>) -> Response {
    let external_ref = match query {
        Ok(Query(RefQuery { external_ref: Some(external_ref) })) => external_ref,
        Ok(_) => {
            return ErrorReply::bad_request("the externalRef query parameter is required").into_response();
        }
        Err(err) => return ErrorReply::bad_request(err.body_text()).into_response(),
    };
    let store = sim.store.lock().await;
    let cases: Vec<Value> = store.cases_with_ref(&external_ref).into_iter().map(|case| case.response()).collect();
    Json(cases).into_response()
}
