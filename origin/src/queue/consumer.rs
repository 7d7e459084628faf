//! The receive loop: long-polls the FIFO queue, hands each message group to
//! one task (one message at a time within a group, groups concurrently up to
//! a bound), carries out each delivery's [`Outcome`] on the queue, and stops
//! receiving while the breaker is open.
//!
//! Per-customer order comes from FIFO: SQS hands out no message of a group
//! while an earlier one is in flight. The worker keeps that lock for as long
//! as it needs it: when a message must wait (backoff, breaker), the later
//! messages of its group that came in the same batch are handed back at
//! once, and the waiting one, still in flight, keeps the group locked until
//! its delay ends, so it is delivered first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::clock;
use crate::dead_letter::DeadLetters;
use crate::deliver::delivery::{Delivery, Gate, Outcome};
use crate::queue::deletes::{DeleteError, Deletes};
use crate::queue::leases::Leases;
use crate::queue::received::Received;
use crate::telemetry;

/// SQS's largest receive batch.
const MAX_BATCH: i32 = 10;
/// A message handed back while later ones of its group wait stays in flight
/// at least this long. At zero it would be visible and out of flight at
/// once, and a queue that re-evaluates group locks lazily (moto's does)
/// could hand out a later message of the group first. The start-up check of
/// the queue's redrive policy counts on it (`failsoft_shared::queue_fit`).
const MIN_HEAD_DELAY_SECS: u64 = failsoft_shared::queue_fit::MIN_HAND_BACK_SECS;
/// Pause after a failed receive, so an unreachable queue is not hammered.
const RECEIVE_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// While deliveries run, the next receive waits this long at most for more
/// of them to finish, so one receive fetches several messages instead of
/// one per delivery ended (a receive costs the worker as much CPU as a
/// delivery's other calls together). An idle worker receives at once.
const RECEIVE_LINGER: Duration = Duration::from_millis(20);

type Held = (Received, OwnedSemaphorePermit);
type Groups = Arc<Mutex<HashMap<String, VecDeque<Held>>>>;

/// The consumer and what it shares with its group tasks.
#[derive(Clone)]
pub struct Consumer {
    pub sqs: Client,
    pub queue_url: String,
    pub delivery: Arc<Delivery>,
    pub dead_letters: DeadLetters,
    pub leases: Arc<Leases>,
    deletes: Deletes,
    slots: Arc<Semaphore>,
    groups: Groups,
    concurrency: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Consumer {
    pub fn new(
        sqs: Client,
        queue_url: String,
        delivery: Arc<Delivery>,
        dead_letters: DeadLetters,
        leases: Arc<Leases>,
    ) -> Self {
        let concurrency = delivery.config.concurrency;
        let deletes = Deletes::start(sqs.clone(), queue_url.clone());
        Self {
            deletes,
            sqs,
            queue_url,
            delivery,
            dead_letters,
            leases,
            slots: Arc::new(Semaphore::new(concurrency)),
            groups: Arc::new(Mutex::new(HashMap::new())),
            concurrency,
        }
    }

    /// Messages held now (being delivered or waiting in their group).
    pub fn in_flight(&self) -> usize {
        self.concurrency - self.slots.available_permits()
    }

    /// Receives and dispatches until `stop` turns true, then waits up to
    /// `grace` for the receive and the deliveries in flight; what is left
    /// returns to the queue by visibility expiry.
    pub async fn run(self, mut stop: watch::Receiver<bool>, grace: Duration) {
        let mut stopped_at = None;
        let wait_secs = self.delivery.config.receive_wait_secs;
        let visibility = self.delivery.config.policy.visibility_timeout_secs as i32;
        while !*stop.borrow() {
            match self.delivery.gate() {
                Gate::Receive => {}
                Gate::Probe => {
                    self.delivery.probe().await;
                    continue;
                }
                Gate::Wait(pause) => {
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        _ = stop.wait_for(|s| *s) => {}
                    }
                    continue;
                }
            }
            let first = tokio::select! {
                permit = Arc::clone(&self.slots).acquire_owned() => permit,
                _ = stop.wait_for(|s| *s) => break,
            };
            let Ok(first) = first else { break };
            let mut permits = gather(&self.slots, self.concurrency, first, RECEIVE_LINGER).await;
            let receive = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(permits.len() as i32)
                .wait_time_seconds(wait_secs)
                .visibility_timeout(visibility)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send();
            tokio::pin!(receive);
            let received = tokio::select! {
                r = &mut receive => Some(r),
                _ = stop.wait_for(|s| *s) => None,
            };
            let Some(received) = received else {
                // SQS goes on handing messages to a long poll whose client
                // has gone, and they stay hidden for the visibility timeout.
                // So the poll runs out, and what it got goes straight back.
                stopped_at = Some(Instant::now());
                if let Ok(Ok(out)) = tokio::time::timeout(grace, receive).await {
                    for message in out.messages.unwrap_or_default().into_iter().filter_map(Received::from_sdk) {
                        self.change_visibility(&message, 0).await;
                    }
                }
                break;
            };
            let messages = match received {
                Ok(out) => out.messages.unwrap_or_default(),
                Err(e) => {
                    if !crate::access::check("sqs:ReceiveMessage", &self.queue_url, &e) {
                        tracing::warn!(error = %DisplayErrorContext(&e), "receive failed");
                    }
                    tokio::time::sleep(RECEIVE_ERROR_PAUSE).await;
                    continue;
                }
            };
            for message in messages.into_iter().filter_map(Received::from_sdk) {
                let Some(permit) = permits.pop() else {
                    // SQS never returns more than asked; hand back any extra.
                    self.change_visibility(&message, 0).await;
                    continue;
                };
                self.dispatch(message, permit, stop.clone()).await;
            }
        }
        tracing::info!(in_flight = self.in_flight(), "stopped receiving; finishing deliveries in flight");
        let all = self.concurrency as u32;
        let left = grace.saturating_sub(stopped_at.map_or(Duration::ZERO, |at| at.elapsed()));
        if tokio::time::timeout(left, self.slots.acquire_many(all)).await.is_err() {
            tracing::warn!(
                in_flight = self.in_flight(),
                "shutdown grace over; the rest returns to the queue when its visibility runs out"
            );
        }
    }

