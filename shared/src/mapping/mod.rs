//! The downstream mapping: how failsoft's four CRM operations become a
//! particular CRM's HTTP calls, and how its answers become failsoft's
//! records (docs/design.md, "With the CRM").
//!
//! An operator describes a CRM in one document (TOML or JSON: the hosts
//! parse the text, this module checks it), the way a Genesys Data Action
//! describes a REST call: for each operation a method, a path, query
//! pairs, headers and a JSON body template, a JSONPath map from the answer
//! to failsoft's fields, and how statuses map to error classes; once, the
//! authentication. [`Mapping::bind`] checks the whole document and names the
//! field of each fault, so a mistake stops the process at start-up rather
//! than a write in an outage. Shipped profiles live in `deploy/crm/`.
//!
//! Every hole a template fills at run time is escaped for where it lands
//! ([`template`]); a hole inside a query language must name the language's
//! escaper or the document is refused.

pub mod path;
pub mod profiles;
pub mod template;

use alloc::borrow::ToOwned;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::Deserialize;
use serde_json::{Map, Value};

use self::path::Path;
use self::template::{Escaper, RenderError, Source, Template, Values, is_absent, lone_value, percent_encode};
use crate::cache::CustomerRecord;
use crate::case::CaseSummary;
use crate::error_class::{Attempt, ErrorClass, Operation, Verdict, classify};

/// The number the breaker's probe looks up when the mapping declares no
/// probe: no customer has it (no North American area code starts with 0).
pub const PROBE_PHONE: &str = "+10000000000";
/// The correlationId the probe carries, so a CRM's logs show what it was.
pub const PROBE_ID: &str = "failsoft-breaker-probe";
/// The correlationId the customer list's calls carry (the pre-warm sync's).
pub const LIST_ID: &str = "failsoft-sync";
/// The header that carries the correlationId on every call.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

// ---------------------------------------------------------------------------
// The document, as an operator writes it.

/// A mapping document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingDoc {
    /// A name for logs and `/v1/health` (`salesforce`, `acme-crm`).
    pub name: String,
    /// The operator's settings the templates use as `{{vars.NAME}}` (an API
    /// version, a custom field's name).
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    #[serde(default)]
    pub auth: AuthDoc,
    /// Headers every call carries.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Status rules every operation has, after its own.
    #[serde(default)]
    pub statuses: Vec<StatusRule>,
    pub lookup: OperationDoc,
    pub create_case: OperationDoc,
    /// The case search by external reference, where the CRM has one: the
    /// worker then looks before it creates.
    pub find_case: Option<OperationDoc>,
    /// The breaker's probe; by default a lookup of [`PROBE_PHONE`].
    pub probe: Option<OperationDoc>,
    /// The customers changed since a time, a page at a time: the pre-warm
    /// sync's source, where the CRM has such a list.
    pub list_customers: Option<OperationDoc>,
}

/// How calls are authenticated.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AuthDoc {
    #[default]
    None,
    /// One header with a fixed value (an API key, a private app's token).
    Header { name: String, value: String },
    /// HTTP Basic.
    Basic { username: String, password: String },
    /// OAuth 2.0 client credentials (RFC 6749 §4.4): a token is fetched,
    /// cached and sent as `Authorization: Bearer`, refreshed before it
    /// expires and once on a 401.
    Oauth2ClientCredentials {
        /// A path on the CRM's base URL, or an absolute `https://` URL.
        token_url: String,
        client_id: String,
        client_secret: String,
        scope: Option<String>,
        /// Where the client's credentials go: `body` (form fields) or
        /// `basic` (an `Authorization: Basic` header).
        #[serde(default)]
        client_auth: ClientAuth,
        /// The lifetime assumed when the token answer has no `expires_in`
        /// (Salesforce's has none).
        #[serde(default = "default_token_lifetime")]
        default_lifetime_secs: u64,
    },
}

fn default_token_lifetime() -> u64 {
    900
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    #[default]
    Body,
    Basic,
}

/// One operation's call and how its answer reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationDoc {
    pub method: String,
    /// Starts with `/`; appended to the CRM's base URL.
    pub path: String,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON template: its string leaves are templates.
    pub body: Option<Value>,
    #[serde(default)]
    pub answer: AnswerDoc,
    /// Statuses whose meaning differs from the generic contract's.
    #[serde(default)]
    pub statuses: Vec<StatusRule>,
}

/// Where failsoft's fields are in an answer (JSONPath).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerDoc {
    /// Lookup: present means found, absent means no such customer (for a
    /// CRM whose search answers 200 with no results). Without it, a 2xx
    /// must carry the customer.
    pub found: Option<String>,
    pub customer_id: Option<String>,
    pub tier: Option<String>,
    /// Lookup: a found customer without a tier takes the default tier
    /// (otherwise the answer is unreadable).
    #[serde(default)]
    pub tier_optional: bool,
    /// Find: the list of cases; the other case paths are read from each
    /// item (its root is `$`).
    pub cases: Option<String>,
    pub case_id: Option<String>,
    pub status: Option<String>,
    pub created_at: Option<String>,
    /// List: the page's customers; `phone`, `customer_id`, `tier`,
    /// `updated_at`, `deleted` (true: removed) or `active` (false: removed)
    /// are read from each item (its root is `$`).
    pub items: Option<String>,
    pub phone: Option<String>,
    pub updated_at: Option<String>,
    pub deleted: Option<String>,
    pub active: Option<String>,
    /// List: the next page as a URL or path on the CRM's base URL
    /// (Salesforce's `nextRecordsUrl`, Zendesk's `after_url`).
    pub next_page: Option<String>,
    /// List: the next page's `{{cursor}}` (HubSpot's `paging.next.after`).
    pub next_cursor: Option<String>,
    /// List: `true` here means this page is the last (Zendesk's
    /// `end_of_stream`), whatever the next page says.
    pub last_page: Option<String>,
}

