//! The hubspot dialect (`--dialect hubspot`): HubSpot's CRM API v3 over the
//! simulator's records. Customers are contacts (`id` the customer id, the
//! tier in the contact property `failsoft_tier`); cases are tickets (`id` a
//! numeric string counting up, the ticket property `--hubspot-ref-property`,
//! default `failsoft_ref`, the case's external reference in the admin
//! ledger).
//!
//! Served, as these pages document it:
//! - Authentication: a private app's access token,
//!   `Authorization: Bearer <--hubspot-token>`
//!   (<https://developers.hubspot.com/docs/api-reference/latest/crm/objects/contacts/create-contact>).
//!   Without it, or with another: 401
//!   `{"status":"error","message":"Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview","correlationId":"<uuid>","category":"INVALID_AUTHENTICATION"}`
//!   (the shape of <https://developers.hubspot.com/changelog/improvements-to-authentication-errors-for-v3-endpoints-in-developer-preview-program>;
//!   the text as real answers quote it). Every answer carries its
//!   `correlationId` in `X-HubSpot-Correlation-Id` too.
//! - `POST /crm/v3/objects/contacts/search` and `POST
//!   /crm/v3/objects/tickets/search` (<https://developers.hubspot.com/docs-beta/crm/search>,
//!   <https://developers.hubspot.com/changelog/breaking-change-expanded-filtering-capabilities-and-error-messaging-in-hubspots-search-api>):
//!   `{"filterGroups":[{"filters":[{"propertyName","operator","value"|"values"}]}],"sorts":[…],"properties":[…],"limit":N,"after":"…"}`;
//!   groups are ORed, a group's filters ANDed; at most 5 groups, 10 filters
//!   a group and 25 in all; `limit` 1 to 200 (default 10); no
//!   `filterGroups` lists every record. `sorts` holds at most one sort,
//!   `{"propertyName","direction":"ASCENDING"|"DESCENDING"}` or the name
//!   alone (ascending; `-name` descending), as the search guide has it
//!   (<https://developers.hubspot.com/docs/api-reference/2026-03/crm/search-the-crm>).
//!   `after` is the paging cursor, an offset as HubSpot's is. → 200
//!   `{"total":N,"results":[{"id","properties":{…},"createdAt","updatedAt","archived":false}]}`
//!   and `"paging":{"next":{"after","link"}}` when more results follow (none
//!   on the last page). So "contacts changed since T", the pre-warm sync's
//!   list, is a `lastmodifieddate GTE <epoch ms>` filter sorted ascending,
//!   followed by `paging.next.after`; removed customers are not listed
//!   (archived contacts are not searchable).
//!   `properties` names what each result shows, besides `hs_object_id`,
//!   `createdate` and `lastmodifieddate` (contacts) or `hs_lastmodifieddate`
//!   (tickets), which always come; a known property without a value is
//!   `null`, an unknown one left out. Without `properties`, the object's
//!   defaults (contacts: `createdate email firstname hs_object_id
//!   lastmodifieddate lastname`). Every value is a string. Refusals, 400
//!   `{"status":"error","message",…,"category":"VALIDATION_ERROR"}`: a body
//!   that is not JSON or not the shape above, an unknown operator, too many
//!   groups or filters, a `limit` over 200.
//! - `POST /crm/v3/objects/tickets`
//!   (<https://developers.hubspot.com/docs/api-reference/legacy/crm/objects/tickets/guide>):
//!   `{"properties":{"hs_pipeline","hs_pipeline_stage","subject","content",…},"associations":[…]}`
//!   → 201 `{"id","properties":{…,"hs_object_id","createdate","hs_lastmodifieddate"},"createdAt","updatedAt","archived":false}`
//!   (`hs_pipeline` defaults to `"0"`, the default pipeline). Without
//!   `subject` or `hs_pipeline_stage`: 400 `"Cannot create object with type:
//!   TICKET. The following required properties were missing: [...]"`
//!   (VALIDATION_ERROR, as real answers quote it). HubSpot documents no
//!   idempotency key: `Idempotency-Key` is ignored. The ref property
//!   "requires unique values"
//!   (<https://developers.hubspot.com/changelog/updating-objects-by-custom-field-and-adding-owner-properties-via-the-api>):
//!   a second ticket with a value a ticket already has is refused 400
//!   `"Cannot set PropertyValueCoordinates{portalId=…, objectTypeId=ObjectTypeId{legacyObjectType=TICKET}, propertyName=<ref>, value=<value>} on <id>. <existing id> already has that value."`
//!   with category `VALIDATION_ERROR`. HubSpot documents no shape for this
//!   refusal; this is the one real answers show for a unique property on a
//!   create (the 409 `CONFLICT` "Contact already exists. Existing ID: …" is
//!   the contacts' own e-mail check, not a unique property's).
//! - `GET /crm/v3/objects/tickets/{id}[?idProperty=<ref>&properties=a,b]`:
//!   one ticket, by id or by the value of the (unique) ref property → 200
//!   the ticket, or 404 `{"status":"error","message":"resource not
//!   found","correlationId","category":"OBJECT_NOT_FOUND"}`.
//! - Every answer carries `X-HubSpot-RateLimit-Max`,
//!   `X-HubSpot-RateLimit-Remaining` and
//!   `X-HubSpot-RateLimit-Interval-Milliseconds` (the window of
//!   `--rate-window-secs`; 10 000 for the nominal allowance); over
//!   `--rate-limit`, 429
//!   `{"status":"error","message":"You have reached your ten_secondly_rolling limit.","errorType":"RATE_LIMIT","correlationId","policyName":"TEN_SECONDLY_ROLLING"}`
//!   (the shape of <https://developers.hubspot.com/docs/api/usage-details>)
//!   and no `Retry-After`, which HubSpot does not document.
//! - Anything else: 404 `{"status":"error","message":"resource not found","correlationId"}`.
//!
//! Simplified: one portal and one private app token, which never expires
//! and which `POST /admin/tokens/revoke` does not touch (a private app's
//! token changes only when rotated in HubSpot). A contact's `id` is the
//! customer id, not a numeric string as HubSpot's are, so the admin ledger
//! and the lookup name the customer alike; its `createdAt` is its last
//! change (the store keeps no creation time). Operators served: `EQ`, `NEQ`
//! (a record without the property matches), `IN`, `NOT_IN`, `HAS_PROPERTY`,
//! `NOT_HAS_PROPERTY`, all comparing strings exactly, and `GTE` on the date
//! properties (`createdate`, `lastmodifieddate`, `hs_lastmodifieddate`),
//! whose value is epoch milliseconds (or an ISO 8601 time), compared as
//! instants; `LT`, `LTE`, `GT`, `BETWEEN`, `CONTAINS_TOKEN`,
//! `NOT_CONTAINS_TOKEN` and `GTE` on other properties are refused rather
//! than evaluated, as are `query` and unknown body fields. Without `sorts`,
//! contacts come by last change and tickets by creation; a sort keeps that
//! order among equals, compares date properties as instants and other
//! values as text, and puts records without the property last. Search's
//! 10,000-result ceiling is not enforced. Any
//! property name may be filtered on (a record without it has none). New
//! records are searchable at once (HubSpot's search lags by seconds).
//! Ticket properties are stored as posted (numbers and booleans as text),
//! without HubSpot's check that a property, pipeline or stage exists; the
//! texts of the refusals of a malformed search are the simulator's own.
//! Only the `/crm/v3/` paths are served, not the date-versioned
//! `/crm/objects/2026-03/` ones. The rate limit is one fixed window for
//! every endpoint, with no daily allowance and no separate search limit;
//! real search answers reportedly carry no `X-HubSpot-RateLimit-*` headers.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::{DialectState, Quota, bearer_token, header, query_value};
use crate::sim::clock;
use crate::sim::route::Route;
use crate::sim::store::{Case, Customer, LedgerFull};

