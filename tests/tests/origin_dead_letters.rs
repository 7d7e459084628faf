//! Dead letters: a permanent CRM refusal goes to the DLQ on its first
//! attempt with its reasons, the result says FAILED, an alert goes out in
//! the configured format (PagerDuty, Opsgenie, webhook), and the operator's
//! `failsoft dlq` lists, shows (redacted unless `--reveal`), replays
//! (optionally edited; with a fresh retry budget) and purges, reading a DLQ
//! that outlasts its hold once each and ending while dead letters arrive.

mod origin_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::MessageAttributeValue;
use origin_support::{AlertReceiver, OriginStack, refs, sample, wait_for, write_envelope};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PHONE: &str = "+44 20 7946 0201";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_a_422_is_dead_lettered_at_once_and_alerted_in_each_format() {
    let stack = OriginStack::start().await;
    stack.crm(json!({"mode": "reject"})).await;
    let formats = [("pagerduty", Some("pd-routing-key")), ("opsgenie", Some("og-api-key")), ("webhook", None)];
    for (round, (format, key)) in formats.into_iter().enumerate() {
        let receiver = AlertReceiver::start(202).await;
        let alert_url = format!("{}/alerts", receiver.url);
        let mut settings = vec![("FAILSOFT_ALERT_URL", alert_url.as_str()), ("FAILSOFT_ALERT_FORMAT", format)];
        if let Some(key) = key {
            settings.push(("FAILSOFT_ALERT_ROUTING_KEY", key));
        }
        let worker = stack.worker(&settings).await;
        let id = format!("rejected-{format}");
        stack.enqueue_write(&id, PHONE, "will be refused").await;

        let dead = wait_for(&format!("the {format} dead letter"), Duration::from_secs(30), || async {
            stack.dead_letters().await.into_iter().find(|d| d.attributes.get("correlationId") == Some(&id))
        })
        .await;
        let a = &dead.attributes;
        assert_eq!(a["errorClass"], "permanent", "{a:?}");
        assert_eq!(a["lastStatus"], "422");
        // Dead-lettered on its first attempt: one refused create per round.
        // (`attempts` counts SQS receives: one lost to the previous round's
        // worker, stopped mid-poll, counts too.)
        assert_eq!(stack.sim_count("failed").await, round as u64 + 1, "the CRM refused each write once");
        let attempts: u64 = a["attempts"].parse().expect("a number");
        assert!(attempts >= 1, "{a:?}");
        assert_eq!(a["reason"], "CRM_REJECTED_422");
        assert_eq!(a["kind"], "write");
        let first: u64 = a["firstAttemptAt"].parse().unwrap();
        let last: u64 = a["lastAttemptAt"].parse().unwrap();
        assert!(first > 0 && last >= first, "{a:?}");
        assert_eq!(dead.body["correlationId"], id.as_str(), "the original body");
        assert_eq!(dead.group, dead.body["entityKey"].as_str().unwrap(), "the original group");

        let (status, result) = stack.result(&worker, &id).await;
        assert_eq!((status, &result["status"], &result["reason"]), (200, &json!("FAILED"), &json!("CRM_REJECTED_422")));

        let alert = wait_for(&format!("the {format} alert"), Duration::from_secs(15), || async {
            receiver.all().into_iter().next()
        })
        .await;
        let body = &alert.body;
        match format {
            "pagerduty" => {
                assert_eq!(body["routing_key"], "pd-routing-key");
                assert_eq!(body["event_action"], "trigger");
                assert_eq!(body["dedup_key"], id.as_str());
                assert_eq!(body["payload"]["severity"], "error");
                assert!(body["payload"]["summary"].as_str().unwrap().contains("CRM_REJECTED_422"));
                assert_eq!(body["payload"]["custom_details"]["attempts"], attempts);
            }
            "opsgenie" => {
                assert_eq!(alert.headers["authorization"], "GenieKey og-api-key");
                assert_eq!(body["alias"], id.as_str());
                assert_eq!(body["priority"], "P2");
                assert_eq!(body["details"]["reason"], "CRM_REJECTED_422");
            }
            _ => {
                assert_eq!(body["event"], "dead_letter");
                assert_eq!(body["dedupKey"], id.as_str());
                assert_eq!(body["alert"]["lastStatus"], 422);
            }
        }
        let text = body.to_string();
        assert!(!text.contains("7946") && !text.contains("+44"), "no phone number in an alert: {text}");
        assert_eq!(receiver.all().len(), 1, "one alert per dead letter");
        assert!(worker.service.urls.contains_key("api"));
        let mut worker = worker;
        assert!(worker.service.stop(Duration::from_secs(15)), "the worker exits 0 on SIGTERM");
    }
    assert!(stack.ledger().await.is_empty(), "nothing was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_a_failing_alert_endpoint_is_retried_and_never_blocks_delivery() {
    let stack = OriginStack::start().await;
    // The alert endpoint answers 503: the worker retries it in the background.
    let receiver = AlertReceiver::start(503).await;
    let url = format!("{}/hook", receiver.url);
    let _worker = stack.worker(&[("FAILSOFT_ALERT_URL", url.as_str())]).await;
    stack.crm(json!({"mode": "reject"})).await;
    stack.enqueue_write("alert-retry-1", PHONE, "refused").await;
    wait_for("the alert to be retried", Duration::from_secs(20), || async {
        (receiver.all().len() >= 2).then_some(())
    })
    .await;
    // Deliveries go on meanwhile.
    stack.crm(json!({"mode": "up"})).await;
    stack.enqueue_write("alert-retry-2", PHONE, "accepted").await;
    let ledger = stack.ledger_with(1, Duration::from_secs(20)).await;
    assert_eq!(refs(&ledger), ["alert-retry-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_dlq_list_show_replay_edit_and_purge() {
    let stack = OriginStack::start().await;
    stack.crm(json!({"mode": "reject"})).await;
    let mut worker = stack.worker(&[]).await;
    for i in 0..3 {
        stack.enqueue_write(&format!("dlq-{i}"), PHONE, &format!("case {i}")).await;
    }
    wait_for("three dead letters", Duration::from_secs(30), || async {
        (stack.dead_letters().await.len() == 3).then_some(())
    })
    .await;
    assert!(worker.service.stop(Duration::from_secs(15)));

    let (code, out, err) = stack.failsoft(&["dlq", "list"], &[]).await;
    assert_eq!(code, 0, "{err}");
    for i in 0..3 {
        assert!(out.contains(&format!("dlq-{i}")), "{out}");
    }
    assert!(out.contains("CRM_REJECTED_422") && out.contains("3 dead letter(s)"), "{out}");
    assert!(!out.contains("7946"), "list shows no phone number: {out}");

    // `show` redacts the customer's data (its output goes to CloudWatch)
    // and keeps what an operator needs; `--reveal` prints the body whole.
    let (code, out, err) = stack.failsoft(&["dlq", "show", "dlq-1"], &[]).await;
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&out).expect("show prints JSON");
    assert_eq!(shown["correlationId"], "dlq-1");
    assert_eq!(shown["attributes"]["reason"], "CRM_REJECTED_422");
    assert_eq!(shown["attributes"]["errorClass"], "permanent");
    assert_eq!(shown["attributes"]["lastStatus"], "422");
    assert!(shown["attributes"]["lastAttemptAt"].as_str().is_some_and(|t| t.parse::<u64>().is_ok()), "{shown}");
    assert_eq!(shown["body"]["kind"], "write");
    assert!(shown["body"]["submittedAt"].as_u64().is_some(), "{shown}");
    assert!(!out.contains("7946") && !out.contains("case 1"), "no phone digits, no subject: {out}");
    assert!(shown["body"]["payload"]["case"]["subject"].as_str().unwrap().starts_with("[redacted"), "{out}");
    let (code, out, err) = stack.failsoft(&["dlq", "show", "dlq-1", "--reveal"], &[]).await;
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&out).expect("show prints JSON");
    assert_eq!(shown["body"]["payload"]["case"]["subject"], "case 1");
    assert!(out.contains("442079460201"), "--reveal prints the phone number: {out}");
    assert!(err.contains("--reveal"), "a warning on stderr: {err}");
    let (code, _, err) = stack.failsoft(&["dlq", "show", "no-such-id"], &[]).await;
    assert_ne!(code, 0);
    assert!(err.contains("no-such-id"), "{err}");

    // The CRM is fixed; replay one as it was, one edited.
    stack.crm(json!({"mode": "up"})).await;
    let worker = stack.worker(&[]).await;
    let (code, out, err) = stack.failsoft(&["dlq", "replay", "dlq-0"], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed dlq-0") && out.contains("replayed 1 message(s)"), "{out}");
    let mut edited = write_envelope("dlq-2", PHONE, "case 2, corrected");
    edited.submitted_at = shown["body"]["submittedAt"].as_u64().unwrap();
    let file = std::env::temp_dir().join(format!("failsoft-edit-{}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_string(&edited).unwrap()).unwrap();
    let (code, out, err) = stack.failsoft(&["dlq", "replay", "dlq-2", "--edit", file.to_str().unwrap()], &[]).await;
    std::fs::remove_file(&file).ok();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed dlq-2"), "{out}");

    let ledger = stack.ledger_with(2, Duration::from_secs(30)).await;
    let mut delivered = refs(&ledger);
    delivered.sort();
    assert_eq!(delivered, ["dlq-0", "dlq-2"]);
    let corrected = ledger.iter().find(|c| c["externalRef"] == "dlq-2").unwrap();
    assert_eq!(corrected["body"]["subject"], "case 2, corrected");
    let (_, result) = stack.result(&worker, "dlq-0").await;
    assert_eq!(result["status"], "COMPLETE", "a replayed write completes: {result}");

    // An edit must keep the correlationId (the CRM's idempotency key).
    let other = write_envelope("not-dlq-1", PHONE, "x");
    let file = std::env::temp_dir().join(format!("failsoft-edit-bad-{}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_string(&other).unwrap()).unwrap();
    let (code, _, err) = stack.failsoft(&["dlq", "replay", "dlq-1", "--edit", file.to_str().unwrap()], &[]).await;
    std::fs::remove_file(&file).ok();
    assert_ne!(code, 0);
    assert!(err.contains("correlationId"), "{err}");

    let (code, _, err) = stack.failsoft(&["dlq", "purge"], &[]).await;
    assert_ne!(code, 0, "purge asks for --yes");
    assert!(err.contains("--yes"), "{err}");
    let (code, out, err) = stack.failsoft(&["dlq", "purge", "--yes"], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("purged"), "{out}");
    assert_eq!(stack.depth(&stack.dlq_url).await, 0);
    assert_eq!(stack.ledger().await.len(), 2, "dlq-1 was never delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_replay_all_moves_every_dead_letter_back() {
    let stack = OriginStack::start().await;
    stack.crm(json!({"mode": "reject"})).await;
    let mut worker = stack.worker(&[]).await;
    // 12 dead letters in one group: more than one receive batch.
    for i in 0..12 {
        stack.enqueue_write(&format!("all-{i:02}"), PHONE, "x").await;
    }
    wait_for("twelve dead letters", Duration::from_secs(60), || async {
        (stack.depth(&stack.dlq_url).await == 12).then_some(())
    })
    .await;
    assert!(worker.service.stop(Duration::from_secs(15)));
    stack.crm(json!({"mode": "up"})).await;
    let (code, out, err) = stack.failsoft(&["dlq", "replay", "--all"], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed 12 message(s)"), "{out}");
    assert_eq!(stack.depth(&stack.dlq_url).await, 0);
    let _worker = stack.worker(&[]).await;
    let ledger = stack.ledger_with(12, Duration::from_secs(60)).await;
    let expected: Vec<String> = (0..12).map(|i| format!("all-{i:02}")).collect();
    assert_eq!(refs(&ledger), expected, "replayed in order, once each");
}

/// Dead letters for the tool to read, put in the DLQ as the worker puts
/// them (body, group, attributes), one FIFO group each so a receive brings
/// ten; their correlationIds.
async fn seed_dead_letters(stack: &OriginStack, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}-{i:03}");
        let phone = format!("+44 20 7946 {:04}", 1000 + i);
        let envelope = write_envelope(&id, &phone, "seeded");
        let attribute = |v: &str| MessageAttributeValue::builder().data_type("String").string_value(v).build().unwrap();
        stack
            .sqs
            .send_message()
            .queue_url(&stack.dlq_url)
            .message_body(serde_json::to_string(&envelope).unwrap())
            .message_group_id(envelope.group_id())
            .message_deduplication_id(format!("{id}.seed"))
            .message_attributes("correlationId", attribute(&id))
            .message_attributes("reason", attribute("CRM_REJECTED_422"))
            .message_attributes("kind", attribute("write"))
            .send()
            .await
            .expect("SendMessage (DLQ)");
        ids.push(id);
    }
    ids
}

/// A relay to moto on loopback that holds every request for
/// `ReceiveMessage` for `pause` before passing it on (everything else
/// passes at once): reading the DLQ then takes longer than a short hold.
/// Its `http://` address; it stops with the test's runtime.
async fn slow_receives(moto_endpoint: &str, pause: Duration) -> String {
    let upstream = moto_endpoint.trim_start_matches("http://").to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&upstream).await else { return };
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
                });
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = client_rx.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if buf[..n].windows(24).any(|w| w == b"AmazonSQS.ReceiveMessage") {
                        tokio::time::sleep(pause).await;
                    }
                    if server_tx.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    address
}

/// How often each id appears as a word of `out`.
fn mentions<'a>(out: &str, ids: &'a [String]) -> HashMap<&'a str, usize> {
    let words: Vec<&str> = out.split_whitespace().collect();
    ids.iter().map(|id| (id.as_str(), words.iter().filter(|w| **w == id).count())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_dlq_reads_a_dlq_that_outlasts_its_hold_once_each_and_ends() {
    let stack = OriginStack::start().await;
    let ids = seed_dead_letters(&stack, "held", 80).await;
    // Each receive of ten takes 700 ms: the eight of a read outlast two of
    // its 2 s holds.
    let slow = slow_receives(&stack.moto.endpoint, Duration::from_millis(700)).await;
    let through_slow = [("AWS_ENDPOINT_URL", slow.as_str())];

    let started = Instant::now();
    let (code, out, err) = stack.failsoft(&["dlq", "--hold-secs", "2", "list", "--max", "1000"], &through_slow).await;
    let took = started.elapsed();
    assert_eq!(code, 0, "{err}");
    assert!(took > Duration::from_secs(4), "the read outlasted two 2 s holds ({took:?})");
    assert!(out.contains("80 dead letter(s)"), "{out}");
    for (id, n) in mentions(&out, &ids) {
        assert_eq!(n, 1, "{id} listed once: {out}");
    }
    // Handed back: all of them visible at once, none held.
    let depths = failsoft_origin::telemetry::queue_depths(&stack.sqs, &stack.dlq_url).await.unwrap();
    assert_eq!(depths, (80, 0), "(visible, held)");

    // The CRM's fix is in: replay them all, each once.
    let started = Instant::now();
    let (code, out, err) = stack.failsoft(&["dlq", "replay", "--all", "--hold-secs", "2"], &through_slow).await;
    assert_eq!(code, 0, "{err}");
    assert!(started.elapsed() > Duration::from_secs(4), "the replay outlasted two holds");
    assert!(out.contains("replayed 80 message(s)"), "{out}");
    let replayed: Vec<&str> = out.lines().filter(|l| l.starts_with("replayed held-")).collect();
    assert_eq!(replayed.len(), 80, "one line per replay: {out}");
    for (id, n) in mentions(&out, &ids) {
        assert_eq!(n, 1, "{id} replayed once: {out}");
    }
    assert_eq!(stack.depth(&stack.dlq_url).await, 0, "the DLQ is empty");
    assert_eq!(stack.depth(&stack.queue_url).await, 80, "80 writes back in the work queue");

    // Dead letters arriving faster than the tool reads (a worker
    // dead-lettering a storm) do not keep it reading: it stops at the
    // count it saw when it began.
    seed_dead_letters(&stack, "storm", 30).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let storm = {
        let (sqs, dlq_url, stop, sent) = (stack.sqs.clone(), stack.dlq_url.clone(), stop.clone(), sent.clone());
        tokio::spawn(async move {
            for i in 0..3_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let id = format!("late-{i:04}");
                sqs.send_message()
                    .queue_url(&dlq_url)
                    .message_body(json!({"correlationId": id}).to_string())
                    .message_group_id(&id)
                    .message_deduplication_id(&id)
                    .send()
                    .await
                    .expect("SendMessage (DLQ)");
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    wait_for("the storm to begin", Duration::from_secs(10), || async {
        (sent.load(Ordering::SeqCst) >= 10).then_some(())
    })
    .await;
    let before = 30 + sent.load(Ordering::SeqCst);
    let run = stack.failsoft(&["dlq", "--hold-secs", "2", "list", "--max", "100000"], &through_slow);
    let (code, out, err) = tokio::time::timeout(Duration::from_secs(120), run).await.expect("the list ends");
    let after = 30 + sent.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    storm.await.unwrap();
    assert_eq!(code, 0, "{err}");
    let listed: usize = out
        .lines()
        .find_map(|l| l.strip_suffix(" dead letter(s)"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count: {out}"));
    assert!(after > listed + 10, "the storm outpaced the read ({after} sent, {listed} listed)");
    assert!((before..=after).contains(&listed), "{listed} listed: the count at its start ({before}..{after})");
    // The rows between the header and the count: one per dead letter.
    let rows: Vec<&str> = out.lines().skip(1).take_while(|l| !l.ends_with(" dead letter(s)")).collect();
    let distinct: std::collections::HashSet<&str> = rows.iter().filter_map(|r| r.split_whitespace().next()).collect();
    assert_eq!((rows.len(), distinct.len()), (listed, listed), "each listed once: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_a_replayed_budget_exhausted_write_gets_a_fresh_budget() {
    let stack = OriginStack::start().await;
    stack.crm(json!({"mode": "error", "status": 500})).await;
    // A 6 s budget and a breaker that never opens: every retry is an attempt.
    let settings = [
        ("FAILSOFT_RETRY_BUDGET_SECS", "6"),
        ("FAILSOFT_BREAKER_WINDOW", "64"),
        ("FAILSOFT_BREAKER_FAILURE_THRESHOLD", "64"),
    ];
    let worker = stack.worker(&settings).await;
    stack.enqueue_write("budget-replay", PHONE, "out of budget").await;
    let dead = wait_for("the dead letter", Duration::from_secs(30), || async {
        stack.dead_letters().await.into_iter().next()
    })
    .await;
    assert_eq!(dead.attributes["reason"], "RETRY_BUDGET_EXHAUSTED");

    // Replayed while the CRM still fails: the old submittedAt would give it
    // one attempt and dead-letter it again; a fresh budget retries it.
    let metrics = || async {
        let url = format!("{}/metrics", worker.operator_url());
        stack.http.get(url).send().await.expect("/metrics").text().await.expect("text")
    };
    let failed_attempts = |text: &str| sample(text, "failsoft_origin_deliveries_total", &[("outcome", "transient")]);
    let before = failed_attempts(&metrics().await).unwrap_or(0.0);
    let (code, out, err) = stack.failsoft(&["dlq", "replay", "budget-replay"], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed budget-replay"), "{out}");
    wait_for("the replay's first attempt to fail", Duration::from_secs(15), || async {
        (failed_attempts(&metrics().await).unwrap_or(0.0) > before).then_some(())
    })
    .await;
    stack.crm(json!({"mode": "up"})).await;
    let ledger = stack.ledger_with(1, Duration::from_secs(20)).await;
    assert_eq!(refs(&ledger), ["budget-replay"]);
    assert_eq!(stack.depth(&stack.dlq_url).await, 0, "not dead-lettered again");
    let (_, result) = stack.result(&worker, "budget-replay").await;
    assert_eq!(result["status"], "COMPLETE", "{result}");
}
