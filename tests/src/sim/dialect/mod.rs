//! Vendor dialects: the simulator's records served in a real CRM's API
//! shapes (`--dialect`).
//!
//! Every dialect serves the same [`Store`](super::store::Store) behind the
//! same failure-mode middleware ([`api::guarded`]), so modes, the rate
//! limit, stats, correlation recording and the whole admin API work as with
//! the generic contract. What a dialect adds is its own paths, its
//! authentication (bearer tokens from [`Sim::tokens`]), its error bodies and
//! its rate-limit headers and refusal ([`limited`]). Each request is
//! classified into the generic [`Route`] kinds ([`classify`]): a customer
//! lookup, a case creation or a case query, so `GET /admin/stats` counts
//! them and mode `reject` refuses writes only.
//!
//! Without `--rate-limit` nothing is enforced, and the quota headers state a
//! nominal allowance of [`NOMINAL_ALLOWANCE`] calls of which every API
//! request since the last `POST /admin/reset` is used (ServiceNow states
//! none: its headers only come with a rate-limit rule that matches).

pub mod hubspot;
pub mod salesforce;
pub mod servicenow;
pub mod soql;
pub mod zendesk;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::http::header::{AUTHORIZATION, HOST};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::api;
use super::config::Contract;
use super::limit::Admission;
use super::route::Route;
use super::state::Sim;

/// Calls per window the quota headers state when no limit is set.
pub const NOMINAL_ALLOWANCE: u64 = 1_000_000;

/// Whose API shapes the API port serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Dialect {
    /// The downstream contract of `docs/design.md`.
    #[default]
    Generic,
    /// Salesforce's REST API (`salesforce.rs`).
    Salesforce,
    /// Zendesk's Support API (`zendesk.rs`).
    Zendesk,
    /// HubSpot's CRM API v3 (`hubspot.rs`).
    #[value(name = "hubspot")]
    HubSpot,
    /// ServiceNow's Table API (`servicenow.rs`).
    #[value(name = "servicenow")]
    ServiceNow,
}

/// What the dialects take from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub client_id: String,
    pub client_secret: String,
    pub token_lifetime: Duration,
    /// The Case field (salesforce) recorded as the case's external reference.
    pub external_ref_field: String,
    pub zendesk_email: String,
    pub zendesk_token: String,
    /// The private app access token the hubspot dialect accepts.
    pub hubspot_token: String,
    /// The ticket property (hubspot) recorded as the case's external
    /// reference; it requires unique values.
    pub hubspot_ref_property: String,
    /// ServiceNow's `glide.invalid_query.returns_no_rows`: a query with an
    /// invalid part answers no rows instead of dropping that part.
    pub servicenow_invalid_query_returns_no_rows: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            client_id: "failsoft-test-client".into(),
            client_secret: "failsoft-test-secret".into(),
            token_lifetime: Duration::from_secs(7_200),
            external_ref_field: "Failsoft_Ref__c".into(),
            zendesk_email: "agent@example.com".into(),
            zendesk_token: "failsoft-test-token".into(),
            hubspot_token: "failsoft-test-hubspot-token".into(),
            hubspot_ref_property: "failsoft_ref".into(),
            servicenow_invalid_query_returns_no_rows: false,
        }
    }
}

impl Settings {
    pub fn validate(self) -> Result<Self, String> {
        if self.token_lifetime.is_zero() {
            return Err("--token-lifetime-secs must be at least 1".into());
        }
        if !soql::is_identifier(&self.external_ref_field) {
            return Err(format!("--external-ref-field {:?} is not a field name", self.external_ref_field));
        }
        if !hubspot::is_property_name(&self.hubspot_ref_property) {
            return Err(format!("--hubspot-ref-property {:?} is not a property name", self.hubspot_ref_property));
        }
        if [&self.client_id, &self.client_secret, &self.zendesk_token, &self.hubspot_token].iter().any(|s| s.is_empty())
        {
            return Err("client id, client secret, Zendesk token and HubSpot token must not be empty".into());
        }
        Ok(self)
    }
}

