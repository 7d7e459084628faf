//! The CRM's signed change webhook, as failsoft's invalidation endpoint
//! expects it.

use failsoft_shared::signature::{self, NONCE_BYTES, Signed};
use serde::{Deserialize, Serialize};

use super::clock;

/// Where to send a change event and the secret to sign it with.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookTarget {
    pub url: String,
    pub secret: String,
}

/// A change to one field of a customer record.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeEvent {
    pub phone: String,
    pub customer_id: String,
    pub field_changed: &'static str,
    pub old_value: String,
    pub new_value: String,
    pub changed_at: u64,
}

/// POSTs `event`, signed over the method, the URL's path and query, the
/// time, a fresh nonce and the exact bytes sent; returns the status.
pub async fn deliver(client: &reqwest::Client, target: &WebhookTarget, event: &ChangeEvent) -> Result<u16, String> {
    let body = serde_json::to_vec(event).map_err(|err| err.to_string())?;
    let timestamp = clock::unix_secs();
    let signed = Signed::new("POST", signature::target_of(&target.url), &body);
    let headers = signature::headers(target.secret.as_bytes(), &signed, timestamp, nonce());
    let request = client.post(&target.url).header(reqwest::header::CONTENT_TYPE, "application/json");
    let response = headers
        .into_iter()
        .fold(request, |request, (name, value)| request.header(name, value))
        .body(body)
        .send()
        .await
        .map_err(|err| err.to_string())?;
    Ok(response.status().as_u16())
}

/// A nonce no delivery used before: the time, a counter and the process.
fn nonce() -> [u8; NONCE_BYTES] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0u8; NONCE_BYTES];
    bytes[..8].copy_from_slice(&clock::unix_ms().to_le_bytes());
    bytes[8..12].copy_from_slice(&(COUNTER.fetch_add(1, Ordering::SeqCst) as u32).to_le_bytes());
    bytes[12..].copy_from_slice(&std::process::id().to_le_bytes());
    bytes
}
