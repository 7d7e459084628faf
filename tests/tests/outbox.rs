//! The native edge's write outbox, as real processes: moto's SQS behind a
//! proxy the test switches ([`failsoft_lab::switch`]), a CRM simulator that
//! is down, and `failsoft-edge` with `FAILSOFT_OUTBOX_DIR`.
//!
//! With the path to SQS hanging or refused, writes are answered `PENDING`
//! within the deadline and kept in the journal; the edge is killed with
//! SIGKILL while they wait; a new edge on the same directory sends every
//! one on, once, in order per caller, when the path comes back. A full
//! outbox answers `NOT_ACCEPTED`; a kept write SQS then refuses for itself
//! becomes `FAILED` with SQS's reason instead of going around forever.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use failsoft_lab::process::Service;
use failsoft_lab::switch::{Mode, Switch};
use failsoft_tests::harness::{AUTH_TOKEN, base_edge_env, program};
use failsoft_tests::moto::{Moto, Received};
use failsoft_tests::wait_until;
use serde_json::{Value, json};

/// The edge's margin: the queue's share of it is half.
const MARGIN_MS: u64 = 600;

struct Lab {
    moto: Moto,
    queue_url: String,
    switch: Switch,
    sim: Service,
    dir: PathBuf,
    http: reqwest::Client,
}

