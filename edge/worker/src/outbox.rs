//! The Worker's write outbox: a Durable Object (`WriteOutbox`, binding
//! `FAILSOFT_OUTBOX`), sharded by the write's FIFO group so one caller's
//! writes meet in one object and stay in order.
//!
//! A write the CRM did not take goes to its shard, which runs the core's
//! decision ([`failsoft_edge::outbox::WithOutbox`]): SQS first with half the
//! queue's share of the deadline, and when SQS does not take it in time, an
//! entry in the object's storage. The object answers only once storage has
//! acknowledged the entry (the runtime's output gate holds the response
//! until the write is durable), so `PENDING` means kept. An alarm drains
//! the entries in order with full-jitter backoff and re-arms itself while
//! any remain; an isolate restart loses nothing, the object holds them.
//!
//! Without the binding, a write goes to SQS directly, as before.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use failsoft_edge::facade::{RESULT_TTL_SECS, queue_refused, result_record};
use failsoft_edge::outbox::{DRAIN_BACKOFF, OutboxStore, SentOn, WithOutbox, correlation_id_of, send_on};
use failsoft_edge::ports::{Backlog, Clock, Forwarder, Kept, PortError, QueueMessage};
use failsoft_edge::sqs::{SqsForwarder, SqsOr, SqsSettings};
use failsoft_edge::wire::{StoredResult, WriteStatus};
use futures_util::future::{Either, select};
use serde::{Deserialize, Serialize};
use worker::{
    Delay, DurableObject, Env, ListOptions, Method, ObjectNamespace, Request, RequestInit, Response, State, Storage,
    durable_object,
};

use crate::handler::KV_BINDING;
use crate::{FetchDownstream, JsClock};

/// The Durable Object namespace binding in `wrangler.toml`.
pub const OUTBOX_BINDING: &str = "FAILSOFT_OUTBOX";
/// Shards: one caller always lands in the same one.
pub const SHARDS: u64 = 16;
/// Entries one alarm sends before re-arming at once (an alarm is one
/// invocation with its own limits).
const PER_ALARM: usize = 200;
/// The first retry after a write was kept.
const FIRST_RETRY_MS: u64 = 500;
const ENTRY_PREFIX: &str = "e:";

/// What the Worker sends its shard.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WriteRequest {
    group_id: String,
    dedup_id: String,
    body: String,
    deadline_ms: u64,
}

/// An entry as stored.
#[derive(Serialize, Deserialize)]
struct Stored {
    at: u64,
    group: String,
    dedup: String,
    body: String,
}

/// The Worker's queue: SQS for refreshes, the outbox shard for writes.
pub struct WorkerForwarder {
    queue: SqsOr<FetchDownstream, JsClock>,
    outbox: Option<ObjectNamespace>,
}

impl WorkerForwarder {
    pub fn new(queue: SqsOr<FetchDownstream, JsClock>, outbox: Option<ObjectNamespace>) -> Self {
        Self { queue, outbox }
    }

    async fn via_outbox(
        &self,
        ns: &ObjectNamespace,
        message: &QueueMessage,
        deadline_ms: u64,
    ) -> Result<Kept, PortError> {
        let fail = |what: &str, e: worker::Error| PortError(format!("outbox {what}: {e}"));
        let stub =
            ns.id_from_name(&shard_of(&message.group_id)).and_then(|id| id.get_stub()).map_err(|e| fail("stub", e))?;
        let body = serde_json::to_string(&WriteRequest {
            group_id: message.group_id.clone(),
            dedup_id: message.dedup_id.clone(),
            body: message.body.clone(),
            deadline_ms,
        })
        .map_err(|e| PortError(e.to_string()))?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post).with_body(Some(body.into()));
        let request = Request::new_with_init("https://outbox.failsoft/write", &init).map_err(|e| fail("request", e))?;
        let exchange = async {
            let mut response = stub.fetch_with_request(request).await?;
            let status = response.status_code();
            Ok::<_, worker::Error>((status, response.text().await?))
        };
        // The object's own budget is `deadline_ms`; past it and a little
        // more, the answer is a failure (the entry may still be kept: the
        // origin's write-once claim makes a later delivery harmless).
        let timer = Delay::from(Duration::from_millis(deadline_ms.saturating_add(250)));
        match select(pin!(exchange), pin!(timer)).await {
            Either::Left((Ok((200, text)), _)) if text.contains("\"outbox\"") => Ok(Kept::Outbox),
            Either::Left((Ok((200, _)), _)) => Ok(Kept::Queue),
            Either::Left((Ok((status, text)), _)) => Err(PortError(format!("outbox answered {status}: {text}"))),
            Either::Left((Err(e), _)) => Err(fail("unreachable", e)),
            Either::Right(((), _)) => Err(PortError("outbox: no answer in time".to_owned())),
        }
    }
}

