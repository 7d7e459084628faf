//! `failsoft-lab drill`: the outage drill, the program's main demonstration and
//! its acceptance test (README.md, "See it heal").
//!
//! It starts the whole local stack (or uses one `failsoft-lab up` started),
//! loads customers into the CRM simulator, warms part of the edge's cache,
//! and drives Genesys-like open-loop traffic through four phases: before,
//! outage (the CRM `down` or `hang`), after, then drain until every write
//! is in the CRM's ledger. It reports what Genesys was answered and how
//! fast, what became of every write, and whether the promises held:
//!
//! - no failed interaction (non-200, or slower than the 10 s Data Action timeout);
//! - no warm VIP customer answered with another tier;
//! - no lost write and no duplicated write (each correlationId exactly once
//!   in the ledger);
//! - nothing dead-lettered;
//! - the backlog drained within the limit of the CRM's recovery.
//!
//! Exit status: 0 every promise kept, 1 a promise broken, 2 bad arguments,
//! 3 the drill could not run (the stack did not start, …), 130 interrupted.

mod html;
mod logscan;
mod observe;
mod population;
mod report;
mod trace;
mod traffic;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use crate::local_stack::{CrmContract, EdgeHost, Lifetime, LocalStack, SqsHost, StackEnv, StackSpec};
use crate::switch::Mode as SwitchMode;
use observe::{Aws, Crm, Sampler};
use population::Population;
use report::{Inputs, Machine, Report, Settings, Timeline};
use traffic::{Clock, DATA_ACTION_TIMEOUT, Driver, Edge, Phase, Rates, Shared};

/// Lookups this long after the outage began count as answered with the
/// breaker open: the edge needs its first failures (each up to the 3 s
/// deadline while the CRM hangs) to open it.
pub const BREAKER_SETTLE: Duration = Duration::from_secs(10);
/// The production freshness window; a shorter outage gets a shorter one.
const PRODUCTION_FRESHNESS: Duration = Duration::from_secs(300);
/// Once the writes are in, how long the drain waits for the refreshes
/// still queued before counting them.
const REFRESH_GRACE: Duration = Duration::from_secs(20);
/// Consecutive empty-queue samples after which nothing more can arrive.
const EMPTY_SAMPLES_TO_STOP: u32 = 3;

/// How the CRM fails during the outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutageMode {
    /// Its port closes: connections are refused at once (a restart).
    Down,
    /// Requests are accepted and never answered (a wedged CRM).
    Hang,
    /// Requests are carried out (cases created) and answered too late for
    /// any caller: every write the edge gave up on was made, so the worker
    /// must find it before it creates (a CRM under a long GC pause).
    Late,
}

/// How the CRM comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecoverMode {
    /// Working normally.
    Up,
    /// Refusing every case creation with 422: the queued writes are
    /// dead-lettered, a broken promise the drill must report.
    Reject,
}

/// Whether the CRM simulator honours `Idempotency-Key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyPolicy {
    Honour,
    Ignore,
}

impl KeyPolicy {
    fn as_str(self) -> &'static str {
        match self {
            Self::Honour => "honour",
            Self::Ignore => "ignore",
        }
    }
}

