//! The pre-warm sync: copies every customer the CRM knows into the
//! last-known store (the DynamoDB last-known table and every edge's KV), so
//! that a lookup during an outage finds a `stale_cache` record even for a
//! caller this edge was never asked about.
//!
//! A pass reads the CRM's paged list (`GET /customers` without `phone`):
//! all of it the first time (full), then only what changed since the last
//! pass began (delta, `updatedSince`), every `FAILSOFT_SYNC_INTERVAL_SECS`.
//! Each record is stamped with when its page was read, and an edge keeps
//! whichever of two records of a key was read later, so a sync never undoes
//! a newer live lookup. Where a pass stands (its cursor) and when the last
//! ones ended live in DynamoDB ([`state`]), under a lease, so a restarted
//! worker resumes and two workers never sync at once.
//!
//! It is a polite client: pages are paced under `FAILSOFT_SYNC_RATE`, the
//! worker's breaker hears every answer and the sync waits while it is open,
//! and while the next page is fetched the current one is written (so the
//! CRM and the stores work at the same time, and memory holds two pages).
//!
//! `failsoft sync --once` runs one pass by hand with a progress bar;
//! `failsoft sync --from-file` reads a JSON Lines export instead of the CRM.

pub mod command;
pub mod settings;
pub mod sink;
pub mod source;
pub mod state;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use failsoft_shared::breaker::Mode;
use failsoft_shared::cache::CacheEntry;
use failsoft_shared::health::Level;
use failsoft_shared::keys::entity_key;
use failsoft_shared::sync::{self as policy, Synced};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;

pub use self::settings::SyncSettings;
use self::sink::{Applied, Change, Sink, SinkError};
use self::source::{Batch, CrmList, FileSource, PageError};
pub use self::state::Kind;
use self::state::{Run, StateStore};
use crate::clock::{self, UtcTime};
use crate::config::Secret;
use crate::deliver::delivery::Delivery;
use crate::store::results::StoreError;

/// Tries of one page before a pass without a breaker gives up.
const PAGE_TRIES: u32 = 5;
/// Tries of a page that is not the list's shape before the pass stops.
const BAD_PAGE_TRIES: u32 = 3;
/// Longest wait between tries of a page.
const MAX_PAGE_BACKOFF: Duration = Duration::from_secs(30);
/// Problems a report lists by place (the rest are only counted).
const MAX_PROBLEMS: usize = 20;
/// While the breaker is open, how often the sync looks again.
const BREAKER_POLL: Duration = Duration::from_millis(500);

/// Why a pass stopped before its end. The cursor of the last written page
/// is kept, so the next pass goes on from there.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("another worker holds the sync lease")]
    Busy,
    #[error("the sync lease was lost to another worker")]
    LeaseLost,
    #[error("page {page}: {error}")]
    Source { page: u64, error: PageError },
    #[error("page {page}: the CRM's cursor repeats an earlier one; the pass starts over next time")]
    CursorLoop { page: u64 },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    State(#[from] StoreError),
    #[error("reading the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("stopped")]
    Stopped,
}

/// What a pass did, counted; problems by place, never by number.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub kind: &'static str,
    /// Whether it went on from a pass an earlier run left unfinished.
    pub resumed: bool,
    pub pages: u64,
    /// Records read (stored, removed and skipped).
    pub records: u64,
    pub stored: u64,
    pub removed: u64,
    /// Skipped records by reason (`MISSING_PHONE`, `UNREADABLE`, …).
    pub skipped: BTreeMap<&'static str, u64>,
    /// The first skipped records' places (`page 3, record 7`, `line 12`).
    pub problems: Vec<String>,
    /// What the edges did (summed over every edge): a record older than the
    /// one an edge holds is kept out.
    pub edge_stored: u64,
    pub edge_removed: u64,
    pub edge_kept: u64,
    pub seconds: f64,
}

