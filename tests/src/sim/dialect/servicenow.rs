//! The servicenow dialect (`--dialect servicenow`): ServiceNow's Table API
//! over the simulator's records. Customers are rows of `customer_contact`
//! (`sys_id` the customer id, the tier in the custom field `u_tier`); cases
//! are rows of `incident` (`number` `INC0010001`… the case id in the admin
//! ledger, `correlation_id` its external reference).
//!
//! Served, as these pages document it (ServiceNow's docs, mirrored in
//! <https://github.com/ServiceNow/ServiceNowDocs>):
//! - `POST /oauth_token.do`, the inbound client credentials grant
//!   (<https://www.servicenow.com/docs/r/australia/platform-security/authentication/client-credentials.html>,
//!   answer shape of `r_RESTOAuthExample.md`): a form body
//!   `grant_type=client_credentials&client_id=…&client_secret=…` (or the
//!   client in HTTP Basic auth) → 200
//!   `{"access_token","scope":"useraccount","token_type":"Bearer","expires_in":<--token-lifetime-secs>}`
//!   (no refresh token for this grant). A bad client or another grant: 401
//!   `{"error_description":"access_denied","error":"server_error"}`, the
//!   instance's answer to every refused token request (real answers; the
//!   docs give no body).
//! - Every call under `/api/now/` needs `Authorization: Bearer <token>` of a
//!   token issued, unexpired and not revoked; else 401
//!   `{"error":{"message":"User is not authenticated","detail":"Required to provide Auth information"},"status":"failure"}`
//!   with `WWW-Authenticate: Basic realm="Service-now"`, as instances answer
//!   today (older releases said `User Not Authenticated`).
//! - `GET /api/now/table/{customer_contact|incident}` (`c_TableAPI.md`,
//!   <https://www.servicenow.com/docs/r/api-reference/rest-apis/c_TableAPI.html>):
//!   `sysparm_query` (an encoded query), `sysparm_fields` (a comma list;
//!   invalid names ignored), `sysparm_limit` (default 10 000),
//!   `sysparm_offset`, `sysparm_no_count`; without `sysparm_query`, other
//!   `name=value` parameters are equality conditions → 200
//!   `{"result":[{…}]}`, every value a string, with `X-Total-Count` and, when
//!   there is more than one page, `Link` (`rel="first"`, `"prev"`,
//!   `"next"`, `"last"`). `GET /api/now/table/{table}/{sys_id}` → 200
//!   `{"result":{…}}`, or 404 `{"error":{"message":"No Record found","detail":"Record doesn't exist or ACL restricts the record retrieval"},"status":"failure"}`.
//! - The encoded query (`c_TableAPI.md`, <https://servicenow.github.io/sdk/guides/encoded-query-guide>):
//!   `<field><operator><value>` conditions joined by `^` (AND); `^OR` joins a
//!   condition to the one before it (OR); `^NQ` starts a new query ORed with
//!   the others; `ORDERBY<field>`, `ORDERBYDESC<field>` sort; `^EQ` ends.
//!   Operators: `=`, `!=`, `ISEMPTY`, `ISNOTEMPTY`, `ANYTHING`,
//!   `STARTSWITH`, `ENDSWITH`, `LIKE`, `NOTLIKE`, `IN`, `NOT IN`; fields,
//!   operators and values are case-sensitive, and a value runs to the next
//!   `^` (ServiceNow documents no escape for `^`). As the instance does by
//!   default, a part of the query it cannot use (a field the table lacks, or
//!   a condition with no operator) is IGNORED and the rest of the query
//!   answers, so `phone=x^NQphoneISNOTEMPTY` or `phone=x^ORphone!=x`, a value
//!   with `^` pasted in, answers every contact ("If part of a query is
//!   invalid, such as an invalid field name, the instance ignores the
//!   invalid part", `c_TableAPI.md`). `--servicenow-invalid-query-returns-no-rows`
//!   models `glide.invalid_query.returns_no_rows=true`: such a query answers
//!   no rows.
//! - `POST /api/now/table/incident` (`c_TableAPI.md`): a JSON object of
//!   fields → 201 `{"result":{"sys_id":"<32 hex>","number":"INC0010001","state":"1","correlation_id",…,"sys_created_on":"YYYY-MM-DD HH:MM:SS",…}}`
//!   (every value a string, times in UTC) with `Location:
//!   …/api/now/table/incident/<sys_id>`; `X-no-response-body: true` leaves
//!   the body out. Fields the table lacks, and system fields (`sys_*`,
//!   `number`), are ignored, as the instance ignores them. A body that is
//!   not JSON: 400 `{"error":{"message":"Exception while reading request","detail":"The payload is not valid JSON."},"status":"failure"}`.
//!   The Table API has no idempotency key: `Idempotency-Key` is ignored and
//!   every POST creates; `correlation_id` is not unique. A POST to
//!   `customer_contact`: 403 `{"error":{"message":"Operation Failed","detail":"ACL Exception Insert Failed due to security constraints"},"status":"failure"}`
//!   (the integration user may only read it).
//! - Another table: 400 `{"error":{"message":"Invalid table <name>","detail":null},"status":"failure"}`;
//!   another path: 400 `{"error":{"message":"Requested URI does not represent any resource","detail":null},"status":"failure"}`
//!   (`r_RESTAPIHTTPResponseCodes.md`: 400 when "the URI doesn't match an
//!   API").
//! - Rate limits (`inbound-REST-API-rate-limiting.md`): with `--rate-limit`,
//!   every answer but the token endpoint's carries `X-RateLimit-Limit`,
//!   `X-RateLimit-Reset` (the Unix time the window ends) and
//!   `X-RateLimit-Rule` (the rule's sys_id); over it, 429 with `Retry-After`
//!   and `{"error":{"message":"Rate limit exceeded","detail":"Rate limit of <n> requests per <window> for Table API exceeded"},"status":"failure"}`.
//!   Without a limit no rule matches and no header is sent (ServiceNow
//!   documents no `X-RateLimit-Remaining`).
//!
//! Simplified: one instance, one OAuth application and its application user
//! (`--client-id`/`--client-secret`); tokens are opaque hex, and scopes are
//! not checked. The two tables have fixed names and fields
//! (`customer_contact`: `sys_id name first_name last_name phone
//! mobile_phone email u_tier active sys_created_on sys_updated_on`; incident:
//! see [`INCIDENT_FIELDS`]); there are no reference fields, no dot-walking,
//! no display values and no `/api/now/v1|v2/` paths; a contact's `sys_id` is
//! the customer id, not 32 hex as ServiceNow's are, so the admin ledger and
//! the lookup name the customer alike, and its `sys_created_on` is its last
//! change. Comparison operators (`<`, `>`, `BETWEEN`, dates, …) are refused
//! 400 rather than evaluated. An incident's `sys_id` is derived from its
//! ledger position, its priority is not computed from urgency and impact,
//! and no business rule runs. The rate limit is one window of
//! `--rate-window-secs` rather than an hour, and `X-RateLimit-Limit` states
//! calls per that window.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::{LINK, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::{DialectState, Quota, base_url, basic_credentials, bearer_token, form_component, form_pairs, header};
use crate::sim::clock;
use crate::sim::limit::RateLimit;
use crate::sim::route::Route;
use crate::sim::store::{Case, Customer, LedgerFull};

