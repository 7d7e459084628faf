//! The session loop: one WebSocket to one channel at a time, replaced
//! whenever it stops being trustworthy, with every gap counted.
//!
//! - The socket closes or fails → reconnect after full-jitter backoff
//!   (the attempt count restarts once a connection delivered anything, so
//!   a server that accepts and drops at once is not hammered).
//! - Nothing arrives for the heartbeat timeout (Genesys heartbeats every
//!   30 s) → the socket is taken for dead and replaced the same way.
//! - The channel nears its `expires`, or Genesys announces the socket is
//!   closing → make before break: a new channel is created, subscribed and
//!   connected first, then the old socket is closed and read to its end.
//! - A reconnect finds the channel gone (404 on the check or the
//!   handshake) → a new channel, subscribed, at once.
//! - The token nears its expiry → a new one, without touching the socket;
//!   a 401 → a new one at once.
//!
//! Genesys does not replay what it sent while nobody was connected: each
//! reconnect logs its reason and how long the consumer was deaf, and adds
//! it to `…_disconnected_seconds_total`, so the gap can be reconciled.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::channel::{Channel, Channels};
use super::genesys_error::GenesysError;
use super::outbox::Outbox;
use super::settings::NotificationSettings;
use super::token::Tokens;
use crate::clock;
use crate::genesys_events::GenesysEvent;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a replaced socket is still read after its close frame was
/// sent, so events already on the wire are not dropped with it.
const DRAIN: Duration = Duration::from_secs(2);
/// How often one connect retries at once after a 401 or 404 (new token,
/// new channel) before it waits for backoff.
const QUICK_RETRIES: usize = 3;
/// What Genesys sends (on `channel.metadata`) before closing a socket for
/// maintenance.
const CLOSING_NOTICE: &str = "WebSocket is closing";

/// Why a connection ended.
enum Ended {
    Stop,
    /// Replace the channel, make before break.
    Renew(&'static str),
    /// The socket is gone or dead; `healthy` if it delivered anything.
    Lost {
        reason: &'static str,
        healthy: bool,
    },
}

pub struct Session {
    settings: NotificationSettings,
    tokens: Tokens,
    channels: Channels,
    outbox: Outbox,
    channel: Option<Channel>,
    /// Whether the held channel was created during this connect (no need
    /// to check that it exists).
    fresh: bool,
    /// Whether the held channel has its topics (a failed subscribe is
    /// retried on the same channel rather than spending another of the
    /// 20 channels Genesys allows).
    subscribed: bool,
    /// Channels created so far (the first is not a re-creation).
    created: u64,
    /// When and why the last connection ended, until the next one starts.
    disconnected: Option<(Instant, &'static str)>,
    attempt: u32,
    /// Token refreshes failed in a row while connected (backs off the next).
    token_failures: u32,
    connected: Arc<AtomicBool>,
}

impl Session {
    pub fn new(
        settings: NotificationSettings,
        http: reqwest::Client,
        outbox: Outbox,
        connected: Arc<AtomicBool>,
    ) -> Self {
        let tokens = Tokens::new(
            http.clone(),
            &settings.login_url,
            &settings.client_id,
            settings.client_secret.clone(),
            settings.token_refresh_margin,
        );
        let channels = Channels::new(http, &settings.api_url, settings.channel_renew_margin);
        Self {
            settings,
            tokens,
            channels,
            outbox,
            channel: None,
            fresh: false,
            subscribed: false,
            created: 0,
            disconnected: None,
            attempt: 0,
            token_failures: 0,
            connected,
        }
    }

    /// Runs until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut ready: Option<Socket> = None;
        while !*stop.borrow() {
            let mut socket = match ready.take() {
                Some(socket) => socket,
                None => match self.connect().await {
                    Ok(socket) => socket,
                    Err(e) => {
                        metrics::counter!(super::CONNECT_FAILURES, "reason" => e.reason()).increment(1);
                        let delay = self.next_delay(e.retry_after());
                        tracing::warn!(error = %e, attempt = self.attempt, retry_in_ms = delay.as_millis() as u64,
                            "cannot connect to the Notification Service");
                        if self.wait(delay, &mut stop).await {
                            break;
                        }
                        continue;
                    }
                },
            };
            self.on_connected();
            match self.read(&mut socket, &mut stop).await {
                Ended::Stop => {
                    drain(socket, &self.outbox).await;
                    break;
                }
                Ended::Renew(why) => {
                    tracing::info!(why, "replacing the channel");
                    self.channel = None;
                    match self.connect().await {
                        Ok(new) => {
                            drain(socket, &self.outbox).await;
                            ready = Some(new);
                        }
                        Err(e) => {
                            drain(socket, &self.outbox).await;
                            self.on_disconnected(why);
                            let delay = self.next_delay(e.retry_after());
                            tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64,
                                "cannot replace the channel");
                            if self.wait(delay, &mut stop).await {
                                break;
                            }
                        }
                    }
                }
                Ended::Lost { reason, healthy } => {
                    drop(socket);
                    self.on_disconnected(reason);
                    if healthy {
                        self.attempt = 0;
                    }
                    let delay = self.next_delay(None);
                    if self.wait(delay, &mut stop).await {
                        break;
                    }
                }
            }
        }
        self.connected.store(false, Ordering::SeqCst);
        metrics::gauge!(super::CONNECTED).set(0.0);
        tracing::info!("notification session stopped");
    }

