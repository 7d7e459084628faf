//! `genesys-sim`: a stand-in for the Genesys Cloud endpoints
//! `failsoft notifications` uses, that can be told to misbehave.
//!
//! One loopback port serves:
//!
//! - `POST /oauth/token`: client credentials (Basic) → `{access_token,
//!   token_type, expires_in}`; tokens expire after `--token-ttl-secs` and
//!   the API refuses an expired or unknown one with 401 (counted);
//! - `POST /api/v2/notifications/channels` → `{id, connectUri, expires}`;
//! - `PUT|GET /api/v2/notifications/channels/{id}/subscriptions`
//!   (`[{"id": topic}]` → `{"entities": [...]}`); 404 once the channel expired;
//! - `GET /channels/{id}`: the channel's WebSocket (one connection per
//!   channel: a new one replaces the old), with a `channel.metadata`
//!   heartbeat every `--heartbeat-ms`;
//! - the admin API: `POST /admin/publish {topic, eventBody, correlationId}`
//!   (delivered to connected, subscribed channels only; answers
//!   `{"delivered": n}`), `POST /admin/drop` (closes every socket),
//!   `POST /admin/heartbeats {"on": bool}`, `POST /admin/expire` (every
//!   live channel: sockets closed, later calls 404), `POST /admin/closing`
//!   (the "WebSocket is closing in 1 minute" notice), `GET /admin/stats`.
//!
//! Channels also expire by themselves after `--channel-ttl-ms`. Once bound
//! it prints `genesys-sim listening http://127.0.0.1:PORT` on stdout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use failsoft_origin::clock::UtcTime;
use serde_json::{Value, json};
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    #[arg(long, default_value = "test-client")]
    client_id: String,
    #[arg(long, default_value = "test-only-client-secret")]
    client_secret: String,
    /// The tokens' `expires_in`.
    #[arg(long, default_value_t = 86_399)]
    token_ttl_secs: u64,
    /// A channel's life (Genesys: 24 h).
    #[arg(long, default_value_t = 86_400_000)]
    channel_ttl_ms: u64,
    /// Heartbeat interval (Genesys: 30 s).
    #[arg(long, default_value_t = 30_000)]
    heartbeat_ms: u64,
}

/// What a socket's writer is told to send.
enum Out {
    Text(String),
    Close,
}

struct Channel {
    topics: Vec<String>,
    expires: Instant,
    expired: bool,
    socket: Option<(u64, mpsc::UnboundedSender<Out>)>,
}

impl Channel {
    fn live(&self) -> bool {
        !self.expired && Instant::now() < self.expires
    }

    fn close(&mut self) {
        if let Some((_, tx)) = self.socket.take() {
            let _ = tx.send(Out::Close);
        }
    }
}

#[derive(Default)]
struct Inner {
    tokens: HashMap<String, Instant>,
    channels: HashMap<String, Channel>,
    /// Every event sent on a socket: `{id, channel}`.
    sent: Vec<Value>,
}

struct Sim {
    args: Args,
    base: String,
    heartbeats: AtomicBool,
    next: AtomicU64,
    counters: Mutex<HashMap<&'static str, u64>>,
    inner: Mutex<Inner>,
}

type Shared = Arc<Sim>;

impl Sim {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, name: &'static str) {
        *self.counters.lock().unwrap_or_else(|e| e.into_inner()).entry(name).or_default() += 1;
    }

    fn id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::SeqCst)
    }

    /// Checks the bearer token; counts an expired or unknown one.
    fn authorised(&self, headers: &HeaderMap) -> bool {
        let token = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        let valid = token.is_some_and(|t| self.lock().tokens.get(t).is_some_and(|exp| Instant::now() < *exp));
        if !valid {
            self.count("unauthorized");
        }
        valid
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"status": status.as_u16(), "code": code, "message": message}))).into_response()
}

fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, "bad.credentials", "the token is expired or unknown")
}

fn basic(id: &str, secret: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = format!("{id}:{secret}").into_bytes();
    let mut out = String::from("Basic ");
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn token(State(sim): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let expected = basic(&sim.args.client_id, &sim.args.client_secret);
    let given = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if given != expected {
        sim.count("token_refused");
        return error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client or wrong secret");
    }
    if !body.split('&').any(|p| p == "grant_type=client_credentials") {
        return error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "only client_credentials");
    }
    let token = format!("tok-{}", sim.id());
    let ttl = sim.args.token_ttl_secs;
    sim.lock().tokens.insert(token.clone(), Instant::now() + Duration::from_secs(ttl));
    sim.count("tokens");
    Json(json!({"access_token": token, "token_type": "bearer", "expires_in": ttl})).into_response()
}