impl Forwarder for WorkerForwarder {
    async fn forward(&self, message: &QueueMessage, deadline_ms: u64) -> Result<(), PortError> {
        self.queue.forward(message, deadline_ms).await
    }

    async fn forward_write(&self, message: &QueueMessage, deadline_ms: u64) -> Result<Kept, PortError> {
        match (&self.outbox, &self.queue) {
            (Some(ns), SqsOr::Sqs(_)) => self.via_outbox(ns, message, deadline_ms).await,
            _ => self.queue.forward(message, deadline_ms).await.map(|()| Kept::Queue),
        }
    }
}

/// The shard of a FIFO group (FNV-1a over its bytes).
pub fn shard_of(group: &str) -> String {
    let hash = group.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("shard-{}", hash % SHARDS)
}

/// What a shard keeps in memory about its entries (the bodies stay in
/// storage); loaded from storage on the object's first event.
#[derive(Default)]
struct Index {
    entries: VecDeque<(u64, String, u64, u64)>,
    groups: HashMap<String, u64>,
    bytes: u64,
    next_seq: u64,
}

/// One shard's storage behind the core's [`OutboxStore`].
struct ShardStore {
    storage: Storage,
    index: RefCell<Option<Index>>,
    max_entries: u64,
    max_bytes: u64,
}

impl ShardStore {
    async fn index(&self) -> Result<(), PortError> {
        if self.index.borrow().is_some() {
            return Ok(());
        }
        let listed = self
            .storage
            .list_with_options(ListOptions::new().prefix(ENTRY_PREFIX))
            .await
            .map_err(|e| PortError(format!("outbox storage list: {e}")))?;
        let mut index = Index::default();
        listed.for_each(&mut |value, key| {
            let (Some(key), Some(text)): (Option<String>, Option<String>) = (key.as_string(), value.as_string()) else {
                return;
            };
            let (Some(seq), Ok(stored)) = (
                key.strip_prefix(ENTRY_PREFIX).and_then(|s| s.parse::<u64>().ok()),
                serde_json::from_str::<Stored>(&text),
            ) else {
                return;
            };
            index.admit(seq, stored.group, stored.body.len() as u64, stored.at);
        });
        // Keys list in order: zero-padded sequence numbers.
        index.entries.make_contiguous().sort_by_key(|e| e.0);
        index.next_seq = index.entries.back().map_or(0, |e| e.0 + 1);
        if self.index.borrow().is_none() {
            *self.index.borrow_mut() = Some(index);
        }
        Ok(())
    }

    fn with_index<T>(&self, f: impl FnOnce(&mut Index) -> T) -> T {
        f(self.index.borrow_mut().get_or_insert_with(Index::default))
    }

    /// The oldest entry, read whole from storage: `None` for the message
    /// when its record is gone or unreadable.
    async fn front(&self) -> Result<Option<(u64, Option<QueueMessage>)>, PortError> {
        self.index().await?;
        let Some(seq) = self.with_index(|i| i.entries.front().map(|e| e.0)) else { return Ok(None) };
        let text: Option<String> =
            self.storage.get(&key(seq)).await.map_err(|e| PortError(format!("outbox storage get: {e}")))?;
        let message = text.and_then(|t| serde_json::from_str::<Stored>(&t).ok()).map(|s| QueueMessage {
            group_id: s.group,
            dedup_id: s.dedup,
            body: s.body,
        });
        Ok(Some((seq, message)))
    }

    async fn remove(&self, seq: u64) -> Result<(), PortError> {
        self.storage.delete(&key(seq)).await.map_err(|e| PortError(format!("outbox storage delete: {e}")))?;
        self.with_index(|i| {
            if i.entries.front().map(|e| e.0) == Some(seq) {
                i.remove_front();
            }
        });
        Ok(())
    }
}

