//! A write outbox in a host's key-value store, for a host whose instances
//! live for one request and share nothing but the store (Spin).
//!
//! Keys (values are JSON, kept as long as SQS keeps a message):
//!
//! - `ob:e:{at_ms}-{random}`: one entry, the message byte for byte;
//! - `ob:g:{group}`: the entry keys of one caller (FIFO group), in order;
//! - `ob:index`: the groups with entries waiting, and the counts the caps
//!   are checked against.
//!
//! The store has no transactions, so two instances updating the same list
//! at once can lose one update. For a caller's list that needs two writes
//! of one caller in the same instant (concurrent writes have no order to
//! keep anyway, and the entry itself is never lost: see below). For the
//! index it can drop a group: [`drain`] with `full` (the signed drain
//! endpoint the origin calls on a schedule) lists the store's keys and puts
//! back every caller list the index lost, so every entry is sent in the end.
//! The counts are approximate for the same reason; the caps are soft.

use serde::{Deserialize, Serialize};

use crate::outbox::{OutboxStore, SentOn, send_on};
use crate::ports::{Backlog, Clock, Forwarder, Kv, PortError, QueueMessage};

/// SQS keeps a message at most 14 days: an entry lives as long.
const TTL_SECS: u64 = 14 * 86_400;
const INDEX: &str = "ob:index";
const GROUP_PREFIX: &str = "ob:g:";
const ENTRY_PREFIX: &str = "ob:e:";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Index {
    groups: Vec<String>,
    entries: u64,
    bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    oldest: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    at: u64,
    group: String,
    dedup: String,
    body: String,
}

/// What one drain did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drained {
    pub sent: u64,
    /// Entries SQS refused for themselves, with its code: removed, to be
    /// recorded `FAILED` by the caller.
    pub refused: Vec<(QueueMessage, &'static str)>,
    /// Caller lists put back into the index by a full drain.
    pub repaired: u64,
    /// Entries still waiting, as far as the index knows.
    pub waiting: u64,
}

/// Lists every key of the store.
pub type ListKeys = fn() -> Result<Vec<String>, PortError>;

/// The outbox over a [`Kv`]: `list_keys` lists the store's keys (for the
/// full drain's repair), when the host can.
pub struct KvOutbox<K, C> {
    pub kv: K,
    pub clock: C,
    pub max_entries: u64,
    pub max_bytes: u64,
    pub list_keys: Option<ListKeys>,
    /// The index as last read or written, for [`OutboxStore::backlog`]
    /// (`None` until this instance reads it).
    last: std::sync::Mutex<Option<Index>>,
}

impl<K: Kv, C: Clock> KvOutbox<K, C> {
    pub fn new(kv: K, clock: C, max_entries: u64, max_bytes: u64) -> Self {
        Self { kv, clock, max_entries, max_bytes, list_keys: None, last: Default::default() }
    }

    async fn read<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>, PortError> {
        Ok(self.kv.get(key).await?.and_then(|text| serde_json::from_str(&text).ok()))
    }

    async fn write<T: Serialize>(&self, key: &str, value: &T) -> Result<(), PortError> {
        let text = serde_json::to_string(value).map_err(|e| PortError(e.to_string()))?;
        self.kv.put(key, &text, TTL_SECS).await
    }

    async fn index(&self) -> Result<Index, PortError> {
        let index: Index = self.read(INDEX).await?.unwrap_or_default();
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(index.clone());
        Ok(index)
    }

    async fn save_index(&self, index: &Index) -> Result<(), PortError> {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(index.clone());
        self.write(INDEX, index).await
    }

    async fn group(&self, group: &str) -> Result<Vec<String>, PortError> {
        Ok(self.read(&format!("{GROUP_PREFIX}{group}")).await?.unwrap_or_default())
    }

    /// Removes `key` (the head of `group`'s list) after it left.
    async fn remove_head(&self, group: &str, key: &str, bytes: u64) -> Result<(), PortError> {
        self.kv.delete(key).await?;
        let mut list = self.group(group).await?;
        list.retain(|k| k != key);
        let mut index = self.index().await?;
        index.entries = index.entries.saturating_sub(1);
        index.bytes = index.bytes.saturating_sub(bytes);
        if list.is_empty() {
            self.kv.delete(&format!("{GROUP_PREFIX}{group}")).await?;
            index.groups.retain(|g| g != group);
            if index.groups.is_empty() {
                index = Index::default();
            }
        } else {
            self.write(&format!("{GROUP_PREFIX}{group}"), &list).await?;
        }
        self.save_index(&index).await
    }
}