/// How the dialects page their lists, besides [`Settings`]: what
/// `--salesforce-batch-size` sets. Not yet wired: `config.rs` (which builds
/// `Settings` field by field) has no such flag, and `sim::run` calls
/// [`router`], so `crm-sim` serves the default; wiring it is a `u64` flag
/// (1..=2000) and [`router_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    /// The most records one Salesforce query answer holds (1 to 2,000,
    /// Salesforce's default batch).
    pub salesforce_batch_size: usize,
}

impl Default for Paging {
    fn default() -> Self {
        Self { salesforce_batch_size: salesforce::BATCH_SIZE_DEFAULT }
    }
}

/// What a dialect's handlers share.
#[derive(Debug)]
pub struct DialectState {
    pub sim: Arc<Sim>,
    pub settings: Settings,
    /// The salesforce dialect's query batches and open query cursors.
    pub salesforce: salesforce::QueryPaging,
}

/// The API router for `dialect`, behind the failure-mode middleware.
pub fn router(sim: Arc<Sim>, dialect: Dialect, contract: Contract, settings: Settings) -> Router {
    router_with(sim, dialect, contract, settings, Paging::default())
}

/// [`router`] with `paging` rather than the vendors' defaults (a batch
/// size outside 1 to 2,000 is taken as the nearest bound).
pub fn router_with(sim: Arc<Sim>, dialect: Dialect, contract: Contract, settings: Settings, paging: Paging) -> Router {
    let salesforce = salesforce::QueryPaging::new(paging.salesforce_batch_size);
    let state = Arc::new(DialectState { sim: Arc::clone(&sim), settings, salesforce });
    match dialect {
        Dialect::Generic => api::router(sim, contract),
        Dialect::Salesforce => api::guarded(salesforce::routes(), sim, dialect).with_state(state),
        Dialect::Zendesk => api::guarded(zendesk::routes(), sim, dialect).with_state(state),
        Dialect::HubSpot => api::guarded(hubspot::routes(), sim, dialect).with_state(state),
        Dialect::ServiceNow => api::guarded(servicenow::routes(), sim, dialect).with_state(state),
    }
}

/// The request's [`Route`] kind, for stats and for mode `reject`.
pub fn classify(dialect: Dialect, method: &Method, uri: &Uri) -> Route {
    match dialect {
        Dialect::Generic => Route::of(method, uri.path(), uri.query()),
        Dialect::Salesforce => salesforce::classify(method, uri),
        Dialect::Zendesk => zendesk::classify(method, uri),
        Dialect::HubSpot => hubspot::classify(method, uri),
        Dialect::ServiceNow => servicenow::classify(method, uri),
    }
}

/// The rate limit as the vendor applies it: token endpoints are not
/// counted; every other answer states the quota in the vendor's headers;
/// a call over the limit gets the vendor's refusal.
pub async fn limited(sim: &Sim, dialect: Dialect, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let exempt = match dialect {
        Dialect::Generic | Dialect::HubSpot => false,
        Dialect::Salesforce => salesforce::is_token_path(path),
        Dialect::Zendesk => zendesk::is_token_path(path),
        Dialect::ServiceNow => servicenow::is_token_path(path),
    };
    if exempt {
        return next.run(request).await;
    }
    let Some(admission) = sim.limiter.admit(Instant::now()) else {
        let mut response = next.run(request).await;
        let used = sim.stats.snapshot().requests;
        write_quota(dialect, Quota::nominal(used), response.headers_mut());
        return response;
    };
    let mut response = if admission.admitted {
        next.run(request).await
    } else {
        sim.stats.throttled();
        match dialect {
            Dialect::Salesforce => salesforce::limit_exceeded(),
            Dialect::HubSpot => hubspot::limit_exceeded(),
            Dialect::ServiceNow => servicenow::limit_exceeded(admission.limit(), admission.reset_secs().max(1)),
            Dialect::Generic | Dialect::Zendesk => zendesk::limit_exceeded(admission.reset_secs().max(1)),
        }
    };
    write_quota(dialect, Quota::of(&admission), response.headers_mut());
    response
}

/// What the quota headers state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub used: u64,
    /// The window the limit counts in, seconds; `None` for the nominal
    /// allowance (no limit is set).
    pub window_secs: Option<u64>,
    /// Whole seconds until the window resets (0 for the nominal allowance).
    pub reset_secs: u64,
}