/// A status (and optionally a text in the body) that means a class.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRule {
    pub status: u16,
    pub body_contains: Option<String>,
    pub class: RuleClass,
}

/// What a [`StatusRule`] makes of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleClass {
    Success,
    NotFound,
    Transient,
    Throttled,
    Permanent,
}

// ---------------------------------------------------------------------------
// The bound mapping.

/// Why a document was refused; names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingError {
    pub field: String,
    pub why: String,
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.why)
    }
}

fn fault(field: impl Into<String>, why: impl Into<String>) -> MappingError {
    MappingError { field: field.into(), why: why.into() }
}

/// Which operation a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lookup,
    CreateCase,
    FindCase,
    Probe,
    ListCustomers,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lookup => "lookup",
            Self::CreateCase => "create_case",
            Self::FindCase => "find_case",
            Self::Probe => "probe",
            Self::ListCustomers => "list_customers",
        }
    }

    fn class_op(self) -> Operation {
        match self {
            Self::Lookup | Self::Probe | Self::ListCustomers => Operation::Lookup,
            Self::CreateCase | Self::FindCase => Operation::Write,
        }
    }
}

#[derive(Debug, Clone)]
struct Answer {
    found: Option<Path>,
    customer_id: Option<Path>,
    tier: Option<Path>,
    tier_optional: bool,
    cases: Option<Path>,
    case_id: Option<Path>,
    status: Option<Path>,
    created_at: Option<Path>,
    items: Option<Path>,
    phone: Option<Path>,
    updated_at: Option<Path>,
    deleted: Option<Path>,
    active: Option<Path>,
    next_page: Option<Path>,
    next_cursor: Option<Path>,
    last_page: Option<Path>,
}

#[derive(Debug, Clone)]
enum BodyTemplate {
    Leaf(Template),
    Array(Vec<BodyTemplate>),
    Object(Vec<(String, BodyTemplate)>),
    Other(Value),
}

#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: Template,
    query: Vec<(String, Template)>,
    headers: Vec<(String, Template)>,
    body: Option<BodyTemplate>,
    answer: Answer,
    statuses: Vec<StatusRule>,
}

/// The token request of OAuth 2.0 client credentials, ready to send.
#[derive(Clone)]
pub struct TokenRequest {
    url: String,
    form: Vec<(String, String)>,
    basic: Option<String>,
    default_lifetime_secs: u64,
}

#[derive(Clone)]
enum Auth {
    None,
    Headers(Vec<(String, String)>),
    OAuth2(TokenRequest),
}

/// A checked mapping with its secrets bound. Its `Debug` shows no secret.
#[derive(Clone)]
pub struct Mapping {
    name: String,
    headers: Vec<(String, Template)>,
    auth: Auth,
    lookup: Call,
    create_case: Call,
    find_case: Option<Call>,
    probe: Option<Call>,
    list_customers: Option<Call>,
    secrets: BTreeMap<String, String>,
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping")
            .field("name", &self.name)
            .field("find_case", &self.find_case.is_some())
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// One call, ready for a host's HTTP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// What a lookup's answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupAnswer {
    Found(CustomerRecord),
    NotFound,
    /// Not the mapped shape: a failed call, never cached.
    Unreadable,
}

/// Which page of the customer list to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListPage<'a> {
    First,
    /// The last page's `next_cursor`.
    Cursor(&'a str),
    /// The last page's `next_page` (a URL on the CRM's origin, or a path).
    Url(&'a str),
}

/// The page after this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextPage {
    Cursor(String),
    Url(String),
}

/// One page of the customer list, read: each item a customer or not
/// readable (by its place), and the next page if there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPage {
    pub customers: Vec<(u64, crate::sync::ListedCustomer)>,
    pub unreadable: Vec<u64>,
    pub next: Option<NextPage>,
}

/// Why a list page cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAList {
    /// Not JSON (an error page, a proxy's HTML).
    NotJson,
    /// Not a list where `items` says.
    Shape,
    /// The next page is on another origin: never followed (the CRM's
    /// credentials go with it).
    ForeignNextPage,
}

/// A case search's answer that is not a list of cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotACaseList;

/// A fresh token and when it expires (seconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub access_token: String,
    pub expires_at_s: u64,
}

impl Token {
    /// Whether the token should be replaced before use: within a minute (or
    /// a tenth of a short lifetime) of expiring.
    pub fn is_due(&self, now_s: u64) -> bool {
        now_s + 60 >= self.expires_at_s
    }
}

