//! `failsoft-edge`: the Data Action facade as a native HTTP server.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use failsoft_edge::config::EdgeConfig;
use failsoft_edge::facade::Facade;
use failsoft_edge::native::{
    LocalQueue, MemoryKv, NativeForwarder, ReqwestDownstream, SystemClock, router, serve, spawn_stats_reporter,
};
use failsoft_edge::sqs::SqsSettings;
use metrics_exporter_prometheus::PrometheusBuilder;

/// The failsoft Data Action facade (native host). Settings come from
/// `FAILSOFT_*` environment variables; see the README.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, env = "FAILSOFT_LISTEN", default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// Capacity of the in-process queue the native host forwards to.
    #[arg(long, env = "FAILSOFT_LOCAL_QUEUE_CAPACITY", default_value_t = 10_000)]
    local_queue_capacity: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("FAILSOFT_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let env = |name: &str| std::env::var(name).ok();
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
    if let Some(settings) = &sqs {
        tracing::info!(queue = %settings.queue_url, "forwarding to SQS");
    }
    let forwarder =
        NativeForwarder::new(sqs, http.clone(), SystemClock, || Arc::new(LocalQueue::new(args.local_queue_capacity)));
    let facade = Arc::new(Facade::new(config, MemoryKv::new(), http, forwarder, SystemClock));
    spawn_stats_reporter(facade.clone());
    match serve(args.listen, router(facade, metrics)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("failsoft-edge: {e}");
            ExitCode::FAILURE
        }
    }
}
