//! Request coalescing: concurrent misses for one key in one process
//! (native), isolate (Worker) or instance (Spin) make one CRM call.
//!
//! The first caller of a key leads: it asks the breaker and calls the CRM.
//! Callers that come while it is out follow: they await the leader's answer
//! instead of calling, and are answered from it. The leader's call is
//! bounded by the CRM deadline, so a follower waits at most that, and less
//! the later it came. A follower looks for the answer between sleeps on its
//! host's own timer ([`follow`]), up to its own deadline: a Worker cancels
//! as hung a request that waits only on another request's call, and one
//! woken by another request's I/O cannot make its response. A
//! leader that ends without an answer (no permit, the CRM failed, or its
//! request was cancelled and the [`Leader`] dropped) hands its followers
//! `None`, and each falls back down the ladder as it would have alone.
//! Host-neutral: one lock and a map of waiting senders.

use std::collections::HashMap;
use std::sync::Mutex;

use futures_channel::oneshot;

use crate::ports::Clock;

/// Followers of one key at most; a caller beyond them calls for itself
/// (bounds memory under a flood of one number).
pub const MAX_FOLLOWERS: usize = 1_024;

/// The calls out now, by key, with the senders of their followers.
pub struct Inflight<T> {
    calls: Mutex<HashMap<String, Vec<oneshot::Sender<T>>>>,
}

impl<T> Default for Inflight<T> {
    fn default() -> Self {
        Self { calls: Mutex::new(HashMap::new()) }
    }
}

/// A caller's part in a key's call.
pub enum Turn<'a, T: Clone> {
    /// No call is out for the key: make it, then [`Leader::finish`].
    Lead(Leader<'a, T>),
    /// A call is out: await its answer (`Err`: the leader ended without one).
    Follow(oneshot::Receiver<T>),
    /// A call is out with [`MAX_FOLLOWERS`] waiting: call for yourself.
    Alone,
}

impl<T: Clone> Inflight<T> {
    /// Leads the key's call, or follows the one out.
    pub fn turn(&self, key: &str) -> Turn<'_, T> {
        let mut calls = self.lock();
        match calls.get_mut(key) {
            Some(followers) if followers.len() >= MAX_FOLLOWERS => Turn::Alone,
            Some(followers) => {
                let (tx, rx) = oneshot::channel();
                followers.push(tx);
                Turn::Follow(rx)
            }
            None => {
                calls.insert(key.to_owned(), Vec::new());
                Turn::Lead(Leader { inflight: self, key: Some(key.to_owned()) })
            }
        }
    }

    /// Keys with a call out now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<oneshot::Sender<T>>>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the key's call: its followers get `value`, or, with `None`,
    /// nothing (their receivers see the leader gone).
    fn end(&self, key: &str, value: Option<T>) -> usize {
        let followers = self.lock().remove(key).unwrap_or_default();
        let count = followers.len();
        if let Some(value) = value {
            for follower in followers {
                // A follower that gave up (its request cancelled) is skipped.
                let _ = follower.send(value.clone());
            }
        }
        count
    }
}

/// How often a follower looks for its leader's answer, milliseconds.
pub const FOLLOW_POLL_MS: u64 = 10;

/// A follower's wait: its leader's answer, looked for every
/// [`FOLLOW_POLL_MS`] on the host's own timer until `deadline_ms` has
/// passed; `None` when the leader ended without one or the deadline came.
/// Polled, not woken by the leader's send: on a Worker a request woken by
/// another request's I/O cannot make its response.
pub async fn follow<T, C: Clock>(mut call: oneshot::Receiver<T>, clock: &C, deadline_ms: u64) -> Option<T> {
    let started = clock.now_ms();
    // Bounded by the deadline: at most deadline / FOLLOW_POLL_MS + 1 looks.
    loop {
        match call.try_recv() {
            Ok(Some(answer)) => return Some(answer),
            Ok(None) => {}
            Err(oneshot::Canceled) => return None,
        }
        if clock.now_ms().saturating_sub(started) >= deadline_ms {
            return None;
        }
        clock.sleep_ms(FOLLOW_POLL_MS).await;
    }
}

/// The leader of a key's call. Dropped without [`Leader::finish`], it ends
/// the call without an answer, so followers never wait on a leader gone.
pub struct Leader<'a, T: Clone> {
    inflight: &'a Inflight<T>,
    key: Option<String>,
}

impl<T: Clone> Leader<'_, T> {
    /// Hands `value` to every follower; returns how many there were.
    pub fn finish(mut self, value: T) -> usize {
        match self.key.take() {
            Some(key) => self.inflight.end(&key, Some(value)),
            None => 0,
        }
    }
}

impl<T: Clone> Drop for Leader<'_, T> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.inflight.end(&key, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
    }

    #[test]
    fn the_first_caller_leads_and_the_others_get_its_answer() {
        let inflight = Inflight::<u32>::default();
        let Turn::Lead(leader) = inflight.turn("k") else { panic!("the first caller leads") };
        let followers: Vec<_> = (0..3)
            .map(|_| match inflight.turn("k") {
                Turn::Follow(rx) => rx,
                _ => panic!("a call is out: follow it"),
            })
            .collect();
        assert!(matches!(inflight.turn("other"), Turn::Lead(_)), "another key is its own call");
        assert_eq!(leader.finish(7), 3);
        assert!(inflight.is_empty());
        for rx in followers {
            assert_eq!(block_on(rx), Ok(7));
        }
        assert!(matches!(inflight.turn("k"), Turn::Lead(_)), "the next miss leads again");
    }

    #[test]
    fn a_leader_dropped_without_an_answer_releases_its_followers() {
        let inflight = Inflight::<u32>::default();
        let leader = inflight.turn("k");
        let Turn::Follow(rx) = inflight.turn("k") else { panic!("follow") };
        drop(leader);
        assert!(block_on(rx).is_err(), "the follower falls back instead of waiting");
        assert!(inflight.is_empty());
    }

    /// Each sleep moves the clock; nothing real waits.
    struct Steps(std::sync::atomic::AtomicU64);
    impl Clock for Steps {
        fn now_ms(&self) -> u64 {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
        fn random_u64(&self) -> u64 {
            0
        }
        async fn sleep_ms(&self, ms: u64) {
            self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_follower_gets_the_answer_or_gives_up_at_its_deadline() {
        let clock = Steps(0.into());
        let (tx, rx) = oneshot::channel();
        tx.send(3).unwrap();
        assert_eq!(block_on(follow(rx, &clock, 1_000)), Some(3));
        let (_tx, rx) = oneshot::channel::<u32>();
        assert_eq!(block_on(follow(rx, &clock, 1_000)), None, "no answer by the deadline");
        assert_eq!(clock.now_ms(), 1_000, "it looked every 10 ms until the deadline");
        let (tx, rx) = oneshot::channel::<u32>();
        drop(tx);
        assert_eq!(block_on(follow(rx, &clock, 1_000)), None, "the leader is gone");
    }

    #[test]
    fn followers_are_bounded() {
        let inflight = Inflight::<u32>::default();
        let _leader = inflight.turn("k");
        let _followers: Vec<_> = (0..MAX_FOLLOWERS).map(|_| inflight.turn("k")).collect();
        assert!(matches!(inflight.turn("k"), Turn::Alone));
    }
}
