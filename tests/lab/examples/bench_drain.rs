//! The drain at the CRM's capacity: how close to a rate-limited CRM's
//! limit the worker replays a backlog, and how many of its calls are
//! throttled (issue #17, item 3).
//!
//! For each way the CRM's limit can be known, a fresh local stack (the
//! native edge, fauxqs for SQS, moto for DynamoDB, the two-call CRM
//! simulator, `failsoft worker`): the CRM goes down, `--messages` case
//! creations are posted to the edge (each answered `PENDING`, queued), the
//! simulator gets a limit of `--limit` calls a second (fixed one-second
//! windows), and the CRM comes back. Timed until the CRM has every case,
//! with the simulator's own counts of calls and 429s:
//!
//! - `stated`: the CRM states its limit in `RateLimit-*` headers;
//! - `configured`: it states nothing, `FAILSOFT_CRM_RATE_LIMIT` holds it;
//! - `unknown`: it states nothing and nobody told the worker (only 429s
//!   and their `Retry-After` slow the replay).
//!
//! Run through `make bench-drain` (it installs fauxqs and Node 22 under
//! .local/bench and builds the stack's binaries in the drill profile).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use failsoft_lab::local_stack::{CrmContract, EdgeHost, Lifetime, LocalStack, SqsHost, StackSpec};
use serde_json::{Value, json};

struct Args {
    messages: usize,
    limit: u64,
    only: Option<String>,
}

fn args() -> Args {
    let mut a = Args { messages: 2_500, limit: 100, only: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--messages" => a.messages = value.parse().expect("--messages N"),
            "--limit" => a.limit = value.parse().expect("--limit CALLS_PER_SEC"),
            "--only" => a.only = Some(value),
            other => panic!("unknown flag {other} (--messages N --limit N --only stated|configured|unknown)"),
        }
    }
    a
}

/// What one scenario measured.
struct Drain {
    name: &'static str,
    from_recovery: f64,
    from_first: f64,
    calls: u64,
    throttled: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args();
    let scenarios: [(&'static str, &'static str, Option<String>); 3] =
        [("stated", "ietf", None), ("configured", "none", Some(a.limit.to_string())), ("unknown", "none", None)];
    let mut results = Vec::new();
    for (name, headers, configured) in scenarios {
        if a.only.as_deref().is_some_and(|only| only != name) {
            continue;
        }
        eprintln!("── {name}: {} queued writes, the CRM at {}/s ({headers} headers)", a.messages, a.limit);
        results.push(scenario(name, headers, configured, &a).await?);
    }
    println!(
        "drain benchmark: {} queued case creations, a CRM limited to {} calls/s in 1 s windows",
        a.messages, a.limit
    );
    println!("  stack: native edge, fauxqs (SQS), moto (DynamoDB), crm-sim --contract two-call, failsoft worker");
    println!(
        "  {:<11} {:>11} {:>13} {:>9} {:>9} {:>9} {:>11}",
        "limit", "drain (s)", "from 1st (s)", "calls", "calls/s", "of limit", "throttled"
    );
    for d in &results {
        let rate = d.calls as f64 / d.from_first;
        println!(
            "  {:<11} {:>11.1} {:>13.1} {:>9} {:>9.1} {:>8.1}% {:>6} {:>3.1}%",
            d.name,
            d.from_recovery,
            d.from_first,
            d.calls,
            rate,
            rate * 100.0 / a.limit as f64,
            d.throttled,
            d.throttled as f64 * 100.0 / d.calls.max(1) as f64
        );
    }
    println!("  drain: CRM back → last case; from 1st: first case → last case (the breaker's probe finds the");
    println!("  CRM within FAILSOFT_WORKER_PROBE_EVERY_MS first); calls: every call the CRM took in that time.");
    Ok(())
}