impl Report {
    fn skip(&mut self, code: &'static str, place: String) {
        let problem = format!("{place}: {code}");
        tracing::warn!(problem = problem.as_str(), "sync skipped a record");
        *self.skipped.entry(code).or_default() += 1;
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(problem);
        }
        metrics::counter!("failsoft_sync_records_total", "outcome" => "skipped").increment(1);
    }

    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }
}

/// Where a batch's records came from, to say where a skipped one was.
#[derive(Debug, Clone, Copy)]
enum Place {
    /// A page of the list; records by index.
    Page(u64),
    /// A file; records by line number.
    Lines,
}

impl Place {
    fn of(self, at: u64) -> String {
        match self {
            Self::Page(page) => format!("page {page}, record {at}"),
            Self::Lines => format!("line {at}"),
        }
    }
}

/// How a pass is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassMode {
    /// The worker's schedule: a pass when one is due (a full one first).
    Scheduled,
    /// By hand: now, delta if a full pass ever ended (full when `full`).
    Once { full: bool },
}

/// What came of asking for a pass.
#[derive(Debug)]
pub enum Outcome {
    Done(Report),
    /// Not due yet: the next one is due in this long.
    NotDue(Duration),
}

/// Progress shown while a pass runs (`failsoft sync --once`).
pub trait Progress: Send + Sync {
    /// A pass over the CRM begins; `expected` records, when an earlier
    /// full pass says how many there were.
    fn begin(&self, expected: Option<u64>);
    /// `records` more were read; `bytes` of the source so far, when known.
    fn advance(&self, records: u64, bytes: Option<u64>);
}

impl Progress for indicatif::ProgressBar {
    fn begin(&self, expected: Option<u64>) {
        if let Some(expected) = expected {
            self.set_length(expected);
            self.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {human_pos}/{human_len} records  {per_sec}  ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
        }
    }

    fn advance(&self, records: u64, bytes: Option<u64>) {
        match bytes {
            Some(bytes) => self.set_position(bytes),
            None => self.inc(records),
        }
    }
}

/// No progress shown (the worker's passes: metrics and logs say it).
pub struct Quiet;
impl Progress for Quiet {
    fn begin(&self, _: Option<u64>) {}
    fn advance(&self, _: u64, _: Option<u64>) {}
}

/// Spaces the list's pages under the rate.
struct Pacer {
    every: Duration,
    next: tokio::time::Instant,
}

impl Pacer {
    fn new(rate: u32) -> Self {
        Self { every: Duration::from_secs(1) / rate.max(1), next: tokio::time::Instant::now() }
    }

    async fn wait(&mut self) {
        tokio::time::sleep_until(self.next).await;
        self.next = self.next.max(tokio::time::Instant::now()) + self.every;
    }
}

/// Runs passes.
pub struct Syncer {
    settings: SyncSettings,
    key_secret: Secret,
    default_tier: String,
    sink: Sink,
    state: StateStore,
    /// The worker's delivery: its breaker hears the CRM's answers, and the
    /// sync waits while it is open. `None` by hand.
    breaker: Option<Arc<Delivery>>,
}

impl Syncer {
    pub fn new(
        settings: SyncSettings,
        key_secret: Secret,
        default_tier: String,
        sink: Sink,
        state: StateStore,
    ) -> Self {
        Self { settings, key_secret, default_tier, sink, state, breaker: None }
    }

    fn lease_ms(&self) -> u64 {
        self.settings.lease.as_millis() as u64
    }

    /// Shares the worker's breaker.
    pub fn with_breaker(mut self, delivery: Arc<Delivery>) -> Self {
        self.breaker = Some(delivery);
        self
    }