/// `failsoft-lab drill`.
#[derive(Debug, Clone, clap::Args)]
pub struct DrillArgs {
    /// The edge host of the stack the drill starts.
    #[arg(long, value_enum, default_value_t = EdgeHost::Worker)]
    pub edge: EdgeHost,
    /// What serves SQS in the drill's own stack (DynamoDB is moto's).
    #[arg(long, value_enum, default_value_t = SqsHost::Moto)]
    pub sqs: SqsHost,
    /// The calls the CRM simulator offers: `two-call` is a CRM with only
    /// the two required calls (no case search: `Idempotency-Key` alone
    /// keeps writes once); `salesforce` and `zendesk` serve that vendor's
    /// API, spoken through its shipped profile (`deploy/crm/`).
    #[arg(long, value_enum, default_value_t = CrmContract::Full)]
    pub crm_contract: CrmContract,
    /// `ignore`: the CRM simulator creates a case for every request, as a
    /// CRM without idempotency keys does (what write-once then rests on:
    /// docs/design.md, "With the CRM").
    #[arg(long, value_enum, default_value_t = KeyPolicy::Honour)]
    pub crm_idempotency: KeyPolicy,
    /// How the CRM fails: `down` (port closed) or `hang` (never answers).
    #[arg(long, value_enum, default_value_t = OutageMode::Down)]
    pub mode: OutageMode,
    /// How long the CRM stays failed: 8m, 2m, 30s, 1m30s.
    #[arg(long, default_value = "8m", value_parser = parse_duration)]
    pub outage: Duration,
    /// Traffic before the outage [default: a quarter of the outage, 10 s to 60 s].
    #[arg(long, value_parser = parse_duration)]
    pub before: Option<Duration>,
    /// Traffic after the CRM is back [default: as `--before`].
    #[arg(long, value_parser = parse_duration)]
    pub after: Option<Duration>,
    /// Customer lookups started per second.
    #[arg(long, default_value_t = 10.0)]
    pub lookups_per_sec: f64,
    /// Case creations started per second.
    #[arg(long, default_value_t = 2.0)]
    pub cases_per_sec: f64,
    /// Result polls (`GET /v1/results/{id}` of a queued write) per second.
    #[arg(long, default_value_t = 1.0)]
    pub polls_per_sec: f64,
    /// Customers looked up before the traffic, so the edge has their records.
    #[arg(long, default_value_t = 200)]
    pub warm_customers: usize,
    /// Share of lookups for warm customers; the others are numbers the edge
    /// has never been asked about (`--known-share` of them customers of the CRM).
    #[arg(long, default_value_t = 0.7)]
    pub warm_share: f64,
    /// Share of the never-asked numbers that are customers of the CRM (the
    /// pre-warm sync's to cover); the rest the CRM does not know.
    #[arg(long, default_value_t = 0.5)]
    pub known_share: f64,
    /// Skip the pre-warm sync before the traffic (`failsoft sync --once`):
    /// to see what an edge without a last-known store answers.
    #[arg(long)]
    pub no_sync: bool,
    /// The drain promise: the last queued write reaches the CRM within this
    /// long of its recovery.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub drain_limit: Duration,
    /// How long the drill waits for the drain after the traffic stops.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Freshness window of the drill's own stack [default: 300 s for an
    /// outage of 8 minutes or more, else half the outage, so a compressed
    /// drill still outlives it and serves stale records].
    #[arg(long, value_parser = parse_duration)]
    pub freshness: Option<Duration>,
    /// A setting of the drill's own stack (edge, worker and queues), e.g.
    /// `--set FAILSOFT_WORKER_CONCURRENCY=32`; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
    pub settings: Vec<(String, String)>,
    /// Use the stack `failsoft-lab up` started (its stack.env) instead of
    /// starting one; it must run the CRM simulator.
    #[arg(long, value_name = "FILE")]
    pub stack_env: Option<PathBuf>,
    /// Where the reports go (report.html, report.json, requests.jsonl) and,
    /// under stack/, the drill's own stack's logs.
    #[arg(long, default_value = ".local/drill")]
    pub out: PathBuf,
    /// How the CRM comes back: `up`, or `reject` (creates refused) to watch
    /// the drill catch dead-lettered writes.
    #[arg(long, value_enum, default_value_t = RecoverMode::Up)]
    pub recover_mode: RecoverMode,
    /// A rate limit on the CRM simulator, calls per second (one-second
    /// windows, stated in `RateLimit-*` headers; 429 above it): the report
    /// shows the CRM's pace during the drain against it.
    #[arg(long)]
    pub crm_rate_limit: Option<u64>,
    /// Cut the edge's path to SQS (a proxy in front of the queue; the worker
    /// keeps its own) for this long from the start of the CRM outage: the
    /// edge's write outbox must keep every write the CRM does not take.
    /// Needs the drill's own stack.
    #[arg(long, value_parser = parse_duration)]
    pub queue_outage: Option<Duration>,
    /// How the path to SQS fails: `hang` (connections never answered) or
    /// `refuse` (closed at once).
    #[arg(long, value_enum, default_value_t = QueueOutageMode::Hang)]
    pub queue_outage_mode: QueueOutageMode,
    /// When the path to SQS is cut: with the CRM's outage (`outage`), or
    /// from the start of the traffic (`before`), on its own while the CRM
    /// is up and, when longer than `--before`, on into the CRM's outage.
    #[arg(long, value_enum, default_value_t = QueueOutageFrom::Outage)]
    pub queue_outage_from: QueueOutageFrom,
    /// Exit non-zero when a latency or refresh target is missed too.
    #[arg(long)]
    pub enforce_targets: bool,
    /// Seed of the traffic's random choices [default: random].
    #[arg(long)]
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueOutageMode {
    Hang,
    Refuse,
}

/// Where in the drill the edge's path to SQS is cut (`--queue-outage-from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueOutageFrom {
    /// From the start of the traffic, while the CRM is still up.
    Before,
    /// From the start of the CRM's outage.
    Outage,
}

impl QueueOutageMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Hang => "hang",
            Self::Refuse => "refuse",
        }
    }

    fn switch_mode(self) -> SwitchMode {
        match self {
            Self::Hang => SwitchMode::Hang,
            Self::Refuse => SwitchMode::Refuse,
        }
    }
}

/// Parses `FAILSOFT_X=value`.
fn parse_setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if key.starts_with("FAILSOFT_") => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("`{text}`: expected FAILSOFT_NAME=value")),
    }
}

/// Parses `8m`, `30s`, `1m30s`, `1500ms`, `2h`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return (secs >= 0.0 && secs.is_finite())
            .then(|| Duration::from_secs_f64(secs))
            .ok_or("must not be negative".into());
    }
    let mut total = 0.0;
    let mut rest = text;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration (e.g. 8m, 30s, 1m30s)"))?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("`{text}`: unknown unit `{unit}` (use ms, s, m or h)")),
        };
        total += value * scale;
        rest = tail;
    }
    Ok(Duration::from_secs_f64(total))
}