async fn create_channel(State(sim): State<Shared>, headers: HeaderMap) -> Response {
    if !sim.authorised(&headers) {
        return unauthorized();
    }
    let id = format!("streaming-{}", sim.id());
    let ttl = Duration::from_millis(sim.args.channel_ttl_ms);
    let now_ms = failsoft_origin::clock::now_ms();
    let channel = Channel { topics: Vec::new(), expires: Instant::now() + ttl, expired: false, socket: None };
    sim.lock().channels.insert(id.clone(), channel);
    sim.count("channels");
    let connect_uri = format!("{}/channels/{id}", sim.base.replacen("http://", "ws://", 1));
    Json(json!({"id": id, "connectUri": connect_uri, "expires": UtcTime::from_unix_ms(now_ms + ttl.as_millis() as u64).rfc3339()}))
        .into_response()
}

fn entities(topics: &[String]) -> Json<Value> {
    Json(json!({"entities": topics.iter().map(|t| json!({"id": t})).collect::<Vec<_>>()}))
}

async fn put_subscriptions(
    State(sim): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !sim.authorised(&headers) {
        return unauthorized();
    }
    let Some(items) = body.as_array() else {
        return error(StatusCode::BAD_REQUEST, "bad.request", "the body must be an array of {id}");
    };
    let topics: Vec<String> =
        items.iter().filter_map(|t| t.get("id").and_then(Value::as_str)).map(Into::into).collect();
    if topics.len() != items.len() || topics.len() > 1000 {
        return error(StatusCode::BAD_REQUEST, "bad.request", "1 to 1000 {id} items");
    }
    let mut inner = sim.lock();
    match inner.channels.get_mut(&id).filter(|c| c.live()) {
        Some(channel) => {
            channel.topics = topics.clone();
            drop(inner);
            sim.count("subscriptions");
            entities(&topics).into_response()
        }
        None => {
            drop(inner);
            sim.count("not_found");
            error(StatusCode::NOT_FOUND, "not.found", "no such channel")
        }
    }
}

async fn get_subscriptions(State(sim): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if !sim.authorised(&headers) {
        return unauthorized();
    }
    let topics = sim.lock().channels.get(&id).filter(|c| c.live()).map(|c| c.topics.clone());
    match topics {
        Some(topics) => entities(&topics).into_response(),
        None => {
            sim.count("not_found");
            error(StatusCode::NOT_FOUND, "not.found", "no such channel")
        }
    }
}

async fn socket(State(sim): State<Shared>, Path(id): Path<String>, upgrade: WebSocketUpgrade) -> Response {
    if !sim.lock().channels.get(&id).is_some_and(Channel::live) {
        sim.count("not_found");
        return error(StatusCode::NOT_FOUND, "not.found", "no such channel");
    }
    upgrade.on_upgrade(move |ws| serve_socket(sim, id, ws))
}

async fn serve_socket(sim: Shared, id: String, mut ws: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let conn = sim.id();
    let expires = {
        let mut inner = sim.lock();
        let Some(channel) = inner.channels.get_mut(&id) else { return };
        channel.close();
        channel.socket = Some((conn, tx));
        channel.expires
    };
    sim.count("connections");
    let heartbeat = json!({"topicName": "channel.metadata", "eventBody": {"message": "WebSocket Heartbeat"}});
    let mut beat = tokio::time::interval(Duration::from_millis(sim.args.heartbeat_ms));
    beat.tick().await;
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Out::Text(text)) => if ws.send(Message::Text(text.into())).await.is_err() { break },
                Some(Out::Close) | None => {
                    let _ = ws.send(Message::Close(None)).await;
                    break;
                }
            },
            incoming = ws.recv() => match incoming {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            _ = beat.tick() => {
                if sim.heartbeats.load(Ordering::SeqCst) && ws.send(Message::Text(heartbeat.to_string().into())).await.is_err() {
                    break;
                }
            }
            _ = tokio::time::sleep_until(expires.into()) => {
                let _ = ws.send(Message::Close(None)).await;
                break;
            }
        }
    }
    let mut inner = sim.lock();
    if let Some(channel) = inner.channels.get_mut(&id)
        && channel.socket.as_ref().is_some_and(|(c, _)| *c == conn)
    {
        channel.socket = None;
    }
}

