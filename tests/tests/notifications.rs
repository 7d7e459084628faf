//! `failsoft notifications` against the fake Genesys (`genesys-sim`) and
//! moto's SQS (the template's queue, IAM enforced, signing as the worker),
//! as real processes: events reach the queue once, and each
//! failure the Notification Service can inflict (a dropped socket, silent
//! heartbeats, an expired channel, a token running out) is recovered from
//! within a bound, and counted; an event SQS will never take is parked with
//! an alert while the events behind it go on.
//!
//! Build the programs first: `cargo build --workspace --bins`.

mod origin_support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use failsoft_lab::aws_stack::{self, StackRequest};
use failsoft_lab::moto::{Auth, MotoServer};
use failsoft_lab::process::Service;
use failsoft_tests::harness::{metric_sum, metric_value};
use origin_support::{AlertReceiver, program, sample, wait_for};
use serde_json::{Value, json};

const TOPIC: &str = "v2.detail.events.conversation.{id}.customer.start";
/// The consumer's heartbeat timeout in these tests.
const HEARTBEAT_TIMEOUT_MS: u64 = 1_500;
/// How often the fake beats (its `--heartbeat-ms`).
const HEARTBEAT_EVERY_MS: u64 = 200;
/// Bound on recovering from one failure: the timeout, the backoff cap and
/// the API calls of a new connection, with room for a loaded machine.
const RECOVERY: Duration = Duration::from_secs(8);

fn topic() -> String {
    TOPIC.replace("{id}", "6c8b3a1e-52b4-4b8e-9c61-0f2a7d4e9b10")
}

/// moto, the fake Genesys and the consumer, each stopped by PID on drop.
struct Rig {
    _moto: MotoServer,
    /// The stack's administrator: the test reads the queue as nobody the
    /// template names.
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    sim: Service,
    consumer: Service,
    http: reqwest::Client,
    /// correlationId → how many times it was received from SQS.
    received: HashMap<String, usize>,
}