type Shared = State<Arc<DialectState>>;

const TOKEN_PATH: &str = "/oauth_token.do";
const TABLES: &str = "/api/now/table/";
/// The table of the people who call (the profile's `customer_table`).
pub const CUSTOMER_TABLE: &str = "customer_contact";
/// The table cases are created in (the profile's `case_table`).
pub const CASE_TABLE: &str = "incident";
/// The customer field holding the routing tier (the profile's `tier_field`).
pub const TIER_FIELD: &str = "u_tier";
const LIMIT_DEFAULT: usize = 10_000;
/// The first incident's number (a fresh instance's).
const FIRST_NUMBER: usize = 10_001;
/// The sys_id of the simulated rate-limit rule.
const RULE_ID: &str = "5f1b7a2d1b3f2010b6a3a8e8bc4bcb11";
/// Who the integration's records are created by.
const INTEGRATION_USER: &str = "failsoft.integration";

const CONTACT_FIELDS: &[&str] = &[
    "sys_id",
    "name",
    "first_name",
    "last_name",
    "phone",
    "mobile_phone",
    "email",
    TIER_FIELD,
    "active",
    "sys_created_on",
    "sys_updated_on",
];
/// The incident fields served (the table has many more).
pub const INCIDENT_FIELDS: &[&str] = &[
    "sys_id",
    "number",
    "short_description",
    "description",
    "contact_type",
    "correlation_id",
    "correlation_display",
    "state",
    "incident_state",
    "active",
    "priority",
    "urgency",
    "impact",
    "category",
    "subcategory",
    "caller_id",
    "assignment_group",
    "assigned_to",
    "opened_at",
    "sys_created_on",
    "sys_updated_on",
    "sys_created_by",
    "sys_updated_by",
    "sys_mod_count",
    "sys_class_name",
];
/// The incident fields a POST sets; the others are the instance's.
const INCIDENT_WRITABLE: &[&str] = &[
    "short_description",
    "description",
    "contact_type",
    "correlation_id",
    "correlation_display",
    "state",
    "priority",
    "urgency",
    "impact",
    "category",
    "subcategory",
    "caller_id",
    "assignment_group",
    "assigned_to",
];

pub fn routes() -> Router<Arc<DialectState>> {
    Router::new()
        .route(TOKEN_PATH, post(token))
        .route("/api/now/table/{table}", get(list).post(create))
        .route("/api/now/table/{table}/{sys_id}", get(read))
        .fallback(|| async { error(StatusCode::BAD_REQUEST, "Requested URI does not represent any resource", None) })
}

pub fn is_token_path(path: &str) -> bool {
    path == TOKEN_PATH
}

/// Reading `customer_contact` is a lookup; a POST to `incident` a case
/// creation; reading `incident` a case query.
pub fn classify(method: &Method, uri: &Uri) -> Route {
    let Some(rest) = uri.path().strip_prefix(TABLES) else {
        return Route::Other;
    };
    let (table, record) = match rest.split_once('/') {
        Some((table, record)) => (table, Some(record)),
        None => (rest, None),
    };
    match (method, table, record) {
        (&Method::GET, CUSTOMER_TABLE, _) => Route::Lookup,
        (&Method::POST, CASE_TABLE, None) => Route::CreateCase,
        (&Method::GET, CASE_TABLE, _) => Route::FindCases,
        _ => Route::Other,
    }
}

/// ServiceNow's error body: `{"error":{"message","detail"},"status":"failure"}`.
fn error(status: StatusCode, message: &str, detail: Option<&str>) -> Response {
    super::json(status, json!({"error": {"message": message, "detail": detail}, "status": "failure"}))
}

/// `per hour`, `per minute`, or `per <n> seconds`: a rule's window.
fn window_text(secs: u64) -> String {
    match secs {
        3_600 => "hour".into(),
        60 => "minute".into(),
        1 => "second".into(),
        n => format!("{n} seconds"),
    }
}

pub fn limit_exceeded(limit: RateLimit, retry_after_secs: u64) -> Response {
    let detail =
        format!("Rate limit of {} requests per {} for Table API exceeded", limit.limit, window_text(limit.window_secs));
    let mut response = error(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded", Some(&detail));
    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

/// The rule's headers, when a limit is set (no rule matches otherwise).
pub fn write_quota(quota: Quota, headers: &mut HeaderMap) {
    if quota.window_secs.is_none() {
        return;
    }
    let reset = clock::unix_ms() / 1000 + quota.reset_secs;
    headers.insert("x-ratelimit-limit", HeaderValue::from(quota.limit));
    headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
    headers.insert("x-ratelimit-rule", HeaderValue::from_static(RULE_ID));
}

/// The refusal of a call without a valid token, if it has none.
fn unauthenticated(state: &DialectState, headers: &HeaderMap) -> Option<Response> {
    let valid = bearer_token(headers, &["Bearer"]).is_some_and(|t| state.sim.tokens.is_valid(t, Instant::now()));
    (!valid).then(|| {
        let mut refusal =
            error(StatusCode::UNAUTHORIZED, "User is not authenticated", Some("Required to provide Auth information"));
        refusal.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"Service-now\""));
        refusal
    })
}

/// `POST /oauth_token.do`: the client credentials grant.
async fn token(State(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let form = form_pairs(&String::from_utf8_lossy(&body));
    let field = |name: &str| form.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let settings = &state.settings;
    let client = basic_credentials(&headers).or_else(|| Some((field("client_id")?, field("client_secret")?)));
    let valid = client.is_some_and(|(id, secret)| id == settings.client_id && secret == settings.client_secret);
    if field("grant_type").as_deref() != Some("client_credentials") || !valid {
        return super::json(
            StatusCode::UNAUTHORIZED,
            json!({"error_description": "access_denied", "error": "server_error"}),
        );
    }
    let access_token = state.sim.tokens.issue("", settings.token_lifetime, Instant::now());
    state.sim.stats.token_issued();
    super::json(
        StatusCode::OK,
        json!({
            "access_token": access_token,
            "scope": "useraccount",
            "token_type": "Bearer",
            "expires_in": settings.token_lifetime.as_secs().max(1),
        }),
    )
}

/// ServiceNow's date and time in UTC: `2016-01-19 04:52:04`.
fn sn_datetime(ms: u64) -> String {
    super::utc_text(ms, "[year]-[month]-[day] [hour]:[minute]:[second]")
}

/// A 32-hex-digit sys_id for the incident at ledger position `index`.
fn incident_sys_id(index: usize) -> String {
    // FNV-1a, then splitmix64's finalizer so the halves share no pattern.
    let half = |salt: &str| {
        let h = format!("{salt}/incident/{index}")
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        let h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    };
    format!("{:016x}{:016x}", half("a"), half("b"))
}

fn incident_number(index: usize) -> String {
    format!("INC{:07}", FIRST_NUMBER + index)
}

/// The served tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Contacts,
    Incidents,
}

