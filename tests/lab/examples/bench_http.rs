//! The hot path against its limit (`make bench-http`): a cache hit on each
//! edge host beside the least a server of the same kind can do, measured
//! in one run on one machine with `wrk`.
//!
//! - **Native:** `failsoft-edge` answering one warmed customer from its KV,
//!   beside a bare hyper server answering a fixed JSON of the same size
//!   (`edge/examples/bare_hyper.rs`), both on 127.0.0.1 at `--native-c`
//!   connections (32). Also: the edge's CPU time per lookup (user + system,
//!   from /proc) and its resident memory once `--keys` (100,000) distinct
//!   callers are cached.
//! - **Worker:** the Rust Worker (`make worker`) answering a warmed customer,
//!   beside the minimal JavaScript Worker of `edge/bench/js-worker` (parse
//!   the body, one KV get, answer JSON), each under its own `wrangler dev
//!   --local`, at `--worker-c` connections (16).
//!
//! Each pair is measured in alternating rounds (`--rounds`, reference
//! first) of `--secs` seconds after a short warm-up; the ratio is of the
//! mean throughputs. Answers other than 200, or a hit that is not answered
//! from the cache, fail the run: a fast wrong answer measures nothing.
//!
//! ```text
//! cargo run --profile drill -p failsoft-lab --example bench_http -- --secs 10
//! ```

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use failsoft_lab::local_stack::{clean_command as command, worker_config, workspace_root, wrangler_dev};
use failsoft_lab::process::{Ready, Service, bin_dir};
use serde_json::{Value, json};

const TOKEN: &str = "bench-only-bearer-token-0123456789";
const CACHE_KEY_SECRET: &str = "bench-only-cache-key-secret-0123456789";
const WEBHOOK_SECRET: &str = "bench-only-webhook-secret-0123456789";
/// The warmed caller: in the simulator's generated population.
const WARM_ANI: &str = "+15550000001";
const CORRELATION_ID: &str = "6f1c2b9e-2a51-4c4e-9d7a-0b8f3c1d2e4f";

struct Args {
    secs: u64,
    rounds: usize,
    native_c: usize,
    worker_c: usize,
    keys: usize,
    worker: bool,
    /// The Rust Worker's `FAILSOFT_KV_MEMO_MS` (its default when unset).
    kv_memo_ms: Option<usize>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args { secs: 10, rounds: 2, native_c: 32, worker_c: 16, keys: 100_000, worker: true, kv_memo_ms: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--no-worker" {
            a.worker = false;
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().with_context(|| format!("{flag} takes a whole number, not {value:?}"));
        match flag.as_str() {
            "--secs" => a.secs = number()? as u64,
            "--rounds" => a.rounds = number()?.max(1),
            "--native-c" => a.native_c = number()?.max(1),
            "--worker-c" => a.worker_c = number()?.max(1),
            "--keys" => a.keys = number()?,
            "--kv-memo-ms" => a.kv_memo_ms = Some(number()?),
            other => bail!(
                "unknown flag {other} (--secs, --rounds, --native-c, --worker-c, --keys, --kv-memo-ms, --no-worker)"
            ),
        }
    }
    Ok(a)
}

