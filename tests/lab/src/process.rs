//! Child processes of the local stack and the tests, started on ephemeral
//! loopback ports and stopped by PID (their whole process group) when
//! dropped, even when a test panics: the one way every test, the lab and
//! the benchmarks start, wait for and stop a program.
//!
//! Each failsoft program prints one line on stdout once it listens (e.g.
//! `failsoft-edge listening http://127.0.0.1:PORT`); [`Service::start`]
//! waits for it, bounded, so nobody polls a port that is not open yet.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// How long a program may take to print its listening line.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The latest stdout lines after the listening line a [`Service`] keeps
/// (e.g. the worker's metric lines), so a long run holds bounded memory.
pub const KEPT_LINES: usize = 1_000;

/// A running child process, leading its own process group, which is
/// stopped as one (wrangler's workerd with it) when dropped.
pub struct Service {
    name: String,
    child: Child,
    /// The `key=url` pairs of its listening line (`url` for a lone URL).
    pub urls: HashMap<String, String>,
    /// The latest [`KEPT_LINES`] lines it printed after it was ready (with
    /// [`Ready::UrlAfter`], stderr's too, and everything before).
    later: Arc<Mutex<VecDeque<String>>>,
    /// Whether a failing test is shown what it printed.
    show_on_panic: bool,
}

/// How a started program says it is ready.
#[derive(Debug, Clone, Copy)]
pub enum Ready {
    /// Its first stdout line, `name listening key=url …` (failsoft's own
    /// programs); its stderr goes to the caller's.
    ListeningLine,
    /// A line on stdout or stderr holding this marker, its URL after it
    /// (`wrangler dev`'s "Ready on ", `wasmtime serve`'s "Serving HTTP on ").
    /// Both streams are kept, and shown when a test fails.
    UrlAfter(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("{0} not found at {1}: run `cargo build --workspace --bins` first")]
    MissingBinary(String, PathBuf),
    #[error("{0} could not start: {1}")]
    Spawn(String, std::io::Error),
    #[error("{0} exited or printed nothing within {1:?}; its stderr is above")]
    NoListeningLine(String, Duration),
    #[error("{0} was not ready within {1:?}; it printed:\n{2}")]
    NotReady(String, Duration, String),
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

fn push_bounded(lines: &Mutex<VecDeque<String>>, line: String) {
    let mut kept = lines.lock().unwrap_or_else(|e| e.into_inner());
    if kept.len() == KEPT_LINES {
        kept.pop_front();
    }
    kept.push_back(line);
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
        Self::launch(name, command, Ready::ListeningLine, START_TIMEOUT)
    }

    /// Starts a prepared command in a process group of its own and waits,
    /// at most `within`, until it says it is [`Ready`].
    pub fn launch(name: &str, command: &mut Command, ready: Ready, within: Duration) -> Result<Self, StackError> {
        let stderr = match ready {
            Ready::ListeningLine => Stdio::inherit(),
            Ready::UrlAfter(_) => Stdio::piped(),
        };
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|e| StackError::Spawn(name.to_owned(), e))?;
        let later = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel::<HashMap<String, String>>();
        let streams: Vec<Box<dyn Read + Send>> = [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .collect();
        for stream in streams {
            let (kept, tx) = (Arc::clone(&later), tx.clone());
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stream).lines().map_while(Result::ok);
                if let Ready::ListeningLine = ready
                    && let Some(line) = lines.next()
                {
                    tx.send(parse_listening_line(&line)).ok();
                }
                // Keep draining so the child never blocks on a full pipe.
                for line in lines {
                    if let Ready::UrlAfter(marker) = ready
                        && let Some((_, url)) = line.split_once(marker)
                    {
                        let url = url.trim().trim_end_matches('/').to_owned();
                        tx.send(HashMap::from([("url".to_owned(), url)])).ok();
                    }
                    push_bounded(&kept, line);
                }
            });
        }
        drop(tx);
        let show_on_panic = matches!(ready, Ready::UrlAfter(_));
        let mut service = Self { name: name.to_owned(), child, urls: HashMap::new(), later, show_on_panic };
        match rx.recv_timeout(within) {
            Ok(urls) => {
                service.urls = urls;
                Ok(service)
            }
            Err(_) if show_on_panic => Err(StackError::NotReady(name.to_owned(), within, service.output())),
            Err(_) => Err(StackError::NoListeningLine(name.to_owned(), within)),
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

    /// Everything kept of what it printed, one line each.
    pub fn output(&self) -> String {
        let mut text = self.stdout_lines().join("\n");
        text.push('\n');
        text
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited (and with what).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn signal_group(&self, signal: libc::c_int) {
        let group = self.child.id() as libc::pid_t;
        // SAFETY: signalling the process group our own child leads; the
        // child is not reaped yet, so the group id is still its own.
        unsafe { libc::kill(-group, signal) };
    }

    /// Sends SIGTERM to its group and returns at once.
    pub fn terminate(&self) {
        self.signal_group(libc::SIGTERM);
    }

    /// Sends SIGTERM to its group and waits up to `grace` for it to exit,
    /// then kills the group. Returns whether it exited by itself with
    /// status 0.
    pub fn stop(&mut self, grace: Duration) -> bool {
        self.signal_group(libc::SIGTERM);
        let deadline = std::time::Instant::now() + grace;
        let mut clean = false;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                clean = status.success();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever is left of the group (workerd outlives a slow wrangler).
        self.signal_group(libc::SIGKILL);
        self.child.wait().ok();
        clean
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.show_on_panic && std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.name, self.output());
        }
        // Before the reap, so the group id cannot have been reused.
        self.signal_group(libc::SIGKILL);
        self.child.wait().ok();
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
