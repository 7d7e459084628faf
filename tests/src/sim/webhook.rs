//! The CRM's signed change webhook, as failsoft's invalidation endpoint
//! expects it.

use failsoft_shared::signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
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

/// POSTs `event`, signed over the exact bytes sent; returns the status.
pub async fn deliver(client: &reqwest::Client, target: &WebhookTarget, event: &ChangeEvent) -> Result<u16, String> {
    let body = serde_json::to_vec(event).map_err(|err| err.to_string())?;
    let timestamp = clock::unix_secs();
    let signature = sign(target.secret.as_bytes(), timestamp, &body);
    let response = client
        .post(&target.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await
        .map_err(|err| err.to_string())?;
    Ok(response.status().as_u16())
}
