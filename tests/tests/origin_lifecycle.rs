//! The worker's life and surroundings: `init-local` finds the template's
//! stack again (the queues have its attributes, the tables its TTL), bad
//! settings exit 2 naming the setting, so does a work queue whose redrive,
//! visibility or retention does not fit them, SIGTERM finishes the deliveries in
//! flight and exits 0, refreshes update the last-known table and the edge,
//! the results API authenticates and hides expired items, and a message
//! that is not an envelope is dead-lettered instead of retried forever.

mod origin_support;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::QueueAttributeName;
use failsoft_shared::cache::CacheEntry;
use failsoft_shared::signature;
use origin_support::{
    AlertReceiver, INTERNAL_SECRET, OriginStack, entity_for, parse_assignments, refresh_envelope, refs, wait_for,
};
use serde_json::{Value, json};

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_init_local_is_idempotent_and_bad_settings_exit_2() {
    let stack = OriginStack::start().await;
    let (code, out, err) = stack.failsoft_lab(&["init-local"], &[]).await;
    assert_eq!(code, 0, "{err}");
    let printed = parse_assignments(&out);
    assert_eq!(printed["FAILSOFT_QUEUE_URL"], stack.queue_url, "a second run finds the same queue");
    assert_eq!(printed["FAILSOFT_DLQ_URL"], stack.dlq_url);

    let attrs = stack
        .sqs
        .get_queue_attributes()
        .queue_url(&stack.queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    assert_eq!(attrs[&QueueAttributeName::FifoQueue], "true");
    assert_eq!(attrs[&QueueAttributeName::ContentBasedDeduplication], "false");
    assert_eq!(
        attrs[&QueueAttributeName::VisibilityTimeout],
        stack.aws.output("VisibilityTimeoutSeconds").unwrap(),
        "the template's: 6 × ProcessingLimitSeconds"
    );
    assert_eq!(attrs[&QueueAttributeName::MessageRetentionPeriod], "1209600", "the template's 14 days");
    let redrive: Value = serde_json::from_str(&attrs[&QueueAttributeName::RedrivePolicy]).unwrap();
    assert_eq!(redrive["maxReceiveCount"], 1000, "a safety net, not a retry limit");
    assert!(redrive["deadLetterTargetArn"].as_str().unwrap().ends_with("failsoft-dlq.fifo"));
    for table in ["failsoft-results", "failsoft-last-known"] {
        let ttl = stack.ddb.describe_time_to_live().table_name(table).send().await.unwrap();
        let ttl = ttl.time_to_live_description.unwrap();
        assert_eq!(ttl.attribute_name.as_deref(), Some("expiresAt"), "{table}");
        assert_eq!(ttl.time_to_live_status.unwrap().as_str(), "ENABLED", "{table}");
    }

    let cases: [(&str, &str, &str); 4] = [
        ("FAILSOFT_QUEUE_URL", "", "FAILSOFT_QUEUE_URL"),
        ("FAILSOFT_VISIBILITY_TIMEOUT_SECS", "5", "FAILSOFT_VISIBILITY_TIMEOUT_SECS"),
        ("FAILSOFT_INTERNAL_SECRET", "short", "FAILSOFT_INTERNAL_SECRET"),
        ("FAILSOFT_ALERT_FORMAT", "pagerduty", "FAILSOFT_ALERT_ROUTING_KEY"),
    ];
    for (name, value, named) in cases {
        let (code, _, err) =
            stack.failsoft(&["worker"], &[(name, value), ("FAILSOFT_ALERT_URL", "http://127.0.0.1:9/a")]).await;
        assert_eq!(code, 2, "{name}={value}: {err}");
        assert!(err.contains(named), "{name}={value}: {err}");
    }
}

/// Runs `failsoft worker` on `queue_url`; returns its exit code and stderr,
/// or panics if it is still running after `within` (a worker that should
/// have refused to start), killing it by PID first.
async fn worker_exit(stack: &OriginStack, queue_url: &str, within: Duration) -> (i32, String) {
    let mut cmd = origin_support::program("failsoft");
    // As the lab's administrator: the worker's own key may read only the
    // stack's queue, and these are made for the test.
    cmd.arg("worker")
        .envs(stack.env_as(origin_support::As::Admin, &[("FAILSOFT_QUEUE_URL", queue_url)]))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("failsoft runs");
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        if Instant::now() >= deadline {
            // SAFETY: signalling our own child by its PID; reaped below.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = child.wait();
            panic!("the worker on {queue_url} still ran after {within:?}: it should have refused the queue");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_refuses_a_queue_that_does_not_fit_its_settings() {
    let stack = OriginStack::start().await;
    // The lab's queue (the template's defaults) fits the tests' settings.
    let worker = stack.worker(&[]).await;
    drop(worker);

    let dlq_arn = stack
        .sqs
        .get_queue_attributes()
        .queue_url(&stack.dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    let redrive = |count: u32| json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": count}).to_string();
    // The tests' worker: processing limit 2 s, backoff cap 2 s (one receive
    // a second at the least), budget 900 s (tests/tests/origin_support).
    let cases = [
        ("few-receives", "12", "1209600", redrive(100), "maxReceiveCount", "after 100 receives, about 100 s"),
        (
            "short-visibility",
            "6",
            "1209600",
            redrive(1000),
            "VisibilityTimeout",
            "visibility timeout of 6 s is under 6 × FAILSOFT_PROCESSING_LIMIT_SECS (2 s) = 12 s",
        ),
        (
            "short-retention",
            "12",
            "600",
            redrive(1000),
            "MessageRetentionPeriod",
            "keeps a message 600 s, under FAILSOFT_RETRY_BUDGET_SECS (900 s)",
        ),
    ];
    for (name, visibility, retention, redrive, attribute, numbers) in cases {
        let url = stack
            .sqs
            .create_queue()
            .queue_name(format!("{name}.fifo"))
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::VisibilityTimeout, visibility)
            .attributes(QueueAttributeName::MessageRetentionPeriod, retention)
            .attributes(QueueAttributeName::RedrivePolicy, redrive)
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let (code, err) = worker_exit(&stack, &url, Duration::from_secs(30)).await;
        assert_eq!(code, 2, "{name}: {err}");
        let line = err.lines().find(|l| l.starts_with("failsoft: ")).unwrap_or_else(|| panic!("{name}: {err}"));
        assert!(line.contains("the work queue (FAILSOFT_QUEUE_URL) does not fit the settings"), "{name}: {line}");
        assert!(line.contains(&format!("{attribute}: ")), "{name} names {attribute}: {line}");
        assert!(line.contains(numbers), "{name}: `{numbers}` in {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_sigterm_finishes_deliveries_in_flight_and_exits_0() {
    let stack = OriginStack::start().await;
    // Each write: a look-up and a create at 600 ms each.
    stack.crm(json!({"mode": "slow", "latencyMs": 600})).await;
    for i in 0..10 {
        stack.enqueue_write(&format!("term-{i}"), &format!("+44 20 7946 {:04}", 4000 + i), "term").await;
    }
    let mut worker = stack.worker(&[("FAILSOFT_WORKER_CONCURRENCY", "2")]).await;
    wait_for("deliveries in flight", Duration::from_secs(30), || async {
        (stack.sim_count("caseQueries").await >= 3).then_some(())
    })
    .await;
    let asked = Instant::now();
    let exited_0 = tokio::task::spawn_blocking(move || {
        let ok = worker.service.stop(Duration::from_secs(15));
        (ok, worker)
    })
    .await
    .unwrap();
    let took = asked.elapsed();
    assert!(exited_0.0, "exit status 0 after SIGTERM");
    assert!(took < Duration::from_secs(6), "stopped in {took:?}");
    // Every delivery that had started was finished: each look-up has its create.
    let started = stack.sim_count("caseQueries").await;
    let ledger = stack.ledger().await;
    assert_eq!(ledger.len() as u64, started, "a delivery was cut short");
    assert!(ledger.len() < 10, "it stopped receiving");
    for id in refs(&ledger) {
        assert_eq!(stack.result_status(&id).await.as_deref(), Some("COMPLETE"), "{id}");
    }
    // The rest is still queued, and a new worker delivers it, once each.
    stack.crm(json!({"mode": "up"})).await;
    let _worker = stack.worker(&[]).await;
    let ledger = stack.ledger_with(10, Duration::from_secs(60)).await;
    let mut delivered = refs(&ledger);
    delivered.sort();
    delivered.dedup();
    assert_eq!(delivered.len(), 10, "once each: {:?}", refs(&ledger));
    assert_eq!(ledger.len(), 10);
}

/// SQS goes on handing messages to a long poll whose client has gone, and
/// such a message stays hidden for the visibility timeout (12 s here; 120 s
/// by default, on every rolling deploy). A stopping worker lets its poll run
/// out and hands back what it got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_a_message_handed_to_a_stopping_workers_poll_goes_straight_back() {
    let stack = OriginStack::start().await;
    let mut old = stack.worker(&[("FAILSOFT_RECEIVE_WAIT_SECS", "10")]).await;
    // One delivery, after which the worker is back in its 10 s long poll.
    stack.enqueue_write("before-stop", "+44 20 7946 4100", "first").await;
    stack.ledger_with(1, Duration::from_secs(30)).await;

    old.service.terminate();
    stack.enqueue_write("during-stop", "+44 20 7946 4101", "second").await;
    let sent = Instant::now();
    let exited_0 = tokio::task::spawn_blocking(move || old.service.stop(Duration::from_secs(20))).await.unwrap();
    assert!(exited_0, "exit status 0 after SIGTERM");
    assert_eq!(stack.ledger().await.len(), 1, "a stopped worker starts no delivery");

    let _new = stack.worker(&[]).await;
    let ledger = stack.ledger_with(2, Duration::from_secs(30)).await;
    assert_eq!(refs(&ledger), ["before-stop", "during-stop"]);
    let took = sent.elapsed();
    // Handed back at once, not after the 12 s visibility timeout.
    assert!(took < Duration::from_secs(10), "delivered {took:?} after it was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_refreshes_update_last_known_and_push_signed_entries_to_the_edge() {
    let stack = OriginStack::start().await;
    stack.admin("/admin/customers", json!([{"phone": "+442079460301", "customerId": "C-301", "tier": "gold"}])).await;
    let edge = AlertReceiver::start(200).await;
    // This edge records every request: no scheduled outbox drain calls.
    let worker =
        stack.worker(&[("FAILSOFT_EDGE_URL", edge.url.as_str()), ("FAILSOFT_EDGE_OUTBOX_DRAIN_SECS", "0")]).await;
    stack.enqueue(&refresh_envelope("refresh-known", "+44 20 7946 0301")).await;
    stack.enqueue(&refresh_envelope("refresh-unknown", "+44 20 7946 0399")).await;

    let pushes = wait_for("two cache pushes", Duration::from_secs(30), || async {
        let all = edge.all();
        (all.len() >= 2).then_some(all)
    })
    .await;
    let mut nonces = signature::ReplayCache::new(16);
    for push in &pushes {
        assert_eq!(push.method, "PUT");
        let header = |name: &str| push.headers.get(name).map(String::as_str);
        let presented = signature::Presented {
            signature: header(signature::SIGNATURE_HEADER),
            timestamp: header(signature::TIMESTAMP_HEADER),
            nonce: header(signature::NONCE_HEADER),
        };
        let signed = signature::Signed::new("PUT", &push.path, &push.raw);
        let verified = signature::verify(INTERNAL_SECRET.as_bytes(), &presented, &signed, now_secs(), 300);
        let verified = verified.expect("the push is signed with the internal secret over PUT and its path");
        assert_eq!(nonces.admit(&verified, now_secs(), 300), Ok(()), "each push has its own nonce");
        let elsewhere = signature::Signed::new("PUT", "/v1/internal/cache/other", &push.raw);
        assert!(signature::verify(INTERNAL_SECRET.as_bytes(), &presented, &elsewhere, now_secs(), 300).is_err());
        let text = String::from_utf8_lossy(&push.raw);
        assert!(!text.contains("7946"), "no phone number in a push: {text}");
    }
    let known_key = entity_for("+44 20 7946 0301");
    let known = pushes.iter().find(|p| p.path == format!("/v1/internal/cache/{known_key}")).expect("the known push");
    let entry: CacheEntry = serde_json::from_slice(&known.raw).unwrap();
    assert_eq!(
        (entry.record.found, entry.record.customer_id.as_str(), entry.record.tier.as_str()),
        (true, "C-301", "gold")
    );
    let unknown_key = entity_for("+44 20 7946 0399");
    let unknown = pushes.iter().find(|p| p.path.ends_with(&unknown_key)).expect("the unknown push");
    assert_eq!(unknown.body["record"]["found"], false);
    assert_eq!(unknown.body["record"]["customerId"], "UNKNOWN");

    let item = stack
        .ddb
        .get_item()
        .table_name("failsoft-last-known")
        .key("entityKey", AttributeValue::S(known_key.clone()))
        .send()
        .await
        .unwrap()
        .item
        .expect("a last-known item");
    let stored: CacheEntry = serde_json::from_str(item["entry"].as_s().unwrap()).unwrap();
    assert_eq!(stored, entry);
    let expires: u64 = item["expiresAt"].as_n().unwrap().parse().unwrap();
    let horizon = 7 * 86_400;
    assert!(expires.abs_diff(entry.fetched_at_ms / 1000 + horizon) <= 1, "TTL = the last-known horizon");

    // The refresh is recorded under a key of its own: a lookup is no write,
    // and the results API answers for writes only.
    let records = refresh_records(&stack, "refresh-known").await;
    assert_eq!(records.len(), 1, "{records:?}");
    let result: Value = serde_json::from_str(records[0]["result"].as_s().unwrap()).unwrap();
    assert_eq!(result["record"]["customerId"], "C-301");
    let key = records[0]["correlationId"].as_s().unwrap();
    assert!(key.starts_with("refresh:refresh-known:"), "{key}");
    let (status, body) = stack.result(&worker, "refresh-known").await;
    assert_eq!(status, 404, "{body}");
}

/// The refresh records of the lookup `correlation_id` in the results table.
async fn refresh_records(stack: &OriginStack, correlation_id: &str) -> Vec<HashMap<String, AttributeValue>> {
    let page = stack
        .ddb
        .scan()
        .table_name("failsoft-results")
        .filter_expression("lookupCorrelationId = :c AND kind = :k")
        .expression_attribute_values(":c", AttributeValue::S(correlation_id.to_owned()))
        .expression_attribute_values(":k", AttributeValue::S("refresh".to_owned()))
        .send()
        .await
        .expect("Scan");
    page.items().to_vec()
}

/// An Architect flow passes `Call.ConversationId` as the correlationId of
/// the lookup and of the case it creates. A refresh delivered first must
/// not pass for the case: the case is still created, once, and its result
/// is the case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_a_lookup_and_a_case_sharing_a_correlation_id_are_both_delivered() {
    let stack = OriginStack::start().await;
    let worker = stack.worker(&[]).await;
    let (id, phone) = ("conversation-5b1e", "+44 20 7946 0311");
    stack.enqueue(&refresh_envelope(id, phone)).await;
    wait_for("the refresh to be delivered", Duration::from_secs(30), || async {
        (refresh_records(&stack, id).await.len() == 1 && stack.depth(&stack.queue_url).await == 0).then_some(())
    })
    .await;

    stack.enqueue_write(id, phone, "call me back").await;
    let ledger = stack.ledger_with(1, Duration::from_secs(30)).await;
    assert_eq!(refs(&ledger), vec![id.to_owned()]);
    let (status, body) = stack.result(&worker, id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "COMPLETE", "{body}");
    assert!(body["caseId"].as_str().is_some_and(|c| c.starts_with("CASE-")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_results_api_authenticates_hides_expired_and_poison_is_dead_lettered() {
    let stack = OriginStack::start().await;
    let worker = stack.worker(&[]).await;
    let health: Value = stack.http.get(format!("{}/healthz", worker.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["breaker"], "closed");

    let url = format!("{}/v1/results/anything", worker.url());
    let unsigned = stack.http.get(&url).send().await.unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);
    let forged = stack.signed_read(&worker, "anything", "some-other-secret-0000").send().await.unwrap();
    assert_eq!(forged.status().as_u16(), 401);
    let (status, body) = stack.result(&worker, "never-seen").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "RESULT_NOT_FOUND");

    let put = |id: &str, status: &str, expires: u64| {
        stack
            .ddb
            .put_item()
            .table_name("failsoft-results")
            .item("correlationId", AttributeValue::S(id.to_owned()))
            .item("status", AttributeValue::S(status.to_owned()))
            .item("result", AttributeValue::S(r#"{"caseId":"CASE-9"}"#.to_owned()))
            .item("caseId", AttributeValue::S("CASE-9".to_owned()))
            .item("expiresAt", AttributeValue::N(expires.to_string()))
            .send()
    };
    put("expired-1", "COMPLETE", now_secs() - 10).await.unwrap();
    put("claimed-1", "IN_FLIGHT", now_secs() + 3_600).await.unwrap();
    put("done-1", "COMPLETE", now_secs() + 3_600).await.unwrap();
    assert_eq!(stack.result(&worker, "expired-1").await.0, 404, "TTL-expired items are not served");
    let (_, claimed) = stack.result(&worker, "claimed-1").await;
    assert_eq!(claimed["status"], "PENDING", "a claim reads as pending");
    assert_eq!(claimed["result"], Value::Null);
    let (_, done) = stack.result(&worker, "done-1").await;
    assert_eq!(
        done,
        json!({"correlationId": "done-1", "status": "COMPLETE", "caseId": "CASE-9",
               "result": {"caseId": "CASE-9", "status": null, "createdAt": null}, "reason": null, "warning": null})
    );

    // A body that is not an envelope can never succeed: dead-letter it.
    stack
        .sqs
        .send_message()
        .queue_url(&stack.queue_url)
        .message_body("this is not JSON")
        .message_group_id("poison")
        .message_deduplication_id("poison-1")
        .send()
        .await
        .unwrap();
    let dead = wait_for("the poison message in the DLQ", Duration::from_secs(30), || async {
        stack.dead_letters().await.into_iter().next()
    })
    .await;
    assert_eq!(dead.attributes["reason"], "MALFORMED_ENVELOPE");
    assert_eq!(dead.attributes["errorClass"], "invalid");
    assert_eq!(dead.attributes["attempts"], "1");
}