    /// The next backoff delay (at least what Genesys asked for).
    fn next_delay(&mut self, at_least: Option<Duration>) -> Duration {
        let ms = self.settings.backoff.delay_ms(self.attempt, clock::random_u64());
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_millis(ms).max(at_least.unwrap_or_default())
    }

    /// Sleeps `delay`; `true` if told to stop meanwhile.
    async fn wait(&self, delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
        tokio::select! {
            _ = stopped(stop) => true,
            _ = tokio::time::sleep(delay) => false,
        }
    }

    fn on_connected(&mut self) {
        self.connected.store(true, Ordering::SeqCst);
        metrics::gauge!(super::CONNECTED).set(1.0);
        let channel = self.channel.as_ref().map(|c| c.id.as_str()).unwrap_or_default();
        match self.disconnected.take() {
            Some((since, reason)) => {
                let gap = since.elapsed();
                metrics::gauge!(super::DISCONNECTED_SECONDS).increment(gap.as_secs_f64());
                tracing::warn!(
                    reason,
                    gap_ms = gap.as_millis() as u64,
                    channel,
                    "reconnected: events sent during the gap are not replayed by Genesys"
                );
            }
            None => tracing::info!(channel, "connected"),
        }
    }

    fn on_disconnected(&mut self, reason: &'static str) {
        self.connected.store(false, Ordering::SeqCst);
        metrics::gauge!(super::CONNECTED).set(0.0);
        metrics::counter!(super::RECONNECTS, "reason" => reason).increment(1);
        tracing::warn!(reason, "disconnected; reconnecting");
        self.disconnected = Some((Instant::now(), reason));
    }

