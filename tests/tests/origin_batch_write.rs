//! The batch writer that records refreshes, against moto's DynamoDB: puts
//! made at once share calls, two puts of one key never share one, and each
//! caller's own puts are stored when its call returns.

mod origin_support;

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use failsoft_origin::store::batch_write::{BatchWriter, MAX_ITEMS, Put};
use origin_support::OriginStack;

const TABLE: &str = "failsoft-last-known";

fn put(key: &str, value: &str) -> Put {
    Put {
        table: TABLE.to_owned(),
        key_attribute: "entityKey",
        item: HashMap::from([
            ("entityKey".to_owned(), AttributeValue::S(key.to_owned())),
            ("entry".to_owned(), AttributeValue::S(value.to_owned())),
        ]),
    }
}

async fn stored(stack: &OriginStack, key: &str) -> Option<String> {
    let out = stack
        .ddb
        .get_item()
        .table_name(TABLE)
        .key("entityKey", AttributeValue::S(key.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem");
    out.item.and_then(|item| item.get("entry").and_then(|v| v.as_s().ok()).cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_share_calls_and_each_is_stored_when_its_call_returns() {
    let stack = OriginStack::start().await;
    let writer = BatchWriter::start(stack.ddb.clone());

    // Alone, a put goes out at once, in a call of its own.
    writer.put(vec![put("alone", "1")]).await.expect("a put");
    assert_eq!(stored(&stack, "alone").await.as_deref(), Some("1"));
    assert_eq!(writer.batches(), 1);

    // 120 callers at once, two puts each, as 120 refreshes would.
    const CALLERS: usize = 120;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..CALLERS {
        let (writer, ddb_stack_key) = (writer.clone(), format!("k-{i}"));
        calls.spawn(async move {
            writer.put(vec![put(&ddb_stack_key, "a"), put(&format!("{ddb_stack_key}-b"), "b")]).await?;
            Ok::<_, failsoft_origin::store::results::StoreError>(ddb_stack_key)
        });
    }
    let mut done = Vec::new();
    while let Some(call) = calls.join_next().await {
        done.push(call.expect("a caller").expect("its puts are stored"));
    }
    for key in &done {
        assert_eq!(stored(&stack, key).await.as_deref(), Some("a"), "{key}");
        assert_eq!(stored(&stack, &format!("{key}-b")).await.as_deref(), Some("b"), "{key}-b");
    }
    let batches = writer.batches() - 1;
    let fewest = (2 * CALLERS).div_ceil(MAX_ITEMS - 1) as u64;
    assert!(
        (fewest..(CALLERS as u64) / 2).contains(&batches),
        "{CALLERS} callers at once were written in {batches} calls (at least {fewest})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_puts_of_one_key_never_share_a_call() {
    let stack = OriginStack::start().await;
    let writer = BatchWriter::start(stack.ddb.clone());
    // DynamoDB refuses a batch with a key twice; 30 writers of one key at
    // once must all succeed, each in a call of its own.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..30 {
        let writer = writer.clone();
        calls
            .spawn(async move { writer.put(vec![put("same", &i.to_string()), put(&format!("other-{i}"), "x")]).await });
    }
    while let Some(call) = calls.join_next().await {
        call.expect("a caller").expect("stored");
    }
    assert!(writer.batches() >= 30, "one call per put of the same key: {}", writer.batches());
    let last = stored(&stack, "same").await.expect("the key is stored");
    assert!(last.parse::<u32>().is_ok_and(|n| n < 30), "{last}");
    for i in 0..30 {
        assert_eq!(stored(&stack, &format!("other-{i}")).await.as_deref(), Some("x"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_bad_put_fails_only_its_own_caller() {
    let stack = OriginStack::start().await;
    let writer = BatchWriter::start(stack.ddb.clone());
    // 30 callers at once share calls; one brings an item over DynamoDB's
    // 400 KB limit. Only that caller may fail.
    const BAD: usize = 15;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..30 {
        let writer = writer.clone();
        let value = if i == BAD { "x".repeat(420_000) } else { "ok".to_owned() };
        calls.spawn(async move { (i, writer.put(vec![put(&format!("mixed-{i}"), &value)]).await) });
    }
    let mut failed = Vec::new();
    while let Some(call) = calls.join_next().await {
        let (i, outcome) = call.expect("a caller");
        if outcome.is_err() {
            failed.push(i);
        }
    }
    assert_eq!(failed, vec![BAD], "only the oversized put fails");
    for i in (0..30).filter(|&i| i != BAD) {
        assert_eq!(stored(&stack, &format!("mixed-{i}")).await.as_deref(), Some("ok"), "mixed-{i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_with_a_key_twice_is_refused_before_dynamodb() {
    let stack = OriginStack::start().await;
    let writer = BatchWriter::start(stack.ddb.clone());
    let refused = writer.put(vec![put("twice", "1"), put("twice", "2")]).await;
    assert!(refused.is_err_and(|e| e.message.contains("distinct")));
    assert_eq!(writer.batches(), 0);
    assert_eq!(stored(&stack, "twice").await, None);
}