impl Mapping {
    /// Checks `doc` and binds its secrets (`secret(NAME)` is the host's
    /// secret store). Every fault names its field.
    pub fn bind(doc: &MappingDoc, secret: &dyn Fn(&str) -> Option<String>) -> Result<Self, MappingError> {
        for (name, value) in &doc.vars {
            if value.is_empty()
                || !value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/'))
            {
                return Err(fault(
                    format!("vars.{name}"),
                    "a setting is a name or a version: letters, digits, '_', '.', '-' or '/'",
                ));
            }
        }
        let vars = |name: &str| doc.vars.get(name).cloned();
        let mut secrets = BTreeMap::new();
        let mut bind_secrets = |field: &str, template: &Template| -> Result<(), MappingError> {
            for hole in template.holes() {
                if let Source::Secret(name) = &hole.source {
                    let value = secret(name)
                        .filter(|v| !v.is_empty())
                        .ok_or_else(|| fault(field, format!("the secret {name} is not set")))?;
                    secrets.insert(name.clone(), value);
                }
            }
            Ok(())
        };
        let mut headers = Vec::new();
        for (name, value) in &doc.headers {
            let field = format!("headers.{name}");
            let template = header_template(&field, name, value, &vars)?;
            bind_secrets(&field, &template)?;
            headers.push((name.to_ascii_lowercase(), template));
        }
        let ops = [
            ("lookup", Some(&doc.lookup)),
            ("create_case", Some(&doc.create_case)),
            ("find_case", doc.find_case.as_ref()),
            ("probe", doc.probe.as_ref()),
            ("list_customers", doc.list_customers.as_ref()),
        ];
        let mut built = Vec::new();
        for (name, op) in ops {
            let Some(op) = op else {
                built.push(None);
                continue;
            };
            let mut operation = operation(name, op, &vars)?;
            operation.statuses.extend(doc.statuses.iter().cloned());
            for (header, template) in &operation.headers {
                bind_secrets(&format!("{name}.headers.{header}"), template)?;
            }
            built.push(Some(operation));
        }
        let [lookup, create_case, find_case, probe, list_customers]: [Option<Call>; 5] =
            built.try_into().map_err(|_| fault("mapping", "internal: five operations"))?;
        let (lookup, create_case) = match (lookup, create_case) {
            (Some(l), Some(c)) => (l, c),
            _ => return Err(fault("mapping", "lookup and create_case are required")),
        };
        check_answers(&lookup, &create_case, find_case.as_ref())?;
        if let Some(list) = &list_customers {
            if list.answer.items.is_none() {
                return Err(fault("list_customers.answer.items", "required: where the page's customers are"));
            }
            if list.answer.phone.is_none() {
                return Err(fault("list_customers.answer.phone", "required: where each customer's number is"));
            }
        }
        let mut mapping = Self {
            name: doc.name.clone(),
            headers,
            auth: Auth::None,
            lookup,
            create_case,
            find_case,
            probe,
            list_customers,
            secrets,
        };
        mapping.auth = mapping.bind_auth(&doc.auth, &vars, secret)?;
        if doc.name.is_empty() {
            return Err(fault("name", "required"));
        }
        Ok(mapping)
    }

    fn bind_auth(
        &mut self,
        doc: &AuthDoc,
        vars: &dyn Fn(&str) -> Option<String>,
        secret: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Auth, MappingError> {
        let mut names = Vec::new();
        let mut fill = |field: &str, text: &str| -> Result<String, MappingError> {
            let template = Template::parse(text, vars).map_err(|why| fault(field, why))?;
            for hole in template.holes() {
                let Source::Secret(name) = &hole.source else {
                    return Err(fault(field, "only {{secret.NAME}} and {{vars.NAME}} may be used in auth"));
                };
                if secret(name).is_none_or(|v| v.is_empty()) {
                    return Err(fault(field, format!("the secret {name} is not set")));
                }
                names.push(name.clone());
            }
            let value = template
                .render(&Values::default(), secret, &|s| s.to_owned())
                .map_err(|e| fault(field, alloc::string::ToString::to_string(&e)))?;
            if value.is_empty() || value.chars().any(char::is_control) {
                return Err(fault(field, "empty, or holds a control character"));
            }
            Ok(value)
        };
        let auth = match doc {
            AuthDoc::None => Auth::None,
            AuthDoc::Header { name, value } => {
                check_header_name("auth.name", name)?;
                Auth::Headers(alloc::vec![(name.to_ascii_lowercase(), fill("auth.value", value)?)])
            }
            AuthDoc::Basic { username, password } => {
                let user = fill("auth.username", username)?;
                let pass = fill("auth.password", password)?;
                Auth::Headers(alloc::vec![("authorization".to_owned(), basic(&user, &pass))])
            }
            AuthDoc::Oauth2ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
                client_auth,
                default_lifetime_secs,
            } => {
                let url = Template::parse(token_url, vars).map_err(|why| fault("auth.token_url", why))?;
                if !url.is_literal() {
                    return Err(fault("auth.token_url", "may use {{vars.NAME}} only"));
                }
                let url = url.render(&Values::default(), &|_| None, &|s| s.to_owned()).unwrap_or_default();
                if !(url.starts_with('/') || url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(fault("auth.token_url", "a path starting with '/' or an http(s) URL"));
                }
                let id = fill("auth.client_id", client_id)?;
                let key = fill("auth.client_secret", client_secret)?;
                let mut form = alloc::vec![("grant_type".to_owned(), "client_credentials".to_owned())];
                let basic_header = match client_auth {
                    ClientAuth::Basic => Some(basic(&id, &key)),
                    ClientAuth::Body => {
                        form.push(("client_id".to_owned(), id));
                        form.push(("client_secret".to_owned(), key));
                        None
                    }
                };
                if let Some(scope) = scope {
                    form.push(("scope".to_owned(), fill("auth.scope", scope)?));
                }
                if *default_lifetime_secs < 60 {
                    return Err(fault("auth.default_lifetime_secs", "at least 60"));
                }
                Auth::OAuth2(TokenRequest {
                    url,
                    form,
                    basic: basic_header,
                    default_lifetime_secs: *default_lifetime_secs,
                })
            }
        };
        // Named for `Debug`; the values are in the auth already.
        for name in names {
            self.secrets.entry(name).or_default();
        }
        Ok(auth)
    }

