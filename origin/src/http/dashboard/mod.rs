//! The operator's dashboard: `GET /dashboard`, one page whose script polls
//! `/v1/health` and `GET /v1/dashboard` (the depth history and the latest
//! dead letters, [`history`]) every two seconds. Its HTML, script and
//! stylesheet are compiled into the binary and served by the origin itself
//! (`/dashboard/app.js`, `/dashboard/style.css`): no build step, no CDN, and
//! a Content-Security-Policy that allows nothing else.
//!
//! No credentials: like `/v1/health`, it shows counts, levels, states,
//! correlationIds and reason codes, never a payload or phone number.

pub mod history;

use axum::Json;
use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use crate::clock;
use crate::telemetry::DEPTH_SAMPLE_EVERY;

const PAGE: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");
/// Only the origin's own script, stylesheet and JSON.
const POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:";

/// The dashboard's routes; they read no state, so they merge into any router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/app.js", get(|| asset("text/javascript; charset=utf-8", SCRIPT)))
        .route("/dashboard/style.css", get(|| asset("text/css; charset=utf-8", STYLE)))
        .route("/v1/dashboard", get(document))
}

async fn page() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CONTENT_SECURITY_POLICY, POLICY),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(CONTENT_TYPE, content_type), (X_CONTENT_TYPE_OPTIONS, "nosniff"), (CACHE_CONTROL, "no-cache")], body)
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
    fn the_page_loads_only_its_own_assets() {
        assert!(PAGE.contains(r#"src="/dashboard/app.js""#) && PAGE.contains(r#"href="/dashboard/style.css""#));
        for text in [PAGE, SCRIPT, STYLE] {
            // The SVG namespace is a name, not something fetched.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://") && !text.contains("https://"), "no external URL in the assets");
        }
    }

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
