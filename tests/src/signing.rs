//! Signed requests as failsoft's signers send them (the origin's calls to
//! the edge, the edge's to the origin, the CRM's webhook), for tests that
//! play one side; and a receiver that captures what a real signer sent, so
//! a test can send the very same request again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use failsoft_shared::signature::{self, NONCE_BYTES, Signed};

/// Unix seconds now.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

/// A nonce never made before: the time, a counter and the process (a nonce
/// needs uniqueness, not secrecy).
pub fn nonce_bytes() -> [u8; NONCE_BYTES] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut bytes = [0u8; NONCE_BYTES];
    bytes[..8].copy_from_slice(&nanos.to_le_bytes());
    bytes[8..12].copy_from_slice(&(COUNTER.fetch_add(1, Ordering::SeqCst) as u32).to_le_bytes());
    bytes[12..].copy_from_slice(&std::process::id().to_le_bytes());
    bytes
}

/// The three signature headers of a `method` request to `url` with `body`,
/// signed at `ts` with a fresh nonce.
pub fn headers(secret: &str, method: &str, url: &str, body: &[u8], ts: u64) -> [(&'static str, String); 3] {
    let signed = Signed::new(method, signature::target_of(url), body);
    signature::headers(secret.as_bytes(), &signed, ts, nonce_bytes())
}

/// A `method` request to `url` with `body`, signed at `ts`.
pub fn request(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    body: Vec<u8>,
    secret: &str,
    ts: u64,
) -> reqwest::RequestBuilder {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let headers = headers(secret, method.as_str(), url, &body, ts);
    headers
        .into_iter()
        .fold(http.request(method, url), |req, (name, value)| req.header(name, value))
        .header("content-type", "application/json")
        .body(body)
}

/// One request a [`Capture`] received.
#[derive(Debug, Clone)]
pub struct Captured {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Captured {
    /// This request, headers and body as received, sent as `method` to
    /// `base` + `target` (the same ones to replay it, others to move it).
    pub fn resend(&self, http: &reqwest::Client, base: &str, method: &str, target: &str) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let keep = |name: &str| name.starts_with("x-failsoft-") || name == "content-type";
        self.headers
            .iter()
            .filter(|(name, _)| keep(name))
            .fold(http.request(method, format!("{base}{target}")), |req, (name, value)| req.header(name, value))
            .body(self.body.clone())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A loopback HTTP receiver that records every request and answers 200.
pub struct Capture {
    pub url: String,
    received: Arc<Mutex<Vec<Captured>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Capture {
    pub async fn start() -> Self {
        let received: Arc<Mutex<Vec<Captured>>> = Arc::default();
        let store = Arc::clone(&received);
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: axum::http::HeaderMap,
                  body: axum::body::Bytes| {
                let store = Arc::clone(&store);
                async move {
                    let headers = headers
                        .iter()
                        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
                        .collect();
                    let target =
                        uri.path_and_query().map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
                    let captured = Captured { method: method.to_string(), target, headers, body: body.to_vec() };
                    store.lock().unwrap_or_else(|e| e.into_inner()).push(captured);
                    axum::Json(serde_json::json!({"captured": true}))
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self { url, received, task }
    }

    /// Everything received so far.
    pub fn all(&self) -> Vec<Captured> {
        self.received.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.task.abort();
    }
}
