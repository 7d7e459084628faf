//! `failsoft sync`: the sync by hand (`--once`, `--from-file`) or as a
//! service of its own (a pass every `FAILSOFT_SYNC_INTERVAL_SECS`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use failsoft_shared::config::{ConfigError, Policy};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use super::sink::Sink;
use super::source::CrmList;
use super::state::StateStore;
use super::{Outcome, PassMode, Report, SyncSettings, Syncer};
use crate::config::{self, Secret, Tables};
use crate::deliver::crm::Crm;
use crate::{aws, clock};

/// What `failsoft sync` needs.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub settings: SyncSettings,
    pub key_secret: Secret,
    pub policy: Policy,
    pub tables: Tables,
    /// `FAILSOFT_CRM_URL` (not needed with `--from-file`).
    pub crm_url: Option<String>,
    /// The CRM's mapping (read with `FAILSOFT_CRM_URL`): its customer list.
    pub crm_mapping: Option<std::sync::Arc<failsoft_shared::mapping::Mapping>>,
    /// `FAILSOFT_EDGE_URL`: the edges to fill (comma-separated).
    pub edge_urls: Vec<String>,
    /// `FAILSOFT_INTERNAL_SECRET`: signs the bulk pushes (needed with an edge).
    pub internal_secret: Secret,
}

impl SyncConfig {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>, from_file: bool) -> Result<Self, ConfigError> {
        let lookup: config::Lookup<'_> = &lookup;
        let settings = SyncSettings::from_lookup(lookup)?;
        let key_secret = settings.cache_key_secret.clone().ok_or_else(|| {
            ConfigError::new("FAILSOFT_CACHE_KEY_SECRET", "is required: the sync keys records as the edge does")
        })?;
        let crm_url = match config::text(lookup, "FAILSOFT_CRM_URL") {
            Some(url) => Some(config::http_url("FAILSOFT_CRM_URL", url)?),
            None if from_file => None,
            None => return Err(ConfigError::new("FAILSOFT_CRM_URL", "is required (or use --from-file)")),
        };
        let crm_mapping = match &crm_url {
            Some(_) => Some(std::sync::Arc::new(config::crm_mapping(lookup)?)),
            None => None,
        };
        let edge_urls = config::edge_urls(lookup)?;
        let internal_secret = match config::text(lookup, "FAILSOFT_INTERNAL_SECRET") {
            Some(_) => config::secret(lookup, "FAILSOFT_INTERNAL_SECRET")?,
            None if edge_urls.is_empty() => Secret::new(Vec::new()),
            None => {
                return Err(ConfigError::new("FAILSOFT_INTERNAL_SECRET", "is required to push to FAILSOFT_EDGE_URL"));
            }
        };
        Ok(Self {
            settings,
            key_secret,
            policy: Policy::from_lookup(|n| lookup(n))?,
            tables: config::tables(lookup)?,
            crm_url,
            crm_mapping,
            edge_urls,
            internal_secret,
        })
    }
}

/// How `failsoft sync` was asked to run.
#[derive(Debug, Clone)]
pub enum SyncCommand {
    /// One pass over the CRM's list now (`full`: even when a delta would do).
    Once { full: bool },
    /// One pass over a JSON Lines export.
    FromFile(PathBuf),
    /// A pass every interval until SIGTERM.
    Serve,
}

/// Runs the command; the report goes to stdout as JSON.
pub async fn run(config: SyncConfig, command: SyncCommand) -> anyhow::Result<()> {
    let sdk = aws::sdk_config(Duration::from_secs(30)).await;
    let http = reqwest::Client::builder().no_proxy().pool_idle_timeout(Duration::from_secs(4)).build()?;
    let sink = Sink::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        config.tables.last_known.clone(),
        http.clone(),
        config.edge_urls.clone(),
        config.internal_secret.clone(),
        config.policy.freshness.last_known_horizon_ms,
    );
    let owner = format!("sync-{}-{:08x}", std::process::id(), clock::random_u64() as u32);
    let state = StateStore::new(aws_sdk_dynamodb::Client::new(&sdk), config.tables.results.clone(), owner);
    let syncer = Syncer::new(
        config.settings.clone(),
        config.key_secret.clone(),
        config.policy.default_tier.clone(),
        sink,
        state,
    );
    let crm = match (&config.crm_url, &config.crm_mapping) {
        (Some(url), Some(mapping)) => {
            Some(CrmList::new(Crm::new(http.clone(), url, std::sync::Arc::clone(mapping)), config.settings.page_size))
        }
        _ => None,
    };
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        crate::worker::stop_signal().await;
        stop_tx.send_replace(true);
    });
    let report = match command {
        SyncCommand::FromFile(path) => {
            let meta = std::fs::metadata(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let as_of_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or_else(clock::now_ms, |d| d.as_millis() as u64);
            let bar = ProgressBar::new(meta.len()).with_style(
                ProgressStyle::with_template(
                    "{bar:40} {binary_bytes}/{binary_total_bytes}  {binary_bytes_per_sec}  ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let report = syncer.file_pass(&path, as_of_ms, &bar).await;
            bar.finish_and_clear();
            report?
        }
        SyncCommand::Once { full } => {
            let crm = crm.ok_or_else(|| anyhow::anyhow!("FAILSOFT_CRM_URL is required"))?;
            let bar = ProgressBar::no_length().with_style(
                ProgressStyle::with_template("{spinner} {human_pos} records  {per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            let outcome = syncer.pass(&crm, PassMode::Once { full }, &bar, &stop).await;
            bar.finish_and_clear();
            match outcome? {
                Outcome::Done(report) => report,
                Outcome::NotDue(_) => unreachable!("a pass by hand is always due"),
            }
        }
        SyncCommand::Serve => {
            let crm = crm.ok_or_else(|| anyhow::anyhow!("FAILSOFT_CRM_URL is required"))?;
            Arc::new(syncer).serve(crm, stop).await;
            return Ok(());
        }
    };
    print_report(&report);
    Ok(())
}

fn print_report(report: &Report) {
    println!("{}", serde_json::to_string_pretty(report).unwrap_or_default());
    if report.skipped_total() > 0 {
        eprintln!(
            "failsoft: {} records skipped ({}); the rest were synced",
            report.skipped_total(),
            report.problems.join("; ")
        );
    }
}
