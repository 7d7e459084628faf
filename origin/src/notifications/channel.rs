//! A Notification Service channel: `POST /api/v2/notifications/channels`
//! answers `{id, connectUri, expires}`; `PUT …/channels/{id}/subscriptions`
//! with `[{"id": topic}, …]` sets its topics (up to 1000), and
//! `GET …/subscriptions` tells whether it still exists (404 once expired).
//!
//! A channel lives 24 hours, and Genesys allows 20 per OAuth client, so a
//! channel is replaced once, a margin before its `expires`, or when a call
//! finds it gone: never per reconnect.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::genesys_error::GenesysError;
use super::token::Bearer;
use crate::clock;

/// A channel's lifetime when Genesys gives no `expires` (its documented 24 h).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A channel, and when to replace it.
#[derive(Debug, Clone)]
pub struct Channel {
    pub id: String,
    pub connect_uri: String,
    /// When it is replaced: `expires` minus the margin, but never before
    /// half its life.
    pub renew_at: Instant,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChannelReply {
    id: String,
    connect_uri: String,
    expires: Option<String>,
}

/// When a channel that expires at `expires_ms` (Unix ms), created at
/// `now_ms`, is replaced, counted from now.
pub fn renew_in(now_ms: u64, expires_ms: Option<u64>, margin: Duration) -> Duration {
    let lifetime = expires_ms.map(|at| Duration::from_millis(at.saturating_sub(now_ms))).unwrap_or(DEFAULT_LIFETIME);
    super::token::refresh_after(lifetime, margin)
}

/// Reads an RFC 3339 UTC time (`2026-11-29T10:00:00.123Z`, or `+00:00`)
/// as Unix milliseconds; `None` if it is not one.
pub fn parse_utc_ms(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z').or_else(|| text.strip_suffix("+00:00"))?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (hour, minute, second) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let milli: u64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    clock::UtcTime { year: y, month: m, day, hour, minute, second, milli }.unix_ms()
}

/// The channel API of one Genesys org.
#[derive(Clone)]
pub struct Channels {
    http: reqwest::Client,
    api_url: String,
    margin: Duration,
}

impl Channels {
    pub fn new(http: reqwest::Client, api_url: &str, margin: Duration) -> Self {
        Self { http, api_url: format!("{api_url}/api/v2/notifications/channels"), margin }
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, GenesysError> {
        let response = request.send().await.map_err(GenesysError::transport)?;
        if response.status().is_success() { Ok(response) } else { Err(GenesysError::from_response(response).await) }
    }

    /// Creates a channel.
    pub async fn create(&self, bearer: &Bearer) -> Result<Channel, GenesysError> {
        let request = self.http.post(&self.api_url).header("authorization", bearer.header()).json(&json!({}));
        let reply: ChannelReply =
            self.call(request).await?.json().await.map_err(|e| GenesysError::Reply(format!("channel: {e}")))?;
        let expires_ms = reply.expires.as_deref().and_then(parse_utc_ms);
        let renew = renew_in(clock::now_ms(), expires_ms, self.margin);
        Ok(Channel { id: reply.id, connect_uri: reply.connect_uri, renew_at: Instant::now() + clock::capped(renew) })
    }

    /// Sets the channel's topics (replacing any it had). Genesys leaves
    /// out the topics it will not deliver (no permission, unknown entity):
    /// they are logged, not fatal, so one bad topic does not stop the rest.
    pub async fn subscribe(&self, bearer: &Bearer, channel: &Channel, topics: &[String]) -> Result<(), GenesysError> {
        let body: Vec<Value> = topics.iter().map(|t| json!({"id": t})).collect();
        let url = format!("{}/{}/subscriptions", self.api_url, channel.id);
        let request = self.http.put(url).header("authorization", bearer.header()).json(&body);
        let reply: Value = self.call(request).await?.json().await.unwrap_or_default();
        let granted: Vec<&str> = reply
            .get("entities")
            .and_then(Value::as_array)
            .map(|e| e.iter().filter_map(|t| t.get("id").and_then(Value::as_str)).collect())
            .unwrap_or_default();
        let refused: Vec<&String> = topics.iter().filter(|t| !granted.contains(&t.as_str())).collect();
        if !refused.is_empty() {
            tracing::warn!(?refused, "Genesys did not subscribe these topics (permissions or unknown ids)");
        }
        Ok(())
    }

    /// Whether the channel still exists: `Err(NotFound)` once it expired.
    pub async fn check(&self, bearer: &Bearer, channel: &Channel) -> Result<(), GenesysError> {
        let url = format!("{}/{}/subscriptions", self.api_url, channel.id);
        self.call(self.http.get(url).header("authorization", bearer.header())).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_genesys_expiry_times() {
        assert_eq!(parse_utc_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_utc_ms("2026-11-29T10:00:00.123Z"), Some(1_795_946_400_123));
        assert_eq!(parse_utc_ms("2000-03-01T00:00:01+00:00"), Some(951_868_801_000));
        assert_eq!(parse_utc_ms("2026-11-29 10:00:00"), None);
        assert_eq!(parse_utc_ms("2026-13-29T10:00:00Z"), None);
    }

    #[test]
    fn a_channel_is_renewed_a_margin_before_it_expires() {
        let hour = Duration::from_secs(3600);
        assert_eq!(renew_in(0, Some(24 * 3_600_000), Duration::from_secs(600)), 24 * hour - Duration::from_secs(600));
        assert_eq!(renew_in(0, None, Duration::from_secs(600)), 24 * hour - Duration::from_secs(600));
        assert_eq!(renew_in(1_000, Some(5_000), Duration::from_secs(10)), Duration::from_secs(2), "half its life");
        assert_eq!(renew_in(9_000, Some(5_000), Duration::ZERO), Duration::ZERO, "already expired");
    }
}
