//! The native host's forwarder: SQS when `FAILSOFT_QUEUE_URL` is set (the
//! same signed `SendMessage` bytes as the Wasm hosts), else the in-process
//! queue for a single-process setup.

use std::sync::Arc;

use super::{LocalQueue, ReqwestDownstream, SystemClock};
use crate::sqs::SqsOr;

pub type NativeForwarder = SqsOr<ReqwestDownstream, SystemClock, Arc<LocalQueue>>;
