//! Pushes a refreshed record into the edge's KV through the edge's signed
//! internal route, so the next lookup there is answered fresh without
//! waiting for the CRM.
//!
//! Best effort: the last-known table is the durable copy, and an edge that
//! misses a push refreshes on its own. A failure is logged, never retried.
//! A refresh hands its push to a background task ([`EdgePush::push_later`])
//! so a slow edge does not hold the delivery's slot; at most
//! [`PUSHES_IN_FLIGHT`] run at once, and past that the delivery pushes
//! itself (backpressure, not loss).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use failsoft_shared::cache::CacheEntry;
use failsoft_shared::signature::{self, Signed};

use crate::clock;
use crate::config::Secret;

/// Bound on one push: it runs after the delivery, inside its time.
const PUSH_TIMEOUT: Duration = Duration::from_secs(3);
/// Background pushes at once.
pub const PUSHES_IN_FLIGHT: usize = 64;

/// The cache-push route of every edge (`FAILSOFT_EDGE_URL`, one or more).
#[derive(Clone)]
pub struct EdgePush {
    http: reqwest::Client,
    bases: Vec<String>,
    secret: Secret,
    background: Arc<Semaphore>,
}

/// What came of one push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Stored,
    /// The edge has no such route (an edge older than the push).
    NoRoute,
    Failed,
}

impl EdgePush {
    /// `None` without an edge to push to.
    pub fn new(http: reqwest::Client, bases: &[String], secret: Secret) -> Option<Self> {
        let bases: Vec<String> = bases.iter().map(|b| b.trim_end_matches('/').to_owned()).collect();
        let background = Arc::new(Semaphore::new(PUSHES_IN_FLIGHT));
        (!bases.is_empty()).then_some(Self { http, bases, secret, background })
    }

    /// Pushes in a background task while fewer than [`PUSHES_IN_FLIGHT`]
    /// are out; otherwise here and now.
    pub async fn push_later(&self, entity_key: &str, entry: &CacheEntry) {
        match Arc::clone(&self.background).try_acquire_owned() {
            Ok(permit) => {
                let (this, key, entry) = (self.clone(), entity_key.to_owned(), entry.clone());
                tokio::spawn(async move {
                    this.push(&key, &entry).await;
                    drop(permit);
                });
            }
            Err(_) => {
                self.push(entity_key, entry).await;
            }
        }
    }

    /// Pushes to every edge, one after the other; what came of the last.
    pub async fn push(&self, entity_key: &str, entry: &CacheEntry) -> Pushed {
        let mut pushed = Pushed::NoRoute;
        for base in &self.bases {
            pushed = self.push_to(base, entity_key, entry).await;
        }
        pushed
    }

    /// `PUT {edge}/v1/internal/cache/{entityKey}`, body the entry, signed.
    async fn push_to(&self, base: &str, entity_key: &str, entry: &CacheEntry) -> Pushed {
        let body = serde_json::to_vec(entry).unwrap_or_default();
        let url = format!("{base}/v1/internal/cache/{entity_key}");
        let request = signed_json(&self.http, reqwest::Method::PUT, &url, &self.secret, body).timeout(PUSH_TIMEOUT);
        match request.send().await {
            Ok(resp) if resp.status().is_success() => Pushed::Stored,
            Ok(resp) if resp.status().as_u16() == 404 => {
                tracing::info!("the edge has no cache-push route; skipping the push");
                Pushed::NoRoute
            }
            Ok(resp) => {
                tracing::warn!(status = resp.status().as_u16(), "the edge refused a cache push");
                Pushed::Failed
            }
            Err(e) => {
                tracing::warn!(error = %e, "cache push to the edge failed");
                Pushed::Failed
            }
        }
    }
}

/// A `method` request to `url` with a JSON `body`, signed with the internal
/// secret as every call between the origin and the edge is: timestamp,
/// fresh nonce, and the MAC over the method, the path and query, both of
/// those and the body (see `failsoft_shared::signature`). Sent twice, it is
/// refused the second time: a retry must sign again.
pub(crate) fn signed_json(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    secret: &Secret,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    let ts = clock::now_ms() / 1000;
    let signed = Signed::new(method.as_str(), signature::target_of(url), &body);
    let headers = signature::headers(secret.expose(), &signed, ts, clock::nonce_bytes());
    headers
        .into_iter()
        .fold(http.request(method, url), |request, (name, value)| request.header(name, value))
        .header("content-type", "application/json")
        .body(body)
}
