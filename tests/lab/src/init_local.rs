//! `failsoft-lab init-local`: creates the stack of `deploy/aws/failsoft.yaml`
//! (queues, tables, identities) in the moto server `AWS_ENDPOINT_URL` names,
//! through [`crate::aws_stack`]. Run again, it finds the stack and prints the
//! same URLs (and no new keys).
//!
//! With IAM on in that moto, a second run must sign as the administrator
//! the first printed (`FAILSOFT_LAB_ADMIN_ACCESS_KEY_ID`,
//! `FAILSOFT_LAB_ADMIN_SECRET_ACCESS_KEY`).

use crate::aws_stack::{self, AwsStack, AwsStackError, Credentials, StackRequest};

/// `FAILSOFT_PROCESSING_LIMIT_SECS`, when set, chooses the template's
/// `ProcessingLimitSeconds` (and so the queue's visibility timeout).
pub async fn run(lookup: impl Fn(&str) -> Option<String>) -> Result<AwsStack, AwsStackError> {
    let endpoint = lookup("AWS_ENDPOINT_URL")
        .filter(|e| !e.is_empty())
        .ok_or_else(|| AwsStackError::Missing("AWS_ENDPOINT_URL (moto's server)".into()))?;
    let mut request = StackRequest::new(&endpoint);
    if let Some(limit) = lookup("FAILSOFT_PROCESSING_LIMIT_SECS").and_then(|v| v.trim().parse().ok()) {
        request = request.processing_limit(limit);
    }
    if let (Some(key), Some(secret)) =
        (lookup("FAILSOFT_LAB_ADMIN_ACCESS_KEY_ID"), lookup("FAILSOFT_LAB_ADMIN_SECRET_ACCESS_KEY"))
    {
        request.admin = Some(Credentials { key, secret });
    }
    aws_stack::create(&request).await
}

/// What `init-local` prints: `NAME=value` lines a shell can source.
pub fn printed(stack: &AwsStack) -> Result<String, AwsStackError> {
    let mut out = format!(
        "FAILSOFT_QUEUE_URL={}\nFAILSOFT_DLQ_URL={}\nFAILSOFT_RESULTS_TABLE={}\nFAILSOFT_LAST_KNOWN_TABLE={}\n",
        stack.queue_url()?,
        stack.dlq_url()?,
        stack.results_table()?,
        stack.last_known_table()?,
    );
    out.push_str(&format!(
        "FAILSOFT_LAB_ADMIN_ACCESS_KEY_ID={}\nFAILSOFT_LAB_ADMIN_SECRET_ACCESS_KEY={}\n",
        stack.admin.key, stack.admin.secret
    ));
    for (id, credentials) in &stack.identities {
        out.push_str(&format!(
            "FAILSOFT_LAB_{id}_ACCESS_KEY_ID={}\nFAILSOFT_LAB_{id}_SECRET_ACCESS_KEY={}\n",
            credentials.key, credentials.secret
        ));
    }
    Ok(out)
}