impl Quota {
    fn of(admission: &Admission) -> Self {
        let limit = admission.limit();
        Self {
            limit: limit.limit,
            used: limit.limit - admission.remaining(),
            window_secs: Some(limit.window_secs),
            reset_secs: admission.reset_secs(),
        }
    }

    fn nominal(used: u64) -> Self {
        Self { limit: NOMINAL_ALLOWANCE, used: used.min(NOMINAL_ALLOWANCE), window_secs: None, reset_secs: 0 }
    }
}

fn write_quota(dialect: Dialect, quota: Quota, headers: &mut HeaderMap) {
    match dialect {
        Dialect::Generic => {}
        Dialect::Salesforce => salesforce::write_quota(quota, headers),
        Dialect::Zendesk => zendesk::write_quota(quota, headers),
        Dialect::HubSpot => hubspot::write_quota(quota, headers),
        Dialect::ServiceNow => servicenow::write_quota(quota, headers),
    }
}

/// Decodes `application/x-www-form-urlencoded` text (also a URL's query):
/// `+` is a space, `%XX` a byte; a malformed escape is kept as it is.
pub fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

/// The first value of `name` in a URL's query.
pub fn query_value(uri: &Uri, name: &str) -> Option<String> {
    form_pairs(uri.query().unwrap_or("")).into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match text
                .get(i + 1..i + 3)
                .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                Some(byte) => {
                    out.push(byte);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a query component (all but the unreserved characters).
pub fn form_component(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// The user and password of an `Authorization: Basic` header.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(BASE64.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The token of an `Authorization: <scheme> <token>` header whose scheme is
/// one of `schemes` (compared without case).
pub fn bearer_token<'h>(headers: &'h HeaderMap, schemes: &[&str]) -> Option<&'h str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    schemes.iter().any(|s| scheme.eq_ignore_ascii_case(s)).then_some(token.trim())
}

/// `http://<Host>`: where the client reached the simulator, for the URLs
/// the answers carry.
pub fn base_url(headers: &HeaderMap) -> String {
    let host = headers.get(HOST).and_then(|h| h.to_str().ok()).filter(|h| !h.is_empty()).unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// A JSON answer with `status`.
pub fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// UTC date and time of `ms` since the epoch, to the second or millisecond.
pub fn utc(ms: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// `ms` in UTC as a vendor writes it: `pattern` is a `time` format
/// description, e.g. `[year]-[month]-[day]T[hour]:[minute]:[second]Z`.
pub fn utc_text(ms: u64, pattern: &str) -> String {
    let format = time::format_description::parse_borrowed::<2>(pattern).expect("a valid format description");
    utc(ms).format(&format).unwrap_or_default()
}

/// A stable integer id for `text` (FNV-1a), in 10^12..10^13 as Zendesk's
/// ids are, and well inside JSON's exact integers.
pub fn stable_id(text: &str) -> u64 {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    1_000_000_000_000 + hash % 9_000_000_000_000
}

/// A header value from text the simulator built (always visible ASCII).
pub fn header(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
pub(crate) mod testing {
    //! A dialect's API on a loopback port, for the dialects' tests.

    use super::*;

    pub struct Served {
        pub sim: Arc<Sim>,
        pub base: String,
        pub http: reqwest::Client,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Served {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    pub async fn serve(dialect: Dialect, settings: Settings) -> Served {
        serve_with(dialect, settings, Paging::default()).await
    }

    pub async fn serve_with(dialect: Dialect, settings: Settings, paging: Paging) -> Served {
        let sim = Arc::new(Sim::new());
        let app = router_with(Arc::clone(&sim), dialect, Contract::Full, settings, paging);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let base = format!("http://{}", listener.local_addr().expect("bound address"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        Served { sim, base, http, task }
    }

    /// Loads customers as `POST /admin/customers` would.
    /// A dialect's API with `customers` loaded.
    pub async fn serve_seeded(dialect: Dialect, settings: Settings, customers: serde_json::Value) -> Served {
        let served = serve(dialect, settings).await;
        seed(&served.sim, customers).await;
        served
    }

    /// A form-encoded `POST` to `path` (a token endpoint), as a client sends it.
    pub async fn post_form(served: &Served, path: &str, form: &str) -> reqwest::Response {
        served
            .http
            .post(format!("{}{path}", served.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned())
            .send()
            .await
            .expect("a form POST")
    }

    pub async fn seed(sim: &Sim, customers: serde_json::Value) {
        seed_at(sim, customers, super::super::clock::unix_ms()).await;
    }

    /// Loads customers changed at `ms` (since the epoch).
    pub async fn seed_at(sim: &Sim, customers: serde_json::Value, ms: u64) {
        let customers = serde_json::from_value(customers).expect("customers");
        sim.store.lock().await.upsert_customers(customers, ms);
    }

    /// The shipped mapping profile `name` (`deploy/crm/<name>.toml`), as a
    /// host loads it, with these secrets.
    pub fn profile(name: &str, secrets: &[(&str, &str)]) -> failsoft_shared::mapping::Mapping {
        let from = failsoft_shared::mapping::Settings { profile: Some(name), ..Default::default() };
        let secret = |wanted: &str| secrets.iter().find(|(n, _)| *n == wanted).map(|(_, v)| (*v).to_owned());
        failsoft_shared::mapping::load_text(from, &secret).unwrap_or_else(|e| panic!("profile {name}: {e}"))
    }

    /// Pages through `mapping`'s customer list of changes since `since_ms`,
    /// following each page's next page: every page's customers, in order.
    pub async fn list_all(
        http: &reqwest::Client,
        mapping: &failsoft_shared::mapping::Mapping,
        base: &str,
        since_ms: u64,
        page_size: u32,
        token: Option<&str>,
    ) -> Vec<Vec<failsoft_shared::sync::ListedCustomer>> {
        use failsoft_shared::mapping::{ListPage, NextPage};
        let mut pages = Vec::new();
        let mut next: Option<NextPage> = None;
        loop {
            let page = match &next {
                None => ListPage::First,
                Some(NextPage::Cursor(cursor)) => ListPage::Cursor(cursor),
                Some(NextPage::Url(url)) => ListPage::Url(url),
            };
            let request = mapping.list_customers(base, Some(since_ms), page_size, page, token).expect("a list");
            let (status, body) = send(http, request.expect("rendered")).await;
            assert_eq!(status, 200, "page {}: {}", pages.len() + 1, String::from_utf8_lossy(&body));
            let listed = mapping.read_list(base, &body).expect("a list page");
            assert!(listed.unreadable.is_empty(), "unreadable items: {}", String::from_utf8_lossy(&body));
            pages.push(listed.customers.into_iter().map(|(_, customer)| customer).collect());
            match listed.next {
                None => return pages,
                more => next = more,
            }
            assert!(pages.len() < 1_000, "the list ends");
        }
    }

    /// Sends a request a mapping built; its status and body.
    pub async fn send(http: &reqwest::Client, request: failsoft_shared::mapping::CrmRequest) -> (u16, Vec<u8>) {
        let method = reqwest::Method::from_bytes(request.method.as_bytes()).expect("a method");
        let mut call = http.request(method, &request.url);
        for (name, value) in &request.headers {
            call = call.header(name, value);
        }
        if let Some(body) = request.body {
            call = call.body(body);
        }
        let answer = call.send().await.expect("the simulator answers");
        (answer.status().as_u16(), answer.bytes().await.expect("a body").to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::admin;
    use crate::sim::control::Control;
    use crate::sim::listener::ApiListener;
    use serde_json::{Value, json};

    /// The whole simulator as `crm-sim --dialect salesforce` runs it: the
    /// admin API seeds, switches modes, revokes tokens and reads the ledger
    /// and stats of a dialect exactly as of the generic contract.
    #[tokio::test]
    async fn dialects_keep_the_admin_api_modes_and_ledger() {
        let sim = Arc::new(Sim::new());
        let app = router(Arc::clone(&sim), Dialect::Salesforce, Contract::Full, Settings::default());
        let api = ApiListener::bind("127.0.0.1:0".parse().expect("addr"), app).expect("api port");
        let base = format!("http://{}", api.local_addr());
        let control = Arc::new(Control::new(Arc::clone(&sim), api).expect("control"));
        let admin_port = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("admin port");
        let admin_base = format!("http://{}", admin_port.local_addr().expect("addr"));
        let admin_task = tokio::spawn(axum::serve(admin_port, admin::router(Arc::clone(&control))).into_future());
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        let admin = |method: reqwest::Method, path: &str, body: Value| {
            http.request(method, format!("{admin_base}{path}")).json(&body).send()
        };
        let token = || async {
            let answer = http
                .post(format!("{base}/services/oauth2/token"))
                .body("grant_type=client_credentials&client_id=failsoft-test-client&client_secret=failsoft-test-secret")
                .send()
                .await
                .expect("token");
            answer.json::<Value>().await.expect("json")["access_token"].as_str().expect("token").to_owned()
        };
        let lookup = |token: String| {
            http.get(format!("{base}/services/data/v60.0/query"))
                .query(&[("q", "SELECT Id, Tier__c FROM Contact WHERE Phone = '+15550001'")])
                .bearer_auth(token)
                .send()
        };
        let create = |token: String| {
            http.post(format!("{base}/services/data/v60.0/sobjects/Case/"))
                .bearer_auth(token)
                .json(&json!({"Subject": "Call", "Failsoft_Ref__c": "R-9"}))
                .send()
        };

        let seeded = admin(
            reqwest::Method::POST,
            "/admin/customers",
            json!([{"phone": "+15550001", "customerId": "C-1", "tier": "vip"}]),
        );
        assert_eq!(seeded.await.expect("seed").status(), 200);
        let first = token().await;
        let found: Value = lookup(first.clone()).await.expect("lookup").json().await.expect("json");
        assert_eq!(found["records"][0]["Tier__c"], "vip");

        // `reject` refuses writes only, with the mode's generic body.
        admin(reqwest::Method::POST, "/admin/mode", json!({"mode": "reject", "status": 422})).await.expect("mode");
        assert_eq!(lookup(first.clone()).await.expect("lookup").status(), 200);
        let rejected = create(first.clone()).await.expect("create");
        assert_eq!(rejected.status(), 422);
        assert_eq!(rejected.json::<Value>().await.expect("json"), json!({"error": "validation"}));
        // `down` closes the port, `up` opens it again.
        admin(reqwest::Method::POST, "/admin/mode", json!({"mode": "down"})).await.expect("mode");
        assert!(lookup(first.clone()).await.is_err(), "connection refused");
        admin(reqwest::Method::POST, "/admin/mode", json!({"mode": "up"})).await.expect("mode");
        assert_eq!(create(first.clone()).await.expect("create").status(), 201);

        let revoked: Value = admin(reqwest::Method::POST, "/admin/tokens/revoke", json!({}))
            .await
            .expect("revoke")
            .json()
            .await
            .expect("json");
        assert_eq!(revoked, json!({"revoked": 1}));
        assert_eq!(lookup(first).await.expect("lookup").status(), 401);
        assert_eq!(lookup(token().await).await.expect("lookup").status(), 200);

        let ledger: Value =
            http.get(format!("{admin_base}/admin/ledger")).send().await.expect("ledger").json().await.expect("json");
        assert_eq!(ledger.as_array().map(Vec::len), Some(1));
        assert_eq!(ledger[0]["externalRef"], "R-9");
        assert_eq!(ledger[0]["caseId"], "500SIM000000001YBA");
        let stats: Value =
            http.get(format!("{admin_base}/admin/stats")).send().await.expect("stats").json().await.expect("json");
        assert_eq!(stats["tokensIssued"], 2);
        assert_eq!(
            (stats["lookups"].clone(), stats["creates"].clone(), stats["failed"].clone()),
            (json!(4), json!(2), json!(1))
        );
        assert_eq!(stats["casesCreated"], 1);
        control.shutdown(Duration::from_secs(1)).await;
        admin_task.abort();
    }

    #[test]
    fn form_decoding() {
        let pairs = form_pairs("grant_type=client_credentials&q=SELECT+Id+FROM+Contact&p=%2B1%27x&bad=%zz&empty");
        assert_eq!(pairs[0], ("grant_type".into(), "client_credentials".into()));
        assert_eq!(pairs[1].1, "SELECT Id FROM Contact");
        assert_eq!(pairs[2].1, "+1'x");
        assert_eq!(pairs[3].1, "%zz");
        assert_eq!(pairs[4], ("empty".into(), String::new()));
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%+1"), "% 1", "not a sign-prefixed byte");
    }

    #[test]
    fn stable_ids_are_stable_and_in_range() {
        assert_eq!(stable_id("C-1"), stable_id("C-1"));
        assert_ne!(stable_id("C-1"), stable_id("C-2"));
        assert!((1_000_000_000_000..10_000_000_000_000).contains(&stable_id("x")));
    }

    #[test]
    fn settings_refuse_a_bad_external_ref_field() {
        let bad = Settings { external_ref_field: "Ref' OR".into(), ..Settings::default() };
        assert!(bad.validate().is_err());
        assert!(Settings::default().validate().is_ok());
        let bad = Settings { hubspot_ref_property: "Failsoft Ref".into(), ..Settings::default() };
        assert!(bad.validate().is_err_and(|e| e.contains("--hubspot-ref-property")));
        assert!(Settings { hubspot_token: String::new(), ..Settings::default() }.validate().is_err());
    }

    #[test]
    fn dialects_are_named_as_the_flag_takes_them() {
        use clap::ValueEnum as _;
        for (name, dialect) in [
            ("generic", Dialect::Generic),
            ("salesforce", Dialect::Salesforce),
            ("zendesk", Dialect::Zendesk),
            ("hubspot", Dialect::HubSpot),
            ("servicenow", Dialect::ServiceNow),
        ] {
            assert_eq!(Dialect::from_str(name, false), Ok(dialect), "{name}");
        }
        assert_eq!(form_component("a+b c/é"), "a%2Bb%20c%2F%C3%A9");
    }

    /// Each dialect classifies its own calls, and only its own: stats count
    /// a HubSpot search as a lookup or a case query by its path.
    #[test]
    fn classification_by_dialect() {
        let uri = |u: &str| u.parse::<Uri>().expect("uri");
        let search = uri("/crm/v3/objects/contacts/search");
        assert_eq!(classify(Dialect::HubSpot, &Method::POST, &search), Route::Lookup);
        assert_eq!(classify(Dialect::HubSpot, &Method::POST, &uri("/crm/v3/objects/tickets/search")), Route::FindCases);
        assert_eq!(classify(Dialect::Salesforce, &Method::POST, &search), Route::Other);
        let incidents = uri("/api/now/table/incident");
        assert_eq!(classify(Dialect::ServiceNow, &Method::POST, &incidents), Route::CreateCase);
        assert_eq!(classify(Dialect::ServiceNow, &Method::GET, &incidents), Route::FindCases);
        assert_eq!(classify(Dialect::Generic, &Method::GET, &incidents), Route::Other);
    }

    /// The token endpoints are not counted against the rate limit; every
    /// other call is, in the vendor's refusal.
    #[tokio::test]
    async fn token_endpoints_are_exempt_from_the_rate_limit() {
        let served = testing::serve(Dialect::ServiceNow, Settings::default()).await;
        served.sim.limiter.set(Some(crate::sim::limit::RateLimit {
            limit: 1,
            window_secs: 60,
            headers: crate::sim::limit::HeaderStyle::Ietf,
        }));
        let token = || {
            served
                .http
                .post(format!("{}/oauth_token.do", served.base))
                .body("grant_type=client_credentials&client_id=failsoft-test-client&client_secret=failsoft-test-secret")
                .send()
        };
        for _ in 0..3 {
            assert_eq!(token().await.expect("token").status(), 200);
        }
        let table = format!("{}/api/now/table/incident", served.base);
        assert_eq!(served.http.get(&table).send().await.expect("get").status(), 401, "counted, then refused");
        assert_eq!(served.http.get(&table).send().await.expect("get").status(), 429);
        let hubspot = testing::serve(Dialect::HubSpot, Settings::default()).await;
        hubspot.sim.limiter.set(served.sim.limiter.limit());
        let search = format!("{}/crm/v3/objects/contacts/search", hubspot.base);
        assert_eq!(hubspot.http.post(&search).send().await.expect("post").status(), 401);
        assert_eq!(hubspot.http.post(&search).send().await.expect("post").status(), 429);
    }
}