    /// One pass over the CRM's list, when due (or asked for by hand).
    pub async fn pass(
        &self,
        crm: &CrmList,
        mode: PassMode,
        progress: &dyn Progress,
        stop: &watch::Receiver<bool>,
    ) -> Result<Outcome, SyncError> {
        let now = clock::now_ms();
        let Some(state) = self.state.claim(now, now + self.lease_ms()).await? else {
            return Err(SyncError::Busy);
        };
        publish_state(&state);
        let force_full = mode == (PassMode::Once { full: true });
        let (mut run, resumed) = match state.run.clone() {
            Some(run) if !force_full || run.kind == Kind::Full => (run, true),
            _ => match (force_full, state.last_full_ms, state.high_water_ms) {
                (false, Some(_), Some(high_water)) => {
                    if mode == PassMode::Scheduled {
                        let due = state.last_success_ms().unwrap_or(0) + self.settings.interval.as_millis() as u64;
                        if now < due {
                            self.state.release().await;
                            return Ok(Outcome::NotDue(Duration::from_millis(due - now)));
                        }
                    }
                    (
                        Run {
                            kind: Kind::Delta,
                            since_ms: Some(high_water),
                            started_ms: now,
                            cursor: None,
                            records: 0,
                        },
                        false,
                    )
                }
                _ => (Run { kind: Kind::Full, since_ms: None, started_ms: now, cursor: None, records: 0 }, false),
            },
        };
        let started = std::time::Instant::now();
        let mut report = Report { kind: run.kind.as_str(), resumed, ..Report::default() };
        progress.begin(state.last_full_records.filter(|_| run.kind == Kind::Full));
        progress.advance(run.records, None);
        tracing::info!(kind = run.kind.as_str(), resumed, records_so_far = run.records, "sync pass started");
        set_running(true);
        let result = self.crm_pass(crm, &mut run, &mut report, progress, stop).await;
        set_running(false);
        report.seconds = started.elapsed().as_secs_f64();
        let kind = run.kind.as_str();
        match result {
            Ok(()) => {
                let finished = clock::now_ms();
                let high_water = run.started_ms.saturating_sub(self.settings.overlap.as_millis() as u64);
                if !self.state.finish(&run, finished, high_water).await? {
                    return Err(SyncError::LeaseLost);
                }
                metrics::counter!("failsoft_sync_passes_total", "kind" => kind, "outcome" => "done").increment(1);
                metrics::gauge!("failsoft_sync_last_success_timestamp_seconds", "kind" => kind)
                    .set(finished as f64 / 1000.0);
                record_success(run.kind, finished, None);
                tracing::info!(
                    kind,
                    records = report.records,
                    stored = report.stored,
                    removed = report.removed,
                    skipped = report.skipped_total(),
                    seconds = report.seconds,
                    "sync pass done"
                );
                Ok(Outcome::Done(report))
            }
            Err(e) => {
                metrics::counter!("failsoft_sync_passes_total", "kind" => kind, "outcome" => "failed").increment(1);
                record_failure(&e);
                if !matches!(e, SyncError::LeaseLost) {
                    self.state.release().await;
                }
                Err(e)
            }
        }
    }

    async fn crm_pass(
        &self,
        crm: &CrmList,
        run: &mut Run,
        report: &mut Report,
        progress: &dyn Progress,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), SyncError> {
        let since = run.since_ms;
        let mut seen_cursors: HashSet<String> = run.cursor.iter().cloned().collect();
        let mut pacer = Pacer::new(self.settings.rate);
        let mut page = 1;
        let mut fetched = self.fetch(crm, since, run.cursor.as_deref(), &mut pacer, stop, page).await?;
        loop {
            let (batch, read_at_ms) = fetched;
            let mut next_cursor = batch.next_cursor.clone();
            // A cursor seen before would go round for ever: this page is
            // written, and the pass ends there (the next starts it over).
            let looped = next_cursor.as_ref().is_some_and(|cursor| !seen_cursors.insert(cursor.clone()));
            if looped {
                next_cursor = None;
            }
            let read = (batch.customers.len() + batch.unreadable.len()) as u64;
            let write = self.apply(batch, read_at_ms, report, Place::Page(page));
            let prefetch = async {
                match next_cursor.as_deref() {
                    Some(cursor) => Some(self.fetch(crm, since, Some(cursor), &mut pacer, stop, page + 1).await),
                    None => None,
                }
            };
            let (written, next) = tokio::join!(write, prefetch);
            written?;
            report.pages += 1;
            run.records += read;
            progress.advance(read, None);
            run.cursor = next_cursor;
            if (run.cursor.is_some() || looped) && !self.state.progress(run, clock::now_ms() + self.lease_ms()).await? {
                return Err(SyncError::LeaseLost);
            }
            if looped {
                return Err(SyncError::CursorLoop { page });
            }
            match next {
                None => return Ok(()),
                Some(next) => fetched = next?,
            }
            page += 1;
        }
    }

