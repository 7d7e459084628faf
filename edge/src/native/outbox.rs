//! The native host's outbox: an append-only journal on local disk
//! (`FAILSOFT_OUTBOX_DIR`), fsynced before a write is answered, drained to
//! SQS by a background task, and replayed at start after a crash.
//!
//! One line per record: the CRC-32 of the JSON in eight hex digits, a
//! space, the JSON, a newline. An `add` record holds a message byte for byte;
//! a `done` record says it left (sent, or refused by SQS for itself). A
//! record whose checksum does not match (a torn write at the tail after a
//! crash, a damaged disk) is reported and skipped; the records before and
//! after it stand. The file is rewritten with only the waiting entries at
//! start and whenever the done records outweigh them, and emptied when the
//! outbox drains.
//!
//! One process per directory: the journal is locked while open, so a second
//! edge pointed at the same directory refuses to start.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ReqwestDownstream, SystemClock};
use crate::outbox::{DRAIN_BACKOFF, OutboxStore, SentOn, send_on};
use crate::ports::{Backlog, Clock, PortError, QueueMessage};
use crate::sqs::SqsForwarder;

const JOURNAL: &str = "outbox.journal";
pub use crate::outbox::{DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES};

/// The caps: past either, a write the queue does not take is `NOT_ACCEPTED`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_entries: u64,
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_entries: DEFAULT_MAX_ENTRIES, max_bytes: DEFAULT_MAX_BYTES }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Record {
    Add { seq: u64, at: u64, group: String, dedup: String, body: String },
    Done { seq: u64 },
}

/// One waiting message.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    pub at_ms: u64,
    pub message: QueueMessage,
}

/// What opening a journal found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Entries waiting to be sent.
    pub entries: u64,
    /// Records skipped for a bad checksum or a torn line.
    pub corrupt: u64,
}

struct State {
    file: File,
    /// Bytes in the journal file now.
    file_bytes: u64,
    entries: VecDeque<Entry>,
    groups: HashMap<String, u64>,
    bytes: u64,
    next_seq: u64,
}

struct Inner {
    dir: PathBuf,
    limits: Limits,
    state: Mutex<State>,
    wake: tokio::sync::Notify,
}

/// The journal and what it holds; cheap to clone (one per process).
#[derive(Clone)]
pub struct NativeOutbox {
    inner: Arc<Inner>,
}

