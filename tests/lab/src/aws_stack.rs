//! The lab's AWS resources, born from `deploy/aws/failsoft.yaml`: the local
//! stack, the drill and the origin tests create the template's stack in
//! moto's server through moto's CloudFormation (`lab_stack.py`, run with the
//! venv's Python), and run each process with credentials bound to exactly
//! the policies the template gives its identity. No queue or table
//! attribute is written here: change the template, and the lab changes.
//!
//! moto's `sts:AssumeRole` checks a role's trust policy, and the template's
//! roles trust only `ecs-tasks.amazonaws.com`; so for each role the
//! bootstrap makes a moto user with the role's policies (its managed ones
//! attached, its inline ones copied) and an access key. The edge uses the
//! template's own `EdgeAccessKey`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::local_stack::{clean_command, workspace_root};

/// The bootstrap, run with `python -c`.
const LAB_STACK: &str = include_str!("lab_stack.py");

/// The unsigned calls moto takes with IAM on before it checks every call:
/// the bootstrap's CreateUser, PutUserPolicy and CreateAccessKey of its
/// administrator (moto's `INITIAL_NO_AUTH_ACTION_COUNT`).
pub const BOOTSTRAP_CALLS: u32 = 3;
/// The stack name: the names the origin defaults to (`failsoft.fifo`, …).
pub const STACK_NAME: &str = "failsoft";
/// moto's region.
pub const REGION: &str = "us-east-1";
/// How long creating a stack may take on 2 busy cores (moto imports its
/// CloudFormation support, every backend, on the first).
const CREATE_LIMIT: Duration = Duration::from_secs(120);

/// The logical ids of the template's identities, as the processes use them.
pub const WORKER_ROLE: &str = "WorkerRole";
pub const OPERATOR_ROLE: &str = "OperatorRole";
pub const EDGE_KEY: &str = "EdgeAccessKey";

#[derive(Debug, thiserror::Error)]
pub enum AwsStackError {
    #[error("the venv's Python (beside moto_server) is missing: run `make setup`")]
    NoPython,
    #[error("creating the stack from {template}: {message}")]
    Create { template: String, message: String },
    #[error("the stack has no {0} (is it in the template's Outputs?)")]
    Missing(String),
}

/// An access key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Credentials {
    pub key: String,
    pub secret: String,
}

impl Credentials {
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [("AWS_ACCESS_KEY_ID", self.key.clone()), ("AWS_SECRET_ACCESS_KEY", self.secret.clone())]
    }
}

/// What to create.
#[derive(Debug, Clone)]
pub struct StackRequest {
    /// moto's `http://127.0.0.1:PORT`.
    pub endpoint: String,
    pub template: PathBuf,
    pub stack_name: String,
    /// Template parameters (`ProcessingLimitSeconds`, …).
    pub parameters: Vec<(String, String)>,
    /// The bootstrap administrator; `None` makes one with moto's
    /// [`BOOTSTRAP_CALLS`] unsigned calls.
    pub admin: Option<Credentials>,
}

impl StackRequest {
    /// The checkout's template, as stack [`STACK_NAME`], in `endpoint`.
    pub fn new(endpoint: &str) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            template: template_path(),
            stack_name: STACK_NAME.to_owned(),
            parameters: Vec::new(),
            admin: None,
        }
    }

    /// `ProcessingLimitSeconds` (and so the queue's visibility timeout, 6
    /// times it) for a policy's processing limit.
    pub fn processing_limit(mut self, secs: u64) -> Self {
        self.parameters.push(("ProcessingLimitSeconds".into(), secs.to_string()));
        self
    }
}

#[derive(Debug, Deserialize)]
struct Printed {
    admin: Credentials,
    outputs: BTreeMap<String, String>,
    identities: BTreeMap<String, Credentials>,
}

/// A created stack.
#[derive(Debug, Clone)]
pub struct AwsStack {
    pub endpoint: String,
    /// The stack's outputs as CloudFormation gives them (queue URLs on
    /// AWS's host; see [`Self::queue_url`]).
    pub outputs: BTreeMap<String, String>,
    /// The bootstrap administrator (may do anything): for the lab's own
    /// look-ups, never for a failsoft process.
    pub admin: Credentials,
    /// By the template's logical id: [`WORKER_ROLE`], [`OPERATOR_ROLE`],
    /// [`EDGE_KEY`].
    pub identities: BTreeMap<String, Credentials>,
}

