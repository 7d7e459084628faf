//! `failsoft dlq list | show ID [--reveal] | replay [ID…|--all] [--edit FILE] | purge`.
//!
//! SQS has no "peek": reading the DLQ means receiving. The tool receives
//! with a short visibility timeout (the hold, `--hold-secs`), renews it in
//! the background while it works, and hands back everything it does not
//! consume. A read takes each message once (by MessageId) and stops at
//! the count the DLQ had when it began. A FIFO queue returns nothing more
//! of a group while some of it is held, so a group with more than ten dead
//! letters shows its first ten in `list`; `replay --all` works in rounds
//! and reaches them all, but never more than the DLQ held at its start.
//!
//! `show` prints a body with the customer's data redacted
//! ([`super::redact`]): its output goes to logs (an ECS task's stdout is
//! CloudWatch). `--reveal` prints it whole.
//!
//! A replay re-enqueues the body with its correlationId unchanged (the
//! write stays idempotent), in its original group, under the deduplication
//! id `{correlationId}.replay.{dlqMessageId}`: the original id may still be
//! in SQS's 5-minute deduplication window (it would be silently dropped),
//! and a retried replay of the same DLQ message is still deduplicated.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName,
};
use failsoft_shared::envelope::Envelope;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::config::DlqConfig;
use crate::dead_letter::{attr, redact};
use crate::store::results::Store;
use crate::{aws, clock};

/// Short polls: an empty answer means the (visible part of the) DLQ is read.
const POLL_SECS: i32 = 1;
/// Replays above this count show a progress bar.
const PROGRESS_FROM: usize = 10;
/// Receives in a row that bring only messages already read before a read
/// gives up: they come back only when renewing the hold fails.
const IDLE_RECEIVES: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("{0}")]
    Aws(String),
    #[error("{0}")]
    Usage(String),
    #[error("not in the dead-letter queue: {0}")]
    NotFound(String),
    #[error("{0}")]
    Edit(String),
}

fn aws_error(what: &str, e: impl std::error::Error) -> DlqError {
    DlqError::Aws(format!("{what}: {}", DisplayErrorContext(e)))
}

/// What the subcommand asks.
#[derive(Debug, Clone)]
pub enum DlqCommand {
    List { max: usize },
    Show { id: String, reveal: bool },
    Replay { ids: Vec<String>, all: bool, edit: Option<PathBuf> },
    Purge { yes: bool },
}

/// One dead letter as read.
#[derive(Debug, Clone)]
pub struct DeadLetterMessage {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
    pub group_id: String,
    pub attributes: HashMap<String, String>,
}

impl DeadLetterMessage {
    fn from_sdk(m: Message) -> Option<Self> {
        let attributes = m
            .message_attributes()
            .map(|a| a.iter().filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_owned()))).collect())
            .unwrap_or_default();
        let group_id = m
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
            .cloned()
            .unwrap_or_default();
        Some(Self {
            message_id: m.message_id?,
            receipt: m.receipt_handle?,
            body: m.body.unwrap_or_default(),
            group_id,
            attributes,
        })
    }

    /// The correlationId: the attribute, else the envelope's.
    pub fn correlation_id(&self) -> Option<String> {
        self.attributes.get(attr::CORRELATION_ID).cloned().or_else(|| {
            serde_json::from_str::<Value>(&self.body).ok()?.get("correlationId")?.as_str().map(str::to_owned)
        })
    }

    fn matches(&self, id: &str) -> bool {
        self.message_id == id || self.correlation_id().as_deref() == Some(id)
    }

    fn attr(&self, name: &str) -> &str {
        self.attributes.get(name).map_or("-", String::as_str)
    }
}

struct Dlq {
    sqs: Client,
    config: DlqConfig,
    store: Store,
    held: Held,
}

/// What the tool holds now: DLQ message id → its latest receipt. A
/// background task renews the hold on all of it every third of the hold,
/// for as long as the tool works (reading, then replaying), so nothing it
/// holds reappears to be read twice however long the work takes.
#[derive(Clone, Default)]
struct Held(Arc<Mutex<HashMap<String, String>>>);

impl Held {
    async fn insert(&self, message_id: &str, receipt: &str) {
        self.0.lock().await.insert(message_id.to_owned(), receipt.to_owned());
    }

    /// Stops holding these; their latest receipts.
    async fn take(&self, messages: &[DeadLetterMessage]) -> Vec<String> {
        let mut held = self.0.lock().await;
        messages.iter().filter_map(|m| held.remove(&m.message_id)).collect()
    }
}