type Shared = State<Arc<DialectState>>;

const CONTACT_SEARCH: &str = "/crm/v3/objects/contacts/search";
const TICKETS: &str = "/crm/v3/objects/tickets";
const TICKET_SEARCH: &str = "/crm/v3/objects/tickets/search";
/// The contact property holding the routing tier (the profile's `tier_property`).
pub const TIER_PROPERTY: &str = "failsoft_tier";
/// The simulated portal (HubSpot account) id, in refusals that name it.
const PORTAL_ID: u64 = 24_000_001;
/// Ticket ids count up from here (HubSpot's are large numeric strings).
const TICKET_ID_BASE: u64 = 5_000_000_000;
const LIMIT_DEFAULT: usize = 10;
const LIMIT_MAX: usize = 200;
const MAX_GROUPS: usize = 5;
const MAX_FILTERS_PER_GROUP: usize = 10;
const MAX_FILTERS: usize = 25;
/// The window the nominal allowance states, ms (HubSpot's burst window).
const NOMINAL_INTERVAL_MS: u64 = 10_000;
const CORRELATION_HEADER: &str = "x-hubspot-correlation-id";
const AUTH_MESSAGE: &str = "Authentication credentials not found. This API supports OAuth 2.0 authentication and you \
                            can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview";
const OPERATORS: &[&str] = &[
    "EQ",
    "NEQ",
    "LT",
    "LTE",
    "GT",
    "GTE",
    "BETWEEN",
    "IN",
    "NOT_IN",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
    "CONTAINS_TOKEN",
    "NOT_CONTAINS_TOKEN",
];
/// Contact properties the simulator knows (shown as `null` when unset).
const CONTACT_PROPERTIES: &[&str] =
    &["hs_object_id", "createdate", "lastmodifieddate", "phone", TIER_PROPERTY, "firstname", "lastname", "email"];
const CONTACT_DEFAULTS: &[&str] = &["createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"];
const CONTACT_ALWAYS: &[&str] = &["hs_object_id", "createdate", "lastmodifieddate"];
/// Properties holding a time: `GTE` compares them as instants, sorts too.
const DATE_PROPERTIES: &[&str] = &["createdate", "lastmodifieddate", "hs_lastmodifieddate"];
/// Standard ticket properties (shown as `null` when unset).
const TICKET_PROPERTIES: &[&str] = &[
    "hs_object_id",
    "createdate",
    "hs_lastmodifieddate",
    "subject",
    "content",
    "hs_pipeline",
    "hs_pipeline_stage",
    "hs_ticket_priority",
    "hs_ticket_category",
];
const TICKET_DEFAULTS: &[&str] = &[
    "content",
    "createdate",
    "hs_lastmodifieddate",
    "hs_object_id",
    "hs_pipeline",
    "hs_pipeline_stage",
    "hs_ticket_category",
    "hs_ticket_priority",
    "subject",
];
const TICKET_ALWAYS: &[&str] = &["hs_object_id", "createdate", "hs_lastmodifieddate"];
/// Ticket properties a create must set.
const TICKET_REQUIRED: &[&str] = &["hs_pipeline_stage", "subject"];

pub fn routes() -> Router<Arc<DialectState>> {
    Router::new()
        .route(CONTACT_SEARCH, post(search_contacts))
        .route(TICKETS, post(create_ticket))
        .route(TICKET_SEARCH, post(search_tickets))
        .route("/crm/v3/objects/tickets/{id}", get(read_ticket))
        .fallback(|| async {
            answer(
                StatusCode::NOT_FOUND,
                |id| json!({"status": "error", "message": "resource not found", "correlationId": id}),
            )
        })
}

/// A contact search is a lookup; a ticket create a case creation; a ticket
/// search or read a case query. Both searches are POSTs: the path decides.
pub fn classify(method: &Method, uri: &Uri) -> Route {
    match (method, uri.path()) {
        (&Method::POST, CONTACT_SEARCH) => Route::Lookup,
        (&Method::POST, TICKETS) => Route::CreateCase,
        (&Method::POST, TICKET_SEARCH) => Route::FindCases,
        (&Method::GET, path)
            if path.strip_prefix("/crm/v3/objects/tickets/").is_some_and(|id| !id.is_empty() && !id.contains('/')) =>
        {
            Route::FindCases
        }
        _ => Route::Other,
    }
}

