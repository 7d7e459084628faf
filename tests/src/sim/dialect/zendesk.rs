//! The zendesk dialect (`--dialect zendesk`): Zendesk's Support (Ticketing)
//! API over the simulator's records. Customers are end users (`id` a stable
//! integer per customer, `external_id` the customer id, the tier in
//! `user_fields.tier`); cases are tickets (`id` the ledger position, the
//! ticket's `external_id` the case's external reference in the admin ledger).
//!
//! Served, as these pages document it:
//! - Authentication (<https://support.zendesk.com/hc/en-us/articles/4408831452954>):
//!   API token in Basic auth, `{--zendesk-email}/token:{--zendesk-token}`, or
//!   `Authorization: Bearer <token>` from `POST /oauth/tokens`. Without valid
//!   Basic credentials: 401 `{"error":"Couldn't authenticate you"}` with
//!   `WWW-Authenticate: Basic realm="Web Password"`; with an unknown, expired
//!   or revoked bearer token: 401 `{"error":"invalid_token","error_description":"The access token provided is expired, revoked, malformed or invalid for other reasons."}`.
//! - `POST /oauth/tokens` with `grant_type=client_credentials` (Zendesk has
//!   offered it since March 2025, for confidential clients:
//!   <https://developer.zendesk.com/documentation/api-basics/authentication/api-tokens-to-oauth/>,
//!   <https://developer.zendesk.com/api-reference/ticketing/oauth/grant_type_tokens/>):
//!   a JSON (or form) body `{client_id, client_secret, scope[, expires_in]}`
//!   → 200 `{"access_token","token_type":"bearer","scope","expires_in"}`;
//!   `expires_in` (300 < n < 172800) can only shorten `--token-lifetime-secs`.
//!   Bad client → 401 `{"error":"invalid_client",…}`; another grant → 400
//!   `{"error":"unsupported_grant_type",…}`.
//! - `GET /api/v2/search.json?query=type:user phone:<number>`
//!   (<https://developer.zendesk.com/api-reference/ticketing/ticket-management/search/>)
//!   → 200 `{"results":[<user with "result_type":"user">],"facets":null,"next_page":null,"previous_page":null,"count":N}`.
//!   The value may be bare or in double quotes (which it cannot contain). As
//!   Zendesk's phone search does
//!   (<https://developer.zendesk.com/documentation/voice/talk-partner-edition/retrieving-the-zendesk-user-id-of-a-caller/>),
//!   only the digits count (`+`, spaces and dashes are ignored) and a leading
//!   `*` matches the end of a number. `role:end-user` is accepted too.
//! - `POST /api/v2/tickets.json` `{"ticket":{subject, comment:{body}, external_id, requester, custom_fields, …}}`
//!   → 201 `{"ticket":{"id","url","external_id","subject","description","status":"new","created_at",…}}`
//!   with `Location`
//!   (<https://developer.zendesk.com/api-reference/ticketing/tickets/tickets/>,
//!   <https://developer.zendesk.com/api-reference/introduction/requests/>).
//!   Without a comment body: 422 `{"error":"RecordInvalid","description":"Record validation errors","details":{"base":[{"description":"Description: cannot be blank","error":"BlankValue"}]}}`.
//!   `Idempotency-Key`
//!   (<https://developer.zendesk.com/api-reference/ticketing/introduction/#idempotency>):
//!   the first answer carries `x-idempotency-lookup: miss`; the same key with
//!   the same ticket within two hours gets the original answer again with
//!   `x-idempotency-lookup: hit`; the same key with another ticket, 400
//!   `{"error":"IdempotentRequestError","description":"Request parameters don't match the given idempotency key"}`
//!   (the name and status as the official Java client has them; the text,
//!   window and 255-character bound from integration guides). While the admin
//!   API says `idempotency: ignore`, keys are ignored (no header, every POST
//!   creates).
//! - `GET /api/v2/tickets.json[?external_id=<ref>]`, offset pages of
//!   `per_page` (≤ 100) → `{"tickets":[…],"next_page","previous_page","count"}`;
//!   `GET /api/v2/tickets/{id}.json` → `{"ticket":…}` or 404
//!   `{"error":"RecordNotFound","description":"Not found"}`. Every path
//!   works with or without `.json`.
//! - `GET /api/v2/incremental/users/cursor.json?start_time=<unix secs>[&per_page=N]`,
//!   then `?cursor=<after_cursor>`: the cursor-based incremental user export
//!   (<https://developer.zendesk.com/api-reference/ticketing/ticket-management/incremental_exports/>,
//!   <https://developer.zendesk.com/documentation/ticketing/managing-tickets/using-the-incremental-export-api>)
//!   → 200 `{"users":[…],"after_cursor","after_url","before_cursor":null,"before_url":null,"end_of_stream"}`:
//!   the users changed at or after `start_time`, in change order, `per_page`
//!   at a time (default and most 1,000; a cursor keeps the first request's),
//!   each as the search shows it (without `result_type`), `updated_at` the
//!   change's time. A removed customer is a user with `"active": false`
//!   (its phone kept, `external_id` null, its `id` from the phone: the store
//!   forgets the customer id). `end_of_stream` is true on the page that
//!   reaches the present; `after_cursor` and `after_url` (on the request's
//!   `Host`) are always there, so a later request with them gets what
//!   changed since. Refusals: no `start_time` (and no cursor), one that is
//!   not a number or one in the future, 422
//!   `{"error":"InvalidValue","description":…}` (the future's text begins
//!   "Too recent start_time.", as real answers quote it, e.g. in
//!   treasure-data/embulk-input-zendesk; the rest is the simulator's); a
//!   cursor this API did not give or a `per_page` that is not a number from
//!   1, 400 `{"error":"InvalidPaginationParameter",…}` (the name Zendesk
//!   uses for a bad cursor, dust-tt/dust#8702; the text is the simulator's).
//! - Every answer but the token endpoint's carries `X-Rate-Limit: <limit>` and
//!   `X-Rate-Limit-Remaining: <n>`
//!   (<https://developer.zendesk.com/api-reference/introduction/rate-limits/>);
//!   over `--rate-limit`, 429 with `Retry-After: <secs>` and the plain-text
//!   body `Number of allowed API requests per minute exceeded`, as Zendesk
//!   answers its account-wide limit (observed in
//!   <https://support.zendesk.com/hc/en-us/community/posts/4600766234138> and
//!   airbytehq/airbyte#11035; only per-endpoint limits answer JSON
//!   `{"error":"APIRateLimitExceeded",…}`).
//! - Anything else: 404 `{"error":"InvalidEndpoint","description":"Not found"}`.
//!
//! Simplified: search serves only `type:user` (optional), `role:end-user`
//! and `phone:` terms, and a phone term is required; any other term, free
//! text or an unclosed quote is refused 422 with the search API's error body
//! `{"error":"unavailable","description":"Sorry, we could not complete your search query. Please try again in a moment."}`
//! rather than evaluated. New users and tickets are searchable at once (no
//! indexing delay). Scopes are echoed, not enforced. An invalid JSON body is
//! refused 400 `{"error":"InvalidJSON","description":…}` (Zendesk's exact
//! text is unverified). A ticket's fields are echoed as posted, without
//! Zendesk's validation of statuses, tags or custom fields; `requester`
//! becomes a stable `requester_id`. The window is `--rate-window-secs`
//! rather than a minute, and the token endpoint is not counted. The
//! incremental export includes changes of the last minute (Zendesk leaves
//! them for the next request), is open to the agent's credentials rather
//! than an admin's only, and has no limit of its own (Zendesk allows 10
//! requests a minute); two changes in one millisecond are ordered by phone,
//! so one made in the millisecond of a page's last user but ordered before
//! it would not reach a cursor already past it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::{
    DialectState, Quota, base_url, basic_credentials, bearer_token, form_pairs, header, query_value, stable_id,
};
use crate::sim::clock;
use crate::sim::route::Route;
use crate::sim::store::{Case, Customer, IdempotencyPolicy, LedgerFull, ListPosition};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

