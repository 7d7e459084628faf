//! `failsoft`: the origin's operator tool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("failsoft: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Demo => runtime.block_on(failsoft_origin::demo::run()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("failsoft: {e:#}");
            ExitCode::FAILURE
        }
    }
}
