//! The template's IAM policies against the code that needs them.
//!
//! - Statically: every AWS SDK call of the production code (origin/src, and
//!   the edge's hand-signed `SendMessage` in edge/src/sqs.rs) is listed in
//!   [`CALLS`] with the identity that makes it, and the template grants its
//!   action on its resources to that identity, and nothing else. A new SDK
//!   call fails this test until it is listed, and granted.
//! - In moto with IAM on, one stack per granted action, that action removed
//!   from its policy: the identity's call is refused (403) there and taken
//!   in the whole template's stack; and for each of the worker's actions
//!   the worker fails loudly: `/v1/health` critical, naming the action and
//!   the resource, and the message is handed back, not dead-lettered.
//!
//! Needs `.venv/` (PyYAML to read the template, moto) and the programs
//! (`cargo build --workspace --bins`).

mod origin_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use failsoft_lab::aws_stack::{self, AwsStack, Credentials, StackRequest};
use failsoft_lab::moto::{Auth, MotoServer};
use failsoft_lab::process::Service;
use failsoft_shared::envelope::Envelope;
use origin_support::{BASE_POLICY, INTERNAL_SECRET, program, refresh_envelope, write_envelope};
use serde_json::{Value, json};

const WORKER: &str = "WorkerRole";
const OPERATOR: &str = "OperatorRole";
const EDGE: &str = "EdgeUser";

/// Every AWS call of the production code: (file, enclosing fn, SDK method,
/// identity, resources by logical id). `failsoft notifications` runs with
/// the worker's role.
const CALLS: &[(&str, &str, &str, &str, &[&str])] = &[
    ("origin/src/http/events.rs", "receive", "send_message", WORKER, &["Queue"]),
    ("origin/src/notifications/outbox.rs", "send_one", "send_message", WORKER, &["Queue"]),
    ("origin/src/queue/consumer.rs", "run", "receive_message", WORKER, &["Queue"]),
    ("origin/src/queue/deletes.rs", "run", "delete_message_batch", WORKER, &["Queue"]),
    ("origin/src/queue/consumer.rs", "change_visibility", "change_message_visibility", WORKER, &["Queue"]),
    ("origin/src/queue/leases.rs", "heartbeat", "change_message_visibility_batch", WORKER, &["Queue"]),
    ("origin/src/queue/fit.rs", "read", "get_queue_attributes", WORKER, &["Queue"]),
    ("origin/src/telemetry.rs", "queue_depths", "get_queue_attributes", WORKER, &["Queue", "DeadLetterQueue"]),
    ("origin/src/dead_letter/mod.rs", "send", "send_message", WORKER, &["DeadLetterQueue"]),
    ("origin/src/dead_letter/mod.rs", "send", "delete_message", WORKER, &["Queue"]),
    ("origin/src/store/results.rs", "get", "get_item", WORKER, &["ResultsTable"]),
    ("origin/src/store/results.rs", "claim", "update_item", WORKER, &["ResultsTable"]),
    ("origin/src/store/results.rs", "release", "update_item", WORKER, &["ResultsTable"]),
    ("origin/src/store/results.rs", "fail", "update_item", WORKER, &["ResultsTable"]),
    ("origin/src/store/batch_write.rs", "write", "batch_write_item", WORKER, &["ResultsTable", "LastKnownTable"]),
    // `failsoft sync` runs under the worker's role, by hand as on its schedule.
    ("origin/src/sync/sink.rs", "batch_write", "batch_write_item", WORKER, &["LastKnownTable"]),
    ("origin/src/sync/state.rs", "claim", "update_item", WORKER, &["ResultsTable"]),
    ("origin/src/sync/state.rs", "progress", "update_item", WORKER, &["ResultsTable"]),
    ("origin/src/sync/state.rs", "finish", "update_item", WORKER, &["ResultsTable"]),
    ("origin/src/sync/state.rs", "release", "update_item", WORKER, &["ResultsTable"]),
    ("origin/src/store/results.rs", "reset_for_replay", "update_item", OPERATOR, &["ResultsTable"]),
    ("origin/src/dead_letter/tool.rs", "count", "get_queue_attributes", OPERATOR, &["DeadLetterQueue"]),
    ("origin/src/dead_letter/tool.rs", "read", "receive_message", OPERATOR, &["DeadLetterQueue"]),
    (
        "origin/src/dead_letter/tool.rs",
        "change_visibility",
        "change_message_visibility_batch",
        OPERATOR,
        &["DeadLetterQueue"],
    ),
    ("origin/src/dead_letter/tool.rs", "replay_one", "send_message", OPERATOR, &["Queue"]),
    ("origin/src/dead_letter/tool.rs", "replay_one", "delete_message", OPERATOR, &["DeadLetterQueue"]),
    ("origin/src/dead_letter/tool.rs", "purge", "purge_queue", OPERATOR, &["DeadLetterQueue"]),
    ("edge/src/sqs.rs", "request", "send_message", EDGE, &["Queue"]),
];

