//! `failsoft-lab`: the local stack, the outage drill and the demo. Never
//! part of the production image (that is `failsoft`, from `origin/`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use failsoft_lab::{demo, drill, init_local, local_stack};

#[derive(Parser)]
#[command(version, about = "failsoft-lab: failsoft's local stack, outage drill and demo, on loopback")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the CRM simulator and the native facade on loopback and show
    /// what Genesys is answered while the CRM is up, down, hung and back.
    Demo,
    /// The outage drill: start the local stack, drive Genesys-like traffic
    /// through a CRM outage, report, and exit non-zero if a promise broke.
    Drill(Box<drill::DrillArgs>),
    /// Start the whole local stack on loopback, detached; writes
    /// .local/stack.env and .local/stack.pids.
    Up(local_stack::UpArgs),
    /// Stop what `failsoft-lab up` started, by PID.
    Down(local_stack::DownArgs),
    /// Create the stack of deploy/aws/failsoft.yaml in the moto server
    /// AWS_ENDPOINT_URL names (idempotent); prints FAILSOFT_QUEUE_URL=…,
    /// FAILSOFT_DLQ_URL=…, the tables and the identities' keys.
    InitLocal,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("failsoft-lab: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = match cli.command {
        Command::Demo => runtime.block_on(demo::run()),
        Command::Drill(args) => return runtime.block_on(drill::main(*args)),
        Command::Up(args) => return runtime.block_on(local_stack::up(args)),
        Command::Down(args) => return local_stack::down(args),
        Command::InitLocal => runtime.block_on(async {
            let stack = init_local::run(|name| std::env::var(name).ok()).await?;
            print!("{}", init_local::printed(&stack)?);
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("failsoft-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}
