//! The outage drill as a real process, and the local stack it runs on.
//!
//! `failsoft-lab drill` runs on the native host and on the Worker host, with the
//! CRM `down` and then `hang`, and must exit 0 with a report whose figures
//! say every promise held and the outage really happened (stale and
//! default answers, queued writes, refreshes). Three drills compress the
//! outage to 30 s at half the rates (5 lookups/s, 1 case/s, 1 poll/s); one,
//! CI's size of `make drill`, runs the default rates for 4 minutes so the
//! backlog passes a thousand messages. A drill whose CRM comes back
//! refusing creates must exit non-zero, naming the dead letters and the
//! lost writes. `failsoft-lab up` and `failsoft-lab down` must leave no
//! process behind. Three compressed drills also cut the edge's path to SQS
//! (`--queue-outage`) for half the CRM's outage (on the native host, from
//! 10 s before it, on its own while the CRM is up): the native edge's
//! journal, the Worker's Durable Object and the Spin component's key-value
//! outbox must keep those writes.
//!
//! Each drill starts its own stack (moto, crm-sim, the worker, an edge);
//! they run one at a time. Needs `cargo build --workspace --bins` and, for
//! the Worker, `make worker`: `make test` does both first.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use failsoft_lab::local_stack::{ENV_FILE, PID_FILE, StackEnv, read_pids};
use failsoft_lab::process::bin_dir;
use serde_json::{Value, json};

/// One stack at a time: each drill runs a whole stack on shared cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
/// A compressed drill takes about a minute; past this it is stuck.
const DRILL_LIMIT: Duration = Duration::from_secs(240);
/// The CI-sized long drill: the default rates (10 lookups/s, 2 cases/s,
/// 1 poll/s, 200 warm customers) and an outage long enough that the queue
/// behind the open breaker passes [`LONG_BACKLOG`] messages (it grows by
/// about 5 a second: writes and refreshes).
const LONG_OUTAGE: &str = "4m";
const LONG_BACKLOG: u64 = 1_000;
/// Its stack, warm-up, 4m20s of traffic and the drain: about 5 minutes.
const LONG_LIMIT: Duration = Duration::from_secs(600);