impl NativeOutbox {
    /// Opens (or creates) the journal in `dir`, replays it, and rewrites it
    /// with only the waiting entries.
    pub fn open(dir: &Path, limits: Limits) -> Result<(Self, Replayed), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(JOURNAL);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        file.try_lock().map_err(|_| format!("{}: another process has this outbox open", path.display()))?;
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(|e| format!("{}: {e}", path.display()))?;
        let (entries, next_seq, corrupt) = replay(&text);
        let mut state = State {
            file,
            file_bytes: text.len() as u64,
            entries: VecDeque::new(),
            groups: HashMap::new(),
            bytes: 0,
            next_seq,
        };
        for entry in entries {
            state.admit(entry);
        }
        let inner = Inner { dir: dir.to_owned(), limits, state: Mutex::new(state), wake: tokio::sync::Notify::new() };
        let outbox = Self { inner: Arc::new(inner) };
        let replayed = Replayed { entries: outbox.lock().entries.len() as u64, corrupt };
        if corrupt > 0 {
            metrics::counter!("failsoft_edge_outbox_corrupt_records_total").increment(corrupt);
            tracing::error!(corrupt, path = %path.display(), "outbox journal records with a bad checksum were skipped");
        }
        outbox.compact().map_err(|e| format!("{}: {e}", path.display()))?;
        outbox.publish();
        Ok((outbox, replayed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The oldest waiting entry.
    pub fn front(&self) -> Option<Entry> {
        self.lock().entries.front().cloned()
    }

    /// Appends `message` and fsyncs the journal.
    fn append_blocking(&self, message: &QueueMessage, now_ms: u64) -> Result<(), PortError> {
        let mut state = self.lock();
        let seq = state.next_seq;
        let record = Record::Add {
            seq,
            at: now_ms,
            group: message.group_id.clone(),
            dedup: message.dedup_id.clone(),
            body: message.body.clone(),
        };
        state.write(&record, true).map_err(|e| PortError(format!("outbox journal: {e}")))?;
        state.next_seq += 1;
        state.admit(Entry { seq, at_ms: now_ms, message: message.clone() });
        drop(state);
        self.publish();
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Marks the front entry `seq` as gone. The record is not fsynced: if
    /// it is lost, the entry is sent again after a restart, and SQS's
    /// deduplication or the origin's write-once claim absorbs it.
    fn done_blocking(&self, seq: u64) -> std::io::Result<()> {
        let mut state = self.lock();
        if state.entries.front().map(|e| e.seq) != Some(seq) {
            return Ok(());
        }
        state.write(&Record::Done { seq }, false)?;
        if let Some(entry) = state.entries.pop_front() {
            state.bytes = state.bytes.saturating_sub(entry.message.body.len() as u64);
            if let Some(n) = state.groups.get_mut(&entry.message.group_id) {
                *n -= 1;
                if *n == 0 {
                    state.groups.remove(&entry.message.group_id);
                }
            }
        }
        let outweighed = state.file_bytes > 2 * state.bytes + 1024 * 1024;
        drop(state);
        if outweighed || self.lock().entries.is_empty() {
            self.compact()?;
        }
        self.publish();
        Ok(())
    }

    /// Rewrites the journal with only the waiting entries: to a temporary
    /// file, fsynced, renamed over the journal, the directory fsynced.
    fn compact(&self) -> std::io::Result<()> {
        let mut state = self.lock();
        let path = self.inner.dir.join(JOURNAL);
        let temporary = self.inner.dir.join(format!("{JOURNAL}.tmp"));
        let mut text = Vec::new();
        for e in &state.entries {
            let record = Record::Add {
                seq: e.seq,
                at: e.at_ms,
                group: e.message.group_id.clone(),
                dedup: e.message.dedup_id.clone(),
                body: e.message.body.clone(),
            };
            text.extend(line(&record));
        }
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&temporary)?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        File::open(&self.inner.dir)?.sync_all()?;
        let file = OpenOptions::new().read(true).append(true).open(&path)?;
        // The lock moves to the new file; the old one is unlinked.
        file.try_lock().map_err(|_| std::io::Error::other("the outbox journal is locked by another process"))?;
        state.file = file;
        state.file_bytes = text.len() as u64;
        Ok(())
    }

    fn publish(&self) {
        let backlog = OutboxStore::backlog(self).unwrap_or_default();
        metrics::gauge!("failsoft_edge_outbox_entries").set(backlog.entries as f64);
        metrics::gauge!("failsoft_edge_outbox_bytes").set(backlog.bytes as f64);
        let oldest = backlog.oldest_at_ms.map_or(0.0, |at| SystemClock.now_ms().saturating_sub(at) as f64 / 1000.0);
        metrics::gauge!("failsoft_edge_outbox_oldest_seconds").set(oldest);
    }

    /// Sends the journal's entries on, oldest first, for as long as the
    /// process runs: the queue's trouble is retried with full-jitter
    /// backoff; an entry SQS refuses for itself is removed and handed to
    /// `refused` with SQS's code.
    pub fn spawn_drain<R, Fut>(
        &self,
        queue: SqsForwarder<ReqwestDownstream, SystemClock>,
        refused: R,
    ) -> tokio::task::JoinHandle<()>
    where
        R: Fn(QueueMessage, &'static str) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let outbox = self.clone();
        tokio::spawn(async move {
            let mut attempt = 0u32;
            loop {
                let Some(entry) = outbox.front() else {
                    // Woken by an append; the timeout only bounds a missed wake.
                    let _ = tokio::time::timeout(Duration::from_secs(1), outbox.inner.wake.notified()).await;
                    continue;
                };
                match send_on(&queue, &entry.message).await {
                    SentOn::Taken => {
                        attempt = 0;
                        outbox.done(entry.seq).await;
                    }
                    SentOn::Refused(code) => {
                        outbox.done(entry.seq).await;
                        refused(entry.message, code).await;
                    }
                    SentOn::Retry(e) => {
                        let delay = DRAIN_BACKOFF.delay_ms(attempt, SystemClock.random_u64());
                        tracing::warn!(error = %e, attempt, retry_in_ms = delay, "the outbox could not reach the queue");
                        attempt = attempt.saturating_add(1);
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                }
            }
        })
    }

    async fn done(&self, seq: u64) {
        let outbox = self.clone();
        match tokio::task::spawn_blocking(move || outbox.done_blocking(seq)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the outbox journal could not record a sent entry"),
            Err(e) => tracing::error!(error = %e, "the outbox journal task failed"),
        }
    }
}

impl State {
    fn admit(&mut self, entry: Entry) {
        self.bytes += entry.message.body.len() as u64;
        *self.groups.entry(entry.message.group_id.clone()).or_default() += 1;
        self.entries.push_back(entry);
    }

    fn write(&mut self, record: &Record, sync: bool) -> std::io::Result<()> {
        let bytes = line(record);
        self.file.write_all(&bytes)?;
        if sync {
            self.file.sync_data()?;
        }
        self.file_bytes += bytes.len() as u64;
        Ok(())
    }
}

impl OutboxStore for NativeOutbox {
    async fn holds(&self, group: &str) -> bool {
        self.lock().groups.contains_key(group)
    }

    async fn has_room(&self, bytes: usize) -> bool {
        let state = self.lock();
        let limits = self.inner.limits;
        (state.entries.len() as u64) < limits.max_entries && state.bytes + bytes as u64 <= limits.max_bytes
    }

    async fn append(&self, message: &QueueMessage) -> Result<(), PortError> {
        let (outbox, message, now) = (self.clone(), message.clone(), SystemClock.now_ms());
        tokio::task::spawn_blocking(move || outbox.append_blocking(&message, now))
            .await
            .map_err(|e| PortError(format!("outbox journal task: {e}")))?
    }

    fn backlog(&self) -> Option<Backlog> {
        let state = self.lock();
        Some(Backlog {
            entries: state.entries.len() as u64,
            bytes: state.bytes,
            oldest_at_ms: state.entries.front().map(|e| e.at_ms),
        })
    }
}

/// A record's line: `crc32-hex SP json LF`.
fn line(record: &Record) -> Vec<u8> {
    let json = serde_json::to_vec(record).expect("a record serialises");
    let mut out = format!("{:08x} ", crc32fast::hash(&json)).into_bytes();
    out.extend(json);
    out.push(b'\n');
    out
}

/// The waiting entries of a journal's bytes, the next sequence number, and
/// how many records were skipped as corrupt.
fn replay(text: &[u8]) -> (Vec<Entry>, u64, u64) {
    let mut waiting: Vec<Entry> = Vec::new();
    let (mut next_seq, mut corrupt) = (0u64, 0u64);
    let mut lines = text.split(|&b| b == b'\n').peekable();
    while let Some(raw) = lines.next() {
        let last = lines.peek().is_none();
        if raw.is_empty() {
            continue;
        }
        // A line without its newline is a write cut short: torn.
        let Some(record) = (!last).then(|| parse(raw)).flatten() else {
            corrupt += 1;
            continue;
        };
        match record {
            Record::Add { seq, at, group, dedup, body } => {
                next_seq = next_seq.max(seq + 1);
                let message = QueueMessage { group_id: group, dedup_id: dedup, body };
                waiting.push(Entry { seq, at_ms: at, message });
            }
            Record::Done { seq } => waiting.retain(|e| e.seq != seq),
        }
    }
    (waiting, next_seq, corrupt)
}

fn parse(raw: &[u8]) -> Option<Record> {
    let (crc, json) = (raw.get(..8)?, raw.get(9..)?);
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    if raw.get(8) != Some(&b' ') || crc32fast::hash(json) != crc {
        return None;
    }
    serde_json::from_slice(json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("failsoft-outbox-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn message(group: &str, dedup: &str) -> QueueMessage {
        QueueMessage { group_id: group.into(), dedup_id: dedup.into(), body: format!("{{\"d\":\"{dedup}\"}}") }
    }

    fn dedups(outbox: &NativeOutbox) -> Vec<String> {
        outbox.lock().entries.iter().map(|e| e.message.dedup_id.clone()).collect()
    }

    #[tokio::test]
    async fn entries_survive_a_restart_in_order_and_sent_ones_stay_gone() {
        let dir = temp_dir("restart");
        let (outbox, replayed) = NativeOutbox::open(&dir, Limits::default()).unwrap();
        assert_eq!(replayed, Replayed::default());
        for (group, dedup) in [("a", "1"), ("b", "2"), ("a", "3")] {
            outbox.append(&message(group, dedup)).await.unwrap();
        }
        assert!(outbox.holds("a").await && !outbox.holds("c").await);
        outbox.done(outbox.front().unwrap().seq).await;
        drop(outbox);

        let (outbox, replayed) = NativeOutbox::open(&dir, Limits::default()).unwrap();
        assert_eq!(replayed, Replayed { entries: 2, corrupt: 0 });
        assert_eq!(dedups(&outbox), ["2", "3"]);
        assert_eq!(outbox.front().unwrap().message, message("b", "2"), "byte for byte");
        outbox.append(&message("c", "4")).await.unwrap();
        assert!(outbox.front().unwrap().seq < outbox.lock().entries.back().unwrap().seq, "sequence numbers go on");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_torn_tail_and_a_damaged_record_are_skipped_and_the_rest_stands() {
        let dir = temp_dir("torn");
        let (outbox, _) = NativeOutbox::open(&dir, Limits::default()).unwrap();
        for dedup in ["1", "2", "3"] {
            outbox.append(&message("g", dedup)).await.unwrap();
        }
        drop(outbox);
        let path = dir.join(JOURNAL);
        let mut text = std::fs::read(&path).unwrap();
        // Damage the second record's body, then tear a fourth at the tail.
        let second = text.iter().position(|&b| b == b'\n').unwrap() + 1;
        let at = second + 20;
        text[at] ^= 0x01;
        text.extend(&line(&Record::Done { seq: 0 })[..10]);
        std::fs::write(&path, &text).unwrap();

        let (outbox, replayed) = NativeOutbox::open(&dir, Limits::default()).unwrap();
        assert_eq!(replayed, Replayed { entries: 2, corrupt: 2 });
        assert_eq!(dedups(&outbox), ["1", "3"]);
        drop(outbox);
        let (_, replayed) = NativeOutbox::open(&dir, Limits::default()).unwrap();
        assert_eq!(replayed, Replayed { entries: 2, corrupt: 0 }, "rewritten without the damage");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_caps_count_entries_and_bytes_and_a_drained_journal_is_emptied() {
        let dir = temp_dir("caps");
        let (outbox, _) = NativeOutbox::open(&dir, Limits { max_entries: 2, max_bytes: 1_000 }).unwrap();
        assert!(outbox.has_room(1_000).await && !outbox.has_room(1_001).await);
        outbox.append(&message("g", "1")).await.unwrap();
        outbox.append(&message("g", "2")).await.unwrap();
        assert!(!outbox.has_room(1).await, "two entries is the cap");
        let backlog = outbox.backlog().unwrap();
        assert_eq!((backlog.entries, backlog.bytes), (2, 18));
        assert!(backlog.oldest_at_ms.is_some());
        for _ in 0..2 {
            outbox.done(outbox.front().unwrap().seq).await;
        }
        assert_eq!(outbox.backlog(), Some(Backlog::default()));
        assert_eq!(std::fs::metadata(dir.join(JOURNAL)).unwrap().len(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_second_process_on_the_same_directory_is_refused() {
        let dir = temp_dir("lock");
        let (_first, _) = NativeOutbox::open(&dir, Limits::default()).unwrap();
        // A lock held through another open file description, as another
        // process would hold it.
        let second = NativeOutbox::open(&dir, Limits::default());
        assert!(second.err().unwrap().contains("another process"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