impl AwsStack {
    pub fn output(&self, key: &str) -> Result<&str, AwsStackError> {
        self.outputs.get(key).map(String::as_str).ok_or_else(|| AwsStackError::Missing(format!("output {key}")))
    }

    /// A queue URL output on moto's endpoint (CloudFormation names AWS's host).
    fn url(&self, key: &str) -> Result<String, AwsStackError> {
        let url = self.output(key)?;
        let path = url.split_once("://").and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..])).unwrap_or("/");
        Ok(format!("{}{path}", self.endpoint.trim_end_matches('/')))
    }

    pub fn queue_url(&self) -> Result<String, AwsStackError> {
        self.url("QueueUrl")
    }

    pub fn dlq_url(&self) -> Result<String, AwsStackError> {
        self.url("DlqUrl")
    }

    pub fn results_table(&self) -> Result<&str, AwsStackError> {
        self.output("ResultsTableName")
    }

    pub fn last_known_table(&self) -> Result<&str, AwsStackError> {
        self.output("LastKnownTableName")
    }

    /// The credentials of a template identity (a logical id).
    pub fn identity(&self, logical_id: &str) -> Result<&Credentials, AwsStackError> {
        self.identities.get(logical_id).ok_or_else(|| AwsStackError::Missing(format!("identity {logical_id}")))
    }

    /// `failsoft worker` (and `failsoft notifications`): the worker's role.
    pub fn worker(&self) -> Result<&Credentials, AwsStackError> {
        self.identity(WORKER_ROLE)
    }

    /// `failsoft dlq …`: the operator's role.
    pub fn operator(&self) -> Result<&Credentials, AwsStackError> {
        self.identity(OPERATOR_ROLE)
    }

    /// The edge's sender: the template's access key.
    pub fn edge(&self) -> Result<&Credentials, AwsStackError> {
        self.identity(EDGE_KEY)
    }

    /// The AWS SDK's environment for a process signing as `who`.
    pub fn env(&self, who: &Credentials) -> Vec<(&'static str, String)> {
        let [key, secret] = who.env();
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", REGION.to_owned()),
            key,
            secret,
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
    }
}

/// `deploy/aws/failsoft.yaml` in the checkout.
pub fn template_path() -> PathBuf {
    workspace_root().join("deploy/aws/failsoft.yaml")
}

