//! The Workers KV binding behind the [`Kv`] port, with the two KV rules the
//! core does not know about:
//!
//! - An expiry under 60 s is refused by KV, so a shorter TTL is raised to
//!   [`MIN_TTL_SECS`] (the core asks for the last-known horizon, 7 days by
//!   default, for records).
//! - One write per key per second: [`WritePacer`] defers a write that comes
//!   sooner (latest wins, reads see it), and [`WorkersKv::flush`] performs
//!   it once the second has passed; the fetch handler runs the flush in
//!   `ctx.wait_until`, after the response. The pacing is per isolate: two
//!   isolates writing one key in the same second (the shared breaker at a
//!   trip) may still meet a 429, which the core logs and survives.
//! - A read is remembered for a second ([`Memo`]), so a caller asked again
//!   and again costs one KV read a second, not one per request; the
//!   isolate's own writes replace what it remembers.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use failsoft_edge::ports::{Clock, Kv, PortError};
use worker::{Delay, KvStore};

use crate::clock::JsClock;
use crate::memo::Memo;
use crate::pacing::WritePacer;

/// KV's shortest expiry.
pub const MIN_TTL_SECS: u64 = 60;

#[derive(Clone)]
enum Write {
    Put { value: String, ttl_secs: u64 },
    Delete,
}

#[derive(Default)]
struct Pacing {
    pacer: WritePacer<Write>,
    flushing: bool,
}

/// A KV namespace with this isolate's write pacing and memory of reads.
/// Clones share both.
#[derive(Clone)]
pub struct WorkersKv {
    store: KvStore,
    clock: JsClock,
    pacing: Rc<RefCell<Pacing>>,
    memo: Rc<RefCell<Memo>>,
}

impl WorkersKv {
    /// `memo_ms`: how long a read is remembered (0: never).
    pub fn new(store: KvStore, clock: JsClock, memo_ms: u64) -> Self {
        Self { store, clock, pacing: Rc::default(), memo: Rc::new(RefCell::new(Memo::new(memo_ms))) }
    }

    /// Whether writes wait for [`flush`](Self::flush).
    pub fn has_deferred(&self) -> bool {
        self.pacing.borrow().pacer.has_deferred()
    }

    /// Performs the deferred writes, each once its key's second has passed.
    /// One flush runs at a time per isolate, and it also takes the writes
    /// deferred while it waits.
    pub async fn flush(&self) {
        if std::mem::replace(&mut self.pacing.borrow_mut().flushing, true) {
            return;
        }
        let _done = FlushGuard(self.pacing.clone());
        loop {
            let next = self.pacing.borrow().pacer.next_due();
            let Some((due, key)) = next else { break };
            let now = self.clock.now_ms();
            if due > now {
                Delay::from(Duration::from_millis(due - now)).await;
                continue;
            }
            let write = self.pacing.borrow_mut().pacer.take(&key, now);
            if let Some(write) = write
                && let Err(e) = self.write(&key, write).await
            {
                tracing::warn!(error = %e, "a deferred KV write failed");
            }
        }
    }

    async fn admit_and_write(&self, key: &str, write: Write) -> Result<(), PortError> {
        let admitted = self.pacing.borrow_mut().pacer.admit(key, write, self.clock.now_ms());
        match admitted {
            Some(write) => self.write(key, write).await,
            None => Ok(()),
        }
    }

    async fn write(&self, key: &str, write: Write) -> Result<(), PortError> {
        let (result, written) = match write {
            Write::Put { value, ttl_secs } => match self.store.put(key, value.as_str()) {
                Ok(put) => (put.expiration_ttl(ttl_secs.max(MIN_TTL_SECS)).execute().await, Some(value)),
                Err(e) => (Err(e), None),
            },
            Write::Delete => (self.store.delete(key).await, None),
        };
        let now = self.clock.now_ms();
        self.pacing.borrow_mut().pacer.finished(key, now);
        let mut memo = self.memo.borrow_mut();
        match result {
            Ok(()) => {
                memo.remember_write(key, written.as_deref(), now);
                Ok(())
            }
            Err(e) => {
                memo.forget(key);
                Err(PortError(format!("KV: {e}")))
            }
        }
    }
}

struct FlushGuard(Rc<RefCell<Pacing>>);

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.0.borrow_mut().flushing = false;
    }
}

impl Kv for WorkersKv {
    async fn get(&self, key: &str) -> Result<Option<String>, PortError> {
        let deferred = self.pacing.borrow().pacer.deferred(key).cloned();
        match deferred {
            Some(Write::Put { value, .. }) => Ok(Some(value)),
            Some(Write::Delete) => Ok(None),
            None => {
                let start = {
                    let memo = self.memo.borrow();
                    if let Some(held) = memo.get(key, self.clock.now_ms()) {
                        return Ok(held.map(str::to_owned));
                    }
                    memo.read_start()
                };
                let value = self.store.get(key).text().await.map_err(|e| PortError(format!("KV: {e}")))?;
                self.memo.borrow_mut().remember_read(start, key, value.as_deref(), self.clock.now_ms());
                Ok(value)
            }
        }
    }

    async fn put(&self, key: &str, value: &str, ttl_secs: u64) -> Result<(), PortError> {
        self.admit_and_write(key, Write::Put { value: value.to_owned(), ttl_secs }).await
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.admit_and_write(key, Write::Delete).await
    }
}
