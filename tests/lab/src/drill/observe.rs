//! What the drill reads besides the facade's answers: the CRM simulator
//! (its mode, its customers, the ledger of every case it created), the
//! queues' depth every second (SQS `ApproximateNumberOfMessages` plus
//! `…NotVisible`: a message backing off is in flight), the worker's breaker,
//! and the refreshes the worker delivered (the results table).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::traffic::Clock;

/// Bound on one call to moto or the simulator's admin API.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a dead letter read by [`Aws::peek_bodies`] is held at most (if
/// handing it back fails).
const PEEK_HOLD_SECS: i32 = 30;
/// The most messages [`Aws::peek_bodies`] reads.
const MAX_PEEKED: usize = 10_000;

/// The SQS and DynamoDB clients, pointed at the stack's endpoint.
#[derive(Clone)]
pub struct Aws {
    pub sqs: aws_sdk_sqs::Client,
    pub ddb: aws_sdk_dynamodb::Client,
}

impl Aws {
    /// `endpoint` serves DynamoDB, `sqs_endpoint` SQS (the same moto, or fauxqs).
    pub async fn connect(endpoint: &str, sqs_endpoint: &str, region: &str, key_id: &str, secret: &str) -> Self {
        let credentials = aws_sdk_sqs::config::Credentials::new(key_id, secret, None, None, "failsoft-drill");
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_owned()))
            .endpoint_url(endpoint)
            .credentials_provider(credentials)
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(CALL_TIMEOUT)
                    .build(),
            )
            .load()
            .await;
        let sqs = aws_sdk_sqs::config::Builder::from(&sdk).endpoint_url(sqs_endpoint).build();
        Self { sqs: aws_sdk_sqs::Client::from_conf(sqs), ddb: aws_sdk_dynamodb::Client::new(&sdk) }
    }

    /// (visible, in flight) of a queue.
    pub async fn depth(&self, queue_url: &str) -> anyhow::Result<(u64, u64)> {
        failsoft_origin::telemetry::queue_depths(&self.sqs, queue_url)
            .await
            .map_err(|e| anyhow::anyhow!("GetQueueAttributes {queue_url}: {e}"))
    }

    /// The refreshes delivered for lookup correlationIds starting with
    /// `prefix` (the worker's records, see `results::refresh_record_key`).
    pub async fn refreshes(&self, table: &str, prefix: &str) -> anyhow::Result<Vec<RefreshDelivery>> {
        let mut found = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .ddb
                .scan()
                .table_name(table)
                .filter_expression("#k = :refresh AND begins_with(#c, :prefix)")
                .expression_attribute_names("#k", "kind")
                .expression_attribute_names("#c", "lookupCorrelationId")
                .expression_attribute_values(":refresh", AttributeValue::S("refresh".into()))
                .expression_attribute_values(":prefix", AttributeValue::S(prefix.into()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("{}", aws_sdk_dynamodb::error::DisplayErrorContext(e)))
                .with_context(|| format!("Scan {table}"))?;
            for item in page.items() {
                let id = item.get("lookupCorrelationId").and_then(|v| v.as_s().ok()).cloned();
                let num = |k: &str| item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok());
                let (at, submitted_at_ms) = (num("updatedAt"), num("submittedAt"));
                if let (Some(correlation_id), Some(delivered_at_ms)) = (id, at) {
                    found.push(RefreshDelivery { correlation_id, delivered_at_ms, submitted_at_ms });
                }
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(found),
            }
        }
    }

    /// Every item of `table`, each as text (every attribute's value, of
    /// whatever type), for the scan for phone numbers.
    pub async fn item_texts(&self, table: &str) -> anyhow::Result<Vec<String>> {
        let mut texts = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .ddb
                .scan()
                .table_name(table)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("{}", aws_sdk_dynamodb::error::DisplayErrorContext(e)))
                .with_context(|| format!("Scan {table}"))?;
            texts.extend(page.items().iter().map(|item| format!("{item:?}")));
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(texts),
            }
        }
    }

    /// The bodies of the messages visible in `queue_url`, read without
    /// consuming them: SQS has no peek, so each is received under a short
    /// hold ([`PEEK_HOLD_SECS`]) and every one is handed back (visibility 0)
    /// once the queue reads empty. As with `failsoft dlq list`, a FIFO group
    /// shows only what one receive brings of it while the rest is held.
    pub async fn peek_bodies(&self, queue_url: &str) -> anyhow::Result<Vec<String>> {
        let mut bodies = Vec::new();
        let mut receipts = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let read = loop {
            if bodies.len() >= MAX_PEEKED {
                break Ok(());
            }
            let received = self
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .visibility_timeout(PEEK_HOLD_SECS)
                .send()
                .await;
            let batch = match received {
                Ok(out) => out.messages.unwrap_or_default(),
                Err(e) => break Err(anyhow::anyhow!("ReceiveMessage {queue_url}: {}", DisplayErrorContext(e))),
            };
            let before = bodies.len();
            for m in batch {
                receipts.extend(m.receipt_handle.clone());
                if seen.insert(m.message_id.clone().unwrap_or_default()) {
                    bodies.push(m.body.unwrap_or_default());
                }
            }
            if bodies.len() == before {
                break Ok(());
            }
        };
        self.hand_back(queue_url, &receipts).await;
        read.map(|()| bodies)
    }

    /// Makes held messages visible again at once.
    async fn hand_back(&self, queue_url: &str, receipts: &[String]) {
        for chunk in receipts.chunks(10) {
            let entries = chunk.iter().enumerate().filter_map(|(i, receipt)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt)
                    .visibility_timeout(0)
                    .build()
                    .ok()
            });
            let handed = self
                .sqs
                .change_message_visibility_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries.collect()))
                .send()
                .await;
            if let Err(e) = handed {
                eprintln!(
                    "failsoft-lab drill: dead letters read stay hidden for up to {PEEK_HOLD_SECS} s: {}",
                    DisplayErrorContext(e)
                );
            }
        }
    }
}