const SQS_METHODS: &[&str] = &[
    "send_message",
    "send_message_batch",
    "receive_message",
    "delete_message",
    "delete_message_batch",
    "change_message_visibility",
    "change_message_visibility_batch",
    "get_queue_attributes",
    "set_queue_attributes",
    "get_queue_url",
    "purge_queue",
    "create_queue",
    "delete_queue",
    "list_queues",
];
const DYNAMODB_METHODS: &[&str] = &[
    "get_item",
    "put_item",
    "update_item",
    "delete_item",
    "batch_get_item",
    "batch_write_item",
    "query",
    "scan",
    "transact_write_items",
    "transact_get_items",
    "describe_table",
    "create_table",
];

fn root() -> PathBuf {
    failsoft_lab::local_stack::workspace_root()
}

/// `sqs:SendMessage` for `send_message`; a batch call is authorised as its
/// single call.
fn action(method: &str) -> String {
    let service = if SQS_METHODS.contains(&method) { "sqs" } else { "dynamodb" };
    let single = if service == "sqs" { method.trim_end_matches("_batch") } else { method };
    let pascal: String = single
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_uppercase().chain(c).collect::<String>()).unwrap_or_default()
        })
        .collect();
    format!("{service}:{pascal}")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The SDK calls found in the code: (file, enclosing fn, method).
fn calls_in_code() -> BTreeSet<(String, String, String)> {
    let root = root();
    let mut files = Vec::new();
    rust_files(&root.join("origin/src"), &mut files);
    files.push(root.join("edge/src/sqs.rs"));
    let mut found = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a source file");
        let relative = file.strip_prefix(&root).unwrap().display().to_string();
        let mut function = String::new();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or_default();
            if let Some(at) = code.find("fn ") {
                let name: String = code[at + 3..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() && code[..at].chars().last().is_none_or(|c| !c.is_alphanumeric()) {
                    function = name;
                }
            }
            if code.contains("#[cfg(test)]") {
                break;
            }
            for method in SQS_METHODS.iter().chain(DYNAMODB_METHODS) {
                if code.contains(&format!(".{method}()")) {
                    found.insert((relative.clone(), function.clone(), method.to_string()));
                }
            }
            // The edge signs its own requests: the JSON protocol's target.
            if let Some(at) = code.find("\"AmazonSQS.") {
                let op: String = code[at + 11..].chars().take_while(|c| c.is_alphanumeric()).collect();
                let snake: String = op
                    .chars()
                    .enumerate()
                    .flat_map(|(i, c)| {
                        let lower = c.to_ascii_lowercase();
                        if c.is_uppercase() && i > 0 { vec!['_', lower] } else { vec![lower] }
                    })
                    .collect();
                found.insert((relative.clone(), function.clone(), snake));
            }
        }
    }
    found
}

/// The template as JSON (PyYAML reads it; its intrinsics are long form).
fn template() -> Value {
    let output = Command::new(root().join(".venv/bin/python"))
        .args(["-c", "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)"])
        .arg(aws_stack::template_path())
        .output()
        .expect("the venv's python runs (scripts/setup.sh python)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("JSON")
}

fn as_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items.clone(),
        Value::Null => vec![],
        other => vec![other.clone()],
    }
}

/// The logical id an `Fn::GetAtt: [X, Arn]` or `Ref: X` names.
fn target(v: &Value) -> String {
    v.get("Fn::GetAtt")
        .and_then(|g| g[0].as_str())
        .or_else(|| v.get("Ref").and_then(Value::as_str))
        .unwrap_or("*")
        .to_owned()
}

