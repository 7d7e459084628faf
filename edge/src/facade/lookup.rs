//! The lookup flow: the cache, the CRM within its deadline when the
//! breaker permits, then the fallback ladder; a refresh is queued for after
//! the response whenever the answer was not live.

use failsoft_shared::cache::{CacheEntry, CustomerRecord};
use failsoft_shared::edge_stats::Answer;
use failsoft_shared::envelope::{Envelope, Kind};
use failsoft_shared::error_class::Verdict;
use failsoft_shared::keys::{Phone, customer_kv_key, entity_key};
use failsoft_shared::ladder::{Fallback, FirstStep, Source, fall_back, first_step};
use failsoft_shared::mapping::{LookupAnswer as Read, Op};
use serde_json::{Value, json};

use super::{After, Checked, Facade, Handled, checks};
use crate::coalesce::{Turn, follow};
use crate::crm;
use crate::http::{Request, Response};
use crate::ports::{Clock, Downstream, Forwarder, Kv, QueueMessage};
use crate::wire::{LookupAnswer, UNKNOWN_CUSTOMER, WARNING_NO_CACHE, WARNING_STALE};
use failsoft_shared::breaker::Permit;

impl<K: Kv, D: Downstream, F: Forwarder, C: Clock> Facade<K, D, F, C> {
    pub(super) async fn lookup(&self, req: &Request) -> Checked<Handled> {
        checks::authorise(&self.config.credentials, req)?;
        let body = checks::json_body(req)?;
        let phone = checks::ani(&body)?;
        let correlation_id = self.correlation_id(&body)?;
        let policy = &self.config.policy;
        let entity = entity_key(&self.config.cache_key_secret, &phone);
        let kv_key = customer_kv_key(&entity);
        let entry = self.read_entry(&kv_key).await;

        let now = self.clock.now_ms();
        if let FirstStep::AnswerFresh = first_step(entry.as_ref(), now, &policy.freshness, false) {
            let entry = entry.as_ref().expect("a fresh step has an entry");
            let ahead = entry.wants_refresh_ahead(now, &policy.freshness, policy.refresh_ahead_percent)
                && self.refreshes.first_in_window(&entity, now, policy.freshness.fresh_ms);
            let after = if ahead {
                metrics::counter!("failsoft_edge_refresh_ahead_total").increment(1);
                vec![After::Forward(self.refresh_message(&correlation_id, &entity, &phone))]
            } else {
                Vec::new()
            };
            let answer = self.answer(correlation_id, Source::Cache, &entry.record, Some(entry.age_secs(now)), None);
            return Ok(lookup_answered(Response::json(200, &answer), Source::Cache, after));
        }

        // A miss: one CRM call per key at a time in this process, isolate or
        // instance; a caller that finds one out is answered from it.
        let mut probe = false;
        let live = match self.inflight.turn(&kv_key) {
            Turn::Follow(call) => {
                metrics::counter!("failsoft_edge_coalesced_lookups_total").increment(1);
                follow(call, &self.clock, policy.crm_deadline_ms).await.flatten()
            }
            Turn::Lead(leader) => {
                let live = self.lookup_live(entry.as_ref(), &phone, &correlation_id).await;
                let record = live.record();
                probe = live == Live::ProbeAfter;
                leader.finish(record.clone());
                if let Some(record) = &record {
                    self.store_entry(&kv_key, record).await;
                }
                record
            }
            Turn::Alone => {
                let live = self.lookup_live(entry.as_ref(), &phone, &correlation_id).await;
                probe = live == Live::ProbeAfter;
                live.record()
            }
        };
        if let Some(record) = live {
            let answer = self.answer(correlation_id, Source::Live, &record, Some(0), None);
            return Ok(lookup_answered(Response::json(200, &answer), Source::Live, Vec::new()));
        }
        let fallback = fall_back(entry.as_ref(), self.clock.now_ms(), &policy.freshness);

        let mut after = vec![After::Forward(self.refresh_message(&correlation_id, &entity, &phone))];
        if probe {
            after.push(After::Probe { phone, kv_key, correlation_id: correlation_id.clone() });
        }
        let response = match (fallback, entry) {
            (Fallback::Stale { age_secs }, Some(entry)) => {
                self.answer(correlation_id, Source::StaleCache, &entry.record, Some(age_secs), Some(WARNING_STALE))
            }
            _ => {
                let record = CustomerRecord {
                    found: false,
                    customer_id: UNKNOWN_CUSTOMER.to_owned(),
                    tier: policy.default_tier.clone(),
                };
                let mut response = self.answer(correlation_id, Source::Default, &record, None, Some(WARNING_NO_CACHE));
                // Nobody knows whether this number is a customer.
                response.found = None;
                response
            }
        };
        Ok(lookup_answered(Response::json(200, &response), response.source, after))
    }

    fn answer(
        &self,
        correlation_id: String,
        source: Source,
        record: &CustomerRecord,
        cache_age_seconds: Option<u64>,
        warning: Option<&str>,
    ) -> LookupAnswer {
        metrics::counter!("failsoft_edge_answers_total", "source" => source.as_str()).increment(1);
        tracing::info!(correlation_id = %correlation_id, source = source.as_str(), "lookup answered");
        LookupAnswer {
            correlation_id,
            source,
            found: Some(record.found),
            customer_id: record.customer_id.clone(),
            tier: record.tier.clone(),
            cache_age_seconds,
            warning: warning.map(str::to_owned),
        }
    }

