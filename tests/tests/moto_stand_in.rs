//! moto's server stands in for SQS in the tests and the drill; these check
//! the FIFO behaviours `moto_fifo.py` gives it that SQS has and moto 5.2.5
//! lacks, so that a broken launcher fails here and not, at random, as a
//! "duplicate refresh" or a slow drain in a drill.

mod origin_support;

use std::time::{Duration, Instant};

use origin_support::OriginStack;

async fn send(stack: &OriginStack, group: &str, dedup: &str) {
    send_to(&stack.sqs, &stack.queue_url, group, dedup).await;
}

async fn send_to(sqs: &aws_sdk_sqs::Client, queue_url: &str, group: &str, dedup: &str) {
    sqs.send_message()
        .queue_url(queue_url)
        .message_body(format!("{{\"dedup\":\"{dedup}\"}}"))
        .message_group_id(group)
        .message_deduplication_id(dedup)
        .send()
        .await
        .expect("SendMessage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deduplication_id_is_refused_for_its_interval_even_after_a_delete() {
    let stack = OriginStack::start().await;
    send(&stack, "g-1", "d-1").await;
    let got = stack.sqs.receive_message().queue_url(&stack.queue_url).wait_time_seconds(1).send().await.unwrap();
    let message = got.messages().first().expect("the first send is queued");
    let handle = message.receipt_handle().expect("a receipt handle");
    stack.sqs.delete_message().queue_url(&stack.queue_url).receipt_handle(handle).send().await.unwrap();
    assert_eq!(stack.depth(&stack.queue_url).await, 0);

    // SQS keeps refusing the id for five minutes after the first send,
    // deleted or not (moto forgot it on delete).
    send(&stack, "g-1", "d-1").await;
    assert_eq!(stack.depth(&stack.queue_url).await, 0, "a resend within the interval is deduplicated");
    send(&stack, "g-1", "d-2").await;
    assert_eq!(stack.depth(&stack.queue_url).await, 1, "another id is queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sends_of_one_deduplication_id_queue_one_message() {
    let stack = OriginStack::start().await;
    // moto as in an outage: a group with one message in flight and one
    // waiting, and a consumer's long poll behind it. Stock moto spins there,
    // switching threads mid-request, and queued 42-54 messages for these 40
    // ids; the launcher's poll no longer spins, which makes the race rare
    // rather than gone, so the lock stays and this checks it holds.
    send(&stack, "busy", "first").await;
    let got = stack.sqs.receive_message().queue_url(&stack.queue_url).visibility_timeout(120).send().await.unwrap();
    assert_eq!(got.messages().len(), 1);
    let (sqs, url) = (stack.sqs.clone(), stack.queue_url.clone());
    let polling = tokio::spawn(async move { sqs.receive_message().queue_url(url).wait_time_seconds(12).send().await });

    const ROUNDS: usize = 40;
    const SENDERS: usize = 8;
    for round in 0..ROUNDS {
        let dedup = format!("r-{round}");
        let mut sends = tokio::task::JoinSet::new();
        for _ in 0..SENDERS {
            let (sqs, url, dedup) = (stack.sqs.clone(), stack.queue_url.clone(), dedup.clone());
            sends.spawn(async move { send_to(&sqs, &url, "busy", &dedup).await });
        }
        while let Some(sent) = sends.join_next().await {
            sent.expect("a send");
        }
    }
    polling.abort();
    let depth = tokio::time::timeout(Duration::from_secs(30), stack.depth(&stack.queue_url)).await.expect("depth");
    assert_eq!(
        depth,
        1 + ROUNDS as u64,
        "the message in flight, and one of {SENDERS} concurrent sends of each of {ROUNDS} ids"
    );
}

/// The CPU time moto's process has used (user + system), from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("moto's /proc stat");
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("(comm)") + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf reads a constant.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Sends two messages to `group` and receives the first for 120 s: the
/// second is visible but locked behind it. Returns the first's receipt.
async fn lock_group(stack: &OriginStack, group: &str, [first, second]: [&str; 2]) -> String {
    send(stack, group, first).await;
    send(stack, group, second).await;
    let got = stack.sqs.receive_message().queue_url(&stack.queue_url).visibility_timeout(120).send().await.unwrap();
    assert_eq!(got.messages().len(), 1, "the group's first message, now in flight");
    got.messages()[0].receipt_handle().expect("a receipt handle").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_behind_a_locked_group_waits_without_spinning() {
    let stack = OriginStack::start().await;
    lock_group(&stack, "locked", ["one", "two"]).await;

    // "two" is visible but locked behind "one": SQS answers empty after the
    // wait, having used no CPU for it. moto 5.2.5 rescans without pause for
    // the whole wait (a core's worth: about 3 s of CPU here).
    const WAIT_SECS: i32 = 3;
    let pid = stack.moto.pid();
    let before = cpu_secs(pid);
    let got =
        stack.sqs.receive_message().queue_url(&stack.queue_url).wait_time_seconds(WAIT_SECS).send().await.unwrap();
    let used = cpu_secs(pid) - before;
    assert!(got.messages().is_empty(), "nothing of a locked group is handed out");
    assert!(used < 0.5, "moto used {used:.2} s of CPU over a {WAIT_SECS} s wait behind a locked group");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_gets_a_group_s_next_message_once_the_one_in_flight_is_deleted() {
    let stack = OriginStack::start().await;
    let handle = lock_group(&stack, "g", ["first", "second"]).await;

    // A consumer long-polls behind the locked group, as the worker does.
    const WAIT_SECS: i32 = 15;
    let (sqs, url) = (stack.sqs.clone(), stack.queue_url.clone());
    let poll = tokio::spawn(async move {
        let got = sqs.receive_message().queue_url(url).wait_time_seconds(WAIT_SECS).send().await.unwrap();
        (Instant::now(), got.messages().iter().filter_map(|m| m.body().map(str::to_owned)).collect::<Vec<_>>())
    });
    // Give the poll time to reach moto (were it later, it would find the
    // group unlocked at once and this would pass without showing anything).
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.sqs.delete_message().queue_url(&stack.queue_url).receipt_handle(handle).send().await.unwrap();
    let deleted = Instant::now();

    // SQS unlocks the group on the delete, and the waiting poll gets the
    // next message. moto 5.2.5 decides which groups are locked once per
    // receive, so its poll waited out all 15 s (and the worker's its 20 s:
    // a drill's last write once reached the CRM 27 s after recovery).
    let (answered, bodies) = tokio::time::timeout(Duration::from_secs(30), poll).await.expect("the poll ends").unwrap();
    assert_eq!(bodies, [r#"{"dedup":"second"}"#], "the group's next message");
    let after = answered.saturating_duration_since(deleted);
    assert!(after < Duration::from_secs(5), "handed out {after:?} after the delete, not at the end of the wait");
}
