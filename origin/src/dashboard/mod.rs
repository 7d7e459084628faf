//! The operator's dashboard's data: `GET /v1/dashboard`, the depth history
//! and the latest dead letters ([`history`]).
//!
//! No credentials: like `/v1/health`, it shows counts, correlationIds and
//! reason codes, never a payload or phone number.

pub mod history;

use axum::Json;
use axum::Router;
use axum::http::header::CACHE_CONTROL;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use crate::clock;
use crate::telemetry::DEPTH_SAMPLE_EVERY;

/// The dashboard's routes; they read no state, so they merge into any router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/v1/dashboard", get(document))
}

async fn document() -> impl IntoResponse {
    ([(CACHE_CONTROL, "no-store")], Json(dashboard_document()))
}

/// `GET /v1/dashboard`: the depth samples of the last hour (oldest first)
/// and the latest dead letters (newest first).
pub fn dashboard_document() -> Value {
    json!({
        "now": clock::now_ms(),
        "depths": {
            "sampleEverySeconds": DEPTH_SAMPLE_EVERY.as_secs(),
            "windowSeconds": history::DEPTH_WINDOW.as_secs(),
            "points": history::depths(),
        },
        "deadLetters": history::dead_letters(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_has_the_depths_and_dead_letters() {
        history::record_depths(Some(3), Some(1));
        let doc = dashboard_document();
        assert_eq!(doc["depths"]["sampleEverySeconds"], 5);
        assert_eq!(doc["depths"]["windowSeconds"], 3_600);
        let points = doc["depths"]["points"].as_array().unwrap();
        assert!(points.iter().any(|p| p["queue"] == 3 && p["dlq"] == 1), "{doc}");
        assert!(doc["deadLetters"].is_array());
    }
}
