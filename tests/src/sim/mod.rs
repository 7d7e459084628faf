//! The CRM simulator behind the `crm-sim` binary.
//!
//! [`state::Sim`] holds what the API serves (customers, cases, counters) and
//! the current failure mode; [`api`] answers the downstream contract through a
//! middleware that applies that mode; [`control::Control`] owns the API
//! listener so that `down` can really close the socket; [`admin`] is the
//! test-facing control surface. [`dialect`] serves the same records in a
//! vendor's API shapes instead (`--dialect salesforce|zendesk|hubspot|servicenow`).

pub mod admin;
pub mod api;
pub mod clock;
pub mod config;
pub mod control;
pub mod correlations;
pub mod dialect;
pub mod limit;
pub mod listener;
pub mod mode;
pub mod reply;
pub mod route;
pub mod state;
pub mod stats;
pub mod store;
pub mod tokens;
pub mod webhook;

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

use self::config::Args;
use self::control::Control;
use self::listener::ApiListener;
use self::state::Sim;

/// How long in-flight requests may take to finish once a stop signal arrives.
/// Hanging and slowed requests are released by the signal itself; this bound
/// covers the rest (a webhook in flight, a client slow to read).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Binds both ports, announces them on stdout and serves until SIGTERM/SIGINT.
pub async fn run(args: Args) -> io::Result<()> {
    let sim = Arc::new(Sim::new());
    sim.limiter.set(args.rate_limit().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?);
    let settings = args.dialect_settings().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let router = dialect::router(Arc::clone(&sim), args.dialect, args.contract, settings);
    let api = ApiListener::bind(args.listen, router)?;
    let admin_listener = TcpListener::bind(args.admin_listen).await?;
    let api_addr = api.local_addr();
    let admin_addr = admin_listener.local_addr()?;
    let control = Arc::new(Control::new(Arc::clone(&sim), api)?);

    // Tests parse this line to find the ports; it must be the only stdout output.
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "crm-sim listening api=http://{api_addr} admin=http://{admin_addr}")?;
    stdout.flush()?;
    drop(stdout);
    info!(%api_addr, %admin_addr, "crm-sim ready");

    let mut admin_stop = sim.watch_shutdown();
    let admin = tokio::spawn(
        axum::serve(admin_listener, admin::router(Arc::clone(&control)))
            .with_graceful_shutdown(async move {
                // An error means the sender is gone, which is a stop as well.
                let _ = admin_stop.wait_for(|stopping| *stopping).await;
            })
            .into_future(),
    );

    stop_signal().await;
    info!("stop signal received, shutting down");
    sim.begin_shutdown();
    control.shutdown(SHUTDOWN_GRACE).await;
    match tokio::time::timeout(SHUTDOWN_GRACE, admin).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => warn!(%err, "admin server ended with an error"),
        Ok(Err(err)) => warn!(%err, "admin server task failed"),
        Err(_) => warn!("admin server did not drain in time"),
    }
    Ok(())
}

/// Resolves on SIGINT or, on Unix, SIGTERM (what test harnesses send).
async fn stop_signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            warn!(%err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(err) => {
                warn!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
