//! `failsoft worker`: wires the consumer, the heartbeat, the alert sender,
//! the queue-depth sampler, the EMF lines (if on), the edge-facing API (results,
//! edge reports, `POST /v1/events`) and the operator's listener (metrics,
//! health, dashboard) together, and stops them in order on SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::WorkerConfig;
use crate::dead_letter::DeadLetters;
use crate::dead_letter::alerts::Alerts;
use crate::deliver::crm::Crm;
use crate::deliver::delivery::Delivery;
use crate::deliver::edge_push::EdgePush;
use crate::deliver::event_sink::EventSink;
use crate::http::api::{self, ApiState};
use crate::http::events::{self, EventsApi};
use crate::http::serve::{self, Limits};
use crate::queue::consumer::Consumer;
use crate::queue::fit::{self, FitError};
use crate::queue::leases::Leases;
use crate::store::results::Store;
use crate::sync::Syncer;
use crate::sync::sink::Sink;
use crate::sync::source::CrmList;
use crate::sync::state::StateStore;
use crate::{aws, clock, emf, telemetry};

/// How long pending alerts may still be sent after the consumer stopped.
const ALERT_FLUSH: Duration = Duration::from_secs(3);
/// Slack on top of the long poll for one SQS call.
const SQS_CALL_SLACK: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot listen on {0}: {1}")]
    Listen(std::net::SocketAddr, std::io::Error),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Queue(#[from] FitError),
}

impl WorkerError {
    /// A setting, or the queue, that does not fit: exit status 2.
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Queue(FitError::Unfit(_) | FitError::Denied(_)))
    }
}

