//! The salesforce dialect (`--dialect salesforce`): Salesforce's REST API
//! over the simulator's records. Customers are `Contact`s (`Id` is the
//! customer id, the tier is the custom field `Tier__c`); cases are `Case`s
//! whose `--external-ref-field` (default `Failsoft_Ref__c`) is the case's
//! external reference in the admin ledger.
//!
//! Served, as these pages document it:
//! - `POST /services/oauth2/token`, OAuth 2.0 client credentials
//!   (<https://help.salesforce.com/apex/HTViewHelpDoc?id=xcloud.remoteaccess_oauth_client_credentials_flow.htm>):
//!   a form body `grant_type=client_credentials&client_id=…&client_secret=…`
//!   (or the client in HTTP Basic auth) → 200
//!   `{"access_token","signature","scope":"api","instance_url","id","token_type":"Bearer","issued_at"}`
//!   with no `expires_in` (none of Salesforce's examples has one; the
//!   session lasts `--token-lifetime-secs`). Bad client → 400
//!   `{"error":"invalid_client","error_description":"invalid client credentials"}`;
//!   another or no grant → 400 `{"error":"unsupported_grant_type","error_description":"grant type not supported"}`.
//! - Every call under `/services/data/vNN.N/` needs `Authorization: Bearer
//!   <token>` (or `OAuth <token>`) of a token issued, unexpired and not
//!   revoked; else 401 `[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]`
//!   (<https://developer.salesforce.com/docs/atlas.en-us.api_meta.meta/api_meta/meta_error_handling_session_exp.htm>).
//! - `GET /services/data/vNN.N/query?q=<SOQL>`
//!   (<https://developer.salesforce.com/docs/platform/api-rest/guide/resources-query.md>):
//!   `SELECT <fields> FROM Contact|Case [WHERE …] [ORDER BY …] [LIMIT n]`,
//!   parsed and evaluated by [`super::soql`] (dateTime fields compared with
//!   unquoted dateTime literals by `= != < <= > >=`) → 200
//!   `{"totalSize","done","records":[{"attributes":{"type","url"},<requested fields>}]}`.
//!   Contact fields: `Id Name Phone Tier__c LastModifiedDate` (the store's
//!   last change, as `2026-12-07T10:00:00.000+0000`); Case fields:
//!   `Id CaseNumber Status CreatedDate Subject Description Origin Priority
//!   SuppliedPhone ContactId Type Reason`, the external-ref field and any
//!   `__c` field. Refusals, 400: `MALFORMED_QUERY` (syntax, or no `q`),
//!   `INVALID_TYPE` (another object), `INVALID_FIELD` (another field, a
//!   dateTime field compared with a quoted value or a text field with a
//!   dateTime). Removed customers are not Contacts any more: `query` does
//!   not return them (only `queryAll` would, which is not served).
//! - Paging, as the query resource documents it: an answer holds at most
//!   `--salesforce-batch-size` records (default 2,000, Salesforce's batch);
//!   while more remain it says `"done":false` and
//!   `"nextRecordsUrl":"/services/data/vNN.N/query/<queryLocator>-<offset>"`,
//!   and `GET` on that path (a session required) answers the next batch in
//!   the same shape. The locator names a server-side cursor over the result
//!   as it was when the query ran (18 characters, prefix `0r8`; kept two
//!   days, <https://developer.salesforce.com/docs/platform/salesforce-app-limits-cheatsheet/guide/salesforce-app-limits-platform-apicursors.html>);
//!   any offset within it may be asked for. An unknown or expired locator, or
//!   an offset past the end: 400
//!   `[{"message":"invalid query locator","errorCode":"INVALID_QUERY_LOCATOR"}]`
//!   (<https://help.salesforce.com/s/articleView?id=000384958&type=1>; the
//!   message as real answers quote it, restforce/restforce#67).
//! - `POST /services/data/vNN.N/sobjects/Case/` (with or without the slash;
//!   <https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api/dome_sobject_create.htm>):
//!   a JSON object of fields → 201 `{"id":"500…","success":true,"errors":[]}`.
//!   Refusals, 400 (<https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm>):
//!   `JSON_PARSER_ERROR` (empty, invalid or not an object); `INVALID_FIELD`
//!   for `Id` ("The Id field should not be specified in the sobject data.")
//!   and for a name that is neither a writable standard field (`Subject
//!   Description Origin Status Priority SuppliedPhone ContactId Type Reason`),
//!   the external-ref field nor `…__c` ("No such column 'X' on sobject of type
//!   Case"); `INVALID_FIELD_FOR_INSERT_UPDATE` for `CaseNumber`,
//!   `CreatedDate`, `LastModifiedDate`, `IsClosed`. `Subject` may be missing.
//!   There is no idempotency key in the sObject API (only the UI API has
//!   one): `Idempotency-Key` is ignored and every POST creates a case.
//! - Every answer but the token endpoint's carries `Sforce-Limit-Info:
//!   api-usage=<used>/<limit>`; over `--rate-limit`, 403
//!   `[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]`
//!   and no `Retry-After`
//!   (<https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_api_usage.htm>).
//! - Anything else: 404 `[{"errorCode":"NOT_FOUND","message":"The requested resource does not exist"}]`.
//!
//! Simplified: one org, one run-as user, one connected app
//! (`--client-id`/`--client-secret`); the token's `signature` is opaque, not
//! an HMAC a client could verify; the allowance resets per `--rate-window-secs`
//! window rather than rolling over 24 hours, and the token endpoint is not
//! counted; at most 100 query cursors are kept (the oldest is released
//! first: Salesforce no longer limits them, the simulator bounds its
//! memory), and the `Sforce-Query-Options` batch size header is ignored;
//! the locator's offset counts records, not Salesforce's own encoding; Case
//! ids are 18-character ids counting up (`500SIM000000001…`), `CaseNumber`
//! is the ledger position; field values are not type-checked, and a Case's
//! `Status` defaults to `New`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

use super::soql::{self, Cond, Datum, Literal, Op, SoqlError};
use super::{DialectState, Quota, base_url, basic_credentials, bearer_token, form_pairs, header, query_value};
use crate::sim::clock;
use crate::sim::route::Route;
use crate::sim::store::{Case, Customer, LedgerFull};

type Shared = State<Arc<DialectState>>;

const TOKEN_PATH: &str = "/services/oauth2/token";
/// The simulated org and its run-as user, in the identity URL.
const ORG_ID: &str = "00DSIM000000001EAA";
const USER_ID: &str = "005SIM000000001AAA";

/// Writable standard Case fields (the allow-list of a create).
const CASE_WRITABLE: &[&str] =
    &["Subject", "Description", "Origin", "Status", "Priority", "SuppliedPhone", "ContactId", "Type", "Reason"];
