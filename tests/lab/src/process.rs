//! Child processes of the local stack, started on ephemeral loopback ports
//! and stopped by PID when dropped, even when a test panics.
//!
//! Each failsoft program prints one line on stdout once it listens (e.g.
//! `failsoft-edge listening http://127.0.0.1:PORT`); [`Service::start`]
//! waits for it, bounded, so nobody polls a port that is not open yet.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// How long a program may take to print its listening line.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The latest stdout lines after the listening line a [`Service`] keeps
/// (e.g. the worker's metric lines), so a long run holds bounded memory.
pub const KEPT_LINES: usize = 1_000;

/// A running child process, killed on drop.
pub struct Service {
    name: String,
    child: Child,
    /// The `key=url` pairs of its listening line (`url` for a lone URL).
    pub urls: HashMap<String, String>,
    /// The latest [`KEPT_LINES`] stdout lines after the listening line.
    later: Arc<Mutex<VecDeque<String>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("{0} not found at {1}: run `cargo build --workspace --bins` first")]
    MissingBinary(String, PathBuf),
    #[error("{0} could not start: {1}")]
    Spawn(String, std::io::Error),
    #[error("{0} exited or printed nothing within {1:?}; its stderr is above")]
    NoListeningLine(String, Duration),
}

/// The directory holding this workspace's binaries: the one the running
/// executable is in (or its parent, for test executables in `deps/` and
/// examples in `examples/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

impl Service {
    /// Starts `program` from [`bin_dir`] with `args` and `env`, and waits
    /// for its listening line.
    pub fn start(program: &str, args: &[&str], env: &[(&str, String)]) -> Result<Self, StackError> {
        let path = bin_dir().join(program);
        if !path.exists() {
            return Err(StackError::MissingBinary(program.to_owned(), path));
        }
        Self::start_command(program, Command::new(path).args(args).envs(env.iter().map(|(k, v)| (k, v))))
    }

    /// Starts a prepared command and waits for its listening line.
    pub fn start_command(name: &str, command: &mut Command) -> Result<Self, StackError> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| StackError::Spawn(name.to_owned(), e))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        let later = Arc::new(Mutex::new(VecDeque::new()));
        let kept = Arc::clone(&later);
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                tx.send(line).ok();
            }
            // Keep draining so the child never blocks on a full pipe.
            for line in lines.map_while(Result::ok) {
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                if kept.len() == KEPT_LINES {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
        let mut service = Self { name: name.to_owned(), child, urls: HashMap::new(), later };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => {
                service.urls = parse_listening_line(&line);
                Ok(service)
            }
            Err(_) => Err(StackError::NoListeningLine(name.to_owned(), START_TIMEOUT)),
        }
    }

    /// The URL named `key` in the listening line (`url` for a lone URL).
    pub fn url(&self, key: &str) -> &str {
        self.urls.get(key).map(String::as_str).unwrap_or_else(|| panic!("{} printed no {key} URL", self.name))
    }

    /// The stdout lines printed after the listening line so far (the latest
    /// [`KEPT_LINES`]).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.later.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `grace` for an exit, then kills.
    /// Returns whether it exited by itself with status 0.
    pub fn stop(&mut self, grace: Duration) -> bool {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child by its PID; it has not been reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill().ok();
        self.child.wait().ok();
        false
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

/// Parses `name listening a=http://… b=http://…` or `name listening http://…`.
pub fn parse_listening_line(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|word| match word.split_once('=') {
            Some((key, url)) if url.starts_with("http") => Some((key.to_owned(), url.to_owned())),
            None if word.starts_with("http") => Some(("url".to_owned(), word.to_owned())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_line_shapes() {
        let sim = parse_listening_line("crm-sim listening api=http://127.0.0.1:1 admin=http://127.0.0.1:2");
        assert_eq!(sim["api"], "http://127.0.0.1:1");
        assert_eq!(sim["admin"], "http://127.0.0.1:2");
        let edge = parse_listening_line("failsoft-edge listening http://127.0.0.1:3");
        assert_eq!(edge["url"], "http://127.0.0.1:3");
    }
}