type Shared = State<Arc<DialectState>>;

const TOKEN_PATH: &str = "/oauth/tokens";
/// How long an idempotency key names its ticket.
const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(2 * 60 * 60);
const LOOKUP_HEADER: &str = "x-idempotency-lookup";
const PER_PAGE_MAX: usize = 100;
/// The incremental export's page size: its default and most.
const EXPORT_PER_PAGE_MAX: usize = 1_000;
const USER_EXPORT: &str = "/api/v2/incremental/users/cursor.json";
/// `expires_in` bounds of the token endpoint, exclusive.
const EXPIRES_IN: (u64, u64) = (300, 172_800);

pub fn routes() -> Router<Arc<DialectState>> {
    Router::new()
        .route(TOKEN_PATH, post(token))
        .route("/api/v2/search.json", get(search))
        .route("/api/v2/search", get(search))
        .route("/api/v2/tickets.json", get(list_tickets).post(create_ticket))
        .route("/api/v2/tickets", get(list_tickets).post(create_ticket))
        .route("/api/v2/tickets/{id}", get(show_ticket))
        .route(USER_EXPORT, get(export_users))
        .route("/api/v2/incremental/users/cursor", get(export_users))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "InvalidEndpoint", "Not found") })
}

pub fn is_token_path(path: &str) -> bool {
    path == TOKEN_PATH
}

/// A user search is a lookup; the user export the customer list; a ticket
/// create a case creation; reading tickets a case query.
pub fn classify(method: &Method, uri: &Uri) -> Route {
    let path = uri.path();
    let path = path.strip_suffix(".json").unwrap_or(path);
    match (method, path) {
        (&Method::GET, "/api/v2/search") => Route::Lookup,
        (&Method::GET, "/api/v2/incremental/users/cursor") => Route::ListCustomers,
        (&Method::POST, "/api/v2/tickets") => Route::CreateCase,
        (&Method::GET, "/api/v2/tickets") => Route::FindCases,
        (&Method::GET, p) if p.strip_prefix("/api/v2/tickets/").is_some_and(|id| id.parse::<u64>().is_ok()) => {
            Route::FindCases
        }
        _ => Route::Other,
    }
}

/// Zendesk's error body: `{"error", "description"}`.
fn error(status: StatusCode, code: &str, description: &str) -> Response {
    super::json(status, json!({"error": code, "description": description}))
}

pub fn limit_exceeded(retry_after_secs: u64) -> Response {
    let mut response =
        (StatusCode::TOO_MANY_REQUESTS, "Number of allowed API requests per minute exceeded").into_response();
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

pub fn write_quota(quota: Quota, headers: &mut HeaderMap) {
    headers.insert("x-rate-limit", HeaderValue::from(quota.limit));
    headers.insert("x-rate-limit-remaining", HeaderValue::from(quota.limit - quota.used));
}

/// The refusal of a request without a valid API token or bearer token, if
/// it has neither.
fn unauthenticated(state: &DialectState, headers: &HeaderMap) -> Option<Response> {
    if let Some(token) = bearer_token(headers, &["Bearer"]) {
        if state.sim.tokens.is_valid(token, Instant::now()) {
            return None;
        }
        return Some(super::json(
            StatusCode::UNAUTHORIZED,
            json!({
                "error": "invalid_token",
                "error_description":
                    "The access token provided is expired, revoked, malformed or invalid for other reasons.",
            }),
        ));
    }
    let settings = &state.settings;
    let valid = basic_credentials(headers).is_some_and(|(user, password)| {
        user.strip_suffix("/token").is_some_and(|email| email.eq_ignore_ascii_case(&settings.zendesk_email))
            && password == settings.zendesk_token
    });
    if valid {
        return None;
    }
    let mut refusal = super::json(StatusCode::UNAUTHORIZED, json!({"error": "Couldn't authenticate you"}));
    refusal.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"Web Password\""));
    Some(refusal)
}

/// A parameter as text, whether JSON gave a string or a number.
fn text(params: &Map<String, Value>, name: &str) -> Option<String> {
    match params.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `POST /oauth/tokens`: the client credentials grant.
async fn token(State(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let params: Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(Value::Object(params)) => params,
        _ => form_pairs(&String::from_utf8_lossy(&body)).into_iter().map(|(k, v)| (k, Value::from(v))).collect(),
    };
    let oauth_error = |status, error: &str, description: &str| {
        super::json(status, json!({"error": error, "error_description": description}))
    };
    if text(&params, "grant_type").as_deref() != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "The authorization grant type is not supported by the authorization server.",
        );
    }
    let settings = &state.settings;
    let client =
        basic_credentials(&headers).or_else(|| Some((text(&params, "client_id")?, text(&params, "client_secret")?)));
    if client.as_ref().is_none_or(|(id, secret)| *id != settings.client_id || *secret != settings.client_secret) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed due to unknown client, no client authentication included, or unsupported \
             authentication method.",
        );
    }
    let scope = text(&params, "scope").filter(|s| !s.trim().is_empty()).unwrap_or_else(|| "read write".into());
    let asked = text(&params, "expires_in")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| s > &EXPIRES_IN.0 && s < &EXPIRES_IN.1);
    let lifetime = asked.map_or(settings.token_lifetime, |secs| settings.token_lifetime.min(Duration::from_secs(secs)));
    let access_token = state.sim.tokens.issue("", lifetime, Instant::now());
    state.sim.stats.token_issued();
    super::json(
        StatusCode::OK,
        json!({
            "access_token": access_token,
            "token_type": "bearer",
            "scope": scope,
            "expires_in": lifetime.as_secs().max(1),
        }),
    )
}

/// ISO 8601 in UTC to the second, as Zendesk's timestamps are.
fn iso8601(ms: u64) -> String {
    super::utc_text(ms, "[year]-[month]-[day]T[hour]:[minute]:[second]Z")
}

