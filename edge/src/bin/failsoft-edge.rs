//! `failsoft-edge`: the Data Action facade as a native HTTP server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use failsoft_edge::config::EdgeConfig;
use failsoft_edge::facade::Facade;
use failsoft_edge::native::kv::{DEFAULT_MAX_BYTES, MIN_MAX_BYTES};
use failsoft_edge::native::outbox::{self, Limits};
use failsoft_edge::native::{
    LocalQueue, MemoryKv, NativeOutbox, ReqwestDownstream, SystemClock, WithoutSqs, router, serve, spawn_stats_reporter,
};
use failsoft_edge::outbox::WithOutbox;
use failsoft_edge::sqs::{NoQueue, SqsForwarder, SqsOr, SqsSettings};
use metrics_exporter_prometheus::PrometheusBuilder;

/// The failsoft Data Action facade (native host). Settings come from
/// `FAILSOFT_*` environment variables; see the README.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, env = "FAILSOFT_LISTEN", default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// Development only: without FAILSOFT_QUEUE_URL, keep writes in an
    /// in-process queue that nothing drains (they are lost when the process
    /// stops). Without this flag and without a queue, writes are answered
    /// NOT_ACCEPTED.
    #[arg(long, env = "FAILSOFT_DEV_LOCAL_QUEUE")]
    dev_local_queue: bool,
    /// Capacity of the development in-process queue.
    #[arg(long, env = "FAILSOFT_LOCAL_QUEUE_CAPACITY", default_value_t = 10_000)]
    local_queue_capacity: usize,
    /// The in-memory KV's cap in bytes (cached records, write results, the
    /// breaker): past it the least recently used entries are evicted.
    #[arg(long, env = "FAILSOFT_KV_MAX_BYTES", default_value_t = DEFAULT_MAX_BYTES, value_parser = kv_max_bytes)]
    kv_max_bytes: usize,
    /// A directory for the write outbox's journal: a write SQS does not take
    /// within half its share of the deadline is kept there (fsynced) and
    /// answered PENDING, then sent on when SQS answers again, also after a
    /// restart. Unset: such a write is answered NOT_ACCEPTED.
    #[arg(long, env = "FAILSOFT_OUTBOX_DIR")]
    outbox_dir: Option<PathBuf>,
    /// The outbox's cap on waiting writes; past it, NOT_ACCEPTED as without one.
    #[arg(long, env = "FAILSOFT_OUTBOX_MAX_ENTRIES", default_value_t = outbox::DEFAULT_MAX_ENTRIES,
          value_parser = clap::value_parser!(u64).range(1..))]
    outbox_max_entries: u64,
    /// The outbox's cap on the waiting writes' bytes.
    #[arg(long, env = "FAILSOFT_OUTBOX_MAX_BYTES", default_value_t = outbox::DEFAULT_MAX_BYTES,
          value_parser = clap::value_parser!(u64).range(1024..))]
    outbox_max_bytes: u64,
    /// The CRM mapping as a file (TOML, or JSON): read at start and taken
    /// as `FAILSOFT_CRM_MAPPING`, the document itself (`deploy/crm/`).
    #[arg(long, env = "FAILSOFT_CRM_MAPPING_FILE")]
    crm_mapping_file: Option<PathBuf>,
}

/// `FAILSOFT_KV_MAX_BYTES`: a whole number of bytes, at least
/// [`MIN_MAX_BYTES`]; the message names the setting (clap adds the flag).
fn kv_max_bytes(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(bytes) if bytes >= MIN_MAX_BYTES => Ok(bytes),
        _ => Err(format!(
            "FAILSOFT_KV_MAX_BYTES must be a whole number of bytes, at least {MIN_MAX_BYTES} (1 MiB); the default \
             is {DEFAULT_MAX_BYTES} (256 MiB)"
        )),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("FAILSOFT_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let mapping = match args.crm_mapping_file.as_deref().map(std::fs::read_to_string).transpose() {
        Ok(text) => text,
        Err(e) => {
            eprintln!("failsoft-edge: invalid configuration: FAILSOFT_CRM_MAPPING_FILE: {e}");
            return ExitCode::from(2);
        }
    };
    let env = |name: &str| match (name, &mapping) {
        ("FAILSOFT_CRM_MAPPING", Some(text)) => Some(text.clone()),
        _ => std::env::var(name).ok(),
    };
    let (config, sqs) = match EdgeConfig::from_lookup(env).and_then(|c| Ok((c, SqsSettings::from_lookup(env)?))) {
        Ok(read) => read,
        Err(e) => {
            eprintln!("failsoft-edge: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let metrics = match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("failsoft-edge: metrics: {e}");
            return ExitCode::FAILURE;
        }
    };
    let http = ReqwestDownstream::new();
    match (&sqs, args.dev_local_queue) {
        (Some(settings), _) => tracing::info!(queue = %settings.queue_url, "forwarding to SQS"),
        (None, true) => eprintln!(
            "failsoft-edge: DEVELOPMENT ONLY: no FAILSOFT_QUEUE_URL; writes answered PENDING go to an in-process \
             queue that nothing drains and are lost when this process stops"
        ),
        (None, false) => eprintln!(
            "failsoft-edge: no FAILSOFT_QUEUE_URL: writes the CRM does not take at once are answered NOT_ACCEPTED \
             (set FAILSOFT_QUEUE_URL, or --dev-local-queue for development)"
        ),
    }
    let without_sqs = || match args.dev_local_queue {
        true => WithoutSqs::DevLocalQueue(Arc::new(LocalQueue::new(args.local_queue_capacity))),
        false => WithoutSqs::Refuse(NoQueue),
    };
    let outbox = match (&args.outbox_dir, &sqs) {
        (Some(dir), Some(_)) => {
            let limits = Limits { max_entries: args.outbox_max_entries, max_bytes: args.outbox_max_bytes };
            match NativeOutbox::open(dir, limits) {
                Ok((outbox, replayed)) => {
                    tracing::info!(dir = %dir.display(), waiting = replayed.entries, corrupt = replayed.corrupt, "write outbox open");
                    Some(outbox)
                }
                Err(e) => {
                    eprintln!("failsoft-edge: FAILSOFT_OUTBOX_DIR: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        (Some(_), None) => {
            eprintln!(
                "failsoft-edge: FAILSOFT_OUTBOX_DIR is set without FAILSOFT_QUEUE_URL: the outbox has nowhere to send"
            );
            return ExitCode::from(2);
        }
        (None, _) => None,
    };
    let drain_to = sqs.clone().map(|settings| SqsForwarder::new(settings, http.clone(), SystemClock));
    let queue = SqsOr::new(sqs, http.clone(), SystemClock, without_sqs);
    let forwarder = WithOutbox { queue, store: outbox.clone() };
    let facade =
        Arc::new(Facade::new(config, MemoryKv::with_max_bytes(args.kv_max_bytes), http, forwarder, SystemClock));
    if let (Some(outbox), Some(drain_to)) = (outbox, drain_to) {
        let facade = facade.clone();
        outbox.spawn_drain(drain_to, move |message, code| {
            let facade = facade.clone();
            async move { facade.record_refused_write(&message, code).await }
        });
    }
    spawn_stats_reporter(facade.clone());
    match serve(args.listen, router(facade, metrics)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("failsoft-edge: {e}");
            ExitCode::FAILURE
        }
    }
}