impl Lab {
    async fn start(name: &str) -> Self {
        let moto = Moto::start().await;
        let queue_url = moto.fifo_queue(name).await;
        let target = moto.endpoint.trim_start_matches("http://").parse().expect("moto's address");
        let switch = Switch::start(target).await.expect("the proxy starts");
        let sim = tokio::task::spawn_blocking(|| {
            let mut command = program("crm-sim");
            command.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]).env("RUST_LOG", "warn");
            Service::start_command("crm-sim", &mut command).expect("crm-sim starts")
        })
        .await
        .expect("the start task");
        let dir = std::env::temp_dir().join(format!("failsoft-outbox-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(15)).build().expect("a client");
        let lab = Self { moto, queue_url, switch, sim, dir, http };
        let down = lab.http.post(format!("{}/admin/mode", lab.sim.url("admin"))).json(&json!({"mode": "down"}));
        assert!(down.send().await.expect("the simulator's admin API").status().is_success());
        lab
    }

    /// An edge whose way to SQS goes through the proxy, with the outbox in
    /// the lab's directory.
    async fn edge(&self, extra: &[(&str, &str)]) -> Service {
        let mut env = base_edge_env(self.sim.url("api"));
        env.retain(|(k, _)| k != "FAILSOFT_DEV_LOCAL_QUEUE");
        let settings = [
            ("FAILSOFT_QUEUE_URL", self.switch.url_through(&self.queue_url)),
            ("AWS_ACCESS_KEY_ID", "test-only-key-id".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test-only-secret-access-key".to_owned()),
            ("FAILSOFT_DEADLINE_MARGIN_MS", MARGIN_MS.to_string()),
            ("FAILSOFT_OUTBOX_DIR", self.dir.display().to_string()),
        ];
        env.extend(settings.into_iter().map(|(k, v)| (k.to_owned(), v)));
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        tokio::task::spawn_blocking(move || {
            let mut command = program("failsoft-edge");
            command.args(["--listen", "127.0.0.1:0"]).envs(env);
            Service::start_command("failsoft-edge", &mut command).expect("failsoft-edge starts")
        })
        .await
        .expect("the start task")
    }

    /// Creates a case; the status, the answer and the `Server-Timing` header.
    async fn write(&self, edge: &Service, ani: &str, id: &str, description: &str) -> (Value, String, Duration) {
        let started = Instant::now();
        let body = json!({"ani": ani, "subject": "Callback", "description": description, "correlationId": id});
        let response = self
            .http
            .post(format!("{}/v1/cases", edge.url("url")))
            .bearer_auth(AUTH_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("the edge answers");
        let took = started.elapsed();
        assert_eq!(response.status(), 200, "{id}");
        let timing = response.headers().get("server-timing").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        (response.json().await.expect("a JSON answer"), timing, took)
    }

    async fn result(&self, edge: &Service, id: &str) -> Value {
        let url = format!("{}/v1/results/{id}", edge.url("url"));
        let response = self.http.get(url).bearer_auth(AUTH_TOKEN).send().await.expect("the edge answers");
        response.json().await.expect("a JSON answer")
    }

    /// Every message in the queue, read straight from moto.
    async fn queued(&self) -> Vec<Received> {
        self.moto.receive_all(&self.queue_url, 100).await
    }

    async fn metric(&self, edge: &Service, series: &str) -> f64 {
        let text = self.http.get(format!("{}/metrics", edge.url("url"))).send().await.expect("metrics");
        failsoft_tests::harness::metric_value(&text.text().await.expect("metrics text"), series).unwrap_or(0.0)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn correlation_id(message: &Received) -> String {
    let body: Value = serde_json::from_str(&message.body).expect("an envelope");
    body["correlationId"].as_str().unwrap_or_default().to_owned()
}

/// SIGKILL, as a crash: no drain, no clean close of the journal.
fn kill_hard(edge: &mut Service) {
    // SAFETY: signalling a child we started and have not reaped.
    unsafe { libc::kill(edge.pid() as libc::pid_t, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while edge.exited().is_none() {
        assert!(Instant::now() < deadline, "the edge did not die");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_outlive_a_queue_outage_and_a_crash_and_are_delivered_once_in_order() {
    let lab = Lab::start("outbox-outage").await;
    let mut edge = lab.edge(&[]).await;

    // The path to SQS hangs: each write waits the queue's share, then is kept.
    lab.switch.set(Mode::Hang);
    let writes = [("+13175550101", "it-outbox-1"), ("+13175550102", "it-outbox-2"), ("+13175550101", "it-outbox-3")];
    for (ani, id) in writes {
        let (answer, timing, took) = lab.write(&edge, ani, id, "outage").await;
        assert_eq!(answer["status"], "PENDING", "{answer}");
        assert_eq!(answer["warning"], "CRM_UNAVAILABLE_WRITE_QUEUED", "{answer}");
        assert!(timing.contains("outbox"), "the answer says the outbox kept it: {timing}");
        assert!(took < Duration::from_millis(MARGIN_MS + 3_000 + 500), "{id} took {took:?}");
        assert_eq!(lab.result(&edge, id).await["status"], "PENDING");
    }
    // Refused outright: kept at once, behind the same caller's first write.
    lab.switch.set(Mode::Refuse);
    let (answer, timing, _) = lab.write(&edge, "+13175550103", "it-outbox-4", "outage").await;
    assert_eq!((answer["status"].as_str(), timing.contains("outbox")), (Some("PENDING"), true), "{answer}");
    assert_eq!(lab.metric(&edge, "failsoft_edge_outbox_entries").await, 4.0);
    assert!(lab.queued().await.is_empty(), "nothing reached SQS while the path was cut");

    // A crash with four writes in the journal, then SQS back and a new edge.
    tokio::task::block_in_place(|| kill_hard(&mut edge));
    lab.switch.set(Mode::Forward);
    let edge = lab.edge(&[]).await;
    wait_until("the outbox drained to SQS", Duration::from_secs(30), || async {
        let entries = lab.metric(&edge, "failsoft_edge_outbox_entries").await;
        (entries == 0.0).then_some(())
    })
    .await;
    let queued = lab.queued().await;
    let mut ids: Vec<String> = queued.iter().map(correlation_id).collect();
    ids.sort();
    assert_eq!(ids, ["it-outbox-1", "it-outbox-2", "it-outbox-3", "it-outbox-4"], "each once");
    let mut by_group: HashMap<&str, Vec<String>> = HashMap::new();
    for message in &queued {
        by_group.entry(message.group_id.as_str()).or_default().push(correlation_id(message));
    }
    let first_caller = by_group.values().find(|ids| ids.len() == 2).expect("the caller with two writes");
    assert_eq!(first_caller, &["it-outbox-1", "it-outbox-3"], "one caller's writes in the order answered");

    // A write now goes straight to SQS.
    let (answer, timing, _) = lab.write(&edge, "+13175550104", "it-outbox-5", "after").await;
    assert_eq!(answer["status"], "PENDING", "{answer}");
    assert!(!timing.contains("outbox"), "{timing}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_outbox_answers_not_accepted_and_a_write_sqs_refuses_for_itself_fails() {
    let lab = Lab::start("outbox-full").await;
    let edge = lab.edge(&[("FAILSOFT_OUTBOX_MAX_ENTRIES", "1")]).await;
    lab.switch.set(Mode::Refuse);
    let long = "x".repeat(2_000);
    let (answer, _, _) = lab.write(&edge, "+13175550201", "it-outbox-big", &long).await;
    assert_eq!(answer["status"], "PENDING", "{answer}");
    let (answer, timing, _) = lab.write(&edge, "+13175550202", "it-outbox-full", "no room").await;
    assert_eq!(answer["status"], "NOT_ACCEPTED", "past the cap, as without an outbox: {answer}");
    assert!(!timing.contains("outbox"), "{timing}");

    // The queue now takes no message over 1 KiB: the kept write can never go.
    lab.moto
        .sqs
        .set_queue_attributes()
        .queue_url(&lab.queue_url)
        .attributes(aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize, "1024")
        .send()
        .await
        .expect("set the queue's maximum message size");
    lab.switch.set(Mode::Forward);
    let failed = wait_until("the refused write is FAILED", Duration::from_secs(30), || async {
        let result = lab.result(&edge, "it-outbox-big").await;
        (result["status"] == "FAILED").then_some(result)
    })
    .await;
    assert_eq!(failed["reason"], "QUEUE_REFUSED_InvalidParameterValue", "{failed}");
    assert_eq!(lab.metric(&edge, "failsoft_edge_outbox_entries").await, 0.0, "not around the loop");
    assert!(lab.queued().await.is_empty());
}