impl DrillArgs {
    fn phase_default(&self) -> Duration {
        (self.outage / 4).clamp(Duration::from_secs(10), Duration::from_secs(60))
    }

    fn before(&self) -> Duration {
        self.before.unwrap_or_else(|| self.phase_default())
    }

    fn after(&self) -> Duration {
        self.after.unwrap_or_else(|| self.before())
    }

    fn freshness(&self) -> Duration {
        self.freshness.unwrap_or_else(|| {
            if self.outage >= Duration::from_secs(480) {
                PRODUCTION_FRESHNESS
            } else {
                (self.outage / 2).clamp(Duration::from_secs(5), PRODUCTION_FRESHNESS)
            }
        })
    }

    fn check(&self) -> anyhow::Result<()> {
        let rate_ok = |r: f64| (0.0..=1000.0).contains(&r) && r.is_finite();
        if !rate_ok(self.lookups_per_sec) || !rate_ok(self.cases_per_sec) || !rate_ok(self.polls_per_sec) {
            bail!("rates must be between 0 and 1000 per second");
        }
        if !(0.0..=1.0).contains(&self.known_share) {
            bail!("--known-share must be between 0 and 1");
        }
        if !(0.0..=1.0).contains(&self.warm_share) {
            bail!("--warm-share must be between 0 and 1");
        }
        if self.warm_customers == 0 || self.warm_customers > 100_000 {
            bail!("--warm-customers must be between 1 and 100000");
        }
        if self.outage.is_zero() {
            bail!("--outage must be longer than zero");
        }
        if let Some(cut) = self.queue_outage {
            if self.stack_env.is_some() {
                bail!(
                    "--queue-outage needs the drill's own stack (its proxy sits between the edge and SQS), not --stack-env"
                );
            }
            let room = match self.queue_outage_from {
                QueueOutageFrom::Before => self.before() + self.outage + self.after(),
                QueueOutageFrom::Outage => self.outage + self.after(),
            };
            if cut.is_zero() || cut > room {
                bail!(
                    "--queue-outage must be longer than zero and end with the traffic (at most {} from {})",
                    report::duration_text(room.as_secs_f64()),
                    match self.queue_outage_from {
                        QueueOutageFrom::Before => "the start of the traffic: --before + --outage + --after",
                        QueueOutageFrom::Outage => "the CRM's outage: --outage + --after",
                    }
                );
            }
        }
        Ok(())
    }
}

/// Runs the drill and turns its verdict into the exit status.
pub async fn main(args: DrillArgs) -> ExitCode {
    if let Err(e) = args.check() {
        eprintln!("failsoft-lab drill: {e}");
        return ExitCode::from(2);
    }
    // The stack's processes stop when the drill's future is dropped (its
    // `LocalStack` goes with it): on an interrupt as on an error.
    let running_admin = args
        .stack_env
        .as_deref()
        .and_then(|p| StackEnv::read(p).ok())
        .and_then(|e| e.get("CRM_ADMIN_URL").map(str::to_owned));
    let outcome = tokio::select! {
        outcome = run(args) => outcome,
        () = failsoft_origin::worker::stop_signal() => {
            eprintln!("\nfailsoft-lab drill: interrupted");
            if let Some(admin) = running_admin {
                // A running stack's CRM must not be left down.
                let crm = Crm { http: http_client(Duration::from_secs(5)), admin };
                let _ = crm.set_mode("up").await;
            }
            return ExitCode::from(130);
        }
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("failsoft-lab drill: {e:#}");
            ExitCode::from(3)
        }
    }
}

fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .pool_max_idle_per_host(256)
        .build()
        .expect("an HTTP client builds")
}

/// Prints a line above the progress bar, or plainly when there is none.
fn say(bar: &ProgressBar, line: &str) {
    if bar.is_hidden() {
        println!("{line}");
    } else {
        bar.println(line);
    }
}

