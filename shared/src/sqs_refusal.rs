//! Which SQS errors refuse the message itself, so no retry can succeed.
//!
//! Every outbox in failsoft (the origin's notifications outbox, the edge's
//! write outbox) sends until SQS takes a message, but must set aside one
//! SQS will never take, or it would block everything queued behind it. The
//! decision is here so both sides agree.

/// SQS's codes for a message it will never take, whatever the retry: the
/// queue's own settings (a `MaximumMessageSize` below the body), the body's
/// characters, a parameter of this message. Everything else (an outage,
/// throttling, a refused permission, a missing queue) is the queue's
/// trouble, and retried.
pub const REFUSES_THE_MESSAGE: &[&str] = &[
    "InvalidParameterValue",
    "InvalidMessageContents",
    "MissingParameter",
    "InvalidAttributeValue",
    "InvalidAttributeName",
];

/// The short code when `code` (as SQS reports it: `InvalidParameterValue`,
/// its query-compatible `AWS.SimpleQueueService.InvalidParameterValue`, or
/// the JSON protocol's `com.amazonaws.sqs#InvalidParameterValue`) refuses
/// the message; `None` when a retry may succeed.
pub fn refuses_the_message(code: &str) -> Option<&'static str> {
    let short = code.rsplit(['.', '#']).next().unwrap_or(code);
    let short = short.strip_suffix("Exception").unwrap_or(short);
    REFUSES_THE_MESSAGE.iter().copied().find(|c| *c == short)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_s_fault_in_every_spelling_and_the_queue_s_trouble_apart() {
        for refused in [
            "InvalidParameterValue",
            "AWS.SimpleQueueService.InvalidParameterValue",
            "com.amazonaws.sqs#InvalidParameterValue",
            "com.amazonaws.sqs#InvalidMessageContentsException",
        ] {
            assert!(refuses_the_message(refused).is_some(), "{refused}");
        }
        assert_eq!(refuses_the_message("com.amazonaws.sqs#InvalidMessageContents"), Some("InvalidMessageContents"));
        for retried in [
            "",
            "RequestThrottled",
            "AWS.SimpleQueueService.NonExistentQueue",
            "com.amazonaws.sqs#QueueDoesNotExist",
            "AccessDenied",
            "InternalError",
        ] {
            assert_eq!(refuses_the_message(retried), None, "{retried}");
        }
    }
}