    /// Queues a message behind its group, starting the group's task if idle.
    async fn dispatch(&self, message: Received, permit: OwnedSemaphorePermit, stop: watch::Receiver<bool>) {
        tracing::debug!(message_id = %message.message_id, group = %message.group_id, receives = message.receive_count, "received");
        self.leases.hold(&message.message_id, &message.receipt).await;
        let group = message.group_id.clone();
        let start = {
            let mut groups = lock(&self.groups);
            match groups.get_mut(&group) {
                Some(queue) => {
                    queue.push_back((message, permit));
                    false
                }
                None => {
                    groups.insert(group.clone(), VecDeque::from([(message, permit)]));
                    true
                }
            }
        };
        if start {
            let this = self.clone();
            tokio::spawn(async move { this.run_group(group, stop).await });
        }
    }

    /// Delivers a group's messages in order; stops at the first that must
    /// wait and hands the rest back.
    async fn run_group(self, group: String, stop: watch::Receiver<bool>) {
        loop {
            let next = {
                let mut groups = lock(&self.groups);
                let popped = groups.get_mut(&group).and_then(VecDeque::pop_front);
                if popped.is_none() {
                    groups.remove(&group);
                }
                popped
            };
            let Some((message, permit)) = next else { return };
            if *stop.borrow() {
                let outcome = Outcome::Defer { delay_ms: 0, why: "shutting_down" };
                self.hand_back_group(&group, &message, outcome).await;
                return;
            }
            let outcome = self.delivery.deliver(&message).await;
            if matches!(outcome, Outcome::Retry { .. } | Outcome::Defer { .. }) {
                self.hand_back_group(&group, &message, outcome).await;
                drop(permit);
                return;
            }
            self.finish(&message, outcome).await;
            drop(permit);
        }
    }

    /// The group's head must wait: it keeps the group locked (still in
    /// flight, at least a second) while the messages behind it go back at
    /// once; when its delay ends it is the first the group hands out.
    async fn hand_back_group(&self, group: &str, head: &Received, outcome: Outcome) {
        self.finish(head, outcome).await;
        let rest: Vec<Held> = lock(&self.groups).remove(group).map(Vec::from).unwrap_or_default();
        for (later, permit) in rest {
            self.leases.release(&later.message_id).await;
            self.change_visibility(&later, 0).await;
            drop(permit);
        }
    }

    /// Carries out an outcome on the queue.
    async fn finish(&self, message: &Received, outcome: Outcome) {
        self.leases.release(&message.message_id).await;
        count(&outcome);
        match outcome {
            Outcome::Done => match self.deletes.delete(&message.receipt).await {
                // Seen again later, it finds its result and is deleted then.
                Ok(()) | Err(DeleteError::Denied) => {}
                Err(e) => tracing::warn!(error = %e, message_id = %message.message_id, "delete failed"),
            },
            Outcome::Retry { delay_ms, attempt, class, status } => {
                tracing::info!(
                    message_id = %message.message_id,
                    attempt,
                    receives = message.receive_count,
                    delay_ms,
                    class = class.as_str(),
                    status,
                    "delivery failed; retrying after the backoff"
                );
                self.change_visibility(message, clock::ceil_secs(delay_ms).max(MIN_HEAD_DELAY_SECS)).await;
            }
            Outcome::Defer { delay_ms, why } => {
                tracing::debug!(message_id = %message.message_id, delay_ms, why, "handed back");
                self.change_visibility(message, clock::ceil_secs(delay_ms).max(MIN_HEAD_DELAY_SECS)).await;
            }
            Outcome::DeadLetter(why) => match self.dead_letters.send(message, &why).await {
                Ok(()) => metrics::counter!(telemetry::DEAD_LETTERS, "error_class" => why.error_class).increment(1),
                Err(e @ crate::dead_letter::DeadLetterError::Denied(_)) => {
                    tracing::debug!(error = %e, message_id = %message.message_id, "dead-lettering denied; it returns to the queue");
                }
                Err(e) => {
                    tracing::error!(error = %e, message_id = %message.message_id, "dead-lettering failed; it returns to the queue");
                }
            },
        }
    }

