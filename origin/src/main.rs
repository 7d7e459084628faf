//! `failsoft`: the origin's worker and operator tool, as the container
//! image ships it. The lab's commands are `failsoft-lab` (tests/lab).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use failsoft_origin::config::{DlqConfig, WorkerConfig};
use failsoft_origin::dead_letter::tool::{self, DlqCommand};
use failsoft_origin::notifications::{self, NotificationSettings};
use failsoft_origin::sync::command::{SyncCommand, SyncConfig};
use failsoft_origin::{sync, worker};
use failsoft_shared::config::ConfigError;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: each delivery allocates and frees
/// thousands of small buffers (SDK requests, signatures, JSON). In three
/// paired `make bench-worker` runs (10,000 writes) the worker used 0.343 ms
/// of CPU per message with it, 0.379 ms with glibc's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "failsoft: a self-healing integration layer between Genesys Cloud and your CRM")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Deliver queued work to the CRM: retries with backoff, dead-letters
    /// what cannot be delivered, serves the results API. Settings come from
    /// FAILSOFT_* environment variables (see README.md).
    Worker,
    /// Consume the Genesys Cloud Notification Service (WebSocket) and queue
    /// every event; reconnects, renews the channel and the token by itself.
    /// Settings: GENESYS_* and FAILSOFT_NOTIFICATION_* (see README.md).
    Notifications {
        /// Serve /metrics and /healthz here (port 0 picks one).
        #[arg(long, env = "FAILSOFT_NOTIFICATIONS_METRICS_ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// Copy every customer the CRM knows into the last-known store (the
    /// DynamoDB last-known table and every edge's KV), so that no known
    /// customer is answered `default` during an outage. Without --once or
    /// --from-file: a pass every FAILSOFT_SYNC_INTERVAL_SECS until stopped
    /// (the worker runs the same schedule itself when
    /// FAILSOFT_CACHE_KEY_SECRET is set).
    Sync {
        /// One pass now, with a progress bar; its report goes to stdout.
        #[arg(long)]
        once: bool,
        /// A full pass even when a delta would do.
        #[arg(long, requires = "once")]
        full: bool,
        /// Read this JSON Lines export (the list's records, one per line)
        /// instead of the CRM, stamped with the file's modification time.
        #[arg(long, value_name = "PATH", conflicts_with_all = ["once", "full"])]
        from_file: Option<PathBuf>,
    },
    /// Test the CRM mapping: run each of its operations once against the
    /// CRM (FAILSOFT_CRM_URL, FAILSOFT_CRM_PROFILE or FAILSOFT_CRM_MAPPING[_FILE]
    /// and the secrets it names) and print what failsoft read. Exits 1 when
    /// an operation did not answer as the mapping expects.
    Crm {
        #[command(subcommand)]
        command: CrmArgs,
    },
    /// Inspect and replay the dead-letter queue.
    Dlq {
        /// How long the tool holds what it receives (hidden from others),
        /// renewed while it works; handed back when it is done. Overrides
        /// FAILSOFT_DLQ_HOLD_SECS (default 30, 2 to 43200).
        #[arg(long, global = true, value_name = "SECS")]
        hold_secs: Option<u32>,
        #[command(subcommand)]
        command: DlqArgs,
    },
}

#[derive(Subcommand)]
enum CrmArgs {
    /// The probe, a lookup of a number no one has, a lookup of --phone, a
    /// case search for a new reference; with --create-case, a case too.
    Check {
        /// A customer's number the CRM has, to see a found lookup.
        #[arg(long)]
        phone: Option<String>,
        /// Also create a real case (its subject says it is a test), then
        /// find it by its reference.
        #[arg(long)]
        create_case: bool,
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
    /// Show one dead letter (by correlationId or message id), its body with
    /// the customer's data redacted.
    Show {
        id: String,
        /// Print the body whole: phone numbers, subjects, free text.
        #[arg(long)]
        reveal: bool,
    },
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
        Command::Worker => {
            let config = match WorkerConfig::from_lookup(env) {
                Ok(c) => c,
                Err(e) => return config_error(e),
            };
            init_logs();
            match runtime.block_on(worker::run(config)) {
                Err(e) if e.is_config() => {
                    eprintln!("failsoft: {e}");
                    return ExitCode::from(2);
                }
                other => other.map_err(Into::into),
            }
        }
        Command::Notifications { metrics_addr } => {
            let settings = match NotificationSettings::from_lookup(env) {
                Ok(s) => s,
                Err(e) => return config_error(e),
            };
            init_logs();
            runtime.block_on(notifications::run(settings, metrics_addr)).map_err(Into::into)
        }
        Command::Sync { once, full, from_file } => {
            let config = match SyncConfig::from_lookup(env, from_file.is_some()) {
                Ok(c) => c,
                Err(e) => return config_error(e),
            };
            init_logs();
            let command = match (from_file, once) {
                (Some(path), _) => SyncCommand::FromFile(path),
                (None, true) => SyncCommand::Once { full },
                (None, false) => SyncCommand::Serve,
            };
            runtime.block_on(sync::command::run(config, command))
        }
        Command::Crm { command: CrmArgs::Check { phone, create_case } } => {
            let config = match failsoft_origin::crm_check::CheckConfig::from_lookup(&env) {
                Ok(c) => c,
                Err(e) => return config_error(e),
            };
            let args = failsoft_origin::crm_check::CheckArgs { phone, create_case };
            match runtime.block_on(failsoft_origin::crm_check::run(config, args)) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::FAILURE,
                Err(e) => Err(e),
            }
        }
        Command::Dlq { hold_secs, command } => {
            let lookup = |name: &str| match (name, hold_secs) {
                ("FAILSOFT_DLQ_HOLD_SECS", Some(secs)) => Some(secs.to_string()),
                _ => env(name),
            };
            let config = match DlqConfig::from_lookup(lookup) {
                Ok(c) => c,
                Err(e) => return config_error(e),
            };
            init_logs();
            let command = match command {
                DlqArgs::List { max } => DlqCommand::List { max },
                DlqArgs::Show { id, reveal } => DlqCommand::Show { id, reveal },
                DlqArgs::Replay { ids, all, edit } => DlqCommand::Replay { ids, all, edit },
                DlqArgs::Purge { yes } => DlqCommand::Purge { yes },
            };
            runtime.block_on(tool::run(config, command)).map_err(Into::into)
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
