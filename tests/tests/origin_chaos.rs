//! Chaos: a CRM that ignores `Idempotency-Key`, and a worker killed with
//! SIGKILL five times at random moments while it delivers 200 creates. The
//! write-once protocol (claim, look up by externalRef, create, record) must
//! leave exactly one case per correlationId: none lost, none duplicated.

mod origin_support;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;
use origin_support::{OriginStack, refs, wait_for, write_envelope};
use serde_json::{Value, json};

const WRITES: usize = 200;
const CUSTOMERS: usize = 20;
const KILLS: usize = 5;

/// xorshift64*: the test's only randomness, seeded from the clock and
/// printed, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn between_ms(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_sigkill_five_times_during_200_creates_leaves_exactly_200_cases() {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 | 1);
    println!("chaos seed {seed} (set CHAOS_SEED to replay)");
    let mut rng = Rng(seed);

    let stack = OriginStack::start().await;
    stack.admin("/admin/idempotency", json!({"mode": "ignore"})).await;
    // Latency widens the windows a kill can land in (mid-create, between
    // the create and the record), and keeps the work going past the kills.
    stack.crm(json!({"mode": "slow", "latencyMs": 120})).await;
    // Short leases and visibility, so killed deliveries come back soon.
    let settings = [("FAILSOFT_PROCESSING_LIMIT_SECS", "1"), ("FAILSOFT_VISIBILITY_TIMEOUT_SECS", "6")];

    let phones: Vec<String> = (0..CUSTOMERS).map(|c| format!("+44 20 7946 {:04}", 3000 + c)).collect();
    let mut per_customer: HashMap<String, Vec<String>> = HashMap::new();
    for i in 0..WRITES {
        let phone = &phones[i % CUSTOMERS];
        let id = format!("chaos-{i:03}");
        stack.enqueue_write(&id, phone, "chaos").await;
        per_customer.entry(phone.clone()).or_default().push(id);
    }

    let started = Instant::now();
    for kill in 0..KILLS {
        let worker = stack.worker(&settings).await;
        tokio::time::sleep(rng.between_ms(300, 2_500)).await;
        let delivered = stack.ledger().await.len();
        println!("kill {} at {:?}: {delivered} cases so far", kill + 1, started.elapsed());
        assert!(delivered < WRITES, "kill {} landed after the last create: nothing to interrupt", kill + 1);
        worker.kill();
    }
    let _worker = stack.worker(&settings).await;
    let ledger = stack.ledger_with(WRITES, Duration::from_secs(240)).await;
    wait_for("the work queue to drain", Duration::from_secs(60), || async {
        (stack.depth(&stack.queue_url).await == 0).then_some(())
    })
    .await;
    println!("all delivered after {:?}", started.elapsed());

    let ledger_after = stack.ledger().await;
    assert_eq!(ledger_after.len(), ledger.len(), "a create landed after the queue drained");
    let delivered = refs(&ledger_after);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for r in &delivered {
        *counts.entry(r.as_str()).or_default() += 1;
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "duplicated creates: {duplicated:?}");
    assert_eq!(delivered.len(), WRITES, "exactly {WRITES} creates");
    for ids in per_customer.values() {
        let order: Vec<&String> = delivered.iter().filter(|r| ids.contains(r)).collect();
        assert_eq!(order, ids.iter().collect::<Vec<_>>(), "per-customer order");
    }
    assert_eq!(stack.depth(&stack.dlq_url).await, 0, "nothing dead-lettered");
    for i in 0..WRITES {
        let id = format!("chaos-{i:03}");
        assert_eq!(stack.result_status(&id).await.as_deref(), Some("COMPLETE"), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_a_create_that_landed_before_a_crash_is_found_and_not_repeated() {
    let stack = OriginStack::start().await;
    stack.admin("/admin/idempotency", json!({"mode": "ignore"})).await;
    // The moment a kill can leave behind: the CRM has the case, the results
    // table still has the dead worker's claim, its lease running for 3 s.
    let envelope = write_envelope("landed-1", "+44 20 7946 0501", "created before the crash");
    let created: Value = stack
        .http
        .post(format!("{}/cases", stack.sim.url("api")))
        .json(&envelope.payload["case"])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let case_id = created["caseId"].as_str().unwrap().to_owned();
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    stack
        .ddb
        .put_item()
        .table_name("failsoft-results")
        .item("correlationId", AttributeValue::S("landed-1".into()))
        .item("status", AttributeValue::S("IN_FLIGHT".into()))
        .item("owner", AttributeValue::S("worker-killed".into()))
        .item("leaseUntil", AttributeValue::N((now_ms + 3_000).to_string()))
        .item("expiresAt", AttributeValue::N((now_ms / 1000 + 86_400).to_string()))
        .send()
        .await
        .unwrap();
    let enqueued = Instant::now();
    stack.enqueue(&envelope).await;
    let worker = stack.worker(&[]).await;

    wait_for("the write to complete", Duration::from_secs(30), || async {
        (stack.result_status("landed-1").await.as_deref() == Some("COMPLETE")).then_some(())
    })
    .await;
    assert!(enqueued.elapsed() >= Duration::from_millis(2_500), "the live claim was not waited out");
    let (_, result) = stack.result(&worker, "landed-1").await;
    assert_eq!(result["caseId"], case_id.as_str(), "the case found is the one recorded");
    assert_eq!(refs(&stack.ledger().await), ["landed-1"], "found, not created again");
    assert_eq!(stack.sim_count("creates").await, 1, "only the create before the crash");
    assert!(stack.sim_count("caseQueries").await >= 1);
}