    async fn change_visibility(&self, message: &Received, secs: u64) {
        let secs = secs.min(failsoft_shared::config::SQS_MAX_VISIBILITY_SECS) as i32;
        if let Err(e) = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(&message.receipt)
            .visibility_timeout(secs)
            .send()
            .await
        {
            // Past SQS's 12-hour limit, or gone (or denied): it returns when
            // its current visibility ends instead.
            if !crate::access::check("sqs:ChangeMessageVisibility", &self.queue_url, &e) {
                tracing::warn!(error = %DisplayErrorContext(&e), message_id = %message.message_id, "visibility change failed");
            }
        }
    }
}

/// Counts a delivery's outcome: `deliveries_total` by outcome (`delivered`
/// or the failure's error class), retries, deferrals.
fn count(outcome: &Outcome) {
    crate::emf::tally(outcome);
    match outcome {
        Outcome::Done => metrics::counter!(telemetry::DELIVERIES, "outcome" => "delivered").increment(1),
        Outcome::Retry { class, .. } => {
            metrics::counter!(telemetry::DELIVERIES, "outcome" => class.as_str()).increment(1);
            metrics::counter!(telemetry::RETRIES, "error_class" => class.as_str()).increment(1);
        }
        Outcome::DeadLetter(why) => {
            metrics::counter!(telemetry::DELIVERIES, "outcome" => why.error_class).increment(1);
        }
        Outcome::Defer { why, .. } => metrics::counter!(telemetry::DEFERRED, "why" => *why).increment(1),
    }
}

/// The slots for one receive: `first` and up to [`MAX_BATCH`] in all. What
/// is free is taken at once; while other deliveries hold slots, it waits up
/// to `linger` for them to end rather than receive one message at a time.
async fn gather(
    slots: &Arc<Semaphore>,
    concurrency: usize,
    first: OwnedSemaphorePermit,
    linger: Duration,
) -> Vec<OwnedSemaphorePermit> {
    let until = tokio::time::Instant::now() + linger;
    let mut permits = vec![first];
    while permits.len() < MAX_BATCH as usize {
        if let Ok(p) = Arc::clone(slots).try_acquire_owned() {
            permits.push(p);
            continue;
        }
        let others_running = concurrency - slots.available_permits() > permits.len();
        if !others_running {
            break;
        }
        match tokio::time::timeout_at(until, Arc::clone(slots).acquire_owned()).await {
            Ok(Ok(p)) => permits.push(p),
            _ => break,
        }
    }
    permits
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `concurrency` slots of which `held` are taken by running deliveries.
    fn slots_with(concurrency: usize, held: usize) -> (Arc<Semaphore>, Vec<OwnedSemaphorePermit>) {
        let slots = Arc::new(Semaphore::new(concurrency));
        let running = (0..held).map(|_| Arc::clone(&slots).try_acquire_owned().unwrap()).collect();
        (slots, running)
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_worker_receives_at_once_with_what_is_free() {
        let (slots, _none) = slots_with(32, 0);
        let first = Arc::clone(&slots).try_acquire_owned().unwrap();
        let started = tokio::time::Instant::now();
        let permits = gather(&slots, 32, first, Duration::from_secs(5)).await;
        assert_eq!(permits.len(), MAX_BATCH as usize, "a full batch is free");
        assert_eq!(started.elapsed(), Duration::ZERO, "nothing waited");

        let (slots, _running) = slots_with(3, 2);
        let first = Arc::clone(&slots).try_acquire_owned().unwrap();
        let permits = gather(&slots, 3, first, Duration::from_secs(5)).await;
        assert_eq!(permits.len(), 1);
        // Two deliveries run, yet the lone free slot waited for them: the
        // linger bounds it.
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_worker_waits_briefly_so_one_receive_fetches_several() {
        let (slots, mut running) = slots_with(32, 31);
        let first = Arc::clone(&slots).try_acquire_owned().unwrap();
        // Deliveries end one every 2 ms.
        let ending = tokio::spawn(async move {
            while let Some(permit) = running.pop() {
                tokio::time::sleep(Duration::from_millis(2)).await;
                drop(permit);
            }
        });
        let started = tokio::time::Instant::now();
        let permits = gather(&slots, 32, first, Duration::from_millis(20)).await;
        assert_eq!(permits.len(), MAX_BATCH as usize, "nine more ended within the linger");
        assert_eq!(started.elapsed(), Duration::from_millis(18), "and it stopped waiting once full");
        ending.abort();

        let (slots, running) = slots_with(32, 31);
        let first = Arc::clone(&slots).try_acquire_owned().unwrap();
        let permits = gather(&slots, 32, first, Duration::from_millis(20)).await;
        assert_eq!(permits.len(), 1, "none ended: one message, after the linger");
        assert_eq!(started.elapsed(), Duration::from_millis(38));
        drop(running);
    }
}