/// Read-only Case fields: a create that sets one is refused.
const CASE_READ_ONLY: &[&str] = &["CaseNumber", "CreatedDate", "LastModifiedDate", "IsClosed"];
const CONTACT_FIELDS: &[&str] = &["Id", "Name", "Phone", "Tier__c", "LastModifiedDate"];
/// Fields holding a dateTime: SOQL compares them only with unquoted dates.
const DATE_FIELDS: &[&str] = &["CreatedDate", "LastModifiedDate"];

pub fn routes() -> Router<Arc<DialectState>> {
    Router::new()
        .route(TOKEN_PATH, post(token))
        .route("/services/data/{version}/query", get(query))
        .route("/services/data/{version}/query/", get(query))
        .route("/services/data/{version}/query/{locator}", get(query_more))
        .route("/services/data/{version}/sobjects/{object}", post(create))
        .route("/services/data/{version}/sobjects/{object}/", post(create))
        .fallback(|| async { not_found() })
}

pub fn is_token_path(path: &str) -> bool {
    path == TOKEN_PATH
}

/// A query of Contacts is a lookup, of Cases a case query; a Case create
/// is a case creation.
pub fn classify(method: &Method, uri: &Uri) -> Route {
    let Some(rest) = uri.path().strip_prefix("/services/data/") else {
        return Route::Other;
    };
    let mut parts = rest.trim_end_matches('/').split('/').skip(1);
    match (method, parts.next(), parts.next(), parts.next()) {
        (&Method::GET, Some("query"), None, None) => {
            let q = query_value(uri, "q").unwrap_or_default();
            match soql::object_of(&q).as_deref().map(str::to_ascii_lowercase) {
                Some(object) if object == "contact" && is_list(&q) => Route::ListCustomers,
                Some(object) if object == "contact" => Route::Lookup,
                Some(object) if object == "case" => Route::FindCases,
                _ => Route::Other,
            }
        }
        // The next batch of a query: the pre-warm sync's list pages.
        (&Method::GET, Some("query"), Some(_), None) => Route::ListCustomers,
        (&Method::POST, Some("sobjects"), Some(object), None) if object.eq_ignore_ascii_case("case") => {
            Route::CreateCase
        }
        _ => Route::Other,
    }
}

/// Whether a query lists Contacts changed since a time (it compares
/// `LastModifiedDate`) rather than looking one up.
fn is_list(q: &str) -> bool {
    soql::parse(q).is_ok_and(|parsed| {
        parsed
            .filter
            .iter()
            .flat_map(Cond::comparisons)
            .any(|(field, _)| field.name.eq_ignore_ascii_case("LastModifiedDate"))
    })
}

/// Salesforce's error envelope: an array of `{message, errorCode[, fields]}`.
fn error(status: StatusCode, message: &str, code: &str) -> Response {
    super::json(status, json!([{"message": message, "errorCode": code}]))
}