    /// The mapping's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether calls need a token from [`Self::token_request`].
    pub fn uses_token(&self) -> bool {
        matches!(self.auth, Auth::OAuth2(_))
    }

    /// Whether the CRM can find a case by its external reference (the
    /// worker's look before a create).
    pub fn can_find_cases(&self) -> bool {
        self.find_case.is_some()
    }

    /// Whether the CRM has a customer list (the pre-warm sync's source).
    pub fn has_list(&self) -> bool {
        self.list_customers.is_some()
    }

    /// One page of the customers changed at or after `since_ms` (all, for
    /// a full pass), when the mapping has a list.
    pub fn list_customers(
        &self,
        base: &str,
        since_ms: Option<u64>,
        page_size: u32,
        page: ListPage<'_>,
        token: Option<&str>,
    ) -> Option<Result<CrmRequest, RenderError>> {
        let op = self.list_customers.as_ref()?;
        let values = Values {
            correlation_id: Some(LIST_ID),
            since_ms,
            page_size: Some(page_size),
            cursor: match page {
                ListPage::Cursor(cursor) => Some(cursor),
                _ => None,
            },
            ..Values::default()
        };
        Some(match page {
            ListPage::Url(url) => {
                let url = if url.starts_with('/') { format!("{base}{url}") } else { url.to_owned() };
                if !same_origin(base, &url) {
                    return Some(Err(RenderError::Unescapable {
                        hole: "next_page".to_owned(),
                        why: "a URL on another origin than the CRM's",
                    }));
                }
                let mut request = CrmRequest { method: "GET".to_owned(), url, headers: Vec::new(), body: None };
                self.add_headers(&mut request, &values, token).map(|()| request)
            }
            _ => self.request(op, base, &values, token),
        })
    }