async fn scenario(name: &'static str, headers: &str, configured: Option<String>, a: &Args) -> anyhow::Result<Drain> {
    let mut settings = vec![("FAILSOFT_LOG".to_owned(), "warn".to_owned())];
    if let Some(limit) = configured {
        settings.push(("FAILSOFT_CRM_RATE_LIMIT".to_owned(), limit));
    }
    let spec = StackSpec {
        edge: EdgeHost::Native,
        sqs: SqsHost::Fauxqs,
        crm_url: None,
        crm_contract: CrmContract::TwoCall,
        dir: PathBuf::from(format!(".local/bench-drain/{name}")),
        settings,
        lifetime: Lifetime::Owned,
        queue_switch: false,
    };
    let stack = LocalStack::start(spec).await?;
    let env = |key: &str| stack.env.get(key).map(str::to_owned).unwrap_or_default();
    let (edge, auth, admin) = (env("FAILSOFT_EDGE_URL"), env("FAILSOFT_AUTH_HEADER"), env("CRM_ADMIN_URL"));
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(15)).build()?;
    let post = |path: &str, body: Value| http.post(format!("{admin}{path}")).json(&body).send();
    post("/admin/mode", json!({"mode": "down"})).await?.error_for_status()?;

    // The backlog: every write answered PENDING by the edge (queued).
    let loading = Instant::now();
    // 16 posting at once, each taking the next index.
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut posters = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (http, edge, auth, next, messages) = (http.clone(), edge.clone(), auth.clone(), next.clone(), a.messages);
        posters.spawn(async move {
            let mut pending = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= messages {
                    return pending;
                }
                let id = format!("drain-{name}-{i:05}");
                let body = json!({"ani": format!("+1555{:07}", 1_000_000 + i % 500), "correlationId": id,
                                  "subject": "Callback requested", "description": "failsoft drain benchmark"});
                let sent = http.post(format!("{edge}/v1/cases")).header("authorization", &auth).json(&body).send();
                let answer: Option<Value> = match sent.await {
                    Ok(response) => response.json().await.ok(),
                    Err(_) => None,
                };
                pending += usize::from(answer.is_some_and(|a| a["status"] == "PENDING"));
            }
        });
    }
    let pending: usize = posters.join_all().await.into_iter().sum();
    anyhow::ensure!(pending == a.messages, "{pending} of {} writes answered PENDING", a.messages);
    eprintln!("   {pending} writes queued in {:.1} s", loading.elapsed().as_secs_f64());

    let limit = json!({"limit": a.limit, "windowSecs": 1, "headers": headers});
    post("/admin/rate-limit", limit).await?.error_for_status()?;
    let stats = || async {
        let s: Value = http.get(format!("{admin}/admin/stats")).send().await?.json().await?;
        anyhow::Ok((
            s["requests"].as_u64().unwrap_or(0),
            s["throttled"].as_u64().unwrap_or(0),
            s["casesCreated"].as_u64().unwrap_or(0),
        ))
    };
    let recovered = Instant::now();
    let recovered_ms = failsoft_origin::clock::now_ms();
    post("/admin/mode", json!({"mode": "up"})).await?.error_for_status()?;
    let (calls_at_up, throttled_at_up, _) = stats().await?;
    let deadline = recovered + Duration::from_secs(600);
    // The CRM's calls as of the first case (the poll's 50 ms bound it).
    let mut first_calls = None;
    let (calls, throttled) = loop {
        let (calls, throttled, created) = stats().await?;
        if created > 0 && first_calls.is_none() {
            first_calls = Some(calls);
        }
        if created as usize >= a.messages {
            break (calls, throttled);
        }
        anyhow::ensure!(Instant::now() < deadline, "{created} of {} delivered in 10 minutes", a.messages);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The first case's own time: the poll above only bounds it.
    let ledger: Vec<Value> = http.get(format!("{admin}/admin/ledger")).send().await?.json().await?;
    let first_ms = ledger.iter().filter_map(|c| c["createdAt"].as_u64()).min().unwrap_or(recovered_ms);
    let last_ms = ledger.iter().filter_map(|c| c["createdAt"].as_u64()).max().unwrap_or(recovered_ms);
    drop(stack);
    Ok(Drain {
        name,
        from_recovery: (last_ms.saturating_sub(recovered_ms)) as f64 / 1000.0,
        from_first: (last_ms.saturating_sub(first_ms)).max(1) as f64 / 1000.0,
        calls: calls - first_calls.unwrap_or(calls_at_up),
        throttled: throttled - throttled_at_up,
    })
}
