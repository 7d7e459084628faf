//! The Spin component under `wasmtime serve`, one per test: the shipped
//! component with the test shim composed on top (Spin's key-value store in
//! files under a temporary directory mounted at `/kv`, Spin variables from
//! `--env`), on a port the kernel picks, killed by PID when dropped.
//!
//! Build it first: `make spin-test-component`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use failsoft_lab::process::{Ready, Service, bin_dir};

/// How long wasmtime may take to compile the component and listen (a
/// second cold on 2 shared cores; its code cache makes later starts ~0.1 s).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// What wasmtime prints on stderr once it listens, then the URL.
const LISTENING: &str = "Serving HTTP on ";

pub fn workspace_root() -> PathBuf {
    failsoft_lab::local_stack::workspace_root()
}

/// The composed test component `make spin-test-component` writes.
pub fn test_component() -> PathBuf {
    let target = bin_dir().parent().expect("target/debug has a parent").to_path_buf();
    target.join("spin/failsoft-edge-spin-with-shim.wasm")
}

/// A running `wasmtime serve`.
pub struct WasmtimeServe {
    service: Service,
    pub url: String,
    kv_dir: PathBuf,
}

impl WasmtimeServe {
    /// Serves the test component with `env` as its Spin variables, and
    /// waits (bounded) until it listens.
    pub fn start(env: &[(String, String)]) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let component = test_component();
        assert!(component.exists(), "{} is missing: run `make spin-test-component`", component.display());
        let wasmtime = workspace_root().join(".venv/bin/wasmtime");
        assert!(wasmtime.exists(), "{} is missing: run `scripts/setup.sh python`", wasmtime.display());
        let kv_dir = std::env::temp_dir().join(format!(
            "failsoft-spin-kv-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&kv_dir).expect("a directory for the key-value store");

        let mut command = Command::new(&wasmtime);
        command.args(["serve", "--addr", "127.0.0.1:0", "-S", "cli", "--dir"]);
        command.arg(format!("{}::/kv", kv_dir.display()));
        // A later entry wins (wasmtime would keep both); empty means unset,
        // as in spin.toml.
        for (i, (key, value)) in env.iter().enumerate() {
            let overridden = env[i + 1..].iter().any(|(later, _)| later == key);
            if !overridden && !value.is_empty() {
                command.arg("--env").arg(format!("{key}={value}"));
            }
        }
        command.arg(&component);
        let service = Service::launch("wasmtime serve", &mut command, Ready::UrlAfter(LISTENING), START_TIMEOUT)
            .unwrap_or_else(|e| panic!("{}: {e}", wasmtime.display()));
        let url = service.url("url").to_owned();
        Self { service, url, kv_dir }
    }
}

impl WasmtimeServe {
    /// The keys in the key-value store now (the shim's files are named by
    /// the hex of their key; its temporary files are skipped).
    pub fn kv_keys(&self) -> Vec<String> {
        let entries = std::fs::read_dir(&self.kv_dir).expect("the key-value directory");
        entries
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                let bytes: Option<Vec<u8>> = (0..name.len())
                    .step_by(2)
                    .map(|i| name.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                    .collect();
                String::from_utf8(bytes?).ok()
            })
            .collect()
    }
}

impl Drop for WasmtimeServe {
    /// Stops wasmtime (a failing test is shown what the component logged),
    /// then drops the key-value files.
    fn drop(&mut self) {
        self.service.stop(Duration::ZERO);
        std::fs::remove_dir_all(&self.kv_dir).ok();
    }
}
