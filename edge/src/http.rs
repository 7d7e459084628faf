//! The host-neutral request and response the facade speaks.

use std::future::poll_fn;
use std::pin::pin;

use failsoft_shared::config::ConfigError;
use futures_core::Stream;
use serde::Serialize;

/// Largest body accepted on any route. Data Action payloads are a few
/// hundred bytes; the cap bounds memory per request on every host.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// An inbound request, as each host hands it over.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// The query string without its `?` (empty: none). Signatures cover it.
    pub query: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// A request for `target` (a path, with `?query` or without).
    pub fn new(method: &str, target: &str) -> Self {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Self { method: method.to_ascii_uppercase(), path: path.to_owned(), query: query.to_owned(), ..Self::default() }
    }

    /// The request target as the client sent it: path and `?query`.
    pub fn target(&self) -> String {
        failsoft_shared::signature::target(&self.path, Some(&self.query))
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The first value of a header, by lower-case name.
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A response to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, value: &impl Serialize) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Self { status, headers: vec![("content-type", "application/json".to_owned())], body }
    }

    /// A `{"error":{"code","message"}}` response.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Self::json(status, &serde_json::json!({"error": {"code": code, "message": message}}))
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    /// The body as JSON, for tests and hosts that inspect answers.
    pub fn json_body(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// The 413 answer, for hosts that stop reading a body at the cap.
pub fn payload_too_large() -> Response {
    Response::error(413, "PAYLOAD_TOO_LARGE", "the body exceeds 16 KiB")
}

/// The 400 answer when the body could not be read (the client broke off or
/// sent a malformed chunked body): the request's fault, not the host's.
pub fn body_unreadable() -> Response {
    Response::error(400, "INVALID_BODY", "the body could not be read")
}

/// Reads a request's body the one way every host does, from its lower-case
/// `headers` and its body as a stream of chunks. A declared
/// `Content-Length` over [`MAX_BODY_BYTES`] is refused before anything is
/// read; a body that turns out longer (chunked, or longer than declared) is
/// refused at the first chunk past the cap, so no more than the cap is ever
/// buffered. A failed read is [`body_unreadable`].
///
/// `open_body` is called only once the declared length has passed (`None`:
/// the request has no body): a Worker whose body stream was opened and left
/// unread resets the connection instead of sending the 413.
pub async fn read_capped<S, Chunk, E>(
    headers: &[(String, String)],
    open_body: impl FnOnce() -> Option<S>,
) -> Result<Vec<u8>, Response>
where
    S: Stream<Item = Result<Chunk, E>>,
    Chunk: AsRef<[u8]>,
    E: std::fmt::Debug,
{
    let declared = headers.iter().find(|(name, _)| name == "content-length").map(|(_, value)| value.trim());
    if declared.and_then(|len| len.parse::<u64>().ok()).is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(too_large_counted());
    }
    let Some(chunks) = open_body() else { return Ok(Vec::new()) };
    let mut chunks = pin!(chunks);
    let mut body = Vec::new();
    while let Some(chunk) = poll_fn(|cx| chunks.as_mut().poll_next(cx)).await {
        let chunk = chunk.map_err(|e| {
            tracing::warn!(error = ?e, "reading a request body failed");
            metrics::counter!("failsoft_edge_rejected_total", "code" => "INVALID_BODY").increment(1);
            body_unreadable()
        })?;
        let chunk = chunk.as_ref();
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large_counted());
        }
        body.extend_from_slice(chunk);
    }
    Ok(body)
}

fn too_large_counted() -> Response {
    metrics::counter!("failsoft_edge_rejected_total", "code" => "PAYLOAD_TOO_LARGE").increment(1);
    payload_too_large()
}