async fn run(args: DrillArgs) -> anyhow::Result<bool> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let freshness = args.freshness();
    let (before, after) = (args.before(), args.after());

    // The stack: our own, or the one `failsoft-lab up` started.
    let (env, _stack, stack_label) = match &args.stack_env {
        Some(path) => {
            let env = StackEnv::read(path)?;
            (env, None, path.display().to_string())
        }
        None => {
            println!(
                "starting the local stack ({} edge, SQS on {}) in {} …",
                args.edge.as_str(),
                args.sqs.as_str(),
                args.out.join("stack").display()
            );
            let started = Instant::now();
            let fresh = freshness.as_secs().max(1);
            let spec = StackSpec {
                edge: args.edge,
                sqs: args.sqs,
                crm_url: None,
                crm_contract: args.crm_contract,
                dir: args.out.join("stack"),
                settings: [
                    ("FAILSOFT_FRESHNESS_SECS".to_owned(), fresh.to_string()),
                    ("FAILSOFT_NOT_FOUND_FRESHNESS_SECS".to_owned(), fresh.min(60).to_string()),
                ]
                .into_iter()
                .chain(args.settings.iter().cloned())
                .collect(),
                lifetime: Lifetime::Owned,
                queue_switch: args.queue_outage.is_some(),
            };
            let stack = LocalStack::start(spec).await?;
            println!("stack up in {:.1} s", started.elapsed().as_secs_f64());
            (stack.env.clone(), Some(stack), "own".to_owned())
        }
    };
    let need =
        |key: &str| env.get(key).map(str::to_owned).with_context(|| format!("the stack's environment has no {key}"));
    let admin = need("CRM_ADMIN_URL").context("the drill needs the CRM simulator (a stack without CRM_URL)")?;
    let edge_url = need("FAILSOFT_EDGE_URL")?;
    let auth = need("FAILSOFT_AUTH_HEADER")?;
    let queue_url = need("FAILSOFT_QUEUE_URL")?;
    let dlq_url = need("FAILSOFT_DLQ_URL")?;
    let endpoint = need("AWS_ENDPOINT_URL")?;
    let results_table = env.get("FAILSOFT_RESULTS_TABLE").unwrap_or("failsoft-results").to_owned();
    let freshness_secs: u64 = env.get("FAILSOFT_FRESHNESS_SECS").and_then(|v| v.parse().ok()).unwrap_or(300);
    let deadline_ms: u64 = env.get("FAILSOFT_CRM_DEADLINE_MS").and_then(|v| v.parse().ok()).unwrap_or(3_000);
    let margin_ms: u64 = env.get("FAILSOFT_DEADLINE_MARGIN_MS").and_then(|v| v.parse().ok()).unwrap_or(1_000);
    let edge_host = env.get("FAILSOFT_EDGE_HOST").unwrap_or(args.edge.as_str()).to_owned();

    let aws = Aws::connect(
        &endpoint,
        env.get("AWS_ENDPOINT_URL_SQS").unwrap_or(&endpoint),
        env.get("AWS_REGION").unwrap_or("us-east-1"),
        env.get("AWS_ACCESS_KEY_ID").unwrap_or("test"),
        env.get("AWS_SECRET_ACCESS_KEY").unwrap_or("test"),
    )
    .await;
    let crm = Crm { http: http_client(Duration::from_secs(20)), admin };
    crm.set_mode("up").await.context("the CRM simulator's admin API")?;
    crm.set_idempotency(args.crm_idempotency.as_str()).await.context("the CRM simulator's idempotency")?;
    crm.set_rate_limit(args.crm_rate_limit).await.context("the CRM simulator's rate limit")?;

    // Callers: warm customers, and enough cold numbers for every cold lookup.
    let seed = args.seed.unwrap_or_else(failsoft_origin::clock::random_u64);
    let run_id = 100 + (seed % 900) as u32;
    let tag = format!("drill{run_id}x{:04x}", (seed >> 16) & 0xffff);
    let traffic_secs = (before + args.outage + after).as_secs_f64();
    let cold = (args.lookups_per_sec * (1.0 - args.warm_share) * traffic_secs * 1.1) as usize + 20;
    let population = Arc::new(Population::new(run_id, args.warm_customers, cold, args.known_share));
    for chunk in population.crm_records(1_000) {
        crm.load(&chunk).await.context("loading customers into the simulator")?;
    }
    // The last-known store, pre-warmed with every customer the CRM knows.
    let synced = if args.no_sync {
        None
    } else {
        // A CRM with only the two calls has no list: its export is the source.
        let export = match args.crm_contract.has_list() {
            false => {
                let path = std::path::absolute(args.out.join("customers.jsonl"))?;
                let lines: Vec<String> = population
                    .crm_records(usize::MAX)
                    .iter()
                    .flat_map(|chunk| chunk.as_array().cloned().unwrap_or_default())
                    .map(|record| record.to_string())
                    .collect();
                std::fs::create_dir_all(&args.out)?;
                std::fs::write(&path, lines.join("\n"))
                    .with_context(|| format!("writing the export {}", path.display()))?;
                Some(path)
            }
            true => None,
        };
        let summary = sync_once(&env, export.as_deref(), args.crm_contract.profile_settings())
            .await
            .context("the pre-warm sync (failsoft sync)")?;
        println!(
            "sync: {} customers into the last-known store in {:.1} s ({} pass)",
            summary.records, summary.seconds, summary.kind
        );
        Some(summary)
    };

    let clock = Clock::start();
    let started_at = report::utc_text(clock.unix0_ms);
    let rates = Rates {
        lookups_per_sec: args.lookups_per_sec,
        cases_per_sec: args.cases_per_sec,
        polls_per_sec: args.polls_per_sec,
        warm_share: args.warm_share,
    };
    let total_rate = rates.lookups_per_sec + rates.cases_per_sec + rates.polls_per_sec;
    // Each request ends within the Data Action timeout, so this many in
    // flight at once means the driver, not the facade, is in trouble.
    let max_in_flight = ((total_rate * DATA_ACTION_TIMEOUT.as_secs_f64() * 2.0) as u32).max(64);
    let shared = Arc::new(Shared::new(max_in_flight));
    let driver = Arc::new(Driver {
        edge: Edge { http: http_client(DATA_ACTION_TIMEOUT), url: edge_url, auth },
        clock,
        population: Arc::clone(&population),
        shared: Arc::clone(&shared),
        tag: tag.clone(),
    });

    let total = before + args.outage + after;
    let bar = ProgressBar::new(total.as_secs().max(1));
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix:8} [{elapsed_precise}] {bar:32.cyan/blue} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    say(
        &bar,
        &format!(
            "drill {tag}: {} edge, CRM {} for {}, {}/s lookups, {}/s cases, {}/s polls; {} warm customers, freshness {} s",
            edge_host,
            mode_name(args.mode),
            report::duration_text(args.outage.as_secs_f64()),
            rates.lookups_per_sec,
            rates.cases_per_sec,
            rates.polls_per_sec,
            args.warm_customers,
            freshness_secs
        ),
    );

    // Warm part of the cache.
    bar.set_prefix("warm-up");
    let warm = driver.warm_up(8).await;
    let warm_failed = warm.iter().filter(|r| r.failed()).count();
    let warm_live = warm.iter().filter(|r| matches!(r.answer.as_deref(), Some("live" | "cache"))).count();
    say(
        &bar,
        &format!("warm-up: {} lookups, {warm_live} answered from the CRM or cache, {warm_failed} failed", warm.len()),
    );
    shared.records.lock().unwrap_or_else(|e| e.into_inner()).extend(warm);

    let dlq_at_start = aws.depth(&dlq_url).await.map(|(v, f)| v + f).unwrap_or(0);
    // The CRM's lookups before the traffic, and (below) when the outage
    // begins: what the steady state cost it.
    let lookups_at_start = crm.lookups().await.ok();
    let sampler = Sampler::new();
    let (stop_sampling, sampling) = watch::channel(false);
    let sampler_task = sampler.start(
        aws.clone(),
        (queue_url.clone(), dlq_url.clone()),
        env.get("FAILSOFT_ORIGIN_URL").map(str::to_owned),
        http_client(Duration::from_secs(3)),
        clock,
        sampling,
    );
    let progress = progress_task(bar.clone(), Arc::clone(&shared), Arc::clone(&sampler.depth_now), clock);

    // The traffic and its phases.
    let (stop_traffic, traffic) = watch::channel(false);
    shared.set_phase(Phase::Before);
    bar.set_prefix("before");
    let traffic_start_ms = clock.now_ms();
    say(&bar, "before: the CRM is up");
    // The edge's path to SQS is cut by a task of its own, which restores
    // it: the cut may outlast a phase.
    let mut queue_cut = None;
    if args.queue_outage_from == QueueOutageFrom::Before {
        queue_cut = cut_queue(&args, _stack.as_ref(), &bar, clock);
    }
    let streams = driver.start(rates, seed, traffic);
    tokio::time::sleep(before).await;

    let lookups_before = match (lookups_at_start, crm.lookups().await.ok()) {
        (Some(start), Some(now)) => Some(now.saturating_sub(start)),
        _ => None,
    };
    let outage_mode = mode_name(args.mode);
    let outage_start_ms = clock.now_ms();
    shared.set_phase(Phase::Outage);
    bar.set_prefix("outage");
    crm.set_mode(outage_mode).await.with_context(|| format!("taking the CRM {outage_mode}"))?;
    if args.queue_outage_from == QueueOutageFrom::Outage {
        queue_cut = cut_queue(&args, _stack.as_ref(), &bar, clock);
    }
    let how = match args.mode {
        OutageMode::Down => "is down (its port closed)",
        OutageMode::Hang => "hangs (takes requests, never answers)",
        OutageMode::Late => "answers late (carries requests out, answers after every deadline)",
    };
    say(&bar, &format!("outage: the CRM {how} for {}", report::duration_text(args.outage.as_secs_f64())));
    tokio::time::sleep(
        args.outage.saturating_sub(Duration::from_secs_f64((clock.now_ms() - outage_start_ms) / 1000.0)),
    )
    .await;

    let recover = match args.recover_mode {
        RecoverMode::Up => "up",
        RecoverMode::Reject => "reject",
    };
    crm.set_mode(recover).await.context("bringing the CRM back")?;
    let recovery_ms = clock.now_ms();
    let calls_at_recovery = crm.calls().await.ok();
    shared.set_phase(Phase::After);
    bar.set_prefix("after");
    say(&bar, &format!("after: the CRM is back ({recover})"));
    tokio::time::sleep(after).await;

    stop_traffic.send_replace(true);
    for stream in streams {
        let _ = stream.await;
    }
    let queue_outage = match queue_cut {
        Some((start_ms, back)) => Some(report::QueueOutageSpan {
            mode: args.queue_outage_mode.as_str(),
            start_ms,
            back_ms: back.await.unwrap_or(f64::NAN),
        }),
        None => None,
    };
    let traffic_end_ms = clock.now_ms();
    shared.set_phase(Phase::Drain);
    bar.set_prefix("drain");
    bar.set_position(bar.length().unwrap_or(0));
    say(&bar, "drain: traffic stopped; waiting for every write to reach the CRM");
    let settled = shared.settle(DATA_ACTION_TIMEOUT + Duration::from_secs(2)).await;
    if !settled {
        say(&bar, "drain: some requests were still in flight after the Data Action timeout");
    }

    // Drain: until every write is in the ledger (and the refreshes are
    // through), nothing is left in the queue, or the limit passes.
    let case_ids: Vec<String> = shared
        .records
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|r| r.kind == traffic::Kind::Case)
        .map(|r| r.correlation_id.clone())
        .collect();
    let drain_deadline = Instant::now() + args.drain_timeout;
    let mut writes_in_at: Option<Instant> = None;
    let mut empty_samples = 0;
    let mut ledger = Vec::new();
    let drain_complete = loop {
        ledger = crm.ledger().await.unwrap_or(ledger);
        let delivered: std::collections::HashSet<&str> =
            ledger.iter().filter_map(|c| c.correlation_id.as_deref()).collect();
        let missing = case_ids.iter().filter(|id| !delivered.contains(id.as_str())).count();
        let depth = sampler.depth_now.load(Ordering::Relaxed);
        empty_samples = if depth == 0 { empty_samples + 1 } else { 0 };
        bar.set_message(format!("writes not yet in the CRM {missing} · queue {depth}"));
        if missing == 0 {
            let since = *writes_in_at.get_or_insert_with(Instant::now);
            if depth == 0 || since.elapsed() >= REFRESH_GRACE {
                break true;
            }
        }
        if empty_samples >= EMPTY_SAMPLES_TO_STOP && missing > 0 {
            // Nothing left to deliver: the missing writes are not coming.
            break false;
        }
        if Instant::now() >= drain_deadline {
            break missing == 0;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let drain_end_ms = clock.now_ms();
    let calls_at_end = crm.calls().await.ok();
    stop_sampling.send_replace(true);
    let _ = sampler_task.await;
    progress.abort();
    bar.finish_and_clear();

    let dlq_at_end = aws.depth(&dlq_url).await.map(|(v, f)| v + f).unwrap_or(0);
    let depth_at_end = aws.depth(&queue_url).await.map(|(v, f)| v + f).unwrap_or(0);
    let refreshes = aws.refreshes(&results_table, &tag).await.unwrap_or_else(|e| {
        eprintln!("failsoft-lab drill: counting refreshes: {e:#}");
        Vec::new()
    });
    let mut records = shared.take_records();
    records.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
    let numbers = logscan::Numbers::new(population.customers.iter().map(|c| c.phone.as_str()));
    let mut log_scan = scan_logs(&args, &numbers);
    if let Some(scan) = log_scan.as_mut() {
        let last_known_table = env.get("FAILSOFT_LAST_KNOWN_TABLE").unwrap_or("failsoft-last-known");
        scan_stored(&aws, scan, &numbers, [results_table.as_str(), last_known_table], &dlq_url).await;
    }
    let traced = match crm.correlations().await {
        Ok(calls) => Some(trace::trace(&records, refreshes.iter().map(|r| r.correlation_id.as_str()), &calls)),
        Err(e) => {
            eprintln!("failsoft-lab drill: tracing correlationIds: {e:#}");
            None
        }
    };

    let settings = Settings {
        edge: edge_host,
        mode: outage_mode.to_owned(),
        recover_mode: recover.to_owned(),
        outage_secs: args.outage.as_secs_f64(),
        before_secs: before.as_secs_f64(),
        after_secs: after.as_secs_f64(),
        rates,
        warm_customers: args.warm_customers,
        cold_numbers: cold,
        drain_limit_secs: args.drain_limit.as_secs_f64(),
        drain_timeout_secs: args.drain_timeout.as_secs_f64(),
        freshness_secs,
        crm_deadline_ms: deadline_ms,
        deadline_margin_ms: margin_ms,
        breaker_settle_secs: BREAKER_SETTLE.as_secs_f64(),
        stack: stack_label,
        seed,
        enforce_targets: args.enforce_targets,
        started_at,
        machine: Machine::this(),
    };
    let timeline = Timeline {
        traffic_start_ms,
        outage_start_ms,
        recovery_ms,
        traffic_end_ms,
        drain_end_ms,
        drain_complete,
        queue_outage,
    };
    let report = Report::compute(Inputs {
        settings,
        timeline,
        clock,
        records: &records,
        samples: sampler.take(),
        ledger: &ledger,
        refreshes: &refreshes,
        population: &population,
        tag: &tag,
        dlq_at_start,
        dlq_at_end,
        depth_at_end,
        skipped: shared.skipped.load(Ordering::Relaxed),
        log_scan,
        traced,
        synced,
        crm_lookups_before: lookups_before,
        drain_pace: match (calls_at_recovery, calls_at_end) {
            (Some(start), Some(end)) => {
                Some(report::DrainPace::between(args.crm_rate_limit, start, end, (drain_end_ms - recovery_ms) / 1000.0))
            }
            _ => None,
        },
    });
    let summary = report.summary();
    write_reports(&args.out, &report, &records, &summary)?;
    println!("\n{summary}");
    println!("report: {} (also report.json, requests.jsonl)", args.out.join("report.html").display());
    Ok(report.kept)
}

/// Cuts the edge's path to SQS (`--queue-outage`) through the stack's
/// proxy, and spawns the task that restores it: when it was cut, and the
/// task that answers when it came back.
fn cut_queue(
    args: &DrillArgs,
    stack: Option<&LocalStack>,
    bar: &ProgressBar,
    clock: Clock,
) -> Option<(f64, tokio::task::JoinHandle<f64>)> {
    let (cut, switch) = (args.queue_outage?, stack?.queue_switch.as_ref()?);
    let control = switch.control();
    control.set(args.queue_outage_mode.switch_mode());
    let start_ms = clock.now_ms();
    say(
        bar,
        &format!(
            "{}: the edge's path to SQS {} for {}",
            match args.queue_outage_from {
                QueueOutageFrom::Before => "before",
                QueueOutageFrom::Outage => "outage",
            },
            match args.queue_outage_mode {
                QueueOutageMode::Hang => "hangs",
                QueueOutageMode::Refuse => "is refused",
            },
            report::duration_text(cut.as_secs_f64())
        ),
    );
    let back = tokio::spawn(async move {
        tokio::time::sleep(cut).await;
        control.set(SwitchMode::Forward);
        clock.now_ms()
    });
    Some((start_ms, back))
}

/// Runs one pass of `failsoft sync --once` against the stack (or
/// `--from-file` of `export`, for a CRM without the list), as its worker
/// (the worker's role and settings); tried again while the worker's own
/// scheduled pass holds the lease.
async fn sync_once(
    env: &crate::local_stack::StackEnv,
    export: Option<&Path>,
    profile: Vec<(String, String)>,
) -> anyhow::Result<report::Synced> {
    let program = crate::local_stack::program("failsoft")?;
    let vars: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", env.get("AWS_ENDPOINT_URL")),
        ("AWS_REGION", env.get("AWS_REGION")),
        ("AWS_ACCESS_KEY_ID", env.get("FAILSOFT_WORKER_AWS_ACCESS_KEY_ID")),
        ("AWS_SECRET_ACCESS_KEY", env.get("FAILSOFT_WORKER_AWS_SECRET_ACCESS_KEY")),
        ("AWS_EC2_METADATA_DISABLED", Some("true")),
        ("FAILSOFT_CRM_URL", env.get("CRM_URL")),
        ("FAILSOFT_EDGE_URL", env.get("FAILSOFT_EDGE_URL")),
        ("FAILSOFT_INTERNAL_SECRET", env.get("FAILSOFT_INTERNAL_SECRET")),
        ("FAILSOFT_CACHE_KEY_SECRET", env.get("FAILSOFT_CACHE_KEY_SECRET")),
        ("FAILSOFT_RESULTS_TABLE", env.get("FAILSOFT_RESULTS_TABLE")),
        ("FAILSOFT_LAST_KNOWN_TABLE", env.get("FAILSOFT_LAST_KNOWN_TABLE")),
        ("FAILSOFT_LOG", Some("warn")),
    ]
    .into_iter()
    .map(|(k, v)| {
        v.map(|v| (k.to_owned(), v.to_owned())).with_context(|| format!("the stack's environment has no {k}"))
    })
    .collect::<anyhow::Result<Vec<_>>>()?;
    // The CRM's profile and its credentials: the sync reads its list.
    let vars: Vec<(String, String)> = vars.into_iter().chain(profile).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut command = crate::local_stack::clean_command(&program);
        match export {
            Some(path) => command.arg("sync").arg("--from-file").arg(path),
            None => command.args(["sync", "--once"]),
        };
        command.envs(vars.iter().cloned());
        let out = tokio::task::spawn_blocking(move || command.output()).await??;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            return serde_json::from_slice(&out.stdout).context("the sync's report");
        }
        if !stderr.contains("another worker holds the sync lease") || Instant::now() >= deadline {
            bail!("failsoft sync --once failed: {}", stderr.trim());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The stack's logs, scanned for the population's phone numbers: the own
/// stack's `stack/logs`, or the `logs/` beside a `failsoft-lab up` stack's
/// stack.env. `None` when there are none to read.
fn scan_logs(args: &DrillArgs, numbers: &logscan::Numbers) -> Option<logscan::LogScan> {
    let dir = match &args.stack_env {
        Some(env) => env.parent().unwrap_or(Path::new(".")).join("logs"),
        None => args.out.join("stack").join("logs"),
    };
    match logscan::scan(&dir, numbers) {
        Ok(scan) => Some(scan),
        Err(e) => {
            eprintln!("failsoft-lab drill: the stack's logs in {} were not scanned: {e}", dir.display());
            None
        }
    }
}

/// Adds to `scan` what the stack stores: every item of `tables` and every
/// dead letter (read and handed back), scanned for the population's
/// numbers. What cannot be read is left uncounted (`None`) and said.
async fn scan_stored(
    aws: &Aws,
    scan: &mut logscan::LogScan,
    numbers: &logscan::Numbers,
    tables: [&str; 2],
    dlq_url: &str,
) {
    let mut items = Some(0);
    for table in tables {
        match aws.item_texts(table).await {
            Ok(texts) => {
                let read = scan.add_stored(&format!("dynamodb {table}"), &texts, numbers);
                items = items.map(|n| n + read);
            }
            Err(e) => {
                eprintln!("failsoft-lab drill: the table {table} was not scanned: {e:#}");
                items = None;
            }
        }
    }
    scan.items = items;
    scan.dead_letters = match aws.peek_bodies(dlq_url).await {
        Ok(bodies) => Some(scan.add_stored("dead-letter queue", &bodies, numbers)),
        Err(e) => {
            eprintln!("failsoft-lab drill: the dead letters were not scanned: {e:#}");
            None
        }
    };
}

fn mode_name(mode: OutageMode) -> &'static str {
    match mode {
        OutageMode::Down => "down",
        OutageMode::Hang => "hang",
        OutageMode::Late => "late",
    }
}

