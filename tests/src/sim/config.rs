//! Command line of `crm-sim`, read once at start-up.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use super::dialect::{Dialect, Settings};
use super::limit::{HeaderStyle, RateLimit};

/// A CRM simulator for failsoft's end-to-end tests.
#[derive(Debug, Parser)]
#[command(name = "crm-sim", version)]
pub struct Args {
    /// Address of the CRM API (the downstream contract). Port 0 picks a free
    /// port; the chosen one is kept when `down` mode closes and re-opens it.
    #[arg(long, env = "CRM_SIM_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    /// Address of the admin API that tests drive.
    #[arg(long, env = "CRM_SIM_ADMIN_LISTEN", default_value = "127.0.0.1:0")]
    pub admin_listen: SocketAddr,

    /// Which calls the CRM offers: `full` (the contract's required and
    /// optional calls) or `two-call` (only the two every CRM must offer:
    /// `GET /customers?phone=` and `POST /cases`; anything else is answered
    /// as a web framework answers a route it lacks: 404, or 405 with `Allow`).
    #[arg(long, env = "CRM_SIM_CONTRACT", value_enum, default_value_t = Contract::Full)]
    pub contract: Contract,

    /// A rate limit: this many API calls per `--rate-window-secs`, counted
    /// across routes; above it, 429 with `Retry-After` (unset: no limit;
    /// `POST /admin/rate-limit` changes it at run time).
    #[arg(long, env = "CRM_SIM_RATE_LIMIT")]
    pub rate_limit: Option<u64>,

    /// The rate limit's fixed window, seconds.
    #[arg(long, env = "CRM_SIM_RATE_WINDOW_SECS", default_value_t = 1)]
    pub rate_window_secs: u64,

    /// The headers that state the limit on every answer: `ietf`
    /// (`RateLimit-*`), `x` (`X-RateLimit-*`) or `none` (only the 429's
    /// `Retry-After`).
    #[arg(long, env = "CRM_SIM_RATE_LIMIT_HEADERS", value_enum, default_value_t = HeaderStyle::Ietf)]
    pub rate_limit_headers: HeaderStyle,

    /// Whose API shapes the API port serves: `generic` (the downstream
    /// contract above), `salesforce` (OAuth client credentials, SOQL query,
    /// sObject create), `zendesk` (API token or OAuth, search, tickets),
    /// `hubspot` (private app token, CRM v3 search, tickets) or `servicenow`
    /// (OAuth client credentials, Table API: encoded queries, incidents).
    /// Every dialect serves the same records through the same failure modes,
    /// rate limit and admin API. `--contract` applies to `generic` only.
    #[arg(long, env = "CRM_SIM_DIALECT", value_enum, default_value_t = Dialect::Generic)]
    pub dialect: Dialect,

    /// OAuth client id the dialects' token endpoints accept.
    #[arg(long, env = "CRM_SIM_CLIENT_ID", default_value = "failsoft-test-client")]
    pub client_id: String,

    /// OAuth client secret the dialects' token endpoints accept.
    #[arg(long, env = "CRM_SIM_CLIENT_SECRET", default_value = "failsoft-test-secret")]
    pub client_secret: String,

    /// How long an issued bearer token is valid, seconds (Salesforce's
    /// default API session is two hours); past it, API calls are refused 401.
    #[arg(long, env = "CRM_SIM_TOKEN_LIFETIME_SECS", default_value_t = 7_200)]
    pub token_lifetime_secs: u64,

    /// The custom Case field (salesforce dialect) that holds failsoft's
    /// external reference: the admin ledger's `externalRef`.
    #[arg(long, env = "CRM_SIM_EXTERNAL_REF_FIELD", default_value = "Failsoft_Ref__c")]
    pub external_ref_field: String,

    /// The agent whose API token the zendesk dialect accepts
    /// (`{email}/token:{token}` in Basic auth).
    #[arg(long, env = "CRM_SIM_ZENDESK_EMAIL", default_value = "agent@example.com")]
    pub zendesk_email: String,

    /// The zendesk dialect's API token.
    #[arg(long, env = "CRM_SIM_ZENDESK_TOKEN", default_value = "failsoft-test-token")]
    pub zendesk_token: String,

    /// The private app access token the hubspot dialect accepts
    /// (`Authorization: Bearer <token>`).
    #[arg(long, env = "CRM_SIM_HUBSPOT_TOKEN", default_value = "failsoft-test-hubspot-token")]
    pub hubspot_token: String,

    /// The ticket property (hubspot dialect) that holds failsoft's external
    /// reference, with unique values: the admin ledger's `externalRef`.
    #[arg(long, env = "CRM_SIM_HUBSPOT_REF_PROPERTY", default_value = "failsoft_ref")]
    pub hubspot_ref_property: String,

    /// The servicenow dialect answers no rows for an encoded query with an
    /// invalid part (ServiceNow's `glide.invalid_query.returns_no_rows=true`)
    /// instead of ignoring that part, the instance's default.
    #[arg(long, env = "CRM_SIM_SERVICENOW_INVALID_QUERY_RETURNS_NO_ROWS")]
    pub servicenow_invalid_query_returns_no_rows: bool,
}

impl Args {
    /// The rate limit the flags ask for, checked.
    pub fn rate_limit(&self) -> Result<Option<RateLimit>, String> {
        self.rate_limit
            .map(|limit| {
                RateLimit { limit, window_secs: self.rate_window_secs, headers: self.rate_limit_headers }.validate()
            })
            .transpose()
    }

    /// What the dialects need from the flags, checked.
    pub fn dialect_settings(&self) -> Result<Settings, String> {
        Settings {
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            token_lifetime: Duration::from_secs(self.token_lifetime_secs),
            external_ref_field: self.external_ref_field.clone(),
            zendesk_email: self.zendesk_email.clone(),
            zendesk_token: self.zendesk_token.clone(),
            hubspot_token: self.hubspot_token.clone(),
            hubspot_ref_property: self.hubspot_ref_property.clone(),
            servicenow_invalid_query_returns_no_rows: self.servicenow_invalid_query_returns_no_rows,
        }
        .validate()
    }
}

/// The calls the simulated CRM offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Contract {
    Full,
    TwoCall,
}