/// A policy of the template: where its statements are, and whose they are.
#[derive(Debug, Clone)]
struct Policy {
    identity: String,
    /// The JSON pointer of its `Statement` list.
    statements: String,
}

fn policies(template: &Value) -> Vec<Policy> {
    let mut out = Vec::new();
    for (id, resource) in template["Resources"].as_object().unwrap() {
        let props = &resource["Properties"];
        match resource["Type"].as_str().unwrap_or_default() {
            "AWS::IAM::ManagedPolicy" => {
                for role in as_list(&props["Roles"]) {
                    out.push(Policy {
                        identity: target(&role),
                        statements: format!("/Resources/{id}/Properties/PolicyDocument/Statement"),
                    });
                }
            }
            "AWS::IAM::User" | "AWS::IAM::Role" => {
                for (i, _) in as_list(&props["Policies"]).iter().enumerate() {
                    out.push(Policy {
                        identity: id.clone(),
                        statements: format!("/Resources/{id}/Properties/Policies/{i}/PolicyDocument/Statement"),
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// (identity, action, resource) the template grants.
fn grants(template: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for policy in policies(template) {
        for statement in as_list(template.pointer(&policy.statements).unwrap()) {
            assert_eq!(statement["Effect"], "Allow");
            for action in as_list(&statement["Action"]) {
                for resource in as_list(&statement["Resource"]) {
                    out.insert((policy.identity.clone(), action.as_str().unwrap().to_owned(), target(&resource)));
                }
            }
        }
    }
    out
}

#[test]
fn every_sdk_call_is_granted_to_its_identity_and_nothing_more() {
    let listed: BTreeSet<(String, String, String)> =
        CALLS.iter().map(|(f, func, m, _, _)| (f.to_string(), func.to_string(), m.to_string())).collect();
    let found = calls_in_code();
    let unlisted: Vec<_> = found.difference(&listed).collect();
    assert!(unlisted.is_empty(), "AWS calls not in CALLS (say who makes them, and grant them): {unlisted:?}");
    let gone: Vec<_> = listed.difference(&found).collect();
    assert!(gone.is_empty(), "CALLS lists calls the code no longer makes: {gone:?}");

    let needed: BTreeSet<(String, String, String)> = CALLS
        .iter()
        .flat_map(|(_, _, method, who, resources)| {
            resources.iter().map(move |r| (who.to_string(), action(method), r.to_string()))
        })
        .collect();
    let granted: BTreeSet<(String, String, String)> = grants(&template())
        .into_iter()
        .filter(|(who, _, _)| [WORKER, OPERATOR, EDGE].contains(&who.as_str()))
        .collect();
    let missing: Vec<_> = needed.difference(&granted).collect();
    assert!(missing.is_empty(), "the code calls these, the template does not grant them: {missing:?}");
    let unused: Vec<_> = granted.difference(&needed).collect();
    assert!(unused.is_empty(), "the template grants these, no code calls them: {unused:?}");
}

// ── in moto, IAM on ─────────────────────────────────────────────────────────

/// One granted action removed from one statement.
#[derive(Debug, Clone)]
struct Removal {
    identity: String,
    action: String,
    /// Logical ids of the statement's resources.
    resources: Vec<String>,
    stack_name: String,
}

/// The template without `removal`'s action, as a JSON file (PyYAML reads it).
fn template_without(template: &Value, policy: &Policy, statement: usize, action: &str, dir: &Path) -> PathBuf {
    let mut copy = template.clone();
    let statements = copy.pointer_mut(&policy.statements).unwrap();
    let mut list = as_list(statements);
    let kept: Vec<Value> = as_list(&list[statement]["Action"]).into_iter().filter(|a| a != action).collect();
    if kept.is_empty() {
        // A statement needs an action: it goes.
        list.remove(statement);
    } else {
        list[statement]["Action"] = Value::Array(kept);
    }
    if list.is_empty() {
        // And a policy needs a statement: one that allows nothing failsoft
        // calls.
        list.push(json!({"Effect": "Allow", "Action": "sqs:ListQueues", "Resource": "*"}));
    }
    *statements = Value::Array(list);
    let path = dir.join(format!(
        "{}-{}-{statement}-{}.json",
        policy.identity,
        policy.statements.len(),
        action.replace(':', "-")
    ));
    std::fs::write(&path, copy.to_string()).unwrap();
    path
}

/// Every (policy statement, action) of the three identities, and the
/// template without it.
fn removals(dir: &Path) -> Vec<(Removal, PathBuf)> {
    let template = template();
    let mut out = Vec::new();
    for policy in policies(&template) {
        if ![WORKER, OPERATOR, EDGE].contains(&policy.identity.as_str()) {
            continue;
        }
        for (i, statement) in as_list(template.pointer(&policy.statements).unwrap()).iter().enumerate() {
            for action in as_list(&statement["Action"]) {
                let action = action.as_str().unwrap().to_owned();
                let n = out.len();
                let path = template_without(&template, &policy, i, &action, dir);
                let removal = Removal {
                    identity: policy.identity.clone(),
                    action,
                    resources: as_list(&statement["Resource"]).iter().map(target).collect(),
                    stack_name: format!("no{n}"),
                };
                out.push((removal, path));
            }
        }
    }
    out
}

fn credentials_of<'a>(stack: &'a AwsStack, identity: &str) -> &'a Credentials {
    match identity {
        WORKER => stack.worker().unwrap(),
        OPERATOR => stack.operator().unwrap(),
        _ => stack.edge().unwrap(),
    }
}

async fn sdk(endpoint: &str, who: &Credentials) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(&who.key, &who.secret, None, None, "iam-test"))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await
}

/// Makes `action` on `resource` (a logical id) of `stack` as `who`: whether
/// AWS refused it for want of permission (a 403). Receipt handles are
/// made up: a call allowed fails later, on the handle, not with a 403.
async fn denied(stack: &AwsStack, who: &Credentials, action: &str, resource: &str) -> bool {
    let config = sdk(&stack.endpoint, who).await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let ddb = aws_sdk_dynamodb::Client::new(&config);
    let url = match resource {
        "Queue" => stack.queue_url().unwrap(),
        _ => stack.dlq_url().unwrap(),
    };
    let table = match resource {
        "ResultsTable" => stack.results_table().unwrap().to_owned(),
        _ => stack.last_known_table().unwrap().to_owned(),
    };
    let key = if resource == "ResultsTable" { "correlationId" } else { "entityKey" };
    let item = || std::collections::HashMap::from([(key.to_owned(), AttributeValue::S("iam-probe".into()))]);
    fn status<E, R: std::fmt::Debug>(
        r: Result<R, aws_sdk_sqs::error::SdkError<E, aws_sdk_sqs::config::http::HttpResponse>>,
    ) -> Option<u16> {
        r.err().and_then(|e| e.raw_response().map(|r| r.status().as_u16()))
    }
    let code = match action {
        "sqs:SendMessage" => status(
            sqs.send_message()
                .queue_url(&url)
                .message_body("{}")
                .message_group_id("iam")
                .message_deduplication_id(format!("iam-{}", std::process::id()))
                .send()
                .await,
        ),
        "sqs:ReceiveMessage" => {
            status(sqs.receive_message().queue_url(&url).wait_time_seconds(0).visibility_timeout(0).send().await)
        }
        "sqs:DeleteMessage" => status(sqs.delete_message().queue_url(&url).receipt_handle("made-up").send().await),
        "sqs:ChangeMessageVisibility" => status(
            sqs.change_message_visibility()
                .queue_url(&url)
                .receipt_handle("made-up")
                .visibility_timeout(0)
                .send()
                .await,
        ),
        "sqs:GetQueueAttributes" => status(sqs.get_queue_attributes().queue_url(&url).send().await),
        "sqs:PurgeQueue" => status(sqs.purge_queue().queue_url(&url).send().await),
        "dynamodb:GetItem" => {
            status(ddb.get_item().table_name(&table).key(key, AttributeValue::S("iam-probe".into())).send().await)
        }
        "dynamodb:UpdateItem" => status(
            ddb.update_item()
                .table_name(&table)
                .key(key, AttributeValue::S("iam-probe".into()))
                .update_expression("SET probe = :p")
                .expression_attribute_values(":p", AttributeValue::S("x".into()))
                .send()
                .await,
        ),
        "dynamodb:BatchWriteItem" => {
            let put = PutRequest::builder().set_item(Some(item())).build().unwrap();
            status(
                ddb.batch_write_item()
                    .request_items(&table, vec![WriteRequest::builder().put_request(put).build()])
                    .send()
                    .await,
            )
        }
        other => panic!("no probe for {other}: add one"),
    };
    code == Some(403)
}

/// One moto, the whole template's stack and one stack per removed grant
/// of `identities`.
async fn stacks(moto: &MotoServer, dir: &Path, identities: &[&str]) -> (AwsStack, Vec<(Removal, AwsStack)>) {
    let whole = aws_stack::create(&StackRequest::new(&moto.endpoint)).await.expect("the stack");
    let mut out = Vec::new();
    for (removal, path) in removals(dir).into_iter().filter(|(r, _)| identities.contains(&r.identity.as_str())) {
        let mut request = StackRequest::new(&moto.endpoint);
        request.template = path;
        request.stack_name = removal.stack_name.clone();
        request.admin = Some(whole.admin.clone());
        let stack = aws_stack::create(&request).await.unwrap_or_else(|e| panic!("{removal:?}: {e}"));
        out.push((removal, stack));
    }
    (whole, out)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("failsoft-iam-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A worker on `stack` (its queues, tables and the worker's key).
fn worker(stack: &AwsStack, crm: &str, extra: &[(&str, &str)]) -> Service {
    Service::start_command("failsoft worker", &mut worker_command(stack, crm, extra)).expect("the worker starts")
}

/// `failsoft worker`'s command on `stack`.
fn worker_command(stack: &AwsStack, crm: &str, extra: &[(&str, &str)]) -> Command {
    let mut env: Vec<(String, String)> =
        stack.env(stack.worker().unwrap()).into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let base = [
        ("FAILSOFT_QUEUE_URL", stack.queue_url().unwrap()),
        ("FAILSOFT_DLQ_URL", stack.dlq_url().unwrap()),
        ("FAILSOFT_RESULTS_TABLE", stack.results_table().unwrap().to_owned()),
        ("FAILSOFT_LAST_KNOWN_TABLE", stack.last_known_table().unwrap().to_owned()),
        ("FAILSOFT_CRM_URL", crm.to_owned()),
        ("FAILSOFT_INTERNAL_SECRET", INTERNAL_SECRET.to_owned()),
        ("FAILSOFT_ORIGIN_LISTEN", "127.0.0.1:0".to_owned()),
        ("FAILSOFT_OPERATOR_LISTEN", "127.0.0.1:0".to_owned()),
        ("FAILSOFT_EVENTS_URL", format!("{crm}/events")),
        ("FAILSOFT_EVENTS_API_KEY", "test-only-events-api-key-0000000".to_owned()),
    ];
    for (k, v) in base
        .iter()
        .map(|(k, v)| (*k, v.clone()))
        .chain(BASE_POLICY.iter().chain(extra).map(|(k, v)| (*k, v.to_string())))
    {
        env.retain(|(name, _)| name != k);
        env.push((k.to_owned(), v));
    }
    let mut cmd = program("failsoft");
    cmd.arg("worker").envs(env);
    cmd
}

async fn enqueue(stack: &AwsStack, envelope: &Envelope<Value>) {
    let sqs = aws_sdk_sqs::Client::new(&sdk(&stack.endpoint, &stack.admin).await);
    sqs.send_message()
        .queue_url(stack.queue_url().unwrap())
        .message_body(serde_json::to_string(envelope).unwrap())
        .message_group_id(envelope.group_id())
        .message_deduplication_id(envelope.dedup_id(300_000))
        .send()
        .await
        .expect("SendMessage as the lab's administrator");
}

async fn depth(stack: &AwsStack, url: &str) -> u64 {
    let sqs = aws_sdk_sqs::Client::new(&sdk(&stack.endpoint, &stack.admin).await);
    let (visible, in_flight) = failsoft_origin::telemetry::queue_depths(&sqs, url).await.expect("depth");
    visible + in_flight
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_removed_grant_is_refused_and_the_whole_template_is_not() {
    let started = Instant::now();
    let moto = tokio::task::spawn_blocking(|| MotoServer::start_with(Auth::Iam)).await.unwrap().expect("moto");
    let dir = temp_dir("refused");
    let (whole, removed) = stacks(&moto, &dir, &[WORKER, OPERATOR, EDGE]).await;
    assert!(removed.len() >= 15, "one stack per granted action: {}", removed.len());
    eprintln!("{} stacks in {:?}", removed.len() + 1, started.elapsed());
    for (removal, stack) in &removed {
        for resource in &removal.resources {
            let who = credentials_of(stack, &removal.identity);
            assert!(
                denied(stack, who, &removal.action, resource).await,
                "{} without {} may still call it on {resource}",
                removal.identity,
                removal.action
            );
            let who = credentials_of(&whole, &removal.identity);
            assert!(
                !denied(&whole, who, &removal.action, resource).await,
                "the whole template does not let {} call {} on {resource}",
                removal.identity,
                removal.action
            );
        }
    }
    eprintln!("checked in {:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}

/// What makes the worker call an action, and what it must then show.
async fn provoke(stack: &AwsStack, worker: &Service, removal: &Removal, http: &reqwest::Client) {
    let id = format!("iam-{}", removal.stack_name);
    let phone = format!("+44 20 7946 {:04}", 5000 + removal.stack_name[2..].parse::<u32>().unwrap());
    match (removal.action.as_str(), removal.resources[0].as_str()) {
        ("sqs:SendMessage", "Queue") => {
            let event = json!({"version": "0", "id": format!("0b7e5c1f-2a34-4d1b-8b9f-{:012}", 1),
                "detail-type": "v2.detail.events.conversation.6c8b3a1e-52b4-4b8e-9c61-000000000001.customer.start",
                "source": "aws.partner/genesys.com/cloud/org/failsoft", "account": "123456789012",
                "time": "2026-11-28T10:00:00Z", "region": "us-east-1", "resources": [],
                "detail": {"topicName": "v2.detail.events.conversation.6c8b3a1e-52b4-4b8e-9c61-000000000001.customer.start",
                    "eventBody": {"conversationId": "6c8b3a1e-52b4-4b8e-9c61-000000000001"}}});
            // 503 whether SQS refused it or, on a busy machine, did not
            // answer within 4 s: EventBridge retries either, and so does this.
            for _ in 0..5 {
                let response = http
                    .post(format!("{}/v1/events", worker.url("api")))
                    .header("x-failsoft-api-key", "test-only-events-api-key-0000000")
                    .json(&event)
                    .send()
                    .await
                    .expect("POST /v1/events");
                assert_eq!(response.status().as_u16(), 503, "the event was not queued: retry");
                let body: Value = response.json().await.unwrap_or_default();
                assert_eq!(body["error"]["code"], "QUEUE_UNAVAILABLE", "{body}");
                let health: Value = http
                    .get(format!("{}/v1/health", worker.url("operator")))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if health["configuration"]["accessDenied"].as_array().is_some_and(|d| !d.is_empty()) {
                    break;
                }
            }
        }
        ("sqs:SendMessage", _) => {
            // Not an envelope: dead-lettered at once.
            let sqs = aws_sdk_sqs::Client::new(&sdk(&stack.endpoint, &stack.admin).await);
            sqs.send_message()
                .queue_url(stack.queue_url().unwrap())
                .message_body("not an envelope")
                .message_group_id("poison")
                .message_deduplication_id(&id)
                .send()
                .await
                .unwrap();
        }
        ("dynamodb:GetItem", _) => {
            let url = format!("{}/v1/results/{id}", worker.url("api"));
            let read = failsoft_tests::signing::request(
                http,
                "GET",
                &url,
                Vec::new(),
                INTERNAL_SECRET,
                failsoft_tests::signing::now_secs(),
            );
            let response = read.send().await.expect("GET /v1/results");
            assert!(response.status().is_server_error(), "a denied read is not a 404: {}", response.status());
        }
        ("dynamodb:BatchWriteItem", _) => enqueue(stack, &refresh_envelope(&id, &phone)).await,
        ("sqs:ReceiveMessage" | "sqs:GetQueueAttributes", _) => {}
        _ => enqueue(stack, &write_envelope(&id, &phone, "iam")).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_worker_fails_loudly_without_each_of_its_grants() {
    let started = Instant::now();
    let (moto, sim) = tokio::task::spawn_blocking(|| {
        let moto = MotoServer::start_with(Auth::Iam).expect("moto");
        let mut sim_cmd = program("crm-sim");
        sim_cmd.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]).env("RUST_LOG", "warn");
        (moto, Service::start_command("crm-sim", &mut sim_cmd).expect("crm-sim"))
    })
    .await
    .unwrap();
    let dir = temp_dir("worker");
    let (_, removed) = stacks(&moto, &dir, &[WORKER]).await;
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
    let crm = sim.url("api").to_owned();
    let mut checks = Vec::new();
    for (removal, stack) in removed.iter().cloned() {
        let (http, crm) = (http.clone(), crm.clone());
        checks.push(tokio::spawn(async move {
            // A write waits 60 s to settle: it is handed back at once (a
            // visibility change) instead of delivered.
            let settle = if removal.action == "sqs:ChangeMessageVisibility" { "60000" } else { "0" };
            if removal.action == "sqs:GetQueueAttributes" && removal.resources[0] == "Queue" {
                // The worker reads its queue's attributes before anything
                // starts (queue::fit): it refuses to start, exit 2, naming it.
                let (on, crm) = (stack.clone(), crm.clone());
                let out = tokio::task::spawn_blocking(move || worker_command(&on, &crm, &[]).output())
                    .await
                    .unwrap()
                    .unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert_eq!(out.status.code(), Some(2), "{removal:?}: {stderr}");
                let named = format!("AWS denied sqs:GetQueueAttributes on {}", stack.queue_url().unwrap());
                assert!(stderr.contains(&named), "{removal:?}: {stderr}");
                return removal.action;
            }
            let (on, crm) = (stack.clone(), crm.clone());
            let service = tokio::task::spawn_blocking(move || {
                worker(&on, &crm, &[("FAILSOFT_WRITE_SETTLE_MS", settle), ("FAILSOFT_LOG", "error")])
            })
            .await
            .unwrap();
            provoke(&stack, &service, &removal, &http).await;
            let health_url = format!("{}/v1/health", service.url("operator"));
            let names: Vec<String> = removal
                .resources
                .iter()
                .map(|r| match r.as_str() {
                    "Queue" => stack.queue_url().unwrap(),
                    "DeadLetterQueue" => stack.dlq_url().unwrap(),
                    "ResultsTable" => stack.results_table().unwrap().to_owned(),
                    _ => stack.last_known_table().unwrap().to_owned(),
                })
                .collect();
            let deadline = Instant::now() + Duration::from_secs(60);
            let health = loop {
                let health: Value = match http.get(&health_url).send().await {
                    Ok(response) => response.json().await.unwrap_or_default(),
                    Err(_) => Value::Null,
                };
                let named = health["configuration"]["accessDenied"].as_array().is_some_and(|denied| {
                    denied.iter().any(|d| {
                        d["action"] == removal.action.as_str()
                            && names.iter().any(|n| d["resource"].as_str().unwrap_or_default().contains(n.as_str()))
                    })
                });
                if named {
                    break health;
                }
                assert!(
                    Instant::now() < deadline,
                    "{removal:?}: /v1/health does not name {} on {names:?} within 60 s: {}",
                    removal.action,
                    health["configuration"]
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            assert_eq!(health["level"], "critical", "{removal:?}: {health}");
            if removal.action == "dynamodb:UpdateItem" || removal.action == "dynamodb:BatchWriteItem" {
                // Handed back: not dead-lettered as if the CRM refused it.
                tokio::time::sleep(Duration::from_secs(2)).await;
                assert_eq!(depth(&stack, &stack.dlq_url().unwrap()).await, 0, "{removal:?}: dead-lettered");
                assert_eq!(depth(&stack, &stack.queue_url().unwrap()).await, 1, "{removal:?}: not queued");
            }
            drop(service);
            removal.action
        }));
    }
    let mut done = BTreeSet::new();
    for check in checks {
        done.insert(check.await.expect("a check"));
    }
    let want: BTreeSet<String> = removed.iter().map(|(r, _)| r.action.clone()).collect();
    assert_eq!(done, want);
    eprintln!("{} worker grants checked in {:?}", removed.len(), started.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}