impl Table {
    fn named(name: &str) -> Option<Self> {
        match name {
            CUSTOMER_TABLE => Some(Self::Contacts),
            CASE_TABLE => Some(Self::Incidents),
            _ => None,
        }
    }

    fn fields(self) -> &'static [&'static str] {
        match self {
            Self::Contacts => CONTACT_FIELDS,
            Self::Incidents => INCIDENT_FIELDS,
        }
    }

    fn has(self, field: &str) -> bool {
        self.fields().contains(&field)
    }
}

/// A contact's field value (`""` when unset, as the API shows it).
fn contact_value(customer: &Customer, field: &str) -> String {
    let name = customer.name.trim();
    let (first, last) = name.split_once(' ').unwrap_or((name, ""));
    match field {
        "sys_id" => customer.customer_id.clone(),
        "name" => name.to_owned(),
        "first_name" => first.to_owned(),
        "last_name" => last.trim().to_owned(),
        "phone" => customer.phone.clone(),
        TIER_FIELD => customer.tier.clone(),
        "active" => (customer.status == "active").to_string(),
        "sys_created_on" | "sys_updated_on" => sn_datetime(customer.updated_at_ms),
        _ => String::new(),
    }
}

/// An incident's field value; `index` is its ledger position.
fn incident_value(case: &Case, index: usize, field: &str) -> String {
    let stored = |name: &str| case.body.get(name).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_owned);
    match field {
        "sys_id" => incident_sys_id(index),
        "number" => case.case_id.clone(),
        "state" | "incident_state" => stored("state").unwrap_or_else(|| "1".into()),
        "active" => "true".into(),
        "priority" => stored("priority").unwrap_or_else(|| "5".into()),
        "urgency" | "impact" => stored(field).unwrap_or_else(|| "3".into()),
        "opened_at" | "sys_created_on" | "sys_updated_on" => sn_datetime(case.created_at),
        "sys_created_by" | "sys_updated_by" => INTEGRATION_USER.into(),
        "sys_mod_count" => "0".into(),
        "sys_class_name" => CASE_TABLE.into(),
        _ => stored(field).unwrap_or_default(),
    }
}

/// A row as the API shows it: `fields` (all of the table's when `None`).
fn row(table: Table, fields: Option<&[&str]>, value: impl Fn(&str) -> String) -> Value {
    let fields = fields.unwrap_or(table.fields());
    Value::Object(fields.iter().map(|f| ((*f).to_owned(), Value::from(value(f)))).collect())
}

/// `sysparm_fields`: the table's fields named, in order, each once; `None`
/// (every field) when it names none the table has.
fn chosen_fields(table: Table, list: Option<&str>) -> Option<Vec<&'static str>> {
    let mut fields: Vec<&'static str> = Vec::new();
    for name in list?.split(',').map(str::trim) {
        if let Some(field) = table.fields().iter().find(|f| **f == name)
            && !fields.contains(field)
        {
            fields.push(field);
        }
    }
    (!fields.is_empty()).then_some(fields)
}

/// An encoded query's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    IsEmpty,
    IsNotEmpty,
    Anything,
    StartsWith,
    EndsWith,
    Like,
    NotLike,
    In,
    NotIn,
}

/// Operators as written, longest first where one starts another.
const OPERATORS: &[(&str, Op)] = &[
    ("!=", Op::Ne),
    ("=", Op::Eq),
    ("ISNOTEMPTY", Op::IsNotEmpty),
    ("ISEMPTY", Op::IsEmpty),
    ("ANYTHING", Op::Anything),
    ("STARTSWITH", Op::StartsWith),
    ("ENDSWITH", Op::EndsWith),
    ("NOTLIKE", Op::NotLike),
    ("LIKE", Op::Like),
    ("NOT IN", Op::NotIn),
    ("IN", Op::In),
];
/// Operators ServiceNow has that the simulator does not evaluate.
const UNSERVED: &[&str] = &[
    ">=",
    "<=",
    ">",
    "<",
    "BETWEEN",
    "SAMEAS",
    "NSAMEAS",
    "DATEPART",
    "RELATIVE",
    "ONToday",
    "MORETHAN",
    "LESSTHAN",
    "VALCHANGES",
    "CHANGESFROM",
    "CHANGESTO",
    "DYNAMIC",
    "EMPTYSTRING",
    "NOTONToday",
];

/// One condition of an encoded query.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cond {
    field: String,
    op: Op,
    value: String,
}

impl Cond {
    fn matches(&self, have: &str) -> bool {
        let want = self.value.as_str();
        match self.op {
            Op::Eq => have == want,
            Op::Ne => have != want,
            Op::IsEmpty => have.is_empty(),
            Op::IsNotEmpty => !have.is_empty(),
            Op::Anything => true,
            Op::StartsWith => have.starts_with(want),
            Op::EndsWith => have.ends_with(want),
            Op::Like => have.contains(want),
            Op::NotLike => !have.contains(want),
            Op::In => want.split(',').any(|v| v == have),
            Op::NotIn => want.split(',').all(|v| v != have),
        }
    }
}

/// A part of a query: a condition the table can evaluate, or one the
/// instance cannot use (ignored, or no rows with `returns_no_rows`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Cond(Cond),
    Invalid(String),
}

/// An encoded query: ORed queries (`^NQ`), each ANDed (`^`) lists of ORed
/// (`^OR`) terms, and the order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Query {
    queries: Vec<Vec<Vec<Term>>>,
    order: Vec<(String, bool)>,
}

impl Query {
    /// Parses `text` for `table`; `Err` names an operator the simulator
    /// does not evaluate.
    fn parse(text: &str, table: Table) -> Result<Self, String> {
        let mut query = Self::default();
        for part in text.split("^NQ") {
            let mut and: Vec<Vec<Term>> = Vec::new();
            for piece in part.split('^') {
                if piece.is_empty() || piece == "EQ" {
                    continue;
                }
                if let Some(field) = piece.strip_prefix("ORDERBYDESC") {
                    query.order.push((field.to_owned(), true));
                } else if let Some(field) = piece.strip_prefix("ORDERBY") {
                    query.order.push((field.to_owned(), false));
                } else if let Some(alternative) = piece.strip_prefix("OR")
                    && let Some(last) = and.last_mut()
                {
                    last.push(term(alternative, table)?);
                } else {
                    and.push(vec![term(piece, table)?]);
                }
            }
            query.queries.push(and);
        }
        Ok(query)
    }

