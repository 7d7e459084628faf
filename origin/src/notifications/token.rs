//! The OAuth client-credentials token the Genesys API calls carry:
//! `POST {login}/oauth/token` with the client's id and secret as Basic
//! credentials and `grant_type=client_credentials`; the answer holds
//! `access_token` and `expires_in` (seconds).
//!
//! The token is replaced a margin before it runs out, so no API call ever
//! carries an expired one, and at once when a call is refused with 401
//! (revoked, or a clock that disagrees).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::genesys_error::GenesysError;
use crate::clock;
use crate::config::Secret;

/// Shortest lifetime honoured: a token said to last less is refreshed at
/// this pace rather than in a hot loop.
const MIN_LIFETIME: Duration = Duration::from_secs(1);

/// A bearer token. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Bearer(String);

impl Bearer {
    pub fn header(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bearer(…)")
    }
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    expires_in: u64,
}

/// When a token of `lifetime` is replaced: `margin` before it expires, but
/// never before half its life (a margin longer than the lifetime would
/// otherwise mean a new token for every call).
pub fn refresh_after(lifetime: Duration, margin: Duration) -> Duration {
    lifetime.saturating_sub(margin).max(lifetime / 2)
}

/// The current token and how to get the next one.
pub struct Tokens {
    http: reqwest::Client,
    url: String,
    client_id: String,
    client_secret: Secret,
    margin: Duration,
    current: Option<(Bearer, Instant)>,
}

impl Tokens {
    pub fn new(
        http: reqwest::Client,
        login_url: &str,
        client_id: &str,
        client_secret: Secret,
        margin: Duration,
    ) -> Self {
        Self {
            http,
            url: format!("{login_url}/oauth/token"),
            client_id: client_id.to_owned(),
            client_secret,
            margin,
            current: None,
        }
    }

    /// A token valid for at least the margin (or half its life): the held
    /// one, or a new one.
    pub async fn bearer(&mut self) -> Result<Bearer, GenesysError> {
        match &self.current {
            Some((bearer, refresh_at)) if Instant::now() < *refresh_at => Ok(bearer.clone()),
            _ => self.refresh().await,
        }
    }

    /// When the held token is due for replacement; `None` without one.
    pub fn refresh_at(&self) -> Option<Instant> {
        self.current.as_ref().map(|(_, at)| *at)
    }

    /// Tries again after `delay` (a refresh failed; the held token is
    /// still good for a while).
    pub fn postpone(&mut self, delay: Duration) {
        if let Some((_, at)) = &mut self.current {
            *at = Instant::now() + clock::capped(delay);
        }
    }

    /// Forgets the held token (the API refused it with 401).
    pub fn invalidate(&mut self) {
        self.current = None;
    }

    /// Fetches a new token now.
    pub async fn refresh(&mut self) -> Result<Bearer, GenesysError> {
        let secret = String::from_utf8_lossy(self.client_secret.expose()).into_owned();
        let response = self
            .http
            .post(&self.url)
            .basic_auth(&self.client_id, Some(secret))
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .map_err(GenesysError::transport)?;
        if !response.status().is_success() {
            return Err(GenesysError::from_response(response).await);
        }
        let reply: TokenReply = response.json().await.map_err(|e| GenesysError::Reply(format!("token: {e}")))?;
        let lifetime = Duration::from_secs(reply.expires_in).max(MIN_LIFETIME);
        let bearer = Bearer(reply.access_token);
        let refresh_in = refresh_after(lifetime, self.margin);
        self.current = Some((bearer.clone(), Instant::now() + clock::capped(refresh_in)));
        metrics::counter!(super::TOKENS).increment(1);
        tracing::info!(expires_in_secs = reply.expires_in, refresh_in_ms = refresh_in.as_millis() as u64, "new token");
        Ok(bearer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_replaced_a_margin_early_but_not_before_half_its_life() {
        let day = Duration::from_secs(86_399);
        assert_eq!(refresh_after(day, Duration::from_secs(300)), Duration::from_secs(86_099));
        assert_eq!(refresh_after(Duration::from_secs(4), Duration::from_secs(300)), Duration::from_secs(2));
        assert_eq!(refresh_after(Duration::from_secs(4), Duration::ZERO), Duration::from_secs(4));
    }

    #[test]
    fn a_lifetime_of_any_size_gives_a_time_that_can_be_kept() {
        for secs in [0, 1, u64::MAX / 2, u64::MAX] {
            let refresh_in = refresh_after(Duration::from_secs(secs).max(MIN_LIFETIME), Duration::from_secs(300));
            let at = Instant::now() + clock::capped(refresh_in);
            assert!(at > Instant::now() - Duration::from_secs(1), "expires_in {secs}");
        }
    }

    #[test]
    fn a_bearer_never_shows_in_debug() {
        let b = Bearer("abc-token".into());
        assert!(!format!("{b:?}").contains("abc"));
        assert_eq!(b.header(), "Bearer abc-token");
    }
}