/// A fresh directory for one test's reports and stack.
fn temp_dir(name: &str) -> PathBuf {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "failsoft-{name}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

/// `failsoft-lab` with none of the machine's failsoft or AWS settings.
fn failsoft(args: &[&str]) -> Command {
    let mut command = Command::new(bin_dir().join("failsoft-lab"));
    for (key, _) in std::env::vars() {
        if key.starts_with("FAILSOFT_") || key.starts_with("AWS_") || key.starts_with("CRM_") {
            command.env_remove(key);
        }
    }
    command.args(args).env("NO_PROXY", "127.0.0.1,localhost").stdin(Stdio::null());
    command
}

/// Runs a command to its end, stopping it (SIGTERM: the drill then stops
/// its stack; SIGKILL half a minute later) if it runs past `limit`.
fn run(mut command: Command, limit: Duration) -> Output {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("failsoft starts");
    let read = |stream: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut stream) = stream {
                let _ = stream.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = read(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let stderr = read(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let mut deadline = Instant::now() + limit;
    let mut terminated = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("failsoft runs") {
            break status;
        }
        if Instant::now() >= deadline {
            if terminated {
                let _ = child.kill();
            } else {
                // SAFETY: signalling our own child, not yet reaped.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                terminated = true;
                deadline = Instant::now() + Duration::from_secs(30);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Output { status, stdout: stdout.join().unwrap_or_default(), stderr: stderr.join().unwrap_or_default() }
}

struct Drill {
    code: i32,
    report: Value,
    stdout: String,
    stderr: String,
    dir: PathBuf,
    took: Duration,
}

impl Drill {
    fn context(&self) -> String {
        format!("exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.code, self.stdout, self.stderr)
    }
}

/// `failsoft-lab drill` with an outage of `outage` at test rates, plus `extra`.
/// The compressed rates of the 30-second drills.
const COMPRESSED: &[&str] =
    &["--lookups-per-sec", "5", "--cases-per-sec", "1", "--polls-per-sec", "1", "--warm-customers", "100"];

fn drill(edge: &str, mode: &str, outage: &str, extra: &[&str]) -> Drill {
    drill_at(edge, mode, outage, COMPRESSED, extra, DRILL_LIMIT)
}

fn drill_at(edge: &str, mode: &str, outage: &str, rates: &[&str], extra: &[&str], limit: Duration) -> Drill {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Relative to the drill's working directory, as `make drill` passes it.
    let work = temp_dir(&format!("drill-{edge}-{mode}"));
    let dir = work.join("report");
    let mut args = vec!["drill", "--edge", edge, "--mode", mode, "--outage", outage];
    args.extend_from_slice(rates);
    args.extend_from_slice(&["--seed", "20261128", "--out", "report"]);
    args.extend_from_slice(extra);
    let started = Instant::now();
    let mut command = failsoft(&args);
    command.current_dir(&work);
    let output = run(command, limit);
    let took = started.elapsed();
    let report = std::fs::read_to_string(dir.join("report.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    let drill = Drill {
        code: output.status.code().unwrap_or(-1),
        report,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        dir,
        took,
    };
    eprintln!(
        "failsoft drill --edge {edge} --mode {mode} --outage {outage} {}: exit {} in {took:.1?}",
        extra.join(" "),
        drill.code
    );
    drill
}

fn stats<'a>(report: &'a Value, phase: &str, kind: &str) -> &'a Value {
    report["phases"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["phase"] == phase && s["kind"] == kind))
        .unwrap_or_else(|| panic!("no {phase} {kind} statistics in {report}"))
}

fn answers(stats: &Value, answer: &str) -> u64 {
    stats["answers"][answer].as_u64().unwrap_or(0)
}

/// A drill that kept every promise, and whose outage did what an outage does.
fn assert_kept(drill: &Drill, mode: &str) {
    let ctx = drill.context();
    let r = &drill.report;
    assert_eq!(drill.code, 0, "the drill must keep every promise\n{ctx}");
    assert_eq!(r["kept"], true, "{ctx}");
    for promise in r["promises"].as_array().expect("promises") {
        // Kept, or not judged in this drill (the breaker-open promise is
        // for `hang` only).
        let hang_only = promise["name"].as_str().is_some_and(|n| n.contains("once the breaker was open"));
        let judged = mode == "hang" || mode == "late" || !hang_only;
        assert_eq!(promise["kept"], if judged { json!(true) } else { Value::Null }, "promise {promise}\n{ctx}");
    }
    for phase in ["before", "outage", "after"] {
        for kind in ["lookup", "case", "poll"] {
            let s = stats(r, phase, kind);
            assert_eq!(s["failed"], 0, "{phase} {kind}: {s}");
        }
    }
    assert_eq!(r["warmUp"]["failed"], 0, "{}", r["warmUp"]);

    // The outage was an outage: stale records for warm callers, defaults
    // for numbers never seen, writes queued, refreshes asked for.
    let outage = stats(r, "outage", "lookup");
    assert!(outage["count"].as_u64().unwrap() >= 100, "{outage}");
    assert!(answers(outage, "stale_cache") > 0, "warm callers get their last-known record: {outage}");
    assert!(answers(outage, "default") > 0, "numbers never seen get the default: {outage}");
    assert_eq!(answers(outage, "live"), 0, "nothing live while the CRM is {mode}: {outage}");
    let cases = stats(r, "outage", "case");
    assert!(answers(cases, "PENDING") >= 20, "writes are queued write-ahead: {cases}");
    assert!(stats(r, "before", "lookup")["answers"]["cache"].as_u64().unwrap_or(0) > 0);

    // Every write once in the CRM, none twice, nothing dead-lettered, and
    // the backlog in within the limit.
    let w = &r["writes"];
    assert!(w["issued"].as_u64().unwrap() >= 40, "{w}");
    assert_eq!(w["deliveredOnce"], w["issued"], "{w}");
    assert_eq!((w["neverDelivered"].as_u64(), w["deliveredMoreThanOnce"].as_u64()), (Some(0), Some(0)), "{w}");
    let drain = w["lastQueuedDeliveryAfterRecoverySecs"].as_f64().expect("queued writes were delivered");
    eprintln!(
        "  {} requests · {} writes, {} queued · drain {drain:.1} s · outage lookup p99 {:.1} ms · breaker-open p99 {:.1} ms",
        r["phases"].as_array().map_or(0, |a| a.iter().filter_map(|s| s["count"].as_u64()).sum::<u64>()),
        w["issued"],
        w["queued"],
        r["outageLatency"]["p99Ms"].as_f64().unwrap_or(0.0),
        r["outageLatency"]["breakerOpenP99Ms"].as_f64().unwrap_or(0.0),
    );
    assert!(drain <= 20.0, "the last queued write {drain} s after recovery");
    assert_eq!(r["queues"]["deadLettered"], 0, "{}", r["queues"]);
    assert_eq!(r["timeline"]["drainComplete"], true);

    // Pre-warmed: no customer the CRM knows was answered default, however
    // new to the edge; every number the CRM does not know was.
    let c = &r["coverage"];
    assert!(c["synced"]["records"].as_u64().unwrap_or(0) >= 100, "the sync before the traffic: {c}");
    assert!(c["knownLookups"].as_u64().unwrap_or(0) > 0 && c["unknownLookups"].as_u64().unwrap_or(0) > 0, "{c}");
    assert_eq!(c["knownDefault"], 0, "{c}");
    assert_eq!(c["unknownDefault"], c["unknownLookups"], "{c}");

    // Warm VIPs stayed VIPs; refreshes were one per customer per window.
    assert!(r["warmVipLookups"].as_u64().unwrap() > 0);
    assert_eq!(r["warmVipMisrouted"], 0);
    let refreshes = &r["refreshes"];
    assert!(refreshes["messages"].as_u64().unwrap() > 0, "{refreshes}");
    assert!(refreshes["maxPerCustomerWindow"].as_u64().unwrap() <= 1, "{refreshes}");

    // The stack's logs (edge, worker, SQS, DynamoDB), the items of its
    // tables and its dead letters hold none of the simulator's phone
    // numbers, in any form.
    let scan = &r["logScan"];
    assert!(scan["files"].as_u64().unwrap_or(0) >= 3, "the edge's, the worker's and moto's logs were read: {scan}");
    assert!(scan["items"].as_u64().unwrap_or(0) >= w["issued"].as_u64().unwrap(), "the tables were read: {scan}");
    assert_eq!(scan["deadLetters"], 0, "the dead-letter queue was read: {scan}");
    assert_eq!(scan["hits"], serde_json::json!({}), "phone numbers in the logs or stored data: {scan}");

    // One correlationId from the Data Action through the queue and the
    // worker to the CRM, for every queued write and refresh.
    let t = &r["traced"];
    assert!(t["queuedWrites"].as_u64().unwrap_or(0) > 0 && t["refreshes"].as_u64().unwrap_or(0) > 0, "{t}");
    assert_eq!((&t["queuedWritesTraced"], &t["refreshesTraced"]), (&t["queuedWrites"], &t["refreshes"]), "{t}");

    // A hung CRM costs at most the deadline, never the Data Action timeout.
    let p99 = r["outageLatency"]["p99Ms"].as_f64().unwrap();
    assert!(p99 < 3_500.0, "lookup p99 over the outage: {p99} ms");
    if mode == "down" {
        assert!(outage["p95Ms"].as_f64().unwrap() < 1_000.0, "a refused connection fails fast: {outage}");
    }

    let html = std::fs::read_to_string(drill.dir.join("report.html")).expect("report.html");
    assert!(html.matches("<svg").count() >= 4 && !html.contains("<script"), "inline SVG charts, no script");
    assert!(drill.dir.join("requests.jsonl").exists());
    // What the edge's SendMessage took, per phase, from each queued
    // write's Server-Timing: none used up its share of the deadline.
    for q in r["queueSends"].as_array().expect("queueSends") {
        assert_eq!((&q["slow"], &q["notAccepted"]), (&Value::from(0), &Value::from(0)), "{q}");
    }
    let outage_sends = r["queueSends"].as_array().and_then(|a| a.iter().find(|q| q["phase"] == "outage"));
    let outage_sends = outage_sends.expect("the outage's sends");
    assert!(outage_sends["sends"].as_u64().unwrap_or(0) >= answers(cases, "PENDING"), "{outage_sends}");
    assert!(outage_sends["p99Ms"].as_f64().unwrap() > 0.0, "{outage_sends}");
    eprintln!(
        "  SendMessage in the outage: {} sends · p50 {:.1} ms · p99 {:.1} ms · max {:.1} ms",
        outage_sends["sends"], outage_sends["p50Ms"], outage_sends["p99Ms"], outage_sends["maxMs"]
    );
}

/// A compressed drill: kept, and quick.
fn assert_kept_compressed(drill: &Drill, mode: &str) {
    assert_kept(drill, mode);
    assert!(drill.took < Duration::from_secs(150), "a compressed drill took {:?}", drill.took);
    let _ = std::fs::remove_dir_all(drill.dir.parent().unwrap_or(&drill.dir));
}

/// Against a CRM with only the two required calls (no case search): every
/// queued write reaches it once, with `Idempotency-Key` as the only guard,
/// and nothing is sent to a route it lacks.
/// The edge's outbox kept writes while the drill cut the edge's path to
/// SQS, and the report judged its drain.
fn assert_outbox_kept_writes(drill: &Drill) {
    let o = &drill.report["outbox"];
    assert!(o["keptInQueueOutage"].as_u64().unwrap_or(0) >= 3, "writes kept while SQS was cut: {o}");
    assert_eq!(o["notAcceptedInQueueOutage"], 0, "{o}");
    let judged = drill.report["promises"]
        .as_array()
        .and_then(|p| p.iter().find(|c| c["name"].as_str().is_some_and(|n| n.contains("outbox drains"))));
    assert_eq!(judged.map(|c| &c["kept"]), Some(&json!(true)), "{o}");
}

/// A CRM with only the two documented calls; the edge's path to SQS refused
/// from the start of the traffic for 25 s: 10 s on its own (the CRM up, its
/// writes created at once), then the first 15 s of the CRM's outage.
#[test]
fn drill_native_down_keeps_every_promise_with_a_two_call_crm() {
    let d = drill(
        "native",
        "down",
        "30s",
        &[
            "--crm-contract",
            "two-call",
            "--before",
            "10s",
            "--queue-outage",
            "25s",
            "--queue-outage-from",
            "before",
            "--queue-outage-mode",
            "refuse",
        ],
    );
    assert_outbox_kept_writes(&d);
    let o = &d.report["outbox"];
    let alone = o["writtenInQueueOutageCrmUp"].as_u64().unwrap_or(0);
    assert!(alone >= 3, "writes while SQS alone was out of reach: {o}");
    assert_eq!(o["completeInQueueOutageCrmUp"].as_u64(), Some(alone), "the CRM took each at once: {o}");
    assert_kept_compressed(&d, "down");
    let traced = &d.report["traced"];
    assert_eq!(traced["caseSearches"], 0, "no GET /cases to a CRM without it: {traced}");
    assert!(traced["queuedWritesTraced"].as_u64().unwrap() >= 20, "{traced}");
}

/// The CI-sized long drill: the default rates, and an outage that builds a
/// backlog of over a thousand messages in moto (IAM enforced), which must
/// drain within the promise like a small one.
#[test]
fn drill_native_hang_at_the_default_rates_drains_a_backlog_of_a_thousand() {
    let d = drill_at("native", "hang", LONG_OUTAGE, &[], &["--before", "10s", "--after", "10s"], LONG_LIMIT);
    assert_kept(&d, "hang");
    let r = &d.report;
    assert_eq!(r["settings"]["rates"]["lookupsPerSec"].as_f64(), Some(10.0), "the default rates");
    let deepest = r["queues"]["maxDepth"].as_u64().unwrap_or(0);
    assert!(deepest >= LONG_BACKLOG, "the backlog reached {deepest} messages, not {LONG_BACKLOG}: {}", r["queues"]);
    eprintln!(
        "  deepest backlog {deepest} messages, drained in {} s",
        r["writes"]["lastQueuedDeliveryAfterRecoverySecs"]
    );
    let _ = std::fs::remove_dir_all(d.dir.parent().unwrap_or(&d.dir));
}

/// The Spin component under `wasmtime serve`, its path to SQS refused for
/// the first half of the CRM's outage: its key-value outbox keeps those
/// writes, and later responses and the origin's drain call send them on.
/// The CRM is Zendesk's API (its simulator), spoken through the `zendesk`
/// profile: `Idempotency-Key` and the search by `external_id` keep writes once.
#[test]
fn drill_spin_down_keeps_every_promise_with_zendesk() {
    let d = drill(
        "spin",
        "down",
        "30s",
        &["--crm-contract", "zendesk", "--queue-outage", "15s", "--queue-outage-mode", "refuse"],
    );
    assert_outbox_kept_writes(&d);
    assert_kept_compressed(&d, "down");
}

/// How many writes the worker found by their reference instead of creating
/// them again (its log's count).
fn found_before_create(drill: &Drill) -> usize {
    let log = std::fs::read_to_string(drill.dir.join("stack/logs/worker.log")).unwrap_or_default();
    log.matches("case found by externalRef; not creating another").count()
}

/// Salesforce (no idempotency key) answering late, on the Worker host with
/// its token in KV: every create the edge gave up on was made, and the
/// worker finds each by its reference before it would create it again. The
/// Worker's path to SQS also hangs for the first half of the CRM's outage:
/// its Durable Object outbox keeps those writes.
#[test]
fn drill_worker_late_keeps_every_promise_with_salesforce_and_its_outbox() {
    let d = drill("worker", "late", "30s", &["--crm-contract", "salesforce", "--queue-outage", "15s"]);
    assert_outbox_kept_writes(&d);
    let found = found_before_create(&d);
    assert_kept_compressed(&d, "late");
    assert!(found >= 1, "the worker found the edge's abandoned creates by their reference: {found}");
}

/// HubSpot (no idempotency key; a unique ticket property) answering late,
/// on the native host.
#[test]
fn drill_native_late_finds_abandoned_writes_with_hubspot() {
    let d = drill("native", "late", "30s", &["--crm-contract", "hubspot"]);
    let found = found_before_create(&d);
    assert_kept_compressed(&d, "late");
    assert!(found >= 1, "the worker found the edge's abandoned creates by their reference: {found}");
}

/// ServiceNow's Table API with OAuth, down for the outage, on the native host.
#[test]
fn drill_native_down_keeps_every_promise_with_servicenow() {
    assert_kept_compressed(&drill("native", "down", "30s", &["--crm-contract", "servicenow"]), "down");
}

/// The CRM comes back refusing every case creation (422): the queued writes
/// are dead-lettered and never reach the ledger. The drill must say so and
/// exit 1.
#[test]
fn drill_exits_non_zero_when_writes_are_dead_lettered() {
    let d = drill(
        "native",
        "down",
        "12s",
        &["--before", "5s", "--after", "5s", "--recover-mode", "reject", "--drain-timeout", "40s"],
    );
    let ctx = d.context();
    assert_eq!(d.code, 1, "a broken promise exits 1\n{ctx}");
    assert_eq!(d.report["kept"], false, "{ctx}");
    let broken: Vec<&str> = d.report["promises"]
        .as_array()
        .expect("promises")
        .iter()
        .filter(|p| p["kept"] == false)
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(broken.contains(&"nothing in the dead-letter queue"), "{broken:?}\n{ctx}");
    assert!(broken.contains(&"no lost write"), "{broken:?}");
    assert!(d.report["queues"]["deadLettered"].as_u64().unwrap() > 0, "{}", d.report["queues"]);
    let dead_letters = d.report["queues"]["deadLettered"].as_u64().unwrap();
    let read = d.report["logScan"]["deadLetters"].as_u64().unwrap_or(0);
    assert!(read > 0 && read <= dead_letters, "the dead letters were read for phone numbers: {}", d.report["logScan"]);
    assert!(d.report["writes"]["neverDelivered"].as_u64().unwrap() > 0, "{}", d.report["writes"]);
    assert!(d.stdout.contains("PROMISE BROKEN"), "{ctx}");
    let _ = std::fs::remove_dir_all(d.dir.parent().unwrap_or(&d.dir));
}

fn pid_gone(pid: u32, start_time: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(text) => {
            let rest = &text[text.rfind(')').unwrap() + 1..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // A zombie has exited (only its parent, init here, has yet to
            // reap it); a different start time is a new process.
            fields[0] == "Z" || fields[19].parse::<u64>().ok() != Some(start_time)
        }
    }
}

/// Runs `failsoft-lab down` when a test ends early, so a failed assertion
/// leaves no stack running.
struct DownOnDrop(String);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = run(failsoft(&["down", "--dir", &self.0]), Duration::from_secs(60));
        }
    }
}

/// `failsoft-lab up --edge native` starts a stack that answers and outlives it;
/// a second `up` refuses; `failsoft-lab down` stops exactly those processes and
/// removes its files.
#[tokio::test(flavor = "multi_thread")]
// The lock serialises whole tests, each on its own thread and runtime; no
// other task of this runtime takes it.
#[allow(clippy::await_holding_lock)]
async fn up_and_down_leave_no_process_behind() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let work = temp_dir("up");
    let dir = work.join("stack");
    let dir_arg = dir.to_string_lossy().into_owned();
    let _down = DownOnDrop(dir_arg.clone());
    // A relative --dir, as `make up` passes `.local`.
    let up = tokio::task::spawn_blocking({
        let work = work.clone();
        move || {
            let mut command = failsoft(&["up", "--edge", "native", "--dir", "stack"]);
            command.current_dir(work);
            run(command, Duration::from_secs(120))
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&up.stdout).into_owned();
    assert!(up.status.success(), "failsoft-lab up: {stdout}\n{}", String::from_utf8_lossy(&up.stderr));

    let recorded = read_pids(&dir).expect("stack.pids");
    let names: Vec<&str> = recorded.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["moto", "crm-sim", "worker", "edge"]);
    assert!(recorded.iter().all(|r| r.alive() && r.pgid == r.pid), "each runs, leading its own group: {recorded:?}");

    let env_path = dir.join(ENV_FILE);
    let env = StackEnv::read(&env_path).expect("stack.env");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&env_path).unwrap().permissions().mode() & 0o777, 0o600, "it holds secrets");
    for key in [
        "FAILSOFT_EDGE_URL",
        "FAILSOFT_AUTH_HEADER",
        "FAILSOFT_ORIGIN_URL",
        "FAILSOFT_OPERATOR_URL",
        "FAILSOFT_QUEUE_URL",
        "FAILSOFT_DLQ_URL",
        "AWS_ENDPOINT_URL",
        "CRM_URL",
        "CRM_ADMIN_URL",
    ] {
        assert!(env.get(key).is_some(), "stack.env has {key}: {env:?}");
    }
    let auth = env.get("FAILSOFT_AUTH_HEADER").unwrap();
    let token = auth.strip_prefix("Bearer ").expect("a bearer header");
    assert!(token.len() >= 32 && !stdout.contains(token), "the token is random and never printed");
    for log in std::fs::read_dir(dir.join("logs")).unwrap().filter_map(Result::ok) {
        let text = std::fs::read_to_string(log.path()).unwrap_or_default();
        assert!(!text.contains(token), "{} holds the token", log.path().display());
    }

    // The stack answers as a load driver would use it.
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
    let admin = env.get("CRM_ADMIN_URL").unwrap();
    let loaded = http
        .post(format!("{admin}/admin/customers"))
        .json(&serde_json::json!([{"phone": "+442079460001", "customerId": "C-1", "tier": "vip"}]))
        .send()
        .await
        .unwrap();
    assert!(loaded.status().is_success());
    let answer: Value = http
        .post(format!("{}/v1/customer-lookup", env.get("FAILSOFT_EDGE_URL").unwrap()))
        .header("authorization", auth)
        .json(&serde_json::json!({"ani": "+442079460001"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((&answer["source"], &answer["tier"]), (&Value::from("live"), &Value::from("vip")), "{answer}");
    let health = http.get(format!("{}/healthz", env.get("FAILSOFT_ORIGIN_URL").unwrap())).send().await.unwrap();
    assert!(health.status().is_success());
    // The operator's surface is on its own listener, not the edge-facing one.
    let operator = env.get("FAILSOFT_OPERATOR_URL").unwrap();
    let metrics = http.get(format!("{operator}/metrics")).send().await.unwrap();
    assert!(metrics.status().is_success());
    let off = http.get(format!("{}/metrics", env.get("FAILSOFT_ORIGIN_URL").unwrap())).send().await.unwrap();
    assert_eq!(off.status().as_u16(), 404, "no /metrics on the API's port");

    // A second stack in the same place is refused.
    let again = tokio::task::spawn_blocking({
        let dir_arg = dir_arg.clone();
        move || run(failsoft(&["up", "--edge", "native", "--dir", &dir_arg]), Duration::from_secs(60))
    })
    .await
    .unwrap();
    assert_eq!(again.status.code(), Some(1), "{}", String::from_utf8_lossy(&again.stderr));

    let down = tokio::task::spawn_blocking({
        let dir_arg = dir_arg.clone();
        move || run(failsoft(&["down", "--dir", &dir_arg]), Duration::from_secs(60))
    })
    .await
    .unwrap();
    assert!(down.status.success(), "failsoft-lab down: {}", String::from_utf8_lossy(&down.stderr));
    for r in &recorded {
        assert!(pid_gone(r.pid, r.start_time), "{} ({}) still runs after down", r.name, r.pid);
    }
    assert!(!dir.join(PID_FILE).exists() && !env_path.exists(), "down removes its files");
    let twice = run(failsoft(&["down", "--dir", &dir_arg]), Duration::from_secs(30));
    assert!(twice.status.success(), "a second down has nothing to stop");
    let _ = std::fs::remove_dir_all(&work);
}
