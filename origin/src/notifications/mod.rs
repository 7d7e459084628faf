//! `failsoft notifications`: a self-healing consumer of the Genesys Cloud
//! Notification Service. It takes an OAuth client-credentials token
//! ([`token`]), creates a channel and subscribes the configured topics
//! ([`channel`]), keeps one WebSocket to it open, replacing socket, channel
//! and token as each fails or nears its end ([`session`]), and turns every
//! event into the same [`Kind::Event`](failsoft_shared::envelope::Kind)
//! queue envelope the EventBridge path makes, through a bounded buffer
//! that survives an SQS outage ([`outbox`]).
//!
//! Metrics (all `failsoft_notifications_…`): `events_total` (read from the
//! socket), `queued_total` (taken by SQS), `refused_total` (buffer full),
//! `parked_total{reason}` (an event SQS will never take, set aside with an
//! alert: see [`outbox`]), `invalid_total`, `buffered`, `sqs_errors_total`,
//! `reconnects_total{reason}`, `connect_failures_total{reason}`,
//! `disconnected_seconds_total` (a gauge that only grows: the time without
//! a socket, added at each reconnect), `channel_recreations_total`,
//! `tokens_total`, `connected` (0 or 1), `unsent_at_exit_total`.

pub mod channel;
pub mod genesys_error;
pub mod outbox;
pub mod session;
pub mod settings;
pub mod status;
pub mod token;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::sync::watch;

pub use settings::NotificationSettings;

use crate::dead_letter::alerts::Alerts;
use crate::{aws, telemetry, worker};

pub const EVENTS: &str = "failsoft_notifications_events_total";
pub const QUEUED: &str = "failsoft_notifications_queued_total";
pub const REFUSED: &str = "failsoft_notifications_refused_total";
pub const PARKED: &str = "failsoft_notifications_parked_total";
pub const INVALID: &str = "failsoft_notifications_invalid_total";
pub const BUFFERED: &str = "failsoft_notifications_buffered";
pub const SQS_ERRORS: &str = "failsoft_notifications_sqs_errors_total";
pub const RECONNECTS: &str = "failsoft_notifications_reconnects_total";
pub const CONNECT_FAILURES: &str = "failsoft_notifications_connect_failures_total";
pub const DISCONNECTED_SECONDS: &str = "failsoft_notifications_disconnected_seconds_total";
pub const CHANNEL_RECREATIONS: &str = "failsoft_notifications_channel_recreations_total";
pub const TOKENS: &str = "failsoft_notifications_tokens_total";
pub const CONNECTED: &str = "failsoft_notifications_connected";
pub const UNSENT_AT_EXIT: &str = "failsoft_notifications_unsent_at_exit_total";

/// Bound on one SQS call (the SDK retries inside it).
const SQS_CALL_LIMIT: Duration = Duration::from_secs(10);
/// How long the session may take to close its socket on SIGTERM.
const SESSION_STOP: Duration = Duration::from_secs(5);
/// How long SIGTERM waits for the parked events' alerts still queued.
const ALERTS_FLUSH: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum NotificationsError {
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Runs until SIGTERM or SIGINT, then closes the socket and flushes the
/// buffer to SQS (bounded by the flush setting).
pub async fn run(settings: NotificationSettings, metrics_addr: Option<SocketAddr>) -> Result<(), NotificationsError> {
    let sdk = aws::sdk_config(SQS_CALL_LIMIT).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let http = reqwest::Client::builder().timeout(settings.http_timeout).build()?;
    let connected = Arc::new(AtomicBool::new(false));
    metrics::gauge!(CONNECTED).set(0.0);

    let handle = telemetry::install();
    let (api_stop, mut api_stopped) = watch::channel(false);
    let api = match metrics_addr {
        Some(addr) => {
            let listener = status::bind(addr).await.map_err(|e| NotificationsError::Listen(addr, e))?;
            let app = status::router(handle, Arc::clone(&connected));
            Some(tokio::spawn(crate::http::serve::serve(
                listener,
                app,
                crate::http::serve::Limits::OPERATOR,
                async move {
                    let _ = api_stopped.wait_for(|s| *s).await;
                },
            )))
        }
        None => {
            println!("failsoft-notifications started");
            None
        }
    };

    let (alerts, alerts_task) = match settings.alert.clone() {
        Some(target) => {
            let (alerts, task) = Alerts::start(target, http.clone());
            (alerts, Some(task))
        }
        None => (Alerts::disabled(), None),
    };
    let (outbox, sender) =
        outbox::Outbox::start(sqs, settings.queue_url.clone(), settings.buffer, settings.backoff, alerts);
    let flush = settings.flush;
    tracing::info!(topics = settings.topics.len(), api = %settings.api_url, "notifications consumer started");
    let (stop, stopped) = watch::channel(false);
    let mut session = tokio::spawn(session::Session::new(settings, http, outbox, connected).run(stopped));

    worker::stop_signal().await;
    tracing::info!("stop signal: closing the socket, flushing the buffer");
    stop.send_replace(true);
    if tokio::time::timeout(SESSION_STOP, &mut session).await.is_err() {
        session.abort();
    }
    sender.flush(flush).await;
    // The sender's handle is gone: the alerts still queued go out, briefly.
    if let Some(task) = alerts_task {
        let _ = tokio::time::timeout(ALERTS_FLUSH, task).await;
    }
    api_stop.send_replace(true);
    if let Some(api) = api {
        let _ = tokio::time::timeout(Duration::from_secs(2), api).await;
    }
    tracing::info!("notifications consumer stopped");
    Ok(())
}
