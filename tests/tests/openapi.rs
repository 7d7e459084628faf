//! The facade's OpenAPI description (docs/openapi/facade.yaml) against the
//! running native host, checked by schemathesis (installed in .venv by
//! `scripts/setup.sh python`): generated requests for every operation,
//! valid and invalid, and every answer must be no 5xx, a documented status,
//! the documented content type and a body of the documented schema; a
//! request that breaks the description must be refused.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::process::Command;

use failsoft_lab::local_stack::workspace_root;
use failsoft_tests::{AUTH_TOKEN, Stack};

const INTERNAL_SECRET: &str = "test-only-internal-secret-0000";
/// Generated cases per operation: enough to reach every documented refusal
/// of each route, few enough for `make test` (about 30 s).
const EXAMPLES_PER_OPERATION: &str = "25";
/// The whole run's bound.
const RUN_LIMIT: Duration = Duration::from_secs(300);

fn schemathesis() -> PathBuf {
    let path = workspace_root().join(".venv/bin/schemathesis");
    assert!(path.exists(), "{} is missing: run scripts/setup.sh python", path.display());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_host_answers_as_its_openapi_description_says() {
    // The internal routes exist only with the internal secret: with it,
    // schemathesis's unsigned requests meet their documented 401.
    let stack = Stack::start_with(&[("FAILSOFT_INTERNAL_SECRET", INTERNAL_SECRET)]).await;
    let docs = workspace_root().join("docs/openapi");
    // Hypothesis and schemathesis keep state in their working directory.
    let scratch = std::env::temp_dir().join(format!("failsoft-openapi-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("a scratch directory");
    let mut command = Command::new(schemathesis());
    command
        .kill_on_drop(true)
        .current_dir(&scratch)
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(docs.join("schemathesis.toml"))
        .arg("run")
        .arg(docs.join("facade.yaml"))
        .args(["--url", stack.edge_url()])
        .args(["--header", &format!("Authorization: Bearer {AUTH_TOKEN}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection",
        ])
        .args(["--max-examples", EXAMPLES_PER_OPERATION, "--seed", "20261207", "--workers", "1"])
        .args(["--max-response-time", "2", "--request-timeout", "10", "--generation-database", "none"])
        .arg("--no-color");
    let started = Instant::now();
    let output = tokio::time::timeout(RUN_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis ran past {RUN_LIMIT:?}"))
        .expect("schemathesis runs");
    let _ = std::fs::remove_dir_all(&scratch);
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "schemathesis found answers the description does not allow:\n{text}");
    // A run that tested nothing would pass too: every operation is tested,
    // with hundreds of generated cases in all.
    assert!(text.contains("Tested: 9"), "not every operation was tested:\n{text}");
    // "  610 generated, 0 found ..." (or "610 generated" alone).
    let generated = text
        .lines()
        .filter_map(|line| line.trim().split_once(" generated"))
        .find_map(|(n, _)| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(generated >= 100, "only {generated} cases generated:\n{text}");
    println!("schemathesis: {generated} cases, 9 operations, {:.1} s", started.elapsed().as_secs_f64());
}