impl<K: Kv, C: Clock> OutboxStore for KvOutbox<K, C> {
    async fn holds(&self, group: &str) -> bool {
        // An unreadable store holds nothing we know of: the queue is tried.
        self.group(group).await.is_ok_and(|list| !list.is_empty())
    }

    async fn has_room(&self, bytes: usize) -> bool {
        self.index()
            .await
            .is_ok_and(|i| i.entries < self.max_entries && i.bytes.saturating_add(bytes as u64) <= self.max_bytes)
    }

    async fn append(&self, message: &QueueMessage) -> Result<(), PortError> {
        let at = self.clock.now_ms();
        let key = format!("{ENTRY_PREFIX}{at:013}-{:016x}", self.clock.random_u64());
        let stored =
            Stored { at, group: message.group_id.clone(), dedup: message.dedup_id.clone(), body: message.body.clone() };
        // The entry first: a list that names a missing entry is skipped,
        // an entry no list names would never be sent.
        self.write(&key, &stored).await?;
        let mut list = self.group(&message.group_id).await?;
        list.push(key);
        self.write(&format!("{GROUP_PREFIX}{}", message.group_id), &list).await?;
        let mut index = self.index().await?;
        if !index.groups.contains(&message.group_id) {
            index.groups.push(message.group_id.clone());
        }
        index.entries += 1;
        index.bytes += message.body.len() as u64;
        index.oldest = Some(index.oldest.map_or(at, |o| o.min(at)));
        self.save_index(&index).await
    }

    fn backlog(&self) -> Option<Backlog> {
        let index = self.last.lock().unwrap_or_else(|e| e.into_inner());
        index.as_ref().map(|i| Backlog { entries: i.entries, bytes: i.bytes, oldest_at_ms: i.oldest })
    }

    async fn drain<F: Forwarder>(&self, queue: &F, max: usize, full: bool) -> Option<Result<Drained, PortError>> {
        Some(drain(self, queue, max, full).await)
    }
}