impl Index {
    fn admit(&mut self, seq: u64, group: String, bytes: u64, at: u64) {
        self.bytes += bytes;
        *self.groups.entry(group.clone()).or_default() += 1;
        self.entries.push_back((seq, group, bytes, at));
    }

    fn remove_front(&mut self) {
        if let Some((_, group, bytes, _)) = self.entries.pop_front() {
            self.bytes = self.bytes.saturating_sub(bytes);
            if let Some(n) = self.groups.get_mut(&group) {
                *n -= 1;
                if *n == 0 {
                    self.groups.remove(&group);
                }
            }
        }
    }
}

fn key(seq: u64) -> String {
    format!("{ENTRY_PREFIX}{seq:020}")
}

impl OutboxStore for ShardStore {
    async fn holds(&self, group: &str) -> bool {
        // An unreadable storage holds nothing we know of: the queue is tried.
        self.index().await.is_ok() && self.with_index(|i| i.groups.contains_key(group))
    }

    async fn has_room(&self, bytes: usize) -> bool {
        self.index().await.is_ok()
            && self
                .with_index(|i| (i.entries.len() as u64) < self.max_entries && i.bytes + bytes as u64 <= self.max_bytes)
    }

    async fn append(&self, message: &QueueMessage) -> Result<(), PortError> {
        self.index().await?;
        let at = JsClock.now_ms();
        let seq = self.with_index(|i| {
            let seq = i.next_seq;
            i.next_seq += 1;
            seq
        });
        let stored =
            Stored { at, group: message.group_id.clone(), dedup: message.dedup_id.clone(), body: message.body.clone() };
        let text = serde_json::to_string(&stored).map_err(|e| PortError(e.to_string()))?;
        self.storage.put(&key(seq), text).await.map_err(|e| PortError(format!("outbox storage put: {e}")))?;
        self.with_index(|i| i.admit(seq, message.group_id.clone(), message.body.len() as u64, at));
        Ok(())
    }

    fn backlog(&self) -> Option<Backlog> {
        Some(self.with_index(|i| Backlog {
            entries: i.entries.len() as u64,
            bytes: i.bytes,
            oldest_at_ms: i.entries.front().map(|e| e.3),
        }))
    }
}

/// A shard's queue and store: the core's decisions over them.
type Shard = WithOutbox<SqsForwarder<FetchDownstream, JsClock>, ShardStore>;

/// One shard of the write outbox.
#[durable_object]
pub struct WriteOutbox {
    state: State,
    env: Env,
    outbox: RefCell<Option<Rc<Shard>>>,
    attempt: Cell<u32>,
}

impl WriteOutbox {
    /// The shard's queue and store, built from the Worker's settings once.
    fn outbox(&self) -> Result<Rc<Shard>, String> {
        if let Some(outbox) = self.outbox.borrow().as_ref() {
            return Ok(outbox.clone());
        }
        let lookup = |name: &str| self.env.var(name).ok().map(|value| value.to_string());
        let settings =
            SqsSettings::from_lookup(lookup).map_err(|e| e.to_string())?.ok_or("FAILSOFT_QUEUE_URL is unset")?;
        // The caps are over all shards: each holds its share.
        let (max_entries, max_bytes) = failsoft_edge::outbox::caps(lookup).map_err(|e| e.to_string())?;
        let store = ShardStore {
            storage: self.state.storage(),
            index: RefCell::new(None),
            max_entries: max_entries.div_ceil(SHARDS),
            max_bytes: max_bytes.div_ceil(SHARDS),
        };
        let outbox = Rc::new(WithOutbox { queue: SqsForwarder::new(settings, FetchDownstream, JsClock), store });
        *self.outbox.borrow_mut() = Some(outbox.clone());
        Ok(outbox)
    }

    async fn arm(&self, in_ms: u64) {
        let storage = self.state.storage();
        if matches!(storage.get_alarm().await, Ok(Some(_))) && in_ms > 0 {
            return;
        }
        if let Err(e) = storage.set_alarm(Duration::from_millis(in_ms)).await {
            tracing::error!(error = %e, "the outbox could not set its alarm");
        }
    }

