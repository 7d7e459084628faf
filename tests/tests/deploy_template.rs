//! `deploy/aws/failsoft.yaml`, the AWS stack: cfn-lint finds nothing in it,
//! and it keeps the product's promises, asserted on its structure against
//! the code that relies on them (the policy's bounds in `shared/`, the
//! guide's thresholds, the origin's table keys).
//!
//! Needs `.venv/` (`scripts/setup.sh python`): cfn-lint, and PyYAML (a
//! dependency of cfn-lint) to read the template. The template writes its
//! intrinsics in long form (`Ref:`, `Fn::GetAtt:`), so it is plain YAML.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use failsoft_origin::config::DEFAULT_EVENTS_API_KEY_HEADER;
use failsoft_origin::store::results::{LAST_KNOWN_KEY, RESULTS_KEY, TTL_ATTRIBUTE};
use failsoft_shared::config::{Policy, SQS_MAX_RETENTION_SECS, SQS_MAX_VISIBILITY_SECS};
use failsoft_shared::health::{Direction, Signal};
use serde_json::{Value, json};

/// SQS's largest `maxReceiveCount`.
const SQS_MAX_RECEIVE_COUNT: u64 = 1_000;
/// Below this, a message retried with backoff through a short outage could
/// reach the DLQ by SQS's redrive before the worker's retry budget runs out.
const MIN_RECEIVE_COUNT: u64 = 100;

fn workspace_root() -> PathBuf {
    failsoft_lab::local_stack::workspace_root()
}

fn template_path() -> PathBuf {
    workspace_root().join("deploy/aws/failsoft.yaml")
}

fn venv_tool(name: &str) -> PathBuf {
    let tool = workspace_root().join(".venv/bin").join(name);
    assert!(tool.exists(), "{} is missing: run `scripts/setup.sh python`", tool.display());
    tool
}

/// The template as JSON.
fn template() -> &'static Value {
    static TEMPLATE: OnceLock<Value> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let output = Command::new(venv_tool("python"))
            .args(["-c", "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)"])
            .arg(template_path())
            .output()
            .expect("the venv's python runs");
        assert!(
            output.status.success(),
            "the template is not plain YAML (write intrinsics as `Fn::…:`/`Ref:`, not `!` tags): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("PyYAML printed JSON")
    })
}

fn resources() -> &'static serde_json::Map<String, Value> {
    template()["Resources"].as_object().expect("Resources")
}

fn of_type(kind: &str) -> Vec<(&'static str, &'static Value)> {
    resources().iter().filter(|(_, r)| r["Type"] == kind).map(|(id, r)| (id.as_str(), r)).collect()
}

fn props(id: &str) -> &'static Value {
    &resources().get(id).unwrap_or_else(|| panic!("no resource {id}"))["Properties"]
}

fn parameter(name: &str) -> &'static Value {
    template()["Parameters"].get(name).unwrap_or_else(|| panic!("no parameter {name}"))
}

/// A number written as a YAML number or string.
fn number(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap_or_else(|| panic!("{n} is not a whole number")),
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("{s:?} is not a number")),
        other => panic!("{other} is not a number"),
    }
}

/// The logical id `{"Ref": id}` or `{"Fn::GetAtt": [id, …]}` points at.
fn target(v: &Value) -> Option<&str> {
    if let Some(id) = v.get("Ref").and_then(Value::as_str) {
        return Some(id);
    }
    v.get("Fn::GetAtt").and_then(|a| a.get(0)).and_then(Value::as_str)
}

fn list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        single => vec![single],
    }
}