/// Sends on up to `max` entries, each caller's in order, until SQS fails.
/// With `full`, first puts back into the index every caller list it lost
/// (a race between instances), from the store's key list.
pub async fn drain<K: Kv, C: Clock, F: Forwarder>(
    outbox: &KvOutbox<K, C>,
    queue: &F,
    max: usize,
    full: bool,
) -> Result<Drained, PortError> {
    let mut drained = Drained::default();
    let mut index = outbox.index().await?;
    if full && let Some(list_keys) = outbox.list_keys {
        for key in list_keys()? {
            let Some(group) = key.strip_prefix(GROUP_PREFIX) else { continue };
            if !index.groups.iter().any(|g| g == group) && !outbox.group(group).await?.is_empty() {
                index.groups.push(group.to_owned());
                drained.repaired += 1;
            }
        }
        if drained.repaired > 0 {
            tracing::warn!(repaired = drained.repaired, "outbox index repaired from the store's keys");
            outbox.save_index(&index).await?;
        }
    }
    let mut budget = max;
    'groups: for group in index.groups.clone() {
        while budget > 0 {
            let Some(key) = outbox.group(&group).await?.into_iter().next() else { break };
            budget -= 1;
            let Some(stored) = outbox.read::<Stored>(&key).await? else {
                // Named but gone (expired, or a torn append): skip it.
                outbox.remove_head(&group, &key, 0).await?;
                continue;
            };
            let bytes = stored.body.len() as u64;
            let message = QueueMessage { group_id: stored.group, dedup_id: stored.dedup, body: stored.body };
            match send_on(queue, &message).await {
                SentOn::Taken => {
                    outbox.remove_head(&group, &key, bytes).await?;
                    drained.sent += 1;
                }
                SentOn::Refused(code) => {
                    outbox.remove_head(&group, &key, bytes).await?;
                    drained.refused.push((message, code));
                }
                SentOn::Retry(e) => {
                    tracing::warn!(error = %e, "the outbox could not reach the queue; it stays");
                    break 'groups;
                }
            }
        }
    }
    drained.waiting = outbox.index().await?.entries;
    Ok(drained)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::{BTreeMap, VecDeque};

    use super::*;

    #[derive(Default)]
    struct MapKv(RefCell<BTreeMap<String, String>>);

    impl Kv for &MapKv {
        async fn get(&self, key: &str) -> Result<Option<String>, PortError> {
            Ok(self.0.borrow().get(key).cloned())
        }
        async fn put(&self, key: &str, value: &str, _: u64) -> Result<(), PortError> {
            self.0.borrow_mut().insert(key.to_owned(), value.to_owned());
            Ok(())
        }
        async fn delete(&self, key: &str) -> Result<(), PortError> {
            self.0.borrow_mut().remove(key);
            Ok(())
        }
    }

    #[derive(Clone, Copy)]
    struct Ticking;
    thread_local! { static NOW: std::cell::Cell<u64> = const { std::cell::Cell::new(1_000) }; }
    impl Clock for Ticking {
        fn now_ms(&self) -> u64 {
            NOW.with(|n| {
                n.set(n.get() + 1);
                n.get()
            })
        }
        fn random_u64(&self) -> u64 {
            7
        }
        async fn sleep_ms(&self, _: u64) {}
    }

    #[derive(Default)]
    struct Queue {
        answers: RefCell<VecDeque<Result<(), PortError>>>,
        sent: RefCell<Vec<String>>,
    }
    impl Forwarder for Queue {
        async fn forward(&self, message: &QueueMessage, _: u64) -> Result<(), PortError> {
            let answer = self.answers.borrow_mut().pop_front().unwrap_or(Ok(()));
            if answer.is_ok() {
                self.sent.borrow_mut().push(message.dedup_id.clone());
            }
            answer
        }
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("a test future waited"),
        }
    }

    fn message(group: &str, dedup: &str) -> QueueMessage {
        QueueMessage { group_id: group.into(), dedup_id: dedup.into(), body: format!("body-{dedup}") }
    }

    #[test]
    fn entries_drain_in_order_per_caller_and_stop_while_the_queue_is_down() {
        let kv = MapKv::default();
        let outbox = KvOutbox::new(&kv, Ticking, 100, 1 << 20);
        for (group, dedup) in [("a", "1"), ("b", "2"), ("a", "3")] {
            block_on(outbox.append(&message(group, dedup))).unwrap();
        }
        assert!(block_on(outbox.holds("a")) && !block_on(outbox.holds("c")));
        assert_eq!(outbox.backlog().map(|b| b.entries), Some(3));

        let down = Queue::default();
        down.answers.borrow_mut().push_back(Err(PortError("SQS unreachable: Connect".into())));
        let drained = block_on(drain(&outbox, &down, 10, false)).unwrap();
        assert_eq!((drained.sent, drained.waiting), (0, 3), "stops at the first failure");

        let up = Queue::default();
        let drained = block_on(drain(&outbox, &up, 2, false)).unwrap();
        assert_eq!((drained.sent, drained.waiting), (2, 1), "bounded per drain");
        let drained = block_on(drain(&outbox, &up, 10, false)).unwrap();
        assert_eq!((drained.sent, drained.waiting), (1, 0));
        assert_eq!(*up.sent.borrow(), ["1", "3", "2"], "one caller's in order");
        assert_eq!(kv.0.borrow().len(), 1, "only the empty index is left: {:?}", kv.0.borrow().keys());
    }

    #[test]
    fn a_caller_the_index_lost_is_found_by_a_full_drain() {
        thread_local! { static KEYS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) }; }
        let kv = MapKv::default();
        let mut outbox = KvOutbox::new(&kv, Ticking, 100, 1 << 20);
        block_on(outbox.append(&message("a", "1"))).unwrap();
        block_on(outbox.append(&message("b", "2"))).unwrap();
        // Another instance's index write lost "b".
        let index = Index { groups: vec!["a".into()], entries: 1, bytes: 6, oldest: None };
        block_on(outbox.save_index(&index)).unwrap();
        KEYS.with(|k| *k.borrow_mut() = kv.0.borrow().keys().cloned().collect());
        let up = Queue::default();
        assert_eq!(block_on(drain(&outbox, &up, 10, false)).unwrap().sent, 1, "b is not seen");
        outbox.list_keys = Some(|| Ok(KEYS.with(|k| k.borrow().clone())));
        let drained = block_on(drain(&outbox, &up, 10, true)).unwrap();
        assert_eq!((drained.repaired, drained.sent), (1, 1));
        assert_eq!(*up.sent.borrow(), ["1", "2"]);
    }

    #[test]
    fn a_message_sqs_refuses_is_removed_and_handed_back_and_the_caps_hold() {
        let kv = MapKv::default();
        let outbox = KvOutbox::new(&kv, Ticking, 1, 1 << 20);
        assert!(block_on(outbox.has_room(10)));
        block_on(outbox.append(&message("a", "1"))).unwrap();
        assert!(!block_on(outbox.has_room(10)), "one entry is the cap");
        let refusing = Queue::default();
        let refused = PortError("SQS answered 400: InvalidParameterValue too long".into());
        refusing.answers.borrow_mut().push_back(Err(refused));
        let drained = block_on(drain(&outbox, &refusing, 10, false)).unwrap();
        assert_eq!(drained.refused.len(), 1);
        assert_eq!(drained.refused[0].1, "InvalidParameterValue");
        assert_eq!(drained.waiting, 0);
        assert!(block_on(outbox.has_room(10)));
    }
}
