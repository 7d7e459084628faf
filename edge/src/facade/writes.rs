//! The write flow (`POST /v1/cases`): the CRM when the breaker permits,
//! else write-ahead to the queue; and the result a caller polls for.

use failsoft_shared::case::CaseSummary;
use failsoft_shared::edge_stats::{Answer, WriteOutcome};
use failsoft_shared::envelope::{Envelope, Kind, MAX_CORRELATION_ID, is_valid_correlation_id};
use failsoft_shared::error_class::{ErrorClass, Verdict};
use failsoft_shared::keys::entity_key;
use failsoft_shared::mapping::Op;
use serde_json::json;

use super::checks::{self, text_field};
use super::{Checked, Facade, Handled, Refusal};
use crate::http::{Request, Response};
use crate::ports::{Clock, Downstream, Forwarder, Kv, OutboundRequest, QueueMessage};
use crate::wire::{ResultBody, StoredResult, WARNING_NOT_ACCEPTED, WARNING_WRITE_QUEUED, WriteAnswer, WriteStatus};

/// How long a write's result is kept for polling (the results table's TTL).
pub const RESULT_TTL_SECS: u64 = 86_400;
const RESULT_KEY_PREFIX: &str = "res:v1:";
const MAX_SUBJECT: usize = 255;
const MAX_DESCRIPTION: usize = 4_000;

impl<K: Kv, D: Downstream, F: Forwarder, C: Clock> Facade<K, D, F, C> {
    pub(super) async fn create_case(&self, req: &Request) -> Checked<Handled> {
        checks::authorise(&self.config.credentials, req)?;
        let body = checks::json_body(req)?;
        let phone = checks::ani(&body)?;
        let correlation_id = self.correlation_id(&body)?;
        let subject = text_field(&body, "subject", MAX_SUBJECT, true)?;
        let description = text_field(&body, "description", MAX_DESCRIPTION, false)?;
        let conversation_id = text_field(&body, "conversationId", MAX_CORRELATION_ID, false)?;
        let case = json!({
            "phone": phone.as_str(),
            "subject": subject,
            "description": description,
            "conversationId": conversation_id,
            "externalRef": correlation_id,
        });

        let permit = self.permit().await;
        if permit.may_call() {
            let (verdict, resp_body) =
                self.call(Op::CreateCase, |m, base, token| m.create_case(base, &correlation_id, &case, token)).await;
            match verdict {
                Verdict::Success | Verdict::NotFound => {
                    let mapping = &self.config.crm_mapping;
                    if let Some(result) = resp_body.as_deref().and_then(|body| mapping.read_created_case(body)) {
                        return Ok(self
                            .write_answer(&correlation_id, WriteStatus::Complete, Some(result), None, None)
                            .await);
                    }
                    // A 2xx without a case id: the CRM may have created it;
                    // the queued replay with the same key settles which.
                }
                Verdict::Failed(ErrorClass::Permanent { status }) => {
                    let reason = format!("CRM_REJECTED_{status}");
                    return Ok(self.write_answer(&correlation_id, WriteStatus::Failed, None, Some(reason), None).await);
                }
                Verdict::Failed(_) => {}
            }
        }

        let entity = entity_key(&self.config.cache_key_secret, &phone);
        let payload = json!({"operation": "create_case", "case": case});
        let envelope = Envelope::new(Kind::Write, correlation_id.clone(), entity, payload, self.clock.now_ms());
        let message = self.message(&envelope);
        // Write-ahead: PENDING only once the queue has acknowledged it.
        let sent = self.forward(&message, Kind::Write, self.config.policy.deadline_margin_ms).await;
        let mut handled = if sent.taken {
            self.write_answer(&correlation_id, WriteStatus::Pending, None, None, Some(WARNING_WRITE_QUEUED)).await
        } else {
            let answer = WriteAnswer {
                correlation_id,
                status: WriteStatus::NotAccepted,
                case_id: None,
                result: None,
                reason: Some("CRM_AND_QUEUE_UNAVAILABLE".to_owned()),
                warning: Some(WARNING_NOT_ACCEPTED.to_owned()),
            };
            write_answered(Response::json(200, &answer), WriteStatus::NotAccepted)
        };
        handled.response = handled.response.with_header("server-timing", &sent.server_timing());
        Ok(handled)
    }

    /// Records that the queue refused a write the outbox held (`code`: SQS's
    /// reason, e.g. a body over the queue's size): the write is `FAILED`
    /// for whoever polls its result, logged and counted, never retried.
    pub async fn record_refused_write(&self, message: &QueueMessage, code: &str) {
        let Some(correlation_id) = crate::outbox::correlation_id_of(message) else {
            tracing::error!(reason = code, "the queue refused an outbox entry that is not a write's envelope");
            return;
        };
        tracing::error!(correlation_id, reason = code, "the queue refused a write the outbox held; it is FAILED");
        self.write_answer(&correlation_id, WriteStatus::Failed, None, Some(queue_refused(code)), None).await;
    }

