//! The origin worker delivering queued writes through CRM failures: an
//! outage, a breaker that stops the hammering, throttling, a backoff that
//! counts failures, an expiring retry budget, per-customer order, and slow
//! deliveries kept invisible.
//! Real processes: moto's server, the CRM simulator, `failsoft worker`.

mod origin_support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use origin_support::{OriginStack, refs, sample, wait_for};
use serde_json::{Value, json};

const PHONES: [&str; 4] = ["+44 20 7946 0101", "+44 20 7946 0102", "+44 20 7946 0103", "+44 20 7946 0104"];

/// Asserts the ledger holds exactly one case per id, and for each phone
/// (FIFO group) the cases in the order they were enqueued.
fn assert_once_each_in_order(ledger: &[Value], enqueued: &[(String, &str)]) {
    let refs = refs(ledger);
    let unique: HashSet<&String> = refs.iter().collect();
    assert_eq!(unique.len(), refs.len(), "a duplicated create: {refs:?}");
    let expected: HashSet<&String> = enqueued.iter().map(|(id, _)| id).collect();
    assert_eq!(unique, expected, "the ledger holds exactly the enqueued writes");
    let mut by_group: HashMap<&str, Vec<&String>> = HashMap::new();
    for (id, phone) in enqueued {
        by_group.entry(phone).or_default().push(id);
    }
    for (phone, ids) in by_group {
        let delivered: Vec<&String> = refs.iter().filter(|r| ids.contains(r)).collect();
        assert_eq!(delivered, ids, "per-customer order for {phone}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_a_crm_outage_ends_with_every_write_delivered_once_in_order() {
    let stack = OriginStack::start().await;
    let worker = stack.worker(&[]).await;
    stack.crm(json!({"mode": "down"})).await;
    let outage = Instant::now();

    let mut enqueued = Vec::new();
    for round in 0..4 {
        for phone in PHONES {
            let id = format!("outage-{}-{round}", &phone[phone.len() - 4..]);
            stack.enqueue_write(&id, phone, &format!("round {round}")).await;
            enqueued.push((id, phone));
        }
    }
    // The breaker opens: the worker stops receiving and only probes.
    wait_for("the breaker to open", Duration::from_secs(30), || async {
        let health: Value = stack.http.get(format!("{}/healthz", worker.url())).send().await.ok()?.json().await.ok()?;
        (health["breaker"] == "open" || health["breaker"] == "half_open").then_some(())
    })
    .await;
    let outage_for = Duration::from_secs(20);
    tokio::time::sleep(outage_for.saturating_sub(outage.elapsed())).await;
    assert!(stack.ledger().await.is_empty(), "nothing reached a CRM that is down");
    stack.crm(json!({"mode": "up"})).await;

    let ledger = stack.ledger_with(enqueued.len(), Duration::from_secs(60)).await;
    // Let any straggler (a duplicate would be one) arrive, then look again.
    wait_for("the work queue to drain", Duration::from_secs(30), || async {
        (stack.depth(&stack.queue_url).await == 0).then_some(())
    })
    .await;
    let ledger_after = stack.ledger().await;
    assert_eq!(ledger_after.len(), ledger.len(), "no create after the queue drained");
    assert_once_each_in_order(&ledger_after, &enqueued);
    assert_eq!(stack.depth(&stack.dlq_url).await, 0, "nothing dead-lettered");
    for (id, _) in &enqueued {
        let (status, body) = stack.result(&worker, id).await;
        assert_eq!(status, 200, "{id}: {body}");
        assert_eq!(body["status"], "COMPLETE", "{id}: {body}");
        assert!(body["caseId"].as_str().is_some_and(|c| c.starts_with("CASE-")), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_the_breaker_stops_hammering_a_failing_crm_and_the_replay_ramps_up() {
    let stack = OriginStack::start().await;
    stack.crm(json!({"mode": "error", "status": 503})).await;
    let _worker = stack.worker(&[("FAILSOFT_REPLAY_RATE_MAX", "10")]).await;
    let mut enqueued = Vec::new();
    for i in 0..30 {
        let phone = PHONES[i % PHONES.len()];
        let id = format!("breaker-{i}");
        stack.enqueue_write(&id, phone, "breaker").await;
        enqueued.push((id, phone));
    }
    wait_for("the first failures", Duration::from_secs(20), || async {
        (stack.sim_count("failed").await >= 5).then_some(())
    })
    .await;
    let before = stack.sim_count("requests").await;
    let window = Duration::from_secs(8);
    tokio::time::sleep(window).await;
    let during = stack.sim_count("requests").await - before;
    // Open: one probe per 1 s cool-down, and nothing else. Without the
    // breaker, 30 messages retrying every 0-2 s make well over 100 calls.
    assert!(during <= 12, "{during} calls reached a failing CRM in {window:?}");

    stack.crm(json!({"mode": "up"})).await;
    let ledger = stack.ledger_with(enqueued.len(), Duration::from_secs(90)).await;
    assert_once_each_in_order(&ledger, &enqueued);
    // The ceiling is 10 deliveries a second, and after the outage the rate
    // starts again from its floor: 30 creates cannot land in under 3 s.
    let created: Vec<u64> = ledger.iter().filter_map(|c| c["createdAt"].as_u64()).collect();
    let span = created.iter().max().unwrap() - created.iter().min().unwrap();
    assert!(span >= 2_900, "30 creates within {span} ms: the replay was not paced");
}

/// A CRM that allows 10 calls a second and says so in `RateLimit-*`
/// headers: the replay learns the limit from its first answers and keeps
/// just under it (each write is a look and a create, two calls), so the
/// backlog drains without being throttled, where a worker going at its
/// 200/s ceiling would meet a 429 for nearly every call past the tenth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_the_replay_keeps_under_the_limit_the_crm_states() {
    let stack = OriginStack::start().await;
    let limit = stack.admin("/admin/rate-limit", json!({"limit": 10, "windowSecs": 1, "headers": "ietf"})).await;
    assert_eq!(limit["limit"], 10, "{limit}");
    let mut enqueued = Vec::new();
    for i in 0..30 {
        let phone = PHONES[i % PHONES.len()];
        let id = format!("limited-{i}");
        stack.enqueue_write(&id, phone, "limited").await;
        enqueued.push((id, phone));
    }
    let worker = stack.worker(&[("FAILSOFT_WRITE_SETTLE_MS", "0")]).await;
    let ledger = stack.ledger_with(enqueued.len(), Duration::from_secs(60)).await;
    assert_once_each_in_order(&ledger, &enqueued);
    let stats = stack.sim_stats().await;
    let calls = stats["requests"].as_u64().unwrap();
    let throttled = stats["throttled"].as_u64().unwrap();
    assert!(calls >= 60, "{stats}");
    // The first answers arrive while the first calls go out at 200/s: a
    // call or two may beat the news of the limit. Not more.
    assert!(throttled <= 1, "{throttled} of {calls} calls throttled: {stats}");
    let metrics =
        stack.http.get(format!("{}/metrics", worker.operator_url())).send().await.unwrap().text().await.unwrap();
    let ceiling = sample(&metrics, "failsoft_origin_replay_ceiling", &[]).expect("the ceiling gauge");
    assert!((ceiling - 9.5).abs() < 1e-9, "ceiling {ceiling}: 95 % of the stated 10/s");
}

/// While the CRM hangs, the open breaker's probe gives up at the CRM
/// deadline (not the processing limit) and probes start
/// `FAILSOFT_WORKER_PROBE_EVERY_MS` apart, so a CRM that comes back is found
/// within about one interval. With the processing limit (2 s here) and the
/// edge's cool-down (1 s) a probe went out every 3 s; counting the interval
/// from a probe's end, every 0.8 s here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_a_hung_crm_is_probed_at_the_crm_deadline_and_the_probe_cadence() {
    let stack = OriginStack::start().await;
    stack.crm(json!({"mode": "hang"})).await;
    let worker = stack.worker(&[("FAILSOFT_CRM_DEADLINE_MS", "300"), ("FAILSOFT_WORKER_PROBE_EVERY_MS", "500")]).await;
    let enqueued: Vec<(String, &str)> = (0..6).map(|i| (format!("probe-{i}"), PHONES[i % PHONES.len()])).collect();
    for (id, phone) in &enqueued {
        stack.enqueue_write(id, phone, "probe").await;
    }
    // The attempts fail at the deadline and open the breaker (its gauge:
    // 2 open, 1 half-open); from then on only probes reach the CRM. The
    // window starts at the first of them.
    let opened = wait_for("the breaker to open", Duration::from_secs(30), || async {
        let metrics =
            stack.http.get(format!("{}/metrics", worker.operator_url())).send().await.ok()?.text().await.ok()?;
        let open = sample(&metrics, "failsoft_origin_breaker_state", &[]).is_some_and(|state| state >= 1.0);
        if open { Some(stack.sim_count("requests").await) } else { None }
    })
    .await;
    let before = wait_for("the first probe", Duration::from_secs(5), || async {
        let now = stack.sim_count("requests").await;
        (now > opened).then_some(now)
    })
    .await;
    let window = Duration::from_secs(5);
    tokio::time::sleep(window).await;
    let probes = stack.sim_count("requests").await - before;
    // One every 0.5 s: about 10 in 5 s. From each probe's end (0.3 s
    // deadline + 0.5 s), about 6; with the processing limit as the probe's
    // deadline, 4 at most.
    assert!((8..=12).contains(&probes), "{probes} probes reached the hung CRM in {window:?}");

    stack.crm(json!({"mode": "up"})).await;
    let ledger = stack.ledger_with(enqueued.len(), Duration::from_secs(30)).await;
    assert_once_each_in_order(&ledger, &enqueued);
}

/// A probe sent while the CRM hangs comes back failed when the hang ends
/// (the simulator answers what it held with 503, as a restarted CRM drops
/// its connections). The next probe follows one interval after the failed
/// one was *sent*, so with a deadline longer than the interval the CRM is
/// found back at once, not an interval after the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_a_probe_held_by_a_hang_that_ends_is_followed_at_once() {
    let stack = OriginStack::start().await;
    stack.crm(json!({"mode": "hang"})).await;
    let worker = stack
        .worker(&[
            ("FAILSOFT_CRM_DEADLINE_MS", "3000"),
            ("FAILSOFT_PROCESSING_LIMIT_SECS", "4"),
            ("FAILSOFT_VISIBILITY_TIMEOUT_SECS", "24"),
            ("FAILSOFT_WORKER_PROBE_EVERY_MS", "2000"),
        ])
        .await;
    for (i, phone) in PHONES.iter().enumerate() {
        stack.enqueue_write(&format!("held-{i}"), phone, "held").await;
        stack.enqueue_write(&format!("held-{i}-b"), phone, "held").await;
    }
    // The first attempts hang and open the breaker; then each probe hangs
    // for its 3 s deadline, and the next starts at once.
    wait_for("the breaker to open", Duration::from_secs(30), || async {
        let health: Value = stack.http.get(format!("{}/healthz", worker.url())).send().await.ok()?.json().await.ok()?;
        (health["breaker"] == "half_open").then_some(())
    })
    .await;
    // End the hang 2.5 s into a probe.
    let seen = stack.sim_count("requests").await;
    wait_for("the next probe to go out", Duration::from_secs(10), || async {
        (stack.sim_count("requests").await > seen).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let before = stack.sim_count("requests").await;
    stack.crm(json!({"mode": "up"})).await;
    let up = Instant::now();
    wait_for("the next probe", Duration::from_secs(10), || async {
        (stack.sim_count("requests").await > before).then_some(())
    })
    .await;
    let found = up.elapsed();
    stack.ledger_with(2 * PHONES.len(), Duration::from_secs(30)).await;
    // At once: the held probe failed 2.5 s after it was sent, past the 2 s
    // interval. Counted from the failure, the next would wait 2 s.
    assert!(found < Duration::from_millis(1_000), "the next probe went out {found:?} after the CRM came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_a_429_with_retry_after_is_not_retried_sooner() {
    let stack = OriginStack::start().await;
    stack.crm(json!({"mode": "throttle", "retryAfterSecs": 5})).await;
    let _worker = stack.worker(&[]).await;
    stack.enqueue_write("throttled-1", PHONES[0], "throttled").await;
    wait_for("the first (throttled) attempt", Duration::from_secs(20), || async {
        (stack.sim_count("requests").await >= 1).then_some(())
    })
    .await;
    let first_seen = Instant::now();
    let first_seen_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    // Still throttling for 4.5 s: any earlier retry would show as a request.
    tokio::time::sleep(Duration::from_millis(4_500).saturating_sub(first_seen.elapsed())).await;
    assert_eq!(stack.sim_count("requests").await, 1, "retried before Retry-After: 5");
    stack.crm(json!({"mode": "up"})).await;
    let ledger = stack.ledger_with(1, Duration::from_secs(30)).await;
    let created = ledger[0]["createdAt"].as_u64().unwrap();
    // `first_seen_ms` is no earlier than the 429 itself.
    assert!(created >= first_seen_ms + 4_800, "created {} ms after the 429", created - first_seen_ms);
    assert_eq!(refs(&ledger), ["throttled-1"]);
}

/// Receives are not attempts: a write settling, a message handed back
/// behind its group's head or a lease that ran out are received again
/// without a failure. The backoff doubles on the failures the worker saw;
/// doubling on `ApproximateReceiveCount` gave a write received seven times
/// and failing once up to 64 s before its second attempt, after an outage
/// that had already ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_a_retry_backs_off_by_failed_attempts_not_by_receives() {
    let stack = OriginStack::start().await;
    stack.enqueue_write("receives-1", PHONES[2], "received often").await;
    const RECEIVES: usize = 6;
    for n in 0..RECEIVES {
        let got = stack.sqs.receive_message().queue_url(&stack.queue_url).visibility_timeout(0).send().await.unwrap();
        assert_eq!(got.messages().len(), 1, "receive {n} hands it out and back");
    }
    stack.crm(json!({"mode": "error", "status": 503})).await;
    let _worker = stack.worker(&[("FAILSOFT_BACKOFF_BASE_MS", "1000"), ("FAILSOFT_BACKOFF_CAP_MS", "60000")]).await;
    wait_for("the first (failed) attempt", Duration::from_secs(20), || async {
        (stack.sim_count("failed").await >= 1).then_some(())
    })
    .await;
    let failed = Instant::now();
    stack.crm(json!({"mode": "up"})).await;
    let ledger = stack.ledger_with(1, Duration::from_secs(90)).await;
    let retried_after = failed.elapsed();
    assert_eq!(refs(&ledger), ["receives-1"]);
    assert_eq!(stack.sim_count("failed").await, 1, "one failure, then delivered");
    // The first failure's backoff is at most the base, 1 s, rounded up to
    // SQS's whole seconds; then a receive and the CRM call.
    assert!(
        retried_after < Duration::from_secs(6),
        "the second attempt came {retried_after:?} after the first failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_an_expired_retry_budget_dead_letters() {
    let stack = OriginStack::start().await;
    stack.crm(json!({"mode": "error", "status": 500})).await;
    // A breaker that never opens here, so every retry is an attempt.
    let worker = stack
        .worker(&[
            ("FAILSOFT_RETRY_BUDGET_SECS", "3"),
            ("FAILSOFT_BREAKER_WINDOW", "64"),
            ("FAILSOFT_BREAKER_FAILURE_THRESHOLD", "64"),
        ])
        .await;
    stack.enqueue_write("budget-1", PHONES[1], "budget").await;
    let dead = wait_for("the dead letter", Duration::from_secs(30), || async {
        stack.dead_letters().await.into_iter().next()
    })
    .await;
    assert_eq!(dead.attributes["reason"], "RETRY_BUDGET_EXHAUSTED");
    assert_eq!(dead.attributes["errorClass"], "transient");
    assert_eq!(dead.attributes["lastStatus"], "500");
    assert!(dead.attributes["attempts"].parse::<u32>().unwrap() >= 2, "{:?}", dead.attributes);
    let first: u64 = dead.attributes["firstAttemptAt"].parse().unwrap();
    let last: u64 = dead.attributes["lastAttemptAt"].parse().unwrap();
    let submitted = dead.body["submittedAt"].as_u64().unwrap();
    // Dead-lettered once the next retry would pass the 3 s budget: not
    // sooner, and not much later (a 2 s backoff cap, a 1 s poll).
    assert!(last >= first, "{first}..{last}");
    assert!(last - submitted <= 3_000 + 2_000 + 2_000, "dead-lettered {} ms after submission", last - submitted);
    assert_eq!(dead.body["correlationId"], "budget-1");
    let (_, body) = stack.result(&worker, "budget-1").await;
    assert_eq!(body["status"], "FAILED");
    assert_eq!(body["reason"], "RETRY_BUDGET_EXHAUSTED");
    assert!(stack.ledger().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_per_customer_order_holds_through_a_flapping_crm() {
    let stack = OriginStack::start().await;
    stack.crm(json!({"mode": "flap", "periodMs": 100})).await;
    let _worker = stack.worker(&[("FAILSOFT_BREAKER_FAILURE_THRESHOLD", "20")]).await;
    let mut enqueued = Vec::new();
    for i in 0..10 {
        for phone in &PHONES[..3] {
            let id = format!("order-{}-{i:02}", &phone[phone.len() - 4..]);
            stack.enqueue_write(&id, phone, &format!("step {i}")).await;
            enqueued.push((id, *phone));
        }
    }
    let ledger = stack.ledger_with(enqueued.len(), Duration::from_secs(120)).await;
    assert!(stack.sim_count("failed").await > 0, "the flapping CRM failed some calls");
    assert_once_each_in_order(&ledger, &enqueued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_the_heartbeat_keeps_slow_deliveries_from_being_redelivered() {
    let stack = OriginStack::start().await;
    // 10 writes of one customer, 2 calls each at 0.8 s: 16 s of work for one
    // FIFO group, all received in one batch, against a 12 s visibility timeout.
    stack.crm(json!({"mode": "slow", "latencyMs": 800})).await;
    let mut enqueued = Vec::new();
    for i in 0..10 {
        let id = format!("slow-{i}");
        stack.enqueue_write(&id, PHONES[2], "slow").await;
        enqueued.push((id, PHONES[2]));
    }
    let _worker = stack
        .worker(&[
            ("FAILSOFT_PROCESSING_LIMIT_SECS", "2"),
            ("FAILSOFT_VISIBILITY_TIMEOUT_SECS", "12"),
            ("FAILSOFT_WORKER_CONCURRENCY", "10"),
        ])
        .await;
    let ledger = stack.ledger_with(enqueued.len(), Duration::from_secs(60)).await;
    assert_once_each_in_order(&ledger, &enqueued);
    wait_for("the work queue to drain", Duration::from_secs(20), || async {
        (stack.depth(&stack.queue_url).await == 0).then_some(())
    })
    .await;
    // Each write was looked up and created once: no second consumer.
    assert_eq!(stack.sim_count("creates").await, 10, "a write was delivered twice");
    assert_eq!(stack.sim_count("caseQueries").await, 10, "a write was picked up twice");
}