/// A refresh the worker delivered (its record in the results table).
#[derive(Debug, Clone)]
pub struct RefreshDelivery {
    /// The lookup's correlationId.
    pub correlation_id: String,
    /// When the worker recorded it, Unix ms.
    pub delivered_at_ms: u64,
    /// When the edge made the message, Unix ms: its deduplication bucket is
    /// this over the freshness window.
    pub submitted_at_ms: Option<u64>,
}

/// One second of the queues and the worker.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    pub t_ms: f64,
    pub queue_visible: u64,
    pub queue_in_flight: u64,
    pub dlq: u64,
    /// The worker's breaker (`closed`, `open`, `half_open`), from `/healthz`.
    pub origin_breaker: Option<String>,
}

/// Samples every second until `stop`; the latest queue depth (visible + in
/// flight) is also kept in `depth_now` for the progress line.
pub struct Sampler {
    pub samples: Arc<Mutex<Vec<Sample>>>,
    pub depth_now: Arc<AtomicU64>,
}

impl Sampler {
    pub fn new() -> Self {
        Self { samples: Arc::default(), depth_now: Arc::new(AtomicU64::new(0)) }
    }

    pub fn start(
        &self,
        aws: Aws,
        queues: (String, String),
        origin: Option<String>,
        http: reqwest::Client,
        clock: Clock,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let samples = Arc::clone(&self.samples);
        let depth_now = Arc::clone(&self.depth_now);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                let t_ms = clock.now_ms();
                let (queue, dlq, breaker) =
                    tokio::join!(aws.depth(&queues.0), aws.depth(&queues.1), origin_breaker(&http, origin.as_deref()),);
                let Ok((visible, in_flight)) = queue else { continue };
                depth_now.store(visible + in_flight, Ordering::Relaxed);
                let dlq = dlq.map(|(v, f)| v + f).unwrap_or(0);
                let sample =
                    Sample { t_ms, queue_visible: visible, queue_in_flight: in_flight, dlq, origin_breaker: breaker };
                samples.lock().unwrap_or_else(|e| e.into_inner()).push(sample);
            }
        })
    }

    pub fn take(&self) -> Vec<Sample> {
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

async fn origin_breaker(http: &reqwest::Client, origin: Option<&str>) -> Option<String> {
    let url = format!("{}/healthz", origin?);
    let body: Value = http.get(url).timeout(Duration::from_secs(2)).send().await.ok()?.json().await.ok()?;
    body.get("breaker").and_then(Value::as_str).map(str::to_owned)
}

/// The CRM simulator's admin API.
#[derive(Clone)]
pub struct Crm {
    pub http: reqwest::Client,
    pub admin: String,
}

/// A case in the CRM's ledger.
#[derive(Debug, Clone)]
pub struct LedgerCase {
    /// `externalRef`, else the `Idempotency-Key`: the write's correlationId.
    pub correlation_id: Option<String>,
    pub created_at_ms: u64,
}

impl Crm {
    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(format!("{}{path}", self.admin))
            .timeout(CALL_TIMEOUT * 4)
            .json(body)
            .send()
            .await
            .with_context(|| format!("the simulator's {path}"))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("the simulator's {path} answered {status}: {body}");
        }
        Ok(body)
    }

    /// Sets the CRM's mode: `up`, `down`, `hang` or `reject`.
    pub async fn set_mode(&self, mode: &str) -> anyhow::Result<()> {
        self.post("/admin/mode", &json!({"mode": mode})).await.map(|_| ())
    }

    /// Whether the simulator honours `Idempotency-Key` (`honour`) or
    /// creates a case for every request (`ignore`).
    pub async fn set_idempotency(&self, policy: &str) -> anyhow::Result<()> {
        self.post("/admin/idempotency", &json!({"mode": policy})).await.map(|_| ())
    }

    /// Sets the simulator's rate limit (calls a second), or lifts it.
    pub async fn set_rate_limit(&self, per_sec: Option<u64>) -> anyhow::Result<()> {
        let body = match per_sec {
            Some(limit) => json!({"limit": limit, "windowSecs": 1, "headers": "ietf"}),
            None => json!({"limit": null}),
        };
        self.post("/admin/rate-limit", &body).await.map(|_| ())
    }

    /// (API requests, requests refused 429 by the rate limit) so far.
    pub async fn calls(&self) -> anyhow::Result<(u64, u64)> {
        let resp = self.http.get(format!("{}/admin/stats", self.admin)).timeout(CALL_TIMEOUT * 4).send().await?;
        let stats: Value = resp.json().await.context("the simulator's stats")?;
        let count = |name: &str| stats[name].as_u64().with_context(|| format!("the simulator's stats have no {name}"));
        Ok((count("requests")?, count("throttled")?))
    }

    pub async fn load(&self, chunk: &Value) -> anyhow::Result<()> {
        self.post("/admin/customers", chunk).await.map(|_| ())
    }

    /// A JSON array from the simulator's admin API (`what` names it in errors).
    async fn list(&self, path: &str, what: &str) -> anyhow::Result<Vec<Value>> {
        let resp = self
            .http
            .get(format!("{}{path}", self.admin))
            .timeout(CALL_TIMEOUT * 4)
            .send()
            .await
            .with_context(|| format!("the simulator's {what}"))?;
        resp.json().await.with_context(|| format!("the simulator's {what} is not a JSON array"))
    }

    /// `GET /customers?phone=` requests the CRM has received so far.
    pub async fn lookups(&self) -> anyhow::Result<u64> {
        let resp = self.http.get(format!("{}/admin/stats", self.admin)).timeout(CALL_TIMEOUT * 4).send().await?;
        let stats: Value = resp.json().await.context("the simulator's stats")?;
        stats["lookups"].as_u64().context("the simulator's stats have no lookups count")
    }

    /// Every call the CRM received with an `X-Correlation-Id`.
    pub async fn correlations(&self) -> anyhow::Result<Vec<super::trace::CrmCall>> {
        let calls = self.list("/admin/correlations", "correlation list").await?;
        let text = |c: &Value, name: &str| c[name].as_str().unwrap_or_default().to_owned();
        Ok(calls
            .iter()
            .map(|c| super::trace::CrmCall {
                method: text(c, "method"),
                path: text(c, "path"),
                route: text(c, "route"),
                correlation_id: text(c, "correlationId"),
            })
            .collect())
    }

    /// Every case the CRM created, duplicates included.
    pub async fn ledger(&self) -> anyhow::Result<Vec<LedgerCase>> {
        let cases = self.list("/admin/ledger", "ledger").await?;
        Ok(cases
            .iter()
            .map(|c| LedgerCase {
                correlation_id: c["externalRef"].as_str().or_else(|| c["idempotencyKey"].as_str()).map(str::to_owned),
                created_at_ms: c["createdAt"].as_u64().unwrap_or(0),
            })
            .collect())
    }
}