/// A HubSpot property name: lower-case letters, digits and `_`, starting
/// with a letter.
pub fn is_property_name(name: &str) -> bool {
    name.len() <= 100
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A fresh correlation id: a random UUID (version 4 layout).
fn correlation_id() -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let random = RandomState::new();
    let (a, b) = (random.hash_one((n, 1u8)), random.hash_one((n, 2u8)));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// An answer with a fresh correlation id, in `X-HubSpot-Correlation-Id` and
/// wherever `body` puts it.
fn answer(status: StatusCode, body: impl FnOnce(&str) -> Value) -> Response {
    let id = correlation_id();
    let mut response = super::json(status, body(&id));
    response.headers_mut().insert(CORRELATION_HEADER, header(&id));
    response
}

/// HubSpot's error body: `{"status":"error","message","correlationId","category"}`.
fn error(status: StatusCode, category: &str, message: &str) -> Response {
    answer(status, |id| json!({"status": "error", "message": message, "correlationId": id, "category": category}))
}

fn invalid(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
}

pub fn limit_exceeded() -> Response {
    answer(StatusCode::TOO_MANY_REQUESTS, |id| {
        json!({
            "status": "error",
            "message": "You have reached your ten_secondly_rolling limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": id,
            "policyName": "TEN_SECONDLY_ROLLING",
        })
    })
}

pub fn write_quota(quota: Quota, headers: &mut HeaderMap) {
    let interval = quota.window_secs.map_or(NOMINAL_INTERVAL_MS, |secs| secs.saturating_mul(1000));
    headers.insert("x-hubspot-ratelimit-max", HeaderValue::from(quota.limit));
    headers.insert("x-hubspot-ratelimit-remaining", HeaderValue::from(quota.limit - quota.used));
    headers.insert("x-hubspot-ratelimit-interval-milliseconds", HeaderValue::from(interval));
}

/// The refusal of a call without the private app's token, if it lacks it.
fn unauthenticated(state: &DialectState, headers: &HeaderMap) -> Option<Response> {
    let valid = bearer_token(headers, &["Bearer"]).is_some_and(|token| token == state.settings.hubspot_token);
    (!valid).then(|| error(StatusCode::UNAUTHORIZED, "INVALID_AUTHENTICATION", AUTH_MESSAGE))
}

/// ISO 8601 in UTC to the millisecond, as HubSpot's timestamps are.
fn iso8601(ms: u64) -> String {
    super::utc_text(ms, "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z")
}

fn ticket_id(index: usize) -> String {
    (TICKET_ID_BASE + index as u64 + 1).to_string()
}

/// A JSON scalar as HubSpot stores a property: text.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A served filter operator.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Operator {
    Eq(String),
    Neq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    HasProperty,
    NotHasProperty,
    /// At or after this instant (ms since the epoch): date properties only.
    Gte(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Filter {
    property: String,
    operator: Operator,
}

impl Filter {
    fn matches(&self, value: Option<&str>) -> bool {
        match (&self.operator, value) {
            (Operator::Eq(want), Some(have)) => have == want,
            (Operator::Eq(_), None) => false,
            (Operator::Neq(want), have) => have != Some(want.as_str()),
            (Operator::In(values), Some(have)) => values.iter().any(|v| v == have),
            (Operator::In(_), None) => false,
            (Operator::NotIn(values), have) => have.is_none_or(|have| values.iter().all(|v| v != have)),
            (Operator::HasProperty, have) => have.is_some_and(|v| !v.is_empty()),
            (Operator::NotHasProperty, have) => have.is_none_or(str::is_empty),
            (Operator::Gte(want), have) => have.and_then(instant).is_some_and(|at| at >= *want),
        }
    }
}

/// A date property's value as an instant (ms since the epoch): epoch
/// milliseconds, or an ISO 8601 time as HubSpot writes them.
fn instant(value: &str) -> Option<i64> {
    if let Ok(ms) = value.trim().parse::<i64>() {
        return Some(ms);
    }
    let at = time::OffsetDateTime::parse(value.trim(), &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

/// A search's sort: one property, ascending or descending.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sort {
    property: String,
    descending: bool,
}

impl Sort {
    /// How two records' values of the property place them: instants for a
    /// date property, text otherwise; a record without it last.
    fn order(&self, a: Option<&str>, b: Option<&str>) -> std::cmp::Ordering {
        let date = DATE_PROPERTIES.contains(&self.property.as_str());
        let key =
            |v: Option<&str>| v.filter(|v| !v.is_empty()).map(|v| (date.then(|| instant(v)).flatten(), v.to_owned()));
        match (key(a), key(b)) {
            (Some(a), Some(b)) if self.descending => b.cmp(&a),
            (Some(a), Some(b)) => a.cmp(&b),
            (a, b) => a.is_none().cmp(&b.is_none()),
        }
    }
}

/// A search request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Search {
    /// ORed groups of ANDed filters; none lists everything.
    groups: Vec<Vec<Filter>>,
    properties: Option<Vec<String>>,
    sort: Option<Sort>,
    limit: usize,
    after: usize,
}

impl Search {
    /// Whether a record whose properties `value` gives matches.
    fn matches(&self, value: impl Fn(&str) -> Option<String>) -> bool {
        self.groups.is_empty()
            || self.groups.iter().any(|group| group.iter().all(|f| f.matches(value(&f.property).as_deref())))
    }
}

/// The search in `body`, or the refusal's message.
fn parse_search(body: &[u8]) -> Result<Search, String> {
    let request = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(request)) => request,
        Ok(_) => return Err("Invalid input JSON: the search request must be a JSON object".into()),
        Err(err) => return Err(format!("Invalid input JSON on line {}, column {}: {err}", err.line(), err.column())),
    };
    let mut search = Search { groups: Vec::new(), properties: None, sort: None, limit: LIMIT_DEFAULT, after: 0 };
    for (key, value) in &request {
        match key.as_str() {
            "filterGroups" => search.groups = parse_groups(value)?,
            "properties" => {
                let names = value.as_array().ok_or("Invalid input JSON: properties must be an array of strings")?;
                let names: Option<Vec<String>> = names.iter().map(|n| n.as_str().map(str::to_owned)).collect();
                search.properties = Some(names.ok_or("Invalid input JSON: properties must be an array of strings")?);
            }
            "limit" => {
                let limit = value
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or("Invalid input JSON: limit must be a whole number")?;
                if limit > LIMIT_MAX {
                    return Err(format!("limit must be less than or equal to {LIMIT_MAX}"));
                }
                search.limit = limit;
            }
            "after" => {
                search.after = scalar_text(value)
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| format!("Invalid input JSON: after {value} is not a paging cursor"))?;
            }
            "sorts" => search.sort = parse_sorts(value)?,
            other => {
                return Err(format!("Invalid input JSON: the simulator does not serve the search field {other:?}"));
            }
        }
    }
    Ok(search)
}

fn parse_sorts(value: &Value) -> Result<Option<Sort>, String> {
    let sorts = value.as_array().ok_or("Invalid input JSON: sorts must be an array")?;
    let [sort] = &sorts[..] else {
        return match sorts.len() {
            0 => Ok(None),
            n => Err(format!("Too many sorts ({n}). A search can be sorted by one property.")),
        };
    };
    let (property, descending) = match sort {
        Value::String(name) => match name.strip_prefix('-') {
            Some(name) => (name.to_owned(), true),
            None => (name.clone(), false),
        },
        Value::Object(sort) => {
            let property =
                sort.get("propertyName").and_then(Value::as_str).ok_or("sorts[0].propertyName is required")?;
            let descending = match sort.get("direction").map(|d| d.as_str()) {
                None | Some(Some("ASCENDING")) => false,
                Some(Some("DESCENDING")) => true,
                Some(other) => {
                    return Err(format!(
                        "Invalid input JSON: sorts[0].direction {} is not one of [ASCENDING, DESCENDING]",
                        other.map_or_else(|| "null".to_owned(), |d| format!("{d:?}"))
                    ));
                }
            };
            (property.to_owned(), descending)
        }
        _ => return Err("Invalid input JSON: sorts[0] must be a property name or {propertyName, direction}".into()),
    };
    if property.is_empty() {
        return Err("sorts[0].propertyName is required".into());
    }
    Ok(Some(Sort { property, descending }))
}

fn parse_groups(value: &Value) -> Result<Vec<Vec<Filter>>, String> {
    let groups = value.as_array().ok_or("Invalid input JSON: filterGroups must be an array")?;
    if groups.len() > MAX_GROUPS {
        return Err(format!(
            "Too many filter groups ({}). The maximum number of filter groups is {MAX_GROUPS}.",
            groups.len()
        ));
    }
    let mut total = 0;
    let mut parsed = Vec::with_capacity(groups.len());
    for (g, group) in groups.iter().enumerate() {
        let filters = group
            .get("filters")
            .and_then(Value::as_array)
            .filter(|f| !f.is_empty())
            .ok_or_else(|| format!("filterGroups[{g}].filters must be a non-empty array"))?;
        if filters.len() > MAX_FILTERS_PER_GROUP {
            return Err(format!(
                "Too many filters in filterGroups[{g}] ({}). The maximum number of filters in a group is \
                 {MAX_FILTERS_PER_GROUP}.",
                filters.len()
            ));
        }
        total += filters.len();
        if total > MAX_FILTERS {
            return Err(format!("Too many filters. The maximum number of filters across all groups is {MAX_FILTERS}."));
        }
        let filters: Result<Vec<Filter>, String> = filters
            .iter()
            .enumerate()
            .map(|(f, filter)| parse_filter(filter, &format!("filterGroups[{g}].filters[{f}]")))
            .collect();
        parsed.push(filters?);
    }
    Ok(parsed)
}