    /// One page, paced; tried again while the CRM cannot answer (with a
    /// breaker, for as long as it stays open; by hand, a few times).
    async fn fetch(
        &self,
        crm: &CrmList,
        since: Option<u64>,
        cursor: Option<&str>,
        pacer: &mut Pacer,
        stop: &watch::Receiver<bool>,
        page: u64,
    ) -> Result<(Batch, u64), SyncError> {
        let mut tries = 0u32;
        let mut bad = 0u32;
        loop {
            self.wait_for_breaker(stop).await?;
            pacer.wait().await;
            let read_at_ms = clock::now_ms();
            let (outcome, reply) = crm.page(since, cursor).await;
            if let Some(delivery) = &self.breaker {
                delivery.observe(&reply);
            }
            let error = match outcome {
                Ok(batch) => {
                    metrics::counter!("failsoft_sync_pages_total", "outcome" => "ok").increment(1);
                    return Ok((batch, read_at_ms));
                }
                Err(error @ PageError::Unavailable(_)) => {
                    tries += 1;
                    if self.breaker.is_none() && tries >= PAGE_TRIES {
                        return Err(SyncError::Source { page, error });
                    }
                    error
                }
                Err(error @ PageError::NotAList(_)) => {
                    bad += 1;
                    metrics::counter!("failsoft_sync_pages_total", "outcome" => "bad").increment(1);
                    if bad >= BAD_PAGE_TRIES {
                        return Err(SyncError::Source { page, error });
                    }
                    error
                }
                Err(error) => return Err(SyncError::Source { page, error }),
            };
            metrics::counter!("failsoft_sync_pages_total", "outcome" => "retried").increment(1);
            let backoff = Duration::from_secs(1 << (tries + bad).min(5)).min(MAX_PAGE_BACKOFF);
            tracing::warn!(page, error = %error, retry_in_ms = backoff.as_millis() as u64, "sync page failed");
            sleep_or_stop(backoff, stop).await?;
        }
    }

    /// Waits while the worker's breaker is open (the CRM is down).
    async fn wait_for_breaker(&self, stop: &watch::Receiver<bool>) -> Result<(), SyncError> {
        let Some(delivery) = &self.breaker else { return Ok(()) };
        let mut logged = false;
        // Half-open too: then the probe alone may call the CRM, and a page
        // sent beside it would be a second call to a CRM not yet known back.
        while !matches!(delivery.breaker_mode(), Mode::Closed) {
            if !logged {
                tracing::info!("sync paused: the worker's breaker is open");
                logged = true;
            }
            sleep_or_stop(BREAKER_POLL, stop).await?;
        }
        if logged {
            tracing::info!("sync resumed: the breaker let calls through again");
        }
        Ok(())
    }