/// Creates the stack in moto; see the module's comment.
pub async fn create(request: &StackRequest) -> Result<AwsStack, AwsStackError> {
    let python = crate::moto::moto_binary()
        .map(|moto| moto.with_file_name("python"))
        .filter(|p| p.exists())
        .ok_or(AwsStackError::NoPython)?;
    let error = |message: String| AwsStackError::Create { template: request.template.display().to_string(), message };
    let input = json!({
        "endpoint": request.endpoint,
        "template": request.template,
        "stack_name": request.stack_name,
        "region": REGION,
        "parameters": request.parameters.iter().cloned().collect::<BTreeMap<_, _>>(),
        "admin": request.admin,
    });
    let mut command = tokio::process::Command::from(clean_command(&python));
    command
        .args(["-c", LAB_STACK])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| error(format!("{}: {e}", python.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.to_string().as_bytes()).await.map_err(|e| error(e.to_string()))?;
    }
    let output = tokio::time::timeout(CREATE_LIMIT, child.wait_with_output())
        .await
        .map_err(|_| error(format!("no answer within {CREATE_LIMIT:?}")))?
        .map_err(|e| error(e.to_string()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        return Err(error(tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
    }
    let printed: Printed = serde_json::from_slice(&output.stdout).map_err(|e| error(format!("its output: {e}")))?;
    Ok(AwsStack {
        endpoint: request.endpoint.clone(),
        outputs: printed.outputs,
        admin: printed.admin,
        identities: printed.identities,
    })
}

/// An SQS client for `endpoint`, signing as `who`.
pub async fn sqs_client(endpoint: &str, who: &Credentials) -> aws_sdk_sqs::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(&who.key, &who.secret, None, None, "failsoft-lab"))
        .load()
        .await;
    aws_sdk_sqs::Client::new(&config)
}

/// Makes the stack's two queues in another SQS (fauxqs, `SQS=fauxqs`) with
/// the attributes the template gave them in moto, the redrive pointed at
/// the copy of the DLQ; returns (queue URL, DLQ URL) there. fauxqs checks no
/// IAM: with it, only DynamoDB's calls are authorised.
pub async fn mirror_queues(stack: &AwsStack, sqs_endpoint: &str) -> Result<(String, String), AwsStackError> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let moto = sqs_client(&stack.endpoint, &stack.admin).await;
    let other = sqs_client(sqs_endpoint, &stack.admin).await;
    let fail = |what: &str, e: &dyn std::fmt::Display| AwsStackError::Create {
        template: template_path().display().to_string(),
        message: format!("{what}: {e}"),
    };
    let mut copied = Vec::new();
    let mut dlq_arn = None;
    for url in [stack.dlq_url()?, stack.queue_url()?] {
        let name = url.rsplit('/').next().unwrap_or_default().to_owned();
        let mut attributes = moto
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(A::All)
            .send()
            .await
            .map_err(|e| fail("GetQueueAttributes", &aws_sdk_sqs::error::DisplayErrorContext(e)))?
            .attributes
            .unwrap_or_default();
        let settable = [
            A::FifoQueue,
            A::ContentBasedDeduplication,
            A::MessageRetentionPeriod,
            A::VisibilityTimeout,
            A::ReceiveMessageWaitTimeSeconds,
            A::RedrivePolicy,
        ];
        attributes.retain(|k, _| settable.contains(k));
        if let (Some(redrive), Some(arn)) = (attributes.get_mut(&A::RedrivePolicy), &dlq_arn) {
            let mut policy: serde_json::Value = serde_json::from_str(redrive).unwrap_or_default();
            policy["deadLetterTargetArn"] = json!(arn);
            *redrive = policy.to_string();
        }
        let created = other
            .create_queue()
            .queue_name(&name)
            .set_attributes(Some(attributes))
            .send()
            .await
            .map_err(|e| fail("CreateQueue", &aws_sdk_sqs::error::DisplayErrorContext(e)))?
            .queue_url
            .unwrap_or_default();
        let arn = other
            .get_queue_attributes()
            .queue_url(&created)
            .attribute_names(A::QueueArn)
            .send()
            .await
            .ok()
            .and_then(|o| o.attributes?.get(&A::QueueArn).cloned());
        dlq_arn = dlq_arn.or(arn);
        copied.push(created);
    }
    Ok((copied[1].clone(), copied[0].clone()))
}

/// Makes the stack's two tables in another DynamoDB (dynalite, for
/// `make bench-worker`) with the key schema the template gave them in moto,
/// and waits (at most 30 s) until both are active. dynalite checks no IAM
/// and keeps connections open, as DynamoDB does; moto closes each one.
pub async fn mirror_tables(stack: &AwsStack, dynamodb_endpoint: &str) -> Result<(), AwsStackError> {
    let client = |endpoint: &str| {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(aws_sdk_dynamodb::config::Region::new(REGION))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                &stack.admin.key,
                &stack.admin.secret,
                None,
                None,
                "failsoft-lab",
            ))
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    };
    let (moto, other) = (client(&stack.endpoint), client(dynamodb_endpoint));
    let fail = |what: &str, e: &dyn std::fmt::Display| AwsStackError::Create {
        template: template_path().display().to_string(),
        message: format!("{what}: {e}"),
    };
    for name in [stack.results_table()?, stack.last_known_table()?] {
        let table = moto
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|e| fail("DescribeTable", &aws_sdk_dynamodb::error::DisplayErrorContext(e)))?
            .table
            .ok_or_else(|| AwsStackError::Missing(format!("table {name}")))?;
        other
            .create_table()
            .table_name(name)
            .set_attribute_definitions(table.attribute_definitions)
            .set_key_schema(table.key_schema)
            .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
            .send()
            .await
            .map_err(|e| fail("CreateTable", &aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
    }
    for _ in 0..300 {
        let mut active = 0;
        for name in [stack.results_table()?, stack.last_known_table()?] {
            let status = other.describe_table().table_name(name).send().await.ok().and_then(|o| o.table?.table_status);
            active += usize::from(status == Some(aws_sdk_dynamodb::types::TableStatus::Active));
        }
        if active == 2 {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(fail("CreateTable", &"the tables are not active after 30 s"))
}