    /// Equality conditions from `name=value` parameters (no encoded query).
    fn of_pairs(pairs: &[(String, String)], table: Table) -> Self {
        let and = pairs
            .iter()
            .map(|(field, value)| {
                vec![if table.has(field) {
                    Term::Cond(Cond { field: field.clone(), op: Op::Eq, value: value.clone() })
                } else {
                    Term::Invalid(format!("{field}={value}"))
                }]
            })
            .collect();
        Self { queries: vec![and], order: Vec::new() }
    }

    fn has_invalid(&self) -> bool {
        self.queries.iter().flatten().flatten().any(|t| matches!(t, Term::Invalid(_)))
    }

    /// Whether a row matches, the invalid parts ignored: one query whose
    /// every ANDed part has a matching condition (a part with none left
    /// is dropped).
    fn matches(&self, value: impl Fn(&str) -> String) -> bool {
        self.queries.is_empty()
            || self.queries.iter().any(|and| {
                and.iter().all(|alternatives| {
                    let mut conds = alternatives
                        .iter()
                        .filter_map(|t| if let Term::Cond(c) = t { Some(c) } else { None })
                        .peekable();
                    conds.peek().is_none() || conds.any(|c| c.matches(&value(&c.field)))
                })
            })
    }

    /// The only condition when the query is exactly `<field>=<value>`.
    fn sole_equality(&self) -> Option<&Cond> {
        match &self.queries[..] {
            [and] => match &and[..] {
                [alternatives] => match &alternatives[..] {
                    [Term::Cond(cond)] if cond.op == Op::Eq => Some(cond),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        }
    }
}

/// One condition as written, for `table`.
fn term(text: &str, table: Table) -> Result<Term, String> {
    let end = text.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'));
    let (field, rest) = text.split_at(end.unwrap_or(text.len()));
    let Some((op, value)) =
        OPERATORS.iter().find_map(|(written, op)| rest.strip_prefix(written).map(|value| (*op, value)))
    else {
        if let Some(unserved) = UNSERVED.iter().find(|u| rest.starts_with(*u)) {
            return Err(format!("the simulator does not evaluate the operator {unserved} ({text})"));
        }
        return Ok(Term::Invalid(text.to_owned()));
    };
    let needs_no_value = matches!(op, Op::IsEmpty | Op::IsNotEmpty | Op::Anything);
    if field.is_empty() || !table.has(field) || (needs_no_value && !value.is_empty()) {
        return Ok(Term::Invalid(text.to_owned()));
    }
    Ok(Term::Cond(Cond { field: field.to_owned(), op, value: value.to_owned() }))
}

/// The refusal of a table the instance lacks.
fn invalid_table(name: &str) -> Response {
    error(StatusCode::BAD_REQUEST, &format!("Invalid table {name}"), None)
}

/// A row's field values.
type Row<'a> = Box<dyn Fn(&str) -> String + 'a>;

/// `GET /api/now/table/{table}`.
async fn list(State(state): Shared, Path(name): Path<String>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(refusal) = unauthenticated(&state, &headers) {
        return refusal;
    }
    let Some(table) = Table::named(&name) else {
        return invalid_table(&name);
    };
    let params = form_pairs(uri.query().unwrap_or(""));
    let param = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let query = match param("sysparm_query") {
        Some(text) => match Query::parse(text, table) {
            Ok(query) => query,
            Err(why) => return error(StatusCode::BAD_REQUEST, "Invalid query", Some(&why)),
        },
        None => {
            let pairs: Vec<(String, String)> =
                params.iter().filter(|(n, _)| !n.starts_with("sysparm_")).cloned().collect();
            Query::of_pairs(&pairs, table)
        }
    };
    let number = |name: &str| param(name).and_then(|v| v.trim().parse::<usize>().ok());
    let limit = number("sysparm_limit").filter(|n| *n > 0).unwrap_or(LIMIT_DEFAULT);
    let offset = number("sysparm_offset").unwrap_or(0);
    let fields = chosen_fields(table, param("sysparm_fields"));
    let none = state.settings.servicenow_invalid_query_returns_no_rows && query.has_invalid();
    let store = state.sim.store.lock().await;
    let mut rows: Vec<Row<'_>> = if none {
        Vec::new()
    } else {
        match table {
            Table::Contacts => match query.sole_equality().filter(|c| c.field == "phone") {
                // `phone=<number>`: the store's index answers it.
                Some(cond) => store.customer(&cond.value).into_iter().map(|c| boxed_contact(c)).collect(),
                None => store
                    .customers()
                    .filter(|c| query.matches(|f| contact_value(c, f)))
                    .map(|c| boxed_contact(c))
                    .collect(),
            },
            Table::Incidents => store
                .ledger()
                .iter()
                .enumerate()
                .filter(|(i, case)| query.matches(|f| incident_value(case, *i, f)))
                .map(|(i, case)| -> Row<'_> { Box::new(move |f| incident_value(case, i, f)) })
                .collect(),
        }
    };
    for (field, descending) in query.order.iter().rev().filter(|(f, _)| table.has(f)) {
        rows.sort_by(|a, b| {
            let order = a(field).cmp(&b(field));
            if *descending { order.reverse() } else { order }
        });
    }
    let total = rows.len();
    let result: Vec<Value> =
        rows.iter().skip(offset).take(limit).map(|value| row(table, fields.as_deref(), value)).collect();
    drop(rows);
    drop(store);
    let mut response = super::json(StatusCode::OK, json!({"result": result}));
    if param("sysparm_no_count") != Some("true") {
        response.headers_mut().insert("x-total-count", HeaderValue::from(total));
    }
    if offset > 0 || total > limit {
        let link = links(&base_url(&headers), uri.path(), &params, offset, limit, total);
        response.headers_mut().insert(LINK, header(&link));
    }
    response
}

fn boxed_contact(customer: &Customer) -> Row<'_> {
    Box::new(move |f| contact_value(customer, f))
}

/// The `Link` header of a page: first, prev, next and last.
fn links(base: &str, path: &str, params: &[(String, String)], offset: usize, limit: usize, total: usize) -> String {
    let url = |at: usize| {
        let mut query: Vec<String> = params
            .iter()
            .filter(|(n, _)| n != "sysparm_offset" && n != "sysparm_limit")
            .map(|(n, v)| format!("{}={}", form_component(n), form_component(v)))
            .collect();
        query.push(format!("sysparm_offset={at}"));
        query.push(format!("sysparm_limit={limit}"));
        format!("<{base}{path}?{}>", query.join("&"))
    };
    let last = total.saturating_sub(1) / limit * limit;
    let mut links = vec![format!("{};rel=\"first\"", url(0))];
    if offset > 0 {
        links.push(format!("{};rel=\"prev\"", url(offset.saturating_sub(limit))));
    }
    if offset + limit < total {
        links.push(format!("{};rel=\"next\"", url(offset + limit)));
    }
    links.push(format!("{};rel=\"last\"", url(last)));
    links.join(",")
}

/// `GET /api/now/table/{table}/{sys_id}`.
async fn read(
    State(state): Shared,
    Path((name, sys_id)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Some(refusal) = unauthenticated(&state, &headers) {
        return refusal;
    }
    let Some(table) = Table::named(&name) else {
        return invalid_table(&name);
    };
    let fields = chosen_fields(table, super::query_value(&uri, "sysparm_fields").as_deref());
    let store = state.sim.store.lock().await;
    let found = match table {
        Table::Contacts => store
            .customers()
            .find(|c| c.customer_id == sys_id)
            .map(|c| row(table, fields.as_deref(), |f| contact_value(c, f))),
        Table::Incidents => store
            .ledger()
            .iter()
            .enumerate()
            .find(|(i, _)| incident_sys_id(*i) == sys_id)
            .map(|(i, case)| row(table, fields.as_deref(), |f| incident_value(case, i, f))),
    };
    drop(store);
    match found {
        Some(record) => super::json(StatusCode::OK, json!({"result": record})),
        None => error(
            StatusCode::NOT_FOUND,
            "No Record found",
            Some("Record doesn't exist or ACL restricts the record retrieval"),
        ),
    }
}

/// A posted value as the field stores it: text, or a reference's `value`.
fn field_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        Value::Object(reference) => reference.get("value").and_then(Value::as_str).map(str::to_owned),
        Value::Array(_) => None,
    }
}