    pub(super) async fn read_entry(&self, kv_key: &str) -> Option<CacheEntry> {
        match self.kv.get(kv_key).await {
            Ok(Some(text)) => serde_json::from_str(&text).ok(),
            Ok(None) => None,
            Err(e) => {
                metrics::counter!("failsoft_edge_kv_failures_total", "op" => "get").increment(1);
                tracing::warn!(error = %e, "kv read failed; treating as a miss");
                None
            }
        }
    }

    async fn store_entry(&self, kv_key: &str, record: &CustomerRecord) {
        let entry = CacheEntry { record: record.clone(), fetched_at_ms: self.clock.now_ms() };
        let ttl = self.config.policy.freshness.last_known_horizon_ms / 1000;
        let text = serde_json::to_string(&entry).unwrap_or_default();
        if let Err(e) = self.put_on_answer_path(kv_key, &text, ttl).await {
            metrics::counter!("failsoft_edge_kv_failures_total", "op" => "put").increment(1);
            tracing::warn!(error = %e, "kv write failed; the answer stands");
        }
    }

    /// The CRM's record when the breaker lets the call go and the CRM
    /// answers within the deadline; otherwise the caller goes down the
    /// ladder. The breaker is asked only here, past the cache: in half-open
    /// state its permit is the single probe, and a cache hit would spend it
    /// without calling the CRM, leaving the breaker stuck half-open. The
    /// probe itself is not made on the caller's time: the CRM was down a
    /// moment ago and may still hang, so the caller is answered from the
    /// ladder and the probe goes after the response ([`After::Probe`]).
    async fn lookup_live(&self, entry: Option<&CacheEntry>, phone: &Phone, correlation_id: &str) -> Live {
        let now = self.clock.now_ms();
        let permit = self.permit().await;
        match first_step(entry, now, &self.config.policy.freshness, permit.may_call()) {
            FirstStep::CallCrm if permit == Permit::Probe => Live::ProbeAfter,
            FirstStep::CallCrm => match self.call_crm_lookup(phone, correlation_id).await {
                Some(record) => Live::Record(record),
                None => Live::FallBack,
            },
            FirstStep::AnswerFresh | FirstStep::FallBack(_) => Live::FallBack,
        }
    }

    /// The half-open probe a lookup left for after its response: the CRM
    /// call (its outcome recorded by the breaker as any call's), and the
    /// record stored when it came.
    pub(super) async fn probe(&self, phone: &Phone, kv_key: &str, correlation_id: &str) {
        metrics::counter!("failsoft_edge_probes_total").increment(1);
        if let Some(record) = self.call_crm_lookup(phone, correlation_id).await {
            self.store_entry(kv_key, &record).await;
        }
    }

    /// The CRM's record within the deadline, or `None` when it could not
    /// give one (the ladder then falls back).
    async fn call_crm_lookup(&self, phone: &Phone, correlation_id: &str) -> Option<CustomerRecord> {
        let phone = phone.as_str();
        let (verdict, body) =
            self.call(Op::Lookup, |m, base, token| m.lookup(base, phone, correlation_id, token)).await;
        let not_found = || crm::not_found_record(&self.config.policy.default_tier);
        match verdict {
            Verdict::Success => match self.config.crm_mapping.read_customer(&body?, &self.config.policy.default_tier) {
                Read::Found(record) => Some(record),
                Read::NotFound => Some(not_found()),
                Read::Unreadable => None,
            },
            Verdict::NotFound => Some(not_found()),
            Verdict::Failed(_) => None,
        }
    }

    fn refresh_message(&self, correlation_id: &str, entity: &str, phone: &Phone) -> QueueMessage {
        let payload = json!({"phone": phone.as_str()});
        let envelope =
            Envelope::new(Kind::Refresh, correlation_id.to_owned(), entity.to_owned(), payload, self.clock.now_ms());
        self.message(&envelope)
    }

    pub(super) fn message(&self, envelope: &Envelope<Value>) -> QueueMessage {
        QueueMessage {
            group_id: envelope.group_id().to_owned(),
            dedup_id: envelope.dedup_id(self.config.policy.freshness.fresh_ms),
            body: serde_json::to_string(envelope).unwrap_or_default(),
        }
    }
}

fn lookup_answered(response: Response, source: Source, after: Vec<After>) -> Handled {
    Handled::new(response, after, Some(Answer::Lookup(source)))
}

/// What asking the CRM came to, for one lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Live {
    /// The CRM's answer (a not-found included).
    Record(CustomerRecord),
    /// No call, or a failed one: down the ladder.
    FallBack,
    /// This lookup holds the half-open probe: down the ladder now, and the
    /// probe after the response.
    ProbeAfter,
}

impl Live {
    fn record(&self) -> Option<CustomerRecord> {
        match self {
            Self::Record(record) => Some(record.clone()),
            Self::FallBack | Self::ProbeAfter => None,
        }
    }
}
