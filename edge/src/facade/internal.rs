//! The internal endpoints: the origin's cache push and the CRM's change
//! webhook (both signed), and the traffic report the edge sends the origin.

use failsoft_shared::cache::CacheEntry;
use failsoft_shared::edge_stats::{self, OutboxLevel};
use failsoft_shared::keys::{customer_kv_key, entity_key, is_entity_key, normalize_phone};
use failsoft_shared::signature::{self, Presented, SignatureError, Signed, Verified};
use failsoft_shared::sync::{BULK_MAX_ENTRIES, BulkAction, BulkPush};
use serde_json::{Value, json};

use super::{Checked, Facade, NonceStore, Refusal, checks};
use crate::http::{Request, Response};
use crate::kv_outbox::Drained;
use crate::ports::{Clock, Downstream, Forwarder, Kv, OutboundRequest, PortError};
use crate::wire::{CrmChange, ROUTING_FIELDS};

/// Entries one call of the drain route sends on at most.
const DRAIN_ON_CALL: usize = 200;
/// Entries a request sends on after its response at most (Spin).
pub const DRAIN_AFTER_RESPONSE: usize = 10;

impl<K: Kv, D: Downstream, F: Forwarder, C: Clock> Facade<K, D, F, C> {
    /// Whether a traffic report is due (never without an origin to send it to).
    pub fn stats_due(&self) -> bool {
        self.config.origin_url.is_some() && self.lock_stats().is_due(self.clock.now_ms())
    }

    /// Sends the due traffic report, if any, to the origin, signed like the
    /// result proxy's calls. Without `FAILSOFT_ORIGIN_URL` the counters only
    /// count. A failed send is handed back to be resent unchanged.
    pub async fn report_stats(&self) {
        let (Some(origin), Some(secret)) = (self.config.origin_url.as_deref(), self.config.internal_secret.as_deref())
        else {
            return;
        };
        let Some(mut report) = self.lock_stats().take_report(self.clock.now_ms()) else { return };
        // The outbox as it is now, also on a resent report.
        report.outbox = self.forwarder.backlog().map(|b| OutboxLevel {
            entries: b.entries,
            bytes: b.bytes,
            oldest_at_ms: b.oldest_at_ms,
        });
        let body = serde_json::to_vec(&report).unwrap_or_default();
        let url = format!("{origin}{}", edge_stats::REPORT_PATH);
        let mut headers = self.signed_headers(secret, "POST", &url, &body);
        headers.push(("content-type".to_owned(), "application/json".to_owned()));
        let request = OutboundRequest { method: "POST".to_owned(), url, headers, body: Some(body) };
        let seq = report.seq;
        let outcome = match self.downstream.send(request, edge_stats::SEND_DEADLINE_MS).await {
            Ok(resp) if (200..300).contains(&resp.status) => {
                self.lock_stats().delivered(seq);
                "delivered"
            }
            // Malformed or too large: resending the same bytes cannot succeed.
            Ok(resp) if matches!(resp.status, 400 | 413) => {
                tracing::warn!(status = resp.status, seq, "the origin refused a traffic report; dropped");
                self.lock_stats().delivered(seq);
                "refused"
            }
            outcome => {
                let why = outcome.map(|r| r.status.to_string()).unwrap_or_else(|e| format!("{e:?}"));
                tracing::warn!(why, seq, "sending a traffic report failed; it will be resent");
                self.lock_stats().failed(report, self.clock.now_ms());
                "failed"
            }
        };
        metrics::counter!("failsoft_edge_stats_reports_total", "outcome" => outcome).increment(1);
    }