/// One `wrk` run's figures.
#[derive(Clone, Copy, Debug)]
struct Run {
    requests: u64,
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// The pair of servers one table row compares.
struct Pair<'a> {
    name: &'static str,
    ours: &'a str,
    reference: &'a str,
    reference_name: &'static str,
    connections: usize,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    ensure!(
        Command::new("wrk").arg("--version").output().is_ok(),
        "wrk is not on PATH: `make bench-http` installs it (apt-get install wrk)"
    );
    let root = workspace_root();
    let work = root.join(".local/bench-http");
    std::fs::create_dir_all(&work)?;
    let script = work.join("lookup.lua");
    std::fs::write(&script, wrk_script())?;
    // The native host closes a connection idle for 5 s (its header read
    // timeout): the pool lets go of them sooner.
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(2))
        .build()?;

    let mut sim_cmd = command(&bin_dir().join("crm-sim"));
    sim_cmd.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]).env("RUST_LOG", "warn");
    let sim = Service::start_command("crm-sim", &mut sim_cmd)?;
    let generated = http
        .post(format!("{}/admin/customers/generate", sim.url("admin")))
        .json(&json!({"count": args.keys.max(2)}))
        .send()
        .await?;
    ensure!(generated.status().is_success(), "the simulator refused to generate customers: {}", generated.status());

    let mut edge_cmd = command(&bin_dir().join("failsoft-edge"));
    edge_cmd.args(["--listen", "127.0.0.1:0"]);
    for (key, value) in edge_settings(sim.url("api")) {
        edge_cmd.env(key, value);
    }
    let edge = Service::start_command("failsoft-edge", &mut edge_cmd)?;
    let mut bare_cmd = command(&bin_dir().join("examples/bare_hyper"));
    bare_cmd.arg("127.0.0.1:0");
    let bare = Service::start_command("bare-hyper", &mut bare_cmd)?;
    let edge_url = format!("{}/v1/customer-lookup", edge.url("url"));
    warm(&http, &edge_url).await.context("warming the native edge")?;

    let mut report = String::new();
    let started = chrono_like_now();
    writeln!(report, "bench-http · {started} · {} · {} cores", cpu_model(), cores())?;
    writeln!(
        report,
        "wrk {} s per round, {} rounds, reference first; one warmed caller; ratio = our mean req/s over the reference's\n",
        args.secs, args.rounds
    )?;
    if let Some(ms) = args.kv_memo_ms {
        writeln!(report, "the Rust Worker with FAILSOFT_KV_MEMO_MS={ms}\n")?;
    }
    writeln!(report, "{:<8} {:<22} {:>5} {:>12} {:>10} {:>10}", "host", "server", "conns", "req/s", "p50", "p99")?;

    let cpu_before = cpu_ticks(edge.pid())?;
    let native = compare(
        &Pair {
            name: "native",
            ours: &edge_url,
            reference: &format!("{}/v1/customer-lookup", bare.url("url")),
            reference_name: "bare hyper (fixed JSON)",
            connections: args.native_c,
        },
        &script,
        &args,
        &mut report,
    )?;
    let cpu_ticks_used = cpu_ticks(edge.pid())? - cpu_before;
    let ours_requests: u64 = native.ours.iter().map(|r| r.requests).sum();
    let warm_up_requests = native.warm_up_requests;
    let cpu_us_per_lookup =
        cpu_ticks_used as f64 * 1e6 / clock_ticks_per_sec() / (ours_requests + warm_up_requests).max(1) as f64;
    drop(bare);
    assert_cached(&http, &edge_url, WARM_ANI).await.context("after the native runs")?;

    // Resident memory with `keys` distinct callers cached.
    let rss_before = rss_kib(edge.pid())?;
    let filled = Instant::now();
    fill(&http, &edge_url, args.keys).await?;
    let fill_secs = filled.elapsed().as_secs_f64();
    for i in [0, args.keys / 2, args.keys.saturating_sub(1)] {
        assert_cached(&http, &edge_url, &generated_ani(i)).await.context("a filled caller")?;
    }
    let rss_after = rss_kib(edge.pid())?;
    drop(edge);

    let worker = if args.worker {
        Some(worker_pair(&root, &work, sim.url("api"), &http, &script, &args, &mut report).await?)
    } else {
        None
    };

    writeln!(report)?;
    writeln!(
        report,
        "native: {:.2}× bare hyper's throughput (target ≥ 0.50), p99 {:.2} ms at c={} (target ≤ 5 ms)",
        native.ratio(),
        native.worst_p99(),
        args.native_c
    )?;
    writeln!(
        report,
        "native: {cpu_us_per_lookup:.1} µs of edge CPU (user + system) per cache hit, while wrk shares the machine"
    )?;
    writeln!(
        report,
        "native: RSS {:.1} MiB → {:.1} MiB with {} callers cached ({:.0} live lookups/s to fill)",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        args.keys,
        args.keys as f64 / fill_secs.max(1e-9)
    )?;
    if let Some(worker) = &worker {
        writeln!(
            report,
            "worker: {:.2}× the minimal JS Worker's throughput (target ≥ 1.0), p99 {:.1} ms at c={}",
            worker.ratio(),
            worker.worst_p99(),
            args.worker_c
        )?;
    }
    print!("{report}");
    std::fs::write(work.join("report.txt"), &report)?;
    println!("\nreport: {}", work.join("report.txt").display());
    Ok(())
}

