//! Calls each edge's outbox drain route on a schedule
//! (`FAILSOFT_EDGE_OUTBOX_DRAIN_SECS`, default 30; 0 turns it off): a Spin
//! edge's write outbox is otherwise drained only after later requests, so
//! an idle edge would keep its writes until traffic came back.
//!
//! An edge whose outbox drains itself (native, Worker) or that has none
//! answers 404; it is not called again (logged once). Other failures are
//! logged and the next tick tries again: the writes are safe in the edge's
//! store meanwhile.

use std::time::Duration;

use failsoft_shared::sync::OUTBOX_DRAIN_PATH;
use serde_json::Value;
use tokio::sync::watch;

use super::edge_push::signed_json;
use crate::config::Secret;

/// Bound on one call: an edge drains up to 200 entries in it.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Calls `POST {edge}/v1/internal/outbox/drain` on every edge every
/// `every`, until `stopped`.
pub async fn run(
    http: reqwest::Client,
    edges: Vec<String>,
    secret: Secret,
    every: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut edges: Vec<String> = edges.iter().map(|e| e.trim_end_matches('/').to_owned()).collect();
    // The first call one interval after start, not at once.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !edges.is_empty() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        let mut keep = Vec::with_capacity(edges.len());
        for edge in edges {
            if call(&http, &edge, &secret).await {
                keep.push(edge);
            }
        }
        edges = keep;
    }
}

/// One call; `false` when the edge has no outbox to drain this way.
async fn call(http: &reqwest::Client, edge: &str, secret: &Secret) -> bool {
    let url = format!("{edge}{OUTBOX_DRAIN_PATH}");
    let request = signed_json(http, reqwest::Method::POST, &url, secret, Vec::new()).timeout(CALL_TIMEOUT);
    match request.send().await {
        Ok(resp) if resp.status().is_success() => {
            let drained: Value = resp.json().await.unwrap_or(Value::Null);
            let sent = drained["sent"].as_u64().unwrap_or(0);
            metrics::counter!("failsoft_edge_outbox_drained_total").increment(sent);
            if sent > 0 || drained["waiting"].as_u64().unwrap_or(0) > 0 {
                tracing::info!(edge, sent, waiting = drained["waiting"].as_u64(), "edge outbox drained");
            }
            true
        }
        Ok(resp) if resp.status().as_u16() == 404 => {
            tracing::info!(edge, "the edge's outbox drains itself (or it has none); not calling it again");
            false
        }
        Ok(resp) => {
            tracing::warn!(edge, status = resp.status().as_u16(), "the edge's outbox drain call failed");
            true
        }
        Err(e) => {
            tracing::warn!(edge, error = %e, "the edge's outbox drain call failed");
            true
        }
    }
}