impl Rig {
    async fn start(sim_args: &[&str], extra: &[(&str, &str)]) -> Self {
        // The work queue of a stack made from the template, in a moto that
        // enforces IAM: the consumer signs as the worker (WorkerPolicy).
        let moto = tokio::task::spawn_blocking(|| MotoServer::start_with(Auth::Iam))
            .await
            .unwrap()
            .expect("moto_server starts (scripts/setup.sh installs it)");
        let aws = aws_stack::create(&StackRequest::new(&moto.endpoint)).await.expect("the stack from the template");
        let queue_url = aws.queue_url().expect("QueueUrl");
        let admin = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&moto.endpoint)
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                &aws.admin.key,
                &aws.admin.secret,
                None,
                None,
                "tests",
            ))
            .load()
            .await;
        let sqs = aws_sdk_sqs::Client::new(&admin);
        let args: Vec<String> = sim_args.iter().map(|s| s.to_string()).collect();
        let sim = tokio::task::spawn_blocking(move || {
            let mut cmd = program("genesys-sim");
            cmd.args(["--listen", "127.0.0.1:0", "--heartbeat-ms", &HEARTBEAT_EVERY_MS.to_string()]).args(args);
            Service::start_command("genesys-sim", &mut cmd).expect("genesys-sim starts")
        })
        .await
        .unwrap();
        let mut env: Vec<(String, String)> =
            aws.env(aws.worker().expect("the worker's key")).into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let base = [
            ("GENESYS_LOGIN_URL", sim.url("url")),
            ("GENESYS_API_URL", sim.url("url")),
            ("GENESYS_CLIENT_ID", "test-client"),
            ("GENESYS_CLIENT_SECRET", "test-only-client-secret"),
            ("FAILSOFT_NOTIFICATION_TOPICS", &topic()),
            ("FAILSOFT_QUEUE_URL", &queue_url),
            ("FAILSOFT_NOTIFICATION_HEARTBEAT_TIMEOUT_MS", &HEARTBEAT_TIMEOUT_MS.to_string()),
            ("FAILSOFT_NOTIFICATION_BACKOFF_BASE_MS", "100"),
            ("FAILSOFT_NOTIFICATION_BACKOFF_CAP_MS", "500"),
            ("FAILSOFT_NOTIFICATION_HTTP_TIMEOUT_MS", "3000"),
            ("FAILSOFT_LOG", "warn"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<Vec<_>>();
        for (k, v) in base.into_iter().chain(extra.iter().map(|(k, v)| (k.to_string(), v.to_string()))) {
            env.retain(|(name, _)| *name != k);
            env.push((k, v));
        }
        let consumer = tokio::task::spawn_blocking(move || {
            let mut cmd = program("failsoft");
            cmd.args(["notifications", "--metrics-addr", "127.0.0.1:0"]).envs(env);
            Service::start_command("failsoft notifications", &mut cmd).expect("failsoft notifications starts")
        })
        .await
        .unwrap();
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
        let rig = Self { _moto: moto, sqs, queue_url, sim, consumer, http, received: HashMap::new() };
        rig.wait_connections(1).await;
        rig
    }

    async fn admin(&self, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.sim.url("url"));
        let response = self.http.post(url).json(&body).send().await.expect("the fake answers");
        assert_eq!(response.status().as_u16(), 200, "{path}");
        response.json().await.expect("JSON")
    }

    async fn stats(&self) -> Value {
        let url = format!("{}/admin/stats", self.sim.url("url"));
        self.http.get(url).send().await.expect("stats").json().await.expect("JSON")
    }

    async fn stat(&self, name: &str) -> u64 {
        self.stats().await[name].as_u64().unwrap_or_else(|| panic!("no counter {name}"))
    }

    async fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.consumer.url("url"));
        self.http.get(url).send().await.expect("/metrics").text().await.expect("text")
    }

    async fn connected(&self) -> bool {
        let url = format!("{}/healthz", self.consumer.url("url"));
        let health: Value = self.http.get(url).send().await.expect("/healthz").json().await.expect("JSON");
        health["connected"] == true
    }

    /// Waits until the fake has seen `n` connections and one is open, and
    /// the consumer says it is connected.
    async fn wait_connections(&self, n: u64) {
        wait_for(&format!("connection #{n}"), RECOVERY, || async {
            let stats = self.stats().await;
            let ok = stats["connections"].as_u64() >= Some(n) && stats["connected"].as_u64() >= Some(1);
            (ok && self.connected().await).then_some(())
        })
        .await;
    }

    /// Publishes one event; returns how many sockets it was sent on.
    async fn publish(&self, id: &str) -> u64 {
        let body = json!({
            "topic": topic(),
            "correlationId": id,
            "eventBody": {"conversationId": "6c8b3a1e-52b4-4b8e-9c61-0f2a7d4e9b10", "ani": "tel:+15550100", "n": id},
        });
        self.admin("/admin/publish", body).await["delivered"].as_u64().unwrap()
    }

    /// Receives (and deletes) what the queue holds now.
    async fn receive(&mut self) {
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send()
                .await
                .expect("receive");
            if out.messages().is_empty() {
                return;
            }
            for m in out.messages() {
                let envelope: Value = serde_json::from_str(m.body().unwrap()).expect("an envelope");
                assert_eq!(envelope["kind"], "event");
                assert_eq!(envelope["payload"]["via"], "notifications");
                let id = envelope["correlationId"].as_str().unwrap().to_owned();
                *self.received.entry(id).or_default() += 1;
                let handle = m.receipt_handle().unwrap();
                self.sqs.delete_message().queue_url(&self.queue_url).receipt_handle(handle).send().await.unwrap();
            }
        }
    }

    /// Waits until every id of `ids` was received.
    async fn wait_received(&mut self, ids: &[String]) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            self.receive().await;
            let missing: Vec<&String> = ids.iter().filter(|id| !self.received.contains_key(*id)).collect();
            if missing.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "not queued within 15 s: {missing:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Publishes `n` events while connected (each sent on a socket).
    async fn publish_many(&self, prefix: &str, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for i in 0..n {
            let id = format!("{prefix}-{i:03}");
            assert!(self.publish(&id).await >= 1, "{id} was sent on a socket");
            ids.push(id);
        }
        ids
    }

    fn assert_once(&self, ids: &[String]) {
        for id in ids {
            assert_eq!(self.received.get(id), Some(&1), "{id} queued exactly once");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_while_connected_reach_the_queue_exactly_once() {
    let mut rig = Rig::start(&[], &[]).await;
    let ids = rig.publish_many("a", 40).await;
    rig.wait_received(&ids).await;
    // Anything extra (a duplicate) would be visible by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    rig.receive().await;
    rig.assert_once(&ids);
    assert_eq!(rig.received.len(), ids.len(), "nothing else was queued");
    assert_eq!(metric_value(&rig.metrics().await, "failsoft_notifications_events_total"), Some(40.0));
    assert_eq!(rig.stat("channels").await, 1, "one channel, one token: nothing churns");
    assert_eq!(rig.stat("tokens").await, 1);
    assert!(rig.consumer.stop(Duration::from_secs(10)), "SIGTERM stops it cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_is_reconnected_and_the_gap_counted() {
    let mut rig = Rig::start(&[], &[]).await;
    let before = rig.publish_many("b1", 5).await;
    assert_eq!(rig.admin("/admin/drop", json!({})).await["dropped"], 1);
    let dropped = Instant::now();
    rig.wait_connections(2).await;
    assert!(dropped.elapsed() < RECOVERY);
    let after = rig.publish_many("b2", 5).await;
    rig.wait_received(&[before.clone(), after.clone()].concat()).await;
    rig.assert_once(&[before, after].concat());
    assert_eq!(rig.stat("channels").await, 1, "the same channel: a reconnect is not a re-creation");

    let metrics = rig.metrics().await;
    assert_eq!(metric_value(&metrics, r#"failsoft_notifications_reconnects_total{reason="closed"}"#), Some(1.0));
    let gap = metric_value(&metrics, "failsoft_notifications_disconnected_seconds_total").unwrap_or(0.0);
    assert!(gap > 0.0 && gap < RECOVERY.as_secs_f64(), "the gap is measured: {gap}");
    assert_eq!(metric_value(&metrics, "failsoft_notifications_connected"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_socket_is_replaced_within_the_heartbeat_timeout() {
    let mut rig = Rig::start(&[], &[]).await;
    rig.admin("/admin/heartbeats", json!({"on": false})).await;
    let silent = Instant::now();
    wait_for("a reconnect after missed heartbeats", RECOVERY, || async {
        (rig.stat("connections").await >= 2).then_some(())
    })
    .await;
    let took = silent.elapsed();
    // The silence began with the last beat before heartbeats went off, up
    // to one beat before this test's stopwatch started.
    assert!(
        took >= Duration::from_millis(HEARTBEAT_TIMEOUT_MS - HEARTBEAT_EVERY_MS)
            && took < Duration::from_millis(HEARTBEAT_TIMEOUT_MS + 3_000),
        "replaced after the timeout and within a bound of it: {took:?}"
    );
    rig.admin("/admin/heartbeats", json!({"on": true})).await;
    rig.wait_connections(2).await;
    let ids = rig.publish_many("c", 5).await;
    rig.wait_received(&ids).await;
    rig.assert_once(&ids);
    let metrics = rig.metrics().await;
    assert!(
        metric_value(&metrics, r#"failsoft_notifications_reconnects_total{reason="heartbeat_missed"}"#) >= Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_channel_is_recreated_and_resubscribed() {
    let mut rig = Rig::start(&[], &[]).await;
    let before = rig.publish_many("d1", 3).await;
    assert_eq!(rig.admin("/admin/expire", json!({})).await["expired"], 1);
    wait_for("a new, subscribed channel", RECOVERY, || async {
        let stats = rig.stats().await;
        (stats["channels"] == 2 && stats["subscriptions"] == 2 && stats["connected"] == 1).then_some(())
    })
    .await;
    rig.wait_connections(2).await;
    let after = rig.publish_many("d2", 3).await;
    rig.wait_received(&[before.clone(), after.clone()].concat()).await;
    rig.assert_once(&[before, after].concat());
    let metrics = rig.metrics().await;
    assert_eq!(metric_value(&metrics, "failsoft_notifications_channel_recreations_total"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_is_renewed_before_it_expires_without_a_gap() {
    // Channels live 3 s; the consumer renews 1 s early, make before break.
    let mut rig =
        Rig::start(&["--channel-ttl-ms", "3000"], &[("FAILSOFT_NOTIFICATION_CHANNEL_RENEW_MARGIN_MS", "1000")]).await;
    let started = Instant::now();
    wait_for("a renewed channel", RECOVERY, || async { (rig.stat("channels").await >= 2).then_some(()) }).await;
    assert!(started.elapsed() < Duration::from_secs(3), "renewed before the first channel expired");
    rig.wait_connections(2).await;
    let ids = rig.publish_many("r", 3).await;
    rig.wait_received(&ids).await;
    rig.assert_once(&ids);
    let stats = rig.stats().await;
    assert_eq!(stats["not_found"], 0, "never found its channel gone");
    let metrics = rig.metrics().await;
    assert_eq!(metric_sum(&metrics, "failsoft_notifications_reconnects_total"), 0.0, "no gap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_replaced_before_they_expire() {
    // Tokens live 2 s; the consumer replaces them 1 s early, so the API
    // calls a reconnect makes never carry an expired one.
    let mut rig =
        Rig::start(&["--token-ttl-secs", "2"], &[("FAILSOFT_NOTIFICATION_TOKEN_REFRESH_MARGIN_MS", "1000")]).await;
    for n in 2..=4 {
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        rig.admin("/admin/drop", json!({})).await;
        rig.wait_connections(n).await;
    }
    let ids = rig.publish_many("e", 3).await;
    rig.wait_received(&ids).await;
    let stats = rig.stats().await;
    assert!(stats["tokens"].as_u64() >= Some(4), "a new token every second: {stats}");
    assert_eq!(stats["unauthorized"], 0, "no call carried an expired token");
    assert_eq!(stats["channels"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_notice_moves_to_a_new_channel_before_the_socket_closes() {
    let mut rig = Rig::start(&[], &[]).await;
    assert_eq!(rig.admin("/admin/closing", json!({})).await["told"], 1);
    wait_for("a new channel", RECOVERY, || async { (rig.stat("channels").await >= 2).then_some(()) }).await;
    rig.wait_connections(2).await;
    let ids = rig.publish_many("f", 3).await;
    rig.wait_received(&ids).await;
    rig.assert_once(&ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_sqs_refuses_is_parked_with_an_alert_and_the_rest_flow() {
    let receiver = AlertReceiver::start(202).await;
    let alert_url = format!("{}/alerts", receiver.url);
    let mut rig = Rig::start(&[], &[("FAILSOFT_ALERT_URL", &alert_url)]).await;
    // The queue takes 1 KiB at most (its MaximumMessageSize): SQS refuses a
    // larger event every time (InvalidParameterValue), however long it is retried.
    rig.sqs
        .set_queue_attributes()
        .queue_url(&rig.queue_url)
        .attributes(QueueAttributeName::MaximumMessageSize, "1024")
        .send()
        .await
        .expect("SetQueueAttributes");
    let before = rig.publish_many("p", 2).await;
    let big = json!({
        "topic": topic(),
        "correlationId": "p-big",
        "eventBody": {"conversationId": "6c8b3a1e-52b4-4b8e-9c61-0f2a7d4e9b10", "ani": "tel:+15550100",
                      "notes": "customer words ".repeat(100)},
    });
    assert!(rig.admin("/admin/publish", big).await["delivered"].as_u64() >= Some(1));
    let after = rig.publish_many("q", 5).await;
    let all: Vec<String> = before.iter().chain(&after).cloned().collect();
    rig.wait_received(&all).await;

    let alert =
        wait_for("the parked event's alert", Duration::from_secs(15), || async { receiver.all().into_iter().next() })
            .await;
    assert_eq!(alert.body["event"], "parked", "{}", alert.body);
    assert_eq!(alert.body["dedupKey"], "p-big");
    assert_eq!(alert.body["alert"]["reason"], "SQS_REFUSED_InvalidParameterValue");
    let text = alert.body.to_string();
    assert!(!text.contains("5550100") && !text.contains("customer words"), "no customer data: {text}");
    let metrics = rig.metrics().await;
    let parked = sample(&metrics, "failsoft_notifications_parked_total", &[("reason", "InvalidParameterValue")]);
    assert_eq!(parked, Some(1.0), "{metrics}");
    assert_eq!(metric_value(&metrics, "failsoft_notifications_buffered"), Some(0.0), "nothing left behind it");
    rig.receive().await;
    assert!(!rig.received.contains_key("p-big"), "the refused event is not in the queue");
    rig.assert_once(&all);
    assert_eq!(receiver.all().len(), 1, "one alert");
}