    /// Checks a batch's records, keys them, and writes them everywhere.
    async fn apply(&self, batch: Batch, read_at_ms: u64, report: &mut Report, place: Place) -> Result<(), SyncError> {
        report.records += (batch.customers.len() + batch.unreadable.len()) as u64;
        let mut changes = Vec::with_capacity(batch.customers.len());
        let (mut stored, mut removed) = (0u64, 0u64);
        for (at, listed) in batch.customers {
            match policy::check(listed, &self.default_tier) {
                Ok(Synced::Store { phone, record }) => {
                    stored += 1;
                    let entry = CacheEntry { record, fetched_at_ms: read_at_ms };
                    changes.push((entity_key(self.key_secret.expose(), &phone), Change::Store(entry)));
                }
                Ok(Synced::Remove { phone }) => {
                    removed += 1;
                    changes.push((entity_key(self.key_secret.expose(), &phone), Change::Remove(read_at_ms)));
                }
                Err(skipped) => report.skip(skipped.code(), place.of(at)),
            }
        }
        for at in batch.unreadable {
            report.skip("UNREADABLE", place.of(at));
        }
        let applied: Applied = self.sink.write(changes).await?;
        report.stored += stored;
        report.removed += removed;
        report.edge_stored += applied.stored;
        report.edge_removed += applied.removed;
        report.edge_kept += applied.kept;
        metrics::counter!("failsoft_sync_records_total", "outcome" => "stored").increment(stored);
        metrics::counter!("failsoft_sync_records_total", "outcome" => "removed").increment(removed);
        Ok(())
    }

    /// One pass over a JSON Lines export: every record stamped `as_of_ms`
    /// (when the export was taken). No lease or cursor: a file is read whole.
    pub async fn file_pass(
        &self,
        path: &std::path::Path,
        as_of_ms: u64,
        progress: &dyn Progress,
    ) -> Result<Report, SyncError> {
        let started = std::time::Instant::now();
        let mut report = Report { kind: "file", ..Report::default() };
        let mut file = FileSource::open(path, self.settings.page_size as usize).await?;
        while let Some(batch) = file.next().await? {
            let read = (batch.customers.len() + batch.unreadable.len()) as u64;
            let bytes = batch.bytes_read;
            self.apply(batch, as_of_ms, &mut report, Place::Lines).await?;
            report.pages += 1;
            progress.advance(read, Some(bytes));
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// The worker's schedule: a pass whenever one is due, until `stop`.
    pub async fn serve(self: Arc<Self>, crm: CrmList, mut stop: watch::Receiver<bool>) {
        scheduled(self.settings.interval);
        loop {
            let wait = match self.pass(&crm, PassMode::Scheduled, &Quiet, &stop).await {
                Ok(Outcome::Done(_)) => Duration::ZERO,
                Ok(Outcome::NotDue(wait)) => wait,
                Err(SyncError::Stopped) => return,
                Err(SyncError::Busy) => self.settings.lease / 2,
                Err(e) => {
                    tracing::warn!(error = %e, "sync pass failed; it resumes from its last page later");
                    Duration::from_secs(60).min(self.settings.interval)
                }
            };
            // Looked at again at least every minute: a pass another worker
            // finished moves the next one out.
            let wait = wait.min(Duration::from_secs(60)).max(Duration::from_millis(100));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = until_stopped(&mut stop) => return,
            }
        }
    }
}

async fn sleep_or_stop(wait: Duration, stop: &watch::Receiver<bool>) -> Result<(), SyncError> {
    let mut stop = stop.clone();
    tokio::select! {
        () = tokio::time::sleep(wait) => Ok(()),
        () = until_stopped(&mut stop) => Err(SyncError::Stopped),
    }
}

/// Resolves once `stop` says so (never, should its sender go).
async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

// ── status, for /v1/health and /metrics ─────────────────────────────────

#[derive(Debug, Clone, Default)]
struct Status {
    interval_ms: u64,
    since_ms: u64,
    last_full_ms: Option<u64>,
    last_delta_ms: Option<u64>,
    running: bool,
    fault: Option<String>,
}

static STATUS: Mutex<Option<Status>> = Mutex::new(None);

fn status() -> std::sync::MutexGuard<'static, Option<Status>> {
    STATUS.lock().unwrap_or_else(|e| e.into_inner())
}

fn scheduled(interval: Duration) {
    let mut status = status();
    let current = status.get_or_insert_with(Status::default);
    current.interval_ms = interval.as_millis() as u64;
    current.since_ms = clock::now_ms();
}