fn parse_filter(filter: &Value, at: &str) -> Result<Filter, String> {
    let property = filter
        .get("propertyName")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| format!("{at}.propertyName is required"))?
        .to_owned();
    let operator =
        filter.get("operator").and_then(Value::as_str).ok_or_else(|| format!("{at}.operator is required"))?;
    let value =
        || filter.get("value").and_then(scalar_text).ok_or_else(|| format!("{at}.value is required for {operator}"));
    let values = || -> Result<Vec<String>, String> {
        let values = filter
            .get("values")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("{at}.values is required for {operator}"))?;
        values.iter().map(|v| scalar_text(v).ok_or_else(|| format!("{at}.values must hold strings"))).collect()
    };
    let operator = match operator {
        "EQ" => Operator::Eq(value()?),
        "NEQ" => Operator::Neq(value()?),
        "IN" => Operator::In(values()?),
        "NOT_IN" => Operator::NotIn(values()?),
        "HAS_PROPERTY" => Operator::HasProperty,
        "NOT_HAS_PROPERTY" => Operator::NotHasProperty,
        "GTE" if DATE_PROPERTIES.contains(&property.as_str()) => {
            let value = value()?;
            Operator::Gte(instant(&value).ok_or_else(|| {
                format!("{at}.value {value:?} is not a time: epoch milliseconds or an ISO 8601 date-time")
            })?)
        }
        "GTE" => {
            return Err(format!("{at}: the simulator evaluates GTE only on date properties, not on {property:?}"));
        }
        known if OPERATORS.contains(&known) => {
            return Err(format!("{at}: the simulator does not evaluate the operator {known}"));
        }
        unknown => {
            return Err(format!(
                "Invalid input JSON: Cannot deserialize value of type `FilterOperatorEnum` from String {unknown:?}: not \
                 one of the values accepted for Enum class: [{}]",
                OPERATORS.join(", ")
            ));
        }
    };
    Ok(Filter { property, operator })
}

/// A contact's property value.
fn contact_property(customer: &Customer, name: &str) -> Option<String> {
    let (first, last) = customer.name.trim().split_once(' ').unwrap_or((customer.name.trim(), ""));
    let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    match name {
        "hs_object_id" => Some(customer.customer_id.clone()),
        "createdate" | "lastmodifieddate" => Some(iso8601(customer.updated_at_ms)),
        "phone" => text(&customer.phone),
        TIER_PROPERTY => text(&customer.tier),
        "firstname" => text(first),
        "lastname" => text(last.trim()),
        _ => None,
    }
}

/// A ticket's property value; `index` is its ledger position.
fn ticket_property(case: &Case, index: usize, name: &str) -> Option<String> {
    match name {
        "hs_object_id" => Some(ticket_id(index)),
        "createdate" | "hs_lastmodifieddate" => Some(iso8601(case.created_at)),
        _ => case.body.get(name).and_then(scalar_text),
    }
}

/// The `properties` object of a result: the names asked for (a known one
/// without a value as `null`, an unknown one left out) and those that
/// always come, or the defaults.
fn shown(
    asked: Option<&[String]>,
    defaults: &[&str],
    always: &[&str],
    known: impl Fn(&str) -> bool,
    value: impl Fn(&str) -> Option<String>,
) -> Value {
    let names: Vec<&str> = match asked {
        Some(asked) => asked.iter().map(String::as_str).chain(always.iter().copied()).collect(),
        None => defaults.to_vec(),
    };
    let mut out = Map::new();
    for name in names {
        match value(name) {
            Some(v) => {
                out.insert(name.to_owned(), Value::from(v));
            }
            None if known(name) => {
                out.insert(name.to_owned(), Value::Null);
            }
            None => {}
        }
    }
    Value::Object(out)
}

fn contact_json(customer: &Customer, asked: Option<&[String]>) -> Value {
    let at = iso8601(customer.updated_at_ms);
    let properties = shown(
        asked,
        CONTACT_DEFAULTS,
        CONTACT_ALWAYS,
        |name| CONTACT_PROPERTIES.contains(&name),
        |name| contact_property(customer, name),
    );
    json!({"id": customer.customer_id, "properties": properties, "createdAt": at, "updatedAt": at, "archived": false})
}

fn ticket_json(case: &Case, index: usize, asked: Option<&[String]>, ref_property: &str) -> Value {
    let at = iso8601(case.created_at);
    let known = |name: &str| TICKET_PROPERTIES.contains(&name) || name == ref_property;
    let properties = shown(asked, TICKET_DEFAULTS, TICKET_ALWAYS, known, |name| ticket_property(case, index, name));
    json!({"id": ticket_id(index), "properties": properties, "createdAt": at, "updatedAt": at, "archived": false})
}

/// 200 with one page of `results`: `{"total","results"[,"paging"]}`.
fn page(results: Vec<Value>, search: &Search) -> Response {
    let total = results.len();
    let start = search.after.min(total);
    let end = start.saturating_add(search.limit).min(total);
    let more = end < total;
    let results: Vec<Value> = results.into_iter().skip(start).take(end - start).collect();
    answer(StatusCode::OK, |_| {
        let mut body = json!({"total": total, "results": results});
        if more {
            body["paging"] = json!({"next": {"after": end.to_string(), "link": format!("?after={end}")}});
        }
        body
    })
}

/// `POST /crm/v3/objects/contacts/search`.
async fn search_contacts(State(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refusal) = unauthenticated(&state, &headers) {
        return refusal;
    }
    let search = match parse_search(&body) {
        Ok(search) => search,
        Err(message) => return invalid(&message),
    };
    let asked = search.properties.as_deref();
    let store = state.sim.store.lock().await;
    let results: Vec<Value> = match &search.groups[..] {
        // One `phone EQ <number>`: the store's index answers it.
        [group] if matches!(&group[..], [Filter { property, operator: Operator::Eq(_) }] if property == "phone") => {
            let Operator::Eq(phone) = &group[0].operator else { unreachable!("matched above") };
            store.customer(phone).map(|c| contact_json(c, asked)).into_iter().collect()
        }
        _ => {
            let mut contacts: Vec<&Customer> =
                store.customers().filter(|c| search.matches(|name| contact_property(c, name))).collect();
            if let Some(sort) = &search.sort {
                contacts.sort_by(|a, b| {
                    sort.order(
                        contact_property(a, &sort.property).as_deref(),
                        contact_property(b, &sort.property).as_deref(),
                    )
                });
            }
            contacts.into_iter().map(|c| contact_json(c, asked)).collect()
        }
    };
    drop(store);
    page(results, &search)
}

/// `POST /crm/v3/objects/tickets/search`.
async fn search_tickets(State(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refusal) = unauthenticated(&state, &headers) {
        return refusal;
    }
    let search = match parse_search(&body) {
        Ok(search) => search,
        Err(message) => return invalid(&message),
    };
    let ref_property = state.settings.hubspot_ref_property.as_str();
    let store = state.sim.store.lock().await;
    let mut tickets: Vec<(usize, &Case)> = store
        .ledger()
        .iter()
        .enumerate()
        .filter(|(i, case)| search.matches(|name| ticket_property(case, *i, name)))
        .collect();
    if let Some(sort) = &search.sort {
        tickets.sort_by(|(i, a), (j, b)| {
            sort.order(
                ticket_property(a, *i, &sort.property).as_deref(),
                ticket_property(b, *j, &sort.property).as_deref(),
            )
        });
    }
    let results: Vec<Value> =
        tickets.into_iter().map(|(i, case)| ticket_json(case, i, search.properties.as_deref(), ref_property)).collect();
    drop(store);
    page(results, &search)
}