fn write_reports(out: &Path, report: &Report, records: &[traffic::Record], summary: &str) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(out.join("report.json"), json).context("writing report.json")?;
    let mut lines = String::with_capacity(records.len() * 200);
    for r in records {
        lines.push_str(&serde_json::to_string(r)?);
        lines.push('\n');
    }
    std::fs::write(out.join("requests.jsonl"), lines).context("writing requests.jsonl")?;
    std::fs::write(out.join("report.html"), html::render(report, records, summary)).context("writing report.html")?;
    Ok(())
}

/// Refreshes the progress bar four times a second; without a terminal,
/// prints a status line every ten seconds instead.
fn progress_task(
    bar: ProgressBar,
    shared: Arc<Shared>,
    depth: Arc<std::sync::atomic::AtomicU64>,
    clock: Clock,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut n = 0u64;
        loop {
            tick.tick().await;
            n += 1;
            let phase = shared.phase();
            let msg = format!(
                "requests {} · failed {} · queue {}",
                shared.started.load(Ordering::Relaxed),
                shared.failed.load(Ordering::Relaxed),
                depth.load(Ordering::Relaxed)
            );
            if phase != Phase::Drain {
                bar.set_position((clock.now_ms() / 1000.0) as u64);
                bar.set_message(msg.clone());
            }
            if bar.is_hidden() && n.is_multiple_of(40) {
                println!("[{:>6.0} s] {:<7} {msg}", clock.now_ms() / 1000.0, phase.as_str());
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("8m"), Ok(Duration::from_secs(480)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("8 minutes").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-3").is_err());
    }

    #[test]
    fn phases_and_freshness_scale_with_the_outage() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            drill: DrillArgs,
        }
        let args = |line: &str| Cli::parse_from(std::iter::once("drill").chain(line.split_whitespace())).drill;
        let full = args("");
        assert_eq!(
            (full.outage, full.before(), full.after()),
            (Duration::from_secs(480), Duration::from_secs(60), Duration::from_secs(60))
        );
        assert_eq!(full.freshness(), PRODUCTION_FRESHNESS);
        let demo = args("--outage 2m");
        assert_eq!((demo.before(), demo.freshness()), (Duration::from_secs(30), Duration::from_secs(60)));
        let ci = args("--outage 30s --after 5s");
        assert_eq!(
            (ci.before(), ci.after(), ci.freshness()),
            (Duration::from_secs(10), Duration::from_secs(5), Duration::from_secs(15))
        );
    }

    #[test]
    fn a_queue_outage_must_end_with_the_traffic_from_where_it_starts() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            drill: DrillArgs,
        }
        let check = |line: &str| {
            Cli::parse_from(std::iter::once("drill").chain(line.split_whitespace()))
                .drill
                .check()
                .map_err(|e| e.to_string())
        };
        // 10 s before, 30 s of outage, 10 s after.
        let base = "--outage 30s --before 10s --after 10s";
        assert!(check(&format!("{base} --queue-outage 40s")).is_ok());
        let past = check(&format!("{base} --queue-outage 41s")).expect_err("past the traffic");
        assert!(past.contains("--outage + --after"), "{past}");
        assert!(check(&format!("{base} --queue-outage 50s --queue-outage-from before")).is_ok());
        let past = check(&format!("{base} --queue-outage 51s --queue-outage-from before")).expect_err("past it");
        assert!(past.contains("--before + --outage + --after"), "{past}");
        assert!(check(&format!("{base} --queue-outage 0s")).is_err());
    }
}
