//! A message as the worker holds it: SQS's system attributes read once.

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};

/// A received queue message.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
    /// The FIFO group: the entity, for per-customer order.
    pub group_id: String,
    /// `ApproximateReceiveCount`: this receive included.
    pub receive_count: u32,
    /// `ApproximateFirstReceiveTimestamp`, ms since the epoch.
    pub first_received_ms: Option<u64>,
    /// `SentTimestamp`, ms since the epoch.
    pub sent_ms: Option<u64>,
}

impl Received {
    /// `None` for a message without an id or receipt (never sent by SQS).
    pub fn from_sdk(message: Message) -> Option<Self> {
        let attribute = |name: MessageSystemAttributeName| message.attributes().and_then(|a| a.get(&name)).cloned();
        let number = |name| attribute(name).and_then(|v| v.parse::<u64>().ok());
        Some(Self {
            message_id: message.message_id.clone()?,
            receipt: message.receipt_handle.clone()?,
            group_id: attribute(MessageSystemAttributeName::MessageGroupId).unwrap_or_default(),
            receive_count: number(MessageSystemAttributeName::ApproximateReceiveCount).unwrap_or(1) as u32,
            first_received_ms: number(MessageSystemAttributeName::ApproximateFirstReceiveTimestamp),
            sent_ms: number(MessageSystemAttributeName::SentTimestamp),
            body: message.body.unwrap_or_default(),
        })
    }
}