/// A search term the simulator evaluates.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PhoneTerm {
    /// Digits the number's digits equal.
    Exact(String),
    /// Digits the number's digits end with (`phone:*…`).
    EndsWith(String),
}

impl PhoneTerm {
    fn matches(&self, phone: &str) -> bool {
        let have = digits(phone);
        match self {
            Self::Exact(want) => !want.is_empty() && have == *want,
            Self::EndsWith(want) => !want.is_empty() && have.ends_with(want.as_str()),
        }
    }
}

fn digits(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

/// The phone terms of `query`, or `None` for a query the simulator does
/// not serve. `Some(vec![])` never comes back: a phone term is required.
fn parse_search(query: &str) -> Option<Vec<PhoneTerm>> {
    let mut terms = Vec::new();
    let mut rest = query.trim_start();
    while !rest.is_empty() {
        let (key, after) = rest.split_once(':')?;
        if key.is_empty() || key.contains(char::is_whitespace) || key.contains('"') {
            return None;
        }
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => {
                let (value, next) = quoted.split_once('"')?;
                if !(next.is_empty() || next.starts_with(char::is_whitespace)) {
                    return None;
                }
                (value, next)
            }
            None => {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                let value = &after[..end];
                if value.is_empty() || value.contains('"') {
                    return None;
                }
                (value, &after[end..])
            }
        };
        match key.to_ascii_lowercase().as_str() {
            "type" if value.eq_ignore_ascii_case("user") => {}
            "role" if value.eq_ignore_ascii_case("end-user") => {}
            "phone" => terms.push(match value.strip_prefix('*') {
                Some(tail) => PhoneTerm::EndsWith(digits(tail)),
                None => PhoneTerm::Exact(digits(value)),
            }),
            _ => return None,
        }
        rest = next.trim_start();
    }
    (!terms.is_empty()).then_some(terms)
}

/// A customer as a Zendesk end user.
fn user_json(customer: &Customer, base: &str) -> Value {
    let id = stable_id(&customer.customer_id);
    let at = iso8601(customer.updated_at_ms);
    let name = if customer.name.is_empty() { format!("Caller {}", customer.phone) } else { customer.name.clone() };
    json!({
        "id": id,
        "url": format!("{base}/api/v2/users/{id}.json"),
        "name": name,
        "email": null,
        "created_at": at,
        "updated_at": at,
        "time_zone": "UTC",
        "phone": customer.phone,
        "shared_phone_number": false,
        "locale": "en-US",
        "organization_id": null,
        "role": "end-user",
        "verified": false,
        "external_id": customer.customer_id,
        "tags": [],
        "active": customer.status == "active",
        "suspended": false,
        "user_fields": {"tier": customer.tier},
    })
}

/// A customer as a search result: the user and its `result_type`.
fn search_result(customer: &Customer, base: &str) -> Value {
    let mut user = user_json(customer, base);
    user["result_type"] = Value::from("user");
    user
}

/// A removed customer as the incremental export shows it: an inactive
/// user, changed when it was removed.
fn removed_user_json(phone: &str, removed_ms: u64, base: &str) -> Value {
    let id = stable_id(phone);
    let at = iso8601(removed_ms);
    json!({
        "id": id,
        "url": format!("{base}/api/v2/users/{id}.json"),
        "name": format!("Caller {phone}"),
        "email": null,
        "created_at": at,
        "updated_at": at,
        "time_zone": "UTC",
        "phone": phone,
        "shared_phone_number": false,
        "locale": "en-US",
        "organization_id": null,
        "role": "end-user",
        "verified": false,
        "external_id": null,
        "tags": [],
        "active": false,
        "suspended": false,
        "user_fields": {"tier": null},
    })
}

/// `GET /api/v2/search.json?query=`.
async fn search(State(state): Shared, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(refusal) = unauthenticated(&state, &headers) {
        return refusal;
    }
    let Some(terms) = query_value(&uri, "query").and_then(|q| parse_search(&q)) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unavailable",
            "Sorry, we could not complete your search query. Please try again in a moment.",
        );
    };
    let base = base_url(&headers);
    let store = state.sim.store.lock().await;
    let matches = |c: &&Customer| terms.iter().all(|term| term.matches(&c.phone));
    let results: Vec<Value> = match &terms[..] {
        // One exact number: the store's index answers it (its numbers are E.164).
        [PhoneTerm::Exact(d)] => [format!("+{d}"), d.clone()]
            .iter()
            .filter_map(|phone| store.customer(phone))
            .filter(matches)
            .take(1)
            .map(|c| search_result(c, &base))
            .collect(),
        _ => store.customers().filter(matches).map(|c| search_result(c, &base)).collect(),
    };
    let count = results.len();
    super::json(
        StatusCode::OK,
        json!({"results": results, "facets": null, "next_page": null, "previous_page": null, "count": count}),
    )
}

/// Where the incremental export goes on: from a time on (a first request's
/// `start_time`), or after the last user a page showed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ExportFrom {
    /// Changes at or after this time, ms.
    Since(u64),
    /// Changes after this one.
    After(ListPosition),
}

/// An `after_cursor`: where the export goes on and its page size, as
/// base64 text (opaque to the client, as Zendesk's are).
fn encode_export_cursor(from: &ExportFrom, per_page: usize) -> String {
    let plain = match from {
        ExportFrom::Since(ms) => format!("s{ms}|{per_page}"),
        ExportFrom::After(ListPosition(ms, phone)) => format!("a{ms}|{per_page}|{phone}"),
    };
    BASE64.encode(plain)
}

fn decode_export_cursor(cursor: &str) -> Option<(ExportFrom, usize)> {
    // A `+` the client left unencoded arrives as a space.
    let bytes = BASE64.decode(cursor.trim().replace(' ', "+")).ok()?;
    let plain = String::from_utf8(bytes).ok()?;
    let (kind, rest) = plain.split_at_checked(1)?;
    let mut parts = rest.splitn(3, '|');
    let ms = parts.next()?.parse().ok()?;
    let per_page = parts.next()?.parse().ok().filter(|n| (1..=EXPORT_PER_PAGE_MAX).contains(n))?;
    let from = match (kind, parts.next()) {
        ("s", None) => ExportFrom::Since(ms),
        ("a", Some(phone)) => ExportFrom::After(ListPosition(ms, phone.to_owned())),
        _ => return None,
    };
    Some((from, per_page))
}

