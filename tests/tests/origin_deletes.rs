//! The worker's batched deletes, against moto's SQS with IAM enforced and
//! signed with the worker's key: deletes made at once share
//! `DeleteMessageBatch` calls, each caller's message is gone when its call
//! returns, and a stale receipt fails only its own delete.

mod origin_support;

use failsoft_origin::queue::deletes::{DeleteError, Deletes, MAX_ENTRIES};
use origin_support::OriginStack;

const MESSAGES: usize = 40;

/// The lab's worker identity, as `failsoft worker` signs.
async fn worker_sqs(stack: &OriginStack) -> aws_sdk_sqs::Client {
    let key = stack.aws.worker().expect("the worker's key");
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&stack.moto.endpoint)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(&key.key, &key.secret, None, None, "tests"))
        .load()
        .await;
    aws_sdk_sqs::Client::new(&config)
}

/// Receives until `n` messages are held (bounded), returning their receipts.
async fn receive(stack: &OriginStack, sqs: &aws_sdk_sqs::Client, n: usize) -> Vec<String> {
    let mut receipts = Vec::new();
    for _ in 0..50 {
        if receipts.len() >= n {
            break;
        }
        let out = sqs
            .receive_message()
            .queue_url(&stack.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("ReceiveMessage");
        receipts.extend(out.messages().iter().filter_map(|m| m.receipt_handle().map(str::to_owned)));
    }
    assert_eq!(receipts.len(), n, "every message received");
    receipts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletes_at_once_share_calls_and_each_message_is_gone_when_its_call_returns() {
    let stack = OriginStack::start().await;
    for i in 0..MESSAGES {
        stack.enqueue_write(&format!("del-{i}"), &format!("+1555000{i:04}"), "delete me").await;
    }
    let sqs = worker_sqs(&stack).await;
    let receipts = receive(&stack, &sqs, MESSAGES).await;
    let deletes = Deletes::start(sqs.clone(), stack.queue_url.clone());

    // Alone, a delete goes out at once, in a call of its own.
    deletes.delete(&receipts[0]).await.expect("a delete the worker's role may make");
    assert_eq!(deletes.calls(), 1);

    // The rest at once, as a drain's deliveries end.
    let mut calls = tokio::task::JoinSet::new();
    for receipt in receipts.into_iter().skip(1) {
        let deletes = deletes.clone();
        calls.spawn(async move { deletes.delete(&receipt).await });
    }
    while let Some(call) = calls.join_next().await {
        call.expect("a caller").expect("its message is deleted");
    }
    let made = deletes.calls() - 1;
    let fewest = (MESSAGES - 1).div_ceil(MAX_ENTRIES) as u64;
    assert!(
        (fewest..(MESSAGES as u64 - 1) / 2).contains(&made),
        "{} deletes at once took {made} calls (at least {fewest})",
        MESSAGES - 1
    );
    assert_eq!(stack.depth(&stack.queue_url).await, 0, "nothing visible or in flight is left");

    // A receipt that is not one fails alone; the delete beside it is taken.
    stack.enqueue_write("del-last", "+15550009999", "delete me").await;
    let last = receive(&stack, &sqs, 1).await.remove(0);
    let (bad, good) = tokio::join!(deletes.delete("not-a-receipt-handle"), deletes.delete(&last));
    assert!(matches!(bad, Err(DeleteError::Failed(_))), "{bad:?}");
    assert_eq!(good, Ok(()));
    assert_eq!(stack.depth(&stack.queue_url).await, 0);
}