async fn publish(State(sim): State<Shared>, Json(body): Json<Value>) -> Response {
    let (Some(topic), Some(event_body)) = (body.get("topic").and_then(Value::as_str), body.get("eventBody")) else {
        return error(StatusCode::BAD_REQUEST, "bad.request", "topic and eventBody are required");
    };
    let mut message = json!({"topicName": topic, "version": "2", "eventBody": event_body});
    let id = body.get("correlationId").and_then(Value::as_str);
    if let Some(id) = id {
        message["metadata"] = json!({"CorrelationId": id});
    }
    let text = message.to_string();
    let mut inner = sim.lock();
    let mut sent = Vec::new();
    for (channel_id, channel) in &inner.channels {
        if channel.live()
            && channel.topics.iter().any(|t| t == topic)
            && let Some((_, tx)) = &channel.socket
            && tx.send(Out::Text(text.clone())).is_ok()
        {
            sent.push(json!({"id": id, "channel": channel_id}));
        }
    }
    let delivered = sent.len();
    inner.sent.extend(sent);
    Json(json!({"delivered": delivered})).into_response()
}

async fn drop_all(State(sim): State<Shared>) -> Json<Value> {
    let mut inner = sim.lock();
    let mut dropped = 0;
    for channel in inner.channels.values_mut() {
        dropped += usize::from(channel.socket.is_some());
        channel.close();
    }
    Json(json!({"dropped": dropped}))
}

async fn heartbeats(State(sim): State<Shared>, Json(body): Json<Value>) -> Json<Value> {
    let on = body.get("on").and_then(Value::as_bool).unwrap_or(true);
    sim.heartbeats.store(on, Ordering::SeqCst);
    Json(json!({"heartbeats": on}))
}

async fn expire(State(sim): State<Shared>) -> Json<Value> {
    let mut inner = sim.lock();
    let mut expired = 0;
    for channel in inner.channels.values_mut().filter(|c| c.live()) {
        channel.expired = true;
        channel.close();
        expired += 1;
    }
    Json(json!({"expired": expired}))
}

async fn closing(State(sim): State<Shared>) -> Json<Value> {
    let notice = json!({"topicName": "channel.metadata", "eventBody": {"message": "WebSocket is closing in 1 minute"}});
    let inner = sim.lock();
    let told = inner
        .channels
        .values()
        .filter_map(|c| c.socket.as_ref())
        .filter(|(_, tx)| tx.send(Out::Text(notice.to_string())).is_ok())
        .count();
    Json(json!({"told": told}))
}

async fn stats(State(sim): State<Shared>) -> Json<Value> {
    let mut stats: serde_json::Map<String, Value> = ["tokens", "channels", "subscriptions", "connections"]
        .into_iter()
        .chain(["unauthorized", "not_found", "token_refused"])
        .map(|k| (k.to_owned(), json!(0)))
        .collect();
    for (name, n) in sim.counters.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        stats.insert((*name).to_owned(), json!(n));
    }
    let inner = sim.lock();
    stats.insert("connected".into(), json!(inner.channels.values().filter(|c| c.socket.is_some()).count()));
    stats.insert("sent".into(), json!(inner.sent));
    Json(Value::Object(stats))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let args = Args::parse();
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("genesys-sim: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let base = format!("http://{}", listener.local_addr().expect("a bound address"));
    let sim = Arc::new(Sim {
        args,
        base: base.clone(),
        heartbeats: AtomicBool::new(true),
        next: AtomicU64::new(1),
        counters: Mutex::new(HashMap::new()),
        inner: Mutex::new(Inner::default()),
    });
    let app = Router::new()
        .route("/oauth/token", post(token))
        .route("/api/v2/notifications/channels", post(create_channel))
        .route("/api/v2/notifications/channels/{id}/subscriptions", get(get_subscriptions).put(put_subscriptions))
        .route("/channels/{id}", get(socket))
        .route("/admin/publish", post(publish))
        .route("/admin/drop", post(drop_all))
        .route("/admin/heartbeats", post(heartbeats))
        .route("/admin/expire", post(expire))
        .route("/admin/closing", post(closing))
        .route("/admin/stats", get(stats))
        .with_state(sim);
    println!("genesys-sim listening {base}");
    match axum::serve(listener, app).with_graceful_shutdown(failsoft_origin::worker::stop_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("genesys-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_basic_credentials() {
        assert_eq!(basic("Aladdin", "open sesame"), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert_eq!(basic("a", "b"), "Basic YTpi");
    }
}
