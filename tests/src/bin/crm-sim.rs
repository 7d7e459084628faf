//! `crm-sim`: a stand-in for the customer's CRM that can be told to fail.
//!
//! It serves the downstream contract of `docs/design.md` (customer lookup, case
//! creation with `Idempotency-Key`) on one port and an admin API on another,
//! through which tests load customers, switch failure modes (down, hang,
//! error, slow, throttle, flap, reject), read the ledger of created cases and
//! trigger signed change webhooks. Once both ports are bound it prints one
//! line to stdout:
//!
//! ```text
//! crm-sim listening api=http://127.0.0.1:PORT admin=http://127.0.0.1:PORT
//! ```
//!
//! Logs go to stderr (`RUST_LOG` filters them). SIGTERM or SIGINT stop it
//! with exit status 0.

#[path = "../sim/mod.rs"]
mod sim;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();

    let args = sim::config::Args::parse();
    match sim::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(%err, "crm-sim stopped on an error");
            ExitCode::FAILURE
        }
    }
}