/// `GET /api/v2/incremental/users/cursor.json?start_time=|cursor=[&per_page=]`.
async fn export_users(State(state): Shared, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(refusal) = unauthenticated(&state, &headers) {
        return refusal;
    }
    let bad_page = |description: &str| error(StatusCode::BAD_REQUEST, "InvalidPaginationParameter", description);
    let asked = match query_value(&uri, "per_page").map(|n| n.parse::<usize>()) {
        None => None,
        Some(Ok(n)) if n >= 1 => Some(n.min(EXPORT_PER_PAGE_MAX)),
        Some(_) => return bad_page("per_page must be a number from 1 to 1000"),
    };
    let invalid = |description: &str| error(StatusCode::UNPROCESSABLE_ENTITY, "InvalidValue", description);
    let (from, per_page) = match query_value(&uri, "cursor") {
        Some(cursor) => match decode_export_cursor(&cursor) {
            Some((from, per_page)) => (from, asked.unwrap_or(per_page)),
            None => return bad_page("cursor is not one this export gave"),
        },
        None => match query_value(&uri, "start_time").map(|t| t.trim().parse::<u64>()) {
            None => return invalid("start_time is required: a Unix epoch time in seconds"),
            Some(Err(_)) => return invalid("start_time must be a Unix epoch time in seconds"),
            Some(Ok(secs)) if secs > clock::unix_secs() => {
                return invalid("Too recent start_time. Use a start_time in the past");
            }
            Some(Ok(secs)) => (ExportFrom::Since(secs.saturating_mul(1000)), asked.unwrap_or(EXPORT_PER_PAGE_MAX)),
        },
    };
    let base = base_url(&headers);
    let page = {
        let store = state.sim.store.lock().await;
        match &from {
            ExportFrom::Since(ms) => store.list(*ms, None, per_page),
            ExportFrom::After(position) => store.list(0, Some(position), per_page),
        }
    };
    let users: Vec<Value> = page
        .customers
        .iter()
        .map(|listed| match &listed.customer {
            Some(customer) => user_json(customer, &base),
            None => removed_user_json(&listed.phone, listed.updated_at_ms, &base),
        })
        .collect();
    let after = match page.customers.last() {
        Some(last) => ExportFrom::After(ListPosition(last.updated_at_ms, last.phone.clone())),
        None => from,
    };
    let after_cursor = encode_export_cursor(&after, per_page);
    let after_url = format!("{base}{USER_EXPORT}?cursor={}", form_component(&after_cursor));
    super::json(
        StatusCode::OK,
        json!({
            "users": users,
            "after_cursor": after_cursor,
            "after_url": after_url,
            "before_cursor": null,
            "before_url": null,
            "end_of_stream": page.next.is_none(),
        }),
    )
}

/// A ticket as the API shows it; `body` is the ticket object as posted.
fn ticket_json(case: &Case, base: &str, agent_id: u64) -> Value {
    let t = &case.body;
    let field = |name: &str| t.get(name).cloned().unwrap_or(Value::Null);
    let list = |name: &str| t.get(name).filter(|v| v.is_array()).cloned().unwrap_or_else(|| json!([]));
    let comment = t.get("comment");
    let description = comment_body(t).unwrap_or_default();
    let requester_id = t.get("requester_id").filter(|v| v.is_u64()).cloned().unwrap_or_else(|| {
        let requester = t.get("requester").and_then(Value::as_object);
        let who = requester.and_then(|r| ["email", "phone", "name"].iter().find_map(|k| r.get(*k)?.as_str()));
        Value::from(who.map_or(agent_id, stable_id))
    });
    let at = iso8601(case.created_at);
    let id: u64 = case.case_id.parse().unwrap_or_default();
    json!({
        "url": format!("{base}/api/v2/tickets/{id}.json"),
        "id": id,
        "external_id": external_id(t),
        "via": {"channel": "api", "source": {"from": {}, "to": {}, "rel": null}},
        "created_at": at,
        "updated_at": at,
        "type": field("type"),
        "subject": field("subject"),
        "raw_subject": field("subject"),
        "description": description,
        "priority": field("priority"),
        "status": t.get("status").and_then(Value::as_str).unwrap_or("new"),
        "recipient": null,
        "requester_id": requester_id,
        "submitter_id": agent_id,
        "assignee_id": field("assignee_id"),
        "organization_id": field("organization_id"),
        "group_id": field("group_id"),
        "collaborator_ids": [],
        "follower_ids": [],
        "email_cc_ids": [],
        "forum_topic_id": null,
        "problem_id": null,
        "has_incidents": false,
        "is_public": comment.and_then(|c| c.get("public")).and_then(Value::as_bool).unwrap_or(true),
        "due_at": null,
        "tags": list("tags"),
        "custom_fields": list("custom_fields"),
        "fields": list("custom_fields"),
        "satisfaction_rating": null,
        "sharing_agreement_ids": [],
        "followup_ids": [],
        "brand_id": null,
        "allow_channelback": false,
        "allow_attachments": true,
        "from_messaging_channel": false,
    })
}

/// The first comment's text: `comment.body`, else `comment.html_body`.
fn comment_body(ticket: &Map<String, Value>) -> Option<String> {
    let comment = ticket.get("comment")?;
    ["body", "html_body"]
        .iter()
        .find_map(|k| comment.get(*k)?.as_str().filter(|s| !s.trim().is_empty()))
        .map(str::to_owned)
}

/// The ticket's `external_id` as text (Zendesk keeps it as a string).
fn external_id(ticket: &Map<String, Value>) -> Option<String> {
    match ticket.get("external_id")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn agent_id(state: &DialectState) -> u64 {
    stable_id(&state.settings.zendesk_email.to_ascii_lowercase())
}

/// 201 with the ticket, its `Location` and, for a keyed request, the lookup.
fn created(case: &Case, base: &str, agent_id: u64, lookup: Option<&'static str>) -> Response {
    let ticket = ticket_json(case, base, agent_id);
    let location = ticket["url"].as_str().map(header);
    let mut response = super::json(StatusCode::CREATED, json!({"ticket": ticket}));
    if let Some(location) = location {
        response.headers_mut().insert(LOCATION, location);
    }
    if let Some(lookup) = lookup {
        response.headers_mut().insert(LOOKUP_HEADER, HeaderValue::from_static(lookup));
    }
    response
}

/// `POST /api/v2/tickets.json`.
async fn create_ticket(State(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refusal) = unauthenticated(&state, &headers) {
        return refusal;
    }
    let key = match headers.get("idempotency-key").map(HeaderValue::to_str) {
        None => None,
        Some(Ok(key)) => Some(key.to_owned()),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "InvalidValue", "Idempotency-Key must be visible ASCII"),
    };
    let ticket = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(mut request)) => match request.remove("ticket") {
            Some(Value::Object(ticket)) => ticket,
            _ => Map::new(),
        },
        Ok(_) => Map::new(),
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidJSON",
                &format!("The request body is not valid JSON: {err}"),
            );
        }
    };
    if comment_body(&ticket).is_none() {
        return super::json(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({
                "error": "RecordInvalid",
                "description": "Record validation errors",
                "details": {"base": [{"description": "Description: cannot be blank", "error": "BlankValue"}]},
            }),
        );
    }
    let base = base_url(&headers);
    let agent = agent_id(&state);
    let now_ms = clock::unix_ms();
    let mut store = state.sim.store.lock().await;
    let keyed = key.as_deref().filter(|_| store.idempotency() == IdempotencyPolicy::Honour);
    if let Some(key) = keyed
        && let Some(earlier) = store.case_for_key(key)
    {
        if u128::from(now_ms.saturating_sub(earlier.created_at)) < IDEMPOTENCY_WINDOW.as_millis() {
            if earlier.body != ticket {
                return error(
                    StatusCode::BAD_REQUEST,
                    "IdempotentRequestError",
                    "Request parameters don't match the given idempotency key",
                );
            }
            let earlier = earlier.clone();
            drop(store);
            state.sim.stats.idempotent_replay();
            return created(&earlier, &base, agent, Some("hit"));
        }
        // The key has expired: it names the ticket created now.
        store.forget_key(key);
    }
    let lookup = keyed.map(|_| "miss");
    let external_ref = external_id(&ticket);
    let creation = store.append_case(key, ticket, external_ref, |index| (index + 1).to_string(), now_ms);
    drop(store);
    match creation {
        Ok(case) => {
            state.sim.stats.case_created();
            created(&case, &base, agent, lookup)
        }
        Err(LedgerFull) => error(StatusCode::INSUFFICIENT_STORAGE, "InsufficientStorage", "The ticket ledger is full"),
    }
}

