//! `failsoft`: the origin's worker and operator tool.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use failsoft_origin::config::{DlqConfig, InitConfig, WorkerConfig};
use failsoft_origin::dlq_cli::{self, DlqCommand};
use failsoft_origin::notifications::{self, NotificationSettings};
use failsoft_origin::{init_local, worker};
use failsoft_shared::config::ConfigError;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(version, about = "failsoft: a self-healing integration layer between Genesys Cloud and your CRM")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the CRM simulator and the native facade on loopback and show
    /// what Genesys is answered while the CRM is up, down, hung and back.
    Demo,
    /// Deliver queued work to the CRM: retries with backoff, dead-letters
    /// what cannot be delivered, serves the results API. Settings come from
    /// FAILSOFT_* environment variables (see README.md).
    Worker,
    /// Create the queues and tables in the endpoint AWS_ENDPOINT_URL names
    /// (idempotent); prints FAILSOFT_QUEUE_URL=… and FAILSOFT_DLQ_URL=….
    InitLocal,
    /// The outage drill: start the local stack, drive Genesys-like traffic
    /// through a CRM outage, report, and exit non-zero if a promise broke.
    Drill(failsoft_origin::drill::DrillArgs),
    /// Start the whole local stack on loopback, detached; writes
    /// .local/stack.env and .local/stack.pids.
    Up(failsoft_origin::local_stack::UpArgs),
    /// Stop what `failsoft up` started, by PID.
    Down(failsoft_origin::local_stack::DownArgs),
    /// Consume the Genesys Cloud Notification Service (WebSocket) and queue
    /// every event; reconnects, renews the channel and the token by itself.
    /// Settings: GENESYS_* and FAILSOFT_NOTIFICATION_* (see README.md).
    Notifications {
        /// Serve /metrics and /healthz here (port 0 picks one).
        #[arg(long, env = "FAILSOFT_NOTIFICATIONS_METRICS_ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// Inspect and replay the dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: DlqArgs,
    },
}

#[derive(Subcommand)]
enum DlqArgs {
    /// List dead letters with their reasons.
    List {
        /// Read at most this many.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// Show one dead letter (by correlationId or message id), body included.
    Show { id: String },
    /// Re-enqueue dead letters to the work queue, correlationId unchanged.
    Replay {
        /// correlationIds or DLQ message ids.
        ids: Vec<String>,
        /// Replay every dead letter.
        #[arg(long)]
        all: bool,
        /// Replay this envelope (JSON file) instead of the stored body; one id only.
        #[arg(long, value_name = "FILE")]
        edit: Option<PathBuf>,
    },
    /// Delete every dead letter.
    Purge {
        /// Confirm: the messages are gone for good.
        #[arg(long)]
        yes: bool,
    },
}

fn init_logs() {
    let filter = std::env::var("FAILSOFT_LOG").unwrap_or_else(|_| "info".to_owned());
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn config_error(e: ConfigError) -> ExitCode {
    eprintln!("failsoft: invalid setting {e}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // reqwest's TLS uses the provider the AWS SDK builds anyway.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("failsoft: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = match cli.command {
        Command::Demo => runtime.block_on(failsoft_origin::demo::run()),
        Command::Drill(args) => return runtime.block_on(failsoft_origin::drill::main(args)),
        Command::Up(args) => return runtime.block_on(failsoft_origin::local_stack::up(args)),
        Command::Down(args) => return failsoft_origin::local_stack::down(args),
        Command::Worker => {
            let config = match WorkerConfig::from_lookup(env) {
                Ok(c) => c,
                Err(e) => return config_error(e),
            };
            init_logs();
            runtime.block_on(worker::run(config)).map_err(Into::into)
        }
        Command::Notifications { metrics_addr } => {
            let settings = match NotificationSettings::from_lookup(env) {
                Ok(s) => s,
                Err(e) => return config_error(e),
            };
            init_logs();
            runtime.block_on(notifications::run(settings, metrics_addr)).map_err(Into::into)
        }
        Command::InitLocal => {
            let config = match InitConfig::from_lookup(env) {
                Ok(c) => c,
                Err(e) => return config_error(e),
            };
            init_logs();
            runtime.block_on(async {
                let created = init_local::run(&config).await?;
                println!("FAILSOFT_QUEUE_URL={}", created.queue_url);
                println!("FAILSOFT_DLQ_URL={}", created.dlq_url);
                println!("FAILSOFT_RESULTS_TABLE={}", config.tables.results);
                println!("FAILSOFT_LAST_KNOWN_TABLE={}", config.tables.last_known);
                Ok(())
            })
        }
        Command::Dlq { command } => {
            let config = match DlqConfig::from_lookup(env) {
                Ok(c) => c,
                Err(e) => return config_error(e),
            };
            init_logs();
            let command = match command {
                DlqArgs::List { max } => DlqCommand::List { max },
                DlqArgs::Show { id } => DlqCommand::Show { id },
                DlqArgs::Replay { ids, all, edit } => DlqCommand::Replay { ids, all, edit },
                DlqArgs::Purge { yes } => DlqCommand::Purge { yes },
            };
            runtime.block_on(dlq_cli::run(config, command)).map_err(Into::into)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("failsoft: {e:#}");
            ExitCode::FAILURE
        }
    }
}