/// Runs until SIGTERM or SIGINT, then drains and returns.
pub async fn run(config: WorkerConfig) -> Result<(), WorkerError> {
    let wait = Duration::from_secs(config.receive_wait_secs as u64);
    let sdk = aws::sdk_config(wait + SQS_CALL_SLACK).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    // The real queue, before anything starts: a redrive, visibility or
    // retention that breaks a promise of the settings refuses the start.
    let queue = fit::check(&sqs, &config.queue_url, &config.policy).await?;
    tracing::info!(
        max_receive_count = queue.max_receive_count,
        visibility_timeout_secs = queue.visibility_timeout_secs,
        retention_secs = queue.retention_secs,
        "the work queue fits the settings"
    );
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let store = Store::new(dynamo.clone(), config.tables.clone()).with_batching();
    // Idle connections go after 4 s, under the native edge's 5 s keep-alive
    // limit (http/serve.rs), so a cache push never races the server's close.
    let http = reqwest::Client::builder().no_proxy().pool_idle_timeout(Duration::from_secs(4)).build()?;

    let crm = Crm::new(http.clone(), &config.crm_url, std::sync::Arc::clone(&config.crm_mapping));
    let edge = EdgePush::new(http.clone(), &config.edge_urls, config.internal_secret.clone());
    let (alerts, alert_task) = match &config.alert {
        Some(target) => {
            let (alerts, task) = Alerts::start(target.clone(), http.clone());
            (alerts, Some(task))
        }
        None => (Alerts::disabled(), None),
    };
    crate::access::alert_to(alerts.clone());
    let owner = format!("worker-{}-{:08x}", std::process::id(), clock::random_u64() as u32);
    let events = config.events.url.as_deref().map(|url| EventSink::new(http.clone(), url));
    let delivery = Arc::new(Delivery::new(config.clone(), crm, store.clone(), edge, owner.clone()).with_events(events));
    let leases = Leases::new(config.policy.visibility_timeout_secs);
    let dead_letters = DeadLetters {
        sqs: sqs.clone(),
        queue_url: config.queue_url.clone(),
        dlq_url: config.dlq_url.clone(),
        store: store.clone(),
        alerts,
    };
    let consumer =
        Consumer::new(sqs.clone(), config.queue_url.clone(), Arc::clone(&delivery), dead_letters, Arc::clone(&leases));

    let metrics = telemetry::install();
    let listeners =
        api::bind(config.listen, config.operator_listen).await.map_err(|(addr, e)| WorkerError::Listen(addr, e))?;
    let state = Arc::new(ApiState {
        store,
        secret: config.internal_secret.clone(),
        tolerance_secs: config.policy.signature_tolerance_secs,
        delivery: Some(Arc::clone(&delivery)),
        in_flight: {
            let consumer = consumer.clone();
            Arc::new(move || consumer.in_flight())
        },
        metrics,
        nonces: api::replay_cache(),
    });
    let events_api =
        Arc::new(EventsApi { sqs: sqs.clone(), queue_url: config.queue_url.clone(), config: config.events.clone() });
    let (api_stop, api_stopped) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let api = tokio::spawn(serve::serve(
        listeners.api,
        api::router(Arc::clone(&state)).merge(events::router(events_api)),
        Limits::API,
        stopped(api_stopped.clone()),
    ));
    let operator = tokio::spawn(serve::serve(
        listeners.operator,
        api::operator_router(state),
        Limits::OPERATOR,
        stopped(api_stopped),
    ));
    let (beat_stop, beat_stopped) = watch::channel(false);
    let sampler = tokio::spawn(telemetry::sample_depths(
        sqs.clone(),
        config.queue_url.clone(),
        config.dlq_url.clone(),
        beat_stopped.clone(),
    ));
    let emf = config.emf_every.map(|every| tokio::spawn(emf::run(Arc::clone(&delivery), every, beat_stopped.clone())));
    // The sync reads the mapping's customer list; a mapping without one
    // (ServiceNow's) is pre-warmed from exports (`failsoft sync
    // --from-file`), never by calls the CRM would refuse.
    let has_list = config.crm_mapping.has_list();
    if config.sync.scheduled() && !has_list {
        tracing::info!(
            mapping = config.crm_mapping.name(),
            "pre-warm sync from the CRM off: the mapping declares no customer list; pre-warm from an export \
             with failsoft sync --from-file"
        );
    }
    let sync = match &config.sync.cache_key_secret {
        Some(key_secret) if config.sync.scheduled() && has_list => {
            let sink = Sink::new(
                dynamo,
                config.tables.last_known.clone(),
                http.clone(),
                config.edge_urls.clone(),
                config.internal_secret.clone(),
                config.policy.freshness.last_known_horizon_ms,
            );
            let state =
                StateStore::new(aws_sdk_dynamodb::Client::new(&sdk), config.tables.results.clone(), owner.clone());
            let syncer =
                Syncer::new(config.sync.clone(), key_secret.clone(), config.policy.default_tier.clone(), sink, state)
                    .with_breaker(Arc::clone(&delivery));
            let crm = Crm::new(http.clone(), &config.crm_url, Arc::clone(&config.crm_mapping));
            let crm = CrmList::new(crm, config.sync.page_size);
            tracing::info!(interval_secs = config.sync.interval.as_secs(), rate = config.sync.rate, "pre-warm sync on");
            Some(tokio::spawn(Arc::new(syncer).serve(crm, beat_stopped.clone())))
        }
        _ => {
            tracing::info!("pre-warm sync off (FAILSOFT_CACHE_KEY_SECRET unset, or FAILSOFT_SYNC_INTERVAL_SECS=0)");
            None
        }
    };
    let outbox_drain = match config.outbox_drain_every {
        Some(every) if !config.edge_urls.is_empty() => Some(tokio::spawn(crate::deliver::outbox_drain::run(
            http.clone(),
            config.edge_urls.clone(),
            config.internal_secret.clone(),
            every,
            beat_stopped.clone(),
        ))),
        _ => None,
    };
    let heartbeat = tokio::spawn(Arc::clone(&leases).heartbeat(sqs, config.queue_url.clone(), beat_stopped));
    let (stop, stopped) = watch::channel(false);
    tracing::info!(%owner, concurrency = config.concurrency, "worker started");
    let consuming = tokio::spawn(consumer.run(stopped, config.shutdown_grace));

    stop_signal().await;
    tracing::info!("stop signal: no more receives");
    stop.send_replace(true);
    consuming.await.ok();
    beat_stop.send_replace(true);
    heartbeat.await.ok();
    sampler.await.ok();
    if let Some(sync) = sync
        && tokio::time::timeout(Duration::from_secs(5), sync).await.is_err()
    {
        tracing::warn!("the sync pass did not stop within 5 s");
    }
    if let Some(emf) = emf {
        emf.await.ok();
    }
    if let Some(drain) = outbox_drain
        && tokio::time::timeout(Duration::from_secs(5), drain).await.is_err()
    {
        tracing::warn!("the edge outbox drain call did not stop within 5 s");
    }
    api_stop.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = tokio::join!(api, operator);
    })
    .await;
    drop(delivery);
    if let Some(task) = alert_task
        && tokio::time::timeout(ALERT_FLUSH, task).await.is_err()
    {
        tracing::warn!("alerts still unsent at exit");
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the worker");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