fn publish_state(state: &state::SyncState) {
    if let Some(status) = status().as_mut() {
        status.last_full_ms = status.last_full_ms.max(state.last_full_ms);
        status.last_delta_ms = status.last_delta_ms.max(state.last_delta_ms);
    }
}

fn set_running(running: bool) {
    if let Some(status) = status().as_mut() {
        status.running = running;
    }
}

fn record_success(kind: Kind, at_ms: u64, fault: Option<String>) {
    if let Some(status) = status().as_mut() {
        match kind {
            Kind::Full => status.last_full_ms = Some(at_ms),
            Kind::Delta => status.last_delta_ms = Some(at_ms),
        }
        status.fault = fault;
    }
}

fn record_failure(error: &SyncError) {
    if let Some(status) = status().as_mut()
        && !matches!(error, SyncError::Busy | SyncError::Stopped)
    {
        status.fault = Some(error.to_string());
    }
}

/// Sets `failsoft_sync_lag_seconds`: how long since a pass last ended
/// (since the schedule began, when none has).
pub fn set_lag_gauge(now_ms: u64) {
    if let Some(status) = status().as_ref() {
        let last = status.last_full_ms.max(status.last_delta_ms).unwrap_or(status.since_ms);
        metrics::gauge!("failsoft_sync_lag_seconds").set(now_ms.saturating_sub(last) as f64 / 1000.0);
        metrics::gauge!("failsoft_sync_running").set(if status.running { 1.0 } else { 0.0 });
    }
}

/// The sync's part of `/v1/health` (`None` when the worker does not
/// sync): a warning once the last successful pass (or the start of the
/// schedule, before any) is older than twice the interval.
pub fn health(now_ms: u64) -> Option<(Level, Value)> {
    let status = status().clone()?;
    let last = status.last_full_ms.max(status.last_delta_ms);
    let age_ms = now_ms.saturating_sub(last.unwrap_or(status.since_ms));
    let level = if age_ms > status.interval_ms.saturating_mul(2) { Level::Warning } else { Level::Ok };
    let at = |ms: Option<u64>| ms.map(|ms| UtcTime::from_unix_ms(ms).rfc3339());
    let doc = json!({
        "level": level,
        "lastFull": at(status.last_full_ms),
        "lastDelta": at(status.last_delta_ms),
        "lagSeconds": age_ms / 1000,
        "intervalSeconds": status.interval_ms / 1000,
        "running": status.running,
        "lastError": status.fault,
    });
    Some((level, doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_warns_once_the_last_pass_is_older_than_twice_the_interval() {
        assert!(health(0).is_none(), "no section while the worker does not sync");
        scheduled(Duration::from_secs(900));
        let start = status().as_ref().map(|s| s.since_ms).expect("scheduled");
        let level = |now| health(now).map(|(level, _)| level);
        assert_eq!(level(start + 1_800_000), Some(Level::Ok), "none yet, within twice the interval");
        assert_eq!(level(start + 1_800_001), Some(Level::Warning), "none in twice the interval");
        record_success(Kind::Delta, start + 2_000_000, None);
        assert_eq!(level(start + 3_800_000), Some(Level::Ok));
        let (level, doc) = health(start + 3_800_001).expect("a section");
        assert_eq!(level, Level::Warning);
        assert_eq!(doc["lagSeconds"], 1_800);
        assert!(doc["lastDelta"].is_string() && doc["lastFull"].is_null(), "{doc}");
    }

    #[test]
    fn places_name_pages_and_lines_never_numbers() {
        let mut report = Report::default();
        report.skip("MISSING_PHONE", Place::Page(3).of(7));
        report.skip("UNREADABLE", Place::Lines.of(12));
        assert_eq!(report.problems, ["page 3, record 7: MISSING_PHONE", "line 12: UNREADABLE"]);
        assert_eq!(report.skipped_total(), 2);
    }
}