/// `GET /api/v2/tickets.json[?external_id=][&page=&per_page=]`.
async fn list_tickets(State(state): Shared, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(refusal) = unauthenticated(&state, &headers) {
        return refusal;
    }
    let number = |name: &str| query_value(&uri, name).and_then(|v| v.parse::<usize>().ok()).filter(|n| *n >= 1);
    let page = number("page").unwrap_or(1);
    let per_page = number("per_page").unwrap_or(PER_PAGE_MAX).min(PER_PAGE_MAX);
    let external = query_value(&uri, "external_id");
    let base = base_url(&headers);
    let agent = agent_id(&state);
    let store = state.sim.store.lock().await;
    let all: Vec<&Case> = match &external {
        Some(external) => store.cases_with_ref(external),
        None => store.ledger().iter().collect(),
    };
    let count = all.len();
    let start = (page - 1).saturating_mul(per_page).min(count);
    let tickets: Vec<Value> = all[start..].iter().take(per_page).map(|case| ticket_json(case, &base, agent)).collect();
    let filter = external.map(|e| format!("&external_id={}", form_component(&e))).unwrap_or_default();
    let page_url = |n: usize| format!("{base}/api/v2/tickets.json?page={n}&per_page={per_page}{filter}");
    let next_page = (start + per_page < count).then(|| page_url(page + 1));
    let previous_page = (page > 1).then(|| page_url(page - 1));
    super::json(
        StatusCode::OK,
        json!({"tickets": tickets, "next_page": next_page, "previous_page": previous_page, "count": count}),
    )
}

