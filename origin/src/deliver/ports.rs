//! What a delivery needs from the world, as three small ports: the CRM's
//! calls, the results table's write-once records, and a clock. The worker
//! plugs in [`Crm`] (HTTP), [`Store`] (DynamoDB) and [`SystemClock`];
//! `origin/tests/delivery.rs` plugs in fakes and a hand-moved clock, so
//! every decision a delivery sequences is tested without a network, as the
//! edge's facade is (`edge/tests/facade.rs`).
//!
//! The futures are boxed so [`super::delivery::Delivery`] stays one type:
//! one allocation per call is nothing beside the network round trip the
//! call stands for.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use failsoft_shared::cache::CacheEntry;
use serde_json::Value;

use crate::clock;
use failsoft_shared::case::CaseSummary;
use failsoft_shared::mapping::{LookupAnswer, NotACaseList};

use crate::deliver::crm::{self, Crm, Reply};
use crate::store::results::{Claim, RefreshRecord, Store, StoreError};

/// A boxed future a port returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The CRM calls a delivery makes, each classified into a [`Reply`].
pub trait CrmCalls: Send + Sync {
    /// `GET /customers?phone=`.
    fn lookup<'a>(&'a self, phone: &'a str, correlation_id: &'a str, deadline: Duration) -> BoxFuture<'a, Reply>;
    /// `GET /cases?externalRef=`.
    fn find_cases<'a>(&'a self, external_ref: &'a str, deadline: Duration) -> BoxFuture<'a, Reply>;
    /// `POST /cases` with `Idempotency-Key: <correlationId>`.
    fn create_case<'a>(&'a self, correlation_id: &'a str, case: &'a Value, deadline: Duration) -> BoxFuture<'a, Reply>;
    /// The breaker's probe.
    fn probe(&self, deadline: Duration) -> BoxFuture<'_, Reply>;
    /// What a lookup's 2xx answer says (the generic contract's reading,
    /// unless the CRM's mapping says otherwise).
    fn read_customer(&self, body: &[u8], default_tier: &str) -> LookupAnswer {
        crm::generic().read_customer(body, default_tier)
    }
    /// What is kept of a created case.
    fn read_created_case(&self, body: &[u8]) -> Option<CaseSummary> {
        crm::generic().read_created_case(body)
    }
    /// The first case a search answer lists.
    fn read_found_case(&self, body: &[u8]) -> Result<Option<CaseSummary>, NotACaseList> {
        crm::generic().read_found_case(body)
    }
}

/// The results table as a delivery uses it: write-once claims, their
/// release and completion, and refresh records.
pub trait Records: Send + Sync {
    fn claim<'a>(
        &'a self,
        correlation_id: &'a str,
        kind: &'a str,
        owner: &'a str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> BoxFuture<'a, Result<Claim, StoreError>>;
    fn release<'a>(
        &'a self,
        correlation_id: &'a str,
        owner: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn complete<'a>(
        &'a self,
        correlation_id: &'a str,
        kind: &'a str,
        result: &'a Value,
        case_id: Option<&'a str>,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn record_refresh<'a>(
        &'a self,
        refresh: &'a RefreshRecord<'a>,
        entry: &'a CacheEntry,
        horizon_ms: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// Wall-clock time and randomness, the two inputs the policy core takes.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// A uniformly random `u64` (backoff jitter).
    fn random_u64(&self) -> u64;
}

/// The operating system's clock and randomness.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        clock::now_ms()
    }

    fn random_u64(&self) -> u64 {
        clock::random_u64()
    }
}

impl CrmCalls for Crm {
    fn lookup<'a>(&'a self, phone: &'a str, correlation_id: &'a str, deadline: Duration) -> BoxFuture<'a, Reply> {
        Box::pin(Crm::lookup(self, phone, correlation_id, deadline))
    }

    fn find_cases<'a>(&'a self, external_ref: &'a str, deadline: Duration) -> BoxFuture<'a, Reply> {
        Box::pin(Crm::find_cases(self, external_ref, deadline))
    }

    fn create_case<'a>(&'a self, correlation_id: &'a str, case: &'a Value, deadline: Duration) -> BoxFuture<'a, Reply> {
        Box::pin(Crm::create_case(self, correlation_id, case, deadline))
    }

    fn probe(&self, deadline: Duration) -> BoxFuture<'_, Reply> {
        Box::pin(Crm::probe(self, deadline))
    }

    fn read_customer(&self, body: &[u8], default_tier: &str) -> LookupAnswer {
        self.mapping().read_customer(body, default_tier)
    }

    fn read_created_case(&self, body: &[u8]) -> Option<CaseSummary> {
        self.mapping().read_created_case(body)
    }

    fn read_found_case(&self, body: &[u8]) -> Result<Option<CaseSummary>, NotACaseList> {
        self.mapping().read_found_case(body)
    }
}

impl Records for Store {
    fn claim<'a>(
        &'a self,
        correlation_id: &'a str,
        kind: &'a str,
        owner: &'a str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        Box::pin(Store::claim(self, correlation_id, kind, owner, now_ms, lease_until_ms))
    }

    fn release<'a>(
        &'a self,
        correlation_id: &'a str,
        owner: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Store::release(self, correlation_id, owner, now_ms))
    }

    fn complete<'a>(
        &'a self,
        correlation_id: &'a str,
        kind: &'a str,
        result: &'a Value,
        case_id: Option<&'a str>,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Store::complete(self, correlation_id, kind, result, case_id, now_ms))
    }

    fn record_refresh<'a>(
        &'a self,
        refresh: &'a RefreshRecord<'a>,
        entry: &'a CacheEntry,
        horizon_ms: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Store::record_refresh(self, refresh, entry, horizon_ms, now_ms))
    }
}
