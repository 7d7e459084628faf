//! Slow and idle clients cannot starve the listeners: with 500 connections
//! held open against the native edge and against the origin's API (idle,
//! trickling a request head, or trickling a body), valid lookups (edge) and
//! result reads (origin) are still answered within the CRM deadline (3 s),
//! and the header read timeout closes the idle and slow-head connections.
//! Each test runs for a bounded window and stops its processes by PID.

mod origin_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use failsoft_lab::process::Service;
use failsoft_tests::AUTH_TOKEN;
use failsoft_tests::harness::{base_edge_env, program};
use origin_support::OriginStack;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// The stalled connections held open at once.
const STALLED: usize = 500;
/// How long valid requests are sent while they are held: past the
/// listeners' 5 s header read timeout, so its closures are seen.
const WINDOW: Duration = Duration::from_secs(8);
/// A valid request every this often during the window.
const EVERY: Duration = Duration::from_millis(200);
/// The CRM deadline: what a valid request must be answered within.
const DEADLINE: Duration = Duration::from_secs(3);
/// A stalled client sends one byte this often.
const TRICKLE: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug)]
enum Stall {
    /// Connects and sends nothing.
    Idle,
    /// Sends a request head one byte at a time, never finishing it.
    SlowHead,
    /// Sends a whole head announcing a 10 kB body, then a byte at a time.
    SlowBody,
}

/// Counts what the stalled clients saw.
#[derive(Default)]
struct Seen {
    /// Connections held open now.
    open: AtomicUsize,
    /// Connections the server closed, by kind.
    closed_idle: AtomicUsize,
    closed_head: AtomicUsize,
}

/// Holds one stalled connection of `kind` to `addr` until `stop`; when the
/// server closes it, opens another, so the pressure stays on.
async fn stall(addr: String, path: &'static str, kind: Stall, seen: Arc<Seen>, stop: Arc<AtomicBool>) {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n"
    );
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut stream) = TcpStream::connect(&addr).await else {
            tokio::time::sleep(TRICKLE).await;
            continue;
        };
        if matches!(kind, Stall::SlowBody) && stream.write_all(head.as_bytes()).await.is_err() {
            continue;
        }
        seen.open.fetch_add(1, Ordering::SeqCst);
        let mut sent = 0usize;
        let closed = loop {
            if stop.load(Ordering::SeqCst) {
                break false;
            }
            // Wait a trickle's time, noticing meanwhile if the server closed
            // the connection (a read of 0 bytes, or an error).
            let mut probe = [0u8; 512];
            if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(TRICKLE, stream.read(&mut probe)).await {
                break true;
            }
            let byte = match kind {
                Stall::Idle => continue,
                Stall::SlowHead => head.as_bytes()[sent % (head.len() - 4)],
                Stall::SlowBody => b' ',
            };
            sent += 1;
            if stream.write_all(&[byte]).await.is_err() {
                break true;
            }
        };
        seen.open.fetch_sub(1, Ordering::SeqCst);
        if closed {
            match kind {
                Stall::Idle => seen.closed_idle.fetch_add(1, Ordering::SeqCst),
                Stall::SlowHead => seen.closed_head.fetch_add(1, Ordering::SeqCst),
                Stall::SlowBody => 0,
            };
        }
    }
}