/// `POST /crm/v3/objects/tickets`.
async fn create_ticket(State(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refusal) = unauthenticated(&state, &headers) {
        return refusal;
    }
    let request = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(request)) => request,
        Ok(_) => return invalid("Invalid input JSON: the ticket must be a JSON object"),
        Err(err) => {
            return invalid(&format!("Invalid input JSON on line {}, column {}: {err}", err.line(), err.column()));
        }
    };
    let mut properties = Map::new();
    match request.get("properties") {
        None | Some(Value::Null) => {}
        Some(Value::Object(posted)) => {
            for (name, value) in posted {
                match value {
                    Value::Null => {}
                    value => match scalar_text(value) {
                        Some(text) => {
                            properties.insert(name.clone(), Value::from(text));
                        }
                        None => {
                            return invalid(&format!(
                                "Invalid input JSON: the value of the property {name:?} must be a string, a number or \
                                 a boolean"
                            ));
                        }
                    },
                }
            }
        }
        Some(_) => return invalid("Invalid input JSON: properties must be an object"),
    }
    let missing: Vec<&str> = TICKET_REQUIRED
        .iter()
        .copied()
        .filter(|name| properties.get(*name).and_then(Value::as_str).is_none_or(str::is_empty))
        .collect();
    if !missing.is_empty() {
        return invalid(&format!(
            "Cannot create object with type: TICKET. The following required properties were missing: [{}]",
            missing.join(", ")
        ));
    }
    properties.entry("hs_pipeline").or_insert_with(|| Value::from("0"));
    let ref_property = state.settings.hubspot_ref_property.clone();
    let external_ref =
        properties.get(&ref_property).and_then(Value::as_str).filter(|r| !r.is_empty()).map(str::to_owned);
    let mut store = state.sim.store.lock().await;
    let index = store.ledger().len();
    if let Some(value) = &external_ref
        && let Some(existing) = store.cases_with_ref(value).first()
    {
        let message = format!(
            "Cannot set PropertyValueCoordinates{{portalId={PORTAL_ID}, \
             objectTypeId=ObjectTypeId{{legacyObjectType=TICKET}}, propertyName={ref_property}, value={value}}} on \
             {}. {} already has that value.",
            ticket_id(index),
            existing.case_id
        );
        return invalid(&message);
    }
    let creation = store.append_case(None, properties, external_ref, ticket_id, clock::unix_ms());
    drop(store);
    match creation {
        Ok(case) => {
            state.sim.stats.case_created();
            answer(StatusCode::CREATED, |_| ticket_json(&case, index, Some(&all_properties(&case)), &ref_property))
        }
        Err(LedgerFull) => error(StatusCode::INSUFFICIENT_STORAGE, "INTERNAL_ERROR", "The ticket store is full"),
    }
}

/// Every property a ticket has, for the create's answer.
fn all_properties(case: &Case) -> Vec<String> {
    case.body.keys().cloned().collect()
}