/// What a host whose settings fail validation answers every request: 500
/// `MISCONFIGURED` naming the setting. The problem, which may quote the
/// value (a secret, say), goes to the log only; it is logged here so every
/// host logs it alike.
pub fn misconfigured(error: &ConfigError) -> Response {
    tracing::error!(setting = error.setting, problem = %error.problem, "the host's settings are invalid");
    Response::error(500, "MISCONFIGURED", &format!("invalid setting {}", error.setting))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(response: &Response) -> (u16, String) {
        (response.status, response.json_body()["error"]["code"].as_str().unwrap_or_default().to_owned())
    }

    fn length(len: usize) -> Vec<(String, String)> {
        vec![("content-length".to_owned(), len.to_string())]
    }

    /// A body stream over `chunks` that counts how many were pulled.
    struct Chunks<'a> {
        chunks: std::vec::IntoIter<Result<Vec<u8>, &'static str>>,
        pulled: &'a mut usize,
    }

    impl Stream for Chunks<'_> {
        type Item = Result<Vec<u8>, &'static str>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            let next = self.chunks.next();
            *self.pulled += usize::from(next.is_some());
            std::task::Poll::Ready(next)
        }
    }

    /// Reads `chunks` as a host would; also says how many were pulled.
    async fn read(
        headers: &[(String, String)],
        chunks: Vec<Result<Vec<u8>, &'static str>>,
    ) -> (Result<Vec<u8>, Response>, usize) {
        let mut pulled = 0;
        let body = read_capped(headers, || Some(Chunks { chunks: chunks.into_iter(), pulled: &mut pulled })).await;
        (body, pulled)
    }

    #[tokio::test]
    async fn a_body_up_to_the_cap_is_read_whole() {
        let half = vec![b'x'; MAX_BODY_BYTES / 2];
        let (body, _) = read(&length(MAX_BODY_BYTES), vec![Ok(half.clone()), Ok(half)]).await;
        assert_eq!(body.expect("at the cap").len(), MAX_BODY_BYTES);
        let (body, _) = read(&[], vec![]).await;
        assert_eq!(body.expect("empty"), b"");
    }

    #[tokio::test]
    async fn a_declared_length_over_the_cap_is_refused_unread() {
        let opened = std::cell::Cell::new(false);
        let body = read_capped(&length(MAX_BODY_BYTES + 1), || {
            opened.set(true);
            None::<Chunks<'_>>
        })
        .await;
        assert_eq!(code(&body.expect_err("declared too large")), (413, "PAYLOAD_TOO_LARGE".to_owned()));
        assert!(!opened.get(), "the body is not even opened");
    }

    #[tokio::test]
    async fn an_undeclared_body_is_cut_at_the_first_chunk_past_the_cap() {
        let chunk = || Ok(vec![b'x'; 6 * 1024]);
        let (body, pulled) = read(&[], vec![chunk(), chunk(), chunk(), chunk(), chunk()]).await;
        assert_eq!(code(&body.expect_err("chunked too large")), (413, "PAYLOAD_TOO_LARGE".to_owned()));
        assert_eq!(pulled, 3, "stops at the chunk that crosses 16 KiB");

        // A length that lies low does not get more than the cap read either.
        let (body, _) = read(&length(10), vec![Ok(vec![b'x'; MAX_BODY_BYTES]), Ok(vec![b'x'])]).await;
        assert_eq!(code(&body.expect_err("longer than declared")), (413, "PAYLOAD_TOO_LARGE".to_owned()));
    }

    #[tokio::test]
    async fn a_failed_read_is_the_requests_fault() {
        let (body, _) = read(&[], vec![Ok(b"{".to_vec()), Err("connection reset")]).await;
        assert_eq!(code(&body.expect_err("read failed")), (400, "INVALID_BODY".to_owned()));
    }

    #[test]
    fn misconfiguration_names_the_setting_never_the_problem() {
        let error = ConfigError::new("FAILSOFT_CACHE_KEY_SECRET", "`SECRET-15-BYTES` is shorter than 16 bytes");
        let response = misconfigured(&error);
        assert_eq!(code(&response), (500, "MISCONFIGURED".to_owned()));
        let message = response.json_body()["error"]["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains("FAILSOFT_CACHE_KEY_SECRET"), "{message}");
        assert!(!message.contains("SECRET-15-BYTES"), "{message}");
    }
}