/// Starts [`STALLED`] stalled clients (two fifths idle, the rest split
/// between slow heads and slow bodies) and waits, bounded, until all hold
/// a connection.
async fn stall_all(addr: &str, path: &'static str) -> (JoinSet<()>, Arc<Seen>, Arc<AtomicBool>) {
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut set = JoinSet::new();
    for i in 0..STALLED {
        let kind = match i % 5 {
            0 | 1 => Stall::Idle,
            2 | 3 => Stall::SlowHead,
            _ => Stall::SlowBody,
        };
        set.spawn(stall(addr.to_owned(), path, kind, Arc::clone(&seen), Arc::clone(&stop)));
        if i % 50 == 49 {
            // In steps, so the server's accept queue keeps up.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.open.load(Ordering::SeqCst) < STALLED {
        assert!(Instant::now() < deadline, "only {} stalled connections opened", seen.open.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (set, seen, stop)
}

/// Sends `request` every [`EVERY`] for [`WINDOW`]; each must be answered
/// within [`DEADLINE`] and pass `check`. Returns the slowest answer.
async fn valid_requests_answered<F, Fut>(what: &str, mut request: F) -> Duration
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = (u16, Value)>,
{
    let end = Instant::now() + WINDOW;
    let mut slowest = Duration::ZERO;
    let mut n = 0;
    while Instant::now() < end {
        let started = Instant::now();
        let answered = tokio::time::timeout(DEADLINE, request(n)).await;
        let took = started.elapsed();
        let (status, body) = answered.unwrap_or_else(|_| panic!("{what} #{n} not answered within {DEADLINE:?}"));
        assert!(status == 200 || status == 404, "{what} #{n}: {status} {body}");
        assert!(body.is_object(), "{what} #{n}: {body}");
        slowest = slowest.max(took);
        n += 1;
        tokio::time::sleep(EVERY.saturating_sub(took)).await;
    }
    assert!(n >= 20, "only {n} {what}s in the window");
    slowest
}

/// Checks what the server did to the stalled clients, then stops them.
async fn stop_and_check(mut set: JoinSet<()>, seen: Arc<Seen>, stop: Arc<AtomicBool>) {
    // Each of the 200 idle and 200 slow-head clients is cut by the 5 s
    // header read timeout at least once. Bounded wait: a connection the
    // kernel completed while the server's accept queue was full is accepted
    // (and its timeout starts) only when a SYN-ACK retry gets through.
    let closed = |c: &AtomicUsize| c.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while (closed(&seen.closed_idle) < STALLED * 2 / 5 || closed(&seen.closed_head) < STALLED * 2 / 5)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    if tokio::time::timeout(Duration::from_secs(5), async { while set.join_next().await.is_some() {} }).await.is_err() {
        set.abort_all();
    }
    let (idle, head) = (closed(&seen.closed_idle), closed(&seen.closed_head));
    assert!(idle >= STALLED * 2 / 5, "the server closed {idle} idle connections");
    assert!(head >= STALLED * 2 / 5, "the server closed {head} slow-head connections");
}

fn client() -> reqwest::Client {
    // A fresh connection per request, as each Data Action may bring.
    reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).timeout(DEADLINE * 2).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_edge_answers_lookups_while_500_clients_stall() {
    let (sim, edge) = tokio::task::spawn_blocking(|| {
        let mut sim_cmd = program("crm-sim");
        sim_cmd.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]).env("RUST_LOG", "warn");
        let sim = Service::start_command("crm-sim", &mut sim_cmd).expect("crm-sim starts");
        let mut edge_cmd = program("failsoft-edge");
        edge_cmd.args(["--listen", "127.0.0.1:0"]).envs(base_edge_env(sim.url("api")));
        let edge = Service::start_command("failsoft-edge", &mut edge_cmd).expect("failsoft-edge starts");
        (sim, edge)
    })
    .await
    .unwrap();
    let url = edge.url("url").to_owned();
    let addr = url.trim_start_matches("http://").to_owned();
    let (set, seen, stop) = stall_all(&addr, "/v1/customer-lookup").await;

    let http = client();
    let slowest = valid_requests_answered("lookup", |n| {
        let request = http
            .post(format!("{url}/v1/customer-lookup"))
            .bearer_auth(AUTH_TOKEN)
            .json(&json!({"ani": format!("+44 20 7946 {:04}", n % 50), "correlationId": format!("stall-{n}")}));
        async move {
            let resp = request.send().await.expect("the edge answers");
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert!(body["source"].is_string(), "a lookup answer: {body}");
            (status, body)
        }
    })
    .await;
    eprintln!("slowest lookup with {STALLED} stalled clients: {slowest:?}");
    stop_and_check(set, seen, stop).await;
    drop((edge, sim));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_answers_result_reads_while_500_clients_stall() {
    let stack = OriginStack::start().await;
    let worker = stack.worker(&[]).await;
    let addr = worker.url().trim_start_matches("http://").to_owned();
    let (set, seen, stop) = stall_all(&addr, "/v1/internal/edge-stats").await;

    let slowest = valid_requests_answered("result read", |n| {
        let stack = &stack;
        let worker = &worker;
        async move {
            let (status, body) = stack.result(worker, &format!("stall-{n}")).await;
            assert_eq!(body["error"]["code"], "RESULT_NOT_FOUND", "a read of the store: {body}");
            (status, body)
        }
    })
    .await;
    eprintln!("slowest result read with {STALLED} stalled clients: {slowest:?}");
    stop_and_check(set, seen, stop).await;
}