/// Both sides of one comparison over every round.
struct Compared {
    ours: Vec<Run>,
    reference: Vec<Run>,
    /// Requests our side served in its warm-ups (counted in its CPU time).
    warm_up_requests: u64,
}

impl Compared {
    fn ratio(&self) -> f64 {
        mean(&self.ours) / mean(&self.reference).max(1e-9)
    }

    fn worst_p99(&self) -> f64 {
        self.ours.iter().map(|r| r.p99_ms).fold(0.0, f64::max)
    }
}

fn mean(runs: &[Run]) -> f64 {
    runs.iter().map(|r| r.per_sec).sum::<f64>() / runs.len().max(1) as f64
}

/// Alternating rounds, reference first, each after a 2-second warm-up.
fn compare(pair: &Pair, script: &Path, args: &Args, report: &mut String) -> anyhow::Result<Compared> {
    let mut compared = Compared { ours: Vec::new(), reference: Vec::new(), warm_up_requests: 0 };
    for round in 1..=args.rounds {
        for (label, url, ours) in [(pair.reference_name, pair.reference, false), ("failsoft", pair.ours, true)] {
            let warm_up = wrk(url, script, pair.connections, 2)?;
            let run = wrk(url, script, pair.connections, args.secs)?;
            writeln!(
                report,
                "{:<8} {:<22} {:>5} {:>12.0} {:>7.2} ms {:>7.2} ms   round {round}",
                pair.name, label, pair.connections, run.per_sec, run.p50_ms, run.p99_ms
            )?;
            if ours {
                compared.warm_up_requests += warm_up.requests;
                compared.ours.push(run);
            } else {
                compared.reference.push(run);
            }
        }
    }
    Ok(compared)
}

/// Runs `wrk` and reads its summary; any answer other than 2xx fails.
fn wrk(url: &str, script: &Path, connections: usize, secs: u64) -> anyhow::Result<Run> {
    let threads = connections.min(2);
    let output = Command::new("wrk")
        .args(["-t", &threads.to_string(), "-c", &connections.to_string(), "-d", &format!("{secs}s")])
        .args(["--latency", "--timeout", "5s", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    ensure!(output.status.success(), "wrk failed: {}{}", text, String::from_utf8_lossy(&output.stderr));
    ensure!(!text.contains("Non-2xx or 3xx responses"), "{url} answered other than 200 under load:\n{text}");
    ensure!(!text.contains("Socket errors"), "{url} dropped or timed out connections under load:\n{text}");
    parse_wrk(&text).with_context(|| format!("reading wrk's summary:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<Run> {
    let requests =
        text.lines().find_map(|l| l.trim().split_once(" requests in ").map(|(n, _)| n.trim().parse().ok()))??;
    let per_sec = text.lines().find_map(|l| l.trim().strip_prefix("Requests/sec:"))?.trim().parse().ok()?;
    let percentile = |p: &str| {
        text.lines().find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(p)).then(|| words.next().and_then(duration_ms)).flatten()
        })
    };
    Some(Run { requests, per_sec, p50_ms: percentile("50%")?, p99_ms: percentile("99%")? })
}

/// wrk's durations: `812.00us`, `1.23ms`, `2.01s`, `1.00m`.
fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        "m" => number * 60_000.0,
        _ => return None,
    })
}

fn wrk_script() -> String {
    format!(
        "-- bench_http: one warmed caller's lookup, as a Data Action sends it.\n\
         wrk.method = \"POST\"\n\
         wrk.body = '{{\"ani\":\"{WARM_ANI}\",\"correlationId\":\"{CORRELATION_ID}\"}}'\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.headers[\"Authorization\"] = \"Bearer {TOKEN}\"\n"
    )
}

fn edge_settings(crm_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("FAILSOFT_CRM_URL", crm_url.to_owned()),
        ("FAILSOFT_CACHE_KEY_SECRET", CACHE_KEY_SECRET.to_owned()),
        ("FAILSOFT_WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
        ("FAILSOFT_AUTH_TOKEN", TOKEN.to_owned()),
        ("FAILSOFT_LOG", "warn".to_owned()),
        // A day (under the default 7-day last-known horizon): no
        // refresh-ahead during the run, a hit is a hit.
        ("FAILSOFT_FRESHNESS_SECS", "86400".to_owned()),
    ]
}