    /// Records a write's status for polling and answers it.
    async fn write_answer(
        &self,
        correlation_id: &str,
        status: WriteStatus,
        result: Option<CaseSummary>,
        reason: Option<String>,
        warning: Option<&str>,
    ) -> Handled {
        let stored =
            StoredResult { status, result: result.clone(), reason: reason.clone(), updated_at: self.clock.now_ms() };
        let (key, text) = result_record(correlation_id, &stored);
        if let Err(e) = self.put_on_answer_path(&key, &text, RESULT_TTL_SECS).await {
            tracing::warn!(error = %e, correlation_id, "storing the write's result failed");
        }
        metrics::counter!("failsoft_edge_writes_total", "status" => status_label(status)).increment(1);
        tracing::info!(correlation_id, status = status_label(status), "case answered");
        let case_id = result.as_ref().map(|case| case.case_id.clone());
        let answer = WriteAnswer {
            correlation_id: correlation_id.to_owned(),
            status,
            case_id,
            result: result.map(ResultBody::Case),
            reason,
            warning: warning.map(str::to_owned),
        };
        write_answered(Response::json(200, &answer), status)
    }

    pub(super) async fn result(&self, req: &Request, id: &str) -> Checked<Response> {
        checks::authorise(&self.config.credentials, req)?;
        if !is_valid_correlation_id(id) {
            return Err(Refusal::new(400, "INVALID_CORRELATION_ID", "not a correlationId"));
        }
        if let Some(answer) = self.origin_result(id).await {
            return Ok(answer);
        }
        let key = format!("{RESULT_KEY_PREFIX}{id}");
        let stored = match self.kv.get(&key).await {
            Ok(found) => found.and_then(|text| serde_json::from_str::<StoredResult>(&text).ok()),
            Err(e) => {
                tracing::warn!(error = %e, "result read failed");
                return Ok(Response::error(503, "RESULT_STORE_UNAVAILABLE", "try again shortly"));
            }
        };
        let Some(stored) = stored else {
            return Err(Refusal::new(404, "RESULT_NOT_FOUND", "no write with this correlationId"));
        };
        let case_id = stored.result.as_ref().map(|case| case.case_id.clone());
        Ok(Response::json(
            200,
            &WriteAnswer {
                correlation_id: id.to_owned(),
                status: stored.status,
                case_id,
                result: stored.result.map(ResultBody::Case),
                reason: stored.reason,
                warning: (stored.status == WriteStatus::Pending).then(|| WARNING_WRITE_QUEUED.to_owned()),
            },
        ))
    }

    /// The origin's answer for a write, when an origin is configured and
    /// knows the id. Anything else (404, unreachable) falls back to the
    /// edge's own record: a write the origin has not seen yet is `PENDING`.
    async fn origin_result(&self, id: &str) -> Option<Response> {
        let (origin, secret) = (self.config.origin_url.as_deref()?, self.config.internal_secret.as_deref()?);
        let url = format!("{origin}/v1/results/{id}");
        let headers = self.signed_headers(secret, "GET", &url, b"");
        let request = OutboundRequest { method: "GET".to_owned(), url, headers, body: None };
        match self.downstream.send(request, self.config.policy.deadline_margin_ms).await {
            Ok(resp) if resp.status == 200 => {
                // Read into the contract's type, so only a case's summary
                // passes, whatever the origin kept.
                let answer: WriteAnswer = serde_json::from_slice(&resp.body).ok()?;
                Some(Response::json(200, &answer))
            }
            Ok(resp) if resp.status == 404 => None,
            Ok(resp) => {
                tracing::warn!(status = resp.status, "origin results API failed; answering from the edge");
                None
            }
            Err(e) => {
                tracing::warn!(error = ?e, "origin results API unreachable; answering from the edge");
                None
            }
        }
    }
}

/// A write's result as the edge's KV keeps it for polling: the key and
/// the text, for [`RESULT_TTL_SECS`].
pub fn result_record(correlation_id: &str, stored: &StoredResult) -> (String, String) {
    (format!("{RESULT_KEY_PREFIX}{correlation_id}"), serde_json::to_string(stored).unwrap_or_default())
}

/// The reason of a write the queue refused for itself after the outbox
/// kept it (`code`: SQS's, e.g. `InvalidParameterValue`).
pub fn queue_refused(code: &str) -> String {
    format!("QUEUE_REFUSED_{code}")
}

fn write_answered(response: Response, status: WriteStatus) -> Handled {
    let outcome = match status {
        WriteStatus::Complete => WriteOutcome::Complete,
        WriteStatus::Pending => WriteOutcome::Pending,
        WriteStatus::Failed => WriteOutcome::Failed,
        WriteStatus::NotAccepted => WriteOutcome::NotAccepted,
    };
    Handled::new(response, Vec::new(), Some(Answer::Write(outcome)))
}

fn status_label(status: WriteStatus) -> &'static str {
    match status {
        WriteStatus::Complete => "complete",
        WriteStatus::Pending => "pending",
        WriteStatus::Failed => "failed",
        WriteStatus::NotAccepted => "not_accepted",
    }
}