    /// A list page's customers and the page after it.
    pub fn read_list(&self, base: &str, body: &[u8]) -> Result<ListedPage, NotAList> {
        let op = self.list_customers.as_ref().ok_or(NotAList::Shape)?;
        let answer = &op.answer;
        let root: Value = serde_json::from_slice(body).map_err(|_| NotAList::NotJson)?;
        let items = match answer.items.as_ref().and_then(|p| p.get(&root)) {
            Some(Value::Array(items)) => items,
            None => &Vec::new(),
            Some(_) => return Err(NotAList::Shape),
        };
        let mut page = ListedPage { customers: Vec::new(), unreadable: Vec::new(), next: None };
        let text = |path: &Option<Path>, item: &Value| path.as_ref().and_then(|p| p.text(item));
        // A flag that is there but not a boolean makes the item unreadable.
        let flag = |path: &Option<Path>, item: &Value| match path.as_ref().and_then(|p| p.get(item)) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(()),
        };
        for (index, item) in items.iter().enumerate() {
            // What is missing is the sync's to name (MISSING_PHONE, …); what
            // is not a record at all is unreadable.
            let (Value::Object(_), Ok(deleted), Ok(active)) =
                (item, flag(&answer.deleted, item), flag(&answer.active, item))
            else {
                page.unreadable.push(index as u64);
                continue;
            };
            let deleted = deleted == Some(true) || active == Some(false);
            page.customers.push((
                index as u64,
                crate::sync::ListedCustomer {
                    phone: text(&answer.phone, item),
                    customer_id: text(&answer.customer_id, item),
                    tier: text(&answer.tier, item),
                    updated_at: text(&answer.updated_at, item),
                    deleted,
                },
            ));
        }
        let last = answer.last_page.as_ref().and_then(|p| p.get(&root)).and_then(Value::as_bool) == Some(true);
        if !last {
            if let Some(url) = answer.next_page.as_ref().and_then(|p| p.text(&root)) {
                let full = if url.starts_with('/') { format!("{base}{url}") } else { url.clone() };
                if !same_origin(base, &full) {
                    return Err(NotAList::ForeignNextPage);
                }
                page.next = Some(NextPage::Url(url));
            } else if let Some(cursor) = answer.next_cursor.as_ref().and_then(|p| p.text(&root)) {
                page.next = Some(NextPage::Cursor(cursor));
            }
        }
        Ok(page)
    }

    /// Whether a response of this status means the token was refused, so
    /// the caller fetches a new one and tries once more.
    pub fn token_refused(&self, status: u16) -> bool {
        self.uses_token() && status == 401
    }

    /// The token request, for a mapping with OAuth 2.0.
    pub fn token_request(&self, base: &str) -> Option<CrmRequest> {
        let Auth::OAuth2(token) = &self.auth else { return None };
        let form: Vec<String> =
            token.form.iter().map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))).collect();
        let mut headers = alloc::vec![
            ("content-type".to_owned(), "application/x-www-form-urlencoded".to_owned()),
            ("accept".to_owned(), "application/json".to_owned()),
        ];
        if let Some(basic) = &token.basic {
            headers.push(("authorization".to_owned(), basic.clone()));
        }
        let url = if token.url.starts_with('/') { format!("{base}{}", token.url) } else { token.url.clone() };
        Some(CrmRequest { method: "POST".to_owned(), url, headers, body: Some(form.join("&").into_bytes()) })
    }

    /// The token in a 2xx token answer (`access_token`, and `expires_in`
    /// when given).
    pub fn read_token(&self, body: &[u8], now_s: u64) -> Option<Token> {
        let Auth::OAuth2(token) = &self.auth else { return None };
        let answer: Value = serde_json::from_slice(body).ok()?;
        let access_token = answer.get("access_token")?.as_str().filter(|t| !t.is_empty())?.to_owned();
        if access_token.chars().any(char::is_control) {
            return None;
        }
        let lifetime = match answer.get("expires_in") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .unwrap_or(token.default_lifetime_secs);
        Some(Token { access_token, expires_at_s: now_s + lifetime })
    }

    /// `lookup` for `phone`.
    pub fn lookup(
        &self,
        base: &str,
        phone: &str,
        correlation_id: &str,
        token: Option<&str>,
    ) -> Result<CrmRequest, RenderError> {
        let values = Values { phone: Some(phone), correlation_id: Some(correlation_id), ..Values::default() };
        self.request(&self.lookup, base, &values, token)
    }

    /// `create_case` for the case `case` under `correlation_id`.
    pub fn create_case(
        &self,
        base: &str,
        correlation_id: &str,
        case: &Value,
        token: Option<&str>,
    ) -> Result<CrmRequest, RenderError> {
        let values = Values { correlation_id: Some(correlation_id), case: Some(case), ..Values::default() };
        self.request(&self.create_case, base, &values, token)
    }

    /// `find_case` for the external reference `correlation_id`, when the
    /// mapping has one.
    pub fn find_case(
        &self,
        base: &str,
        correlation_id: &str,
        token: Option<&str>,
    ) -> Option<Result<CrmRequest, RenderError>> {
        let op = self.find_case.as_ref()?;
        let values = Values { correlation_id: Some(correlation_id), ..Values::default() };
        Some(self.request(op, base, &values, token))
    }

    /// The breaker's probe: the declared one, else a lookup of a number no
    /// one has.
    pub fn probe(&self, base: &str, token: Option<&str>) -> Result<CrmRequest, RenderError> {
        let values = Values { phone: Some(PROBE_PHONE), correlation_id: Some(PROBE_ID), ..Values::default() };
        self.request(self.probe.as_ref().unwrap_or(&self.lookup), base, &values, token)
    }

    fn operation(&self, op: Op) -> &Call {
        match op {
            Op::Lookup => &self.lookup,
            Op::CreateCase => &self.create_case,
            Op::FindCase => self.find_case.as_ref().unwrap_or(&self.lookup),
            Op::Probe => self.probe.as_ref().unwrap_or(&self.lookup),
            Op::ListCustomers => self.list_customers.as_ref().unwrap_or(&self.lookup),
        }
    }

    /// Classifies one attempt of `op`: the operation's status rules first,
    /// then the generic contract's classes (`error_class::classify`).
    pub fn classify(&self, op: Op, attempt: Attempt<'_>, body: &[u8]) -> Verdict {
        if let Attempt::Status { code, retry_after } = attempt {
            let rules = &self.operation(op).statuses;
            let text = core::str::from_utf8(body).unwrap_or("");
            let rule = rules
                .iter()
                .find(|r| r.status == code && r.body_contains.as_deref().is_none_or(|needle| text.contains(needle)));
            if let Some(rule) = rule {
                return match rule.class {
                    RuleClass::Success => Verdict::Success,
                    RuleClass::NotFound => Verdict::NotFound,
                    RuleClass::Transient => Verdict::Failed(ErrorClass::Transient),
                    RuleClass::Throttled => Verdict::Failed(ErrorClass::Throttled {
                        retry_after_secs: retry_after.and_then(crate::error_class::parse_retry_after),
                    }),
                    RuleClass::Permanent => Verdict::Failed(ErrorClass::Permanent { status: code }),
                };
            }
        }
        classify(op.class_op(), attempt)
    }

    /// What a lookup's 2xx answer says of the customer.
    pub fn read_customer(&self, body: &[u8], default_tier: &str) -> LookupAnswer {
        let Ok(root) = serde_json::from_slice::<Value>(body) else { return LookupAnswer::Unreadable };
        let answer = &self.lookup.answer;
        if let Some(found) = &answer.found
            && found.get(&root).is_none()
        {
            return LookupAnswer::NotFound;
        }
        let Some(customer_id) = answer.customer_id.as_ref().and_then(|p| p.text(&root)) else {
            return LookupAnswer::Unreadable;
        };
        let tier = match answer.tier.as_ref().and_then(|p| p.text(&root)) {
            Some(tier) => tier,
            None if answer.tier_optional => default_tier.to_owned(),
            None => return LookupAnswer::Unreadable,
        };
        LookupAnswer::Found(CustomerRecord { found: true, customer_id, tier })
    }

    /// What is kept of a created case: its summary, or `None` when the
    /// answer has no case id.
    pub fn read_created_case(&self, body: &[u8]) -> Option<CaseSummary> {
        let root: Value = serde_json::from_slice(body).ok()?;
        summary(&self.create_case.answer, &root)
    }

    /// The first case a search answer lists, if any.
    pub fn read_found_case(&self, body: &[u8]) -> Result<Option<CaseSummary>, NotACaseList> {
        let op = self.find_case.as_ref().ok_or(NotACaseList)?;
        let root: Value = serde_json::from_slice(body).map_err(|_| NotACaseList)?;
        let list = match &op.answer.cases {
            Some(path) => path.get(&root),
            None => Some(&root),
        };
        match list {
            Some(Value::Array(items)) => Ok(items.iter().find_map(|item| summary(&op.answer, item))),
            None if op.answer.cases.is_some() => Ok(None),
            _ => Err(NotACaseList),
        }
    }

    fn request(
        &self,
        op: &Call,
        base: &str,
        values: &Values<'_>,
        token: Option<&str>,
    ) -> Result<CrmRequest, RenderError> {
        let secrets = |name: &str| self.secrets.get(name).cloned();
        let mut url = String::from(base);
        url.push_str(&op.path.render(values, &secrets, &|s| percent_encode(s))?);
        let mut first = true;
        for (key, template) in &op.query {
            // A lone hole with no value in this call (a first page's
            // `cursor`) leaves its pair out.
            if template.lone_hole().is_some_and(|hole| is_absent(hole, values)) {
                continue;
            }
            url.push(if first { '?' } else { '&' });
            first = false;
            url.push_str(&percent_encode(key));
            url.push('=');
            url.push_str(&percent_encode(&template.render(values, &secrets, &|s| s.to_owned())?));
        }
        let body = match &op.body {
            Some(template) => Some(serde_json::to_vec(&fill_body(template, values)?).unwrap_or_default()),
            None => None,
        };
        let mut request = CrmRequest { method: op.method.clone(), url, headers: Vec::new(), body };
        self.add_headers(&mut request, values, token)?;
        for (name, template) in &op.headers {
            let value = template.render(values, &secrets, &|s| s.to_owned())?;
            set_header(&mut request.headers, name, value)?;
        }
        Ok(request)
    }

    /// The headers every call carries: `accept`, the correlationId, the
    /// authentication, a body's type, and the document's own.
    fn add_headers(
        &self,
        request: &mut CrmRequest,
        values: &Values<'_>,
        token: Option<&str>,
    ) -> Result<(), RenderError> {
        let headers = &mut request.headers;
        headers.push(("accept".to_owned(), "application/json".to_owned()));
        if let Some(id) = values.correlation_id {
            headers.push((CORRELATION_HEADER.to_owned(), id.to_owned()));
        }
        match (&self.auth, token) {
            (Auth::Headers(fixed), _) => headers.extend(fixed.iter().cloned()),
            (Auth::OAuth2(_), Some(token)) => headers.push(("authorization".to_owned(), format!("Bearer {token}"))),
            _ => {}
        }
        if request.body.is_some() {
            headers.push(("content-type".to_owned(), "application/json".to_owned()));
        }
        let secrets = |name: &str| self.secrets.get(name).cloned();
        for (name, template) in &self.headers {
            let value = template.render(values, &secrets, &|s| s.to_owned())?;
            set_header(headers, name, value)?;
        }
        Ok(())
    }
}