/// `POST /api/now/table/{table}`.
async fn create(State(state): Shared, Path(name): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refusal) = unauthenticated(&state, &headers) {
        return refusal;
    }
    match Table::named(&name) {
        Some(Table::Incidents) => {}
        Some(Table::Contacts) => {
            return error(
                StatusCode::FORBIDDEN,
                "Operation Failed",
                Some("ACL Exception Insert Failed due to security constraints"),
            );
        }
        None => return invalid_table(&name),
    }
    let posted = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(fields)) => fields,
        // One record per POST: the first of several.
        Ok(Value::Array(mut records)) if records.first().is_some_and(Value::is_object) => {
            match records.swap_remove(0) {
                Value::Object(fields) => fields,
                _ => Map::new(),
            }
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "Exception while reading request",
                Some("The payload is not valid JSON."),
            );
        }
    };
    let fields: Map<String, Value> = posted
        .iter()
        .filter(|(name, _)| INCIDENT_WRITABLE.contains(&name.as_str()))
        .filter_map(|(name, value)| Some((name.clone(), Value::from(field_text(value)?))))
        .collect();
    let external_ref =
        fields.get("correlation_id").and_then(Value::as_str).filter(|r| !r.is_empty()).map(str::to_owned);
    // No idempotency key in the Table API: every POST creates.
    let mut store = state.sim.store.lock().await;
    let index = store.ledger().len();
    let created = store.append_case(None, fields, external_ref, incident_number, clock::unix_ms());
    drop(store);
    let case = match created {
        Ok(case) => case,
        Err(LedgerFull) => {
            return error(StatusCode::INSUFFICIENT_STORAGE, "Operation Failed", Some("The incident table is full"));
        }
    };
    state.sim.stats.case_created();
    let location = format!("{}{TABLES}{CASE_TABLE}/{}", base_url(&headers), incident_sys_id(index));
    let quiet =
        headers.get("x-no-response-body").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let mut response = if quiet {
        StatusCode::CREATED.into_response()
    } else {
        let record = row(Table::Incidents, None, |f| incident_value(&case, index, f));
        super::json(StatusCode::CREATED, json!({"result": record}))
    };
    response.headers_mut().insert(LOCATION, header(&location));
    response
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Served, profile, send};
    use super::super::{Dialect, Settings};
    use super::*;
    use crate::sim::limit::HeaderStyle;
    use failsoft_shared::mapping::LookupAnswer;
    use failsoft_shared::mapping::template::Escaper;

    const CLIENT: &str =
        "grant_type=client_credentials&client_id=failsoft-test-client&client_secret=failsoft-test-secret";

    async fn served_with(settings: Settings) -> Served {
        super::super::testing::serve_seeded(
            Dialect::ServiceNow,
            settings,
            json!([
                {"phone": "+15550001", "customerId": "C-1", "tier": "gold", "name": "Ann Lee"},
                {"phone": "+15550002", "customerId": "C-2", "tier": "vip"},
                {"phone": "+15550003", "customerId": "C-3", "status": "inactive"},
            ]),
        )
        .await
    }

    async fn served() -> Served {
        served_with(Settings::default()).await
    }

    async fn token_with(served: &Served, form: &str) -> reqwest::Response {
        super::super::testing::post_form(served, TOKEN_PATH, form).await
    }

    async fn token(served: &Served) -> String {
        let answer: Value = token_with(served, CLIENT).await.json().await.expect("json");
        answer["access_token"].as_str().expect("a token").to_owned()
    }

    async fn get(served: &Served, token: &str, table: &str, query: &[(&str, &str)]) -> (u16, HeaderMap, Value) {
        let answer = served
            .http
            .get(format!("{}{TABLES}{table}", served.base))
            .query(query)
            .bearer_auth(token)
            .send()
            .await
            .expect("get");
        let (status, headers) = (answer.status().as_u16(), answer.headers().clone());
        (status, headers, answer.json().await.expect("json"))
    }

    /// The `sys_id`s a contact query answers.
    async fn contacts(served: &Served, token: &str, sysparm_query: &str) -> Vec<String> {
        let (status, _, body) =
            get(served, token, CUSTOMER_TABLE, &[("sysparm_query", sysparm_query), ("sysparm_fields", "sys_id")]).await;
        assert_eq!(status, 200, "{body}");
        body["result"]
            .as_array()
            .expect("rows")
            .iter()
            .filter_map(|r| r["sys_id"].as_str().map(str::to_owned))
            .collect()
    }

    async fn create(served: &Served, token: &str, body: Value) -> reqwest::Response {
        served
            .http
            .post(format!("{}{TABLES}{CASE_TABLE}", served.base))
            .bearer_auth(token)
            .header("idempotency-key", "k-1")
            .json(&body)
            .send()
            .await
            .expect("create")
    }

    #[tokio::test]
    async fn servicenow_issues_tokens_and_refuses_bad_clients() {
        let served = served().await;
        let answer = token_with(&served, CLIENT).await;
        assert_eq!(answer.status(), 200);
        let body: Value = answer.json().await.expect("json");
        assert_eq!(
            (body["scope"].clone(), body["token_type"].clone(), body["expires_in"].clone()),
            (json!("useraccount"), json!("Bearer"), json!(7_200))
        );
        assert!(body["access_token"].as_str().is_some_and(|t| t.len() == 48) && body.get("refresh_token").is_none());
        let basic = served
            .http
            .post(format!("{}{TOKEN_PATH}", served.base))
            .basic_auth("failsoft-test-client", Some("failsoft-test-secret"))
            .body("grant_type=client_credentials")
            .send()
            .await
            .expect("token");
        assert_eq!(basic.status(), 200);
        let denied = json!({"error_description": "access_denied", "error": "server_error"});
        for form in [
            "grant_type=client_credentials&client_id=failsoft-test-client&client_secret=nope",
            "grant_type=password&client_id=failsoft-test-client&client_secret=failsoft-test-secret",
            "",
        ] {
            let refused = token_with(&served, form).await;
            assert_eq!(refused.status(), 401, "{form}");
            assert_eq!(refused.json::<Value>().await.expect("json"), denied);
        }
        assert_eq!(served.sim.stats.snapshot().tokens_issued, 2);
    }

    #[tokio::test]
    async fn servicenow_refuses_missing_bad_and_revoked_tokens() {
        let served = served().await;
        let expected = json!({"error": {"message": "User is not authenticated",
            "detail": "Required to provide Auth information"}, "status": "failure"});
        let url = format!("{}{TABLES}{CUSTOMER_TABLE}?sysparm_query=phone=%2B15550001", served.base);
        let none = served.http.get(&url).send().await.expect("get");
        assert_eq!(none.status(), 401);
        assert_eq!(none.headers()[WWW_AUTHENTICATE], "Basic realm=\"Service-now\"");
        assert_eq!(none.json::<Value>().await.expect("json"), expected);
        let bad = served.http.get(&url).bearer_auth("nope").send().await.expect("get");
        assert_eq!(bad.status(), 401);
        let token = token(&served).await;
        assert_eq!(served.http.get(&url).bearer_auth(&token).send().await.expect("get").status(), 200);
        assert_eq!(served.sim.tokens.revoke_all(Instant::now()), 1);
        let revoked = served.http.get(&url).bearer_auth(&token).send().await.expect("get");
        assert_eq!((revoked.status().as_u16(), revoked.json::<Value>().await.expect("json")), (401, expected));
        let fresh = self::token(&served).await;
        assert_eq!(served.http.get(&url).bearer_auth(&fresh).send().await.expect("get").status(), 200);
    }

    #[tokio::test]
    async fn servicenow_looks_up_contacts_by_phone() {
        let served = served().await;
        let token = token(&served).await;
        let lookup = |phone: &'static str| {
            let query = format!("phone={phone}");
            let served = &served;
            let token = token.clone();
            async move {
                get(
                    served,
                    &token,
                    CUSTOMER_TABLE,
                    &[("sysparm_query", query.as_str()), ("sysparm_limit", "1"), ("sysparm_fields", "sys_id,u_tier")],
                )
                .await
            }
        };
        let (status, headers, body) = lookup("+15550001").await;
        assert_eq!((status, body), (200, json!({"result": [{"sys_id": "C-1", "u_tier": "gold"}]})));
        assert_eq!(headers["x-total-count"], "1");
        assert!(headers.get(LINK).is_none(), "one page");
        let (status, headers, body) = lookup("+19990000").await;
        assert_eq!(
            (status, body, headers["x-total-count"].clone()),
            (200, json!({"result": []}), HeaderValue::from(0))
        );
        // Every field when none is named; every value a string.
        let (_, _, all) = get(&served, &token, CUSTOMER_TABLE, &[("sysparm_query", "phone=+15550003")]).await;
        let c3 = all["result"][0].as_object().expect("row");
        assert_eq!(c3.len(), CONTACT_FIELDS.len());
        assert!(c3.values().all(Value::is_string));
        assert_eq!((c3["active"].clone(), c3["u_tier"].clone()), (json!("false"), json!("standard")));
        // Other operators, `^OR`, ordering, paging.
        assert_eq!(contacts(&served, &token, "nameSTARTSWITHAnn").await, ["C-1"]);
        assert_eq!(contacts(&served, &token, "u_tier=vip^ORu_tier=gold^ORDERBYDESCphone").await, ["C-2", "C-1"]);
        assert_eq!(contacts(&served, &token, "u_tierINgold,standard^active=true").await, ["C-1"]);
        let (_, headers, page) = get(
            &served,
            &token,
            CUSTOMER_TABLE,
            &[("sysparm_limit", "2"), ("sysparm_offset", "2"), ("sysparm_fields", "sys_id")],
        )
        .await;
        assert_eq!(
            (page["result"].clone(), headers["x-total-count"].clone()),
            (json!([{"sys_id": "C-3"}]), HeaderValue::from(3))
        );
        let link = headers[LINK].to_str().expect("ascii");
        assert!(link.contains("sysparm_offset=0&sysparm_limit=2>;rel=\"first\""), "{link}");
        assert!(
            link.contains("sysparm_offset=0&sysparm_limit=2>;rel=\"prev\"") && !link.contains("rel=\"next\""),
            "{link}"
        );
        // `name=value` parameters without an encoded query.
        let (_, _, pair) =
            get(&served, &token, CUSTOMER_TABLE, &[("phone", "+15550002"), ("sysparm_fields", "sys_id")]).await;
        assert_eq!(pair, json!({"result": [{"sys_id": "C-2"}]}));
        let (status, _, refusal) =
            get(&served, &token, CUSTOMER_TABLE, &[("sysparm_query", "sys_created_on>2024-01-01")]).await;
        assert_eq!((status, refusal["error"]["message"].clone()), (400, json!("Invalid query")));
        assert_eq!(served.sim.stats.snapshot().lookups, 9);
    }

    /// Why the profile's `servicenow` escaper refuses `^`: pasted into the
    /// query, a value with `^` makes its own conditions, and by default the
    /// instance answers every contact.
    #[tokio::test]
    async fn servicenow_encoded_query_injection_and_invalid_fields() {
        let served = served().await;
        let token = token(&served).await;
        for injected in ["+1^NQphoneISNOTEMPTY", "+1^ORphone!=x", "+1^NQsys_id=C-2^ORu_tierANYTHING"] {
            let matched = contacts(&served, &token, &format!("phone={injected}")).await;
            assert_eq!(matched, ["C-1", "C-2", "C-3"], "{injected}");
            // The escaper refuses the value rather than sending it...
            assert!(Escaper::ServiceNow.apply(injected).is_err(), "{injected}");
            // ...and with the caret gone the value is one literal phone nobody has.
            let literal = injected.replace('^', "");
            assert!(Escaper::ServiceNow.apply(&literal).is_ok());
            assert!(contacts(&served, &token, &format!("phone={literal}")).await.is_empty(), "{literal}");
        }
        // A field the table lacks is ignored: the rest of the query answers.
        assert_eq!(contacts(&served, &token, "u_nonexistent=1").await, ["C-1", "C-2", "C-3"]);
        assert_eq!(contacts(&served, &token, "u_nonexistent=1^u_tier=vip").await, ["C-2"]);
        assert_eq!(
            contacts(&served, &token, "phoneISNOTEMPTYx^u_tier=vip").await,
            ["C-2"],
            "no value after ISNOTEMPTY"
        );
        assert_eq!(contacts(&served, &token, "Phone=+15550001").await.len(), 3, "field names are case-sensitive");
        // glide.invalid_query.returns_no_rows=true: no rows instead.
        let strict =
            served_with(Settings { servicenow_invalid_query_returns_no_rows: true, ..Settings::default() }).await;
        let strict_token = self::token(&strict).await;
        assert!(contacts(&strict, &strict_token, "u_nonexistent=1").await.is_empty());
        assert!(contacts(&strict, &strict_token, "+1^ORphone!=x").await.is_empty(), "no field at all");
        assert_eq!(contacts(&strict, &strict_token, "phone=+1^ORphone!=x").await.len(), 3, "valid, just too wide");
    }

    #[tokio::test]
    async fn servicenow_creates_incidents_and_finds_them_by_correlation_id() {
        let served = served().await;
        let token = token(&served).await;
        let body = json!({"short_description": "Call", "description": "Called about billing", "contact_type": "phone",
            "correlation_id": "R-1", "u_unknown": "dropped", "number": "INC9", "sys_id": "x", "urgency": 2});
        let answer = create(&served, &token, body.clone()).await;
        assert_eq!(answer.status(), 201);
        let location = answer.headers()[LOCATION].to_str().expect("ascii").to_owned();
        let record: Value = answer.json().await.expect("json");
        let result = record["result"].as_object().expect("result");
        assert_eq!(result.len(), INCIDENT_FIELDS.len());
        assert!(result.values().all(Value::is_string));
        assert_eq!(
            (
                result["number"].clone(),
                result["state"].clone(),
                result["correlation_id"].clone(),
                result["urgency"].clone()
            ),
            (json!("INC0010001"), json!("1"), json!("R-1"), json!("2"))
        );
        let sys_id = result["sys_id"].as_str().expect("sys_id");
        assert!(sys_id.len() == 32 && sys_id.bytes().all(|b| b.is_ascii_hexdigit()), "{sys_id}");
        assert_eq!(location, format!("{}{TABLES}incident/{sys_id}", served.base));
        let created_on = result["sys_created_on"].as_str().expect("sys_created_on");
        assert!(created_on.len() == 19 && created_on.as_bytes()[10] == b' ', "{created_on}");
        // No idempotency key in the Table API: the same key creates again.
        assert_eq!(create(&served, &token, body).await.status(), 201);
        let quiet = served
            .http
            .post(format!("{}{TABLES}{CASE_TABLE}", served.base))
            .bearer_auth(&token)
            .header("x-no-response-body", "true")
            .json(&json!({"short_description": "Other", "correlation_id": "R-2"}))
            .send()
            .await
            .expect("create");
        assert_eq!(quiet.status(), 201);
        assert!(quiet.headers().contains_key(LOCATION));
        assert!(quiet.bytes().await.expect("body").is_empty());
        {
            let store = served.sim.store.lock().await;
            assert_eq!(store.cases_with_ref("R-1").len(), 2);
            assert_eq!(
                (store.ledger()[0].case_id.as_str(), store.ledger()[0].idempotency_key.clone()),
                ("INC0010001", None)
            );
            assert!(
                store.ledger()[0].body.get("u_unknown").is_none() && store.ledger()[0].body.get("number").is_none()
            );
        }

        let (status, headers, found) = get(
            &served,
            &token,
            CASE_TABLE,
            &[
                ("sysparm_query", "correlation_id=R-1"),
                ("sysparm_limit", "1"),
                ("sysparm_fields", "number,state,sys_created_on"),
            ],
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-total-count"], "2");
        assert!(headers[LINK].to_str().is_ok_and(|l| l.contains("rel=\"next\"")));
        assert_eq!(found["result"], json!([{"number": "INC0010001", "state": "1", "sys_created_on": created_on}]));
        let (_, _, none) = get(&served, &token, CASE_TABLE, &[("sysparm_query", "correlation_id=R-9")]).await;
        assert_eq!(none, json!({"result": []}));
        let one: Value =
            served.http.get(&location).bearer_auth(&token).send().await.expect("get").json().await.expect("json");
        assert_eq!(one["result"]["number"], "INC0010001");
        let missing = served
            .http
            .get(format!("{}{TABLES}incident/0000", served.base))
            .bearer_auth(&token)
            .send()
            .await
            .expect("get");
        assert_eq!(missing.status(), 404);
        assert_eq!(missing.json::<Value>().await.expect("json")["error"]["message"], "No Record found");

        let bad = served
            .http
            .post(format!("{}{TABLES}{CASE_TABLE}", served.base))
            .bearer_auth(&token)
            .body("{nope")
            .send()
            .await
            .expect("create");
        assert_eq!(bad.status(), 400);
        assert_eq!(
            bad.json::<Value>().await.expect("json"),
            json!({"error": {"message": "Exception while reading request", "detail": "The payload is not valid JSON."},
                "status": "failure"})
        );
        let stats = served.sim.stats.snapshot();
        assert_eq!((stats.creates, stats.cases_created, stats.case_queries), (4, 3, 4));
    }

    #[tokio::test]
    async fn servicenow_rate_limit_headers_and_429() {
        let served = served().await;
        let token = token(&served).await;
        let query = [("sysparm_query", "phone=+15550001")];
        let (_, nominal, _) = get(&served, &token, CUSTOMER_TABLE, &query).await;
        assert!(nominal.get("x-ratelimit-limit").is_none(), "no rule, no headers");
        served.sim.limiter.set(Some(RateLimit { limit: 2, window_secs: 3_600, headers: HeaderStyle::Ietf }));
        let now = clock::unix_ms() / 1000;
        for _ in 0..2 {
            let (status, headers, _) = get(&served, &token, CUSTOMER_TABLE, &query).await;
            assert_eq!(status, 200);
            assert_eq!(
                (headers["x-ratelimit-limit"].clone(), headers["x-ratelimit-rule"].clone()),
                (HeaderValue::from(2), HeaderValue::from_static(RULE_ID))
            );
            let reset: u64 = headers["x-ratelimit-reset"].to_str().expect("ascii").parse().expect("a Unix time");
            assert!((now..=now + 3_601).contains(&reset), "{reset}");
            assert!(headers.get("ratelimit-limit").is_none() && headers.get("x-ratelimit-remaining").is_none());
        }
        let (status, headers, body) = get(&served, &token, CUSTOMER_TABLE, &query).await;
        assert_eq!(status, 429);
        assert!(headers[RETRY_AFTER].to_str().is_ok_and(|s| s.parse::<u64>().is_ok_and(|n| (1..=3_600).contains(&n))));
        assert!(headers.contains_key("x-ratelimit-reset"));
        assert_eq!(
            body,
            json!({"error": {"message": "Rate limit exceeded",
                "detail": "Rate limit of 2 requests per hour for Table API exceeded"}, "status": "failure"})
        );
        assert_eq!(token_with(&served, CLIENT).await.status(), 200, "the token endpoint is not counted");
        assert_eq!(served.sim.stats.snapshot().throttled, 1);
        assert_eq!(window_text(10), "10 seconds");
    }

    #[tokio::test]
    async fn servicenow_unknown_tables_paths_and_classification() {
        let served = served().await;
        let token = token(&served).await;
        let (status, _, body) = get(&served, &token, "sys_user", &[]).await;
        assert_eq!(
            (status, body),
            (400, json!({"error": {"message": "Invalid table sys_user", "detail": null}, "status": "failure"}))
        );
        let contact = served
            .http
            .post(format!("{}{TABLES}{CUSTOMER_TABLE}", served.base))
            .bearer_auth(&token)
            .json(&json!({"phone": "+1"}))
            .send()
            .await
            .expect("post");
        assert_eq!(contact.status(), 403);
        let other = served.http.get(format!("{}/api/now/v2/stats", served.base)).send().await.expect("get");
        assert_eq!(other.status(), 400);
        assert_eq!(
            other.json::<Value>().await.expect("json")["error"]["message"],
            "Requested URI does not represent any resource"
        );
        let uri = |u: &str| u.parse::<Uri>().expect("uri");
        assert_eq!(
            classify(&Method::GET, &uri("/api/now/table/customer_contact?sysparm_query=phone=1")),
            Route::Lookup
        );
        assert_eq!(classify(&Method::GET, &uri("/api/now/table/customer_contact/C-1")), Route::Lookup);
        assert_eq!(classify(&Method::POST, &uri("/api/now/table/incident")), Route::CreateCase);
        assert_eq!(
            classify(&Method::GET, &uri("/api/now/table/incident?sysparm_query=correlation_id=R")),
            Route::FindCases
        );
        assert_eq!(classify(&Method::GET, &uri("/api/now/table/incident/abc")), Route::FindCases);
        assert_eq!(classify(&Method::POST, &uri("/oauth_token.do")), Route::Other);
        assert_eq!(classify(&Method::POST, &uri("/api/now/table/customer_contact")), Route::Other);
        assert_eq!(incident_number(0), "INC0010001");
    }

    /// The shipped profile `deploy/crm/servicenow.toml`, unmodified, against
    /// this dialect: token, lookup, create and find.
    #[tokio::test]
    async fn servicenow_serves_the_shipped_profile() {
        let served = served().await;
        let mapping = profile(
            "servicenow",
            &[
                ("FAILSOFT_CRM_CLIENT_ID", "failsoft-test-client"),
                ("FAILSOFT_CRM_CLIENT_SECRET", "failsoft-test-secret"),
            ],
        );
        let (status, body) = send(&served.http, mapping.token_request(&served.base).expect("a token request")).await;
        assert_eq!(status, 200);
        let token = mapping.read_token(&body, 0).expect("a token");
        assert_eq!(token.expires_at_s, 7_200);
        let bearer = Some(token.access_token.as_str());
        let (status, body) =
            send(&served.http, mapping.lookup(&served.base, "+15550001", "corr-1", bearer).expect("lookup")).await;
        assert_eq!(status, 200);
        match mapping.read_customer(&body, "standard") {
            LookupAnswer::Found(record) => {
                assert_eq!((record.customer_id.as_str(), record.tier.as_str()), ("C-1", "gold"))
            }
            other => panic!("{other:?}"),
        }
        let (_, body) =
            send(&served.http, mapping.lookup(&served.base, "+19990000", "corr-2", bearer).expect("lookup")).await;
        assert_eq!(mapping.read_customer(&body, "standard"), LookupAnswer::NotFound);
        assert!(mapping.lookup(&served.base, "+1^NQphoneISNOTEMPTY", "corr-3", bearer).is_err(), "refused, not sent");
        let case = json!({"subject": "Call", "description": "Called about billing"});
        let (status, body) =
            send(&served.http, mapping.create_case(&served.base, "corr-4", &case, bearer).expect("create")).await;
        assert_eq!(status, 201);
        assert_eq!(mapping.read_created_case(&body).expect("a case").case_id, "INC0010001");
        let find = mapping.find_case(&served.base, "corr-4", bearer).expect("a find").expect("rendered");
        let (status, body) = send(&served.http, find).await;
        assert_eq!(status, 200);
        assert_eq!(mapping.read_found_case(&body).expect("a case list").map(|c| c.case_id), Some("INC0010001".into()));
        let ledger = served.sim.store.lock().await.ledger().to_vec();
        assert_eq!((ledger.len(), ledger[0].external_ref.as_deref()), (1, Some("corr-4")));
        assert_eq!(ledger[0].body["contact_type"], "phone");
        served.sim.tokens.revoke_all(Instant::now());
        let (status, _) =
            send(&served.http, mapping.lookup(&served.base, "+15550001", "corr-5", bearer).expect("lookup")).await;
        assert!(mapping.token_refused(status), "a revoked token is refused 401");
        let stats = served.sim.stats.snapshot();
        assert_eq!((stats.lookups, stats.creates, stats.case_queries, stats.tokens_issued), (3, 1, 1, 1));
    }

    #[test]
    fn encoded_query_parsing() {
        let query = Query::parse("phone=+1=2^ORu_tierISEMPTY^NQnope=1^ORDERBYname^EQ", Table::Contacts).expect("query");
        let cond = |field: &str, op, value: &str| Term::Cond(Cond { field: field.into(), op, value: value.into() });
        assert_eq!(
            query.queries,
            [
                vec![vec![cond("phone", Op::Eq, "+1=2"), cond("u_tier", Op::IsEmpty, "")]],
                vec![vec![Term::Invalid("nope=1".into())]]
            ]
        );
        assert_eq!(query.order, [("name".to_owned(), false)]);
        assert!(query.has_invalid());
        assert_eq!(Query::parse("", Table::Contacts).expect("empty").queries, [Vec::<Vec<Term>>::new()]);
        assert!(Query::parse("sys_created_on<=2024", Table::Contacts).is_err());
        let not_in = Query::parse("u_tierNOT INgold,vip", Table::Contacts).expect("query");
        assert!(not_in.matches(|_| "standard".into()) && !not_in.matches(|_| "vip".into()));
        assert!(Query::parse("u_tier=gold", Table::Contacts).expect("query").sole_equality().is_some());
    }
}
