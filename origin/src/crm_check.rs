//! `failsoft crm check`: each operation of the configured CRM mapping run
//! once against the CRM, and what came back printed, so an integrator can
//! test a mapping (a shipped profile with their fields, or their own
//! document) before going live.
//!
//! It reads nothing but the CRM and prints no body: a CRM's answer carries
//! personal data, so only what failsoft reads from it (found or not, the
//! customer id and tier, a case id) and, for an answer the mapping cannot
//! read, its top-level field names are shown. Phone numbers are masked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use failsoft_shared::config::ConfigError;
use failsoft_shared::error_class::Verdict;
use failsoft_shared::keys::normalize_phone;
use failsoft_shared::mapping::{LookupAnswer, Mapping, PROBE_PHONE};
use serde_json::{Value, json};

use crate::config::{Lookup, crm_mapping, http_url, required};
use crate::deliver::crm::{Crm, Reply};

/// One call's bound.
const CALL_DEADLINE: Duration = Duration::from_secs(10);

/// What `failsoft crm check` needs.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    pub crm_url: String,
    pub mapping: Arc<Mapping>,
}

impl CheckConfig {
    /// `FAILSOFT_CRM_URL` and the mapping's settings and secrets.
    pub fn from_lookup(lookup: Lookup<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            crm_url: http_url("FAILSOFT_CRM_URL", required(lookup, "FAILSOFT_CRM_URL")?)?,
            mapping: Arc::new(crm_mapping(lookup)?),
        })
    }
}

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct CheckArgs {
    /// A number to look up (a customer the CRM has); the probe's number,
    /// which no one has, is always looked up too.
    pub phone: Option<String>,
    /// Also create a case (a real one, with a subject saying what it is),
    /// then find it by its reference.
    pub create_case: bool,
}

/// How one operation went.
struct Line {
    operation: &'static str,
    ok: bool,
    text: String,
}

/// Runs the check; `Ok(true)` when every operation answered as the
/// mapping expects.
pub async fn run(config: CheckConfig, args: CheckArgs) -> anyhow::Result<bool> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let mapping = Arc::clone(&config.mapping);
    let crm = Crm::new(http, &config.crm_url, Arc::clone(&mapping));
    println!("CRM mapping {:?} against {}", mapping.name(), config.crm_url);
    let mut lines = Vec::new();

    if mapping.uses_token() {
        let started = Instant::now();
        let fetched = crm.renew_token(CALL_DEADLINE).await;
        let ms = started.elapsed().as_millis();
        let text = match &fetched {
            Ok(()) => format!("OAuth 2.0 client credentials: a token in {ms} ms"),
            Err(reply) => format!(
                "OAuth 2.0 client credentials: the token endpoint answered {}; check the client id and secret",
                reply.status.map_or("nothing in time".to_owned(), |s| format!("HTTP {s}"))
            ),
        };
        lines.push(Line { operation: "token", ok: fetched.is_ok(), text });
    }

    let reply = timed(crm.probe(CALL_DEADLINE)).await;
    lines.push(Line {
        operation: "probe",
        ok: reply.0.healthy(),
        text: format!("{} ({})", describe(&reply.0), healthy_word(&reply.0)),
    });

    let mut phones = vec![PROBE_PHONE.to_owned()];
    if let Some(phone) = &args.phone {
        let phone = normalize_phone(phone).map_err(|e| anyhow::anyhow!("--phone: {e}"))?;
        phones.push(phone.as_str().to_owned());
    }
    for phone in &phones {
        let correlation_id = format!("failsoft-crm-check-{:08x}", crate::clock::random_u64() as u32);
        let (reply, ms) = timed(crm.lookup(phone, &correlation_id, CALL_DEADLINE)).await;
        let (ok, read) = match reply.verdict {
            Verdict::Success => match mapping.read_customer(&reply.body, "<default tier>") {
                LookupAnswer::Found(r) => (true, format!("found: customerId {}, tier {}", r.customer_id, r.tier)),
                LookupAnswer::NotFound => (true, "not found".to_owned()),
                LookupAnswer::Unreadable => (false, unreadable(&reply.body, "customer_id and tier")),
            },
            Verdict::NotFound => (true, "not found".to_owned()),
            Verdict::Failed(_) => (false, String::new()),
        };
        let expected = if phone == PROBE_PHONE { " (a number no one has)" } else { "" };
        lines.push(Line {
            operation: "lookup",
            ok,
            text: format!("{}{expected}: {} in {ms} ms {read}", mask(phone), status_text(&reply)),
        });
    }

    let reference = format!("failsoft-crm-check-{:016x}", crate::clock::random_u64());
    if mapping.can_find_cases() {
        let (reply, ms) = timed(crm.find_cases(&reference, CALL_DEADLINE)).await;
        let (ok, read) = match (&reply.verdict, mapping.read_found_case(&reply.body)) {
            (Verdict::Success, Ok(None)) => (true, "no case, as expected of a new reference".to_owned()),
            (Verdict::Success, Ok(Some(case))) => {
                (false, format!("a case {} for a reference never used", case.case_id))
            }
            (Verdict::Success, Err(_)) => (false, unreadable(&reply.body, "the list of cases")),
            _ => (false, String::new()),
        };
        lines.push(Line { operation: "find_case", ok, text: format!("{} in {ms} ms {read}", status_text(&reply)) });
    } else {
        lines.push(Line {
            operation: "find_case",
            ok: true,
            text: "not declared: the create's idempotency key is the only write-once guard".to_owned(),
        });
    }

    if args.create_case {
        let case = json!({
            "phone": PROBE_PHONE,
            "subject": "failsoft crm check: a test case, safe to delete",
            "description": "Created by `failsoft crm check` to test the CRM mapping.",
            "externalRef": reference,
        });
        let (reply, ms) = timed(crm.create_case(&reference, &case, CALL_DEADLINE)).await;
        let created =
            matches!(reply.verdict, Verdict::Success).then(|| mapping.read_created_case(&reply.body)).flatten();
        let read = match &created {
            Some(case) => format!("created case {}", case.case_id),
            None if reply.verdict == Verdict::Success => unreadable(&reply.body, "case_id"),
            None => String::new(),
        };
        lines.push(Line {
            operation: "create_case",
            ok: created.is_some(),
            text: format!("{} in {ms} ms {read}", status_text(&reply)),
        });
        if let (Some(created), true) = (&created, mapping.can_find_cases()) {
            let (reply, ms) = timed(crm.find_cases(&reference, CALL_DEADLINE)).await;
            let found = mapping.read_found_case(&reply.body).ok().flatten();
            let ok = found.as_ref().is_some_and(|f| f.case_id == created.case_id);
            let read = match found {
                Some(f) if ok => format!("found {} by its reference: a replay would not create another", f.case_id),
                Some(f) => format!("found {}, not the case just created", f.case_id),
                None => "the case just created is not found by its reference".to_owned(),
            };
            lines.push(Line { operation: "find_case", ok, text: format!("{} in {ms} ms {read}", status_text(&reply)) });
        }
    }

    let mut all_ok = true;
    for line in &lines {
        all_ok &= line.ok;
        println!("{} {:<12} {}", if line.ok { "ok  " } else { "FAIL" }, line.operation, line.text.trim_end());
    }
    Ok(all_ok)
}