fn not_found() -> Response {
    super::json(
        StatusCode::NOT_FOUND,
        json!([{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]),
    )
}

fn refused(err: SoqlError) -> Response {
    error(StatusCode::BAD_REQUEST, &err.message, err.code)
}

pub fn limit_exceeded() -> Response {
    error(StatusCode::FORBIDDEN, "TotalRequests Limit exceeded.", "REQUEST_LIMIT_EXCEEDED")
}

pub fn write_quota(quota: Quota, headers: &mut HeaderMap) {
    headers.insert("sforce-limit-info", header(&format!("api-usage={}/{}", quota.used, quota.limit)));
}

/// Salesforce's batch: the most records one query answer holds.
pub const BATCH_SIZE_DEFAULT: usize = 2_000;
/// How long a query cursor stays (two days since the query ran).
const CURSOR_LIFETIME: Duration = Duration::from_secs(2 * 24 * 60 * 60);
/// The most query cursors kept; opening another releases the oldest.
const MAX_CURSORS: usize = 100;

/// The query resource's paging: the batch size and the open query cursors
/// (server-side, each the whole result as it was when its query ran).
#[derive(Debug)]
pub struct QueryPaging {
    batch_size: usize,
    cursors: Mutex<Cursors>,
}

#[derive(Debug, Default)]
struct Cursors {
    /// Locators issued so far (the next one's number).
    issued: u64,
    /// Open cursors, oldest first: locator, records, when the query ran.
    open: VecDeque<(String, Arc<Vec<Value>>, Instant)>,
}

impl QueryPaging {
    /// Paging by batches of `batch_size` records (1 to 2,000).
    pub fn new(batch_size: usize) -> Self {
        Self { batch_size: batch_size.clamp(1, BATCH_SIZE_DEFAULT), cursors: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cursors> {
        self.cursors.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `records` behind a new locator.
    fn open(&self, records: Arc<Vec<Value>>, now: Instant) -> String {
        let mut cursors = self.lock();
        cursors.open.retain(|(_, _, opened)| now.duration_since(*opened) < CURSOR_LIFETIME);
        while cursors.open.len() >= MAX_CURSORS {
            cursors.open.pop_front();
        }
        cursors.issued += 1;
        let locator = salesforce_id("0r8", cursors.issued);
        cursors.open.push_back((locator.clone(), records, now));
        locator
    }

    /// The records behind `locator`, if it is open.
    fn records(&self, locator: &str, now: Instant) -> Option<Arc<Vec<Value>>> {
        let cursors = self.lock();
        let (_, records, opened) = cursors.open.iter().find(|(id, _, _)| id == locator)?;
        (now.duration_since(*opened) < CURSOR_LIFETIME).then(|| Arc::clone(records))
    }

    /// The answer holding `records[offset..]`'s first batch: `done`, or the
    /// `nextRecordsUrl` of the rest.
    fn batch(&self, version: &str, locator: Option<&str>, records: &Arc<Vec<Value>>, offset: usize) -> Response {
        let end = offset.saturating_add(self.batch_size).min(records.len());
        let batch = &records[offset.min(end)..end];
        let mut body = json!({"totalSize": records.len(), "done": end == records.len(), "records": batch});
        if end < records.len() {
            let locator = match locator {
                Some(locator) => locator.to_owned(),
                None => self.open(Arc::clone(records), Instant::now()),
            };
            body["nextRecordsUrl"] = Value::from(format!("/services/data/{version}/query/{locator}-{end}"));
        }
        super::json(StatusCode::OK, body)
    }
}

impl Default for QueryPaging {
    fn default() -> Self {
        Self::new(BATCH_SIZE_DEFAULT)
    }
}

/// `vNN.N`, as every API version is named.
fn is_version(version: &str) -> bool {
    version.strip_prefix('v').and_then(|v| v.split_once('.')).is_some_and(|(major, minor)| {
        !major.is_empty()
            && !minor.is_empty()
            && major.bytes().all(|b| b.is_ascii_digit())
            && minor.bytes().all(|b| b.is_ascii_digit())
    })
}

/// The refusal of a call without a valid session, if it has none.
fn unauthorized(state: &DialectState, headers: &HeaderMap) -> Option<Response> {
    let valid =
        bearer_token(headers, &["Bearer", "OAuth"]).is_some_and(|t| state.sim.tokens.is_valid(t, Instant::now()));
    (!valid).then(|| error(StatusCode::UNAUTHORIZED, "Session expired or invalid", "INVALID_SESSION_ID"))
}

fn oauth_error(error: &str, description: &str) -> Response {
    super::json(StatusCode::BAD_REQUEST, json!({"error": error, "error_description": description}))
}

/// `POST /services/oauth2/token`: the client credentials flow.
async fn token(State(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let form = form_pairs(&String::from_utf8_lossy(&body));
    let field = |name: &str| form.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    if field("grant_type").as_deref() != Some("client_credentials") {
        return oauth_error("unsupported_grant_type", "grant type not supported");
    }
    let client = basic_credentials(&headers).or_else(|| Some((field("client_id")?, field("client_secret")?)));
    let settings = &state.settings;
    if client.as_ref().is_none_or(|(id, secret)| *id != settings.client_id || *secret != settings.client_secret) {
        return oauth_error("invalid_client", "invalid client credentials");
    }
    let access_token = state.sim.tokens.issue(&format!("{ORG_ID}!"), settings.token_lifetime, Instant::now());
    state.sim.stats.token_issued();
    let issued_at = clock::unix_ms().to_string();
    let instance_url = base_url(&headers);
    let id = format!("{instance_url}/id/{ORG_ID}/{USER_ID}");
    let digest = [&id, &issued_at, &access_token].map(|part| super::stable_id(part).to_be_bytes()).concat();
    super::json(
        StatusCode::OK,
        json!({
            "access_token": access_token,
            "signature": BASE64.encode(digest),
            "scope": "api",
            "instance_url": instance_url,
            "id": id,
            "token_type": "Bearer",
            "issued_at": issued_at,
        }),
    )
}

/// Salesforce's dateTime as records show it: `2024-01-31T09:05:00.000+0000`.
fn sf_datetime(ms: u64) -> String {
    super::utc_text(ms, "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]+0000")
}

/// An 18-character Case id: the 15-character id counting up and the
/// 3-character suffix that encodes its capitals.
fn case_id(index: usize) -> String {
    salesforce_id("500", index as u64 + 1)
}

/// An 18-character id of the kind `prefix` names (`500` a Case, `0r8` a
/// query locator): the 15-character id `<prefix>SIM<n>` and the
/// 3-character suffix that encodes its capitals.
fn salesforce_id(prefix: &str, n: u64) -> String {
    const SUFFIX: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let id = format!("{prefix}SIM{n:09}");
    let suffix: String = id
        .as_bytes()
        .chunks(5)
        .map(|chunk| {
            let bits =
                chunk.iter().enumerate().filter(|(_, c)| c.is_ascii_uppercase()).fold(0usize, |a, (i, _)| a | 1 << i);
            char::from(SUFFIX[bits])
        })
        .collect();
    id + &suffix
}

/// The queryable objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Object {
    Contact,
    Case,
}

impl Object {
    fn named(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "contact" => Some(Self::Contact),
            "case" => Some(Self::Case),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Contact => "Contact",
            Self::Case => "Case",
        }
    }

    /// A field's canonical name, if the object has it.
    fn field(self, name: &str, external_ref_field: &str) -> Option<String> {
        let known = |list: &[&str]| list.iter().find(|f| f.eq_ignore_ascii_case(name)).map(|f| (*f).to_owned());
        match self {
            Self::Contact => known(CONTACT_FIELDS),
            Self::Case => known(&["Id", "CaseNumber", "CreatedDate"])
                .or_else(|| known(CASE_WRITABLE))
                .or_else(|| external_ref_field.eq_ignore_ascii_case(name).then(|| external_ref_field.to_owned()))
                .or_else(|| is_custom(name).then(|| name.to_owned())),
        }
    }
}

fn is_custom(name: &str) -> bool {
    name.len() > 3 && name.get(name.len() - 3..).is_some_and(|end| end.eq_ignore_ascii_case("__c"))
}

/// A Contact's field value.
fn contact_value(customer: &Customer, field: &str) -> Value {
    match field.to_ascii_lowercase().as_str() {
        "id" => Value::from(customer.customer_id.clone()),
        "name" if !customer.name.is_empty() => Value::from(customer.name.clone()),
        "phone" => Value::from(customer.phone.clone()),
        "tier__c" => Value::from(customer.tier.clone()),
        "lastmodifieddate" => Value::from(sf_datetime(customer.updated_at_ms)),
        _ => Value::Null,
    }
}

/// A Case's field value; `index` is its ledger position.
fn case_value(case: &Case, index: usize, field: &str) -> Value {
    let from_body = || case.body.iter().find(|(name, _)| name.eq_ignore_ascii_case(field)).map(|(_, v)| v.clone());
    match field.to_ascii_lowercase().as_str() {
        "id" => Value::from(case.case_id.clone()),
        "casenumber" => Value::from(format!("{:08}", index + 1)),
        "createddate" => Value::from(sf_datetime(case.created_at)),
        "status" => from_body().filter(|v| !v.is_null()).unwrap_or_else(|| Value::from("New")),
        _ => from_body().unwrap_or(Value::Null),
    }
}

fn as_text(value: Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text),
        other => Some(other.to_string()),
    }
}

/// A Contact's field value as SOQL compares and sorts it.
fn contact_datum(customer: &Customer, field: &str) -> Option<Datum> {
    if field.eq_ignore_ascii_case("LastModifiedDate") {
        return Some(Datum::DateTime(i64::try_from(customer.updated_at_ms).unwrap_or(i64::MAX)));
    }
    as_text(contact_value(customer, field)).map(Datum::Text)
}

/// A Case's field value as SOQL compares and sorts it.
fn case_datum(case: &Case, index: usize, field: &str) -> Option<Datum> {
    if field.eq_ignore_ascii_case("CreatedDate") {
        return Some(Datum::DateTime(i64::try_from(case.created_at).unwrap_or(i64::MAX)));
    }
    as_text(case_value(case, index, field)).map(Datum::Text)
}

/// `GET /services/data/vNN.N/query?q=`.
async fn query(State(state): Shared, Path(version): Path<String>, headers: HeaderMap, uri: Uri) -> Response {
    if !is_version(&version) {
        return not_found();
    }
    if let Some(refusal) = unauthorized(&state, &headers) {
        return refusal;
    }
    let Some(q) = query_value(&uri, "q").filter(|q| !q.trim().is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "SOQL statements cannot be empty or null", "MALFORMED_QUERY");
    };
    let parsed = match soql::parse(&q) {
        Ok(parsed) => parsed,
        Err(err) => return refused(err),
    };
    let ref_field = state.settings.external_ref_field.as_str();
    let Some(object) = Object::named(&parsed.object.name) else {
        let detail = format!(
            "sObject type '{}' is not supported. If you are attempting to use a custom object, be sure to append \
             the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names.",
            parsed.object.name
        );
        return refused(SoqlError::at("INVALID_TYPE", &q, parsed.object.at, &detail));
    };
    let no_such = |ident: &soql::Ident| {
        let detail = format!(
            "No such column '{}' on entity '{}'. If you are attempting to use a custom field, be sure to append the \
             '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.",
            ident.name,
            object.name()
        );
        refused(SoqlError::at("INVALID_FIELD", &q, ident.at, &detail))
    };
    let mut fields: Vec<String> = Vec::new();
    for ident in &parsed.fields {
        match object.field(&ident.name, ref_field) {
            Some(field) if !fields.contains(&field) => fields.push(field),
            Some(_) => {}
            None => return no_such(ident),
        }
    }
    for (ident, literal) in parsed.filter.iter().flat_map(Cond::comparisons) {
        let Some(field) = object.field(&ident.name, ref_field) else {
            return no_such(ident);
        };
        let is_date = DATE_FIELDS.contains(&field.as_str());
        let expected = match literal {
            Literal::Text(_) if is_date => "dateTime and should not be enclosed in quotes",
            Literal::DateTime(_) if !is_date => "string and should be enclosed in quotes",
            _ => continue,
        };
        let detail = format!("value of filter criterion for field '{field}' must be of type {expected}");
        return refused(SoqlError::at("INVALID_FIELD", &q, ident.at, &detail));
    }
    for key in &parsed.order {
        if object.field(&key.field.name, ref_field).is_none() {
            return no_such(&key.field);
        }
    }
    let limit = parsed.limit.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let record = |id: &str, values: Map<String, Value>| {
        let mut out = Map::new();
        let url = format!("/services/data/{version}/sobjects/{}/{id}", object.name());
        out.insert("attributes".into(), json!({"type": object.name(), "url": url}));
        out.extend(values);
        Value::Object(out)
    };
    // Stable: records equal by every key keep their own order (Contacts by
    // last change, Cases by creation).
    let sort = |datum: &dyn Fn(usize, &str) -> Option<Datum>, rows: &mut Vec<usize>| {
        rows.sort_by(|&a, &b| {
            parsed
                .order
                .iter()
                .map(|key| {
                    let name = key.field.name.as_str();
                    soql::order(datum(a, name).as_ref(), datum(b, name).as_ref(), key.descending)
                })
                .find(|ordering| ordering.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    };
    let store = state.sim.store.lock().await;
    let records: Vec<Value> = match object {
        Object::Contact => {
            let contacts: Vec<&Customer> = match exact_phone(parsed.filter.as_ref()) {
                // `Phone = '<E.164>'`: the store's index answers it (no letters, so case does not matter).
                Some(phone) => store.customer(phone).into_iter().collect(),
                None => store
                    .customers()
                    .filter(|c| parsed.filter.as_ref().is_none_or(|cond| cond.matches(&|f| contact_datum(c, f))))
                    .collect(),
            };
            let mut rows: Vec<usize> = (0..contacts.len()).collect();
            sort(&|i, f| contact_datum(contacts[i], f), &mut rows);
            rows.into_iter()
                .take(limit)
                .map(|i| {
                    let c = contacts[i];
                    record(&c.customer_id, fields.iter().map(|f| (f.clone(), contact_value(c, f))).collect())
                })
                .collect()
        }
        Object::Case => {
            let ledger = store.ledger();
            let mut rows: Vec<usize> = (0..ledger.len())
                .filter(|&i| parsed.filter.as_ref().is_none_or(|cond| cond.matches(&|f| case_datum(&ledger[i], i, f))))
                .collect();
            sort(&|i, f| case_datum(&ledger[i], i, f), &mut rows);
            rows.into_iter()
                .take(limit)
                .map(|i| {
                    let case = &ledger[i];
                    record(&case.case_id, fields.iter().map(|f| (f.clone(), case_value(case, i, f))).collect())
                })
                .collect()
        }
    };
    drop(store);
    state.salesforce.batch(&version, None, &Arc::new(records), 0)
}

/// `GET /services/data/vNN.N/query/<queryLocator>-<offset>`: the next batch.
async fn query_more(
    State(state): Shared,
    Path((version, locator)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !is_version(&version) {
        return not_found();
    }
    if let Some(refusal) = unauthorized(&state, &headers) {
        return refusal;
    }
    let invalid = || error(StatusCode::BAD_REQUEST, "invalid query locator", "INVALID_QUERY_LOCATOR");
    let Some((id, offset)) = locator.rsplit_once('-') else {
        return invalid();
    };
    let Some(records) = state.salesforce.records(id, Instant::now()) else {
        return invalid();
    };
    match offset.parse::<usize>() {
        Ok(offset) if offset <= records.len() => state.salesforce.batch(&version, Some(id), &records, offset),
        _ => invalid(),
    }
}

/// The phone of a filter that is exactly `Phone = '<value without letters>'`.
fn exact_phone(filter: Option<&Cond>) -> Option<&str> {
    match filter? {
        Cond::Compare { field, op: Op::Eq, value: Literal::Text(phone) }
            if field.name.eq_ignore_ascii_case("Phone")
                && !phone.is_empty()
                && !phone.chars().any(char::is_alphabetic) =>
        {
            Some(phone)
        }
        _ => None,
    }
}

/// The JSON token name Salesforce's parser reports for a body that is not an object.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Array(_) => "START_ARRAY",
        Value::String(_) => "VALUE_STRING",
        Value::Number(n) if n.is_f64() => "VALUE_NUMBER_FLOAT",
        Value::Number(_) => "VALUE_NUMBER_INT",
        Value::Bool(true) => "VALUE_TRUE",
        Value::Bool(false) => "VALUE_FALSE",
        Value::Null => "VALUE_NULL",
        Value::Object(_) => "START_OBJECT",
    }
}

/// `POST /services/data/vNN.N/sobjects/Case/`.
async fn create(
    State(state): Shared,
    Path((version, object)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_version(&version) || !object.eq_ignore_ascii_case("Case") {
        return not_found();
    }
    if let Some(refusal) = unauthorized(&state, &headers) {
        return refusal;
    }
    let parser_error = |message: &str| error(StatusCode::BAD_REQUEST, message, "JSON_PARSER_ERROR");
    if body.iter().all(u8::is_ascii_whitespace) {
        return parser_error("The HTTP entity body is required, but this request has no entity body.");
    }
    let mut fields = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(fields)) => fields,
        Ok(other) => {
            return parser_error(&format!("Cannot deserialize instance of Case from {} value", json_kind(&other)));
        }
        Err(err) => return parser_error(&format!("Unexpected character or end of input: {err}")),
    };
    // A body may name its own type, as records do.
    fields.retain(|name, _| name != "attributes");
    let ref_field = state.settings.external_ref_field.as_str();
    for name in fields.keys() {
        let is = |list: &[&str]| list.iter().any(|f| f.eq_ignore_ascii_case(name));
        if name.eq_ignore_ascii_case("Id") {
            return error(
                StatusCode::BAD_REQUEST,
                "The Id field should not be specified in the sobject data.",
                "INVALID_FIELD",
            );
        }
        if is(CASE_READ_ONLY) {
            let message = format!(
                "Unable to create/update fields: {name}. Please check the security settings of this field and verify \
                 that it is read/write for your profile or permission set."
            );
            return super::json(
                StatusCode::BAD_REQUEST,
                json!([{"message": message, "errorCode": "INVALID_FIELD_FOR_INSERT_UPDATE", "fields": [name]}]),
            );
        }
        if !(is(CASE_WRITABLE) || name.eq_ignore_ascii_case(ref_field) || is_custom(name)) {
            let message = format!("No such column '{name}' on sobject of type Case");
            return error(StatusCode::BAD_REQUEST, &message, "INVALID_FIELD");
        }
    }
    let external_ref = fields
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(ref_field))
        .and_then(|(_, value)| value.as_str())
        .map(str::to_owned);
    // No idempotency key in the sObject API: every POST creates.
    let created = state.sim.store.lock().await.append_case(None, fields, external_ref, case_id, clock::unix_ms());
    match created {
        Ok(case) => {
            state.sim.stats.case_created();
            super::json(StatusCode::CREATED, json!({"id": case.case_id, "success": true, "errors": []}))
        }
        Err(LedgerFull) => error(StatusCode::BAD_REQUEST, "storage limit exceeded", "STORAGE_LIMIT_EXCEEDED"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Served, list_all, profile, seed, seed_at, send, serve, serve_with};
    use super::super::{Dialect, Paging, Settings};
    use super::*;
    use crate::sim::limit::{HeaderStyle, RateLimit};
    use failsoft_shared::mapping::LookupAnswer;

    const CONTACT_Q: &str = "SELECT Id, Phone, Tier__c FROM Contact WHERE Phone = ";

    async fn served() -> Served {
        super::super::testing::serve_seeded(
            Dialect::Salesforce,
            Settings::default(),
            json!([
                {"phone": "+15550001", "customerId": "C-1", "tier": "gold", "name": "Ann"},
                {"phone": "+15550002", "customerId": "C-2", "tier": "vip"},
                {"phone": "+1555'0003\\", "customerId": "C-3"},
            ]),
        )
        .await
    }

    async fn token_with(served: &Served, form: &str) -> reqwest::Response {
        super::super::testing::post_form(served, "/services/oauth2/token", form).await
    }

    async fn token(served: &Served) -> String {
        let answer = token_with(
            served,
            "grant_type=client_credentials&client_id=failsoft-test-client&client_secret=failsoft-test-secret",
        )
        .await;
        assert_eq!(answer.status(), 200);
        let body: Value = answer.json().await.expect("json");
        body["access_token"].as_str().expect("a token").to_owned()
    }

    async fn soql(served: &Served, token: &str, q: &str) -> (u16, Value) {
        let url = format!("{}/services/data/v60.0/query", served.base);
        let answer = served.http.get(url).query(&[("q", q)]).bearer_auth(token).send().await.expect("query");
        (answer.status().as_u16(), answer.json().await.expect("json"))
    }

    async fn create_case(served: &Served, token: &str, body: &str) -> (u16, Value) {
        let url = format!("{}/services/data/v60.0/sobjects/Case/", served.base);
        let answer = served
            .http
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("idempotency-key", "k-1")
            .body(body.to_owned())
            .send()
            .await
            .expect("create");
        (answer.status().as_u16(), answer.json().await.expect("json"))
    }

    #[tokio::test]
    async fn salesforce_issues_tokens_and_refuses_bad_clients() {
        let served = served().await;
        let answer = token_with(
            &served,
            "grant_type=client_credentials&client_id=failsoft-test-client&client_secret=failsoft-test-secret",
        )
        .await;
        assert_eq!(answer.status(), 200);
        let body: Value = answer.json().await.expect("json");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["instance_url"], served.base.as_str());
        assert!(body["id"].as_str().is_some_and(|id| id.starts_with(&format!("{}/id/00D", served.base))));
        assert!(body["issued_at"].as_str().is_some_and(|t| t.parse::<u64>().is_ok()));
        assert!(body["signature"].is_string() && body.get("expires_in").is_none());
        // HTTP Basic client authentication works as well.
        let basic = served
            .http
            .post(format!("{}/services/oauth2/token", served.base))
            .basic_auth("failsoft-test-client", Some("failsoft-test-secret"))
            .body("grant_type=client_credentials")
            .send()
            .await
            .expect("token");
        assert_eq!(basic.status(), 200);

        let bad =
            token_with(&served, "grant_type=client_credentials&client_id=failsoft-test-client&client_secret=nope")
                .await;
        assert_eq!(bad.status(), 400);
        let body: Value = bad.json().await.expect("json");
        assert_eq!(body, json!({"error": "invalid_client", "error_description": "invalid client credentials"}));
        let grant = token_with(
            &served,
            "grant_type=password&client_id=failsoft-test-client&client_secret=failsoft-test-secret",
        )
        .await;
        assert_eq!(grant.status(), 400);
        assert_eq!(grant.json::<Value>().await.expect("json")["error"], "unsupported_grant_type");
        assert_eq!(served.sim.stats.snapshot().tokens_issued, 2);
    }

    #[tokio::test]
    async fn salesforce_looks_up_contacts() {
        let served = served().await;
        let token = token(&served).await;
        let (status, body) = soql(&served, &token, &format!("{CONTACT_Q}'+15550001' LIMIT 1")).await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({"totalSize": 1, "done": true, "records": [{
                "attributes": {"type": "Contact", "url": "/services/data/v60.0/sobjects/Contact/C-1"},
                "Id": "C-1", "Phone": "+15550001", "Tier__c": "gold",
            }]})
        );
        let (status, body) = soql(&served, &token, &format!("{CONTACT_Q}'+19990000'")).await;
        assert_eq!((status, body), (200, json!({"totalSize": 0, "done": true, "records": []})));
        // Only the fields asked for, under their canonical names.
        let (_, body) = soql(&served, &token, "select name from contact where phone = '+15550001'").await;
        assert_eq!(body["records"][0].as_object().map(|r| r.len()), Some(2));
        assert_eq!(body["records"][0]["Name"], "Ann");
        let stats = served.sim.stats.snapshot();
        assert_eq!((stats.lookups, stats.requests), (3, 4));
    }

    #[tokio::test]
    async fn salesforce_soql_literals_escape_and_injection() {
        let served = served().await;
        let token = token(&served).await;
        // A phone holding a quote and a backslash, escaped, matches itself only.
        let phone = "+1555'0003\\";
        let (status, body) = soql(&served, &token, &format!("{CONTACT_Q}'{}'", soql::escape(phone))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["totalSize"], 1);
        assert_eq!(body["records"][0]["Id"], "C-3");
        // The same value pasted unescaped is a syntax error...
        let (status, body) = soql(&served, &token, &format!("{CONTACT_Q}'{phone}'")).await;
        assert_eq!(status, 400);
        assert_eq!(body[0]["errorCode"], "MALFORMED_QUERY");
        // ...and an injected `' OR Phone != '` matches every contact: this
        // simulator evaluates the OR as Salesforce would.
        let injected = "' OR Phone != '";
        let (status, body) = soql(&served, &token, &format!("{CONTACT_Q}'{injected}'")).await;
        assert_eq!((status, body["totalSize"].clone()), (200, json!(3)), "{body}");
        let (_, body) = soql(&served, &token, &format!("{CONTACT_Q}'{}'", soql::escape(injected))).await;
        assert_eq!(body["totalSize"], 0, "escaped, the injection is a phone nobody has");
        // Refusals: another object, another field, a quoted date.
        let (status, body) = soql(&served, &token, "SELECT Id FROM Account").await;
        assert_eq!((status, body[0]["errorCode"].clone()), (400, json!("INVALID_TYPE")));
        let (status, body) = soql(&served, &token, "SELECT Email FROM Contact").await;
        assert_eq!((status, body[0]["errorCode"].clone()), (400, json!("INVALID_FIELD")));
        let (_, body) = soql(&served, &token, "SELECT Id FROM Case WHERE CreatedDate = '2024'").await;
        assert_eq!(body[0]["errorCode"], "INVALID_FIELD");
    }

    #[tokio::test]
    async fn salesforce_creates_cases_and_finds_them_by_external_ref() {
        let served = served().await;
        let token = token(&served).await;
        let body = r#"{"Subject":"Call","Origin":"Phone","Failsoft_Ref__c":"R-1","Tier_At_Call__c":"gold"}"#;
        let (status, first) = create_case(&served, &token, body).await;
        assert_eq!(status, 201);
        assert_eq!(first, json!({"id": "500SIM000000001YBA", "success": true, "errors": []}));
        // No idempotency key in the sObject API: the same key creates again.
        let (status, second) = create_case(&served, &token, body).await;
        assert_eq!((status, second["id"].clone()), (201, json!("500SIM000000002YBA")));
        let (status, _) = create_case(&served, &token, r#"{"Description":"no subject"}"#).await;
        assert_eq!(status, 201, "Subject may be missing");
        {
            let store = served.sim.store.lock().await;
            assert_eq!(store.cases_with_ref("R-1").len(), 2);
            assert_eq!(store.ledger()[0].case_id, "500SIM000000001YBA");
            assert_eq!(store.ledger()[0].idempotency_key, None);
        }
        let q = "SELECT Id, CaseNumber, Status, CreatedDate, Failsoft_Ref__c FROM Case WHERE Failsoft_Ref__c = 'R-1'";
        let (status, found) = soql(&served, &token, q).await;
        assert_eq!(status, 200);
        assert_eq!(found["totalSize"], 2);
        let record = &found["records"][0];
        assert_eq!(record["attributes"]["url"], "/services/data/v60.0/sobjects/Case/500SIM000000001YBA");
        assert_eq!((record["CaseNumber"].clone(), record["Status"].clone()), (json!("00000001"), json!("New")));
        assert!(record["CreatedDate"].as_str().is_some_and(|d| d.ends_with(".000+0000") || d.ends_with("+0000")));
        assert_eq!(record["Failsoft_Ref__c"], "R-1");

        for (body, code) in [
            ("[1]", "JSON_PARSER_ERROR"),
            ("{nope", "JSON_PARSER_ERROR"),
            ("", "JSON_PARSER_ERROR"),
            (r#"{"Bogus":"x"}"#, "INVALID_FIELD"),
            (r#"{"Id":"x"}"#, "INVALID_FIELD"),
            (r#"{"CaseNumber":"1"}"#, "INVALID_FIELD_FOR_INSERT_UPDATE"),
        ] {
            let (status, refusal) = create_case(&served, &token, body).await;
            assert_eq!((status, refusal[0]["errorCode"].clone()), (400, json!(code)), "{body}");
        }
        let (_, refusal) = create_case(&served, &token, r#"{"Bogus":"x"}"#).await;
        assert_eq!(refusal[0]["message"], "No such column 'Bogus' on sobject of type Case");
        let stats = served.sim.stats.snapshot();
        assert_eq!((stats.creates, stats.cases_created, stats.case_queries), (10, 3, 1));
    }

    #[tokio::test]
    async fn salesforce_refuses_missing_and_revoked_tokens() {
        let served = served().await;
        let q = format!("{CONTACT_Q}'+15550001'");
        let expected = json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]);
        let url = format!("{}/services/data/v60.0/query", served.base);
        let none = served.http.get(&url).query(&[("q", &q)]).send().await.expect("query");
        assert_eq!(none.status(), 401);
        assert_eq!(none.json::<Value>().await.expect("json"), expected);
        let token = token(&served).await;
        assert_eq!(soql(&served, &token, &q).await.0, 200);
        assert_eq!(served.sim.tokens.revoke_all(Instant::now()), 1);
        assert_eq!(soql(&served, &token, &q).await, (401, expected));
        let fresh = self::token(&served).await;
        assert_eq!(soql(&served, &fresh, &q).await.0, 200, "a new token works");

        let short = serve(
            Dialect::Salesforce,
            Settings { token_lifetime: std::time::Duration::from_millis(300), ..Settings::default() },
        )
        .await;
        let token = self::token(&short).await;
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        assert_eq!(soql(&short, &token, &q).await.0, 401, "expired");
    }

    #[tokio::test]
    async fn salesforce_rate_limit_answers_403_request_limit_exceeded() {
        let served = served().await;
        let token = token(&served).await;
        let q = format!("{CONTACT_Q}'+15550001'");
        let url = format!("{}/services/data/v60.0/query", served.base);
        let first = served.http.get(&url).query(&[("q", &q)]).bearer_auth(&token).send().await.expect("query");
        assert!(first.headers()["sforce-limit-info"].to_str().is_ok_and(|v| v.starts_with("api-usage=")));
        served.sim.limiter.set(Some(RateLimit { limit: 2, window_secs: 60, headers: HeaderStyle::Ietf }));
        for used in 1..=2 {
            let answer = served.http.get(&url).query(&[("q", &q)]).bearer_auth(&token).send().await.expect("query");
            assert_eq!(answer.status(), 200);
            assert_eq!(answer.headers()["sforce-limit-info"], format!("api-usage={used}/2").as_str());
        }
        let refused = served.http.get(&url).query(&[("q", &q)]).bearer_auth(&token).send().await.expect("query");
        assert_eq!(refused.status(), 403);
        assert_eq!(refused.headers()["sforce-limit-info"], "api-usage=2/2");
        assert!(refused.headers().get("retry-after").is_none());
        assert_eq!(
            refused.json::<Value>().await.expect("json"),
            json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
        );
        assert_eq!(
            token_with(
                &served,
                "grant_type=client_credentials&client_id=failsoft-test-client&client_secret=failsoft-test-secret"
            )
            .await
            .status(),
            200,
            "the token endpoint is not counted"
        );
        assert_eq!(served.sim.stats.snapshot().throttled, 1);
    }

    /// The shipped profile's list query, changes since `since`.
    fn list_q(since: &str) -> String {
        format!(
            "SELECT Id, Phone, Tier__c, LastModifiedDate FROM Contact WHERE LastModifiedDate >= {since} AND Phone != \
             null ORDER BY LastModifiedDate"
        )
    }

    /// A whole second an hour ago: contacts changed before it, at it and
    /// after it (a second apart, newest first in the store's phone order),
    /// one removed after it and one without a phone.
    async fn changes(served: &Served) -> u64 {
        let since = (clock::unix_ms() / 1000 - 3600) * 1000;
        seed_at(&served.sim, json!([{"phone": "+15550000", "customerId": "C-0"}]), since - 60_000).await;
        seed_at(&served.sim, json!([{"phone": "+15550009", "customerId": "C-9"}]), since - 1).await;
        for (k, customer) in ["C-5", "C-4", "C-3", "C-2", "C-1"].iter().enumerate() {
            let phone = format!("+1555000{}", &customer[2..]);
            let at = since + k as u64 * 1000;
            seed_at(&served.sim, json!([{"phone": phone, "customerId": customer, "tier": "gold"}]), at).await;
        }
        seed_at(&served.sim, json!([{"phone": "+15550008", "customerId": "C-8"}]), since).await;
        served.sim.store.lock().await.remove_customers(&["+15550008".to_owned()], since + 10_000);
        seed_at(&served.sim, json!([{"phone": "", "customerId": "C-blank"}]), since + 20_000).await;
        since
    }

    async fn get(served: &Served, token: &str, path: &str) -> (u16, Value) {
        let answer = served.http.get(format!("{}{path}", served.base)).bearer_auth(token).send().await.expect("get");
        (answer.status().as_u16(), answer.json().await.expect("json"))
    }

    #[tokio::test]
    async fn salesforce_pages_contacts_changed_since_by_query_locator() {
        let served = serve_with(Dialect::Salesforce, Settings::default(), Paging { salesforce_batch_size: 2 }).await;
        let since = changes(&served).await;
        let token = token(&served).await;
        let (status, first) = soql(&served, &token, &list_q(&sf_datetime(since).replace(".000+0000", "Z"))).await;
        assert_eq!(status, 200, "{first}");
        assert_eq!((first["totalSize"].clone(), first["done"].clone()), (json!(5), json!(false)));
        let next = first["nextRecordsUrl"].as_str().expect("a next batch").to_owned();
        let locator = next.strip_prefix("/services/data/v60.0/query/").expect("the query resource");
        let (id, offset) = locator.rsplit_once('-').expect("<locator>-<offset>");
        let id = id.to_owned();
        assert!(id.len() == 18 && id.starts_with("0r8") && offset == "2", "{next}");
        assert_eq!(
            first["records"][0],
            json!({"attributes": {"type": "Contact", "url": "/services/data/v60.0/sobjects/Contact/C-5"},
                "Id": "C-5", "Phone": "+15550005", "Tier__c": "gold", "LastModifiedDate": sf_datetime(since)})
        );
        let mut ids: Vec<Value> =
            first["records"].as_array().expect("records").iter().map(|r| r["Id"].clone()).collect();
        let mut url = Some(next.clone());
        let mut batches = 1;
        while let Some(path) = url.take() {
            let (status, batch) = get(&served, &token, &path).await;
            assert_eq!((status, batch["totalSize"].clone()), (200, json!(5)), "{batch}");
            ids.extend(batch["records"].as_array().expect("records").iter().map(|r| r["Id"].clone()));
            url = batch["nextRecordsUrl"].as_str().map(str::to_owned);
            assert_eq!(batch["done"], json!(url.is_none()));
            batches += 1;
        }
        assert_eq!(batches, 3, "5 records, 2 a batch");
        assert_eq!(
            ids,
            ["C-5", "C-4", "C-3", "C-2", "C-1"],
            "changed at or after `since`, oldest first; not the removed"
        );

        // The cursor is the result as it was: a later change does not move it.
        seed(&served.sim, json!([{"phone": "+15550005", "customerId": "C-5", "tier": "vip"}])).await;
        let (_, again) = get(&served, &token, &format!("/services/data/v60.0/query/{id}-0")).await;
        assert_eq!(
            (again["records"][0]["Id"].clone(), again["records"][0]["Tier__c"].clone()),
            (json!("C-5"), json!("gold"))
        );
        let (_, end) = get(&served, &token, &format!("/services/data/v61.0/query/{id}-5")).await;
        assert_eq!(end, json!({"totalSize": 5, "done": true, "records": []}));
        // Unknown locators, offsets past the end, no session.
        let invalid = json!([{"message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR"}]);
        for path in [format!("{id}-6"), format!("{id}-x"), id.clone(), "0r8SIM000000099AAA-2".to_owned()] {
            assert_eq!(
                get(&served, &token, &format!("/services/data/v60.0/query/{path}")).await,
                (400, invalid.clone())
            );
        }
        let anonymous = served.http.get(format!("{}/services/data/v60.0/query/{id}-2", served.base)).send().await;
        assert_eq!(anonymous.expect("get").status(), 401);
        // A query that fits one batch opens no cursor.
        let (_, one) = soql(&served, &token, &format!("{CONTACT_Q}'+15550001'")).await;
        assert_eq!((one["done"].clone(), one.get("nextRecordsUrl")), (json!(true), None));
        let stats = served.sim.stats.snapshot();
        assert_eq!((stats.lists, stats.lookups), (10, 1), "the list and its batches are the sync's list");
    }

    #[tokio::test]
    async fn salesforce_compares_and_orders_by_last_modified_date() {
        let served = serve(Dialect::Salesforce, Settings::default()).await;
        let since = changes(&served).await;
        let token = token(&served).await;
        let ids = |body: &Value| -> Vec<String> {
            body["records"]
                .as_array()
                .expect("records")
                .iter()
                .filter_map(|r| r["Id"].as_str().map(str::to_owned))
                .collect()
        };
        let at = |ms: u64| sf_datetime(ms).replace(".000+0000", "Z");
        let q = |where_: &str| format!("SELECT Id FROM Contact WHERE {where_} ORDER BY LastModifiedDate DESC, Id");
        let (status, body) = soql(&served, &token, &q(&format!("LastModifiedDate > {}", at(since + 2000)))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(ids(&body), ["C-blank", "C-1", "C-2"], "newest first");
        let (_, body) = soql(&served, &token, &q(&format!("LastModifiedDate < {}", at(since)))).await;
        assert_eq!(ids(&body), ["C-9", "C-0"]);
        let (_, body) = soql(&served, &token, &q(&format!("LastModifiedDate <= {}", at(since)))).await;
        assert_eq!(ids(&body), ["C-5", "C-9", "C-0"]);
        // An offset names the same instant; fractional seconds count.
        let local = super::super::utc(since).to_offset(time::UtcOffset::from_hms(-5, -30, 0).expect("offset"));
        let west = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.001-05:30",
            local.year(),
            u8::from(local.month()),
            local.day(),
            local.hour(),
            local.minute(),
            local.second()
        );
        let (status, body) = soql(&served, &token, &q(&format!("LastModifiedDate >= {west} AND Phone != null"))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(ids(&body), ["C-1", "C-2", "C-3", "C-4"], "after the first millisecond of `since`");
        let (_, body) =
            soql(&served, &token, "SELECT Id FROM Contact WHERE Phone != null ORDER BY Phone DESC LIMIT 2").await;
        assert_eq!(ids(&body), ["C-9", "C-5"]);
        // Refusals: a dateTime in quotes or against text, an unknown sort field, a bad literal.
        let (status, body) = soql(&served, &token, "SELECT Id FROM Contact WHERE Phone = 2026-12-07T00:00:00Z").await;
        assert_eq!((status, body[0]["errorCode"].clone()), (400, json!("INVALID_FIELD")));
        assert!(body[0]["message"].as_str().is_some_and(|m| m.contains("must be of type string")), "{body}");
        let (_, body) = soql(&served, &token, "SELECT Id FROM Contact WHERE LastModifiedDate = '2026-12-07'").await;
        assert!(body[0]["message"].as_str().is_some_and(|m| m.contains("must be of type dateTime")), "{body}");
        let (_, body) = soql(&served, &token, "SELECT Id FROM Contact ORDER BY Email").await;
        assert_eq!(body[0]["errorCode"], "INVALID_FIELD");
        let (_, body) =
            soql(&served, &token, "SELECT Id FROM Contact WHERE LastModifiedDate > 2026-02-30T00:00:00Z").await;
        assert_eq!(body[0]["errorCode"], "MALFORMED_QUERY");
    }

    /// The shipped profile `deploy/crm/salesforce.toml`, unmodified: its
    /// token, lookup, and the whole customer list a page at a time.
    #[tokio::test]
    async fn salesforce_serves_the_shipped_profile() {
        let served = serve_with(Dialect::Salesforce, Settings::default(), Paging { salesforce_batch_size: 2 }).await;
        let since = changes(&served).await;
        let mapping = profile(
            "salesforce",
            &[
                ("FAILSOFT_CRM_CLIENT_ID", "failsoft-test-client"),
                ("FAILSOFT_CRM_CLIENT_SECRET", "failsoft-test-secret"),
            ],
        );
        let (status, body) = send(&served.http, mapping.token_request(&served.base).expect("oauth")).await;
        assert_eq!(status, 200);
        let token = mapping.read_token(&body, clock::unix_secs()).expect("a token").access_token;
        let lookup = mapping.lookup(&served.base, "+15550001", "corr-1", Some(&token)).expect("lookup");
        let (_, body) = send(&served.http, lookup).await;
        match mapping.read_customer(&body, "standard") {
            LookupAnswer::Found(record) => {
                assert_eq!((record.customer_id.as_str(), record.tier.as_str()), ("C-1", "gold"))
            }
            other => panic!("{other:?}"),
        }

        let pages = list_all(&served.http, &mapping, &served.base, since, 500, Some(&token)).await;
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1], "batches of --salesforce-batch-size");
        let listed: Vec<_> = pages.into_iter().flatten().collect();
        let ids: Vec<&str> = listed.iter().filter_map(|c| c.customer_id.as_deref()).collect();
        assert_eq!(ids, ["C-5", "C-4", "C-3", "C-2", "C-1"], "each changed contact once, none before `since`");
        assert!(listed.iter().all(|c| !c.deleted && c.tier.as_deref() == Some("gold")));
        assert_eq!(listed[0].phone.as_deref(), Some("+15550005"));
        assert_eq!(listed[0].updated_at.as_deref(), Some(sf_datetime(since).as_str()));
        assert!(listed.iter().all(|c| c.phone.as_deref() != Some("+15550008")), "query does not list removals");
        // A pass from the epoch lists everyone with a phone.
        let all = list_all(&served.http, &mapping, &served.base, 0, 500, Some(&token)).await;
        assert_eq!(all.into_iter().flatten().count(), 7);
        assert_eq!(served.sim.stats.snapshot().lists, 3 + 4);
    }

    #[tokio::test]
    async fn salesforce_unknown_paths_and_classification() {
        let served = served().await;
        let answer = served
            .http
            .get(format!("{}/services/data/v60.0/sobjects/Contact/C-1", served.base))
            .send()
            .await
            .expect("get");
        assert_eq!(answer.status(), 404);
        assert_eq!(
            answer.json::<Value>().await.expect("json"),
            json!([{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}])
        );
        let uri = |u: &str| u.parse::<Uri>().expect("uri");
        assert_eq!(classify(&Method::GET, &uri("/services/data/v60.0/query?q=SELECT+Id+FROM+Contact")), Route::Lookup);
        assert_eq!(
            classify(&Method::GET, &uri("/services/data/v60.0/query/?q=SELECT%20Id%20FROM%20Case")),
            Route::FindCases
        );
        assert_eq!(classify(&Method::POST, &uri("/services/data/v60.0/sobjects/Case/")), Route::CreateCase);
        assert_eq!(classify(&Method::POST, &uri("/services/oauth2/token")), Route::Other);
        let list =
            format!("/services/data/v60.0/query?q={}", super::super::form_component(&list_q("2026-12-07T00:00:00Z")));
        assert_eq!(classify(&Method::GET, &uri(&list)), Route::ListCustomers);
        assert_eq!(
            classify(&Method::GET, &uri("/services/data/v60.0/query/0r8SIM000000001AAA-2000")),
            Route::ListCustomers
        );
        assert!(is_version("v60.0") && !is_version("60.0") && !is_version("v60") && !is_version("vx.0"));
        assert_eq!(case_id(0), "500SIM000000001YBA");
    }
}
