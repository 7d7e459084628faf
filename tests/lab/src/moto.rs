//! moto's server (SQS, DynamoDB, IAM and CloudFormation on loopback): the
//! one launcher. [`command`] is how the local stack runs it (in its own
//! session, logging to a file); [`MotoServer`] runs it as a child for the
//! tests and the benchmark, on a free port, killed by PID when dropped, even
//! when a test panics. With [`Auth::Iam`] it enforces IAM, and
//! [`crate::aws_stack`] creates the stack from the template in it.
//!
//! It runs through `moto_fifo.py`, which makes moto's FIFO queues keep four
//! promises of SQS (see there): a receive never hands out a group's
//! messages out of order, a deduplication id is refused for its whole
//! 5-minute interval, even by two sends at once or after a delete, a long
//! poll waiting behind locked groups costs no CPU, and a delete unlocks its
//! group for a poll already waiting. The worker's order
//! tests, the drill's one-refresh-per-window count and its drain would
//! otherwise test moto. `tests/tests/moto_stand_in.rs` checks them. Two
//! more make its IAM check SQS's and DynamoDB's: a batch call is authorised
//! as its single call, a DynamoDB call against its tables' ARNs.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::process::{Ready, Service, StackError, bin_dir};

/// The launcher that fixes moto's FIFO receive (run with `python -c`).
const MOTO_FIFO: &str = include_str!("moto_fifo.py");

/// How long moto may take to import and listen (a few seconds on 2 cores).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum MotoError {
    #[error(
        "moto_server not found: run scripts/setup.sh (it installs .venv/bin/moto_server) or set FAILSOFT_MOTO_SERVER"
    )]
    Missing,
    #[error("moto_server could not start: {0}")]
    Spawn(std::io::Error),
    #[error("moto_server did not say it listens: {0}")]
    NotReady(String),
}

/// A running moto server.
pub struct MotoServer {
    /// Killed with its process group when dropped, even in a panic.
    service: Service,
    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub endpoint: String,
}

/// `FAILSOFT_MOTO_SERVER`, else `.venv/bin/moto_server` beside the binaries
/// or in the checkout ([`crate::local_stack::workspace_root`]), else the one
/// on `PATH`.
pub fn moto_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FAILSOFT_MOTO_SERVER") {
        return Some(PathBuf::from(path));
    }
    // target/debug (or target/debug/deps) → the workspace root.
    let mut dir = bin_dir();
    for _ in 0..4 {
        let candidate = dir.join(".venv/bin/moto_server");
        if candidate.exists() {
            return Some(candidate);
        }
        if !dir.pop() {
            break;
        }
    }
    // A target directory outside the checkout (CI's cache): the checkout's.
    let workspace = crate::local_stack::workspace_root().join(".venv/bin/moto_server");
    if workspace.exists() {
        return Some(workspace);
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join("moto_server")).find(|p| p.exists()))
}

/// Whether moto's server checks IAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Every call is taken, whoever signs it (the edge and moto stand-in
    /// tests, which make their own queues).
    Open,
    /// After [`crate::aws_stack::BOOTSTRAP_CALLS`] unsigned calls (the lab's
    /// bootstrap administrator), every call must be signed by an IAM
    /// identity of moto's and allowed by its policies: moto's
    /// `INITIAL_NO_AUTH_ACTION_COUNT`.
    Iam,
}

/// What moto's server (werkzeug) prints once it has bound its port, the
/// URL after it: ` * Running on http://127.0.0.1:PORT`.
pub const READY_MARKER: &str = "Running on http://";

/// The endpoint in moto's [`READY_MARKER`] line.
pub fn endpoint_in(line: &str) -> Option<String> {
    let (_, rest) = line.split_once(READY_MARKER)?;
    let authority = rest.split_whitespace().next()?.trim_end_matches('/');
    Some(format!("http://{authority}"))
}

/// The one way to run moto: through `moto_fifo.py` when the venv's Python is
/// beside `moto_server` (the FIFO and IAM fixes), listening on a loopback
/// port of the kernel's choosing that it prints ([`READY_MARKER`]), with
/// none of this process's AWS or failsoft settings. (A port picked here and
/// handed over could be taken by another test's process in between, and a
/// connect to it could even reach itself: the readiness check would pass
/// and moto would not be there.)
pub fn command(auth: Auth) -> Result<Command, MotoError> {
    let binary = moto_binary().ok_or(MotoError::Missing)?;
    let python = binary.with_file_name("python");
    let mut command = if python.exists() {
        let mut c = crate::local_stack::clean_command(&python);
        c.args(["-c", MOTO_FIFO]);
        c
    } else {
        crate::local_stack::clean_command(&binary)
    };
    command.args(["-H", "127.0.0.1", "-p", "0"]);
    if auth == Auth::Iam {
        command.env("INITIAL_NO_AUTH_ACTION_COUNT", crate::aws_stack::BOOTSTRAP_CALLS.to_string());
    }
    Ok(command)
}

impl MotoServer {
    /// Starts moto without IAM on a loopback port of its own and waits
    /// (at most [`START_TIMEOUT`]) until it says which.
    pub fn start() -> Result<Self, MotoError> {
        Self::start_with(Auth::Open)
    }

    /// As [`Self::start`], checking IAM with [`Auth::Iam`].
    pub fn start_with(auth: Auth) -> Result<Self, MotoError> {
        let service = Service::launch("moto_server", &mut command(auth)?, Ready::UrlAfter(READY_MARKER), START_TIMEOUT)
            .map_err(|e| match e {
                StackError::Spawn(_, e) => MotoError::Spawn(e),
                other => MotoError::NotReady(other.to_string()),
            })?;
        let endpoint = format!("http://{}", service.url("url"));
        Ok(Self { service, endpoint })
    }

    pub fn pid(&self) -> u32 {
        self.service.pid()
    }
}