async fn lookup(http: &reqwest::Client, url: &str, ani: &str) -> anyhow::Result<Value> {
    let response =
        http.post(url).bearer_auth(TOKEN).json(&json!({"ani": ani, "correlationId": CORRELATION_ID})).send().await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    ensure!(status == 200, "{url} answered {status}: {body}");
    Ok(body)
}

/// One lookup to fill the cache, then one that must be a hit.
async fn warm(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let first = lookup(http, url, WARM_ANI).await?;
    ensure!(first["found"] == true, "the warmed caller is unknown to the CRM: {first}");
    assert_cached(http, url, WARM_ANI).await
}

async fn assert_cached(http: &reqwest::Client, url: &str, ani: &str) -> anyhow::Result<()> {
    let answer = lookup(http, url, ani).await?;
    ensure!(answer["source"] == "cache" && answer["found"] == true, "{ani} is not answered from the cache: {answer}");
    Ok(())
}

/// The simulator's generated numbers: `+15550000000` onwards.
fn generated_ani(i: usize) -> String {
    format!("+1555{:07}", i)
}

/// Looks up `keys` distinct generated callers, 32 at a time.
async fn fill(http: &reqwest::Client, url: &str, keys: usize) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (http, url, next) = (http.clone(), url.to_owned(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keys {
                    return anyhow::Ok(());
                }
                let answer = lookup(&http, &url, &generated_ani(i)).await?;
                ensure!(answer["found"] == true, "caller {i} is unknown: {answer}");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// Starts both Workers, warms them and compares them.
async fn worker_pair(
    root: &Path,
    work: &Path,
    crm_url: &str,
    http: &reqwest::Client,
    script: &Path,
    args: &Args,
    report: &mut String,
) -> anyhow::Result<Compared> {
    let rust_dir = work.join("rust-worker");
    let _ = std::fs::remove_dir_all(&rust_dir);
    std::fs::create_dir_all(&rust_dir)?;
    let config = rust_dir.join("wrangler.toml");
    std::fs::write(&config, worker_config(root, &[]).context("the built Worker (make worker)")?)?;
    let mut settings = edge_settings(crm_url);
    if let Some(ms) = args.kv_memo_ms {
        settings.push(("FAILSOFT_KV_MEMO_MS", ms.to_string()));
    }
    let rust = start_wrangler(root, &config, &rust_dir, settings)?;

    let js_dir = work.join("js-worker");
    let _ = std::fs::remove_dir_all(&js_dir);
    std::fs::create_dir_all(&js_dir)?;
    let js = start_wrangler(root, &root.join("edge/bench/js-worker/wrangler.toml"), &js_dir, Vec::new())?;

    let rust_url = format!("{}/v1/customer-lookup", rust.url("url"));
    let js_url = format!("{}/v1/customer-lookup", js.url("url"));
    warm(http, &rust_url).await.context("warming the Rust Worker")?;
    warm(http, &js_url).await.context("warming the JS Worker")?;
    let compared = compare(
        &Pair {
            name: "worker",
            ours: &rust_url,
            reference: &js_url,
            reference_name: "minimal JS Worker",
            connections: args.worker_c,
        },
        script,
        args,
        report,
    )?;
    assert_cached(http, &rust_url, WARM_ANI).await.context("after the Worker runs")?;
    Ok(compared)
}

fn start_wrangler(
    root: &Path,
    config: &Path,
    dir: &Path,
    vars: Vec<(&'static str, String)>,
) -> anyhow::Result<Service> {
    let mut dev = wrangler_dev(root, config, 0, &dir.join("state"), &dir.join("logs"), vars)?;
    dev.current_dir(dir).env("NO_PROXY", "127.0.0.1,localhost").env("no_proxy", "127.0.0.1,localhost");
    Ok(Service::launch("wrangler dev", &mut dev, Ready::UrlAfter("Ready on "), Duration::from_secs(90))?)
}

/// User + system CPU time of `pid`, in clock ticks (/proc/PID/stat).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th of the whole line.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).context("reading /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn cores() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}

fn chrono_like_now() -> String {
    let out = Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default()
}
