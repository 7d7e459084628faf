//! Delivering a case creation exactly once, even to a CRM that ignores
//! `Idempotency-Key`, and even when a worker is killed at any instant.
//!
//! The protocol, per correlationId (the case's `externalRef`):
//!
//! 1. **Claim**: a conditional write to the results table makes this worker
//!    the only one allowed to act until a lease ends. The lease covers the
//!    delivery (at most the processing limit) and as long again for a
//!    request an abandoned worker left at the CRM to finish, so nobody
//!    looks at the CRM while a create may still be landing there.
//! 2. **Look**: `GET /cases?externalRef=`. A case found means an earlier
//!    attempt (this worker's, a killed one's, or the edge's own first try)
//!    created it: record that case, create nothing.
//! 3. **Create** with `Idempotency-Key`, only when nothing was found.
//! 4. **Record** `COMPLETE` with the case's summary (its id, status and
//!    creation time: [`CaseSummary`]), then the consumer deletes the
//!    message.
//!
//! A kill before 3 creates nothing; a kill between 3 and 4 leaves a case
//! that the next attempt's look (after the lease) finds; a kill after 4
//! leaves a `COMPLETE` claim that the next attempt reads and stops at. The
//! claim is given back early when the CRM is done with this attempt's
//! requests (it answered, or nothing connected): the next attempt's look
//! then sees whatever they did. After a timeout it runs its lease out.

use std::time::Instant;

use failsoft_shared::case::CaseSummary;
use failsoft_shared::envelope::Envelope;
use failsoft_shared::error_class::{ErrorClass, Verdict, route_is_missing};
use serde_json::Value;

use crate::deliver::crm::Reply;
use crate::deliver::delivery::{Attempted, Delivery};
use crate::store::results::Claim;
use crate::telemetry;

const KIND: &str = "write";

/// Delivers a write envelope (`{"operation":"create_case","case":{…}}`).
pub async fn deliver(d: &Delivery, envelope: &Envelope<Value>, deadline: Instant) -> Attempted {
    let correlation_id = envelope.correlation_id.as_str();
    let case = match (envelope.payload.get("operation").and_then(Value::as_str), envelope.payload.get("case")) {
        (Some("create_case"), Some(case @ Value::Object(_))) => case,
        (Some("create_case"), _) => return Attempted::Invalid("MISSING_CASE".to_owned()),
        _ => return Attempted::Invalid("UNSUPPORTED_OPERATION".to_owned()),
    };

    if let Err(stop) = claim(d, correlation_id, KIND).await {
        return stop;
    }

    if d.config.can_find_cases {
        let found = d.crm.find_cases(correlation_id, Delivery::remaining(deadline)).await;
        match found.verdict {
            Verdict::Success => match d.crm.read_found_case(&found.body) {
                Ok(Some(case)) => {
                    d.observe(&found);
                    tracing::info!(correlation_id, "case found by externalRef; not creating another");
                    return record_case(d, correlation_id, &case).await;
                }
                Ok(None) => d.observe(&found),
                Err(_) => {
                    d.observe(&found);
                    return give_back(d, correlation_id, ErrorClass::Transient, found.status).await;
                }
            },
            // The search the mapping declares is not there, or the CRM
            // refuses it (a custom field that does not exist): the
            // operator's fault, not this write's. Create as a CRM without
            // the capability is served.
            Verdict::Failed(ErrorClass::Permanent { .. }) => search_refused(found.status),
            _ if route_is_missing(found.status) => search_refused(found.status),
            Verdict::NotFound => d.observe(&found),
            Verdict::Failed(class) => {
                d.observe(&found);
                return give_back(d, correlation_id, class, found.status).await;
            }
        }
    }

    let created = d.crm.create_case(correlation_id, case, Delivery::remaining(deadline)).await;
    d.observe(&created);
    let class = match created.verdict {
        Verdict::Success | Verdict::NotFound => match d.crm.read_created_case(&created.body) {
            Some(case) => return record_case(d, correlation_id, &case).await,
            // A 2xx without a case id may still have created one; the next
            // attempt's look settles it.
            None => ErrorClass::Transient,
        },
        Verdict::Failed(class) => class,
    };
    failed(d, correlation_id, class, &created).await
}