fn set_header(headers: &mut Vec<(String, String)>, name: &str, value: String) -> Result<(), RenderError> {
    if value.chars().any(char::is_control) {
        return Err(RenderError::Unescapable {
            hole: name.to_owned(),
            why: "a control character, which no header may hold",
        });
    }
    headers.retain(|(n, _)| n != name);
    headers.push((name.to_owned(), value));
    Ok(())
}

/// Whether `url` is on `base`'s scheme, host and port.
fn same_origin(base: &str, url: &str) -> bool {
    let origin = |u: &str| -> Option<String> {
        let (scheme, rest) = u.split_once("://")?;
        let host = rest.split(['/', '?', '#']).next()?;
        Some(format!("{}://{}", scheme.to_ascii_lowercase(), host.to_ascii_lowercase()))
    };
    matches!((origin(base), origin(url)), (Some(a), Some(b)) if a == b)
}

/// Where a host's mapping comes from (its settings).
#[derive(Debug, Clone, Copy, Default)]
pub struct Settings<'a> {
    /// `FAILSOFT_CRM_PROFILE`: a shipped profile's name (default `generic`).
    pub profile: Option<&'a str>,
    /// `FAILSOFT_CRM_MAPPING`'s document text (TOML or JSON), when the
    /// operator wrote one; it replaces the profile.
    pub document: Option<&'a str>,
    /// `FAILSOFT_CRM_CAN_FIND_CASES`, when set.
    pub can_find_cases: Option<bool>,
}

