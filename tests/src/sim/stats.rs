//! Request counters, read by tests through `GET /admin/stats`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::route::Route;

/// Counters of API traffic. Each is counted when the request arrives, so a
/// hanging request is visible before it is answered.
#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicU64,
    lookups: AtomicU64,
    lists: AtomicU64,
    creates: AtomicU64,
    case_queries: AtomicU64,
    failed: AtomicU64,
    cases_created: AtomicU64,
    idempotent_replays: AtomicU64,
    events: AtomicU64,
    events_delivered: AtomicU64,
    throttled: AtomicU64,
    tokens_issued: AtomicU64,
}

/// A copy of the counters as JSON shows them.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsSnapshot {
    /// Every API request.
    pub requests: u64,
    /// `GET /customers?phone=` requests, whatever their outcome.
    pub lookups: u64,
    /// `GET /customers` list pages asked for (the sync), whatever their outcome.
    pub lists: u64,
    /// `POST /cases` requests, whatever their outcome.
    pub creates: u64,
    /// `GET /cases?externalRef=` requests.
    pub case_queries: u64,
    /// Requests answered by a failure mode (hang, 429, 5xx, reject, down).
    pub failed: u64,
    /// `POST /cases` requests that created a case (ledger entries).
    pub cases_created: u64,
    /// `POST /cases` requests answered with an existing case for their key.
    pub idempotent_replays: u64,
    /// `POST /events` requests, whatever their outcome.
    pub events: u64,
    /// `POST /events` requests that added a delivery to the events ledger.
    pub events_delivered: u64,
    /// Requests refused by the rate limit (`--rate-limit`): 429, or
    /// Salesforce's 403 `REQUEST_LIMIT_EXCEEDED`.
    pub throttled: u64,
    /// Bearer tokens a dialect's token endpoint issued (`--dialect`).
    pub tokens_issued: u64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    /// Counts an arriving request.
    pub fn request(&self, route: Route) {
        bump(&self.requests);
        match route {
            Route::Lookup => bump(&self.lookups),
            Route::ListCustomers => bump(&self.lists),
            Route::CreateCase => bump(&self.creates),
            Route::FindCases => bump(&self.case_queries),
            Route::PostEvent => bump(&self.events),
            Route::Other => {}
        }
    }

    /// Counts a request that a failure mode answered.
    pub fn failed(&self) {
        bump(&self.failed);
    }

    /// Counts a new case.
    pub fn case_created(&self) {
        bump(&self.cases_created);
    }

    /// Counts a create answered from the idempotency record.
    pub fn idempotent_replay(&self) {
        bump(&self.idempotent_replays);
    }

    /// Counts a request the rate limit refused.
    pub fn throttled(&self) {
        bump(&self.throttled);
    }

    /// Counts a bearer token issued.
    pub fn token_issued(&self) {
        bump(&self.tokens_issued);
    }

    /// Counts an event added to the events ledger.
    pub fn event_delivered(&self) {
        bump(&self.events_delivered);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: read(&self.requests),
            lookups: read(&self.lookups),
            lists: read(&self.lists),
            creates: read(&self.creates),
            case_queries: read(&self.case_queries),
            failed: read(&self.failed),
            cases_created: read(&self.cases_created),
            idempotent_replays: read(&self.idempotent_replays),
            events: read(&self.events),
            events_delivered: read(&self.events_delivered),
            throttled: read(&self.throttled),
            tokens_issued: read(&self.tokens_issued),
        }
    }

    pub fn reset(&self) {
        for counter in [
            &self.requests,
            &self.lookups,
            &self.lists,
            &self.creates,
            &self.case_queries,
            &self.failed,
            &self.cases_created,
            &self.idempotent_replays,
            &self.events,
            &self.events_delivered,
            &self.throttled,
            &self.tokens_issued,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }
}