    /// A kept write SQS refuses for itself: `FAILED` for whoever polls it.
    async fn refused(&self, message: &QueueMessage, code: &str) {
        let Some(correlation_id) = correlation_id_of(message) else { return };
        tracing::error!(correlation_id, reason = code, "the queue refused a write the outbox held; it is FAILED");
        let stored = StoredResult {
            status: WriteStatus::Failed,
            result: None,
            reason: Some(queue_refused(code)),
            updated_at: JsClock.now_ms(),
        };
        let (key, text) = result_record(&correlation_id, &stored);
        let put = match self.env.kv(KV_BINDING) {
            Ok(kv) => match kv.put(&key, text) {
                Ok(put) => put.expiration_ttl(RESULT_TTL_SECS).execute().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = put {
            tracing::error!(error = %e, correlation_id, "recording the refused write failed");
        }
    }
}

impl DurableObject for WriteOutbox {
    fn new(state: State, env: Env) -> Self {
        Self { state, env, outbox: RefCell::new(None), attempt: Cell::new(0) }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let outbox = match self.outbox() {
            Ok(outbox) => outbox,
            Err(e) => return Response::error(format!("outbox misconfigured: {e}"), 503),
        };
        if req.method() == Method::Get {
            return Response::from_json(&outbox.store.backlog_json());
        }
        let write: WriteRequest = match req.json().await {
            Ok(write) => write,
            Err(e) => return Response::error(format!("not a write: {e}"), 400),
        };
        let message = QueueMessage { group_id: write.group_id, dedup_id: write.dedup_id, body: write.body };
        match outbox.forward_write(&message, write.deadline_ms).await {
            Ok(Kept::Queue) => Response::from_json(&serde_json::json!({"kept": "queue"})),
            Ok(Kept::Outbox) => {
                self.arm(FIRST_RETRY_MS).await;
                Response::from_json(&serde_json::json!({"kept": "outbox"}))
            }
            Err(e) => Response::error(e.0, 503),
        }
    }

    async fn alarm(&self) -> worker::Result<Response> {
        let outbox = match self.outbox() {
            Ok(outbox) => outbox,
            Err(e) => return Response::error(format!("outbox misconfigured: {e}"), 503),
        };
        for _ in 0..PER_ALARM {
            let (seq, message) = match outbox.store.front().await {
                Ok(Some((seq, Some(message)))) => (seq, message),
                Ok(Some((seq, None))) => {
                    tracing::error!(seq, "an outbox entry is unreadable; it is skipped");
                    if outbox.store.remove(seq).await.is_err() {
                        break;
                    }
                    continue;
                }
                Ok(None) => {
                    self.attempt.set(0);
                    return Response::ok("drained");
                }
                Err(e) => {
                    tracing::error!(error = %e, "the outbox could not read its storage");
                    break;
                }
            };
            match send_on(&outbox.queue, &message).await {
                SentOn::Taken => {
                    self.attempt.set(0);
                    if let Err(e) = outbox.store.remove(seq).await {
                        tracing::error!(error = %e, "the outbox could not remove a sent entry");
                        break;
                    }
                }
                SentOn::Refused(code) => {
                    if outbox.store.remove(seq).await.is_ok() {
                        self.refused(&message, code).await;
                    }
                }
                SentOn::Retry(e) => {
                    let attempt = self.attempt.get();
                    let delay = DRAIN_BACKOFF.delay_ms(attempt, JsClock.random_u64()).max(100);
                    tracing::warn!(error = %e, attempt, retry_in_ms = delay, "the outbox could not reach the queue");
                    self.attempt.set(attempt.saturating_add(1));
                    let _ = self.state.storage().set_alarm(Duration::from_millis(delay)).await;
                    return Response::ok("retrying");
                }
            }
        }
        // More than one alarm's share, or a storage fault: go on shortly.
        let _ = self.state.storage().set_alarm(Duration::from_millis(100)).await;
        Response::ok("more")
    }
}

impl ShardStore {
    fn backlog_json(&self) -> serde_json::Value {
        let b = self.backlog().unwrap_or_default();
        serde_json::json!({"entries": b.entries, "bytes": b.bytes, "oldestAtMs": b.oldest_at_ms})
    }
}