/// Aborts the renewing task when the command ends, however it ends.
struct Renewing(tokio::task::JoinHandle<()>);

impl Drop for Renewing {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub async fn run(config: DlqConfig, command: DlqCommand) -> Result<(), DlqError> {
    let sdk = aws::sdk_config(Duration::from_secs(30)).await;
    let dlq = Dlq {
        sqs: Client::new(&sdk),
        store: Store::new(aws_sdk_dynamodb::Client::new(&sdk), config.tables.clone()),
        config,
        held: Held::default(),
    };
    let _renewing = Renewing(tokio::spawn(renew(dlq.sqs.clone(), dlq.config.clone(), dlq.held.clone())));
    match command {
        DlqCommand::List { max } => dlq.list(max).await,
        DlqCommand::Show { id, reveal } => dlq.show(&id, reveal).await,
        DlqCommand::Replay { ids, all, edit } => dlq.replay(ids, all, edit).await,
        DlqCommand::Purge { yes } => dlq.purge(yes).await,
    }
}

/// Renews the hold on everything held, every third of the hold: a renewal
/// that fails once (a throttled call) still leaves two before the hold
/// runs out. The lock is kept through the renewal, so a message handed
/// back meanwhile is not hidden again after it.
async fn renew(sqs: Client, config: DlqConfig, held: Held) {
    let every = Duration::from_millis(u64::try_from(config.hold_secs).unwrap_or(30) * 1000 / 3);
    loop {
        tokio::time::sleep(every).await;
        let held = held.0.lock().await;
        let receipts: Vec<&str> = held.values().map(String::as_str).collect();
        change_visibility(&sqs, &config, &receipts, config.hold_secs).await;
    }
}

/// Sets the visibility of held messages: 0 hands them back, more renews
/// the hold. A receipt SQS refuses (its message deleted meanwhile) is
/// skipped; a failed call is reported, the messages then reappear when
/// their hold runs out, and are still read once each.
async fn change_visibility(sqs: &Client, config: &DlqConfig, receipts: &[&str], secs: i32) {
    for chunk in receipts.chunks(10) {
        let entries: Vec<_> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, receipt)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*receipt)
                    .visibility_timeout(secs)
                    .build()
                    .ok()
            })
            .collect();
        if let Err(e) =
            sqs.change_message_visibility_batch().queue_url(&config.dlq_url).set_entries(Some(entries)).send().await
        {
            eprintln!(
                "warning: could not change the visibility of held dead letters ({}); they reappear within {} s",
                DisplayErrorContext(&e),
                config.hold_secs
            );
        }
    }
}

impl Dlq {
    /// How many dead letters are visible now (`ApproximateNumberOfMessages`,
    /// exact enough for a queue that only dead letters go to): a read
    /// stops there, so dead letters arriving while it goes on (a worker
    /// dead-lettering faster than the tool reads) cannot keep it going.
    async fn count(&self) -> Result<usize, DlqError> {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.config.dlq_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| aws_error("GetQueueAttributes (DLQ)", e))?;
        Ok(out
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }

