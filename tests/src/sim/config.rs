//! Command line of `crm-sim`, read once at start-up.

use std::net::SocketAddr;

use clap::Parser;

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
}

/// The calls the simulated CRM offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Contract {
    Full,
    TwoCall,
}