/// Parses a document's text (the host's TOML and JSON readers).
pub type Parser<'p, T> = &'p dyn Fn(&str) -> Result<T, String>;

/// The host's mapping from its settings: the document, else the named
/// profile, else the generic contract. `FAILSOFT_CRM_CAN_FIND_CASES=true`
/// adds the generic contract's case search to the generic profile (and is
/// refused for a mapping without a search); `false` drops a mapping's search.
pub fn load(
    from: Settings<'_>,
    parse: Parser<'_, MappingDoc>,
    parse_operation: Parser<'_, OperationDoc>,
    secret: &dyn Fn(&str) -> Option<String>,
) -> Result<Mapping, MappingError> {
    let (field, text) = match (from.document, from.profile) {
        (Some(document), _) => ("FAILSOFT_CRM_MAPPING", document),
        (None, Some(name)) => (
            "FAILSOFT_CRM_PROFILE",
            profiles::text(name).ok_or_else(|| {
                let names: Vec<&str> = profiles::PROFILES.iter().map(|(n, _)| *n).collect();
                fault("FAILSOFT_CRM_PROFILE", format!("no profile {name:?} (shipped: {})", names.join(", ")))
            })?,
        ),
        (None, None) => ("FAILSOFT_CRM_PROFILE", profiles::GENERIC),
    };
    let mut doc = parse(text).map_err(|why| fault(field, why))?;
    match from.can_find_cases {
        Some(true) if doc.find_case.is_none() && doc.name == "generic" => {
            doc.find_case = Some(parse_operation(profiles::GENERIC_FIND_CASE).map_err(|why| fault("find_case", why))?);
        }
        Some(true) if doc.find_case.is_none() => {
            return Err(fault(
                "FAILSOFT_CRM_CAN_FIND_CASES",
                format!("is true, but the mapping {:?} declares no find_case", doc.name),
            ));
        }
        Some(false) => doc.find_case = None,
        _ => {}
    }
    Mapping::bind(&doc, secret)
        .map_err(|e| MappingError { field: format!("{field} ({}): {}", doc.name, e.field), why: e.why })
}

/// [`load`] with the documents read as TOML, or as JSON when the text
/// starts with `{`.
pub fn load_text(from: Settings<'_>, secret: &dyn Fn(&str) -> Option<String>) -> Result<Mapping, MappingError> {
    load(from, &parse_document, &parse_document, secret)
}

/// A document's text: JSON when it starts with `{`, else TOML (where the
/// host reads TOML: the `toml` feature; the wasm hosts take JSON).
pub fn parse_document<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).map_err(|e| alloc::string::ToString::to_string(&e));
    }
    #[cfg(feature = "toml")]
    return toml::from_str(text).map_err(|e| alloc::string::ToString::to_string(&e));
    #[cfg(not(feature = "toml"))]
    Err("this host reads a mapping document as JSON (an object starting with '{'); convert the TOML".into())
}

fn summary(answer: &Answer, root: &Value) -> Option<CaseSummary> {
    let case_id = answer.case_id.as_ref()?.text(root)?;
    let mut object = Map::new();
    object.insert("caseId".to_owned(), Value::String(case_id));
    for (key, path) in [("status", &answer.status), ("createdAt", &answer.created_at)] {
        if let Some(value) = path.as_ref().and_then(|p| p.get(root)) {
            object.insert(key.to_owned(), value.clone());
        }
    }
    serde_json::from_value(Value::Object(object)).ok()
}

fn fill_body(template: &BodyTemplate, values: &Values<'_>) -> Result<Value, RenderError> {
    Ok(match template {
        BodyTemplate::Leaf(t) => match t.lone_hole() {
            Some(hole) if hole.escaper == Escaper::Plain => lone_value(hole, values).unwrap_or(Value::Null),
            _ => Value::String(t.render(values, &|_| None, &|s| s.to_owned())?),
        },
        BodyTemplate::Array(items) => {
            Value::Array(items.iter().map(|i| fill_body(i, values)).collect::<Result<_, _>>()?)
        }
        BodyTemplate::Object(fields) => {
            let mut map = Map::new();
            for (key, t) in fields {
                let value = fill_body(t, values)?;
                // A lone hole with no value leaves its field out.
                if !(value.is_null() && matches!(t, BodyTemplate::Leaf(l) if l.lone_hole().is_some())) {
                    map.insert(key.clone(), value);
                }
            }
            Value::Object(map)
        }
        BodyTemplate::Other(v) => v.clone(),
    })
}

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

fn check_header_name(field: &str, name: &str) -> Result<(), MappingError> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(fault(field, "not a header name"));
    }
    Ok(())
}