    /// Receives the dead letters visible now, up to `max`, holding them:
    /// each once (by MessageId), at most as many as [`Self::count`] saw at
    /// the start, and the hold renewed in the background while the tool
    /// works. It stops early when a receive comes back empty (the rest sits
    /// behind held messages of its FIFO group, or someone else holds it),
    /// or brings nothing new [`IDLE_RECEIVES`] times in a row.
    async fn read(&self, max: usize) -> Result<Vec<DeadLetterMessage>, DlqError> {
        let target = max.min(self.count().await?);
        let mut out: Vec<DeadLetterMessage> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut idle = 0;
        while out.len() < target && idle < IDLE_RECEIVES {
            let batch = self
                .sqs
                .receive_message()
                .queue_url(&self.config.dlq_url)
                .max_number_of_messages((target - out.len()).min(10) as i32)
                .wait_time_seconds(POLL_SECS)
                .visibility_timeout(self.config.hold_secs)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(|e| aws_error("ReceiveMessage (DLQ)", e))?
                .messages
                .unwrap_or_default();
            if batch.is_empty() {
                break;
            }
            idle += 1;
            for m in batch.into_iter().filter_map(DeadLetterMessage::from_sdk) {
                self.held.insert(&m.message_id, &m.receipt).await;
                match seen.get(&m.message_id) {
                    // Back again (a renewal failed): only its receipt changed.
                    Some(&i) => out[i].receipt = m.receipt,
                    None => {
                        seen.insert(m.message_id.clone(), out.len());
                        out.push(m);
                        idle = 0;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Makes held messages visible again at once.
    async fn hand_back(&self, messages: &[DeadLetterMessage]) {
        let receipts = self.held.take(messages).await;
        let receipts: Vec<&str> = receipts.iter().map(String::as_str).collect();
        change_visibility(&self.sqs, &self.config, &receipts, 0).await;
    }

    async fn list(&self, max: usize) -> Result<(), DlqError> {
        let messages = self.read(max).await?;
        self.hand_back(&messages).await;
        println!(
            "{:<38} {:<38} {:<8} {:<24} {:<10} {:>6} {:>8}  last attempt",
            "message id", "correlationId", "kind", "reason", "class", "status", "attempts"
        );
        for m in &messages {
            let last = m
                .attr(attr::LAST_ATTEMPT_AT)
                .parse::<u64>()
                .map_or("-".to_owned(), |ms| format!("{}s ago", clock::now_ms().saturating_sub(ms) / 1000));
            println!(
                "{:<38} {:<38} {:<8} {:<24} {:<10} {:>6} {:>8}  {last}",
                m.message_id,
                m.correlation_id().unwrap_or_else(|| "-".to_owned()),
                m.attr(attr::KIND),
                m.attr(attr::REASON),
                m.attr(attr::ERROR_CLASS),
                m.attr(attr::LAST_STATUS),
                m.attr(attr::ATTEMPTS),
            );
        }
        println!("{} dead letter(s)", messages.len());
        Ok(())
    }

    async fn show(&self, id: &str, reveal: bool) -> Result<(), DlqError> {
        let messages = self.read(usize::MAX).await?;
        self.hand_back(&messages).await;
        let Some(m) = messages.iter().find(|m| m.matches(id)) else {
            return Err(DlqError::NotFound(id.to_owned()));
        };
        let body = match serde_json::from_str::<Value>(&m.body) {
            Ok(body) if reveal => body,
            Ok(body) => redact::body(&body),
            Err(_) if reveal => Value::String(m.body.clone()),
            Err(_) => redact::text(&m.body),
        };
        if reveal {
            eprintln!("warning: --reveal prints the customer's data; keep this output out of shared logs");
        }
        let shown = json!({
            "messageId": m.message_id,
            "correlationId": m.correlation_id(),
            "groupId": m.group_id,
            "attributes": m.attributes,
            "body": body,
        });
        println!("{}", serde_json::to_string_pretty(&shown).unwrap_or_default());
        Ok(())
    }

    async fn replay(&self, ids: Vec<String>, all: bool, edit: Option<PathBuf>) -> Result<(), DlqError> {
        if all != ids.is_empty() {
            return Err(DlqError::Usage("name the messages to replay, or --all".into()));
        }
        if edit.is_some() && (all || ids.len() != 1) {
            return Err(DlqError::Usage("--edit replays exactly one message".into()));
        }
        let edited = match &edit {
            Some(path) => {
                Some(std::fs::read_to_string(path).map_err(|e| DlqError::Edit(format!("{}: {e}", path.display())))?)
            }
            None => None,
        };
        let mut wanted: Vec<String> = ids;
        let mut replayed = 0usize;
        let mut bar: Option<ProgressBar> = None;
        // `--all` replays what the DLQ holds now: a replay the worker
        // dead-letters again (the CRM still refuses it) waits for the next.
        let budget = if all { self.count().await? } else { usize::MAX };
        // Rounds: replaying deletes, which frees the group's next messages.
        while replayed < budget {
            let messages = self.read(budget - replayed).await?;
            let (mine, others): (Vec<_>, Vec<_>) =
                messages.into_iter().partition(|m| all || wanted.iter().any(|id| m.matches(id)));
            self.hand_back(&others).await;
            if mine.is_empty() {
                break;
            }
            let bar = bar.get_or_insert_with(|| {
                if mine.len() > PROGRESS_FROM {
                    let style = ProgressStyle::with_template("{bar:40} {pos}/{len} replayed")
                        .unwrap_or_else(|_| ProgressStyle::default_bar());
                    ProgressBar::new(0).with_style(style)
                } else {
                    ProgressBar::hidden()
                }
            });
            bar.inc_length(mine.len() as u64);
            for m in &mine {
                if let Err(e) = self.replay_one(m, edited.as_deref()).await {
                    bar.abandon();
                    self.hand_back(&mine).await;
                    return Err(e);
                }
                let id = m.correlation_id().unwrap_or_else(|| m.message_id.clone());
                let line = format!("replayed {id} (dead letter {})", m.message_id);
                if bar.is_hidden() {
                    println!("{line}");
                } else {
                    bar.println(line);
                }
                bar.inc(1);
                replayed += 1;
                wanted.retain(|w| !m.matches(w));
            }
            if !all && wanted.is_empty() {
                break;
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        println!("replayed {replayed} message(s) to the work queue");
        if !all && !wanted.is_empty() {
            return Err(DlqError::NotFound(wanted.join(", ")));
        }
        Ok(())
    }

    async fn replay_one(&self, m: &DeadLetterMessage, edited: Option<&str>) -> Result<(), DlqError> {
        let correlation_id = m.correlation_id();
        let (body, group) = match edited {
            Some(text) => {
                let envelope: Envelope<Value> = serde_json::from_str(text)
                    .map_err(|e| DlqError::Edit(format!("the edited file is not a message envelope: {e}")))?;
                if Some(&envelope.correlation_id) != correlation_id.as_ref() {
                    return Err(DlqError::Edit(
                        "the edited envelope must keep its correlationId (it is the CRM's idempotency key)".into(),
                    ));
                }
                (text.trim().to_owned(), envelope.entity_key)
            }
            None => (m.body.clone(), m.group_id.clone()),
        };
        let body = with_new_budget(&body, clock::now_ms());
        if let Some(c) = &correlation_id {
            self.store.reset_for_replay(c, clock::now_ms()).await.map_err(|e| DlqError::Aws(e.to_string()))?;
        }
        let dedup: String = format!("{}.replay.{}", correlation_id.as_deref().unwrap_or("message"), m.message_id)
            .chars()
            .take(128)
            .collect();
        self.sqs
            .send_message()
            .queue_url(&self.config.queue_url)
            .message_body(body)
            .message_group_id(if group.is_empty() { "unknown".to_owned() } else { group })
            .message_deduplication_id(dedup)
            .send()
            .await
            .map_err(|e| aws_error("SendMessage (work queue)", e))?;
        // The latest receipt: the message may have come back with a new one.
        let receipt = self.held.take(std::slice::from_ref(m)).await.pop().unwrap_or_else(|| m.receipt.clone());
        self.sqs
            .delete_message()
            .queue_url(&self.config.dlq_url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| aws_error("DeleteMessage (DLQ)", e))?;
        Ok(())
    }

    async fn purge(&self, yes: bool) -> Result<(), DlqError> {
        if !yes {
            return Err(DlqError::Usage("purge deletes every dead letter for good; add --yes to confirm".into()));
        }
        self.sqs
            .purge_queue()
            .queue_url(&self.config.dlq_url)
            .send()
            .await
            .map_err(|e| aws_error("PurgeQueue (DLQ)", e))?;
        println!("purged the dead-letter queue");
        Ok(())
    }
}

/// A replayed envelope starts a new retry budget: its `submittedAt` is the
/// replay's time, or a write dead-lettered for `RETRY_BUDGET_EXHAUSTED`
/// would get one attempt and be dead-lettered again. A body that is no
/// envelope (a raw EventBridge event) is sent as it is: its budget counts
/// from SQS's send time, which the replay renews anyway.
fn with_new_budget(body: &str, now_ms: u64) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(mut envelope)) if envelope.contains_key("submittedAt") && envelope.contains_key("v") => {
            envelope.insert("submittedAt".to_owned(), json!(now_ms));
            Value::Object(envelope).to_string()
        }
        _ => body.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replayed_envelope_starts_a_new_budget_and_anything_else_is_sent_as_it_is() {
        let old = r#"{"v":1,"kind":"write","correlationId":"c-1","entityKey":"e","payload":{"x":1},"submittedAt":5}"#;
        let replayed: Value = serde_json::from_str(&with_new_budget(old, 1_000)).unwrap();
        assert_eq!(replayed["submittedAt"], 1_000);
        assert_eq!(replayed["payload"]["x"], 1);
        assert_eq!(replayed["correlationId"], "c-1");
        let raw = r#"{"version":"0","id":"e-1","detail":{}}"#;
        assert_eq!(with_new_budget(raw, 1_000), raw);
        assert_eq!(with_new_budget("not json", 1_000), "not json");
    }
}