async fn timed(call: impl Future<Output = Reply>) -> (Reply, u128) {
    let started = Instant::now();
    let reply = call.await;
    (reply, started.elapsed().as_millis())
}

fn describe(reply: &Reply) -> String {
    status_text(reply)
}

fn healthy_word(reply: &Reply) -> &'static str {
    if reply.healthy() { "the breaker would count the CRM healthy" } else { "the breaker would count a failure" }
}

fn status_text(reply: &Reply) -> String {
    let class = match reply.verdict {
        Verdict::Success => "success".to_owned(),
        Verdict::NotFound => "not found".to_owned(),
        Verdict::Failed(class) => class.as_str().to_owned(),
    };
    match reply.status {
        Some(status) => format!("HTTP {status} ({class})"),
        None if reply.maybe_reached => format!("no answer in time ({class})"),
        None => format!("no connection ({class})"),
    }
}

/// For an answer the mapping cannot read: its top-level names, never its values.
fn unreadable(body: &[u8], wanted: &str) -> String {
    let shape = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => format!("an object with {}", map.keys().cloned().collect::<Vec<_>>().join(", ")),
        Ok(Value::Array(items)) => format!("a list of {}", items.len()),
        Ok(_) => "a JSON scalar".to_owned(),
        Err(_) => format!("not JSON ({} bytes)", body.len()),
    };
    format!("the mapping's paths for {wanted} do not read this answer: {shape}")
}

/// `+1******0123`: the country code's first digit and the last four.
fn mask(phone: &str) -> String {
    let digits = phone.len().saturating_sub(1);
    if digits <= 5 {
        return "+***".to_owned();
    }
    format!("{}{}{}", &phone[..2], "*".repeat(digits - 5), &phone[phone.len() - 4..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_all_but_the_edges_of_a_number() {
        assert_eq!(mask("+13175550123"), "+1******0123");
        assert_eq!(mask("+1234"), "+***");
    }

    #[test]
    fn an_unreadable_answer_shows_names_not_values() {
        let text = unreadable(br#"{"records":[{"Phone":"+13175550123"}],"totalSize":1}"#, "customer_id");
        assert!(text.contains("records, totalSize") && !text.contains("555"), "{text}");
    }
}