    /// The internal signature headers of a `method` request to `url` with
    /// `body`, signed now with a fresh nonce.
    pub(super) fn signed_headers(&self, secret: &[u8], method: &str, url: &str, body: &[u8]) -> Vec<(String, String)> {
        let ts = self.clock.now_ms() / 1000;
        let mut random = [0u8; signature::NONCE_BYTES];
        random[..8].copy_from_slice(&self.clock.random_u64().to_le_bytes());
        random[8..].copy_from_slice(&self.clock.random_u64().to_le_bytes());
        let signed = Signed::new(method, signature::target_of(url), body);
        let headers: Vec<(&'static str, String)> = signature::headers(secret, &signed, ts, random).into();
        headers.into_iter().map(|(name, value)| (name.to_owned(), value)).collect()
    }

    /// Accepts a signed request once: its MAC over the method, the target,
    /// the time, the nonce and the body must match under `secret`, its time
    /// be within the window, and its nonce be new (see [`NonceStore`]).
    /// `what` names the signature in the refusal, always a 401 with the
    /// reason's code; a KV store that cannot say whether a nonce was seen
    /// is a 503 (refused, never waved through).
    async fn accept_signed(&self, req: &Request, secret: &[u8], what: &str) -> Checked<Verified> {
        let now = self.clock.now_ms() / 1000;
        let tolerance = self.config.policy.signature_tolerance_secs;
        let refuse = |e: SignatureError| {
            Refusal::new(401, e.code(), &format!("the {what} signature is missing, wrong, expired or already used"))
        };
        let presented = Presented {
            signature: req.header_value(signature::SIGNATURE_HEADER),
            timestamp: req.header_value(signature::TIMESTAMP_HEADER),
            nonce: req.header_value(signature::NONCE_HEADER),
        };
        let target = req.target();
        let signed = Signed::new(&req.method, &target, &req.body);
        let verified = signature::verify(secret, &presented, &signed, now, tolerance).map_err(refuse)?;
        match &self.nonces {
            NonceStore::Memory(cache) => {
                cache.lock().unwrap_or_else(|e| e.into_inner()).admit(&verified, now, tolerance).map_err(refuse)?
            }
            NonceStore::Kv => self.admit_in_kv(&verified, now, tolerance).await?.map_err(refuse)?,
        }
        Ok(verified)
    }

    /// `answer` to an accepted signed request; when it is a 5xx the request
    /// had no effect and the signer may send the very same bytes again (a
    /// CRM retrying its webhook), so its nonce is forgotten.
    async fn settled(&self, verified: &Verified, answer: Checked<Response>) -> Checked<Response> {
        if answer.as_ref().is_ok_and(|resp| resp.status >= 500) {
            match &self.nonces {
                NonceStore::Memory(cache) => cache.lock().unwrap_or_else(|e| e.into_inner()).forget(verified),
                NonceStore::Kv => {
                    if let Err(e) = self.kv.delete(&verified.store_key()).await {
                        tracing::warn!(error = %e, "a failed request's nonce could not be forgotten");
                    }
                }
            }
        }
        answer
    }

    /// Spin's replay check: a KV key per nonce (a digest, never the nonce
    /// itself), kept until the signature expires. The read and the write
    /// are two steps, so two copies of one request arriving at the same
    /// moment could both pass; a replay after the first has been stored
    /// cannot.
    async fn admit_in_kv(&self, verified: &Verified, now: u64, tolerance: u64) -> Checked<Result<(), SignatureError>> {
        let unavailable = |e: crate::ports::PortError| {
            tracing::warn!(error = %e, "the nonce store failed; signed request refused");
            Refusal(crate::http::Response::error(
                503,
                "NONCE_STORE_UNAVAILABLE",
                "the request could not be checked; retry",
            ))
        };
        let key = verified.store_key();
        if self.kv.get(&key).await.map_err(unavailable)?.is_some() {
            return Ok(Err(SignatureError::Replayed));
        }
        self.kv.put(&key, "1", verified.remember_secs(now, tolerance)).await.map_err(unavailable)?;
        Ok(Ok(()))
    }

    // ── the origin's cache push ──────────────────────────────────────────

    /// `PUT /v1/internal/cache/{entityKey}`: the origin pushes a record it
    /// refreshed. Signed with the internal secret; an older record never
    /// replaces a newer one.
    pub(super) async fn push_cache(&self, req: &Request, entity: &str, secret: &[u8]) -> Checked<Response> {
        checks::within_cap(req)?;
        let verified = self.accept_signed(req, secret, "internal").await?;
        let answer = self.store_pushed(req, entity).await;
        self.settled(&verified, answer).await
    }

    async fn store_pushed(&self, req: &Request, entity: &str) -> Checked<Response> {
        if !is_entity_key(entity) {
            return Err(Refusal::new(400, "INVALID_ENTITY_KEY", "the key must be 64 lower-case hex characters"));
        }
        let pushed: CacheEntry = serde_json::from_slice(&req.body)
            .map_err(|_| Refusal::new(400, "INVALID_BODY", "the body must be a cache entry"))?;
        let kv_key = customer_kv_key(entity);
        if let Some(current) = self.read_entry(&kv_key).await
            && current.fetched_at_ms >= pushed.fetched_at_ms
        {
            return Ok(Response::json(200, &json!({"stored": false, "reason": "newer record cached"})));
        }
        let ttl = self.config.policy.freshness.last_known_horizon_ms / 1000;
        let text = serde_json::to_string(&pushed).unwrap_or_default();
        match self.kv.put(&kv_key, &text, ttl).await {
            Ok(()) => Ok(Response::json(200, &json!({"stored": true}))),
            Err(e) => {
                tracing::warn!(error = %e, "storing a pushed record failed");
                Ok(Response::error(503, "KV_UNAVAILABLE", "the record could not be stored; retry"))
            }
        }
    }

    /// `POST /v1/internal/cache`: the origin's pre-warm sync sends up to
    /// [`BULK_MAX_ENTRIES`] records and removals at once, signed like a
    /// single push. Each entry is applied by its stamp (an older record
    /// never replaces a newer one); the answer counts what happened, and a
    /// KV failure on any entry is a 503 so the whole batch is sent again
    /// (entries already applied are then kept as a tie).
    /// `POST /v1/internal/outbox/drain` (signed): sends on what the
    /// outbox holds, repairing its index first (`crate::kv_outbox`). 404 on
    /// a host whose outbox drains itself or that has none.
    pub(super) async fn outbox_drain_call(&self, req: &Request, secret: &[u8]) -> Checked<Response> {
        checks::within_cap(req)?;
        let verified = self.accept_signed(req, secret, "internal").await?;
        let answer = match self.drain_outbox(DRAIN_ON_CALL, true).await {
            None => Err(Refusal::new(404, "NO_DRAINED_OUTBOX", "this edge's outbox drains itself, or it has none")),
            Some(Ok(d)) => Ok(Response::json(
                200,
                &json!({"sent": d.sent, "refused": d.refused.len(), "repaired": d.repaired, "waiting": d.waiting}),
            )),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "draining the outbox failed");
                Ok(Response::error(503, "OUTBOX_UNAVAILABLE", "the outbox's store failed; retry"))
            }
        };
        self.settled(&verified, answer).await
    }

    /// Sends on up to `max` entries of an outbox that requests drain, and
    /// records the writes SQS refused as `FAILED`. `None` when the host's
    /// outbox drains itself (or it has none).
    pub async fn drain_outbox(&self, max: usize, full: bool) -> Option<Result<Drained, PortError>> {
        let result = self.forwarder.drain_outbox(max, full).await?;
        if let Ok(drained) = &result {
            for (message, code) in &drained.refused {
                self.record_refused_write(message, code).await;
            }
            if drained.sent > 0 {
                tracing::info!(sent = drained.sent, waiting = drained.waiting, "outbox drained");
            }
        }
        Some(result)
    }

    pub(super) async fn push_bulk(&self, req: &Request, secret: &[u8]) -> Checked<Response> {
        checks::within_cap(req)?;
        let verified = self.accept_signed(req, secret, "internal").await?;
        let answer = self.apply_bulk(req).await;
        self.settled(&verified, answer).await
    }

    async fn apply_bulk(&self, req: &Request) -> Checked<Response> {
        let push: BulkPush = serde_json::from_slice(&req.body)
            .map_err(|_| Refusal::new(400, "INVALID_BODY", "the body must be {\"entries\": [...]}"))?;
        if push.entries.len() > BULK_MAX_ENTRIES {
            return Err(Refusal::new(400, "TOO_MANY_ENTRIES", "at most 100 entries per request"));
        }
        if let Some(index) = push.entries.iter().position(|e| e.validate().is_err()) {
            let message = format!("entry {index}: a 64-hex `key` and exactly one of `entry` and `removedAtMs`");
            return Err(Refusal::new(400, "INVALID_ENTRY", &message));
        }
        let ttl = self.config.policy.freshness.last_known_horizon_ms / 1000;
        let (mut stored, mut removed, mut kept, mut failed) = (0u32, 0u32, 0u32, 0u32);
        for item in &push.entries {
            let kv_key = customer_kv_key(&item.key);
            let held = match self.kv.get(&kv_key).await {
                Ok(text) => text.and_then(|t| serde_json::from_str(&t).ok()),
                Err(_) => {
                    failed += 1;
                    continue;
                }
            };
            let outcome = match (item.action(held.as_ref()), &item.entry) {
                (BulkAction::Store, Some(entry)) => {
                    let text = serde_json::to_string(entry).unwrap_or_default();
                    self.kv.put(&kv_key, &text, ttl).await.map(|()| &mut stored)
                }
                (BulkAction::Delete, _) => self.kv.delete(&kv_key).await.map(|()| &mut removed),
                _ => Ok(&mut kept),
            };
            match outcome {
                Ok(count) => *count += 1,
                Err(_) => failed += 1,
            }
        }
        metrics::counter!("failsoft_edge_synced_total", "outcome" => "stored").increment(stored.into());
        metrics::counter!("failsoft_edge_synced_total", "outcome" => "removed").increment(removed.into());
        let counts = json!({"stored": stored, "removed": removed, "kept": kept, "failed": failed});
        if failed > 0 {
            tracing::warn!(failed, "storing synced records failed");
            let error = json!({"code": "KV_UNAVAILABLE", "message": "some records could not be stored; retry"});
            return Ok(Response::json(503, &json!({"error": error, "counts": counts})));
        }
        Ok(Response::json(200, &counts))
    }

    // ── the CRM's change webhook ─────────────────────────────────────────

    pub(super) async fn crm_update(&self, req: &Request) -> Checked<Response> {
        checks::within_cap(req)?;
        let verified = self.accept_signed(req, &self.config.webhook_secret, "webhook").await?;
        let answer = self.invalidate(req).await;
        self.settled(&verified, answer).await
    }

    async fn invalidate(&self, req: &Request) -> Checked<Response> {
        let change: CrmChange = serde_json::from_slice(&req.body)
            .map_err(|_| Refusal::new(400, "INVALID_JSON", "the body is not a change event"))?;
        let phone = match change.phone {
            Some(Value::String(raw)) => normalize_phone(&raw)
                .map_err(|e| Refusal::new(400, "INVALID_PHONE", &format!("`phone` is invalid: {e}")))?,
            None | Some(Value::Null) => return Err(Refusal::new(400, "MISSING_PHONE", "`phone` is required")),
            Some(_) => return Err(Refusal::new(400, "INVALID_PHONE", "`phone` must be a string")),
        };
        let Some(field) = change.field_changed else {
            return Err(Refusal::new(400, "MISSING_FIELD_CHANGED", "`fieldChanged` is required"));
        };
        if !ROUTING_FIELDS.contains(&field.as_str()) {
            return Ok(Response::json(200, &json!({"invalidated": false})));
        }
        let kv_key = customer_kv_key(&entity_key(&self.config.cache_key_secret, &phone));
        match self.kv.delete(&kv_key).await {
            Ok(()) => {
                metrics::counter!("failsoft_edge_invalidations_total").increment(1);
                tracing::info!(field = field.as_str(), "cached record invalidated");
                Ok(Response::json(200, &json!({"invalidated": true})))
            }
            // The CRM retries a 5xx, which is what we want: the record must go.
            Err(e) => {
                tracing::warn!(error = %e, "invalidation failed");
                Ok(Response::error(503, "KV_UNAVAILABLE", "the cache could not be invalidated; retry"))
            }
        }
    }
}