/// `GET /crm/v3/objects/tickets/{id}[?idProperty=&properties=]`.
async fn read_ticket(State(state): Shared, Path(id): Path<String>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(refusal) = unauthenticated(&state, &headers) {
        return refusal;
    }
    let ref_property = state.settings.hubspot_ref_property.as_str();
    let asked: Option<Vec<String>> = query_value(&uri, "properties")
        .map(|list| list.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect());
    let by = query_value(&uri, "idProperty").filter(|p| !p.is_empty() && p != "hs_object_id");
    let store = state.sim.store.lock().await;
    let found = store.ledger().iter().enumerate().find(|(i, case)| match &by {
        Some(property) => ticket_property(case, *i, property).as_deref() == Some(id.as_str()),
        None => ticket_id(*i) == id,
    });
    match found {
        Some((i, case)) => {
            let ticket = ticket_json(case, i, asked.as_deref(), ref_property);
            drop(store);
            answer(StatusCode::OK, |_| ticket)
        }
        None => error(StatusCode::NOT_FOUND, "OBJECT_NOT_FOUND", "resource not found"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Served, list_all, profile, seed_at, send, serve};
    use super::super::{Dialect, Settings};
    use super::*;
    use crate::sim::limit::{HeaderStyle, RateLimit};
    use failsoft_shared::mapping::LookupAnswer;

    const TOKEN: &str = "failsoft-test-hubspot-token";

    async fn served() -> Served {
        super::super::testing::serve_seeded(
            Dialect::HubSpot,
            Settings::default(),
            json!([
                {"phone": "+15550001", "customerId": "C-1", "tier": "gold", "name": "Ann Lee"},
                {"phone": "+15550002", "customerId": "C-2", "tier": "vip"},
                {"phone": "+15550003", "customerId": "C-3"},
            ]),
        )
        .await
    }

    async fn post(served: &Served, path: &str, body: Value) -> (u16, HeaderMap, Value) {
        let answer = served
            .http
            .post(format!("{}{path}", served.base))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("post");
        let (status, headers) = (answer.status().as_u16(), answer.headers().clone());
        (status, headers, answer.json().await.expect("json"))
    }

    fn by_phone(phone: &str) -> Value {
        json!({"filterGroups": [{"filters": [{"propertyName": "phone", "operator": "EQ", "value": phone}]}],
            "properties": [TIER_PROPERTY], "limit": 1})
    }

    fn ticket(reference: &str) -> Value {
        json!({"properties": {"hs_pipeline": "0", "hs_pipeline_stage": "1", "subject": "Call",
            "content": "Called about billing", "failsoft_ref": reference, "hs_ticket_priority": "HIGH"}})
    }

    #[tokio::test]
    async fn hubspot_refuses_missing_and_wrong_tokens() {
        let served = served().await;
        let url = format!("{}{CONTACT_SEARCH}", served.base);
        let none = served.http.post(&url).json(&by_phone("+15550001")).send().await.expect("search");
        assert_eq!(none.status(), 401);
        let id = none.headers()[CORRELATION_HEADER].to_str().expect("ascii").to_owned();
        let body: Value = none.json().await.expect("json");
        assert_eq!(
            body,
            json!({"status": "error", "message": AUTH_MESSAGE, "correlationId": id, "category": "INVALID_AUTHENTICATION"})
        );
        assert!(id.len() == 36 && id.as_bytes()[14] == b'4', "a UUID: {id}");
        let wrong = served.http.post(&url).bearer_auth("nope").json(&by_phone("+1")).send().await.expect("search");
        assert_eq!(wrong.status(), 401);
        // The private app's token is not an OAuth token: revoking tokens does not touch it.
        served.sim.tokens.revoke_all(std::time::Instant::now());
        assert_eq!(post(&served, CONTACT_SEARCH, by_phone("+15550001")).await.0, 200);
    }

    #[tokio::test]
    async fn hubspot_searches_contacts_by_phone() {
        let served = served().await;
        let (status, _, body) = post(&served, CONTACT_SEARCH, by_phone("+15550001")).await;
        assert_eq!(status, 200);
        assert_eq!((body["total"].clone(), body.get("paging")), (json!(1), None));
        let contact = &body["results"][0];
        assert_eq!((contact["id"].clone(), contact["archived"].clone()), (json!("C-1"), json!(false)));
        let properties = contact["properties"].as_object().expect("properties");
        let names: Vec<&str> = properties.keys().map(String::as_str).collect();
        assert_eq!(names, ["createdate", TIER_PROPERTY, "hs_object_id", "lastmodifieddate"]);
        assert_eq!(
            (properties[TIER_PROPERTY].clone(), properties["hs_object_id"].clone()),
            (json!("gold"), json!("C-1"))
        );
        let created = contact["createdAt"].as_str().expect("createdAt");
        assert!(created.len() == 24 && created.ends_with('Z') && properties["createdate"] == created, "{created}");

        let (status, _, body) = post(&served, CONTACT_SEARCH, by_phone("+19990000")).await;
        assert_eq!((status, body), (200, json!({"total": 0, "results": []})));
        // No `properties`: the defaults; a known property without a value is null.
        let (_, _, body) = post(
            &served,
            CONTACT_SEARCH,
            json!({"filterGroups": [{"filters": [
            {"propertyName": TIER_PROPERTY, "operator": "IN", "values": ["gold", "vip"]}]}]}),
        )
        .await;
        assert_eq!(body["total"], 2);
        let ann = &body["results"][0]["properties"];
        assert_eq!(
            (ann["firstname"].clone(), ann["lastname"].clone(), ann["email"].clone()),
            (json!("Ann"), json!("Lee"), Value::Null)
        );
        assert!(ann.get(TIER_PROPERTY).is_none());
        // Groups are ORed, filters ANDed; pages follow `after`.
        let either = json!({"filterGroups": [
            {"filters": [{"propertyName": "phone", "operator": "EQ", "value": "+15550002"}]},
            {"filters": [{"propertyName": "phone", "operator": "NEQ", "value": "+15550002"},
                         {"propertyName": TIER_PROPERTY, "operator": "EQ", "value": "standard"}]}],
            "properties": ["phone", "unknown_property"], "limit": 1});
        let (_, _, first) = post(&served, CONTACT_SEARCH, either.clone()).await;
        assert_eq!((first["total"].clone(), first["results"][0]["id"].clone()), (json!(2), json!("C-2")));
        assert_eq!(first["paging"], json!({"next": {"after": "1", "link": "?after=1"}}));
        assert!(first["results"][0]["properties"].get("unknown_property").is_none());
        let mut next = either;
        next["after"] = json!("1");
        let (_, _, second) = post(&served, CONTACT_SEARCH, next).await;
        assert_eq!((second["results"][0]["id"].clone(), second.get("paging")), (json!("C-3"), None));
        let (_, _, all) = post(&served, CONTACT_SEARCH, json!({})).await;
        assert_eq!(all["total"], 3, "no filterGroups lists every contact");
        assert_eq!(served.sim.stats.snapshot().lookups, 6);
    }

    #[tokio::test]
    async fn hubspot_refuses_malformed_searches() {
        let served = served().await;
        let filter = |operator: &str| json!({"filterGroups": [{"filters": [{"propertyName": "phone", "operator": operator, "value": "1"}]}]});
        let five = json!({"filters": [{"propertyName": "phone", "operator": "HAS_PROPERTY"}]});
        for (body, needle) in [
            (filter("LIKE"), "not one of the values accepted"),
            (filter("GT"), "does not evaluate the operator GT"),
            (json!({"filterGroups": vec![five; 6]}), "maximum number of filter groups is 5"),
            (json!({"filterGroups": [{"filters": []}]}), "non-empty"),
            (
                json!({"filterGroups": [{"filters": [{"propertyName": "phone", "operator": "EQ"}]}]}),
                "value is required",
            ),
            (json!({"limit": 201}), "less than or equal to 200"),
            (json!({"query": "Ann"}), "query"),
            (json!([]), "JSON object"),
        ] {
            let (status, _, refusal) = post(&served, CONTACT_SEARCH, body.clone()).await;
            assert_eq!((status, refusal["category"].clone()), (400, json!("VALIDATION_ERROR")), "{body}");
            assert!(refusal["message"].as_str().is_some_and(|m| m.contains(needle)), "{refusal}");
        }
        let raw = served
            .http
            .post(format!("{}{CONTACT_SEARCH}", served.base))
            .bearer_auth(TOKEN)
            .body("{nope")
            .send()
            .await
            .expect("search");
        assert_eq!(raw.status(), 400);
        let refusal: Value = raw.json().await.expect("json");
        assert!(refusal["message"].as_str().is_some_and(|m| m.starts_with("Invalid input JSON on line 1, column 2")));
    }

    #[tokio::test]
    async fn hubspot_creates_tickets_and_finds_them_by_ref() {
        let served = served().await;
        let answer = served
            .http
            .post(format!("{}{TICKETS}", served.base))
            .bearer_auth(TOKEN)
            .header("idempotency-key", "k-1")
            .json(&ticket("R-1"))
            .send()
            .await
            .expect("create");
        assert_eq!(answer.status(), 201);
        let created: Value = answer.json().await.expect("json");
        assert_eq!((created["id"].clone(), created["archived"].clone()), (json!("5000000001"), json!(false)));
        let properties = &created["properties"];
        assert_eq!(
            (
                properties["hs_object_id"].clone(),
                properties["failsoft_ref"].clone(),
                properties["hs_pipeline_stage"].clone()
            ),
            (json!("5000000001"), json!("R-1"), json!("1"))
        );
        assert!(created["createdAt"].as_str().is_some_and(|at| at.ends_with('Z')));
        assert_eq!(properties["createdate"], created["createdAt"]);
        // No idempotency key in HubSpot: the key is ignored, the ref decides.
        let (status, _, second) = post(
            &served,
            TICKETS,
            json!({"properties": {"hs_pipeline_stage": 2, "subject": "Other",
            "failsoft_ref": "R-2"}}),
        )
        .await;
        assert_eq!((status, second["properties"]["hs_pipeline"].clone()), (201, json!("0")));
        assert_eq!(second["properties"]["hs_pipeline_stage"], "2", "numbers are stored as text");
        {
            let store = served.sim.store.lock().await;
            assert_eq!(
                (store.ledger()[0].case_id.as_str(), store.ledger()[0].idempotency_key.clone()),
                ("5000000001", None)
            );
            assert_eq!(store.cases_with_ref("R-1").len(), 1);
        }

        let find = json!({"filterGroups": [{"filters": [{"propertyName": "failsoft_ref", "operator": "EQ", "value": "R-1"}]}],
            "properties": ["hs_pipeline_stage", "createdate"], "limit": 1});
        let (status, _, found) = post(&served, TICKET_SEARCH, find).await;
        assert_eq!((status, found["total"].clone()), (200, json!(1)));
        let hit = &found["results"][0];
        assert_eq!(
            (hit["id"].clone(), hit["properties"]["hs_pipeline_stage"].clone()),
            (json!("5000000001"), json!("1"))
        );
        let names: Vec<&str> = hit["properties"].as_object().expect("properties").keys().map(String::as_str).collect();
        assert_eq!(names, ["createdate", "hs_lastmodifieddate", "hs_object_id", "hs_pipeline_stage"]);
        let (_, _, none) = post(
            &served,
            TICKET_SEARCH,
            json!({"filterGroups": [{"filters": [
            {"propertyName": "failsoft_ref", "operator": "EQ", "value": "R-9"}]}]}),
        )
        .await;
        assert_eq!(none, json!({"total": 0, "results": []}));

        let read = |path: String| served.http.get(format!("{}{path}", served.base)).bearer_auth(TOKEN).send();
        let by_ref: Value = read(format!("{TICKETS}/R-2?idProperty=failsoft_ref&properties=subject"))
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        assert_eq!(
            (by_ref["id"].clone(), by_ref["properties"]["subject"].clone()),
            (json!("5000000002"), json!("Other"))
        );
        let by_id: Value = read(format!("{TICKETS}/5000000001")).await.expect("get").json().await.expect("json");
        assert_eq!(by_id["properties"]["subject"], "Call");
        let missing = read(format!("{TICKETS}/1")).await.expect("get");
        assert_eq!(missing.status(), 404);
        assert_eq!(missing.json::<Value>().await.expect("json")["category"], "OBJECT_NOT_FOUND");

        let (status, _, refusal) = post(&served, TICKETS, json!({"properties": {"subject": "no stage"}})).await;
        assert_eq!((status, refusal["category"].clone()), (400, json!("VALIDATION_ERROR")));
        assert_eq!(
            refusal["message"],
            "Cannot create object with type: TICKET. The following required properties were missing: [hs_pipeline_stage]"
        );
        let (status, _, _) =
            post(&served, TICKETS, json!({"properties": {"subject": "s", "hs_pipeline_stage": "1", "x": {}}})).await;
        assert_eq!(status, 400);
        let stats = served.sim.stats.snapshot();
        assert_eq!((stats.creates, stats.cases_created, stats.case_queries), (4, 2, 5));
    }

    #[tokio::test]
    async fn hubspot_refuses_a_second_ticket_with_the_same_ref() {
        let served = served().await;
        assert_eq!(post(&served, TICKETS, ticket("R-1")).await.0, 201);
        let (status, headers, refusal) = post(&served, TICKETS, ticket("R-1")).await;
        assert_eq!(status, 400);
        assert_eq!(refusal["category"], "VALIDATION_ERROR");
        assert_eq!(
            refusal["message"],
            "Cannot set PropertyValueCoordinates{portalId=24000001, objectTypeId=ObjectTypeId{legacyObjectType=TICKET}, \
             propertyName=failsoft_ref, value=R-1} on 5000000002. 5000000001 already has that value."
        );
        assert_eq!(refusal["correlationId"], headers[CORRELATION_HEADER].to_str().expect("ascii"));
        assert_eq!(served.sim.store.lock().await.ledger().len(), 1, "nothing created");
        // Another ref, or none, is created; the property is whatever --hubspot-ref-property names.
        assert_eq!(post(&served, TICKETS, ticket("R-2")).await.0, 201);
        let other =
            serve(Dialect::HubSpot, Settings { hubspot_ref_property: "my_ref".into(), ..Settings::default() }).await;
        assert_eq!(post(&other, TICKETS, ticket("R-1")).await.0, 201);
        assert_eq!(post(&other, TICKETS, ticket("R-1")).await.0, 201, "failsoft_ref is not unique there");
        let mut mine = ticket("R-1");
        mine["properties"]["my_ref"] = json!("M-1");
        assert_eq!(post(&other, TICKETS, mine.clone()).await.0, 201);
        assert_eq!(post(&other, TICKETS, mine).await.0, 400);
        assert_eq!(other.sim.store.lock().await.cases_with_ref("M-1").len(), 1);
    }

    #[tokio::test]
    async fn hubspot_rate_limit_headers_and_429() {
        let served = served().await;
        let (_, nominal, _) = post(&served, CONTACT_SEARCH, by_phone("+15550001")).await;
        assert_eq!(nominal["x-hubspot-ratelimit-max"], super::super::NOMINAL_ALLOWANCE.to_string().as_str());
        assert_eq!(nominal["x-hubspot-ratelimit-interval-milliseconds"], "10000");
        served.sim.limiter.set(Some(RateLimit { limit: 2, window_secs: 10, headers: HeaderStyle::Ietf }));
        for remaining in [1, 0] {
            let (status, headers, _) = post(&served, CONTACT_SEARCH, by_phone("+15550001")).await;
            assert_eq!(status, 200);
            assert_eq!(headers["x-hubspot-ratelimit-max"], "2");
            assert_eq!(headers["x-hubspot-ratelimit-remaining"], remaining.to_string().as_str());
            assert_eq!(headers["x-hubspot-ratelimit-interval-milliseconds"], "10000");
            assert!(headers.get("ratelimit-limit").is_none(), "the vendor's headers only");
        }
        let (status, headers, body) = post(&served, TICKETS, ticket("R-1")).await;
        assert_eq!(status, 429);
        assert!(headers.get("retry-after").is_none(), "HubSpot documents none");
        assert_eq!(headers["x-hubspot-ratelimit-remaining"], "0");
        let id = headers[CORRELATION_HEADER].to_str().expect("ascii");
        assert_eq!(
            body,
            json!({"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
                "errorType": "RATE_LIMIT", "correlationId": id, "policyName": "TEN_SECONDLY_ROLLING"})
        );
        assert_eq!(served.sim.stats.snapshot().throttled, 1);
        assert!(served.sim.store.lock().await.ledger().is_empty());
    }

    /// The pre-warm sync's search: contacts changed at or after `since`.
    fn changed_since(since: &str, after: Option<&str>, limit: usize) -> Value {
        let mut body = json!({
            "filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": since}]}],
            "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
            "properties": ["phone", TIER_PROPERTY, "lastmodifieddate"],
            "limit": limit,
        });
        if let Some(after) = after {
            body["after"] = json!(after);
        }
        body
    }

    /// A whole second an hour ago, on a fresh simulator: contacts changed
    /// before it, `n` at it and after it (a millisecond apart, in the
    /// store's phone order backwards), one removed after it.
    async fn changes(n: u64) -> (Served, u64) {
        let served = serve(Dialect::HubSpot, Settings::default()).await;
        let since = (clock::unix_ms() / 1000 - 3600) * 1000;
        seed_at(&served.sim, json!([{"phone": "+15559999", "customerId": "C-old"}]), since - 1).await;
        for k in 0..n {
            let customer =
                json!([{"phone": format!("+1555{:04}", n - k), "customerId": format!("C-{k}"), "tier": "gold"}]);
            seed_at(&served.sim, customer, since + k).await;
        }
        seed_at(&served.sim, json!([{"phone": "+15558888", "customerId": "C-gone"}]), since).await;
        served.sim.store.lock().await.remove_customers(&["+15558888".to_owned()], since + n + 1);
        (served, since)
    }

    #[tokio::test]
    async fn hubspot_lists_contacts_changed_since_by_search() {
        let (served, since) = changes(5).await;
        let mut ids = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let (status, _, body) =
                post(&served, CONTACT_SEARCH, changed_since(&since.to_string(), after.as_deref(), 2)).await;
            assert_eq!((status, body["total"].clone()), (200, json!(5)), "{body}");
            pages += 1;
            for contact in body["results"].as_array().expect("results") {
                ids.push(contact["id"].as_str().expect("id").to_owned());
                let properties = contact["properties"].as_object().expect("properties");
                assert_eq!(properties["lastmodifieddate"], contact["updatedAt"]);
                assert_eq!(properties[TIER_PROPERTY], "gold");
                assert!(properties["phone"].as_str().is_some_and(|p| p.starts_with("+1555")));
            }
            match body.get("paging") {
                Some(paging) => after = paging["next"]["after"].as_str().map(str::to_owned),
                None => break,
            }
        }
        assert_eq!(pages, 3, "5 contacts, 2 a page");
        assert_eq!(
            ids,
            ["C-0", "C-1", "C-2", "C-3", "C-4"],
            "changed at or after `since`, oldest first; not the removed"
        );
        let first = json!(super::iso8601(since));
        let (_, _, body) = post(&served, CONTACT_SEARCH, changed_since(&since.to_string(), None, 1)).await;
        assert_eq!(
            (body["results"][0]["updatedAt"].clone(), body["paging"]["next"]["after"].clone()),
            (first, json!("1"))
        );

        // An ISO 8601 value names the same instant; DESCENDING reverses.
        let mut iso = changed_since(&super::iso8601(since + 3), None, 10);
        iso["sorts"][0]["direction"] = json!("DESCENDING");
        let (_, _, body) = post(&served, CONTACT_SEARCH, iso).await;
        let ids: Vec<&str> =
            body["results"].as_array().expect("results").iter().filter_map(|c| c["id"].as_str()).collect();
        assert_eq!((ids, body.get("paging")), (vec!["C-4", "C-3"], None));
        let (_, _, body) = post(&served, CONTACT_SEARCH, json!({"sorts": ["-phone"], "limit": 2})).await;
        assert_eq!(
            (body["results"][0]["id"].clone(), body["results"][1]["id"].clone()),
            (json!("C-old"), json!("C-0"))
        );

        // An invalid cursor, GTE where the simulator does not evaluate it, bad sorts.
        let mut bad_after = changed_since(&since.to_string(), None, 2);
        bad_after["after"] = json!("not-a-cursor");
        let gte_phone =
            json!({"filterGroups": [{"filters": [{"propertyName": "phone", "operator": "GTE", "value": "1"}]}]});
        for (body, needle) in [
            (bad_after, "not a paging cursor"),
            (gte_phone, "GTE only on date properties"),
            (changed_since("yesterday", None, 2), "not a time"),
            (json!({"sorts": ["phone", "createdate"]}), "one property"),
            (json!({"sorts": [{"propertyName": "phone", "direction": "UP"}]}), "ASCENDING, DESCENDING"),
            (changed_since(&since.to_string(), None, 201), "less than or equal to 200"),
        ] {
            let (status, _, refusal) = post(&served, CONTACT_SEARCH, body.clone()).await;
            assert_eq!((status, refusal["category"].clone()), (400, json!("VALIDATION_ERROR")), "{body}");
            assert!(refusal["message"].as_str().is_some_and(|m| m.contains(needle)), "{refusal}");
        }
        // A cursor past the end is an empty last page.
        let (status, _, body) = post(&served, CONTACT_SEARCH, changed_since("0", Some("50"), 2)).await;
        assert_eq!((status, body["results"].clone(), body.get("paging")), (200, json!([]), None));
    }

    #[tokio::test]
    async fn hubspot_unknown_paths_and_classification() {
        let served = served().await;
        let answer = served.http.get(format!("{}/crm/v3/objects/deals", served.base)).send().await.expect("get");
        assert_eq!(answer.status(), 404);
        let body: Value = answer.json().await.expect("json");
        assert_eq!((body["status"].clone(), body["message"].clone()), (json!("error"), json!("resource not found")));
        let uri = |u: &str| u.parse::<Uri>().expect("uri");
        assert_eq!(classify(&Method::POST, &uri(CONTACT_SEARCH)), Route::Lookup);
        assert_eq!(classify(&Method::POST, &uri(TICKETS)), Route::CreateCase);
        assert_eq!(classify(&Method::POST, &uri(TICKET_SEARCH)), Route::FindCases);
        assert_eq!(
            classify(&Method::GET, &uri("/crm/v3/objects/tickets/R-1?idProperty=failsoft_ref")),
            Route::FindCases
        );
        assert_eq!(
            classify(&Method::GET, &uri(TICKET_SEARCH)),
            Route::FindCases,
            "a GET of the path reads ticket \"search\""
        );
        assert_eq!(classify(&Method::POST, &uri("/crm/v3/objects/contacts")), Route::Other);
        assert!(is_property_name("failsoft_ref") && !is_property_name("Failsoft") && !is_property_name("1x"));
    }

    /// The shipped profile `deploy/crm/hubspot.toml`, unmodified, against
    /// this dialect: lookup, create, find, and the unique ref's refusal.
    #[tokio::test]
    async fn hubspot_serves_the_shipped_profile() {
        let served = served().await;
        let mapping = profile("hubspot", &[("FAILSOFT_CRM_API_TOKEN", TOKEN)]);
        let (status, body) =
            send(&served.http, mapping.lookup(&served.base, "+15550001", "corr-1", None).expect("lookup")).await;
        assert_eq!(status, 200);
        match mapping.read_customer(&body, "standard") {
            LookupAnswer::Found(record) => {
                assert_eq!((record.customer_id.as_str(), record.tier.as_str()), ("C-1", "gold"))
            }
            other => panic!("{other:?}"),
        }
        let (_, body) =
            send(&served.http, mapping.lookup(&served.base, "+19990000", "corr-2", None).expect("lookup")).await;
        assert_eq!(mapping.read_customer(&body, "standard"), LookupAnswer::NotFound);
        let case = json!({"subject": "Call", "description": "Called about billing"});
        let (status, body) =
            send(&served.http, mapping.create_case(&served.base, "corr-3", &case, None).expect("create")).await;
        assert_eq!(status, 201);
        let created = mapping.read_created_case(&body).expect("a case");
        assert_eq!(created.case_id, "5000000001");
        let find = mapping.find_case(&served.base, "corr-3", None).expect("a find").expect("rendered");
        let (status, body) = send(&served.http, find).await;
        assert_eq!(status, 200);
        assert_eq!(mapping.read_found_case(&body).expect("a case list").map(|c| c.case_id), Some("5000000001".into()));
        let again = send(&served.http, mapping.create_case(&served.base, "corr-3", &case, None).expect("create")).await;
        assert_eq!(again.0, 400, "the unique ref refuses a second create");
        let ledger = served.sim.store.lock().await.ledger().to_vec();
        assert_eq!(ledger.len(), 1);
        assert_eq!(
            (ledger[0].external_ref.as_deref(), ledger[0].body["content"].clone()),
            (Some("corr-3"), json!("Called about billing"))
        );
        let stats = served.sim.stats.snapshot();
        assert_eq!((stats.lookups, stats.creates, stats.case_queries), (2, 2, 1));
    }

    /// The shipped profile's customer list, 100 a page (its `limit`),
    /// followed by `paging.next.after` to the last page.
    #[tokio::test]
    async fn hubspot_serves_the_shipped_profile_list() {
        let (served, since) = changes(250).await;
        let mapping = profile("hubspot", &[("FAILSOFT_CRM_API_TOKEN", TOKEN)]);
        let pages = list_all(&served.http, &mapping, &served.base, since, 100, None).await;
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [100, 100, 50]);
        let listed: Vec<_> = pages.into_iter().flatten().collect();
        let ids: Vec<String> = listed.iter().filter_map(|c| c.customer_id.clone()).collect();
        let want: Vec<String> = (0..250).map(|k| format!("C-{k}")).collect();
        assert_eq!(ids, want, "each contact changed at or after `since` once, oldest first");
        assert!(listed.iter().all(|c| !c.deleted && c.tier.as_deref() == Some("gold")));
        assert_eq!(listed[0].phone.as_deref(), Some("+15550250"));
        assert_eq!(listed[0].updated_at.as_deref(), Some(super::iso8601(since).as_str()));
        assert!(!listed.iter().any(|c| c.phone.as_deref() == Some("+15558888")), "archived: not searchable");
        // A full pass lists the older contact too.
        let all = list_all(&served.http, &mapping, &served.base, 0, 100, None).await;
        assert_eq!(all.into_iter().flatten().count(), 251);
        assert_eq!(served.sim.stats.snapshot().lookups, 3 + 3, "HubSpot's list is its search: counted as lookups");
    }

    #[test]
    fn search_parsing() {
        let search = parse_search(
            br#"{"filterGroups":[{"filters":[{"propertyName":"phone","operator":"EQ","value":15550001}]}],"sorts":["x"]}"#,
        )
        .expect("a search");
        assert_eq!(search.groups, [[Filter { property: "phone".into(), operator: Operator::Eq("15550001".into()) }]]);
        assert_eq!((search.limit, search.after, search.properties), (LIMIT_DEFAULT, 0, None));
        let neq = Filter { property: "p".into(), operator: Operator::Neq("a".into()) };
        assert!(neq.matches(None) && neq.matches(Some("b")) && !neq.matches(Some("a")));
        let has = Filter { property: "p".into(), operator: Operator::HasProperty };
        assert!(!has.matches(None) && !has.matches(Some("")) && has.matches(Some("x")));
        assert!(parse_search(br#"{"after":"x"}"#).is_err());
        let many =
            json!({"filterGroups": [{"filters": vec![json!({"propertyName": "p", "operator": "HAS_PROPERTY"}); 11]}]});
        assert!(parse_search(many.to_string().as_bytes()).is_err_and(|m| m.contains("filters in a group is 10")));
    }
}
