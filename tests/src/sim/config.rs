//! Command line of `crm-sim`, read once at start-up.

use std::net::SocketAddr;

use clap::Parser;

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
}
