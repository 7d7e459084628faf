//! Start-up refuses a configuration that would break a promise, with exit
//! status 2 and the name of the setting on stderr.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use failsoft_tests::harness::{base_edge_env, program};

/// How long a refused start may take before the test gives up on it.
const EXIT_WITHIN: Duration = Duration::from_secs(20);

/// Runs `failsoft-edge` with the suite's settings changed by `changes`
/// (an empty value removes a setting); returns its exit code and stderr.
fn run_edge(changes: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = program("failsoft-edge");
    command.args(["--listen", "127.0.0.1:0"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    // The CRM is never called: the process must stop before serving.
    for (key, value) in base_edge_env("http://127.0.0.1:9") {
        command.env(key, value);
    }
    for (key, value) in changes {
        if value.is_empty() {
            command.env_remove(key);
        } else {
            command.env(key, value);
        }
    }
    let mut child = command.spawn().expect("failsoft-edge spawns (run `cargo build --workspace --bins`)");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait on failsoft-edge") {
            break status;
        }
        if started.elapsed() > EXIT_WITHIN {
            child.kill().ok();
            child.wait().ok();
            panic!("failsoft-edge with {changes:?} was still running after {EXIT_WITHIN:?}: it accepted the config");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child.stderr.take().expect("stderr is piped").read_to_string(&mut stderr).ok();
    (status.code(), stderr)
}

#[test]
fn start_up_refuses_a_bad_configuration_naming_the_setting() {
    let cases: [(&[(&str, &str)], &str); 7] = [
        (&[("FAILSOFT_CRM_DEADLINE_MS", "9500")], "FAILSOFT_CRM_DEADLINE_MS"),
        (&[("FAILSOFT_AUTH_TOKEN", "")], "FAILSOFT_AUTH_TOKEN"),
        (&[("FAILSOFT_WEBHOOK_SECRET", "short")], "FAILSOFT_WEBHOOK_SECRET"),
        (&[("FAILSOFT_CRM_URL", "")], "FAILSOFT_CRM_URL"),
        (
            &[("FAILSOFT_CRM_DEADLINE_MS", "2000"), ("FAILSOFT_BREAKER_PROBE_TIMEOUT_MS", "1000")],
            "FAILSOFT_BREAKER_PROBE_TIMEOUT_MS",
        ),
        (&[("FAILSOFT_KV_MAX_BYTES", "65536")], "FAILSOFT_KV_MAX_BYTES"),
        (&[("FAILSOFT_KV_MAX_BYTES", "256MiB")], "FAILSOFT_KV_MAX_BYTES"),
    ];
    for (changes, setting) in cases {
        let (code, stderr) = run_edge(changes);
        assert_eq!(code, Some(2), "{changes:?}: exit status (stderr: {stderr})");
        assert!(stderr.contains(setting), "{changes:?}: stderr names {setting}: {stderr}");
    }
}