    /// A socket to a live, subscribed channel: new token on a 401, new
    /// channel on a 404, each retried at once a few times.
    async fn connect(&mut self) -> Result<Socket, GenesysError> {
        let mut last = GenesysError::Transport("not tried".into());
        for _ in 0..QUICK_RETRIES {
            match self.try_connect().await {
                Ok(socket) => return Ok(socket),
                Err(GenesysError::Unauthorized) => {
                    self.tokens.invalidate();
                    last = GenesysError::Unauthorized;
                }
                Err(GenesysError::NotFound) => {
                    tracing::warn!(channel = self.channel.as_ref().map(|c| c.id.as_str()), "the channel is gone");
                    self.channel = None;
                    last = GenesysError::NotFound;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    async fn try_connect(&mut self) -> Result<Socket, GenesysError> {
        let bearer = self.tokens.bearer().await?;
        let due = self.channel.as_ref().is_some_and(|c| Instant::now() >= c.renew_at);
        if due {
            self.channel = None;
        }
        let channel = match self.channel.clone() {
            Some(channel) if self.fresh => channel,
            Some(channel) => {
                self.channels.check(&bearer, &channel).await?;
                channel
            }
            None => {
                let channel = self.channels.create(&bearer).await?;
                self.created += 1;
                if self.created > 1 {
                    metrics::counter!(super::CHANNEL_RECREATIONS).increment(1);
                }
                tracing::info!(channel = %channel.id, topics = self.settings.topics.len(), "channel created");
                self.channel = Some(channel.clone());
                self.fresh = true;
                self.subscribed = false;
                channel
            }
        };
        if !self.subscribed {
            self.channels.subscribe(&bearer, &channel, &self.settings.topics).await?;
            self.subscribed = true;
        }
        let handshake = tokio_tungstenite::connect_async(channel.connect_uri.as_str());
        let socket = match tokio::time::timeout(self.settings.http_timeout, handshake).await {
            Err(_) => return Err(GenesysError::Transport("the WebSocket handshake timed out".into())),
            Ok(Err(tungstenite::Error::Http(response))) => {
                return Err(match response.status().as_u16() {
                    401 | 403 => GenesysError::Unauthorized,
                    404 | 410 => GenesysError::NotFound,
                    status => GenesysError::Status { status, code: "websocket_handshake".into() },
                });
            }
            Ok(Err(e)) => return Err(GenesysError::Transport(format!("WebSocket: {e}"))),
            Ok(Ok((socket, _))) => socket,
        };
        self.fresh = false;
        Ok(socket)
    }

    /// Reads events until the connection ends or must be replaced; keeps
    /// the token fresh meanwhile.
    async fn read(&mut self, socket: &mut Socket, stop: &mut watch::Receiver<bool>) -> Ended {
        let far = Instant::now() + Duration::from_secs(365 * 86_400);
        let mut healthy = false;
        let mut last_heard = Instant::now();
        loop {
            let renew_at = self.channel.as_ref().map_or(far, |c| c.renew_at);
            let token_at = self.tokens.refresh_at().unwrap_or(far);
            tokio::select! {
                _ = stopped(stop) => return Ended::Stop,
                _ = sleep_until(renew_at) => return Ended::Renew("channel_expiring"),
                _ = sleep_until(last_heard + self.settings.heartbeat_timeout) => {
                    return Ended::Lost { reason: "heartbeat_missed", healthy };
                }
                _ = sleep_until(token_at) => {
                    match self.tokens.refresh().await {
                        Ok(_) => self.token_failures = 0,
                        Err(e) => {
                            // The shared full-jitter backoff, at least its base:
                            // a login outage is not asked once a second.
                            let backoff = &self.settings.backoff;
                            let ms = backoff.delay_ms(self.token_failures, clock::random_u64()).max(backoff.base_ms);
                            self.token_failures = self.token_failures.saturating_add(1);
                            tracing::warn!(error = %e, retry_in_ms = ms, "token refresh failed");
                            self.tokens.postpone(Duration::from_millis(ms));
                        }
                    }
                }
                next = socket.next() => {
                    last_heard = Instant::now();
                    match next {
                        None | Some(Ok(Message::Close(_))) => return Ended::Lost { reason: "closed", healthy },
                        Some(Err(_)) => return Ended::Lost { reason: "socket_error", healthy },
                        Some(Ok(Message::Text(text))) => {
                            healthy = true;
                            if handle(text.as_str(), &self.outbox) == Notice::Closing {
                                return Ended::Renew("closing_notice");
                            }
                        }
                        Some(Ok(_)) => healthy = true,
                    }
                }
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Notice {
    None,
    Closing,
}

/// One text frame: an event goes to the outbox; a heartbeat is liveness
/// only; anything malformed is counted and logged by its error code (never
/// its body, which can hold phone numbers).
fn handle(text: &str, outbox: &Outbox) -> Notice {
    let message: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => {
            metrics::counter!(super::INVALID).increment(1);
            tracing::warn!(bytes = text.len(), "a notification that is not JSON; ignored");
            return Notice::None;
        }
    };
    match GenesysEvent::from_notification(&message) {
        Ok(Some(event)) => {
            metrics::counter!(super::EVENTS).increment(1);
            tracing::debug!(id = %event.id, topic = %event.topic, "event");
            outbox.push(event.envelope(clock::now_ms()));
            Notice::None
        }
        Ok(None) => {
            let text = message.pointer("/eventBody/message").and_then(Value::as_str).unwrap_or_default();
            if text.starts_with(CLOSING_NOTICE) { Notice::Closing } else { Notice::None }
        }
        Err(e) => {
            metrics::counter!(super::INVALID).increment(1);
            tracing::warn!(code = e.code, error = %e.message, "a notification that is not an event; ignored");
            Notice::None
        }
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Closes a socket being replaced and reads what was already on the wire,
/// for at most [`DRAIN`].
async fn drain(mut socket: Socket, outbox: &Outbox) {
    let until = Instant::now() + DRAIN;
    let _ = tokio::time::timeout_at(until, socket.close(None)).await;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(until, socket.next()).await {
        match message {
            Message::Text(text) => {
                handle(text.as_str(), outbox);
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closing_notice_is_told_apart_from_heartbeats() {
        let sqs = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::Config::builder().behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest()).build(),
        );
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let backoff = failsoft_shared::backoff::Backoff { base_ms: 1, cap_ms: 1 };
            let (outbox, _sender) = Outbox::start(
                sqs,
                "http://127.0.0.1:1/q.fifo".into(),
                1,
                backoff,
                crate::dead_letter::alerts::Alerts::disabled(),
            );
            let heartbeat = r#"{"topicName":"channel.metadata","eventBody":{"message":"WebSocket Heartbeat"}}"#;
            let closing =
                r#"{"topicName":"channel.metadata","eventBody":{"message":"WebSocket is closing in 1 minute"}}"#;
            assert_eq!(handle(heartbeat, &outbox), Notice::None);
            assert_eq!(handle(closing, &outbox), Notice::Closing);
            assert_eq!(handle("not json", &outbox), Notice::None);
        });
    }
}