fn header_template(
    field: &str,
    name: &str,
    value: &str,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<Template, MappingError> {
    check_header_name(field, name)?;
    Template::parse(value, vars).map_err(|why| fault(field, why))
}

fn operation(name: &str, doc: &OperationDoc, vars: &dyn Fn(&str) -> Option<String>) -> Result<Call, MappingError> {
    let method = doc.method.to_ascii_uppercase();
    if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
        return Err(fault(format!("{name}.method"), "GET, POST, PUT, PATCH or DELETE"));
    }
    if !doc.path.starts_with('/') {
        return Err(fault(format!("{name}.path"), "must start with '/' (the CRM's base URL comes before it)"));
    }
    let no_secrets = |field: &str, t: &Template| -> Result<(), MappingError> {
        if t.holes().any(|h| matches!(h.source, Source::Secret(_))) {
            return Err(fault(field, "a secret may appear only in headers and auth"));
        }
        Ok(())
    };
    let path = Template::parse(&doc.path, vars).map_err(|why| fault(format!("{name}.path"), why))?;
    no_secrets(&format!("{name}.path"), &path)?;
    let mut query = Vec::new();
    for (key, value) in &doc.query {
        let field = format!("{name}.query.{key}");
        let template = Template::parse(value, vars).map_err(|why| fault(&field, why))?;
        no_secrets(&field, &template)?;
        needs_escapers(&field, &template)?;
        query.push((key.clone(), template));
    }
    let mut headers = Vec::new();
    for (key, value) in &doc.headers {
        let field = format!("{name}.headers.{key}");
        headers.push((key.to_ascii_lowercase(), header_template(&field, key, value, vars)?));
    }
    let body = match &doc.body {
        Some(body) => Some(body_template(&format!("{name}.body"), body, vars)?),
        None => None,
    };
    let path_of = |field: &str, text: &Option<String>| -> Result<Option<Path>, MappingError> {
        let Some(text) = text.as_deref() else { return Ok(None) };
        let field = format!("{name}.answer.{field}");
        let template = Template::parse(text, vars).map_err(|why| fault(&field, why))?;
        if !template.is_literal() {
            return Err(fault(field, "a path may use {{vars.NAME}} only"));
        }
        let text = template.render(&Values::default(), &|_| None, &|s| s.to_owned()).unwrap_or_default();
        Path::parse(&text).map(Some).map_err(|e| fault(field, alloc::string::ToString::to_string(&e)))
    };
    let a = &doc.answer;
    let answer = Answer {
        found: path_of("found", &a.found)?,
        customer_id: path_of("customer_id", &a.customer_id)?,
        tier: path_of("tier", &a.tier)?,
        tier_optional: a.tier_optional,
        cases: path_of("cases", &a.cases)?,
        case_id: path_of("case_id", &a.case_id)?,
        status: path_of("status", &a.status)?,
        created_at: path_of("created_at", &a.created_at)?,
        items: path_of("items", &a.items)?,
        phone: path_of("phone", &a.phone)?,
        updated_at: path_of("updated_at", &a.updated_at)?,
        deleted: path_of("deleted", &a.deleted)?,
        active: path_of("active", &a.active)?,
        next_page: path_of("next_page", &a.next_page)?,
        next_cursor: path_of("next_cursor", &a.next_cursor)?,
        last_page: path_of("last_page", &a.last_page)?,
    };
    Ok(Call { method, path, query, headers, body, answer, statuses: doc.statuses.clone() })
}

/// A hole that shares its value with other text is inside a language the
/// context cannot escape for: it must say which.
fn needs_escapers(field: &str, template: &Template) -> Result<(), MappingError> {
    if template.lone_hole().is_some() {
        return Ok(());
    }
    if template.holes().any(|h| h.escaper == Escaper::Plain) {
        return Err(fault(
            field,
            "a {{hole}} that shares its value with other text must name its escaper: \
             |soql, |zendesk, |servicenow, or |text for plain words",
        ));
    }
    Ok(())
}

fn body_template(
    field: &str,
    value: &Value,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<BodyTemplate, MappingError> {
    Ok(match value {
        Value::String(text) => {
            let template = Template::parse(text, vars).map_err(|why| fault(field, why))?;
            if template.holes().any(|h| matches!(h.source, Source::Secret(_))) {
                return Err(fault(field, "a secret may appear only in headers and auth"));
            }
            needs_escapers(field, &template)?;
            BodyTemplate::Leaf(template)
        }
        Value::Array(items) => BodyTemplate::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| body_template(&format!("{field}[{i}]"), v, vars))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(fields) => {
            let mut out = Vec::new();
            for (key, v) in fields {
                let key_template = Template::parse(key, vars).map_err(|why| fault(format!("{field}.{key}"), why))?;
                if !key_template.is_literal() {
                    return Err(fault(format!("{field}.{key}"), "a body's keys may use {{vars.NAME}} only"));
                }
                let key = key_template.render(&Values::default(), &|_| None, &|s| s.to_owned()).unwrap_or_default();
                out.push((key.clone(), body_template(&format!("{field}.{key}"), v, vars)?));
            }
            BodyTemplate::Object(out)
        }
        other => BodyTemplate::Other(other.clone()),
    })
}

fn check_answers(lookup: &Call, create: &Call, find: Option<&Call>) -> Result<(), MappingError> {
    if lookup.answer.customer_id.is_none() {
        return Err(fault("lookup.answer.customer_id", "required: where the customer's id is"));
    }
    if lookup.answer.tier.is_none() && !lookup.answer.tier_optional {
        return Err(fault("lookup.answer.tier", "required, unless tier_optional = true"));
    }
    if create.answer.case_id.is_none() {
        return Err(fault("create_case.answer.case_id", "required: where the created case's id is"));
    }
    if let Some(find) = find
        && find.answer.case_id.is_none()
    {
        return Err(fault("find_case.answer.case_id", "required: where a found case's id is (in each listed case)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
