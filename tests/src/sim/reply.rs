//! JSON error answers and body parsing shared by the API and the admin API.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

/// An error answer: `{"error": code}` plus `"message"` when there is one.
#[derive(Debug, Clone)]
pub struct ErrorReply {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: Option<String>,
}

impl ErrorReply {
    pub fn new(status: StatusCode, code: &'static str) -> Self {
        Self { status, code, message: None }
    }

    pub fn with_message(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: Some(message.into()) }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::with_message(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ErrorReply {
    fn into_response(self) -> Response {
        let body = match self.message {
            Some(message) => json!({"error": self.code, "message": message}),
            None => json!({"error": self.code}),
        };
        (self.status, Json(body)).into_response()
    }
}

/// Parses a JSON body whatever its `Content-Type` says: test scripts and
/// curl users often omit it, and the simulator is not the place to enforce it.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ErrorReply> {
    serde_json::from_slice(body).map_err(|err| ErrorReply::bad_request(format!("invalid JSON body: {err}")))
}