/// The mapping declares a case search (`find_case`; for the generic
/// profile `FAILSOFT_CRM_CAN_FIND_CASES=true`) but the CRM has no such
/// route or refuses the search: logged once, `/v1/health` critical until
/// the mapping is fixed.
fn search_refused(status: Option<u16>) {
    let status = status.unwrap_or_default();
    let detail = format!(
        "the CRM mapping declares a case search (find_case; FAILSOFT_CRM_CAN_FIND_CASES for the generic \
         contract's GET /cases?externalRef=) but the CRM answers it {status}: fix the search or remove it; \
         writes go on without the look, guarded by the create's idempotency key where the CRM has one"
    );
    if telemetry::config_fault("crm.find_cases", detail.clone()) {
        tracing::error!(status, "{detail}");
    }
}

/// After a failed call under a claim: the claim goes back at once when the
/// downstream is done with the request, else it runs its lease out.
pub(crate) async fn failed(d: &Delivery, correlation_id: &str, class: ErrorClass, reply: &Reply) -> Attempted {
    if finished_at_crm(reply) {
        give_back(d, correlation_id, class, reply.status).await
    } else {
        Attempted::Crm { class, status: reply.status }
    }
}

/// Claims `correlation_id` for this worker until the lease ends (step 1);
/// `Err` says why this attempt stops here.
pub(crate) async fn claim(d: &Delivery, correlation_id: &str, kind: &str) -> Result<(), Attempted> {
    let now = d.now_ms();
    let lease_until = now.saturating_add(d.config.lease_ms());
    match d.store.claim(correlation_id, kind, &d.owner, now, lease_until).await {
        Ok(Claim::Claimed) => Ok(()),
        Ok(Claim::Complete) | Ok(Claim::Failed) => Err(Attempted::AlreadyDone),
        Ok(Claim::Busy { retry_in_ms }) => Err(Attempted::Busy { retry_in_ms }),
        Err(e) => Err(Attempted::Store(e)),
    }
}

/// Whether the CRM is done with a request: it answered, or no connection
/// was ever made. Only a timeout or a broken connection leaves a create
/// that may still land, and only then must the claim run its lease out.
pub(crate) fn finished_at_crm(reply: &Reply) -> bool {
    !reply.maybe_reached || reply.status.is_some()
}

/// Records the case's [`CaseSummary`] (all that is ever stored of the
/// CRM's answer).
async fn record_case(d: &Delivery, correlation_id: &str, case: &CaseSummary) -> Attempted {
    let result = serde_json::to_value(case).unwrap_or(Value::Null);
    record(d, correlation_id, KIND, &result, Some(&case.case_id)).await
}

/// Records a delivery under its claim (step 3).
pub(crate) async fn record(
    d: &Delivery,
    correlation_id: &str,
    kind: &'static str,
    result: &Value,
    case_id: Option<&str>,
) -> Attempted {
    match d.store.complete(correlation_id, kind, result, case_id, d.now_ms()).await {
        Ok(()) => {
            tracing::info!(correlation_id, kind, case_id, "delivered");
            Attempted::Delivered
        }
        Err(e) => Attempted::Store(e),
    }
}

/// Gives the claim back (this attempt created nothing) and reports the failure.
pub(crate) async fn give_back(d: &Delivery, correlation_id: &str, class: ErrorClass, status: Option<u16>) -> Attempted {
    if let Err(e) = d.store.release(correlation_id, &d.owner, d.now_ms()).await {
        // Harmless: the lease runs out by itself.
        tracing::warn!(error = %e, correlation_id, "could not give a claim back early");
    }
    Attempted::Crm { class, status }
}