#[test]
fn cfn_lint_finds_nothing() {
    // Informational checks too: every finding is either fixed or argued in
    // the template.
    let output = Command::new(venv_tool("cfn-lint"))
        .arg(template_path())
        .args(["--include-checks", "I"])
        .output()
        .expect("cfn-lint runs");
    assert!(
        output.status.success(),
        "cfn-lint (exit {:?}):\n{}{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The work queue (the one with a redrive policy) and its dead-letter queue.
fn queues() -> (&'static str, &'static str) {
    let all = of_type("AWS::SQS::Queue");
    assert_eq!(all.len(), 2, "a work queue and a dead-letter queue");
    let (queue, q) = all.iter().find(|(_, q)| !q["Properties"]["RedrivePolicy"].is_null()).expect("a redrive policy");
    let dlq = target(&q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]).expect("the DLQ by GetAtt");
    assert!(all.iter().any(|(id, _)| *id == dlq));
    (queue, dlq)
}

/// A condition's value under the default parameters: `Fn::Equals` on
/// `Ref`s and literals, `Fn::Not`, `Fn::And`, `Fn::Or` and `Condition`.
fn holds_by_default(condition: &Value) -> bool {
    let operand = |v: &Value| match v.get("Ref").and_then(Value::as_str) {
        Some(name) => parameter(name)["Default"].clone(),
        None => v.clone(),
    };
    let all = |v: &Value| list(v).into_iter().map(holds_by_default).collect::<Vec<_>>();
    if let Some(name) = condition.get("Condition").and_then(Value::as_str) {
        return holds_by_default(&template()["Conditions"][name]);
    }
    if let Some([a, b]) = condition.get("Fn::Equals").and_then(Value::as_array).map(Vec::as_slice) {
        return operand(a) == operand(b);
    }
    if let Some(inner) = condition.get("Fn::Not") {
        return !holds_by_default(&inner[0]);
    }
    if let Some(inner) = condition.get("Fn::And") {
        return all(inner).into_iter().all(|x| x);
    }
    if let Some(inner) = condition.get("Fn::Or") {
        return all(inner).into_iter().any(|x| x);
    }
    panic!("not a condition this test reads: {condition}");
}

/// Whether the named condition holds under the default parameters.
fn condition_by_default(name: &str) -> bool {
    let definition = &template()["Conditions"][name];
    assert!(!definition.is_null(), "no condition {name}");
    holds_by_default(definition)
}

/// `value` is `false` under the default parameters: literally, or an
/// `Fn::If` that takes its `false` branch by default.
fn false_by_default(value: &Value) -> bool {
    if value == &json!(false) {
        return true;
    }
    let Some([condition, _, otherwise]) = value.get("Fn::If").and_then(Value::as_array).map(Vec::as_slice) else {
        return false;
    };
    otherwise == &json!(false) && !condition_by_default(condition.as_str().unwrap_or_default())
}

#[test]
fn fifo_queue_and_fifo_dlq_with_a_large_redrive() {
    let (queue, dlq) = queues();
    for id in [queue, dlq] {
        assert_eq!(props(id)["FifoQueue"], json!(true), "{id} is FIFO");
        assert!(
            false_by_default(&props(id)["ContentBasedDeduplication"]),
            "{id}: producers set their own deduplication ids"
        );
        assert_eq!(
            number(&props(id)["MessageRetentionPeriod"]),
            SQS_MAX_RETENTION_SECS,
            "{id} keeps messages as long as the longest retry budget the policy allows"
        );
    }
    assert!(Policy::default().retry.budget_ms / 1000 <= SQS_MAX_RETENTION_SECS);

    let count = &props(queue)["RedrivePolicy"]["maxReceiveCount"];
    let (default, min, max) = match count.get("Ref").and_then(Value::as_str) {
        Some(p) => {
            let p = parameter(p);
            (number(&p["Default"]), number(&p["MinValue"]), number(&p["MaxValue"]))
        }
        None => (number(count), number(count), number(count)),
    };
    assert!(default >= MIN_RECEIVE_COUNT && min >= MIN_RECEIVE_COUNT, "maxReceiveCount {default} (min {min})");
    assert!(default <= SQS_MAX_RECEIVE_COUNT && max <= SQS_MAX_RECEIVE_COUNT, "SQS allows at most 1000");
}

#[test]
fn visibility_timeout_is_at_least_six_times_the_processing_limit() {
    let (queue, _) = queues();
    let lookup =
        props(queue)["VisibilityTimeout"]["Fn::FindInMap"].as_array().expect("VisibilityTimeout by Fn::FindInMap");
    let (map, key) = (lookup[0].as_str().expect("a mapping"), lookup[2].as_str().expect("a second-level key"));
    assert_eq!(lookup[1], json!({"Ref": "ProcessingLimitSeconds"}), "keyed by the processing limit");

    let limit = parameter("ProcessingLimitSeconds");
    let allowed: Vec<u64> = limit["AllowedValues"].as_array().expect("AllowedValues").iter().map(number).collect();
    assert!(!allowed.is_empty());
    for processing in &allowed {
        let visibility = number(&template()["Mappings"][map][processing.to_string()][key]);
        assert!(visibility >= 6 * processing, "{processing} s → visibility {visibility} s, under 6×");
        assert!(visibility <= SQS_MAX_VISIBILITY_SECS, "{visibility} s is over SQS's maximum");
        // The same pair must pass the policy's own start-up validation.
        let policy =
            Policy { processing_limit_secs: *processing, visibility_timeout_secs: visibility, ..Policy::default() };
        policy.validate().unwrap_or_else(|e| panic!("processing limit {processing} s: {e}"));
    }

    let defaults = Policy::default();
    assert_eq!(number(&limit["Default"]), defaults.processing_limit_secs, "the policy's default processing limit");
    assert_eq!(
        number(&template()["Mappings"][map][defaults.processing_limit_secs.to_string()][key]),
        defaults.visibility_timeout_secs,
        "the policy's default visibility timeout"
    );
}

#[test]
fn two_tables_with_the_origin_keys_and_ttl() {
    let tables = of_type("AWS::DynamoDB::Table");
    assert_eq!(tables.len(), 2, "results and last-known");
    let mut keys = BTreeSet::new();
    for (id, table) in tables {
        let p = &table["Properties"];
        let schema = p["KeySchema"].as_array().expect("KeySchema");
        assert_eq!(schema.len(), 1, "{id}: one hash key, as the origin reads it");
        assert_eq!(schema[0]["KeyType"], "HASH");
        let key = schema[0]["AttributeName"].as_str().expect("key name");
        assert_eq!(p["AttributeDefinitions"], json!([{"AttributeName": key, "AttributeType": "S"}]), "{id}");
        assert_eq!(p["BillingMode"], "PAY_PER_REQUEST", "{id}");
        assert_eq!(
            p["TimeToLiveSpecification"],
            json!({"AttributeName": TTL_ATTRIBUTE, "Enabled": true}),
            "{id}: TTL on the origin's expiry attribute"
        );
        keys.insert(key.to_owned());
    }
    assert_eq!(keys, BTreeSet::from([RESULTS_KEY.to_owned(), LAST_KNOWN_KEY.to_owned()]));
}

/// An alarm's metrics as (metric name, queue logical id if any).
fn alarm_metrics(alarm: &Value) -> Vec<(String, Option<String>)> {
    let one = |metric: &Value| {
        let queue = list(&metric["Dimensions"])
            .into_iter()
            .find(|d| d["Name"] == "QueueName")
            .and_then(|d| target(&d["Value"]))
            .map(str::to_owned);
        (metric["MetricName"].as_str().unwrap_or_default().to_owned(), queue)
    };
    if alarm["Metrics"].is_array() {
        list(&alarm["Metrics"])
            .into_iter()
            .filter(|m| m.get("MetricStat").is_some())
            .map(|m| one(&m["MetricStat"]["Metric"]))
            .collect()
    } else {
        vec![one(alarm)]
    }
}

/// The alarms on `metric` (of `queue`, when given): (threshold, comparison,
/// topic, alarm); a threshold set by a parameter reads as NaN.
fn alarms_on(metric: &str, queue: Option<&str>) -> Vec<(f64, String, String, &'static Value)> {
    of_type("AWS::CloudWatch::Alarm")
        .into_iter()
        .map(|(_, a)| &a["Properties"])
        .filter(|a| alarm_metrics(a).iter().any(|(m, q)| m == metric && (queue.is_none() || q.as_deref() == queue)))
        .map(|a| {
            let actions = list(&a["AlarmActions"]);
            assert_eq!(actions.len(), 1, "one topic per alarm: {a}");
            let topic = target(actions[0]).expect("the topic by Ref").to_owned();
            (
                a["Threshold"].as_f64().unwrap_or(f64::NAN),
                a["ComparisonOperator"].as_str().expect("ComparisonOperator").to_owned(),
                topic,
                a,
            )
        })
        .collect()
}

#[test]
fn a_dead_letter_pages_at_once() {
    let (_, dlq) = queues();
    let alarms = alarms_on("ApproximateNumberOfMessagesVisible", Some(dlq));
    let paging: Vec<_> = alarms
        .iter()
        .filter(|(threshold, op, topic, a)| {
            *threshold == 1.0
                && op == "GreaterThanOrEqualToThreshold"
                && topic == "CriticalTopic"
                && number(&a["EvaluationPeriods"]) == 1
        })
        .collect();
    assert_eq!(paging.len(), 1, "one DLQ depth ≥ 1 alarm on the critical topic, first period: {alarms:?}");
    assert!(of_type("AWS::SNS::Topic").iter().any(|(id, _)| *id == "CriticalTopic"));
}

#[test]
fn alarms_use_the_guides_thresholds() {
    let (queue, _) = queues();
    let checks = [
        (Signal::QueueDepth, "ApproximateNumberOfMessagesVisible", Some(queue)),
        (Signal::CacheHitRate, "CacheHitRate", None),
        (Signal::CrmLatency, "CrmLatencyMs", None),
        (Signal::DegradedShare, "DegradedShare", None),
    ];
    for (signal, metric, queue) in checks {
        let t = signal.thresholds();
        let op = match t.direction {
            Direction::Below => "LessThanThreshold",
            Direction::Above => "GreaterThanThreshold",
        };
        let mut got: Vec<(f64, String, String)> =
            alarms_on(metric, queue).into_iter().map(|(th, op, topic, _)| (th, op, topic)).collect();
        got.sort_by(|a, b| a.2.cmp(&b.2));
        assert_eq!(
            got,
            vec![
                (t.critical, op.to_owned(), "CriticalTopic".to_owned()),
                (t.warning, op.to_owned(), "WarningTopic".to_owned())
            ],
            "{signal:?} on {metric}"
        );
    }
    assert!(!alarms_on("ApproximateAgeOfOldestMessage", Some(queue)).is_empty(), "the oldest message's age");
}

/// Every (action, resource) an identity's policies allow, resources by
/// logical id; refuses wildcards, `Not*` and denies (nothing to subtract).
fn permissions(principal: &str) -> BTreeSet<(String, String)> {
    let p = props(principal);
    assert!(p["ManagedPolicyArns"].is_null(), "{principal}: no managed policies from outside the template");
    assert!(p["Groups"].is_null(), "{principal}: no groups");
    let mut documents: Vec<&Value> = list(&p["Policies"]).into_iter().map(|pol| &pol["PolicyDocument"]).collect();
    for (_, r) in resources() {
        let attached =
            ["Roles", "Users"].iter().any(|k| list(&r["Properties"][k]).iter().any(|v| target(v) == Some(principal)))
                || ["RoleName", "UserName"].iter().any(|k| target(&r["Properties"][k]) == Some(principal));
        let is_policy = matches!(
            r["Type"].as_str(),
            Some("AWS::IAM::ManagedPolicy" | "AWS::IAM::Policy" | "AWS::IAM::RolePolicy" | "AWS::IAM::UserPolicy")
        );
        if attached && is_policy {
            documents.push(&r["Properties"]["PolicyDocument"]);
        }
    }
    let mut allowed = BTreeSet::new();
    for statement in documents.into_iter().flat_map(|d| list(&d["Statement"])) {
        assert_eq!(statement["Effect"], "Allow", "{principal}: {statement}");
        assert!(statement["NotAction"].is_null() && statement["NotResource"].is_null(), "{principal}: {statement}");
        for action in list(&statement["Action"]) {
            let action = action.as_str().expect("an action");
            assert!(!action.contains('*'), "{principal}: wildcard action {action}");
            for resource in list(&statement["Resource"]) {
                let id = target(resource).unwrap_or_else(|| panic!("{principal}: {resource} is not one of ours"));
                allowed.insert((action.to_owned(), id.to_owned()));
            }
        }
    }
    allowed
}

fn pairs(items: &[(&[&str], &str)]) -> BTreeSet<(String, String)> {
    items
        .iter()
        .flat_map(|(actions, resource)| actions.iter().map(move |a| (a.to_string(), resource.to_string())))
        .collect()
}

#[test]
fn the_edge_may_only_send_to_the_queue() {
    let (queue, _) = queues();
    let users = of_type("AWS::IAM::User");
    assert_eq!(users.len(), 1, "one identity for the edge");
    let edge = users[0].0;
    assert_eq!(permissions(edge), pairs(&[(&["sqs:SendMessage"], queue)]));

    let keys = of_type("AWS::IAM::AccessKey");
    assert!(keys.iter().any(|(_, k)| target(&k["Properties"]["UserName"]) == Some(edge)), "an access key");
    let outputs = serde_json::to_string(&template()["Outputs"]).unwrap();
    assert!(!outputs.contains("SecretAccessKey"), "the secret key is never an output");
}

#[test]
fn the_origin_consumes_dead_letters_and_uses_its_tables() {
    let (queue, dlq) = queues();
    let task = props("OriginTaskDefinition");
    let role = target(&task["TaskRoleArn"]).expect("the task role");
    let trust = &props(role)["AssumeRolePolicyDocument"]["Statement"];
    assert_eq!(list(trust).len(), 1);
    assert_eq!(list(trust)[0]["Principal"], json!({"Service": "ecs-tasks.amazonaws.com"}));

    // tests/tests/iam.rs derives these from the SDK calls in origin/src.
    let tables = ["ResultsTable", "LastKnownTable"];
    let item = ["dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:BatchWriteItem"];
    let consume = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"];
    assert_eq!(
        permissions(role),
        pairs(&[
            (&[&consume[..], &["sqs:SendMessage"]].concat(), queue),
            (&["sqs:SendMessage", "sqs:GetQueueAttributes"], dlq),
            (&item, tables[0]),
            (&["dynamodb:BatchWriteItem"], tables[1]),
        ]),
        "the worker: send to its queue (POST /v1/events), no purge, no table administration"
    );

    assert_eq!(
        permissions("OperatorRole"),
        pairs(&[
            (
                &[
                    "sqs:GetQueueAttributes",
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:PurgeQueue",
                ],
                dlq,
            ),
            (&["sqs:SendMessage"], queue),
            (&["dynamodb:UpdateItem"], tables[0]),
        ]),
        "`failsoft dlq`: count, read, replay and purge dead letters"
    );
}

#[test]
fn eventbridge_sends_only_from_its_rule() {
    let (queue, _) = queues();
    let policies = of_type("AWS::SQS::QueuePolicy");
    assert_eq!(policies.len(), 1);
    let p = &policies[0].1["Properties"];
    assert_eq!(list(&p["Queues"]).iter().map(|q| target(q)).collect::<Vec<_>>(), vec![Some(queue)]);
    let statements = list(&p["PolicyDocument"]["Statement"]);
    assert_eq!(statements.len(), 1);
    let s = statements[0];
    assert_eq!(s["Principal"], json!({"Service": "events.amazonaws.com"}));
    assert_eq!(list(&s["Action"]), vec![&json!("sqs:SendMessage")]);
    assert_eq!(target(&s["Resource"]), Some(queue));
    let rule = target(&s["Condition"]["ArnEquals"]["aws:SourceArn"]).expect("aws:SourceArn is the rule's");
    let targets = list(&props(rule)["Targets"]);
    assert_eq!(targets.len(), 1);
    assert_eq!(target(&targets[0]["Arn"]), Some(queue));
    assert!(!targets[0]["SqsParameters"]["MessageGroupId"].is_null(), "a FIFO target needs a group");
    // EventBridge sets no deduplication id: the queue must derive one when
    // the rule exists.
    let dedup = &props(queue)["ContentBasedDeduplication"]["Fn::If"];
    assert_eq!(dedup[1], json!(true), "content-based deduplication with the rule");
    assert_eq!(policies[0].1["Condition"], dedup[0], "the queue policy exists exactly when the rule does");
    assert_eq!(resources()[rule]["Condition"], dedup[0]);
}

#[test]
fn genesys_events_are_off_by_default_and_wired_one_way_at_a_time() {
    let wiring = parameter("GenesysEventsWiring");
    assert_eq!(wiring["Default"], "none");
    assert_eq!(wiring["AllowedValues"], json!(["none", "sqs", "api-destination"]));
    let conditioned = |condition: &str| -> Vec<&str> {
        resources().iter().filter(|(_, r)| r["Condition"] == condition).map(|(id, _)| id.as_str()).collect()
    };
    for condition in ["HasGenesysEvents", "GenesysEventsViaQueue", "GenesysEventsViaApi"] {
        assert!(!condition_by_default(condition), "{condition} is off by default");
        assert!(!conditioned(condition).is_empty(), "{condition} guards something");
    }
    for (_, r) in of_type("AWS::Events::Rule") {
        let c = r["Condition"].as_str().unwrap_or_default();
        assert!(["GenesysEventsViaQueue", "GenesysEventsViaApi"].contains(&c), "every rule is behind a wiring: {r}");
    }
    for (_, r) in of_type("AWS::Events::Connection").into_iter().chain(of_type("AWS::Events::ApiDestination")) {
        assert_eq!(r["Condition"], "GenesysEventsViaApi");
    }
}

#[test]
fn the_api_destination_posts_with_the_api_key_and_its_role_may_only_invoke_it() {
    let destinations = of_type("AWS::Events::ApiDestination");
    assert_eq!(destinations.len(), 1);
    let (destination, d) = destinations[0];
    let d = &d["Properties"];
    assert_eq!(d["HttpMethod"], "POST");
    assert_eq!(target(&d["InvocationEndpoint"]), Some("EventsEndpointUrl"));

    let connection = target(&d["ConnectionArn"]).expect("the connection by GetAtt");
    let c = props(connection);
    assert_eq!(c["AuthorizationType"], "API_KEY");
    let key = &c["AuthParameters"]["ApiKeyAuthParameters"];
    assert_eq!(target(&key["ApiKeyName"]), Some("EventsApiKeyHeader"));
    assert_eq!(target(&key["ApiKeyValue"]), Some("EventsApiKey"));
    let header = parameter("EventsApiKeyHeader")["Default"].as_str().unwrap().to_ascii_lowercase();
    assert_eq!(header, DEFAULT_EVENTS_API_KEY_HEADER, "the origin's default header");
    assert_eq!(parameter("EventsApiKey")["NoEcho"], json!(true), "the key never shows");
    assert_eq!(parameter("EventsApiKey")["Default"], "", "no key in the template");

    let rules: Vec<_> = of_type("AWS::Events::Rule")
        .into_iter()
        .filter(|(_, r)| list(&r["Properties"]["Targets"]).iter().any(|t| target(&t["Arn"]) == Some(destination)))
        .collect();
    assert_eq!(rules.len(), 1, "one rule posts to the origin");
    let t = list(&rules[0].1["Properties"]["Targets"])[0];
    let role = target(&t["RoleArn"]).expect("the role EventBridge assumes");
    assert!(number(&t["RetryPolicy"]["MaximumEventAgeInSeconds"]) >= 3_600, "EventBridge keeps retrying a 503");
    let trust = list(&props(role)["AssumeRolePolicyDocument"]["Statement"]);
    assert_eq!(trust.len(), 1);
    assert_eq!(trust[0]["Principal"], json!({"Service": "events.amazonaws.com"}));
    assert_eq!(
        permissions(role),
        pairs(&[(&["events:InvokeApiDestination"], destination)]),
        "EventBridge's role may only invoke this API destination"
    );
}