/// Percent-encodes a query value.
fn form_component(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /api/v2/tickets/{id}.json`.
async fn show_ticket(State(state): Shared, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Some(refusal) = unauthenticated(&state, &headers) {
        return refusal;
    }
    let Ok(id) = id.strip_suffix(".json").unwrap_or(&id).parse::<usize>() else {
        return error(StatusCode::NOT_FOUND, "InvalidEndpoint", "Not found");
    };
    let store = state.sim.store.lock().await;
    match id.checked_sub(1).and_then(|index| store.ledger().get(index)) {
        Some(case) => {
            super::json(StatusCode::OK, json!({"ticket": ticket_json(case, &base_url(&headers), agent_id(&state))}))
        }
        None => error(StatusCode::NOT_FOUND, "RecordNotFound", "Not found"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Served, list_all, profile, seed, seed_at, send, serve};
    use super::super::{Dialect, Settings};
    use super::*;
    use crate::sim::limit::{HeaderStyle, RateLimit};
    use failsoft_shared::mapping::LookupAnswer;

    const AGENT: (&str, &str) = ("agent@example.com/token", "failsoft-test-token");

    async fn served() -> Served {
        super::super::testing::serve_seeded(
            Dialect::Zendesk,
            Settings::default(),
            json!([
                {"phone": "+15550001", "customerId": "C-1", "tier": "gold", "name": "Ann"},
                {"phone": "+15550002", "customerId": "C-2", "tier": "vip"},
            ]),
        )
        .await
    }

    async fn oauth(served: &Served, body: Value) -> reqwest::Response {
        served.http.post(format!("{}/oauth/tokens", served.base)).json(&body).send().await.expect("token request")
    }

    async fn bearer(served: &Served) -> String {
        let body = json!({"grant_type": "client_credentials", "client_id": "failsoft-test-client",
            "client_secret": "failsoft-test-secret", "scope": "read write"});
        let answer: Value = oauth(served, body).await.json().await.expect("json");
        answer["access_token"].as_str().expect("a token").to_owned()
    }

    async fn search(served: &Served, query: &str) -> (u16, Value) {
        let answer = served
            .http
            .get(format!("{}/api/v2/search.json", served.base))
            .query(&[("query", query)])
            .basic_auth(AGENT.0, Some(AGENT.1))
            .send()
            .await
            .expect("search");
        (answer.status().as_u16(), answer.json().await.expect("json"))
    }

    async fn post_ticket(served: &Served, key: Option<&str>, ticket: Value) -> reqwest::Response {
        let mut request = served
            .http
            .post(format!("{}/api/v2/tickets.json", served.base))
            .basic_auth(AGENT.0, Some(AGENT.1))
            .json(&ticket);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.expect("create")
    }

    fn ticket(external_id: &str, subject: &str) -> Value {
        json!({"ticket": {"subject": subject, "comment": {"body": "Called about billing"},
            "external_id": external_id, "requester": {"name": "Ann", "phone": "+15550001"},
            "custom_fields": [{"id": 360001, "value": "gold"}]}})
    }

    #[tokio::test]
    async fn zendesk_issues_oauth_tokens_and_refuses_bad_clients() {
        let served = served().await;
        let body = json!({"grant_type": "client_credentials", "client_id": "failsoft-test-client",
            "client_secret": "failsoft-test-secret", "scope": "read write", "expires_in": 600});
        let answer = oauth(&served, body).await;
        assert_eq!(answer.status(), 200);
        let token: Value = answer.json().await.expect("json");
        assert_eq!((token["token_type"].clone(), token["scope"].clone()), (json!("bearer"), json!("read write")));
        assert_eq!(token["expires_in"], 600, "a shorter lifetime asked for is granted");
        let form = served
            .http
            .post(format!("{}/oauth/tokens", served.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials&client_id=failsoft-test-client&client_secret=failsoft-test-secret")
            .send()
            .await
            .expect("form");
        assert_eq!(form.status(), 200);
        let bad = oauth(
            &served,
            json!({"grant_type": "client_credentials", "client_id": "failsoft-test-client", "client_secret": "x"}),
        )
        .await;
        assert_eq!(bad.status(), 401);
        assert_eq!(bad.json::<Value>().await.expect("json")["error"], "invalid_client");
        let grant = oauth(&served, json!({"grant_type": "password"})).await;
        assert_eq!(grant.status(), 400);
        assert_eq!(grant.json::<Value>().await.expect("json")["error"], "unsupported_grant_type");
        assert_eq!(served.sim.stats.snapshot().tokens_issued, 2);
    }

    #[tokio::test]
    async fn zendesk_searches_users_by_phone() {
        let served = served().await;
        let (status, body) = search(&served, "type:user phone:\"+15550001\"").await;
        assert_eq!(status, 200);
        assert_eq!(
            (body["count"].clone(), body["facets"].clone(), body["next_page"].clone()),
            (json!(1), Value::Null, Value::Null)
        );
        let user = &body["results"][0];
        assert_eq!(user["external_id"], "C-1");
        assert_eq!(user["user_fields"], json!({"tier": "gold"}));
        assert_eq!((user["result_type"].clone(), user["phone"].clone()), (json!("user"), json!("+15550001")));
        assert_eq!(user["id"], stable_id("C-1"));
        assert!(user["id"].is_u64());
        // Bare, digits only, or the end of the number.
        assert_eq!(search(&served, "type:user phone:15550002").await.1["results"][0]["external_id"], "C-2");
        assert_eq!(search(&served, "role:end-user phone:*0002").await.1["count"], 1);
        assert_eq!(search(&served, "type:user phone:*555000").await.1["count"], 0);
        let (status, body) = search(&served, "type:user phone:\"+19990000\"").await;
        assert_eq!((status, body["count"].clone(), body["results"].clone()), (200, json!(0), json!([])));
        // What the simulator does not evaluate is refused, not answered empty.
        for query in ["type:user", "phone:\"+1555", "type:user \"Ann\"", "type:ticket phone:1", "phone:\"1\"x"] {
            let (status, body) = search(&served, query).await;
            assert_eq!((status, body["error"].clone()), (422, json!("unavailable")), "{query}");
        }
        assert_eq!(served.sim.stats.snapshot().lookups, 10);
    }

    #[tokio::test]
    async fn zendesk_creates_tickets_and_finds_them_by_external_id() {
        let served = served().await;
        let answer = post_ticket(&served, None, ticket("R-1", "Call")).await;
        assert_eq!(answer.status(), 201);
        assert!(answer.headers().get(LOOKUP_HEADER).is_none(), "no key, no lookup");
        let location = answer.headers()[LOCATION].to_str().expect("ascii").to_owned();
        let body: Value = answer.json().await.expect("json");
        let t = &body["ticket"];
        assert_eq!(
            (t["id"].clone(), t["external_id"].clone(), t["status"].clone()),
            (json!(1), json!("R-1"), json!("new"))
        );
        assert_eq!(location, format!("{}/api/v2/tickets/1.json", served.base));
        assert_eq!(t["url"], location.as_str());
        assert_eq!((t["subject"].clone(), t["description"].clone()), (json!("Call"), json!("Called about billing")));
        assert_eq!(t["requester_id"], stable_id("+15550001"));
        assert!(t["created_at"].as_str().is_some_and(|at| at.len() == 20 && at.ends_with('Z')));
        post_ticket(&served, None, ticket("R-2", "Other")).await;
        post_ticket(&served, None, ticket("R-1", "Again")).await;
        {
            let store = served.sim.store.lock().await;
            assert_eq!(store.cases_with_ref("R-1").len(), 2);
            assert_eq!(store.ledger()[1].case_id, "2");
        }
        let found: Value = served
            .http
            .get(format!("{}/api/v2/tickets.json", served.base))
            .query(&[("external_id", "R-1")])
            .basic_auth(AGENT.0, Some(AGENT.1))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        assert_eq!((found["count"].clone(), found["next_page"].clone()), (json!(2), Value::Null));
        let ids: Vec<u64> =
            found["tickets"].as_array().expect("tickets").iter().filter_map(|t| t["id"].as_u64()).collect();
        assert_eq!(ids, [1, 3]);
        let page: Value = served
            .http
            .get(format!("{}/api/v2/tickets?per_page=2", served.base))
            .basic_auth(AGENT.0, Some(AGENT.1))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        assert_eq!(page["next_page"], format!("{}/api/v2/tickets.json?page=2&per_page=2", served.base).as_str());
        let one = served.http.get(&location).basic_auth(AGENT.0, Some(AGENT.1)).send().await.expect("show");
        assert_eq!(one.json::<Value>().await.expect("json")["ticket"]["id"], 1);

        let blank = post_ticket(&served, None, json!({"ticket": {"subject": "no comment"}})).await;
        assert_eq!(blank.status(), 422);
        assert_eq!(
            blank.json::<Value>().await.expect("json"),
            json!({"error": "RecordInvalid", "description": "Record validation errors",
                "details": {"base": [{"description": "Description: cannot be blank", "error": "BlankValue"}]}})
        );
        let stats = served.sim.stats.snapshot();
        assert_eq!((stats.creates, stats.cases_created, stats.case_queries), (4, 3, 3));
    }

    #[tokio::test]
    async fn zendesk_idempotency_hit_and_mismatch() {
        let served = served().await;
        let first = post_ticket(&served, Some("key-1"), ticket("R-1", "Call")).await;
        assert_eq!(
            (first.status().as_u16(), first.headers()[LOOKUP_HEADER].clone()),
            (201, HeaderValue::from_static("miss"))
        );
        let first: Value = first.json().await.expect("json");
        let again = post_ticket(&served, Some("key-1"), ticket("R-1", "Call")).await;
        assert_eq!(
            (again.status().as_u16(), again.headers()[LOOKUP_HEADER].clone()),
            (201, HeaderValue::from_static("hit"))
        );
        assert_eq!(again.json::<Value>().await.expect("json"), first, "the original answer");
        let other = post_ticket(&served, Some("key-1"), ticket("R-1", "Changed")).await;
        assert_eq!(other.status(), 400);
        assert_eq!(
            other.json::<Value>().await.expect("json"),
            json!({"error": "IdempotentRequestError", "description": "Request parameters don't match the given idempotency key"})
        );
        assert_eq!(served.sim.store.lock().await.ledger().len(), 1);
        assert_eq!(served.sim.stats.snapshot().idempotent_replays, 1);
        // A CRM told to ignore keys creates every time, without the header.
        served.sim.store.lock().await.set_idempotency(IdempotencyPolicy::Ignore);
        let ignored = post_ticket(&served, Some("key-1"), ticket("R-1", "Call")).await;
        assert_eq!(ignored.status(), 201);
        assert!(ignored.headers().get(LOOKUP_HEADER).is_none());
        assert_eq!(served.sim.store.lock().await.cases_with_ref("R-1").len(), 2);
    }

    #[tokio::test]
    async fn zendesk_refuses_missing_bad_and_revoked_credentials() {
        let served = served().await;
        let url = format!("{}/api/v2/search.json?query=phone:15550001", served.base);
        let none = served.http.get(&url).send().await.expect("search");
        assert_eq!(none.status(), 401);
        assert_eq!(none.headers()[WWW_AUTHENTICATE], "Basic realm=\"Web Password\"");
        assert_eq!(none.json::<Value>().await.expect("json"), json!({"error": "Couldn't authenticate you"}));
        let wrong = served.http.get(&url).basic_auth(AGENT.0, Some("nope")).send().await.expect("search");
        assert_eq!(wrong.status(), 401);
        let password =
            served.http.get(&url).basic_auth("agent@example.com", Some(AGENT.1)).send().await.expect("search");
        assert_eq!(password.status(), 401, "the token needs the /token suffix");
        let token = bearer(&served).await;
        assert_eq!(served.http.get(&url).bearer_auth(&token).send().await.expect("search").status(), 200);
        served.sim.tokens.revoke_all(Instant::now());
        let revoked = served.http.get(&url).bearer_auth(&token).send().await.expect("search");
        assert_eq!(revoked.status(), 401);
        assert_eq!(revoked.json::<Value>().await.expect("json")["error"], "invalid_token");
        let fresh = bearer(&served).await;
        assert_eq!(served.http.get(&url).bearer_auth(&fresh).send().await.expect("search").status(), 200);
    }

    #[tokio::test]
    async fn zendesk_rate_limit_headers_and_429() {
        let served = served().await;
        let url = format!("{}/api/v2/search.json?query=phone:15550001", served.base);
        let get = || served.http.get(&url).basic_auth(AGENT.0, Some(AGENT.1)).send();
        let nominal = get().await.expect("search");
        assert_eq!(nominal.headers()["x-rate-limit"], super::super::NOMINAL_ALLOWANCE.to_string().as_str());
        served.sim.limiter.set(Some(RateLimit { limit: 2, window_secs: 60, headers: HeaderStyle::Ietf }));
        for remaining in [1, 0] {
            let answer = get().await.expect("search");
            assert_eq!(answer.status(), 200);
            assert_eq!(answer.headers()["x-rate-limit"], "2");
            assert_eq!(answer.headers()["x-rate-limit-remaining"], remaining.to_string().as_str());
            assert!(answer.headers().get("ratelimit-limit").is_none(), "the vendor's headers only");
        }
        let refused = get().await.expect("search");
        assert_eq!(refused.status(), 429);
        assert!(
            refused.headers()[RETRY_AFTER]
                .to_str()
                .is_ok_and(|s| s.parse::<u64>().is_ok_and(|n| (1..=60).contains(&n)))
        );
        assert_eq!(refused.headers()["x-rate-limit-remaining"], "0");
        assert!(refused.headers()[CONTENT_TYPE].to_str().is_ok_and(|t| t.starts_with("text/plain")));
        assert_eq!(refused.text().await.expect("text"), "Number of allowed API requests per minute exceeded");
        assert_eq!(served.sim.stats.snapshot().throttled, 1);
    }

    /// A whole second an hour ago, on a fresh simulator: a customer changed
    /// before it, five at it and after it (a second apart), one removed
    /// after it and one removed before it.
    async fn changes() -> (Served, u64) {
        let served = serve(Dialect::Zendesk, Settings::default()).await;
        let since = (clock::unix_ms() / 1000 - 3600) * 1000;
        let one = |phone: &str, id: &str| json!([{"phone": phone, "customerId": id, "tier": "gold"}]);
        seed_at(&served.sim, one("+15550000", "C-0"), since - 1000).await;
        seed_at(&served.sim, one("+15550007", "C-7"), since - 2000).await;
        for k in 1..=5_u64 {
            seed_at(&served.sim, one(&format!("+1555000{k}"), &format!("C-{k}")), since + (k - 1) * 1000).await;
        }
        seed_at(&served.sim, one("+15550006", "C-6"), since).await;
        let mut store = served.sim.store.lock().await;
        store.remove_customers(&["+15550006".to_owned()], since + 10_000);
        store.remove_customers(&["+15550007".to_owned()], since - 500);
        drop(store);
        (served, since)
    }

    async fn export(served: &Served, url: &str) -> (u16, Value) {
        let answer = served.http.get(url).basic_auth(AGENT.0, Some(AGENT.1)).send().await.expect("export");
        (answer.status().as_u16(), answer.json().await.expect("json"))
    }

    #[tokio::test]
    async fn zendesk_exports_users_changed_since_by_cursor() {
        let (served, since) = changes().await;
        let start = format!("{}{USER_EXPORT}?start_time={}&per_page=2", served.base, since / 1000);
        let (status, first) = export(&served, &start).await;
        assert_eq!(status, 200, "{first}");
        assert_eq!((first["before_cursor"].clone(), first["before_url"].clone()), (Value::Null, Value::Null));
        assert_eq!(first["end_of_stream"], false);
        let cursor = first["after_cursor"].as_str().expect("a cursor");
        assert_eq!(
            first["after_url"],
            format!("{}{USER_EXPORT}?cursor={}", served.base, form_component(cursor)).as_str()
        );
        let user = &first["users"][0];
        assert_eq!(
            (user["external_id"].clone(), user["phone"].clone(), user["active"].clone(), user["user_fields"].clone()),
            (json!("C-1"), json!("+15550001"), json!(true), json!({"tier": "gold"}))
        );
        assert_eq!(user["updated_at"], iso8601(since).as_str());
        assert_eq!(user["id"], stable_id("C-1"));
        assert!(user.get("result_type").is_none(), "a search's field only");

        let mut users: Vec<Value> = first["users"].as_array().expect("users").clone();
        let mut next = first["after_url"].as_str().map(str::to_owned);
        let mut pages = 1;
        let mut last = Value::Null;
        while let Some(url) = next.take() {
            let (status, page) = export(&served, &url).await;
            assert_eq!(status, 200, "{page}");
            users.extend(page["users"].as_array().expect("users").iter().cloned());
            pages += 1;
            if page["end_of_stream"] == false {
                next = page["after_url"].as_str().map(str::to_owned);
            }
            last = page;
        }
        assert_eq!(pages, 3, "6 users, 2 a page");
        let seen: Vec<(&str, bool)> =
            users.iter().map(|u| (u["phone"].as_str().unwrap_or(""), u["active"] == true)).collect();
        assert_eq!(seen, expected_order(), "each change at or after `since` once, in change order");
        assert!(last["after_url"].is_string() && last["after_cursor"].is_string(), "present at the end too");

        // The last cursor goes on from there: a later change, and only it.
        let end = last["after_url"].as_str().expect("after_url").to_owned();
        assert_eq!(export(&served, &end).await.1["users"], json!([]));
        seed(&served.sim, json!([{"phone": "+15550002", "customerId": "C-2", "tier": "vip"}])).await;
        let (_, later) = export(&served, &end).await;
        assert_eq!(later["users"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            (later["users"][0]["external_id"].clone(), later["end_of_stream"].clone()),
            (json!("C-2"), json!(true))
        );
        // A start_time of the epoch exports everyone, the removed included.
        let (_, all) = export(&served, &format!("{}{USER_EXPORT}?start_time=0", served.base)).await;
        assert_eq!((all["users"].as_array().map(Vec::len), all["end_of_stream"].clone()), (Some(8), json!(true)));
        assert_eq!(served.sim.stats.snapshot().lists, 6);
    }

    /// Each changed customer once, in change order: the removal of +15550006
    /// comes after the others' changes.
    fn expected_order() -> Vec<(&'static str, bool)> {
        vec![
            ("+15550001", true),
            ("+15550002", true),
            ("+15550003", true),
            ("+15550004", true),
            ("+15550005", true),
            ("+15550006", false),
        ]
    }

    #[tokio::test]
    async fn zendesk_export_refuses_bad_start_times_cursors_and_page_sizes() {
        let (served, since) = changes().await;
        let url = |query: &str| format!("{}{USER_EXPORT}?{query}", served.base);
        for query in ["", "per_page=10", "start_time=yesterday", &format!("start_time={}", clock::unix_secs() + 3600)] {
            let (status, body) = export(&served, &url(query)).await;
            assert_eq!((status, body["error"].clone()), (422, json!("InvalidValue")), "{query}: {body}");
        }
        let (_, future) = export(&served, &url(&format!("start_time={}", clock::unix_secs() + 3600))).await;
        assert!(future["description"].as_str().is_some_and(|d| d.starts_with("Too recent start_time.")));
        let forged = BASE64.encode("a1|5000|+1");
        for query in ["cursor=nope", "cursor=bm9wZQ%3D%3D", &format!("cursor={}", form_component(&forged))] {
            let (status, body) = export(&served, &url(query)).await;
            assert_eq!((status, body["error"].clone()), (400, json!("InvalidPaginationParameter")), "{query}");
        }
        for per_page in ["0", "x", "-1"] {
            let (status, _) = export(&served, &url(&format!("start_time=0&per_page={per_page}"))).await;
            assert_eq!(status, 400, "{per_page}");
        }
        let (status, big) = export(&served, &url(&format!("start_time={}&per_page=5000", since / 1000))).await;
        assert_eq!((status, big["users"].as_array().map(Vec::len)), (200, Some(6)), "at most 1000 a page");
        // The cursor keeps its page size; a per_page beside it changes it.
        let (_, first) = export(&served, &url(&format!("start_time={}&per_page=4", since / 1000))).await;
        let cursor = form_component(first["after_cursor"].as_str().expect("cursor"));
        assert_eq!(
            export(&served, &url(&format!("cursor={cursor}"))).await.1["users"].as_array().map(Vec::len),
            Some(2)
        );
        let (_, one) = export(&served, &url(&format!("cursor={cursor}&per_page=1"))).await;
        assert_eq!((one["users"].as_array().map(Vec::len), one["end_of_stream"].clone()), (Some(1), json!(false)));
        let anonymous = served.http.get(url("start_time=0")).send().await.expect("export");
        assert_eq!(anonymous.status(), 401);
        assert_eq!(
            decode_export_cursor(&encode_export_cursor(&ExportFrom::Since(5), 7)),
            Some((ExportFrom::Since(5), 7))
        );
        let after = ExportFrom::After(ListPosition(9, "+1|2".into()));
        assert_eq!(decode_export_cursor(&encode_export_cursor(&after, 1)), Some((after, 1)));
    }

    /// The shipped profile `deploy/crm/zendesk.toml`, unmodified: a lookup,
    /// and the incremental export followed to the end of the stream.
    #[tokio::test]
    async fn zendesk_serves_the_shipped_profile() {
        let (served, since) = changes().await;
        let mapping = profile(
            "zendesk",
            &[("FAILSOFT_CRM_USERNAME", "agent@example.com"), ("FAILSOFT_CRM_API_TOKEN", "failsoft-test-token")],
        );
        let (status, body) =
            send(&served.http, mapping.lookup(&served.base, "+15550003", "corr-1", None).expect("lookup")).await;
        assert_eq!(status, 200);
        match mapping.read_customer(&body, "standard") {
            LookupAnswer::Found(record) => {
                assert_eq!((record.customer_id.as_str(), record.tier.as_str()), ("C-3", "gold"))
            }
            other => panic!("{other:?}"),
        }
        let pages = list_all(&served.http, &mapping, &served.base, since, 2, None).await;
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2], "per_page is the page size");
        let listed: Vec<_> = pages.into_iter().flatten().collect();
        let seen: Vec<(&str, bool)> = listed.iter().map(|c| (c.phone.as_deref().unwrap_or(""), c.deleted)).collect();
        let want: Vec<(&str, bool)> = expected_order().into_iter().map(|(p, active)| (p, !active)).collect();
        assert_eq!(seen, want, "each change at or after `since` once; the removal as one");
        assert_eq!(listed[0].customer_id.as_deref(), Some("C-1"));
        assert_eq!(listed[0].tier.as_deref(), Some("gold"));
        assert_eq!(listed[0].updated_at.as_deref(), Some(iso8601(since).as_str()));
        // From the epoch: everyone once, both removals among them.
        let all: Vec<_> =
            list_all(&served.http, &mapping, &served.base, 0, 1000, None).await.into_iter().flatten().collect();
        assert_eq!((all.len(), all.iter().filter(|c| c.deleted).count()), (8, 2));
        assert_eq!(served.sim.stats.snapshot().lists, 3 + 1);
    }

    #[tokio::test]
    async fn zendesk_unknown_paths_and_classification() {
        let served = served().await;
        let answer = served.http.get(format!("{}/api/v2/users.json", served.base)).send().await.expect("get");
        assert_eq!(answer.status(), 404);
        assert_eq!(
            answer.json::<Value>().await.expect("json"),
            json!({"error": "InvalidEndpoint", "description": "Not found"})
        );
        let uri = |u: &str| u.parse::<Uri>().expect("uri");
        assert_eq!(classify(&Method::GET, &uri("/api/v2/search.json?query=phone:1")), Route::Lookup);
        assert_eq!(classify(&Method::POST, &uri("/api/v2/tickets.json")), Route::CreateCase);
        assert_eq!(classify(&Method::GET, &uri("/api/v2/tickets?external_id=R")), Route::FindCases);
        assert_eq!(classify(&Method::GET, &uri("/api/v2/tickets/12.json")), Route::FindCases);
        assert_eq!(classify(&Method::POST, &uri("/oauth/tokens")), Route::Other);
        assert_eq!(
            classify(&Method::GET, &uri("/api/v2/incremental/users/cursor.json?cursor=x")),
            Route::ListCustomers
        );
    }

    #[test]
    fn search_terms() {
        assert_eq!(parse_search("type:user phone:\"+1 555-0001\""), Some(vec![PhoneTerm::Exact("15550001".into())]));
        assert_eq!(parse_search("  phone:*0001 "), Some(vec![PhoneTerm::EndsWith("0001".into())]));
        assert_eq!(parse_search("type:user phone:\"+1\" type:ticket"), None, "an injected term is not evaluated");
        assert_eq!(parse_search("phone:\"+1\"\"\""), None);
        assert_eq!(parse_search(""), None);
    }
}
