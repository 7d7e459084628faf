//! Dead letters: a permanent CRM refusal goes to the DLQ on its first
//! attempt with its reasons, the result says FAILED, an alert goes out in
//! the configured format (PagerDuty, Opsgenie, webhook), and the operator's
//! `failsoft dlq` lists, shows, replays (optionally edited) and purges.

mod origin_support;

use std::time::Duration;

use origin_support::{AlertReceiver, OriginStack, refs, wait_for, write_envelope};
use serde_json::{Value, json};

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

    let (code, out, err) = stack.failsoft(&["dlq", "show", "dlq-1"], &[]).await;
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&out).expect("show prints JSON");
    assert_eq!(shown["correlationId"], "dlq-1");
    assert_eq!(shown["attributes"]["reason"], "CRM_REJECTED_422");
    assert_eq!(shown["body"]["payload"]["case"]["subject"], "case 1");
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
